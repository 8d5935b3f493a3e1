/* Where fine-tuning crops are centred: the choice between MONAI's two label-driven samplers.
 *
 *   posneg   RandCropByPosNegLabeld: with probability pos_fraction a uniform foreground voxel,
 *            else a uniform background voxel (crop_posneg_center, data/crop.h). Foreground
 *            voxels are drawn uniformly, so a large organ (the liver) dominates the crops.
 *   classes  RandCropByLabelClassesd: a class c is drawn with probability ratio[c] / sum of the
 *            ratios of the classes present in the case (an absent class gets ratio 0 and the
 *            others are renormalised), then a uniform voxel of class c. Class 0 is the
 *            background: a label-0 voxel whose windowed intensity is above 0 (MONAI's
 *            image_threshold = 0 on the windowed image, as posneg's negatives). Small organs
 *            get as many crops as large ones.
 *
 * Every draw comes from the caller's stream (RNG_CROP keyed by seed, step, global sample), so
 * the centres obey the loader's reproducibility contract whatever the sampler. */
#ifndef ALICE_CROP_SAMPLER_H
#define ALICE_CROP_SAMPLER_H

#include "core/rng.h"
#include "data/crop.h"
#include "volume.h"

typedef enum { CROP_SAMPLER_POSNEG, CROP_SAMPLER_CLASSES } CropSamplerKind;
#define CROP_SAMPLER_NAMES "posneg|classes"

typedef struct {
    CropSamplerKind kind;
    float pos_fraction;                       /* posneg: pos / (pos + neg) */
    int num_classes;                          /* classes: labels 0 .. num_classes - 1 */
    float class_ratios[LABEL_CLASS_COUNT];    /* classes: weight per class, background first */
} CropSampler;

/* From the configuration's crop_sampler (posneg | classes), pos_fraction, class_ratios and
 * num_classes. class_ratios is "" (every class, background included, weight 1: MONAI's
 * default) or num_classes comma-separated non-negative weights, background first. Bad values
 * end the job with a message naming the key and the fix. */
void crop_sampler_init(CropSampler *s, const char *kind, float pos_fraction,
                       const char *class_ratios, int num_classes);

/* The per-case label index the sampler draws from (built once per case, with its cache entry):
 * ascending foreground for posneg (unchanged, so its draws are too), grouped by class for
 * classes. Free with label_index_free. */
void crop_sampler_index_build(const CropSampler *s, const Volume *v, HuWindow w, LabelIndex *out);

/* A centre drawn by the sampler; returns 1 when it lies on foreground (an organ), 0 otherwise. */
int crop_sampler_center(const CropSampler *s, const Volume *v, const LabelIndex *idx, HuWindow w,
                        RngStream *r, int center[3]);

/* The probability of each class 0 .. num_classes - 1 in this case: ratios of the classes
 * present (background: background_count > 0; class c: voxels in idx), renormalised. Returns
 * their sum before renormalising; 0 means no class with a positive ratio is present, and probs
 * is all zero. idx must be built by class. */
double crop_class_probabilities(const LabelIndex *idx, const float *ratios, int num_classes,
                                double *probs);

/* RandCropByLabelClassesd centre: a class drawn by crop_class_probabilities, then a uniform
 * voxel of it. Returns the class drawn. When no class with a positive ratio is present, the
 * classes present are drawn with equal weights (MONAI's default ratios) rather than failing;
 * with no class present at all (no label, no background in the window), a uniform voxel. */
int crop_classes_center(const Volume *v, const LabelIndex *idx, HuWindow w, const float *ratios,
                        int num_classes, RngStream *r, int center[3]);

#endif
