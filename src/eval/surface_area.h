/* Surface-element areas of the DeepMind surface-distance algorithm (used by the FLARE 2022
 * NSD evaluation). The surface of a binary mask is described on the corner grid: each corner
 * sees the 2x2x2 voxels around it, whose on/off pattern is an 8-bit "neighbour code"; the
 * marching-cubes surface inside that cube has a fixed set of triangles, and their area under
 * the voxel spacing is the area of that surface element.
 *
 * Code bits: the voxel at offset (a, b, c) in {0,1}^3 from the cube's low corner (axes in
 * array order, so a is the slowest axis) carries the bit value 1 << (7 - (4a + 2b + c)),
 * which is the DeepMind kernel [[[128, 64], [32, 16]], [[8, 4], [2, 1]]] used with
 * scipy.ndimage.correlate. */
#ifndef ALICE_SURFACE_AREA_H
#define ALICE_SURFACE_AREA_H

enum { NEIGHBOUR_CODES = 256 };

/* area[code] (mm^2) of the surface element of every neighbour code for voxel spacing
 * spacing[0..2] (mm, array axis order). Codes 0 and 255 have no surface (area 0). */
void surface_area_table(const double spacing[3], double area[NEIGHBOUR_CODES]);

/* Bit value of the voxel at offset (a, b, c) of the 2x2x2 neighbourhood. */
static inline int neighbour_code_bit(int a, int b, int c) { return 1 << (7 - (4 * a + 2 * b + c)); }

#endif
