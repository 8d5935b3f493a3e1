/* An in-memory CT volume as every stage after reading sees it: RAS-oriented, C order
 * [X, Y, Z] with Z fastest (what nibabel's array[x, y, z] and MONAI's [H, W, D] hold), HU as
 * int16 and an optional uint8 label map on the same grid. */
#ifndef ALICE_VOLUME_H
#define ALICE_VOLUME_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int dim[3];              /* X, Y, Z voxels */
    float spacing[3];        /* mm */
    double affine[4][4];     /* voxel index (x, y, z, 1) -> world RAS mm */
    int16_t *image;          /* HU, dim[0]*dim[1]*dim[2] */
    uint8_t *label;          /* organ ids, or NULL when the case has no label */
} Volume;

/* Allocates the buffers of a volume being read; NULL (the function pointer) means xmalloc. The
 * loader passes pinned host memory (data_device = gpu) so a case read from disk is uploaded by
 * DMA from where it was read, without a copy. It ends the job with a clear error itself when
 * it cannot allocate. */
typedef void *(*VolumeAllocFn)(size_t bytes);
/* alloc, or xmalloc (ends the job when out of memory) when alloc is NULL. */
void *volume_alloc_with(VolumeAllocFn alloc, size_t bytes);

static inline size_t volume_voxels(const Volume *v)
{
    return (size_t)v->dim[0] * (size_t)v->dim[1] * (size_t)v->dim[2];
}
static inline size_t volume_index(const int dim[3], int x, int y, int z)
{
    return ((size_t)x * (size_t)dim[1] + (size_t)y) * (size_t)dim[2] + (size_t)z;
}
/* The (x, y, z) of flat index i in that layout, for messages that name a voxel. */
static inline void volume_position(const int dim[3], size_t i, size_t xyz[3])
{
    const size_t column = (size_t)dim[1] * (size_t)dim[2];
    xyz[0] = i / column;
    xyz[1] = i % column / (size_t)dim[2];
    xyz[2] = i % (size_t)dim[2];
}
void volume_free(Volume *v);

#endif
