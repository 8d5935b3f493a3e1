/* Sliding-window inference (eval/sliding_window.h) against hand-computed MONAI cases:
 * window starts (dense_patch_slices), the Gaussian importance map (MONAI >= 1.0's closed form,
 * sigma 0.125 * window, centred at (window - 1) / 2, mirror-symmetric, floored at 1e-3), and an
 * end-to-end run with a
 * "network" that predicts the label of each voxel from the image, which must reproduce it
 * exactly through padding, overlap and averaging; the probabilities (softmax of the blended
 * logits) against hand-computed softmaxes; and, with position-dependent logits, the blend (the
 * backend's sw_* ops on the CPU backend) against a double-precision reference. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "eval/sliding_window.h"
#include "ops/backend.h"
#include "test.h"

static int test_starts(void)
{
    int s[SW_MAX_STARTS];
    /* 96 voxels, window 32, overlap 0.5: interval 16; starts 0,16,...,64 (64 + 32 = 96). */
    int n = sliding_window_starts(96, 32, 0.5f, s);
    TEST_CHECK(n == 5 && s[0] == 0 && s[4] == 64, "96/32/0.5: n %d last %d", n, s[n - 1]);
    /* 100 voxels, window 32, overlap 0.5: 0,16,32,48,64 then 80 reaches past -> moved to 68. */
    n = sliding_window_starts(100, 32, 0.5f, s);
    TEST_CHECK(n == 6 && s[5] == 68 && s[4] == 64, "100/32/0.5: n %d last %d", n, s[n - 1]);
    /* Window equal to the size: one window. */
    n = sliding_window_starts(32, 32, 0.5f, s);
    TEST_CHECK(n == 1 && s[0] == 0, "32/32: n %d", n);
    /* No overlap: 70 / 32 -> 0, 32, then 64 moved back to 38. */
    n = sliding_window_starts(70, 32, 0.0f, s);
    TEST_CHECK(n == 3 && s[1] == 32 && s[2] == 38, "70/32/0: n %d", n);
    /* MONAI computes int(window * (1 - overlap)) in Python floats (double) from the overlap as
     * written: 80 * (1 - 0.6) = 32.0 -> 32 (starts 0, 32, 64, 96, then 160 past
     * 200 moved back to 120), where float arithmetic on 0.6f gave 31.999998 -> 31; and
     * 20 * (1 - 0.9) = 1.9999999999999996 -> 1 (181 starts, 0..180), where float gave 2 (91). */
    n = sliding_window_starts(200, 80, 0.6f, s);
    TEST_CHECK(n == 5 && s[1] == 32 && s[3] == 96 && s[4] == 120, "200/80/0.6: n %d, starts %d "
               "%d %d %d %d (expected 0 32 64 96 120)", n, s[0], s[1], s[2], s[3],
               n > 4 ? s[4] : -1);
    n = sliding_window_starts(200, 20, 0.9f, s);
    TEST_CHECK(n == 181 && s[1] == 1 && s[180] == 180, "200/20/0.9: n %d (expected 181)", n);
    return 0;
}

/* MONAI (>= 1.0) compute_importance_map's closed form, in double: per axis
 * exp(-(i - (w - 1) / 2)^2 / (2 (0.125 w)^2)), the product, raised to at least 1e-3. */
static double monai_weight(const int w[3], int x, int y, int z)
{
    const int at[3] = {x, y, z};
    double v = 1.0;
    for (int a = 0; a < 3; a++) {
        const double d = at[a] - (w[a] - 1) / 2.0, sigma = 0.125 * w[a];
        v *= exp(-d * d / (2.0 * sigma * sigma));
    }
    return v;
}

static int check_importance(const int w[3])
{
    const size_t n = (size_t)w[0] * w[1] * w[2];
    float *map = malloc(n * sizeof(float));
    sliding_window_importance(w, SW_SIGMA_SCALE, map);
    double lowest = INFINITY;
    for (int x = 0; x < w[0]; x++)
        for (int y = 0; y < w[1]; y++)
            for (int z = 0; z < w[2]; z++) lowest = fmin(lowest, monai_weight(w, x, y, z));
    const double floor_w = fmax(lowest, 1e-3);
    int bad = 0, asymmetric = 0;
    size_t i = 0;
    for (int x = 0; x < w[0]; x++)
        for (int y = 0; y < w[1]; y++)
            for (int z = 0; z < w[2]; z++, i++) {
                const double want = fmax(monai_weight(w, x, y, z), floor_w);
                bad += fabs(map[i] - want) > 1e-6 * want;
                /* mirrored in every axis: the same weight (the old map peaked at w // 2) */
                const size_t m = ((size_t)(w[0] - 1 - x) * w[1] + (w[1] - 1 - y)) * w[2] +
                                 (w[2] - 1 - z);
                asymmetric += map[i] != map[m];
            }
    TEST_CHECK(bad == 0, "window %dx%dx%d: %d weights off MONAI's closed form", w[0], w[1], w[2],
               bad);
    TEST_CHECK(asymmetric == 0, "window %dx%dx%d: %d weights differ from their mirror image",
               w[0], w[1], w[2], asymmetric);
    TEST_CHECK(map[0] >= 1e-3f, "corner weight %g below the 1e-3 floor", map[0]);
    free(map);
    return 0;
}

/* Even windows (centred between two voxels, where 0.9's map put the peak on window // 2) and an
 * odd one (peak 1 at the centre voxel). */
static int test_importance(void)
{
    const int even[3] = {16, 16, 8}, odd[3] = {9, 7, 5};
    check_importance(even);
    check_importance(odd);
    float map[9 * 7 * 5];
    sliding_window_importance(odd, SW_SIGMA_SCALE, map);
    TEST_CLOSE(map[(4 * 7 + 3) * 5 + 2], 1.0, 0, 1e-7, "odd window: centre weight");
    return 0;
}

/* The "network": logit c of a voxel is 1 when round(image * 4) == c, else 0. The windows and
 * the logits are CPU-backend memory, i.e. host memory. */
typedef struct {
    int w[3];
    float logits[3 * 4 * 16 * 16 * 16];  /* batch <= 3, 4 classes, 16^3 windows */
} Oracle;

static const float *oracle(void *ctx, const float *windows, int n)
{
    Oracle *o = ctx;
    const size_t wn = (size_t)o->w[0] * o->w[1] * o->w[2];
    for (int j = 0; j < n; j++)
        for (int c = 0; c < 4; c++)
            for (size_t i = 0; i < wn; i++)
                o->logits[((size_t)j * 4 + c) * wn + i] =
                    (int)lrintf(windows[j * wn + i] * 4.0f) == c;
    return o->logits;
}

static int test_end_to_end(void)
{
    static Oracle w = {{16, 16, 16}, {0}};
    const int dim[3] = {40, 12, 23};   /* one axis smaller than the window: padding */
    const size_t n = (size_t)dim[0] * dim[1] * dim[2];
    float *img = xmalloc(n * sizeof(float));
    uint8_t *truth = xmalloc(n), *pred = xmalloc(n);
    for (int x = 0; x < dim[0]; x++)
        for (int y = 0; y < dim[1]; y++)
            for (int z = 0; z < dim[2]; z++) {
                size_t i = ((size_t)x * dim[1] + y) * dim[2] + z;
                truth[i] = (uint8_t)((x / 5 + y / 4 + z / 3) % 4);
                img[i] = truth[i] / 4.0f;
            }
    SlidingWindow sw = {{16, 16, 16}, 4, 3, 0.5f, SW_SIGMA_SCALE, oracle, &w, backend_cpu()};
    long windows = sliding_window_argmax(&sw, img, dim, pred, NULL);
    /* x: 40 -> starts 0,8,16,24 (4); y padded to 16 -> 1; z: 23 -> 0,7 (2). */
    TEST_CHECK(windows == 8, "windows %ld, expected 8", windows);
    TEST_CHECK(memcmp(pred, truth, n) == 0, "prediction differs from the labels");
    free(img);
    free(truth);
    free(pred);
    return 0;
}

/* Softmax + argmax of one voxel against the closed form, with ties and huge logits. */
static int test_softmax_argmax(void)
{
    const float l[3] = {1.0f, 2.0f, 3.0f};
    float p[4];   /* the tie case below has 4 classes */
    int best = sliding_window_softmax_argmax(l, 3, p);
    double z = exp(-2.0) + exp(-1.0) + 1.0;
    TEST_CHECK(best == 2, "argmax %d of 1,2,3", best);
    TEST_CLOSE(p[0], exp(-2.0) / z, 1e-6, 0, "p0");
    TEST_CLOSE(p[1], exp(-1.0) / z, 1e-6, 0, "p1");
    TEST_CLOSE(p[2], 1.0 / z, 1e-6, 0, "p2");
    /* Ties: the first maximum, as torch/numpy argmax. */
    const float tie[4] = {0.5f, 2.0f, 2.0f, -1.0f};
    best = sliding_window_softmax_argmax(tie, 4, p);
    TEST_CHECK(best == 1 && p[1] == p[2], "tie: argmax %d, p1 %g p2 %g", best, p[1], p[2]);
    /* exp(1000) overflows float; the max is subtracted first. */
    const float big[2] = {1000.0f, 1001.0f};
    best = sliding_window_softmax_argmax(big, 2, p);
    TEST_CHECK(best == 1 && isfinite(p[0]) && isfinite(p[1]), "huge logits: %g %g", p[0], p[1]);
    TEST_CLOSE(p[1], 1.0 / (1.0 + exp(-1.0)), 1e-6, 0, "huge logits p1");
    return 0;
}

/* The oracle's logits are the same in every window (one-hot 1/0), so the blended logits are
 * too whatever the weights, and each voxel's probabilities are e / (e + K - 1) for its class
 * and 1 / (e + K - 1) for the others; the labels are the same with and without probs. */
static int test_probabilities(void)
{
    static Oracle w = {{16, 16, 16}, {0}};
    const int dim[3] = {30, 12, 20}, K = 4;
    const size_t n = (size_t)dim[0] * dim[1] * dim[2];
    float *img = xmalloc(n * sizeof(float)), *probs = xmalloc((size_t)K * n * sizeof(float));
    uint8_t *truth = xmalloc(n), *pred = xmalloc(n), *plain = xmalloc(n);
    for (size_t i = 0; i < n; i++) {
        truth[i] = (uint8_t)((i / 7 + i / 61) % K);
        img[i] = truth[i] / 4.0f;
    }
    SlidingWindow sw = {{16, 16, 16}, K, 2, 0.5f, SW_SIGMA_SCALE, oracle, &w, backend_cpu()};
    sliding_window_argmax(&sw, img, dim, pred, probs);
    sliding_window_argmax(&sw, img, dim, plain, NULL);
    TEST_CHECK(memcmp(pred, truth, n) == 0 && memcmp(plain, truth, n) == 0, "labels differ");
    const double hit = exp(1.0) / (exp(1.0) + K - 1), miss = 1.0 / (exp(1.0) + K - 1);
    double worst = 0.0;
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < K; c++)
            worst = fmax(worst, fabs(probs[(size_t)c * n + i] - (c == truth[i] ? hit : miss)));
    TEST_CHECK(worst < 1e-6, "probabilities differ from e/(e+K-1), 1/(e+K-1) by %.2e", worst);
    free(img);
    free(probs);
    free(truth);
    free(pred);
    free(plain);
    return 0;
}

/* A "network" whose logits depend on the voxel's place in its window, so overlapping windows
 * disagree and the blend matters: logit c = sin(3 image + 0.1 (c + 1) (x + 2 y + 3 z)) for
 * window voxel (x, y, z). The probabilities must equal a double-precision reference of the
 * Gaussian blend (every window's importance-weighted logits summed, divided by the summed
 * weights, softmax) within 1e-5, labels its argmax wherever the top two probabilities are
 * more than 1e-5 apart. */
typedef struct {
    int w[3];
    float logits[2 * 3 * 12 * 12 * 12];  /* batch 2, 3 classes, 12^3 windows */
} Wavy;

static float wavy_logit(float image, int c, int x, int y, int z)
{
    return sinf(3.0f * image + 0.1f * (float)(c + 1) * (float)(x + 2 * y + 3 * z));
}

static const float *wavy(void *ctx, const float *windows, int n)
{
    Wavy *o = ctx;
    const int *w = o->w;
    const size_t wn = (size_t)w[0] * w[1] * w[2];
    for (int j = 0; j < n; j++)
        for (int c = 0; c < 3; c++)
            for (int x = 0; x < w[0]; x++)
                for (int y = 0; y < w[1]; y++)
                    for (int z = 0; z < w[2]; z++) {
                        const size_t v = ((size_t)x * w[1] + y) * w[2] + z;
                        o->logits[((size_t)j * 3 + c) * wn + v] =
                            wavy_logit(windows[j * wn + v], c, x, y, z);
                    }
    return o->logits;
}

static int test_blend_reference(void)
{
    static Wavy net = {{12, 12, 12}, {0}};
    const int dim[3] = {20, 12, 17}, K = 3, *w = net.w;
    const size_t n = (size_t)dim[0] * dim[1] * dim[2];
    float *img = xmalloc(n * sizeof(float)), *probs = xmalloc((size_t)K * n * sizeof(float));
    uint8_t *pred = xmalloc(n);
    for (size_t i = 0; i < n; i++) img[i] = (float)((i * 37) % 101) / 101.0f;
    SlidingWindow sw = {{12, 12, 12}, K, 2, 0.5f, SW_SIGMA_SCALE, wavy, &net, backend_cpu()};
    long windows = sliding_window_argmax(&sw, img, dim, pred, probs);
    /* the reference: no padding needed on these axes (every axis >= 12) */
    int s[3][SW_MAX_STARTS], ns[3];
    for (int a = 0; a < 3; a++) ns[a] = sliding_window_starts(dim[a], w[a], 0.5f, s[a]);
    float imp[12 * 12 * 12];
    sliding_window_importance(w, SW_SIGMA_SCALE, imp);
    double *acc = calloc((size_t)K * n, sizeof(double)), *cnt = calloc(n, sizeof(double));
    for (int a0 = 0; a0 < ns[0]; a0++)
        for (int a1 = 0; a1 < ns[1]; a1++)
            for (int a2 = 0; a2 < ns[2]; a2++)
                for (int x = 0; x < w[0]; x++)
                    for (int y = 0; y < w[1]; y++)
                        for (int z = 0; z < w[2]; z++) {
                            const size_t q = ((size_t)(s[0][a0] + x) * dim[1] + (s[1][a1] + y)) *
                                                 dim[2] + (s[2][a2] + z);
                            const double wt = imp[(x * 12 + y) * 12 + z];
                            for (int c = 0; c < K; c++)
                                acc[(size_t)c * n + q] += wt * wavy_logit(img[q], c, x, y, z);
                            cnt[q] += wt;
                        }
    double worst = 0.0;
    size_t wrong = 0;
    for (size_t q = 0; q < n; q++) {
        double e[3], sum = 0.0, mx = -1e300;
        for (int c = 0; c < K; c++) mx = fmax(mx, acc[(size_t)c * n + q] / cnt[q]);
        for (int c = 0; c < K; c++) sum += e[c] = exp(acc[(size_t)c * n + q] / cnt[q] - mx);
        int best = 0;
        double second = 0.0;
        for (int c = 0; c < K; c++) {
            e[c] /= sum;
            worst = fmax(worst, fabs(probs[(size_t)c * n + q] - e[c]));
            if (e[c] > e[best]) best = c;
        }
        for (int c = 0; c < K; c++)
            if (c != best) second = fmax(second, e[c]);
        wrong += e[best] - second > 1e-5 && pred[q] != best;
    }
    TEST_CHECK(windows == (long)ns[0] * ns[1] * ns[2], "windows %ld", windows);
    TEST_CHECK(worst < 1e-5, "probabilities off the double-precision blend by %.2e", worst);
    TEST_CHECK(wrong == 0, "%zu labels differ from the reference's clear argmax", wrong);
    free(img), free(probs), free(pred), free(acc), free(cnt);
    return 0;
}

int main(void)
{
    TEST_RUN(test_starts);
    TEST_RUN(test_importance);
    TEST_RUN(test_end_to_end);
    TEST_RUN(test_softmax_argmax);
    TEST_RUN(test_probabilities);
    TEST_RUN(test_blend_reference);
    return test_finish();
}
