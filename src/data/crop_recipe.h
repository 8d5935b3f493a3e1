/* Crop recipes: one view of one sample as data (volume, crop start, augmentation draw, noise
 * stream) instead of voxels, so the voxels can be produced where the volume lives: by the CPU
 * here, or by the CUDA kernel of cuda/cuda_crops.cu from a device copy of the volume. Both run
 * sv_render_voxel (data/sample_voxel.h) and give what crop_extract + augment_geometric +
 * augment_intensity give. */
#ifndef ALICE_CROP_RECIPE_H
#define ALICE_CROP_RECIPE_H

#include <stddef.h>
#include <stdint.h>

#include "core/rng.h"
#include "data/augment.h"
#include "data/crop.h"
#include "data/sample_voxel.h"
#include "volume.h"

/* The recipe of the crop of `size` starting at `start` in v, windowed with w, augmented with d;
 * noise (when d draws it) is word noise_offset + i of the stream `noise` (as rng_init left it;
 * the stream itself is not advanced). When d asks for gamma, the crop's intensity range is
 * measured here on the host volume (the minimum and maximum HU of the box, windowed: the window
 * and scale/shift are monotone, so they equal the range over the finished crop). Image, label
 * and output pointers come from v and image_out/label_out; a GPU caller replaces them. */
void crop_recipe_make(CropRecipe *r, const Volume *v, HuWindow w, const int start[3],
                      const int size[3], const AugmentDraw *d, const RngStream *noise,
                      uint32_t noise_offset, float *image_out, int32_t *label_out);

/* Words of the noise stream this view uses (its voxel count when it draws noise, else 0):
 * the next view of the same sample starts where this one ends, as on the CPU path. */
uint32_t crop_recipe_noise_words(const CropRecipe *r);

size_t crop_recipe_voxels(const CropRecipe *r);

/* Renders r on the CPU (the reference of the GPU kernel, and the fallback for volumes the
 * GPU cache cannot hold). */
void crop_recipe_render_cpu(const CropRecipe *r);

#endif
