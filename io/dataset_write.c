#include "dataset_write.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "core/fsutil.h"
#include "h5util.h"

/* Chunks of 64 x 64 x 32 voxels: a training crop touches few chunks, and each chunk is big
 * enough for deflate to work. */
static const hsize_t CHUNK[3] = {64, 64, 32};
/* Speed matters more than the last percent: levels above 3 gain little on noisy CT. */
enum { DEFLATE_LEVEL = 3 };

struct DatasetWriter {
    MPI_Comm comm;
    int rank, size;
    hid_t file, cases, dxpl;
    int count, cap;
    DatasetCase *written;        /* every rank keeps the same list, for the index */
};

static void attr_write(hid_t obj, const char *name, hid_t type, int rank, const hsize_t *dims,
                       const void *data)
{
    hid_t space = rank ? CHECK_H5(H5Screate_simple(rank, dims, NULL)) : CHECK_H5(H5Screate(H5S_SCALAR));
    hid_t a = CHECK_H5(H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT));
    CHECK_H5(H5Awrite(a, type, data));
    CHECK_H5(H5Aclose(a));
    CHECK_H5(H5Sclose(space));
}

static void attr_string(hid_t obj, const char *name, const char *value)
{
    hid_t t = CHECK_H5(H5Tcopy(H5T_C_S1));
    CHECK_H5(H5Tset_size(t, strlen(value) + 1));
    CHECK_H5(H5Tset_strpad(t, H5T_STR_NULLTERM));
    attr_write(obj, name, t, 0, NULL, value);
    CHECK_H5(H5Tclose(t));
}

DatasetWriter *dataset_writer_create(const char *path, MPI_Comm comm, const float spacing[3],
                                     int num_folds, char *err, size_t errlen)
{
    DatasetWriter *w = xcalloc(1, sizeof *w);
    w->comm = comm;
    CHECK_MPI(MPI_Comm_rank(comm, &w->rank));
    CHECK_MPI(MPI_Comm_size(comm, &w->size));
    hid_t fapl = CHECK_H5(H5Pcreate(H5P_FILE_ACCESS));
    CHECK_H5(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL));
    /* A failed create is a user problem (unwritable directory): report it, do not abort. */
    H5E_BEGIN_TRY { w->file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl); } H5E_END_TRY;
    CHECK_H5(H5Pclose(fapl));
    int ok = w->file >= 0, all_ok = 0;
    CHECK_MPI(MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, comm));
    if (!all_ok) {
        if (w->file >= 0) H5Fclose(w->file);
        char why[4200];
        describe_create_failure(path, why, sizeof why);
        snprintf(err, errlen, "cannot create %s: %s (every rank must see that folder: a shared "
                 "file system)", path, why);
        free(w);
        return NULL;
    }
    attr_string(w->file, "format", DATASET_FORMAT_NAME);
    const int version = DATASET_FORMAT_VERSION;
    attr_write(w->file, "format_version", H5T_NATIVE_INT, 0, NULL, &version);
    const hsize_t three = 3;
    const double sp[3] = {spacing[0], spacing[1], spacing[2]};
    attr_write(w->file, "spacing", H5T_NATIVE_DOUBLE, 1, &three, sp);
    attr_write(w->file, "num_folds", H5T_NATIVE_INT, 0, NULL, &num_folds);
    attr_string(w->file, "created_by", "alice pack");
    w->cases = CHECK_H5(H5Gcreate2(w->file, DS_GROUP_CASES, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    w->dxpl = CHECK_H5(H5Pcreate(H5P_DATASET_XFER));
    CHECK_H5(H5Pset_dxpl_mpio(w->dxpl, H5FD_MPIO_COLLECTIVE));
    return w;
}

/* Creates a chunked, shuffled, deflated 3D dataset (collective) and writes it from owner. */
static void write_volume(DatasetWriter *w, hid_t group, const char *name, hid_t type, const int dim[3],
                         const void *data, int owner)
{
    const hsize_t dims[3] = {(hsize_t)dim[0], (hsize_t)dim[1], (hsize_t)dim[2]};
    hsize_t chunk[3];
    for (int a = 0; a < 3; a++) chunk[a] = dims[a] < CHUNK[a] ? dims[a] : CHUNK[a];
    hid_t dcpl = CHECK_H5(H5Pcreate(H5P_DATASET_CREATE));
    CHECK_H5(H5Pset_chunk(dcpl, 3, chunk));
    CHECK_H5(H5Pset_shuffle(dcpl));
    CHECK_H5(H5Pset_deflate(dcpl, DEFLATE_LEVEL));
    hid_t space = CHECK_H5(H5Screate_simple(3, dims, NULL));
    hid_t d = CHECK_H5(H5Dcreate2(group, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT));
    hid_t mem = CHECK_H5(H5Screate_simple(3, dims, NULL));
    if (w->rank != owner) {
        CHECK_H5(H5Sselect_none(mem));
        CHECK_H5(H5Sselect_none(space));
    }
    h5_write_dataset(d, type, mem, space, w->dxpl, w->rank == owner ? data : NULL, name);
    CHECK_H5(H5Sclose(mem));
    CHECK_H5(H5Sclose(space));
    CHECK_H5(H5Dclose(d));
    CHECK_H5(H5Pclose(dcpl));
}

static void write_case_attributes(hid_t g, const DatasetCase *c)
{
    const hsize_t three = 3, mat[2] = {4, 4}, box[2] = {2, 3};
    const double sp[3] = {c->spacing[0], c->spacing[1], c->spacing[2]};
    attr_write(g, "spacing", H5T_NATIVE_DOUBLE, 1, &three, sp);
    attr_write(g, "affine", H5T_NATIVE_DOUBLE, 2, mat, c->affine);
    attr_write(g, "original_shape", H5T_NATIVE_INT, 1, &three, c->orig_dim);
    attr_write(g, "original_affine", H5T_NATIVE_DOUBLE, 2, mat, c->orig_affine);
    attr_write(g, "original_xform_codes", H5T_NATIVE_INT, 1, &three, c->orig_xform_codes);
    const hsize_t qparams = sizeof c->orig_qform / sizeof c->orig_qform[0];
    if (c->has_orig_qform)
        attr_write(g, "original_qform", H5T_NATIVE_DOUBLE, 1, &qparams, c->orig_qform);
    const int crop[2][3] = {{c->crop_lo[0], c->crop_lo[1], c->crop_lo[2]},
                            {c->crop_hi[0], c->crop_hi[1], c->crop_hi[2]}};
    attr_write(g, "crop_box", H5T_NATIVE_INT, 2, box, crop);
    attr_write(g, "ras_axis", H5T_NATIVE_INT, 1, &three, c->ras_axis);
    attr_write(g, "ras_flip", H5T_NATIVE_INT, 1, &three, c->ras_flip);
    attr_write(g, "fold", H5T_NATIVE_INT, 0, NULL, &c->fold);
    attr_write(g, "has_label", H5T_NATIVE_INT, 0, NULL, &c->has_label);
    attr_string(g, "source_image", c->source_image);
    attr_string(g, "source_label", c->source_label);
}

void dataset_writer_round(DatasetWriter *w, const DatasetCase *meta, const int16_t *image,
                          const uint8_t *label)
{
    /* Descriptions travel as bytes: DatasetCase has no pointers and all ranks share one ABI. */
    typedef struct { int present; DatasetCase c; } Slot;
    Slot mine;
    memset(&mine, 0, sizeof mine);
    if (meta) {
        mine.present = 1;
        mine.c = *meta;
    }
    Slot *all = xmalloc(sizeof(Slot) * (size_t)w->size);
    CHECK_MPI(MPI_Allgather(&mine, (int)sizeof mine, MPI_BYTE, all, (int)sizeof mine, MPI_BYTE, w->comm));
    for (int r = 0; r < w->size; r++) {
        if (!all[r].present) continue;
        const DatasetCase *c = &all[r].c;
        hid_t g = CHECK_H5(H5Gcreate2(w->cases, c->name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
        write_case_attributes(g, c);
        write_volume(w, g, DS_IMAGE, H5T_NATIVE_INT16, c->dim, image, r);
        if (c->has_label) write_volume(w, g, DS_LABEL, H5T_NATIVE_UINT8, c->dim, label, r);
        CHECK_H5(H5Gclose(g));
        if (w->count == w->cap) {
            w->cap = w->cap ? 2 * w->cap : 64;
            w->written = realloc(w->written, sizeof(DatasetCase) * (size_t)w->cap);
            ALICE_ASSERT(w->written, "out of memory");
        }
        w->written[w->count++] = *c;
    }
    free(all);
}

/* A small contiguous dataset written by rank 0 (the others join with empty selections). */
static void write_table(DatasetWriter *w, hid_t group, const char *name, hid_t type, int rank,
                        const hsize_t *dims, const void *data)
{
    hid_t space = CHECK_H5(H5Screate_simple(rank, dims, NULL));
    hid_t d = CHECK_H5(H5Dcreate2(group, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    hid_t mem = CHECK_H5(H5Screate_simple(rank, dims, NULL));
    if (w->rank != 0) {
        CHECK_H5(H5Sselect_none(mem));
        CHECK_H5(H5Sselect_none(space));
    }
    h5_write_dataset(d, type, mem, space, w->dxpl, data, name);
    CHECK_H5(H5Sclose(mem));
    CHECK_H5(H5Sclose(space));
    CHECK_H5(H5Dclose(d));
}

void dataset_writer_finish(DatasetWriter *w)
{
    const int n = w->count;
    attr_write(w->file, "num_cases", H5T_NATIVE_INT, 0, NULL, &n);
    hid_t idx = CHECK_H5(H5Gcreate2(w->file, DS_GROUP_INDEX, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    if (n > 0) {
        char *names = xcalloc((size_t)n, DATASET_NAME_LEN);
        int *shape = xmalloc(sizeof(int) * 3 * (size_t)n);
        int *fold = xmalloc(sizeof(int) * (size_t)n);
        uint8_t *has_label = xmalloc((size_t)n);
        for (int i = 0; i < n; i++) {
            snprintf(names + (size_t)i * DATASET_NAME_LEN, DATASET_NAME_LEN, "%s", w->written[i].name);
            memcpy(shape + 3 * i, w->written[i].dim, sizeof(int) * 3);
            fold[i] = w->written[i].fold;
            has_label[i] = (uint8_t)w->written[i].has_label;
        }
        hid_t str = CHECK_H5(H5Tcopy(H5T_C_S1));
        CHECK_H5(H5Tset_size(str, DATASET_NAME_LEN));
        CHECK_H5(H5Tset_strpad(str, H5T_STR_NULLTERM));
        const hsize_t d1 = (hsize_t)n, d2[2] = {(hsize_t)n, 3};
        write_table(w, idx, "name", str, 1, &d1, names);
        write_table(w, idx, "shape", H5T_NATIVE_INT, 2, d2, shape);
        write_table(w, idx, "fold", H5T_NATIVE_INT, 1, &d1, fold);
        write_table(w, idx, "has_label", H5T_NATIVE_UINT8, 1, &d1, has_label);
        CHECK_H5(H5Tclose(str));
        free(names);
        free(shape);
        free(fold);
        free(has_label);
    }
    CHECK_H5(H5Gclose(idx));
    dataset_writer_abort(w);
}

void dataset_writer_abort(DatasetWriter *w)
{
    CHECK_H5(H5Pclose(w->dxpl));
    CHECK_H5(H5Gclose(w->cases));
    CHECK_H5(H5Fclose(w->file));
    free(w->written);
    free(w);
}

int dataset_writer_count(const DatasetWriter *w) { return w->count; }
