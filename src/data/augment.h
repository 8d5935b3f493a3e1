/* Augmentations of one crop (float [X, Y, Z], Z fastest, values in window units):
 * geometric ones (a flip per axis, quarter turns in the axial X-Y plane) that move the label
 * with the image, and intensity ones (MONAI RandScaleIntensity / RandShiftIntensity, and the
 * strong ones of Alice's intact target views: Gaussian noise and gamma contrast).
 *
 * Drawing and applying are separate: augment_draw turns an RNG stream into an AugmentDraw
 * (every decision for one crop), the apply functions are pure. The training loop may read
 * the draw (e.g. to undo the geometry of an intact view). */
#ifndef ALICE_AUGMENT_H
#define ALICE_AUGMENT_H

#include <stddef.h>
#include <stdint.h>

#include "core/rng.h"

typedef struct {
    float p_flip;                  /* per axis, independently */
    float p_rot90;                 /* then k uniform in 1..3 */
    float p_scale, scale_range;    /* v *= 1 + U(-range, range) */
    float p_shift, shift_range;    /* v += U(-range, range) */
    float p_noise, noise_std_max;  /* v += N(0, s^2), s ~ U(0, max) (MONAI sample_std) */
    float p_gamma, gamma_lo, gamma_hi; /* v = lo + (hi-lo) ((v-lo)/(hi-lo))^g over the crop's range */
} AugmentParams;

/* The decisions for one crop. rot90 counts quarter turns, np.rot90(a, k, axes=(0, 1)). */
typedef struct {
    int flip[3];
    int rot90;
    float scale;        /* multiplier, 1 = none */
    float shift;        /* offset, 0 = none */
    float noise_std;    /* 0 = none */
    float gamma;        /* 1 = none */
} AugmentDraw;

/* Fine-tuning augmentation of MONAI's UNETR BTCV scripts: the tutorial's flips 0.1 per axis,
 * rot90 0.1 and shift 0.1 with p 0.5; research-contributions' intensity scale 0.1 with p 0.1
 * (v *= 1 + U(-0.1, 0.1)), which the tutorial lacks (docs/MODEL.md). */
AugmentParams augment_params_finetune(void);
/* Strong augmentation of Alice's intact (target) views: flips 0.5, rot90 0.5, scale and shift
 * 0.1 with p 0.5, noise and gamma with p 0.2. */
AugmentParams augment_params_intact(void);
/* No augmentation at all. */
AugmentParams augment_params_none(void);

/* Draws every decision from r. A quarter-turn count that would swap unequal X and Y sizes is
 * rounded to a half turn (or none), so the crop keeps its shape. */
void augment_draw(const AugmentParams *p, const int size[3], RngStream *r, AugmentDraw *d);

/* out = rot90(flip(in)); labels likewise when lin/lout are given. in and out must differ.
 * Output shape equals input shape (see augment_draw). */
void augment_geometric(const AugmentDraw *d, const int size[3], const float *in, float *out,
                       const int32_t *lin, int32_t *lout);

/* Scale, shift, gamma, then noise, in place. The noise stream is read only when the draw
 * asks for noise (n draws in a fixed order, so the result is deterministic). */
void augment_intensity(const AugmentDraw *d, size_t n, float *image, RngStream *noise);

/* 1 when the draw moves voxels (any flip or turn). */
int augment_is_geometric(const AugmentDraw *d);

#endif
