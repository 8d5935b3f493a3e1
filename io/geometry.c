#include "geometry.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"

void affine_multiply(const double a[4][4], const double b[4][4], double out[4][4])
{
    double r[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            double s = 0;
            for (int k = 0; k < 4; k++) s += a[i][k] * b[k][j];
            r[i][j] = s;
        }
    memcpy(out, r, sizeof r);
}

int affine_invert(const double a[4][4], double out[4][4])
{
    /* Gauss-Jordan with partial pivoting on [a | I]. */
    double m[4][8];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 8; j++) m[i][j] = j < 4 ? a[i][j] : (j - 4 == i);
    for (int c = 0; c < 4; c++) {
        int piv = c;
        for (int r = c + 1; r < 4; r++)
            if (fabs(m[r][c]) > fabs(m[piv][c])) piv = r;
        if (fabs(m[piv][c]) < 1e-12) return -1;
        if (piv != c)
            for (int j = 0; j < 8; j++) { double t = m[c][j]; m[c][j] = m[piv][j]; m[piv][j] = t; }
        double inv = 1.0 / m[c][c];
        for (int j = 0; j < 8; j++) m[c][j] *= inv;
        for (int r = 0; r < 4; r++) {
            if (r == c || m[r][c] == 0.0) continue;
            double f = m[r][c];
            for (int j = 0; j < 8; j++) m[r][j] -= f * m[c][j];
        }
    }
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) out[i][j] = m[i][j + 4];
    return 0;
}

void geometry_spacing(const double affine[4][4], float spacing[3])
{
    for (int j = 0; j < 3; j++)
        spacing[j] = (float)sqrt(affine[0][j] * affine[0][j] + affine[1][j] * affine[1][j] +
                                 affine[2][j] * affine[2][j]);
}

/* The orthogonal factor Q of the polar decomposition m = Q P (the rotation nearest to m):
 * Newton's iteration X <- (X + X^-T) / 2, which converges quadratically from any invertible
 * m. Returns -1 when m is singular. */
static int nearest_rotation(const double m[3][3], double q[3][3])
{
    memcpy(q, m, sizeof(double[3][3]));
    for (int it = 0; it < 100; it++) {
        /* X^-T = cofactor(X) / det(X) */
        double cof[3][3];
        for (int r = 0; r < 3; r++)
            for (int c = 0; c < 3; c++) {
                const int r1 = (r + 1) % 3, r2 = (r + 2) % 3, c1 = (c + 1) % 3, c2 = (c + 2) % 3;
                cof[r][c] = q[r1][c1] * q[r2][c2] - q[r1][c2] * q[r2][c1];
            }
        const double det = q[0][0] * cof[0][0] + q[0][1] * cof[0][1] + q[0][2] * cof[0][2];
        if (!(fabs(det) > 1e-12)) return -1;
        double change = 0;
        for (int r = 0; r < 3; r++)
            for (int c = 0; c < 3; c++) {
                const double next = 0.5 * (q[r][c] + cof[r][c] / det);
                change = fmax(change, fabs(next - q[r][c]));
                q[r][c] = next;
            }
        if (change < 1e-15) break;
    }
    return 0;
}

void geometry_ras_orientation(const double affine[4][4], int ras_axis[3], int ras_flip[3])
{
    /* nibabel's io_orientation, step for step, so the packed array is what
     * as_closest_canonical gives even for a strongly oblique scan: direction cosines (columns
     * normalised), the nearest rotation (polar decomposition: a sheared affine's closest
     * shearless one), then voxel axes in order, each taking the world axis of its largest
     * remaining entry (the first of equal ones) and removing that world axis. */
    double r[3][3], q[3][3];
    for (int j = 0; j < 3; j++) {
        double n = 0;
        for (int w = 0; w < 3; w++) n += affine[w][j] * affine[w][j];
        n = n > 0 ? sqrt(n) : 1.0;
        for (int w = 0; w < 3; w++) r[w][j] = affine[w][j] / n;
    }
    if (nearest_rotation(r, q) != 0) memcpy(q, r, sizeof q);   /* singular: refused elsewhere */
    int world_used[3] = {0, 0, 0};
    for (int j = 0; j < 3; j++) {
        int bw = -1;
        for (int w = 0; w < 3; w++)
            if (!world_used[w] && (bw < 0 || fabs(q[w][j]) > fabs(q[bw][j]))) bw = w;
        world_used[bw] = 1;
        ras_axis[bw] = j;
        ras_flip[bw] = q[bw][j] < 0;
    }
}

void geometry_reorient(const float *in, const int dim[3], const double affine[4][4],
                       const int ras_axis[3], const int ras_flip[3], float *out, int out_dim[3],
                       double out_affine[4][4])
{
    int od[3];
    for (int a = 0; a < 3; a++) od[a] = dim[ras_axis[a]];
    /* Input strides (C order) of each output axis, and the input offset of output voxel 0. */
    const long in_stride[3] = {(long)dim[1] * dim[2], dim[2], 1};
    long step[3], base = 0;
    for (int a = 0; a < 3; a++) {
        long s = in_stride[ras_axis[a]];
        if (ras_flip[a]) {
            base += s * (od[a] - 1);
            step[a] = -s;
        } else {
            step[a] = s;
        }
    }
    for (int x = 0; x < od[0]; x++)
        for (int y = 0; y < od[1]; y++) {
            const float *src = in + base + step[0] * x + step[1] * y;
            float *dst = out + ((size_t)x * od[1] + y) * od[2];
            for (int z = 0; z < od[2]; z++) dst[z] = src[step[2] * z];
        }
    double A[4][4];
    memcpy(A, affine, sizeof A);
    for (int w = 0; w < 4; w++) {
        double t = A[w][3];
        for (int a = 0; a < 3; a++) {
            double col = A[w][ras_axis[a]];
            if (ras_flip[a]) {
                t += col * (od[a] - 1);
                col = -col;
            }
            out_affine[w][a] = col;
        }
        out_affine[w][3] = t;
    }
    memcpy(out_dim, od, sizeof od);
}

void geometry_resampled_dim(const int dim[3], const float in_sp[3], const float out_sp[3],
                            int out_dim[3])
{
    for (int a = 0; a < 3; a++) {
        long n = lround((double)dim[a] * in_sp[a] / out_sp[a]);
        out_dim[a] = n < 1 ? 1 : (int)n;
    }
}

void geometry_resample(const float *in, const int dim[3], const double step[3], const int out_dim[3],
                       int nearest, float *out)
{
    const size_t sx = (size_t)dim[1] * dim[2], sy = (size_t)dim[2];
    /* Per-axis source index and weight tables: the 3D loop then only blends. */
    int *i0[3], *i1[3];
    float *w1[3];
    for (int a = 0; a < 3; a++) {
        i0[a] = xmalloc(sizeof(int) * out_dim[a]);
        i1[a] = xmalloc(sizeof(int) * out_dim[a]);
        w1[a] = xmalloc(sizeof(float) * out_dim[a]);
        for (int o = 0; o < out_dim[a]; o++) {
            double c = o * step[a];
            if (c > dim[a] - 1) c = dim[a] - 1;
            if (nearest) {
                int n = (int)floor(c + 0.5);
                if (n > dim[a] - 1) n = dim[a] - 1;
                i0[a][o] = i1[a][o] = n;
                w1[a][o] = 0;
            } else {
                int f = (int)floor(c);
                if (f > dim[a] - 1) f = dim[a] - 1;
                i0[a][o] = f;
                i1[a][o] = f + 1 < dim[a] ? f + 1 : f;
                w1[a][o] = (float)(c - f);
            }
        }
    }
    for (int x = 0; x < out_dim[0]; x++) {
        const float wx = w1[0][x];
        const float *px0 = in + i0[0][x] * sx, *px1 = in + i1[0][x] * sx;
        for (int y = 0; y < out_dim[1]; y++) {
            const float wy = w1[1][y];
            const float *p00 = px0 + i0[1][y] * sy, *p01 = px0 + i1[1][y] * sy;
            const float *p10 = px1 + i0[1][y] * sy, *p11 = px1 + i1[1][y] * sy;
            float *dst = out + ((size_t)x * out_dim[1] + y) * out_dim[2];
            for (int z = 0; z < out_dim[2]; z++) {
                const int za = i0[2][z], zb = i1[2][z];
                if (nearest) {
                    dst[z] = p00[za];
                    continue;
                }
                const float wz = w1[2][z];
                float c00 = p00[za] + wz * (p00[zb] - p00[za]);
                float c01 = p01[za] + wz * (p01[zb] - p01[za]);
                float c10 = p10[za] + wz * (p10[zb] - p10[za]);
                float c11 = p11[za] + wz * (p11[zb] - p11[za]);
                float c0 = c00 + wy * (c01 - c00), c1 = c10 + wy * (c11 - c10);
                dst[z] = c0 + wx * (c1 - c0);
            }
        }
    }
    for (int a = 0; a < 3; a++) {
        free(i0[a]);
        free(i1[a]);
        free(w1[a]);
    }
}

int geometry_body_box(const float *image, const uint8_t *label, const int dim[3],
                      float threshold_hu, float min_fraction, int margin, int lo[3], int hi[3])
{
    long *count[3];
    for (int a = 0; a < 3; a++) count[a] = xcalloc((size_t)dim[a], sizeof(long));
    int lab_lo[3] = {dim[0], dim[1], dim[2]}, lab_hi[3] = {0, 0, 0};
    size_t i = 0;
    for (int x = 0; x < dim[0]; x++)
        for (int y = 0; y < dim[1]; y++)
            for (int z = 0; z < dim[2]; z++, i++) {
                if (image[i] > threshold_hu) {
                    count[0][x]++;
                    count[1][y]++;
                    count[2][z]++;
                }
                if (label && label[i]) {
                    const int p[3] = {x, y, z};
                    for (int a = 0; a < 3; a++) {
                        if (p[a] < lab_lo[a]) lab_lo[a] = p[a];
                        if (p[a] + 1 > lab_hi[a]) lab_hi[a] = p[a] + 1;
                    }
                }
            }
    int found = 1;
    for (int a = 0; a < 3; a++) {
        long peak = 0;
        for (int k = 0; k < dim[a]; k++)
            if (count[a][k] > peak) peak = count[a][k];
        if (peak == 0) {
            found = 0;
            break;
        }
        long need = (long)ceil(min_fraction * (double)peak);
        if (need < 1) need = 1;
        int first = 0, last = dim[a] - 1;
        while (count[a][first] < need) first++;
        while (count[a][last] < need) last--;
        lo[a] = first - margin > 0 ? first - margin : 0;
        hi[a] = last + 1 + margin < dim[a] ? last + 1 + margin : dim[a];
        if (lab_hi[a] > 0) {
            if (lab_lo[a] < lo[a]) lo[a] = lab_lo[a];
            if (lab_hi[a] > hi[a]) hi[a] = lab_hi[a];
        }
    }
    for (int a = 0; a < 3; a++) free(count[a]);
    if (!found)
        for (int a = 0; a < 3; a++) {
            lo[a] = 0;
            hi[a] = dim[a];
        }
    return found;
}

void geometry_crop(const float *in, const int dim[3], const int lo[3], const int hi[3], float *out)
{
    const int n[3] = {hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]};
    for (int x = 0; x < n[0]; x++)
        for (int y = 0; y < n[1]; y++)
            memcpy(out + ((size_t)x * n[1] + y) * n[2],
                   in + ((size_t)(x + lo[0]) * dim[1] + (y + lo[1])) * dim[2] + lo[2],
                   sizeof(float) * (size_t)n[2]);
}

/* Body: anything denser than fat-free air; CT air is about -1000 HU, fat about -100. */
enum { BODY_MARGIN_VOXELS = 2 };
static const float BODY_THRESHOLD_HU = -500.0f;
static const float BODY_MIN_FRACTION = 0.01f;

void geometry_pack_resampled_dim(const int dim[3], const double affine[4][4],
                                 const float target_spacing[3], int out_dim[3])
{
    int ras_axis[3], ras_flip[3];
    geometry_ras_orientation(affine, ras_axis, ras_flip);
    float sp[3], in_sp[3];
    geometry_spacing(affine, sp);   /* per voxel axis; RAS axis a is voxel axis ras_axis[a] */
    int rdim[3];
    for (int a = 0; a < 3; a++) {
        rdim[a] = dim[ras_axis[a]];
        in_sp[a] = sp[ras_axis[a]];
    }
    geometry_resampled_dim(rdim, in_sp, target_spacing, out_dim);
}

void geometry_pack_case(const float *image, const float *label, const int dim[3],
                        const double affine[4][4], const float target_spacing[3], PackGeometry *g,
                        float **image_out, uint8_t **label_out)
{
    memset(g, 0, sizeof *g);
    memcpy(g->orig_dim, dim, sizeof g->orig_dim);
    memcpy(g->orig_affine, affine, sizeof g->orig_affine);
    geometry_ras_orientation(affine, g->ras_axis, g->ras_flip);

    const size_t n = (size_t)dim[0] * dim[1] * dim[2];
    int rdim[3];
    double ras_affine[4][4];
    float *ras_image = xmalloc(n * sizeof(float));
    geometry_reorient(image, dim, affine, g->ras_axis, g->ras_flip, ras_image, rdim, ras_affine);
    float *ras_label = NULL;
    if (label) {
        ras_label = xmalloc(n * sizeof(float));
        geometry_reorient(label, dim, affine, g->ras_axis, g->ras_flip, ras_label, rdim, ras_affine);
    }

    float in_sp[3];
    geometry_spacing(ras_affine, in_sp);
    double step[3];
    for (int a = 0; a < 3; a++) step[a] = (double)target_spacing[a] / in_sp[a];
    geometry_resampled_dim(rdim, in_sp, target_spacing, g->resampled_dim);
    const int *sd = g->resampled_dim;
    const size_t ns = (size_t)sd[0] * sd[1] * sd[2];
    float *res_image = xmalloc(ns * sizeof(float));
    geometry_resample(ras_image, rdim, step, sd, 0, res_image);
    free(ras_image);
    uint8_t *res_label = NULL;
    if (ras_label) {
        float *tmp = xmalloc(ns * sizeof(float));
        geometry_resample(ras_label, rdim, step, sd, 1, tmp);
        free(ras_label);
        res_label = xmalloc(ns);
        for (size_t i = 0; i < ns; i++) res_label[i] = (uint8_t)tmp[i];
        free(tmp);
    }

    geometry_body_box(res_image, res_label, sd, BODY_THRESHOLD_HU, BODY_MIN_FRACTION,
                      BODY_MARGIN_VOXELS, g->crop_lo, g->crop_hi);
    for (int a = 0; a < 3; a++) g->dim[a] = g->crop_hi[a] - g->crop_lo[a];
    const size_t nc = (size_t)g->dim[0] * g->dim[1] * g->dim[2];
    float *out = xmalloc(nc * sizeof(float));
    geometry_crop(res_image, sd, g->crop_lo, g->crop_hi, out);
    free(res_image);
    *image_out = out;
    *label_out = NULL;
    if (res_label) {
        uint8_t *lab = xmalloc(nc);
        const int *lo = g->crop_lo, *d = g->dim;
        for (int x = 0; x < d[0]; x++)
            for (int y = 0; y < d[1]; y++)
                memcpy(lab + ((size_t)x * d[1] + y) * d[2],
                       res_label + ((size_t)(x + lo[0]) * sd[1] + (y + lo[1])) * sd[2] + lo[2], (size_t)d[2]);
        free(res_label);
        *label_out = lab;
    }

    /* Packed voxel p sits at RAS-grid coordinate (p + lo) * step. */
    for (int w = 0; w < 4; w++) {
        double t = ras_affine[w][3];
        for (int a = 0; a < 3; a++) {
            g->affine[w][a] = ras_affine[w][a] * step[a];
            t += g->affine[w][a] * g->crop_lo[a];
        }
        g->affine[w][3] = t;
    }
    memcpy(g->spacing, target_spacing, sizeof g->spacing);
}

void geometry_source_edge_faces(const int orig_dim[3], const double orig_affine[4][4],
                                const float target_spacing[3], const int crop_hi[3],
                                int edge_high[3])
{
    int resampled[3];
    geometry_pack_resampled_dim(orig_dim, orig_affine, target_spacing, resampled);
    for (int a = 0; a < 3; a++) edge_high[a] = crop_hi[a] == resampled[a];
}

void geometry_original_index_map(const int packed_dim[3], const double packed_affine[4][4],
                                 const int orig_dim[3], const double orig_affine[4][4],
                                 const int edge_high[3], int64_t *index)
{
    double inv[4][4], m[4][4];
    if (affine_invert(packed_affine, inv) != 0)
        ALICE_FATAL("the packed grid affine is singular; the data set is corrupt");
    affine_multiply(inv, orig_affine, m);  /* original voxel -> packed voxel */
    for (int i = 0; i < orig_dim[0]; i++)
        for (int j = 0; j < orig_dim[1]; j++)
            for (int k = 0; k < orig_dim[2]; k++) {
                int p[3];
                int inside = 1;
                for (int a = 0; a < 3; a++) {
                    double c = m[a][0] * i + m[a][1] * j + m[a][2] * k + m[a][3];
                    p[a] = (int)floor(c + 0.5);
                    /* The resampled grid's round(n in/out) voxels can end up to 1.5 packed
                     * voxels short of the source's last voxel (downsampling, n in/out rounded
                     * down): those source voxels take the nearest packed one, as the
                     * resampling let samples past the source's edge take the edge value. Only
                     * at a high face the body crop left alone: past a cropped face lies air. */
                    if (edge_high[a] && p[a] >= packed_dim[a] && c < packed_dim[a] + 0.5)
                        p[a] = packed_dim[a] - 1;
                    if (p[a] < 0 || p[a] >= packed_dim[a]) inside = 0;
                }
                index[((size_t)i * orig_dim[1] + j) * orig_dim[2] + k] =
                    inside ? ((int64_t)p[0] * packed_dim[1] + p[1]) * packed_dim[2] + p[2]
                           : GEOMETRY_OUTSIDE;
            }
}

void geometry_label_to_original(const uint8_t *packed, const int packed_dim[3],
                                const double packed_affine[4][4], const int orig_dim[3],
                                const double orig_affine[4][4], const int edge_high[3],
                                uint8_t *out)
{
    const size_t n = (size_t)orig_dim[0] * orig_dim[1] * orig_dim[2];
    int64_t *index = xmalloc(n * sizeof *index);
    geometry_original_index_map(packed_dim, packed_affine, orig_dim, orig_affine, edge_high, index);
    geometry_gather_labels(index, n, packed, out);
    free(index);
}

void geometry_gather_labels(const int64_t *index, size_t n, const uint8_t *packed, uint8_t *out)
{
    for (size_t i = 0; i < n; i++) out[i] = index[i] == GEOMETRY_OUTSIDE ? 0 : packed[index[i]];
}

int geometry_grid_mismatch(const double a[4][4], const double b[4][4], const int dim[3])
{
    double min_spacing = INFINITY;
    for (int c = 0; c < 3; c++) {
        const double len = sqrt(a[0][c] * a[0][c] + a[1][c] * a[1][c] + a[2][c] * a[2][c]);
        if (len < min_spacing) min_spacing = len;
    }
    const double tol = GEOMETRY_GRID_TOLERANCE * min_spacing;
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++) {
            const double reach = c == 3 ? 1.0 : (dim[c] > 1 ? dim[c] - 1 : 1);
            if (!(fabs(a[r][c] - b[r][c]) * reach <= tol)) return r * 4 + c;
        }
    return -1;
}

int spacing_equal(const double a[3], const double b[3])
{
    int same = 1;
    for (int axis = 0; axis < 3; axis++) same &= fabs(a[axis] - b[axis]) <= 1e-3 * b[axis];
    return same;
}
