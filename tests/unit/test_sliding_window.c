/* Sliding-window inference (eval/sliding_window.h) against hand-computed MONAI cases:
 * window starts (dense_patch_slices), the Gaussian importance map (erf-discretised, sigma
 * 0.125 * window, max 1 at window // 2, symmetric about it), and an end-to-end run with a
 * "network" that predicts the label of each voxel from the image, which must reproduce it
 * exactly through padding, overlap and averaging; and the probabilities (softmax of the blended
 * logits) against hand-computed softmaxes. */
#include <math.h>
#include <string.h>

#include "core/check.h"
#include "eval/sliding_window.h"
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
    return 0;
}

static int test_importance(void)
{
    const int w[3] = {16, 16, 8};
    float map[16 * 16 * 8];
    sliding_window_importance(w, SW_SIGMA_SCALE, map);
    /* Centre (8, 8, 4) is the maximum, 1. */
    TEST_CLOSE(map[(8 * 16 + 8) * 8 + 4], 1.0, 0, 1e-6, "centre weight");
    float mx = 0.0f;
    for (int i = 0; i < 16 * 16 * 8; i++) mx = fmaxf(mx, map[i]);
    TEST_CLOSE(mx, 1.0, 0, 1e-6, "max weight");
    /* Separable erf Gaussian along z alone: sigma 1, offsets -4..3 around 4; the value at
     * offset 1 relative to the centre is g(1)/g(0) with g(x) = erf((x+.5)/sqrt2) - erf((x-.5)/sqrt2). */
    double g0 = erf(0.5 / sqrt(2.0)) - erf(-0.5 / sqrt(2.0));
    double g1 = erf(1.5 / sqrt(2.0)) - erf(0.5 / sqrt(2.0));
    TEST_CLOSE(map[(8 * 16 + 8) * 8 + 5], g1 / g0, 1e-5, 0, "z offset 1");
    TEST_CLOSE(map[(8 * 16 + 8) * 8 + 3], g1 / g0, 1e-5, 0, "z offset -1");
    /* Corners are tiny but clamped to at least 1e-3. */
    TEST_CHECK(map[0] >= 1e-3f, "corner weight %g below the 1e-3 floor", map[0]);
    return 0;
}

/* The "network": logit c of a voxel is 1 when round(image * 4) == c, else 0. */
static void oracle(void *ctx, const float *windows, int n, float *logits)
{
    const int *w = ctx;
    const size_t wn = (size_t)w[0] * w[1] * w[2];
    for (int j = 0; j < n; j++)
        for (int c = 0; c < 4; c++)
            for (size_t i = 0; i < wn; i++)
                logits[((size_t)j * 4 + c) * wn + i] = (int)lrintf(windows[j * wn + i] * 4.0f) == c;
}

static int test_end_to_end(void)
{
    static int w[3] = {16, 16, 16};
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
    SlidingWindow sw = {{16, 16, 16}, 4, 3, 0.5f, SW_SIGMA_SCALE, oracle, w};
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
    float p[3];
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
    static int w[3] = {16, 16, 16};
    const int dim[3] = {30, 12, 20}, K = 4;
    const size_t n = (size_t)dim[0] * dim[1] * dim[2];
    float *img = xmalloc(n * sizeof(float)), *probs = xmalloc((size_t)K * n * sizeof(float));
    uint8_t *truth = xmalloc(n), *pred = xmalloc(n), *plain = xmalloc(n);
    for (size_t i = 0; i < n; i++) {
        truth[i] = (uint8_t)((i / 7 + i / 61) % K);
        img[i] = truth[i] / 4.0f;
    }
    SlidingWindow sw = {{16, 16, 16}, K, 2, 0.5f, SW_SIGMA_SCALE, oracle, w};
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

int main(void)
{
    TEST_RUN(test_starts);
    TEST_RUN(test_importance);
    TEST_RUN(test_end_to_end);
    TEST_RUN(test_softmax_argmax);
    TEST_RUN(test_probabilities);
    return test_finish();
}
