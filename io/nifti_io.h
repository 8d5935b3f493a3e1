/* NIfTI-1/-2 volumes (.nii, .nii.gz) through niftilib, in the project's memory order.
 *
 * On disk NIfTI stores x fastest (Fortran order); in memory every stage of alice uses C order
 * [X][Y][Z] with Z fastest (what nibabel's array[x, y, z] holds), so reading and writing
 * transpose. The affine maps voxel index (x, y, z, 1) to world mm in NIfTI's RAS+ convention. */
#ifndef ALICE_NIFTI_IO_H
#define ALICE_NIFTI_IO_H

#include <stddef.h>

/* Length of a NIfTI file name without its .nii.gz or .nii (the case name), or 0 when it has
 * neither or nothing before it. */
size_t nifti_name_stem(const char *name);

/* Reads a 3D volume of any real datatype (u)int8/16/32/64, float32/64, applying
 * scl_slope/scl_inter when a slope is set. The affine is the sform when sform_code > 0, else
 * the qform when qform_code > 0, else diag(pixdim). A 4D file is accepted only with one frame.
 * Returns 0, or -1 with a message naming the file, the problem and the fix in err (nothing is
 * allocated then). On success *data holds dim[0]*dim[1]*dim[2] floats (caller frees). A float
 * file with NaN/inf voxels is an error (niftilib would silently turn them into 0). */
int nifti_read_volume(const char *path, float **data, int dim[3], double affine[4][4], char *err,
                      size_t errlen);

/* The header's sform_code, qform_code (0 where unset) and xyz_units (codes[0..2]); 0, or -1
 * with err as nifti_read_volume's when the header cannot be read. */
int nifti_read_xform_codes(const char *path, int codes[3], char *err, size_t errlen);

/* A header's own qform as stored: quatern_b, c, d, qoffset_x, y, z, pixdim[1..3] and qfac, in
 * its xyz_units. A file written on the source's grid takes them back unchanged, so a reader
 * that prefers the qform (ITK before 5, older ANTs) places both alike even where the qform is
 * not the sform's rigid part (scanner space beside a registration's sform). */
enum { NIFTI_QFORM_PARAMS = 10 };
/* 1 with q filled when qform_code > 0, 0 when the header has no qform, -1 with err as
 * nifti_read_volume's when the header cannot be read. */
int nifti_read_qform_params(const char *path, double q[NIFTI_QFORM_PARAMS], char *err,
                            size_t errlen);

/* The header's voxel size in mm: |pixdim[1..3]| times the xyz_units scale (rounded to float, as
 * pixdim is stored). What nibabel's get_zooms() and the FLARE 2022 evaluation read as the
 * spacing; the affine's column lengths hold the same sizes, up to the float rounding of a
 * rotated sform's entries. 0, or -1 with err when the header cannot be read. */
int nifti_read_voxel_size(const char *path, double size_mm[3], char *err, size_t errlen);

/* Reads only the header: dimensions, datatype code (NIFTI_TYPE_*) and affine. Same rules and
 * return convention as nifti_read_volume. */
int nifti_read_header_info(const char *path, int dim[3], int *datatype, double affine[4][4],
                           char *err, size_t errlen);

/* Writes data (C order [X][Y][Z]) as a NIfTI-1 file, gzip-compressed when the path ends in
 * .gz. datatype is NIFTI_TYPE_INT16 (int16_t data), NIFTI_TYPE_UINT8 (uint8_t data) or
 * NIFTI_TYPE_FLOAT32 (float data). The affine goes into both sform and qform (code 1, scanner
 * anatomical; the qform is the closest rigid transform). Written under a temporary name in the
 * same directory and renamed, so a reader never sees a half-written file. An unwritable path
 * ends the job with a message naming the path and the fix. description (may be NULL) goes
 * into the header's descrip field (cut at 79 characters) and, whole, into a NIfTI comment
 * extension (ecode 6), which nibabel lists in header.extensions. */
void nifti_write_volume(const char *path, const void *data, int datatype, const int dim[3],
                        const double affine[4][4], const char *description);
/* The same with the source's sform and qform codes and xyz_units (codes[0..2], as
 * nifti_read_xform_codes gives them) instead of 1, 1 and mm: a prediction then says what its
 * source said, so every reader places both alike (a source with neither transform, NIfTI's
 * method 1: pixdim alone, however the reader orients that; one in metres: the affine, given in
 * mm, is written in metres). qform (may be NULL: the affine's rigid part) is the source's own
 * (nifti_read_qform_params), written as it was. */
void nifti_write_volume_codes(const char *path, const void *data, int datatype, const int dim[3],
                              const double affine[4][4], const int codes[3],
                              const double *qform, const char *description);

/* The description of a file written by nifti_write_volume/nifti_write_frames: its first
 * comment extension, else the descrip field ("" when neither). Returns 0, or -1 with the
 * reason in err. */
int nifti_read_description(const char *path, char *out, size_t n, char *err, size_t errlen);

/* Fills frame t (0-based) of a multi-frame volume: dim voxels, C order [X][Y][Z]. */
typedef void (*NiftiFrameFn)(void *ctx, int t, float *frame);

/* How nifti_write_frames stores the float values fill() produces. */
typedef enum {
    NIFTI_FRAMES_FLOAT32,   /* float32, as produced */
    /* Values in [0, 1] (probabilities) as uint8 q = round(255 v) (nearest, ties to even; v
     * clamped to [0, 1] first) with scl_slope = 1/255, scl_inter = 0: readers that apply the
     * scaling (nibabel's get_fdata, ITK, FSL) see q / 255, within 1/510 of v. A quarter of
     * float32's size. */
    NIFTI_FRAMES_UINT8_UNIT,
} NiftiFrameStorage;

/* Writes `frames` volumes of one grid as a 4-D NIfTI-1 file, dim = (X, Y, Z, frames), stored
 * as `storage` says, which nibabel reads as array[x, y, z, t] with the given affine (header,
 * affine and the temporary-name-then-rename exactly as nifti_write_volume; pixdim[4] = 1, no
 * time unit, intent none). Only one frame is in memory at a time: fill() produces each in
 * turn. codes, qform and description (each may be NULL): as nifti_write_volume_codes's. */
void nifti_write_frames(const char *path, const int dim[3], int frames, const double affine[4][4],
                        const int codes[3], const double *qform, const char *description,
                        NiftiFrameStorage storage, NiftiFrameFn fill, void *ctx);

#endif
