/* Geometry of `alice pack`: reorientation to RAS, resampling to a target spacing, the body box,
 * and the way back from the packed grid to a case's original grid (for `alice infer`).
 *
 * Conventions: volumes are C order [X][Y][Z] (Z fastest); an affine maps voxel index
 * (x, y, z, 1) to world RAS+ mm (x to the patient's right, y anterior, z superior). */
#ifndef ALICE_GEOMETRY_H
#define ALICE_GEOMETRY_H

#include <stddef.h>
#include <stdint.h>

/* How one case went from its file to the packed grid. Every field is stored in dataset.h5 (see
 * docs/FORMAT.md), so a prediction on the packed grid can be mapped back exactly. */
typedef struct {
    int orig_dim[3];            /* voxels in the file */
    double orig_affine[4][4];   /* the file's affine (sform, else qform, else pixdim) */
    int ras_axis[3];            /* RAS axis a is file voxel axis ras_axis[a] */
    int ras_flip[3];            /* 1 when that file axis runs against RAS (it is reversed) */
    int resampled_dim[3];       /* RAS grid at the target spacing, before the body crop */
    int crop_lo[3], crop_hi[3]; /* body box in the resampled grid, hi exclusive */
    int dim[3];                 /* packed grid = crop_hi - crop_lo */
    float spacing[3];           /* packed grid spacing, mm */
    double affine[4][4];        /* packed grid voxel -> world */
} PackGeometry;

/* Which file axis points along each world axis, and whether it is reversed (nibabel's
 * io_orientation: the nearest rotation's columns in voxel-axis order, each taking its largest
 * entry's world axis, each world axis used once). */
void geometry_ras_orientation(const double affine[4][4], int ras_axis[3], int ras_flip[3]);

/* Permutes/flips in (dim, affine) into RAS order: out_dim, out (caller allocates the same
 * voxel count) and the affine of the new grid (world positions of voxels are unchanged). */
void geometry_reorient(const float *in, const int dim[3], const double affine[4][4],
                       const int ras_axis[3], const int ras_flip[3], float *out, int out_dim[3],
                       double out_affine[4][4]);

/* Voxel size along each voxel axis: the column norms of the affine. */
void geometry_spacing(const double affine[4][4], float spacing[3]);

/* Resampled grid size: output voxel i samples input coordinate i * out_sp / in_sp (voxel 0
 * stays where it was); round(n * in_sp / out_sp) voxels cover the same extent as the input, so
 * label volumes are kept (samples past the last input voxel take the edge value). */
void geometry_resampled_dim(const int dim[3], const float in_sp[3], const float out_sp[3],
                            int out_dim[3]);

/* Samples in at coordinates i * step[a] (see above): trilinear, or nearest neighbour (ties
 * round up) for labels. out has out_dim voxels. */
void geometry_resample(const float *in, const int dim[3], const double step[3], const int out_dim[3],
                       int nearest, float *out);

/* Bounding box of the body: voxels above threshold_hu, keeping each slice along an axis that
 * holds at least min_fraction of the largest such count (drops specks of noise), grown by
 * margin voxels, and always containing every labelled voxel (label may be NULL). Returns 0 and
 * the full grid when no voxel passes. */
int geometry_body_box(const float *image, const uint8_t *label, const int dim[3],
                      float threshold_hu, float min_fraction, int margin, int lo[3], int hi[3]);

/* Copies the box [lo, hi) of in (dim) to out. */
void geometry_crop(const float *in, const int dim[3], const int lo[3], const int hi[3], float *out);

/* The grid geometry_pack_case resamples a case of dim voxels with that affine to at
 * target_spacing (before the body crop): the RAS dims scaled by source over target spacing. */
void geometry_pack_resampled_dim(const int dim[3], const double affine[4][4],
                                 const float target_spacing[3], int out_dim[3]);

/* Runs the whole pack chain on one case: reorient, resample image (trilinear) and label
 * (nearest; may be NULL) to target_spacing, crop to the body box. Returns the packed image and
 * label (caller frees; *label_out NULL when label is NULL) and fills g. */
void geometry_pack_case(const float *image, const float *label, const int dim[3],
                        const double affine[4][4], const float target_spacing[3], PackGeometry *g,
                        float **image_out, uint8_t **label_out);

/* The axes whose packed box ends where the resampled grid ends (crop_hi = the resampled dim:
 * the body crop left that high face alone), from a case's source grid, target spacing and crop
 * box: edge_high[a] = 1 there. Only such a face may fall short of the source's last voxel (the
 * resampled grid's round(n in/out) voxels, downsampling); a low face never does (packed voxel
 * 0 of the resampled grid sits on source voxel 0), nor one the crop cut. */
void geometry_source_edge_faces(const int orig_dim[3], const double orig_affine[4][4],
                                const float target_spacing[3], const int crop_hi[3],
                                int edge_high[3]);

/* Where each voxel of a case's original grid takes its value from on the packed grid:
 * index[i] (i = original voxel, C order; orig_dim voxels) is the flat C-order index of the
 * nearest packed voxel through inv(packed_affine) @ orig_affine, or GEOMETRY_OUTSIDE when that
 * falls outside the packed box (the body crop only removes air). Along an axis with
 * edge_high[a] (geometry_source_edge_faces), a packed coordinate in [n - 0.5, n + 0.5) takes
 * the face voxel n - 1: those source voxels lie past the resampled grid's end, not outside the
 * body. One map serves every per-voxel payload of a prediction (labels, class probabilities),
 * so all are mapped alike. */
#define GEOMETRY_OUTSIDE ((int64_t)-1)
void geometry_original_index_map(const int packed_dim[3], const double packed_affine[4][4],
                                 const int orig_dim[3], const double orig_affine[4][4],
                                 const int edge_high[3], int64_t *index);

/* out[i] = packed[index[i]] for the n voxels of an index map, 0 (background) where it is
 * GEOMETRY_OUTSIDE. */
void geometry_gather_labels(const int64_t *index, size_t n, const uint8_t *packed, uint8_t *out);

/* Maps a label volume on the packed grid back onto a case's original grid through
 * geometry_original_index_map; original voxels outside the packed box get 0. out has
 * orig_dim voxels. */
void geometry_label_to_original(const uint8_t *packed, const int packed_dim[3],
                                const double packed_affine[4][4], const int orig_dim[3],
                                const double orig_affine[4][4], const int edge_high[3],
                                uint8_t *out);

/* 4x4 affine helpers. */
void affine_multiply(const double a[4][4], const double b[4][4], double out[4][4]);
/* Returns -1 when singular. */
int affine_invert(const double a[4][4], double out[4][4]);

/* 1 when two voxel spacings (mm) agree within 1e-3 relative on every axis: the same packing (a
 * data set stores its spacing as float, a checkpoint as double), or a packing that kept the
 * source's voxels. */
int spacing_equal(const double a[3], const double b[3]);

/* How far two affines may place one voxel of a grid apart and still describe the same grid, as
 * a fraction of its smallest voxel size. */
#define GEOMETRY_GRID_TOLERANCE 0.01
/* The first entry (row * 4 + column) where the two affines put a voxel of a dim-sized grid
 * farther apart than GEOMETRY_GRID_TOLERANCE of a's smallest voxel size, or -1 when they match:
 * an origin entry moves every voxel, a direction entry of column c the far voxels by
 * (dim[c] - 1) times it. A tolerance in mm, not relative to the entry, so a label one slice off
 * is caught at any distance of the origin from the scanner's centre, and float rounding of the
 * header is not. alice pack accepts a label on its image's grid by it, and alice eval a
 * prediction on its truth's grid, so what pack accepted eval scores. */
int geometry_grid_mismatch(const double a[4][4], const double b[4][4], const int dim[3]);

#endif
