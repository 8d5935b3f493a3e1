#include "eval/sliding_window.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "core/config.h"
#include "ops/cpu_math.h"

/* MONAI clamps the importance map from below by max(smallest non-zero, 1e-3) so that no voxel
 * of a window has zero weight. */
#define SW_MIN_WEIGHT 1e-3f

int sliding_window_starts(int size, int window, float overlap, int *starts)
{
    ALICE_ASSERT(size >= window, "axis of %d voxels is smaller than the window %d", size, window);
    const double typed_overlap = config_float_decimal(overlap);
    int interval = window == size ? window : (int)((double)window * (1.0 - typed_overlap));
    if (interval < 1) interval = 1;
    /* First start whose window reaches the border, as MONAI's dense_patch_slices. */
    int count = 0;
    for (int i = 0;; i++) {
        long s = (long)i * interval;
        ALICE_ASSERT(count < SW_MAX_STARTS, "more than %d windows on one axis", SW_MAX_STARTS);
        if (s + window >= size) {
            starts[count++] = size - window;
            break;
        }
        starts[count++] = (int)s;
    }
    return count;
}

/* MONAI's compute_importance_map (mode "gaussian", MONAI 1.0 and later; 0.9 and earlier
 * blurred a unit impulse at window // 2 with an erf-discretised kernel and divided by the max,
 * half a voxel off centre for even windows): per axis exp(-x^2 / (2 sigma^2)) at
 * x = i - (w - 1) / 2 with sigma = sigma_scale * w, the axes multiplied in float as torch
 * does, then raised to max(min, 1e-3). Symmetric in every axis, peak 1 only for odd windows
 * (the blend divides by the summed weights, so only the ratios matter). */
void sliding_window_importance(const int window[3], float sigma_scale, float *map)
{
    float *axis[3];
    for (int a = 0; a < 3; a++) {
        axis[a] = xmalloc((size_t)window[a] * sizeof(float));
        const double sigma = window[a] * (double)sigma_scale;
        const float denom = (float)(-2.0 * sigma * sigma);
        for (int i = 0; i < window[a]; i++) {
            const float x = (float)i - (float)(window[a] - 1) / 2.0f;   /* exact: halves */
            axis[a][i] = expf(x * x / denom);
        }
    }
    const size_t n = (size_t)window[0] * window[1] * window[2];
    float lowest = INFINITY;
    size_t i = 0;
    for (int x = 0; x < window[0]; x++)
        for (int y = 0; y < window[1]; y++)
            for (int z = 0; z < window[2]; z++, i++) {
                map[i] = axis[0][x] * axis[1][y] * axis[2][z];
                if (map[i] < lowest) lowest = map[i];
            }
    const float floor_w = fmaxf(lowest, SW_MIN_WEIGHT);
    for (i = 0; i < n; i++) map[i] = fmaxf(map[i], floor_w);
    for (int a = 0; a < 3; a++) free(axis[a]);
}

int sliding_window_softmax_argmax(const float *logits, int K, float *probs)
{
    return voxel_softmax_argmax(logits, K, probs);
}

long sliding_window_argmax(const SlidingWindow *sw, const float *image, const int dim[3],
                           uint8_t *labels, float *probs)
{
    const AliceBackend *be = sw->be;
    const int *w = sw->window;
    const int K = sw->classes;
    ALICE_ASSERT(K >= 1 && K <= SW_MAX_CLASSES, "classes %d", K);
    /* Padded grid: at least the window on every axis, the image centred (MONAI pads
     * diff // 2 before and the rest after). */
    int pd[3], lo[3];
    for (int a = 0; a < 3; a++) {
        pd[a] = dim[a] > w[a] ? dim[a] : w[a];
        lo[a] = (pd[a] - dim[a]) / 2;
    }
    const size_t pn = (size_t)pd[0] * pd[1] * pd[2];
    const size_t wn = (size_t)w[0] * w[1] * w[2];
    const size_t n = (size_t)dim[0] * dim[1] * dim[2];
    /* The padded image on the host (the copy is cheap next to the network), then once up. */
    float *padded_host = xcalloc(pn, sizeof(float));
    for (int x = 0; x < dim[0]; x++)
        for (int y = 0; y < dim[1]; y++)
            memcpy(padded_host + ((size_t)(x + lo[0]) * pd[1] + (y + lo[1])) * pd[2] + lo[2],
                   image + ((size_t)x * dim[1] + y) * dim[2], (size_t)dim[2] * sizeof(float));
    float *imp_host = xmalloc(wn * sizeof(float));
    sliding_window_importance(w, sw->sigma_scale, imp_host);
    float *padded = be->alloc(pn * sizeof(float)), *imp = be->alloc(wn * sizeof(float));
    be->upload(padded, padded_host, pn * sizeof(float));
    be->upload(imp, imp_host, wn * sizeof(float));
    free(padded_host);
    free(imp_host);
    float *acc = be->alloc((size_t)K * pn * sizeof(float)), *count = be->alloc(pn * sizeof(float));
    be->fill(acc, 0.0f, (size_t)K * pn);
    be->fill(count, 0.0f, pn);
    float *win = be->alloc((size_t)sw->batch * wn * sizeof(float));
    int *starts[3], ns[3];
    for (int a = 0; a < 3; a++) {
        starts[a] = xmalloc(SW_MAX_STARTS * sizeof(int));
        ns[a] = sliding_window_starts(pd[a], w[a], sw->overlap, starts[a]);
    }
    const long total = (long)ns[0] * ns[1] * ns[2];
    int (*origin)[3] = xmalloc((size_t)sw->batch * sizeof *origin);
    for (long first = 0; first < total; first += sw->batch) {
        int m = (int)(total - first < sw->batch ? total - first : sw->batch);
        for (int j = 0; j < m; j++) {
            long k = first + j;
            origin[j][0] = starts[0][k / ((long)ns[1] * ns[2])];
            origin[j][1] = starts[1][(k / ns[2]) % ns[1]];
            origin[j][2] = starts[2][k % ns[2]];
            be->sw_gather_window(win + (size_t)j * wn, padded, pd, w, origin[j]);
        }
        /* Unused slots of a last partial batch hold zeros; their outputs are ignored. */
        if (m < sw->batch) be->fill(win + (size_t)m * wn, 0.0f, (size_t)(sw->batch - m) * wn);
        const float *out = sw->predict(sw->ctx, win, m);
        /* in window order (C order of the starts): the sums' order, whatever the backend */
        for (int j = 0; j < m; j++)
            be->sw_blend_window(acc, count, out + (size_t)j * K * wn, imp, K, pd, w, origin[j]);
    }
    /* Softmax and argmax of the weighted mean on the original (unpadded) grid. */
    uint8_t *labels_b = be->alloc(n);
    float *probs_b = probs ? be->alloc((size_t)K * n * sizeof(float)) : NULL;
    be->sw_finish(labels_b, probs_b, acc, count, K, pd, dim, lo);
    be->download(labels, labels_b, n);
    if (probs) be->download(probs, probs_b, (size_t)K * n * sizeof(float));
    for (int a = 0; a < 3; a++) free(starts[a]);
    free(origin);
    float *bufs[] = {padded, imp, acc, count, win, probs_b};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) be->release(bufs[i]);
    be->release(labels_b);
    return total;
}
