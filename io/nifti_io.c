#include "nifti_io.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nifti2_io.h>
#include <zlib.h>
#include <znzlib.h>

#include "core/check.h"
#include "core/fsutil.h"
#include "core/strutil.h"

size_t nifti_name_stem(const char *name)
{
    const size_t n = strlen(name);
    if (n > 7 && str_ends_with(name, ".nii.gz")) return n - 7;
    if (n > 4 && str_ends_with(name, ".nii")) return n - 4;
    return 0;
}

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* niftilib prints its own diagnostics; ours name the file and the fix, so keep it quiet. */
static void quiet_niftilib(void) { nifti_set_debug_level(0); }

static int supported_datatype(int dt)
{
    switch (dt) {
    case NIFTI_TYPE_UINT8: case NIFTI_TYPE_INT8: case NIFTI_TYPE_INT16: case NIFTI_TYPE_UINT16:
    case NIFTI_TYPE_INT32: case NIFTI_TYPE_UINT32: case NIFTI_TYPE_INT64: case NIFTI_TYPE_UINT64:
    case NIFTI_TYPE_FLOAT32: case NIFTI_TYPE_FLOAT64:
        return 1;
    default:
        return 0;
    }
}

/* The factor from the header's xyz_units to mm. Unknown (0) is taken as mm, as readers do. */
static double unit_to_mm(const nifti_image *nim)
{
    return nim->xyz_units == NIFTI_UNITS_METER    ? 1000.0
           : nim->xyz_units == NIFTI_UNITS_MICRON ? 0.001
                                                  : 1.0;
}

/* sform when set, else qform, else pixdim alone (the NIfTI standard's method 3, 2, 1). The
 * voxel sizes of the latter two are |pixdim|, as nibabel reads them: niftilib would make a
 * negative pixdim (some converters write them) 1 mm, silently resampling the case wrongly. A
 * zero pixdim stays 0 and is refused as a singular affine by the caller. */
static void header_affine(const nifti_image *nim, double affine[4][4])
{
    if (nim->sform_code > 0) {
        memcpy(affine, nim->sto_xyz.m, sizeof(double) * 16);
    } else if (nim->qform_code > 0) {
        const nifti_dmat44 q = nifti_quatern_to_dmat44(
            nim->quatern_b, nim->quatern_c, nim->quatern_d, nim->qoffset_x, nim->qoffset_y,
            nim->qoffset_z, fabs(nim->dx), fabs(nim->dy), fabs(nim->dz), nim->qfac);
        memcpy(affine, q.m, sizeof(double) * 16);
    } else {
        memset(affine, 0, sizeof(double) * 16);
        affine[0][0] = fabs(nim->dx);
        affine[1][1] = fabs(nim->dy);
        affine[2][2] = fabs(nim->dz);
        affine[3][3] = 1.0;
    }
    /* xyz_units: the affine in mm whatever the header's unit (a file in metres read as mm
     * would be packed 1000x too small: one voxel) */
    const double to_mm = unit_to_mm(nim);
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++) affine[r][c] *= to_mm;
}

/* Checks what both readers need; fills dim and affine. */
static int check_header(const char *path, const nifti_image *nim, int dim[3], double affine[4][4],
                        char *err, size_t errlen)
{
    if (!supported_datatype(nim->datatype))
        return fail(err, errlen,
                    "%s: unsupported NIfTI datatype %s (code %d); convert it to int16 or float32, "
                    "e.g. with nibabel: nib.save(nib.Nifti1Image(img.get_fdata().astype('float32'), "
                    "img.affine), path)",
                    path, nifti_datatype_string(nim->datatype), nim->datatype);
    for (int d = 4; d <= 7; d++)
        if (nim->dim[0] >= d && nim->dim[d] > 1)
            return fail(err, errlen,
                        "%s: not a 3D volume (dim[%d] = %lld frames); store one 3D volume per file",
                        path, d, (long long)nim->dim[d]);
    const int64_t n[3] = {nim->nx, nim->ny, nim->nz};
    for (int a = 0; a < 3; a++) {
        if (n[a] < 1 || n[a] > 1 << 20)
            return fail(err, errlen, "%s: bad dimension %d = %lld in the header; the file is corrupt",
                        path, a, (long long)n[a]);
        dim[a] = (int)n[a];
    }
    /* One slice has no neighbours along that axis: crops, resampling and the surface metrics
     * all assume a volume, and a 2D file packed as one would train on padding. */
    for (int a = 0; a < 3; a++)
        if (n[a] < 2)
            return fail(err, errlen,
                        "%s: a 2D image (%lld x %lld x %lld voxels, one along axis %d); alice "
                        "reads 3D volumes: stack the slices of a scan into one file",
                        path, (long long)n[0], (long long)n[1], (long long)n[2], a);
    header_affine(nim, affine);
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++)
            if (!isfinite(affine[r][c]))
                return fail(err, errlen, "%s: the affine holds a non-finite value; fix the sform/qform",
                            path);
    /* A zero column (zero spacing) or columns in one plane map voxels onto each other: the
     * resampling would divide by zero. Degenerate: |det| tiny against the columns' lengths. */
    double len[3], det = 0.0;
    for (int c = 0; c < 3; c++)
        len[c] = sqrt(affine[0][c] * affine[0][c] + affine[1][c] * affine[1][c] +
                      affine[2][c] * affine[2][c]);
    for (int c = 0; c < 3; c++)
        det += affine[0][c] * (affine[1][(c + 1) % 3] * affine[2][(c + 2) % 3] -
                               affine[1][(c + 2) % 3] * affine[2][(c + 1) % 3]);
    if (len[0] < 1e-6 || len[1] < 1e-6 || len[2] < 1e-6 ||
        fabs(det) < 1e-6 * len[0] * len[1] * len[2])
        return fail(err, errlen, "%s: the affine is singular (voxel spacing %g, %g, %g mm, "
                    "determinant %g): it does not give voxels distinct positions; fix the "
                    "sform/qform (with nibabel, e.g. img.set_sform(img.get_qform()))",
                    path, len[0], len[1], len[2], det);
    return 0;
}

int nifti_read_header_info(const char *path, int dim[3], int *datatype, double affine[4][4],
                           char *err, size_t errlen)
{
    quiet_niftilib();
    if (access(path, R_OK) != 0)
        return fail(err, errlen, "%s: cannot open: %s (check the path)", path, strerror(errno));
    nifti_image *nim = nifti_image_read(path, 0);
    if (!nim)
        return fail(err, errlen, "%s: not a readable NIfTI header (corrupt or not NIfTI)", path);
    int rc = check_header(path, nim, dim, affine, err, errlen);
    if (datatype) *datatype = nim->datatype;
    nifti_image_free(nim);
    return rc;
}

int nifti_read_voxel_size(const char *path, double size_mm[3], char *err, size_t errlen)
{
    quiet_niftilib();
    nifti_image *nim = nifti_image_read(path, 0);
    if (!nim)
        return fail(err, errlen, "%s: not a readable NIfTI header (corrupt or not NIfTI)", path);
    const double to_mm = unit_to_mm(nim);
    const double pixdim[3] = {nim->dx, nim->dy, nim->dz};
    /* pixdim is stored as float: rounded back to float after the unit change, so 0.003 m
     * (0.0030000000261 as a float) is 3 mm exactly, as the same file written in mm would be.
     * Through a volatile float: GCC 12.2's SLP vectorizer dropped the (double)(float) round
     * trip on the two packed lanes of this loop (seen in its object code, -O2). */
    for (int a = 0; a < 3; a++) {
        volatile float rounded = (float)(fabs(pixdim[a]) * to_mm);
        size_mm[a] = rounded;
    }
    nifti_image_free(nim);
    return 0;
}

int nifti_read_description(const char *path, char *out, size_t n, char *err, size_t errlen)
{
    quiet_niftilib();
    if (n) out[0] = '\0';
    if (access(path, R_OK) != 0)
        return fail(err, errlen, "%s: cannot open: %s (check the path)", path, strerror(errno));
    nifti_image *nim = nifti_image_read(path, 0);
    if (!nim)
        return fail(err, errlen, "%s: not a readable NIfTI header (corrupt or not NIfTI)", path);
    const char *text = nim->descrip;
    int len = (int)strnlen(nim->descrip, sizeof nim->descrip);
    for (int i = 0; i < nim->num_ext; i++)
        if (nim->ext_list[i].ecode == NIFTI_ECODE_COMMENT && nim->ext_list[i].edata) {
            text = nim->ext_list[i].edata;
            len = (int)strnlen(text, (size_t)(nim->ext_list[i].esize - 8));
            break;
        }
    if (n) snprintf(out, n, "%.*s", len, text);
    nifti_image_free(nim);
    return 0;
}

/* Voxel value as double whatever the stored type. */
static double voxel_value(const void *base, int dt, size_t i)
{
    switch (dt) {
    case NIFTI_TYPE_UINT8: return ((const uint8_t *)base)[i];
    case NIFTI_TYPE_INT8: return ((const int8_t *)base)[i];
    case NIFTI_TYPE_INT16: return ((const int16_t *)base)[i];
    case NIFTI_TYPE_UINT16: return ((const uint16_t *)base)[i];
    case NIFTI_TYPE_INT32: return ((const int32_t *)base)[i];
    case NIFTI_TYPE_UINT32: return ((const uint32_t *)base)[i];
    case NIFTI_TYPE_INT64: return (double)((const int64_t *)base)[i];
    case NIFTI_TYPE_UINT64: return (double)((const uint64_t *)base)[i];
    case NIFTI_TYPE_FLOAT32: return ((const float *)base)[i];
    case NIFTI_TYPE_FLOAT64: return ((const double *)base)[i];
    default: ALICE_FATAL("datatype %d passed the header check", dt);
    }
}

/* Non-finite values among the voxels of a float file (loaded unscaled by load_voxels, which,
 * unlike niftilib's loader, keeps them: a broken scan must not pass as zeros). Returns the
 * count, the first flat file index in *first. */
static long long count_nonfinite(const nifti_image *nim, long long *first)
{
    const int is64 = nim->datatype == NIFTI_TYPE_FLOAT64;
    long long count = 0;
    *first = -1;
    for (long long i = 0; i < nim->nvox; i++) {
        const double v = is64 ? ((const double *)nim->data)[i] : ((const float *)nim->data)[i];
        if (!isfinite(v) && count++ == 0) *first = i;
    }
    return count;
}

int nifti_read_xform_codes(const char *path, int codes[3], char *err, size_t errlen)
{
    quiet_niftilib();
    nifti_image *nim = nifti_image_read(path, 0);
    if (!nim)
        return fail(err, errlen, "%s: not a readable NIfTI header (corrupt or not NIfTI)", path);
    codes[0] = nim->sform_code > 0 ? nim->sform_code : 0;
    codes[1] = nim->qform_code > 0 ? nim->qform_code : 0;
    codes[2] = nim->xyz_units;
    nifti_image_free(nim);
    return 0;
}

int nifti_read_qform_params(const char *path, double q[NIFTI_QFORM_PARAMS], char *err,
                            size_t errlen)
{
    quiet_niftilib();
    nifti_image *nim = nifti_image_read(path, 0);
    if (!nim)
        return fail(err, errlen, "%s: not a readable NIfTI header (corrupt or not NIfTI)", path);
    const int has = nim->qform_code > 0;
    const double stored[NIFTI_QFORM_PARAMS] = {nim->quatern_b, nim->quatern_c, nim->quatern_d,
                                               nim->qoffset_x, nim->qoffset_y, nim->qoffset_z,
                                               nim->dx, nim->dy, nim->dz, nim->qfac};
    if (has) memcpy(q, stored, sizeof stored);
    nifti_image_free(nim);
    return has;
}

/* Reads nim's voxel bytes into nim->data in this machine's byte order; 0, or -1 when the file
 * is truncated or corrupt. Not niftilib's loader, for three reasons:
 *  - it looks a single-file NIfTI's voxels up by the base name, X.nii before X.nii.gz, so
 *    X.nii.gz beside a stale X.nii gave one file's header and the other's voxels; a single
 *    file's voxels are read from the file named here;
 *  - it stops after the voxels, so zlib never checked a .gz's CRC-32 and length trailer and
 *    a flipped bit inside the compressed data gave thousands of wrong voxels with no error
 *    (gzip -t refuses such files); a gzip stream is read to its end here;
 *  - it turns NaN/inf into 0, which would hide a broken scan from count_nonfinite. */
static int load_voxels(nifti_image *nim, const char *path)
{
    const int single_file = nim->nifti_type == NIFTI_FTYPE_NIFTI1_1 ||
                            nim->nifti_type == NIFTI_FTYPE_NIFTI2_1;
    const char *file = single_file || !nim->iname ? path : nim->iname;   /* .img of a pair */
    gzFile gz = gzopen(file, "rb");   /* reads a file that is not gzip as it is */
    if (!gz) return -1;
    gzbuffer(gz, 1 << 17);
    const size_t bytes = (size_t)nim->nvox * (size_t)nim->nbyper;
    nim->data = xmalloc(bytes ? bytes : 1);
    const z_off_t offset = (z_off_t)nim->iname_offset;
    int ok = gzseek(gz, offset, SEEK_SET) == offset;
    for (size_t done = 0; ok && done < bytes;) {
        const unsigned want = bytes - done < (1u << 30) ? (unsigned)(bytes - done) : 1u << 30;
        const int got = gzread(gz, (char *)nim->data + done, want);
        ok = got == (int)want;
        done += want;
    }
    if (ok && !gzdirect(gz)) {
        enum { SINK = 1 << 16 };
        char *sink = xmalloc(SINK);
        int n;
        while ((n = gzread(gz, sink, SINK)) > 0) {}
        free(sink);
        ok = n == 0;
    }
    ok &= gzclose_r(gz) == Z_OK;
    if (ok && nim->swapsize > 1 && nim->byteorder != nifti_short_order())
        nifti_swap_Nbytes(nim->nvox * (nim->nbyper / nim->swapsize), nim->swapsize, nim->data);
    return ok ? 0 : -1;
}

int nifti_read_volume(const char *path, float **data, int dim[3], double affine[4][4], char *err,
                      size_t errlen)
{
    quiet_niftilib();
    *data = NULL;
    if (access(path, R_OK) != 0)
        return fail(err, errlen, "%s: cannot open: %s (check the path)", path, strerror(errno));
    nifti_image *nim = nifti_image_read(path, 0);
    if (!nim)
        return fail(err, errlen, "%s: not a readable NIfTI header (corrupt or not NIfTI)", path);
    if (check_header(path, nim, dim, affine, err, errlen) != 0) {
        nifti_image_free(nim);
        return -1;
    }
    /* the file's voxels and their float copy must fit in the node: a header asking for more
     * (damaged, or a scan larger than the node) is this file's error, which --keep-going can
     * skip, not an allocation failure that ends the job naming no file. Against the node's
     * memory, not what is free now: a job's page cache counts as used under its cgroup. */
    const double need = (double)nim->nvox * ((double)nim->nbyper + sizeof(float));
    const double node = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    if (need > node) {
        const long long nx = nim->nx, ny = nim->ny, nz = nim->nz;
        nifti_image_free(nim);
        return fail(err, errlen, "%s: reading its %lld x %lld x %lld voxels takes %.2f GiB, more "
                    "than this node's %.2f GiB of memory (a damaged header, or a scan too large "
                    "for this node): check the file, or run on a node with more memory", path,
                    nx, ny, nz, need / 1073741824.0, node / 1073741824.0);
    }
    if (load_voxels(nim, path) != 0) {
        nifti_image_free(nim);
        return fail(err, errlen,
                    "%s: the voxel data cannot be read (truncated or corrupt file: gzip -t "
                    "checks a .gz); re-export or re-download it", path);
    }
    if (nim->datatype == NIFTI_TYPE_FLOAT32 || nim->datatype == NIFTI_TYPE_FLOAT64) {
        long long first = -1, bad = count_nonfinite(nim, &first);
        if (bad > 0) {
            const long long nx = nim->nx, ny = nim->ny;
            nifti_image_free(nim);
            return fail(err, errlen,
                        "%s: %lld NaN/inf voxels (the first at voxel %lld,%lld,%lld); fix or exclude the image",
                        path, bad, first % nx, (first / nx) % ny, first / (nx * ny));
        }
    }
    /* NIfTI: a slope of 0 means "no scaling". */
    const double slope = nim->scl_slope != 0.0 && isfinite(nim->scl_slope) ? nim->scl_slope : 1.0;
    const double inter = nim->scl_slope != 0.0 && isfinite(nim->scl_inter) ? nim->scl_inter : 0.0;
    const size_t nx = (size_t)dim[0], ny = (size_t)dim[1], nz = (size_t)dim[2];
    float *out = xmalloc(nx * ny * nz * sizeof(float));
    for (size_t z = 0; z < nz; z++)
        for (size_t y = 0; y < ny; y++)
            for (size_t x = 0; x < nx; x++) {
                size_t src = x + nx * (y + ny * z);  /* file order: x fastest */
                out[(x * ny + y) * nz + z] = (float)(voxel_value(nim->data, nim->datatype, src) * slope + inter);
            }
    nifti_image_free(nim);
    *data = out;
    return 0;
}

static size_t datatype_bytes(int datatype)
{
    switch (datatype) {
    case NIFTI_TYPE_INT16: return 2;
    case NIFTI_TYPE_UINT8: return 1;
    case NIFTI_TYPE_FLOAT32: return 4;
    default: ALICE_FATAL("nifti_write_volume: datatype %d is not one of int16, uint8, float32", datatype);
    }
}

/* "dir/name.nii.gz" -> "dir/.name.tmp<pid>.nii.gz": same directory (rename stays atomic), same
 * extension (niftilib picks compression from it). */
static void temp_name(const char *path, char *out, size_t n)
{
    const char *slash = strrchr(path, '/');
    size_t dir_len = slash ? (size_t)(slash - path) + 1 : 0;
    const char *base = path + dir_len;
    const char *ext = strstr(base, ".nii");
    size_t stem_len = ext ? (size_t)(ext - base) : strlen(base);
    snprintf(out, n, "%.*s.%.*s.tmp%ld%s", (int)dir_len, path, (int)stem_len, base, (long)getpid(),
             ext ? ext : ".nii");
}

/* zlib's default level for labels and images, which compress well (uint8 labels to ~1%). */
#define NIFTI_GZIP_LEVEL 6
/* Float probabilities barely compress (to ~58% at level 6, ~59% at level 1, measured on a
 * 14-class phantom prediction) while level 6 takes ~1.6x the time of level 1: with K frames
 * per voxel, writing is the cost of --probs, so the fastest level. */
#define NIFTI_GZIP_LEVEL_FLOAT_FRAMES 1

/* A NIfTI-1 header for dims (NIfTI dim[] layout) with the affine in both sform and qform
 * (code 1, scanner anatomical; the qform is the closest rigid transform). */
/* description into the 80-character descrip field and, whole, into a comment extension
 * (NIFTI_ECODE_COMMENT, which nibabel lists in header.extensions): paths do not fit 80. */
static void describe(nifti_image *nim, const char *description, const char *path)
{
    if (!description || !description[0]) return;
    snprintf(nim->descrip, sizeof nim->descrip, "%s", description);
    if (nifti_add_extension(nim, description, (int)strlen(description) + 1, NIFTI_ECODE_COMMENT))
        alice_die("%s: cannot add the description extension", path);
}

/* codes: the sform and qform codes to write (NULL: both NIFTI_XFORM_SCANNER_ANAT). The
 * quaternion and pixdim come from qform (the source's, as stored in its unit) when given, else
 * from the affine, so a file written with codes 0,0 (its source's method 1) still holds the
 * voxel sizes readers then use. */
static nifti_image *new_header(const int64_t dims[8], int datatype, const double affine[4][4],
                               const int codes[3], const double *qform, const char *description,
                               const char *path)
{
    nifti_image *nim = nifti_make_new_nim(dims, datatype, 0);
    ALICE_ASSERT(nim, "nifti_make_new_nim failed for %s", path);
    nifti_dmat44 m;
    memcpy(m.m, affine, sizeof m.m);
    /* the affine is in mm; a source in metres or microns gets its prediction in its own unit
     * (nibabel ignores xyz_units: in mm it would place the two 1000x apart) */
    const int units = codes ? codes[2] : NIFTI_UNITS_MM;
    const double from_mm = units == NIFTI_UNITS_METER    ? 1e-3
                           : units == NIFTI_UNITS_MICRON ? 1e3
                                                         : 1.0;
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++) m.m[r][c] *= from_mm;
    nim->sform_code = codes ? codes[0] : NIFTI_XFORM_SCANNER_ANAT;
    nim->sto_xyz = m;
    nim->sto_ijk = nifti_dmat44_inverse(m);
    nim->qform_code = codes ? codes[1] : NIFTI_XFORM_SCANNER_ANAT;
    if (qform) {
        nim->quatern_b = qform[0];
        nim->quatern_c = qform[1];
        nim->quatern_d = qform[2];
        nim->qoffset_x = qform[3];
        nim->qoffset_y = qform[4];
        nim->qoffset_z = qform[5];
        nim->dx = qform[6];
        nim->dy = qform[7];
        nim->dz = qform[8];
        nim->qfac = qform[9];
    } else {
        nifti_dmat44_to_quatern(m, &nim->quatern_b, &nim->quatern_c, &nim->quatern_d,
                                &nim->qoffset_x, &nim->qoffset_y, &nim->qoffset_z, &nim->dx,
                                &nim->dy, &nim->dz, &nim->qfac);
    }
    nim->pixdim[1] = nim->dx;
    nim->pixdim[2] = nim->dy;
    nim->pixdim[3] = nim->dz;
    nim->pixdim[0] = nim->qfac;
    nim->qto_xyz = nifti_quatern_to_dmat44(nim->quatern_b, nim->quatern_c, nim->quatern_d,
                                           nim->qoffset_x, nim->qoffset_y, nim->qoffset_z,
                                           nim->dx, nim->dy, nim->dz, nim->qfac);
    nim->qto_ijk = nifti_dmat44_inverse(nim->qto_xyz);
    nim->xyz_units = units;
    nim->scl_slope = 1.0;
    nim->scl_inter = 0.0;
    nim->nifti_type = NIFTI_FTYPE_NIFTI1_1;
    describe(nim, description, path);
    return nim;
}

/* Writes the voxel bytes of a file after its header; returns 0, or -1 on a failed write. */
typedef int (*PayloadFn)(znzFile fp, void *ctx);

/* Header (from nim) then payload under a temporary name in the same directory, renamed to
 * path when whole; frees nim. Any failure removes the temporary file and ends the job.
 * gzip_level (1..9) applies to .gz paths. */
static void write_atomically(const char *path, nifti_image *nim, int gzip_level, PayloadFn payload,
                             void *ctx)
{
    char tmp[4096];
    temp_name(path, tmp, sizeof tmp);
    FILE *probe = fopen(tmp, "wb");
    if (!probe)
        alice_die("cannot write %s: %s (choose a writable output directory)", path, strerror(errno));
    fclose(probe);
    if (nifti_set_filenames(nim, tmp, 0, 1) != 0) {
        unlink(tmp);
        alice_die("cannot use %s as a NIfTI file name (it must end in .nii or .nii.gz)", path);
    }
    /* 2: header only, file left open at the data offset for the payload. zlib reads the
     * level from the open mode ("wb6"); plain files get plain "wb". */
    char mode[8] = "wb";
    if (nifti_is_gzfile(tmp)) snprintf(mode, sizeof mode, "wb%d", gzip_level);
    znzFile fp = nifti_image_write_hdr_img(nim, 2, mode);
    int ok = !znz_isnull(fp);
    if (ok) {
        ok = payload(fp, ctx) == 0;
        /* gzip flushes its last block on close: a full disk shows up here. */
        ok = znzclose(fp) == 0 && ok;
    }
    struct stat st;
    if (!ok || stat(tmp, &st) != 0 || st.st_size == 0) {
        unlink(tmp);
        alice_die("writing %s failed (disk full or directory not writable?)", path);
    }
    durable_replace(tmp, path);
    nifti_image_free(nim);
}

/* C order [X][Y][Z] -> NIfTI file order (x fastest). */
static void to_file_order(const void *data, size_t bytes, const int dim[3], unsigned char *out)
{
    const size_t nx = (size_t)dim[0], ny = (size_t)dim[1], nz = (size_t)dim[2];
    const unsigned char *src = data;
    for (size_t x = 0; x < nx; x++)
        for (size_t y = 0; y < ny; y++)
            for (size_t z = 0; z < nz; z++)
                memcpy(out + (x + nx * (y + ny * z)) * bytes, src + ((x * ny + y) * nz + z) * bytes, bytes);
}

static int write_bytes(znzFile fp, const void *buf, size_t n)
{
    return znzwrite(buf, 1, n, fp) == n ? 0 : -1;
}

typedef struct {
    const unsigned char *file_order;
    size_t n;
} VolumePayload;

static int volume_payload(znzFile fp, void *ctx)
{
    const VolumePayload *v = ctx;
    return write_bytes(fp, v->file_order, v->n);
}

void nifti_write_volume(const char *path, const void *data, int datatype, const int dim[3],
                        const double affine[4][4], const char *description)
{
    nifti_write_volume_codes(path, data, datatype, dim, affine, NULL, NULL, description);
}

void nifti_write_volume_codes(const char *path, const void *data, int datatype, const int dim[3],
                              const double affine[4][4], const int codes[3],
                              const double *qform, const char *description)
{
    quiet_niftilib();
    const size_t bytes = datatype_bytes(datatype);
    const int64_t dims[8] = {3, dim[0], dim[1], dim[2], 1, 1, 1, 1};
    nifti_image *nim = new_header(dims, datatype, affine, codes, qform, description, path);
    const size_t n = (size_t)dim[0] * dim[1] * dim[2] * bytes;
    unsigned char *file_order = xmalloc(n);
    to_file_order(data, bytes, dim, file_order);
    VolumePayload v = {file_order, n};
    write_atomically(path, nim, NIFTI_GZIP_LEVEL, volume_payload, &v);
    free(file_order);
}

typedef struct {
    const int *dim;
    int frames;
    NiftiFrameStorage storage;
    NiftiFrameFn fill;
    void *ctx;
} FramesPayload;

/* NIFTI_FRAMES_UINT8_UNIT's stored value of v (nifti_io.h). */
static uint8_t unit_to_uint8(float v)
{
    const float c = v > 1.0f ? 1.0f : v > 0.0f ? v : 0.0f;   /* NaN -> 0 */
    return (uint8_t)lrintf(c * 255.0f);
}

/* Frame after frame: NIfTI's 4th axis varies slowest, so each frame is one contiguous block. */
static int frames_payload(znzFile fp, void *ctx)
{
    const FramesPayload *f = ctx;
    const size_t n = (size_t)f->dim[0] * f->dim[1] * f->dim[2];
    const int quantise = f->storage == NIFTI_FRAMES_UINT8_UNIT;
    const size_t bytes = quantise ? sizeof(uint8_t) : sizeof(float);
    float *frame = xmalloc(n * sizeof(float));
    uint8_t *stored = quantise ? xmalloc(n) : NULL;
    unsigned char *file_order = xmalloc(n * bytes);
    int rc = 0;
    for (int t = 0; t < f->frames && rc == 0; t++) {
        f->fill(f->ctx, t, frame);
        if (quantise)
            for (size_t i = 0; i < n; i++) stored[i] = unit_to_uint8(frame[i]);
        to_file_order(quantise ? (const void *)stored : (const void *)frame, bytes, f->dim, file_order);
        rc = write_bytes(fp, file_order, n * bytes);
    }
    free(file_order);
    free(stored);
    free(frame);
    return rc;
}

void nifti_write_frames(const char *path, const int dim[3], int frames, const double affine[4][4],
                        const int codes[3], const double *qform, const char *description,
                        NiftiFrameStorage storage, NiftiFrameFn fill, void *ctx)
{
    quiet_niftilib();
    ALICE_ASSERT(frames >= 1, "nifti_write_frames: %d frames for %s", frames, path);
    const int64_t dims[8] = {4, dim[0], dim[1], dim[2], frames, 1, 1, 1};
    const int quantise = storage == NIFTI_FRAMES_UINT8_UNIT;
    nifti_image *nim = new_header(dims, quantise ? NIFTI_TYPE_UINT8 : NIFTI_TYPE_FLOAT32, affine,
                                  codes, qform, description, path);
    if (quantise) {
        nim->scl_slope = 1.0f / 255.0f;
        nim->scl_inter = 0.0f;
    }
    /* The 4th axis is not time: no time unit, unit step. */
    nim->pixdim[4] = nim->dt = 1.0f;
    nim->intent_code = NIFTI_INTENT_NONE;
    FramesPayload f = {dim, frames, storage, fill, ctx};
    write_atomically(path, nim, NIFTI_GZIP_LEVEL_FLOAT_FRAMES, frames_payload, &f);
}
