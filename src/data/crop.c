#include "data/crop.h"

#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "data/sample_voxel.h"

/* Bounded rejection sampling: enough tries that a body covering a tenth of the volume is
 * found with certainty for practical purposes, few enough to cost nothing when it is absent. */
#define BODY_CENTER_TRIES 32
/* Uniform tries at a background voxel before the exact (one scan) draw: background is most of
 * a CT, so the scan is almost never reached; it only makes the draw exact for a sliver. */
#define BACKGROUND_TRIES 256

void crop_extract(const Volume *v, HuWindow w, const int start[3], const int size[3],
                  float *image_out, int32_t *label_out)
{
    const int *dim = v->dim;
    const size_t row = (size_t)size[2];
    /* The Z range inside the volume is the same for every (x, y) row. */
    int z0 = start[2] < 0 ? -start[2] : 0;
    int z1 = size[2];
    if (start[2] + z1 > dim[2]) z1 = dim[2] - start[2];
    if (z1 < z0) z1 = z0;
    const float scale = window_inverse_width(w);
    for (int cx = 0; cx < size[0]; cx++) {
        int x = start[0] + cx;
        for (int cy = 0; cy < size[1]; cy++) {
            int y = start[1] + cy;
            float *out = image_out + ((size_t)cx * (size_t)size[1] + (size_t)cy) * row;
            int32_t *lout = label_out ? label_out + (out - image_out) : NULL;
            if (x < 0 || x >= dim[0] || y < 0 || y >= dim[1] || z0 >= z1) {
                memset(out, 0, row * sizeof *out);
                if (lout) memset(lout, 0, row * sizeof *lout);
                continue;
            }
            for (int cz = 0; cz < z0; cz++) out[cz] = 0.0f;
            for (int cz = z1; cz < size[2]; cz++) out[cz] = 0.0f;
            const int16_t *src = v->image + volume_index(dim, x, y, start[2]);
            for (int cz = z0; cz < z1; cz++) out[cz] = sv_window((float)src[cz], w.lo, scale);
            if (lout) {
                memset(lout, 0, row * sizeof *lout);
                if (v->label) {
                    const uint8_t *lsrc = v->label + volume_index(dim, x, y, start[2]);
                    for (int cz = z0; cz < z1; cz++) lout[cz] = lsrc[cz];
                }
            }
        }
    }
}

void crop_start_for_center(const int dim[3], const int size[3], const int center[3], int start[3])
{
    for (int a = 0; a < 3; a++) {
        if (dim[a] <= size[a]) {
            /* Smaller than the crop: centre the volume, padding floor/ceil like SpatialPad. */
            start[a] = -((size[a] - dim[a]) / 2);
            continue;
        }
        int s = center[a] - size[a] / 2;
        if (s < 0) s = 0;
        if (s > dim[a] - size[a]) s = dim[a] - size[a];
        start[a] = s;
    }
}

/* Uniform centre over the positions whose crop stays inside (or, for a small axis, the
 * volume's middle). */
static int draw_valid_coordinate(int dim, int size, RngStream *r)
{
    if (dim <= size) return dim / 2;
    int lo = size / 2, span = dim - size + 1;
    return lo + (int)rng_below(r, (uint32_t)span);
}

int crop_random_body_center(const Volume *v, const int size[3], RngStream *r, int center[3])
{
    for (int t = 0; t < BODY_CENTER_TRIES; t++) {
        for (int a = 0; a < 3; a++) center[a] = draw_valid_coordinate(v->dim[a], size[a], r);
        if (v->image[volume_index(v->dim, center[0], center[1], center[2])] > BODY_HU_THRESHOLD)
            return 1;
    }
    return 0;
}

void label_index_build(const Volume *v, LabelIndex *out)
{
    memset(out, 0, sizeof *out);
    if (!v->label) return;
    size_t n = volume_voxels(v), count = 0;
    ALICE_ASSERT(n <= UINT32_MAX, "volume of %zu voxels exceeds the 32-bit label index", n);
    for (size_t i = 0; i < n; i++) count += v->label[i] > 0;
    if (!count) return;
    out->foreground = xmalloc(count * sizeof *out->foreground);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (v->label[i] > 0) out->foreground[k++] = (uint32_t)i;
    out->count = count;
}

void label_index_build_by_class(const Volume *v, HuWindow w, LabelIndex *out)
{
    memset(out, 0, sizeof *out);
    out->by_class = 1;
    size_t n = volume_voxels(v);
    ALICE_ASSERT(n <= UINT32_MAX, "volume of %zu voxels exceeds the 32-bit label index", n);
    size_t per_class[LABEL_CLASS_COUNT] = {0};
    /* MONAI's map_classes_to_indices with an image: every class, not only the background, keeps
     * only voxels above the image threshold (here the window's lower bound), so gas inside a
     * labelled bowel is never a centre. */
    for (size_t i = 0; i < n; i++) {
        if (crop_is_background(v, w, i)) out->background_count++;
        else if (v->label && v->label[i] > 0 && (float)v->image[i] > w.lo) per_class[v->label[i]]++;
    }
    /* class_start[c] = voxels of the classes below c; then each class fills its block in
     * ascending voxel order (a stable counting sort). */
    for (int c = 0; c < LABEL_CLASS_COUNT; c++) out->class_start[c + 1] = out->class_start[c] + per_class[c];
    out->count = out->class_start[LABEL_CLASS_COUNT];
    if (!out->count) return;
    out->foreground = xmalloc(out->count * sizeof *out->foreground);
    size_t next[LABEL_CLASS_COUNT];
    memcpy(next, out->class_start, sizeof next);
    for (size_t i = 0; i < n; i++)
        if (v->label[i] > 0 && (float)v->image[i] > w.lo)
            out->foreground[next[v->label[i]]++] = (uint32_t)i;
}

void label_index_free(LabelIndex *idx)
{
    free(idx->foreground);
    memset(idx, 0, sizeof *idx);
}

void volume_unflatten(const int dim[3], size_t i, int c[3])
{
    c[2] = (int)(i % (size_t)dim[2]);
    i /= (size_t)dim[2];
    c[1] = (int)(i % (size_t)dim[1]);
    c[0] = (int)(i / (size_t)dim[1]);
}

int crop_draw_background(const Volume *v, HuWindow w, long long count, RngStream *r,
                         size_t *voxel)
{
    size_t n = volume_voxels(v);
    for (int t = 0; t < BACKGROUND_TRIES; t++) {
        size_t i = (size_t)rng_below(r, (uint32_t)n);
        if (crop_is_background(v, w, i)) {
            *voxel = i;
            return 0;
        }
    }
    if (count < 0) {
        count = 0;
        for (size_t i = 0; i < n; i++) count += crop_is_background(v, w, i);
    }
    if (count == 0) return -1;
    size_t k = rng_below(r, (uint32_t)count);
    for (size_t i = 0; i < n; i++)
        if (crop_is_background(v, w, i) && k-- == 0) {
            *voxel = i;
            return 0;
        }
    ALICE_FATAL("%lld background voxels counted, the volume holds fewer", count);
}

int crop_posneg_center(const Volume *v, const LabelIndex *idx, HuWindow w, float pos_fraction,
                       RngStream *r, int center[3])
{
    int positive = rng_uniform(r) < pos_fraction;
    if (idx->count == 0) positive = 0;
    if (positive) {
        volume_unflatten(v->dim, idx->foreground[rng_below(r, (uint32_t)idx->count)], center);
        return 1;
    }
    size_t background;
    if (crop_draw_background(v, w, -1, r, &background) == 0) {
        volume_unflatten(v->dim, background, center);
        return 0;
    }
    /* No qualifying background at all: foreground when there is any, as MONAI does. */
    if (idx->count) {
        volume_unflatten(v->dim, idx->foreground[rng_below(r, (uint32_t)idx->count)], center);
        return 1;
    }
    volume_unflatten(v->dim, (size_t)rng_below(r, (uint32_t)volume_voxels(v)), center);
    return 0;
}
