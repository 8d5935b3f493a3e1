/* The read side of dataset.h5: serial HDF5 under the process-wide HDF5 lock (h5util.h: the
 * parallel HDF5 build is not thread-safe, and prefetch threads read concurrently with each
 * other and with the main thread's checkpoint writes). */
#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "dataset.h"
#include "dataset_write.h"
#include "h5util.h"

struct Dataset {
    char path[DATASET_PATH_LEN];
    hid_t file;
    int count, num_folds;
    float spacing[3];
    DatasetCase *cases;
};

static int attr_exists(hid_t obj, const char *name) { return H5Aexists(obj, name) > 0; }

/* Reads attribute `name` of `count` elements: another count (a damaged or foreign file)
 * would overrun `out`, so it ends the job naming the file. */
static void attr_read_n(const Dataset *ds, hid_t obj, const char *where, const char *name,
                        hid_t type, void *out, hssize_t count)
{
    if (!attr_exists(obj, name))
        alice_die("%s: %s has no attribute '%s'; the file was not written by this version of "
                  "`alice pack` (re-pack it)", ds->path, where, name);
    hid_t a = CHECK_H5(H5Aopen(obj, name, H5P_DEFAULT));
    hid_t space = CHECK_H5(H5Aget_space(a));
    const hssize_t n = H5Sget_simple_extent_npoints(space);
    CHECK_H5(H5Sclose(space));
    if (n != count)
        alice_die("%s: %s attribute '%s' holds %lld values, expected %lld; the file is damaged "
                  "or not written by `alice pack` (re-pack it)", ds->path, where, name,
                  (long long)n, (long long)count);
    CHECK_H5(H5Aread(a, type, out));
    CHECK_H5(H5Aclose(a));
}

static void attr_read_string(const Dataset *ds, hid_t obj, const char *where, const char *name,
                             char *out, size_t n)
{
    char *s = h5_attr_read_string(obj, name);
    if (!s)
        alice_die("%s: %s has no attribute '%s', or it holds no single string; the file is "
                  "damaged or not written by `alice pack` (re-pack it)", ds->path, where, name);
    snprintf(out, n, "%s", s);
    free(s);
}

/* The case's geometry and bookkeeping as `alice pack` writes them: values outside these
 * ranges (a damaged file, or one edited by another tool) would otherwise surface later as a
 * prediction with an empty grid or a NaN affine written under its final name, an allocation of
 * exabytes, or an index past an array. */
static int affine_usable(const double m[4][4])
{
    for (int r = 0; r < 4; r++)
        for (int k = 0; k < 4; k++)
            if (!isfinite(m[r][k])) return 0;
    const double det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) -
                       m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0]) +
                       m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    return det != 0.0;
}

static void check_case_meta(const Dataset *ds, const DatasetCase *c)
{
    const char *bad = NULL;
    char what[160] = "";
    double voxels = 1.0;
    int axis_seen[3] = {0, 0, 0};
    for (int a = 0; a < 3 && !bad; a++) {
        voxels *= (double)c->orig_dim[a];
        if (c->dim[a] < 1) bad = "the image is empty along an axis";
        else if (c->orig_dim[a] < 1 || c->orig_dim[a] > DATASET_MAX_AXIS)
            bad = "original_shape is outside 1..65535";
        else if (!(c->spacing[a] > 0.0f) || !isfinite(c->spacing[a]))
            bad = "spacing is not a positive number";
        else if (c->crop_lo[a] < 0 || c->crop_hi[a] - c->crop_lo[a] != c->dim[a])
            bad = "crop_box does not span the image (hi - lo = its shape, lo >= 0)";
        else if (c->ras_axis[a] < 0 || c->ras_axis[a] > 2 || axis_seen[c->ras_axis[a]]++)
            bad = "ras_axis is not an order of the axes 0, 1, 2";
        else if (c->ras_flip[a] != 0 && c->ras_flip[a] != 1)
            bad = "ras_flip holds a value other than 0 and 1";
    }
    if (bad) snprintf(what, sizeof what, "%s", bad);
    else if (voxels > DATASET_MAX_VOXELS)
        snprintf(what, sizeof what, "original_shape %dx%dx%d holds more than 2^32 voxels",
                 c->orig_dim[0], c->orig_dim[1], c->orig_dim[2]);
    else if (!affine_usable(c->affine) || !affine_usable(c->orig_affine))
        snprintf(what, sizeof what, "an affine (affine or original_affine) holds a non-finite "
                 "value or is singular");
    else if (c->fold < 0 || c->fold >= ds->num_folds)
        snprintf(what, sizeof what, "fold = %d is outside 0..%d (num_folds = %d)", c->fold,
                 ds->num_folds - 1, ds->num_folds);
    if (what[0])
        alice_die("%s: case %s: %s; the file is damaged or was edited by another tool (re-pack "
                  "it with `alice pack`)", ds->path, c->name, what);
}

static void read_case_meta(Dataset *ds, DatasetCase *c)
{
    char where[DATASET_NAME_LEN + 16];
    snprintf(where, sizeof where, "case %s", c->name);
    hid_t cases = CHECK_H5(H5Gopen2(ds->file, DS_GROUP_CASES, H5P_DEFAULT));
    if (H5Lexists(cases, c->name, H5P_DEFAULT) <= 0)
        alice_die("%s: the index lists case %s but /%s/%s is missing; the file is damaged (re-pack it)",
                  ds->path, c->name, DS_GROUP_CASES, c->name);
    hid_t g = CHECK_H5(H5Gopen2(cases, c->name, H5P_DEFAULT));
    double sp[3];
    attr_read_n(ds, g, where, "spacing", H5T_NATIVE_DOUBLE, sp, 3);
    for (int a = 0; a < 3; a++) c->spacing[a] = (float)sp[a];
    attr_read_n(ds, g, where, "affine", H5T_NATIVE_DOUBLE, c->affine, 16);
    attr_read_n(ds, g, where, "original_shape", H5T_NATIVE_INT, c->orig_dim, 3);
    attr_read_n(ds, g, where, "original_affine", H5T_NATIVE_DOUBLE, c->orig_affine, 16);
    c->orig_xform_codes[0] = c->orig_xform_codes[1] = DATASET_XFORM_SCANNER_ANAT;
    c->orig_xform_codes[2] = DATASET_UNITS_MM;
    if (attr_exists(g, "original_xform_codes"))   /* absent in data sets packed before it */
        attr_read_n(ds, g, where, "original_xform_codes", H5T_NATIVE_INT, c->orig_xform_codes, 3);
    c->has_orig_qform = attr_exists(g, "original_qform");   /* absent: none, or packed before */
    if (c->has_orig_qform)
        attr_read_n(ds, g, where, "original_qform", H5T_NATIVE_DOUBLE, c->orig_qform,
                    sizeof c->orig_qform / sizeof c->orig_qform[0]);
    int crop[2][3];
    attr_read_n(ds, g, where, "crop_box", H5T_NATIVE_INT, crop, 6);
    memcpy(c->crop_lo, crop[0], sizeof c->crop_lo);
    memcpy(c->crop_hi, crop[1], sizeof c->crop_hi);
    attr_read_n(ds, g, where, "ras_axis", H5T_NATIVE_INT, c->ras_axis, 3);
    attr_read_n(ds, g, where, "ras_flip", H5T_NATIVE_INT, c->ras_flip, 3);
    attr_read_n(ds, g, where, "fold", H5T_NATIVE_INT, &c->fold, 1);
    attr_read_string(ds, g, where, "source_image", c->source_image, sizeof c->source_image);
    attr_read_string(ds, g, where, "source_label", c->source_label, sizeof c->source_label);
    c->has_label = H5Lexists(g, DS_LABEL, H5P_DEFAULT) > 0;
    int says_label = c->has_label;
    if (attr_exists(g, "has_label"))
        attr_read_n(ds, g, where, "has_label", H5T_NATIVE_INT, &says_label, 1);
    if (says_label != c->has_label)
        alice_die("%s: case %s: has_label = %d but the case %s %s dataset; the file is damaged "
                  "(re-pack it with `alice pack`)", ds->path, c->name, says_label,
                  c->has_label ? "holds a" : "has no", DS_LABEL);
    if (H5Lexists(g, DS_IMAGE, H5P_DEFAULT) <= 0)
        alice_die("%s: case %s has no %s dataset; the file is damaged or not written by `alice "
                  "pack` (re-pack it)", ds->path, c->name, DS_IMAGE);
    hid_t d = CHECK_H5(H5Dopen2(g, DS_IMAGE, H5P_DEFAULT));
    hid_t space = CHECK_H5(H5Dget_space(d));
    hsize_t dims[3];
    if (H5Sget_simple_extent_ndims(space) != 3)
        alice_die("%s: case %s: image is not 3D (re-pack the data set)", ds->path, c->name);
    CHECK_H5(H5Sget_simple_extent_dims(space, dims, NULL));
    for (int a = 0; a < 3; a++) c->dim[a] = (int)dims[a];
    CHECK_H5(H5Sclose(space));
    CHECK_H5(H5Dclose(d));
    if (c->has_label) {   /* a label of another shape would fail mid-training in a read */
        hid_t l = CHECK_H5(H5Dopen2(g, DS_LABEL, H5P_DEFAULT));
        hid_t lspace = CHECK_H5(H5Dget_space(l));
        hsize_t ldims[3] = {0, 0, 0};
        const int nd = H5Sget_simple_extent_ndims(lspace);
        if (nd == 3) CHECK_H5(H5Sget_simple_extent_dims(lspace, ldims, NULL));
        CHECK_H5(H5Sclose(lspace));
        CHECK_H5(H5Dclose(l));
        if (nd != 3 || memcmp(ldims, dims, sizeof dims) != 0)
            alice_die("%s: case %s: the label's shape differs from the image's %dx%dx%d; the "
                      "file is damaged (re-pack it)", ds->path, c->name, c->dim[0], c->dim[1],
                      c->dim[2]);
    }
    CHECK_H5(H5Gclose(g));
    CHECK_H5(H5Gclose(cases));
    check_case_meta(ds, c);
}

Dataset *dataset_open(const char *path)
{
    h5_lock();
    Dataset *ds = xcalloc(1, sizeof *ds);
    snprintf(ds->path, sizeof ds->path, "%s", path);
    FILE *probe = fopen(path, "rb");
    if (!probe && errno == ENOENT)
        alice_die("cannot open data set %s: no such file (create it with `alice pack`, or set "
                  "data=synthetic)", path);
    if (!probe)
        alice_die("cannot open data set %s: %s (check its permissions)", path, strerror(errno));
    fclose(probe);
    htri_t is_hdf5;
    H5E_BEGIN_TRY { is_hdf5 = H5Fis_hdf5(path); } H5E_END_TRY;   /* a folder: no error stack */
    if (is_hdf5 <= 0)
        alice_die("%s is not an HDF5 file (expected a dataset.h5 written by `alice pack`)", path);
    ds->file = h5_open_read(path, "data set");
    /* absent, or not a string (h5util.h): not ours */
    char *format = h5_attr_read_string(ds->file, "format");
    const int ours = format && !strcmp(format, DATASET_FORMAT_NAME);
    free(format);
    if (!ours)
        alice_die("%s is an HDF5 file but not an alice data set (no format = '%s' attribute); "
                  "create it with `alice pack`", path, DATASET_FORMAT_NAME);
    int version = 0;
    attr_read_n(ds, ds->file, "the root", "format_version", H5T_NATIVE_INT, &version, 1);
    if (version != DATASET_FORMAT_VERSION)
        alice_die("%s: data set format version %d, this alice reads version %d (re-pack it)", path,
                  version, DATASET_FORMAT_VERSION);
    double sp[3];
    attr_read_n(ds, ds->file, "the root", "spacing", H5T_NATIVE_DOUBLE, sp, 3);
    for (int a = 0; a < 3; a++) ds->spacing[a] = (float)sp[a];
    attr_read_n(ds, ds->file, "the root", "num_folds", H5T_NATIVE_INT, &ds->num_folds, 1);
    attr_read_n(ds, ds->file, "the root", "num_cases", H5T_NATIVE_INT, &ds->count, 1);
    for (int a = 0; a < 3; a++)
        if (!(ds->spacing[a] > 0.0f) || !isfinite(ds->spacing[a]))
            alice_die("%s: the root attribute spacing holds %g, not a positive number; the file "
                      "is damaged (re-pack it)", path, (double)ds->spacing[a]);
    if (ds->num_folds < 1 || ds->count < 0)
        alice_die("%s: num_folds = %d, num_cases = %d (a data set has at least one fold and no "
                  "negative count); the file is damaged (re-pack it)", path, ds->num_folds,
                  ds->count);
    if (ds->count > 0) {
        if (!h5_exists(ds->file, DS_GROUP_INDEX "/name"))
            alice_die("%s: no /%s/name; the file is damaged or not written by `alice pack` "
                      "(re-pack it)", path, DS_GROUP_INDEX);
        hid_t d = CHECK_H5(H5Dopen2(ds->file, DS_GROUP_INDEX "/name", H5P_DEFAULT));
        /* alice pack writes fixed-length strings; HDF5 converts no variable-length ones (as
         * h5py writes a list of Python str) to them */
        hid_t ftype = CHECK_H5(H5Dget_type(d));
        const int fixed_strings = H5Tget_class(ftype) == H5T_STRING &&
                                  H5Tis_variable_str(ftype) == 0;
        CHECK_H5(H5Tclose(ftype));
        if (!fixed_strings)
            alice_die("%s: /%s/name does not hold fixed-length strings; the file is damaged or "
                      "was edited by another tool (re-pack it with `alice pack`)", path,
                      DS_GROUP_INDEX);
        hid_t nspace = CHECK_H5(H5Dget_space(d));
        const hssize_t listed = H5Sget_simple_extent_npoints(nspace);
        CHECK_H5(H5Sclose(nspace));
        if (listed != ds->count)
            alice_die("%s: num_cases = %d but the index lists %lld names; the file is damaged "
                      "(re-pack it)", path, ds->count, (long long)listed);
        ds->cases = xcalloc((size_t)ds->count, sizeof(DatasetCase));
        char *names = xcalloc((size_t)ds->count, DATASET_NAME_LEN);
        hid_t mt = CHECK_H5(H5Tcopy(H5T_C_S1));
        CHECK_H5(H5Tset_size(mt, DATASET_NAME_LEN));
        CHECK_H5(H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, names));
        CHECK_H5(H5Tclose(mt));
        CHECK_H5(H5Dclose(d));
        for (int i = 0; i < ds->count; i++) {
            snprintf(ds->cases[i].name, DATASET_NAME_LEN, "%s", names + (size_t)i * DATASET_NAME_LEN);
            read_case_meta(ds, &ds->cases[i]);
        }
        free(names);
    }
    h5_unlock();
    return ds;
}

void dataset_close(Dataset *ds)
{
    if (!ds) return;
    h5_lock();
    CHECK_H5(H5Fclose(ds->file));
    h5_unlock();
    free(ds->cases);
    free(ds);
}

int dataset_num_cases(const Dataset *ds) { return ds->count; }
int dataset_num_folds(const Dataset *ds) { return ds->num_folds; }
void dataset_spacing(const Dataset *ds, float spacing[3]) { memcpy(spacing, ds->spacing, sizeof ds->spacing); }

const DatasetCase *dataset_case(const Dataset *ds, int i)
{
    ALICE_ASSERT(i >= 0 && i < ds->count, "case index %d outside 0..%d", i, ds->count - 1);
    return &ds->cases[i];
}

int dataset_find_case(const Dataset *ds, const char *name)
{
    for (int i = 0; i < ds->count; i++)
        if (!strcmp(ds->cases[i].name, name)) return i;
    return -1;
}

/* Reads box [lo, lo + size) of one volume dataset of a case; caller holds the lock. */
static void read_box_locked(Dataset *ds, const DatasetCase *c, const char *what, hid_t type,
                            const int lo[3], const int size[3], void *out)
{
    char path[DATASET_NAME_LEN + 32];
    snprintf(path, sizeof path, DS_GROUP_CASES "/%s/%s", c->name, what);
    hid_t d = CHECK_H5(H5Dopen2(ds->file, path, H5P_DEFAULT));
    hid_t space = CHECK_H5(H5Dget_space(d));
    const hsize_t start[3] = {(hsize_t)lo[0], (hsize_t)lo[1], (hsize_t)lo[2]};
    const hsize_t count[3] = {(hsize_t)size[0], (hsize_t)size[1], (hsize_t)size[2]};
    CHECK_H5(H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL));
    hid_t mem = CHECK_H5(H5Screate_simple(3, count, NULL));
    /* The metadata were checked when the file was opened; what fails here is the voxel data
     * itself (a damaged chunk: a bit flip, a copy cut short on a shared file system). */
    herr_t read;
    H5E_BEGIN_TRY { read = H5Dread(d, type, mem, space, H5P_DEFAULT, out); } H5E_END_TRY;
    if (read < 0)
        alice_die("%s: case %s: its %s voxels cannot be read (a damaged chunk: the copy is "
                  "corrupt; copy the file again, or re-pack it with `alice pack`)", ds->path,
                  c->name, what);
    CHECK_H5(H5Sclose(mem));
    CHECK_H5(H5Sclose(space));
    CHECK_H5(H5Dclose(d));
}

void dataset_read_box(Dataset *ds, int i, const int lo[3], const int size[3], int16_t *image,
                      uint8_t *label)
{
    const DatasetCase *c = dataset_case(ds, i);
    for (int a = 0; a < 3; a++)
        ALICE_ASSERT(lo[a] >= 0 && size[a] >= 1 && lo[a] + size[a] <= c->dim[a],
                     "dataset_read_box: box [%d, %d) outside axis %d of case %s (0..%d)", lo[a],
                     lo[a] + size[a], a, c->name, c->dim[a]);
    ALICE_ASSERT(!label || c->has_label, "dataset_read_box: case %s has no label", c->name);
    h5_lock();
    if (image) read_box_locked(ds, c, DS_IMAGE, H5T_NATIVE_INT16, lo, size, image);
    if (label) read_box_locked(ds, c, DS_LABEL, H5T_NATIVE_UINT8, lo, size, label);
    h5_unlock();
}

void dataset_read_case(Dataset *ds, int i, Volume *out) { dataset_read_case_alloc(ds, i, out, NULL); }

void dataset_read_case_alloc(Dataset *ds, int i, Volume *out, VolumeAllocFn alloc)
{
    const DatasetCase *c = dataset_case(ds, i);
    memset(out, 0, sizeof *out);
    memcpy(out->dim, c->dim, sizeof out->dim);
    memcpy(out->spacing, c->spacing, sizeof out->spacing);
    memcpy(out->affine, c->affine, sizeof out->affine);
    const size_t n = volume_voxels(out);
    out->image = volume_alloc_with(alloc, n * sizeof(int16_t));
    out->label = c->has_label ? volume_alloc_with(alloc, n) : NULL;
    const int lo[3] = {0, 0, 0};
    dataset_read_box(ds, i, lo, c->dim, out->image, out->label);
}
