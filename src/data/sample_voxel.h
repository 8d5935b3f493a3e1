/* The per-voxel formula of a training crop, written once for both compilers: the CPU path
 * (crop.c's crop_extract, augment.c) and the CUDA kernel of GPU crops (cuda/cuda_crops.cu)
 * call these functions, so the CPU tests exercise the code the GPU runs.
 *
 * A crop voxel at output position o = (ox, oy, oz) of a crop of shape size is:
 *   s   = source position in the cut crop: flips first, then quarter turns in the X-Y plane
 *         (np.rot90(flip(m), k, axes=(0, 1)), see augment.h), Z flipped independently;
 *   p   = start + s, a voxel of the volume (the crop may leave the volume);
 *   v   = window(HU[p]) in [0, 1], or 0 outside the volume (what air maps to);
 *   v   = v * scale + shift                     (when scale != 1 or shift != 0);
 *   v   = lo + range ((v - lo) / range)^gamma   (when gamma != 1 and range > 1e-7; lo and range
 *                                                 over the whole crop after scale/shift);
 *   v  += noise_std * byte_normal(word)         (when noise_std > 0; word o_lin + noise_offset
 *                                                 of the Philox stream of the sample).
 * Products and sums go through SV_MUL / SV_ADD: under nvcc they are the round-to-nearest
 * intrinsics, which nvcc never fuses into an FMA, so both compilers round every step alike. */
#ifndef ALICE_SAMPLE_VOXEL_H
#define ALICE_SAMPLE_VOXEL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "core/hostdev.h"
#include "core/philox.h"

#ifdef __CUDA_ARCH__
#define SV_MUL(a, b) __fmul_rn((a), (b))
#define SV_ADD(a, b) __fadd_rn((a), (b))
#else
#define SV_MUL(a, b) ((a) * (b))
#define SV_ADD(a, b) ((a) + (b))
#endif

/* Gamma is skipped over a crop whose intensity range is below this (flat crops). */
#define SV_GAMMA_MIN_RANGE 1e-7f

/* Everything one crop needs, decided on the host (case, start, augmentation draw, noise
 * stream); pointers are host memory for the CPU renderer and device memory for the kernel. */
typedef struct CropRecipe {
    const int16_t *image;        /* volume HU, [X, Y, Z], Z fastest */
    const uint8_t *label;        /* volume labels, NULL without */
    int32_t dim[3];              /* volume shape */
    int32_t start[3];            /* first voxel of the crop in the volume (may be outside) */
    int32_t size[3];             /* crop shape */
    float window_lo;             /* HU mapped to 0 */
    float window_scale;          /* 1 / (window_hi - window_lo) */
    int32_t flip[3];             /* AugmentDraw */
    int32_t rot90;
    float scale, shift;
    float gamma, gamma_lo, gamma_range;
    float noise_std;
    uint32_t noise_key[2];       /* Philox key and counter words 0..2 of the noise stream */
    uint32_t noise_ctr[3];
    uint32_t noise_offset;       /* words used by the sample's earlier views */
    float *out;                  /* [X, Y, Z] */
    int32_t *out_label;          /* [X, Y, Z], NULL when not wanted */
} CropRecipe;

/* MONAI ScaleIntensityRanged(clip=True) with the reciprocal computed once per crop. */
ALICE_HOSTDEV static inline float sv_window(float hu, float lo, float inv_width)
{
    float t = (hu - lo) * inv_width;
    return t < 0.0f ? 0.0f : (t > 1.0f ? 1.0f : t);
}

/* Source (x, y) in the cut crop for output (ox, oy). The flip applies first, then the turn:
 * np.rot90(m, 1, axes=(0,1))[i, j] = m[j, Y-1-i] (its code: transpose(flip(m, axis 1))). */
ALICE_HOSTDEV static inline void sv_source_xy(int flip_x, int flip_y, int rot90, int X, int Y,
                                              int ox, int oy, int *sx, int *sy)
{
    int fx, fy; /* coordinates in the flipped crop */
    switch (rot90) {
    case 1: fx = oy; fy = Y - 1 - ox; break;
    case 2: fx = X - 1 - ox; fy = Y - 1 - oy; break;
    case 3: fx = X - 1 - oy; fy = ox; break;
    default: fx = ox; fy = oy; break;
    }
    *sx = flip_x ? X - 1 - fx : fx;
    *sy = flip_y ? Y - 1 - fy : fy;
}

ALICE_HOSTDEV static inline float sv_scale_shift(float v, float scale, float shift)
{
    return SV_ADD(SV_MUL(v, scale), shift);
}

/* MONAI AdjustContrast over the crop's own range [lo, lo + range]. */
ALICE_HOSTDEV static inline float sv_gamma(float v, float lo, float range, float gamma)
{
    return SV_ADD(lo, SV_MUL(range, powf((v - lo) / range, gamma)));
}

/* An approximately normal number from four bytes (Irwin-Hall sum of four uniforms, scaled to
 * unit variance): a quarter of a Philox call per voxel instead of half a Box-Muller pair,
 * which matters at 2.4 million voxels per crop. Tails stop at +-3.46 sigma. */
ALICE_HOSTDEV static inline float sv_byte_normal(uint32_t word)
{
    /* Variance of one uniform byte: (256^2 - 1) / 12; 1/sqrt(4 of them) as a constant. */
    const float inv_sd = 1.0f / sqrtf(4.0f * (256.0f * 256.0f - 1.0f) / 12.0f);
    int sum = (int)(word & 255u) + (int)((word >> 8) & 255u) + (int)((word >> 16) & 255u) +
              (int)(word >> 24);
    return ((float)sum - 510.0f) * inv_sd;
}

ALICE_HOSTDEV static inline float sv_add_noise(float v, float std, uint32_t word)
{
    return SV_ADD(v, SV_MUL(std, sv_byte_normal(word)));
}

/* The intensity chain after windowing, for output voxel o_lin (linear index in the crop). */
ALICE_HOSTDEV static inline float sv_intensity(const CropRecipe *r, float v, uint32_t o_lin)
{
    if (r->scale != 1.0f || r->shift != 0.0f) v = sv_scale_shift(v, r->scale, r->shift);
    if (r->gamma != 1.0f && r->gamma_range > SV_GAMMA_MIN_RANGE)
        v = sv_gamma(v, r->gamma_lo, r->gamma_range, r->gamma);
    if (r->noise_std > 0.0f)
        v = sv_add_noise(v, r->noise_std, philox_word_at(r->noise_key, r->noise_ctr, r->noise_offset + o_lin));
    return v;
}

/* Output voxel (ox, oy, oz) of recipe r: writes r->out (and r->out_label when set). */
ALICE_HOSTDEV static inline void sv_render_voxel(const CropRecipe *r, int ox, int oy, int oz)
{
    const int X = r->size[0], Y = r->size[1], Z = r->size[2];
    int sx, sy;
    sv_source_xy(r->flip[0], r->flip[1], r->rot90, X, Y, ox, oy, &sx, &sy);
    const int sz = r->flip[2] ? Z - 1 - oz : oz;
    const int px = r->start[0] + sx, py = r->start[1] + sy, pz = r->start[2] + sz;
    const int inside = px >= 0 && px < r->dim[0] && py >= 0 && py < r->dim[1] && pz >= 0 &&
                       pz < r->dim[2];
    const uint32_t o_lin = ((uint32_t)ox * (uint32_t)Y + (uint32_t)oy) * (uint32_t)Z + (uint32_t)oz;
    const int64_t p_lin = inside ? ((int64_t)px * r->dim[1] + py) * r->dim[2] + pz : 0;
    float v = inside ? sv_window((float)r->image[p_lin], r->window_lo, r->window_scale) : 0.0f;
    r->out[o_lin] = sv_intensity(r, v, o_lin);
    if (r->out_label) r->out_label[o_lin] = inside && r->label ? (int32_t)r->label[p_lin] : 0;
}

/* Voxel i of the crop in output order (Z fastest): one CPU loop iteration or one GPU thread. */
ALICE_HOSTDEV static inline void sv_render_linear(const CropRecipe *r, size_t i)
{
    const size_t yz = (size_t)r->size[1] * (size_t)r->size[2];
    const int ox = (int)(i / yz);
    const size_t rest = i - (size_t)ox * yz;
    const int oy = (int)(rest / (size_t)r->size[2]);
    const int oz = (int)(rest - (size_t)oy * (size_t)r->size[2]);
    sv_render_voxel(r, ox, oy, oz);
}

#endif
