#include "data/crop_recipe.h"

#include <string.h>

#include "core/check.h"

size_t crop_recipe_voxels(const CropRecipe *r)
{
    return (size_t)r->size[0] * (size_t)r->size[1] * (size_t)r->size[2];
}

uint32_t crop_recipe_noise_words(const CropRecipe *r)
{
    return r->noise_std > 0.0f ? (uint32_t)crop_recipe_voxels(r) : 0u;
}

/* Minimum and maximum HU over the part of the box inside the volume; *outside = 1 when some
 * of the box is not (those voxels are 0 after windowing). */
static void box_hu_range(const Volume *v, const int start[3], const int size[3], int *lo, int *hi,
                         int *outside)
{
    int a0[3], a1[3];
    *outside = 0;
    for (int a = 0; a < 3; a++) {
        a0[a] = start[a] < 0 ? 0 : start[a];
        a1[a] = start[a] + size[a] > v->dim[a] ? v->dim[a] : start[a] + size[a];
        if (a0[a] != start[a] || a1[a] != start[a] + size[a]) *outside = 1;
    }
    *lo = INT16_MAX;
    *hi = INT16_MIN;
    for (int x = a0[0]; x < a1[0]; x++)
        for (int y = a0[1]; y < a1[1]; y++) {
            const int16_t *row = v->image + volume_index(v->dim, x, y, 0);
            for (int z = a0[2]; z < a1[2]; z++) {
                *lo = row[z] < *lo ? row[z] : *lo;
                *hi = row[z] > *hi ? row[z] : *hi;
            }
        }
}

/* The crop's intensity range after windowing and scale/shift, as augment_intensity finds it. */
static void gamma_range(CropRecipe *r, const Volume *v)
{
    int hu_lo, hu_hi, outside;
    box_hu_range(v, r->start, r->size, &hu_lo, &hu_hi, &outside);
    float lo, hi;
    if (hu_lo > hu_hi) {
        lo = hi = 0.0f;   /* the whole box is outside */
    } else {
        lo = sv_window((float)hu_lo, r->window_lo, r->window_scale);
        hi = sv_window((float)hu_hi, r->window_lo, r->window_scale);
        if (outside) lo = lo < 0.0f ? lo : 0.0f;
    }
    if (r->scale != 1.0f || r->shift != 0.0f) {
        float a = sv_scale_shift(lo, r->scale, r->shift), b = sv_scale_shift(hi, r->scale, r->shift);
        lo = a < b ? a : b;   /* a negative scale would swap the ends */
        hi = a < b ? b : a;
    }
    r->gamma_lo = lo;
    r->gamma_range = hi - lo;
}

void crop_recipe_make(CropRecipe *r, const Volume *v, HuWindow w, const int start[3],
                      const int size[3], const AugmentDraw *d, const RngStream *noise,
                      uint32_t noise_offset, float *image_out, int32_t *label_out)
{
    memset(r, 0, sizeof *r);
    r->image = v->image;
    r->label = v->label;
    for (int a = 0; a < 3; a++) {
        r->dim[a] = v->dim[a];
        r->start[a] = start[a];
        r->size[a] = size[a];
        r->flip[a] = d->flip[a];
    }
    ALICE_ASSERT(!(d->rot90 & 1) || size[0] == size[1],
                 "odd quarter turn of a %dx%d crop would change its shape", size[0], size[1]);
    ALICE_ASSERT(crop_recipe_voxels(r) <= UINT32_MAX, "crop %dx%dx%d is too large for a recipe",
                 size[0], size[1], size[2]);
    r->window_lo = w.lo;
    r->window_scale = window_inverse_width(w);   /* as crop_extract and window_apply */
    r->rot90 = d->rot90;
    r->scale = d->scale;
    r->shift = d->shift;
    r->gamma = d->gamma;
    r->noise_std = d->noise_std;
    r->noise_key[0] = noise->key[0];
    r->noise_key[1] = noise->key[1];
    for (int i = 0; i < 3; i++) r->noise_ctr[i] = noise->ctr[i];
    ALICE_ASSERT(noise->ctr[3] == 0 && noise->left == 0, "crop recipes take a fresh noise stream");
    r->noise_offset = noise_offset;
    if (r->gamma != 1.0f) gamma_range(r, v);
    r->out = image_out;
    r->out_label = label_out;
}

void crop_recipe_render_cpu(const CropRecipe *r)
{
    /* The kernel's loop, one voxel after another. */
    const size_t n = crop_recipe_voxels(r);
    for (size_t i = 0; i < n; i++) sv_render_linear(r, i);
}
