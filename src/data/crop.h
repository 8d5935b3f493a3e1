/* Crops out of a Volume: HU window to [0, 1] at cut time, zero padding where the crop leaves
 * the volume, and the choice of crop centres (uniform inside the body for pre-training,
 * positive/negative label sampling for fine-tuning, MONAI RandCropByPosNegLabeld semantics;
 * the class-balanced alternative and the choice between them are in data/crop_sampler.h).
 *
 * Coordinates are voxel indices of the volume, C order [X, Y, Z] with Z fastest; crops are
 * float [X, Y, Z] buffers (one channel) and optional int32 label buffers of the same shape. */
#ifndef ALICE_CROP_H
#define ALICE_CROP_H

#include <stddef.h>
#include <stdint.h>

#include "core/rng.h"
#include "data/sample_voxel.h"
#include "volume.h"

/* HU window mapped linearly to [0, 1] and clipped (MONAI ScaleIntensityRanged, clip=True). */
typedef struct {
    float lo, hi;
} HuWindow;

/* Pre-training window of the released Alice code, and MONAI's UNETR fine-tuning window. */
#define WINDOW_PRETRAIN_LO (-125.0f)
#define WINDOW_PRETRAIN_HI 225.0f
#define WINDOW_FINETUNE_LO (-175.0f)
#define WINDOW_FINETUNE_HI 250.0f

/* HU above which a voxel belongs to the body (air and lung lie far below, fat at about -100). */
#define BODY_HU_THRESHOLD (-500)

/* One windowing formula everywhere: whole cases (validation, inference) go through the very
 * function training crops and the GPU crop kernel use (sv_window, multiply by the reciprocal),
 * so a voxel windowed for inference is bit for bit the voxel a training crop saw. */
static inline float window_inverse_width(HuWindow w) { return 1.0f / (w.hi - w.lo); }
static inline float window_apply(HuWindow w, float hu)
{
    return sv_window(hu, w.lo, window_inverse_width(w));
}

/* Cuts the crop whose first voxel is `start` (may be negative or reach past the volume) and
 * whose shape is `size`. Voxels outside the volume become 0 -- the window's minimum, i.e.
 * what air maps to -- and label 0 (background). label_out may be NULL; a volume without a
 * label gives an all-zero label crop. */
void crop_extract(const Volume *v, HuWindow w, const int start[3], const int size[3],
                  float *image_out, int32_t *label_out);

/* First voxel of the crop of `size` centred on `center`. Where the volume is at least as big
 * as the crop along an axis the crop is shifted to lie inside it (MONAI correct_crop_centers);
 * where it is smaller, the crop is centred on the volume so the padding splits evenly
 * (MONAI SpatialPad then crop). */
void crop_start_for_center(const int dim[3], const int size[3], const int center[3], int start[3]);

/* A centre drawn uniformly over the positions that keep the crop inside the volume, retried
 * (a bounded number of times) until the centre voxel lies in the body, so pre-training crops
 * are not mostly air. Returns 1 when the centre is in the body. */
int crop_random_body_center(const Volume *v, const int size[3], RngStream *r, int center[3]);

/* Label values a uint8 label volume can hold (class 0 = background). */
#define LABEL_CLASS_COUNT 256

/* Foreground voxel indices of a labelled volume (label > 0), computed once per case so that a
 * positive centre is a uniform draw over foreground voxels (or over one class's voxels). */
typedef struct {
    uint32_t *foreground;  /* flat volume indices: ascending, or grouped by class (by_class) */
    size_t count;
    /* label_index_build_by_class only (zero otherwise): class c owns foreground[class_start[c]
     * .. class_start[c + 1]) (ascending within the class; class 0 is empty), and
     * background_count voxels qualify as background centres (label 0, windowed image > 0).
     * One int32 offset per foreground voxel, as the ungrouped index: no extra memory. */
    int by_class;
    size_t class_start[LABEL_CLASS_COUNT + 1];
    size_t background_count;
} LabelIndex;

/* Ascending layout: what the posneg sampler draws from (its draws depend on this order). */
void label_index_build(const Volume *v, LabelIndex *out);
/* Grouped by class (a counting sort, two passes over the label), plus the background count
 * under window w: what the class-balanced sampler (data/crop_sampler.h) draws from. As MONAI's
 * map_classes_to_indices given the image, every class holds only voxels above w.lo. */
void label_index_build_by_class(const Volume *v, HuWindow w, LabelIndex *out);
void label_index_free(LabelIndex *idx);
/* Voxels of class c in the index (0 for the background, which is not indexed). */
static inline size_t label_index_class_count(const LabelIndex *idx, int c)
{
    return idx->by_class && c > 0 && c < LABEL_CLASS_COUNT ? idx->class_start[c + 1] - idx->class_start[c] : 0;
}
/* Voxel coordinates of flat index i. */
void volume_unflatten(const int dim[3], size_t i, int c[3]);
/* True when voxel i may be a background centre: label 0 (or no label) and inside the window. */
static inline int crop_is_background(const Volume *v, HuWindow w, size_t i)
{
    return (!v->label || v->label[i] == 0) && (float)v->image[i] > w.lo;
}

/* A uniform qualifying background voxel of v (label 0 and windowed image > 0): rejection,
 * then, should every try miss, the k-th of the `count` qualifying voxels (count < 0: counted
 * here first), so still uniform, and bounded. 0 with *voxel set, or -1 when v has none. */
int crop_draw_background(const Volume *v, HuWindow w, long long count, RngStream *r,
                         size_t *voxel);

/* MONAI RandCropByPosNegLabeld(pos, neg, image_threshold) centre: with probability
 * pos_fraction = pos / (pos + neg) a uniform foreground voxel, else a uniform background
 * voxel (label 0 and windowed image > 0, i.e. HU above the window's low end, as MONAI does
 * with image_threshold = 0 on the windowed image). A volume without foreground gives a
 * negative centre; one without qualifying background a positive one. Returns 1 for a
 * positive centre, 0 for a negative one. */
int crop_posneg_center(const Volume *v, const LabelIndex *idx, HuWindow w, float pos_fraction,
                       RngStream *r, int center[3]);

#endif
