/* Sliding-window inference over a whole volume, as MONAI's sliding_window_inference with
 * mode = "gaussian", sigma_scale = 0.125, padding_mode = "constant" (0) and the given overlap:
 *  - a volume smaller than the window on an axis is padded symmetrically to the window
 *    (the extra voxel, if odd, after), and the padding is cut off again at the end;
 *  - window starts per axis: interval = window when window == size, else
 *    max(int(window * (1 - overlap)), 1); starts i * interval, the last one moved back so the
 *    window ends at the border (MONAI dense_patch_slices), windows in C order of their starts;
 *  - each window's logits are weighted by the Gaussian importance map (MONAI >= 1.0
 *    compute_importance_map: per axis exp(-x^2 / (2 sigma^2)) at x = i - (window - 1) / 2,
 *    sigma = 0.125 * window, the axes multiplied, values under 1e-3 raised to 1e-3), summed,
 *    and divided by the summed weights;
 *  - the blended logits go through a softmax over classes (what MONAI pipelines apply before
 *    AsDiscrete(argmax=True)), and the label is the argmax of those probabilities (first
 *    maximum on ties, as torch/numpy argmax). Softmax is monotonic, so this is the argmax of
 *    the blended logits too, except where two logits closer than float rounding give equal
 *    probabilities; taking the argmax of the very floats that --probs stores keeps
 *    argmax(probabilities) == label exactly.
 * The network is a callback, so this file knows nothing of models. The volume, the windows, the
 * blend and its softmax live in the backend's memory (backend.h sw_* ops): on a GPU only the
 * image goes up and the labels (and probabilities when asked for) come down, where every
 * window's logits used to come down to be blended on the host. */
#ifndef ALICE_SLIDING_WINDOW_H
#define ALICE_SLIDING_WINDOW_H

#include <stdint.h>

#include "ops/backend.h"

/* windows: backend memory [batch, 1, wx, wy, wz], the first n filled, the rest zeros; returns
 * the logits, backend memory [>= n, K, wx, wy, wz], valid until the next call. */
typedef const float *(*SwPredictFn)(void *ctx, const float *windows, int n);

typedef struct {
    int window[3];
    int classes;
    int batch;            /* windows per callback */
    float overlap;        /* 0 .. 0.95 */
    float sigma_scale;    /* 0.125 in MONAI's recipe */
    SwPredictFn predict;
    void *ctx;
    const AliceBackend *be;  /* where the network runs and the blend happens */
} SlidingWindow;

#define SW_SIGMA_SCALE 0.125f
#define SW_MAX_STARTS 4096
/* Labels are uint8. */
#define SW_MAX_CLASSES 256

/* Starts along one axis of `size` voxels (size >= window); returns their count. The interval is
 * MONAI's int(window * (1 - overlap)) in double from the overlap as written in the
 * configuration (config_float_decimal): in float, 80 x (1 - 0.6f) truncates to 31, not 32. */
int sliding_window_starts(int size, int window, float overlap, int *starts);
/* Importance map [wx, wy, wz] (host). */
void sliding_window_importance(const int window[3], float sigma_scale, float *map);
/* Softmax of one voxel's K blended logits into probs (max subtracted first, so no overflow)
 * and the index of the first largest probability (ops/cpu_math.h voxel_softmax_argmax). */
int sliding_window_softmax_argmax(const float *logits, int K, float *probs);
/* Predicts image (host [X, Y, Z], windowed) into labels (host uint8 [X, Y, Z]) on sw->be;
 * probs, when
 * not NULL, receives the softmax of the Gaussian-blended logits, class-major [K, X, Y, Z]
 * (K = classes; the softmax of the blend, not a blend of per-window softmaxes).
 * Returns the number of windows run. */
long sliding_window_argmax(const SlidingWindow *sw, const float *image, const int dim[3],
                           uint8_t *labels, float *probs);

#endif
