#include "data/augment.h"

#include <float.h>
#include <string.h>

#include "core/check.h"
#include "data/sample_voxel.h"

AugmentParams augment_params_none(void)
{
    AugmentParams p;
    memset(&p, 0, sizeof p);
    p.gamma_lo = p.gamma_hi = 1.0f;
    return p;
}

AugmentParams augment_params_finetune(void)
{
    AugmentParams p = augment_params_none();
    p.p_flip = 0.1f;
    p.p_rot90 = 0.1f;
    p.p_scale = 0.1f;      /* RandScaleIntensityd(factors=0.1, prob=0.1) */
    p.scale_range = 0.1f;
    p.p_shift = 0.5f;      /* RandShiftIntensityd(offsets=0.1, prob=0.5) */
    p.shift_range = 0.1f;
    return p;
}

AugmentParams augment_params_intact(void)
{
    AugmentParams p = augment_params_none();
    p.p_flip = 0.5f;
    p.p_rot90 = 0.5f;
    p.p_scale = 0.5f;
    p.scale_range = 0.1f;
    p.p_shift = 0.5f;
    p.shift_range = 0.1f;
    p.p_noise = 0.2f;
    p.noise_std_max = 0.05f;
    p.p_gamma = 0.2f;
    p.gamma_lo = 0.7f;
    p.gamma_hi = 1.5f;
    return p;
}

static float symmetric(RngStream *r, float range) { return (2.0f * rng_uniform(r) - 1.0f) * range; }

void augment_draw(const AugmentParams *p, const int size[3], RngStream *r, AugmentDraw *d)
{
    /* Every decision consumes its draws whether or not it fires, so one decision's
     * probability never shifts the numbers another sees. */
    for (int a = 0; a < 3; a++) d->flip[a] = rng_uniform(r) < p->p_flip;
    int turn = rng_uniform(r) < p->p_rot90;
    int k = 1 + (int)rng_below(r, 3);
    d->rot90 = turn ? k : 0;
    if (size[0] != size[1] && (d->rot90 & 1)) d->rot90 = d->rot90 == 1 ? 0 : 2;
    int scale = rng_uniform(r) < p->p_scale;
    float scale_v = symmetric(r, p->scale_range);
    d->scale = scale ? 1.0f + scale_v : 1.0f;
    int shift = rng_uniform(r) < p->p_shift;
    float shift_v = symmetric(r, p->shift_range);
    d->shift = shift ? shift_v : 0.0f;
    int noise = rng_uniform(r) < p->p_noise;
    float noise_v = rng_uniform(r) * p->noise_std_max;
    d->noise_std = noise ? noise_v : 0.0f;
    int gamma = rng_uniform(r) < p->p_gamma;
    float gamma_v = p->gamma_lo + rng_uniform(r) * (p->gamma_hi - p->gamma_lo);
    d->gamma = gamma ? gamma_v : 1.0f;
}

int augment_is_geometric(const AugmentDraw *d)
{
    return d->flip[0] || d->flip[1] || d->flip[2] || d->rot90;
}

void augment_geometric(const AugmentDraw *d, const int size[3], const float *in, float *out,
                       const int32_t *lin, int32_t *lout)
{
    ALICE_ASSERT(in != out, "augment_geometric needs distinct input and output buffers");
    ALICE_ASSERT(!(d->rot90 & 1) || size[0] == size[1],
                 "odd quarter turn of a %dx%d crop would change its shape", size[0], size[1]);
    const int Z = size[2];
    for (int ox = 0; ox < size[0]; ox++)
        for (int oy = 0; oy < size[1]; oy++) {
            int sx, sy;
            sv_source_xy(d->flip[0], d->flip[1], d->rot90, size[0], size[1], ox, oy, &sx, &sy);
            size_t o = ((size_t)ox * (size_t)size[1] + (size_t)oy) * (size_t)Z;
            size_t s = ((size_t)sx * (size_t)size[1] + (size_t)sy) * (size_t)Z;
            if (d->flip[2]) {
                for (int z = 0; z < Z; z++) out[o + z] = in[s + (size_t)(Z - 1 - z)];
                if (lin && lout)
                    for (int z = 0; z < Z; z++) lout[o + z] = lin[s + (size_t)(Z - 1 - z)];
            } else {
                memcpy(out + o, in + s, (size_t)Z * sizeof *out);
                if (lin && lout) memcpy(lout + o, lin + s, (size_t)Z * sizeof *lout);
            }
        }
}

void augment_intensity(const AugmentDraw *d, size_t n, float *image, RngStream *noise)
{
    if (d->scale != 1.0f || d->shift != 0.0f)
        for (size_t i = 0; i < n; i++) image[i] = sv_scale_shift(image[i], d->scale, d->shift);
    if (d->gamma != 1.0f && n) {
        /* MONAI AdjustContrast: over the crop's own range. */
        float lo = FLT_MAX, hi = -FLT_MAX;
        for (size_t i = 0; i < n; i++) {
            lo = image[i] < lo ? image[i] : lo;
            hi = image[i] > hi ? image[i] : hi;
        }
        float range = hi - lo;
        if (range > SV_GAMMA_MIN_RANGE)
            for (size_t i = 0; i < n; i++) image[i] = sv_gamma(image[i], lo, range, d->gamma);
    }
    if (d->noise_std > 0.0f)
        for (size_t i = 0; i < n; i++) image[i] = sv_add_noise(image[i], d->noise_std, rng_u32(noise));
}
