/* Sliding-window inference over a whole volume, as MONAI's sliding_window_inference with
 * mode = "gaussian", sigma_scale = 0.125, padding_mode = "constant" (0) and the given overlap:
 *  - a volume smaller than the window on an axis is padded symmetrically to the window
 *    (the extra voxel, if odd, after), and the padding is cut off again at the end;
 *  - window starts per axis: interval = window when window == size, else
 *    max(int(window * (1 - overlap)), 1); starts i * interval, the last one moved back so the
 *    window ends at the border (MONAI dense_patch_slices), windows in C order of their starts;
 *  - each window's logits are weighted by the Gaussian importance map (MONAI
 *    compute_importance_map: a unit impulse at window // 2 blurred by an erf-discretised
 *    Gaussian of sigma = 0.125 * window per axis, truncated at 4 sigma, divided by its maximum,
 *    zeros raised to the smallest non-zero value), summed, and divided by the summed weights;
 *  - the result is the argmax over classes (first maximum on ties, as torch.argmax).
 * The network is a callback on host buffers, so this file knows nothing of models. */
#ifndef ALICE_SLIDING_WINDOW_H
#define ALICE_SLIDING_WINDOW_H

#include <stdint.h>

/* windows: host [n, 1, wx, wy, wz]; logits: host [n, K, wx, wy, wz] to fill. n <= batch. */
typedef void (*SwPredictFn)(void *ctx, const float *windows, int n, float *logits);

typedef struct {
    int window[3];
    int classes;
    int batch;            /* windows per callback */
    float overlap;        /* 0 .. 0.95 */
    float sigma_scale;    /* 0.125 in MONAI's recipe */
    SwPredictFn predict;
    void *ctx;
} SlidingWindow;

#define SW_SIGMA_SCALE 0.125f
#define SW_MAX_STARTS 4096

/* Starts along one axis of `size` voxels (size >= window); returns their count. */
int sliding_window_starts(int size, int window, float overlap, int *starts);
/* Importance map [wx, wy, wz] (host). */
void sliding_window_importance(const int window[3], float sigma_scale, float *map);
/* Predicts image (host [X, Y, Z], windowed) into labels (host uint8 [X, Y, Z]); probs, when
 * not NULL, receives the averaged logits [K, X, Y, Z]. Returns the number of windows run. */
long sliding_window_argmax(const SlidingWindow *sw, const float *image, const int dim[3],
                           uint8_t *labels, float *avg_logits);

#endif
