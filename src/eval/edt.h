/* Exact Euclidean distance transform with anisotropic voxel spacing (Felzenszwalb &
 * Huttenlocher 2012, "Distance Transforms of Sampled Functions"): the squared distance is
 * separable, so three passes of the exact 1-D lower-envelope-of-parabolas transform (one per
 * axis, spacing folded into each) give the exact 3-D result in O(voxels). */
#ifndef ALICE_EDT_H
#define ALICE_EDT_H

#include <stdint.h>

/* d2[i] = squared distance (mm^2) from voxel i to the nearest voxel with feature[i] != 0,
 * on a C-order grid dim[0] x dim[1] x dim[2] (last axis fastest) with spacing[] mm.
 * Voxels of a grid without any feature get INFINITY. */
void edt_squared(const uint8_t *feature, const int dim[3], const double spacing[3], double *d2);

#endif
