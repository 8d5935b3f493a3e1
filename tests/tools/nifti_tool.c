/* Test helper for tests/io/test_nifti_geometry.py: exposes io/nifti_io and io/geometry on raw
 * files so Python can compare them with nibabel and scipy.
 *   nifti_tool read IN.nii[.gz] OUT.bin          (exit 3 and the message on a read error)
 *   nifti_tool write IN.bin OUT.nii.gz int16|uint8|float32
 *   nifti_tool resample IN.bin OUT.bin STEPX STEPY STEPZ linear|nearest
 *   nifti_tool reorient IN.bin OUT.bin
 * .bin: int32 dim[3], float64 affine[4][4] (row major), float32 voxels in C order [X][Y][Z]. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nifti1.h>

#include "core/check.h"
#include "geometry.h"
#include "nifti_io.h"

static float *load_bin(const char *path, int dim[3], double affine[4][4])
{
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(1); }
    int32_t d[3];
    if (fread(d, sizeof d, 1, f) != 1 || fread(affine, sizeof(double) * 16, 1, f) != 1) exit(1);
    for (int a = 0; a < 3; a++) dim[a] = d[a];
    size_t n = (size_t)d[0] * d[1] * d[2];
    float *v = xmalloc(n * sizeof(float));
    if (fread(v, sizeof(float), n, f) != n) exit(1);
    fclose(f);
    return v;
}

static void save_bin(const char *path, const int dim[3], const double affine[4][4], const float *v)
{
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(1); }
    int32_t d[3] = {dim[0], dim[1], dim[2]};
    size_t n = (size_t)d[0] * d[1] * d[2];
    fwrite(d, sizeof d, 1, f);
    fwrite(affine, sizeof(double) * 16, 1, f);
    fwrite(v, sizeof(float), n, f);
    fclose(f);
}

int main(int argc, char **argv)
{
    if (argc >= 4 && !strcmp(argv[1], "read")) {
        float *v;
        int dim[3];
        double aff[4][4];
        char err[1024];
        if (nifti_read_volume(argv[2], &v, dim, aff, err, sizeof err) != 0) {
            fprintf(stderr, "%s\n", err);
            return 3;
        }
        save_bin(argv[3], dim, aff, v);
        free(v);
        return 0;
    }
    if (argc >= 5 && !strcmp(argv[1], "write")) {
        int dim[3];
        double aff[4][4];
        float *v = load_bin(argv[2], dim, aff);
        size_t n = (size_t)dim[0] * dim[1] * dim[2];
        if (!strcmp(argv[4], "int16")) {
            int16_t *b = xmalloc(n * 2);
            for (size_t i = 0; i < n; i++) b[i] = (int16_t)v[i];
            nifti_write_volume(argv[3], b, NIFTI_TYPE_INT16, dim, (const double (*)[4])aff, NULL);
            free(b);
        } else if (!strcmp(argv[4], "uint8")) {
            uint8_t *b = xmalloc(n);
            for (size_t i = 0; i < n; i++) b[i] = (uint8_t)v[i];
            nifti_write_volume(argv[3], b, NIFTI_TYPE_UINT8, dim, (const double (*)[4])aff, NULL);
            free(b);
        } else {
            nifti_write_volume(argv[3], v, NIFTI_TYPE_FLOAT32, dim, (const double (*)[4])aff, NULL);
        }
        free(v);
        return 0;
    }
    if (argc >= 8 && !strcmp(argv[1], "resample")) {
        int dim[3], od[3];
        double aff[4][4], step[3];
        float *v = load_bin(argv[2], dim, aff);
        float in_sp[3] = {1, 1, 1}, out_sp[3];
        for (int a = 0; a < 3; a++) {
            step[a] = atof(argv[4 + a]);
            out_sp[a] = (float)step[a];
        }
        geometry_resampled_dim(dim, in_sp, out_sp, od);
        float *o = xmalloc((size_t)od[0] * od[1] * od[2] * sizeof(float));
        geometry_resample(v, dim, step, od, !strcmp(argv[7], "nearest"), o);
        save_bin(argv[3], od, (const double (*)[4])aff, o);
        return 0;
    }
    if (argc >= 4 && !strcmp(argv[1], "reorient")) {
        int dim[3], od[3], axis[3], flip[3];
        double aff[4][4], oa[4][4];
        float *v = load_bin(argv[2], dim, aff);
        geometry_ras_orientation((const double (*)[4])aff, axis, flip);
        float *o = xmalloc((size_t)dim[0] * dim[1] * dim[2] * sizeof(float));
        geometry_reorient(v, dim, (const double (*)[4])aff, axis, flip, o, od, oa);
        save_bin(argv[3], od, (const double (*)[4])oa, o);
        return 0;
    }
    fprintf(stderr, "usage: see the comment at the top of tests/tools/nifti_tool.c\n");
    return 2;
}
