/* dataset.h5, the packed data set written by `alice pack` (layout: docs/FORMAT.md).
 *
 * Reading: serial HDF5 with the default file access, any number of readers at once. Every
 * read goes through one process-wide mutex, because the parallel HDF5 build is not
 * thread-safe: prefetch threads may call dataset_read_* freely. */
#ifndef ALICE_DATASET_H
#define ALICE_DATASET_H

#include <stdint.h>

#include "volume.h"

/* Format identity, stored as root attributes "format" and "format_version". */
#define DATASET_FORMAT_NAME "alice-dataset"
#define DATASET_FORMAT_VERSION 1
/* Longest case name / source path stored (bytes incl. the terminating NUL). */
enum { DATASET_NAME_LEN = 128, DATASET_PATH_LEN = 1024 };
/* NIfTI's xform code 1 (NIFTI_XFORM_SCANNER_ANAT) and unit code 2 (NIFTI_UNITS_MM), what
 * every prediction carried before a data set stored its sources' codes */
enum { DATASET_XFORM_SCANNER_ANAT = 1, DATASET_UNITS_MM = 2 };

/* Everything known about one case without reading its voxels. */
typedef struct {
    char name[DATASET_NAME_LEN];   /* e.g. FLARE22_Tr_0001, img0001, case0003 */
    int dim[3];                    /* packed grid X, Y, Z (RAS) */
    float spacing[3];              /* mm */
    double affine[4][4];           /* packed voxel -> world RAS mm */
    int has_label;
    int fold;                      /* 0..num_folds-1 */
    int orig_dim[3];               /* the source file's grid ... */
    double orig_affine[4][4];      /* ... and affine, for mapping predictions back */
    /* the source's sform_code, qform_code and xyz_units, which predictions carry: 1, 1, mm
     * (scanner anatomical) for data sets packed before they were stored */
    int orig_xform_codes[3];
    /* the source's own qform (nifti_read_qform_params), which predictions carry unchanged;
     * has_orig_qform 0 when it had none, or in data sets packed before it was stored */
    int has_orig_qform;
    double orig_qform[10];
    int crop_lo[3], crop_hi[3];    /* body box in the resampled RAS grid */
    int ras_axis[3], ras_flip[3];  /* source voxel axis of each RAS axis, and its reversal */
    char source_image[DATASET_PATH_LEN];
    char source_label[DATASET_PATH_LEN];  /* "" when the case has no label */
} DatasetCase;

/* Bounds on a case's source grid, far beyond any CT (a 512 x 512 x 2000 scan holds 2^29
 * voxels): its axes, and its voxels (predictions and probabilities are allocated at that
 * size), so a damaged original_shape is named instead of asked of the allocator. */
#define DATASET_MAX_AXIS 65535
#define DATASET_MAX_VOXELS 4294967296.0

typedef struct Dataset Dataset;

/* Opens and indexes a data set; a missing or foreign file ends the job with a message naming
 * the file, the problem and the fix. */
Dataset *dataset_open(const char *path);
void dataset_close(Dataset *ds);
int dataset_num_cases(const Dataset *ds);
int dataset_num_folds(const Dataset *ds);
/* Target spacing the data set was packed at. */
void dataset_spacing(const Dataset *ds, float spacing[3]);
const DatasetCase *dataset_case(const Dataset *ds, int i);
/* Index of the case with this name, or -1. */
int dataset_find_case(const Dataset *ds, const char *name);

/* Whole case into out (allocates out->image and, when the case has one, out->label; free
 * with volume_free). */
void dataset_read_case(Dataset *ds, int i, Volume *out);
/* Same, with the image and label buffers from alloc (NULL: xmalloc). */
void dataset_read_case_alloc(Dataset *ds, int i, Volume *out, VolumeAllocFn alloc);
/* Box [lo, lo + size) of a case's packed grid; the box must lie inside the grid. image gets
 * size[0]*size[1]*size[2] int16 in C order; label likewise (pass NULL to skip it; it must be
 * NULL for a case without a label). Reads only the chunks it needs. */
void dataset_read_box(Dataset *ds, int i, const int lo[3], const int size[3], int16_t *image,
                      uint8_t *label);

#endif
