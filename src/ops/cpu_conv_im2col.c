/* CPU backend: 3D convolution of any geometry through vol2col + sgemm. The direct kernels
 * (cpu_conv_direct.c) are faster for stride 1; this path serves the other geometries and is
 * the reference the benchmark (tests/bench/bench_conv.c) measures them against. Layouts as
 * PyTorch: x [B, Cin, X, Y, Z], W [Cout, Cin, k, k, k].
 *
 * The column matrix of a 96^3 volume with 16 channels and a 3^3 kernel would take 1.5 GB, so
 * vol2col works on slabs of output x-planes sized to COL_BUDGET floats; each slab is one
 * GEMM split across the OpenMP threads (cpu_sgemm). */
#include "ops/cpu_ops.h"

#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "ops/cpu_scratch.h"

/* Floats in one column slab (16 MiB): large enough for an efficient GEMM, small enough to
 * stay cheap beside the activations. */
#define COL_BUDGET (4L << 20)

typedef struct {
    int Cin, X, Y, Z;      /* input */
    int k, s, pad;
    int Ox, Oy, Oz;        /* output */
    long in_plane;         /* X*Y*Z */
    long out_plane;        /* Ox*Oy*Oz */
    long rows;             /* Cin*k^3: rows of the column matrix */
    int slab_planes;       /* output x-planes per slab */
    int pointwise;         /* k = 1, s = 1, pad = 0: the column matrix is x itself */
} ConvGeometry;

static ConvGeometry conv_geometry(int Cin, int X, int Y, int Z, int k, int s, int pad)
{
    ConvGeometry g = {.Cin = Cin, .X = X, .Y = Y, .Z = Z, .k = k, .s = s, .pad = pad};
    g.Ox = (X + 2 * pad - k) / s + 1;
    g.Oy = (Y + 2 * pad - k) / s + 1;
    g.Oz = (Z + 2 * pad - k) / s + 1;
    g.in_plane = (long)X * Y * Z;
    g.out_plane = (long)g.Ox * g.Oy * g.Oz;
    g.rows = (long)Cin * k * k * k;
    g.pointwise = k == 1 && s == 1 && pad == 0;
    long per_plane = g.rows * g.Oy * g.Oz;
    long planes = COL_BUDGET / (per_plane > 0 ? per_plane : 1);
    g.slab_planes = g.pointwise ? g.Ox : (int)(planes < 1 ? 1 : planes > g.Ox ? g.Ox : planes);
    return g;
}

/* Range of output indices o with 0 <= o*s - pad + kk < n. */
static void valid_range(int kk, int s, int pad, int n, int nout, int *lo, int *hi)
{
    int first = pad - kk > 0 ? (pad - kk + s - 1) / s : 0;
    int last = (n - 1 + pad - kk) >= 0 ? (n - 1 + pad - kk) / s + 1 : 0;
    *lo = first < nout ? first : nout;
    *hi = last < nout ? last : nout;
    if (*hi < *lo) *hi = *lo;
}

/* col[row, ((ox - ox0) Oy + oy) Oz + oz] for output planes [ox0, ox1) of one batch element. */
static void vol2col(float *col, const float *xb, const ConvGeometry *g, int ox0, int ox1)
{
    const int k = g->k, s = g->s, pad = g->pad;
    const long ncols = (long)(ox1 - ox0) * g->Oy * g->Oz;
    #pragma omp parallel for schedule(static)
    for (long row = 0; row < g->rows; row++) {
        int kz = (int)(row % k), ky = (int)(row / k % k), kx = (int)(row / (k * k) % k);
        int ci = (int)(row / ((long)k * k * k));
        const float *xc = xb + ci * g->in_plane;
        float *dst = col + row * ncols;
        int oz_lo, oz_hi;
        valid_range(kz, s, pad, g->Z, g->Oz, &oz_lo, &oz_hi);
        for (int ox = ox0; ox < ox1; ox++) {
            int ix = ox * s - pad + kx;
            for (int oy = 0; oy < g->Oy; oy++) {
                int iy = oy * s - pad + ky;
                float *d = dst + ((long)(ox - ox0) * g->Oy + oy) * g->Oz;
                if (ix < 0 || ix >= g->X || iy < 0 || iy >= g->Y) {
                    memset(d, 0, (size_t)g->Oz * sizeof(float));
                    continue;
                }
                /* input voxel of output oz: line[oz*s + shift] */
                const float *line = xc + ((long)ix * g->Y + iy) * g->Z;
                const int shift = kz - pad;
                for (int oz = 0; oz < oz_lo; oz++) d[oz] = 0.0f;
                if (s == 1 && oz_hi > oz_lo)
                    memcpy(d + oz_lo, line + oz_lo + shift, (size_t)(oz_hi - oz_lo) * sizeof(float));
                else
                    for (int oz = oz_lo; oz < oz_hi; oz++) d[oz] = line[(long)oz * s + shift];
                for (int oz = oz_hi; oz < g->Oz; oz++) d[oz] = 0.0f;
            }
        }
    }
}

/* dxb += col2vol(dcol) for output planes [ox0, ox1). One thread per input channel, so the
 * overlapping kernel offsets of one channel never race. */
static void col2vol_add(float *dxb, const float *dcol, const ConvGeometry *g, int ox0, int ox1)
{
    const int k = g->k, s = g->s, pad = g->pad, k3 = k * k * k;
    const long ncols = (long)(ox1 - ox0) * g->Oy * g->Oz;
    #pragma omp parallel for schedule(static)
    for (int ci = 0; ci < g->Cin; ci++) {
        float *xc = dxb + ci * g->in_plane;
        for (int kk = 0; kk < k3; kk++) {
            int kx = kk / (k * k), ky = kk / k % k, kz = kk % k;
            const float *src = dcol + ((long)ci * k3 + kk) * ncols;
            int oz_lo, oz_hi;
            valid_range(kz, s, pad, g->Z, g->Oz, &oz_lo, &oz_hi);
            for (int ox = ox0; ox < ox1; ox++) {
                int ix = ox * s - pad + kx;
                if (ix < 0 || ix >= g->X) continue;
                for (int oy = 0; oy < g->Oy; oy++) {
                    int iy = oy * s - pad + ky;
                    if (iy < 0 || iy >= g->Y) continue;
                    const float *sr = src + ((long)(ox - ox0) * g->Oy + oy) * g->Oz;
                    float *line = xc + ((long)ix * g->Y + iy) * g->Z;
                    const int shift = kz - pad;
                    for (int oz = oz_lo; oz < oz_hi; oz++) line[(long)oz * s + shift] += sr[oz];
                }
            }
        }
    }
}

/* Every output voxel of every channel starts from its bias. */
static void fill_bias(float *y, const float *b, int B, int C, long V)
{
    #pragma omp parallel for collapse(2) schedule(static) if ((long)B * C * V > CPU_OMP_MIN_ELEMENTS)
    for (int i = 0; i < B; i++)
        for (int c = 0; c < C; c++) {
            float *p = y + ((long)i * C + c) * V;
            for (long v = 0; v < V; v++) p[v] = b[c];
        }
}

void cpu_conv3d_fwd_im2col(float *y, const float *x, const float *W, const float *b, int B, int Cin,
                    int Cout, int X, int Y, int Z, int k, int s, int pad)
{
    ConvGeometry g = conv_geometry(Cin, X, Y, Z, k, s, pad);
    const long plane_cols = (long)g.Oy * g.Oz;
    float beta = 0.0f;
    if (b) {
        fill_bias(y, b, B, Cout, g.out_plane);
        beta = 1.0f;
    }
    float *col = g.pointwise ? NULL
                             : cpu_scratch(CPU_SCRATCH_IM2COL,
                                           (size_t)(g.rows * g.slab_planes * plane_cols));
    for (int bi = 0; bi < B; bi++) {
        const float *xb = x + (long)bi * Cin * g.in_plane;
        float *yb = y + (long)bi * Cout * g.out_plane;
        for (int ox0 = 0; ox0 < g.Ox; ox0 += g.slab_planes) {
            int ox1 = ox0 + g.slab_planes < g.Ox ? ox0 + g.slab_planes : g.Ox;
            long ncols = (ox1 - ox0) * plane_cols;
            const float *slab = xb;
            if (!g.pointwise) {
                vol2col(col, xb, &g, ox0, ox1);
                slab = col;
            }
            cpu_sgemm(0, 0, Cout, (int)ncols, (int)g.rows,
                        1.0f, W, (int)g.rows, slab, (int)ncols, beta, yb + ox0 * plane_cols,
                        (int)g.out_plane);
        }
    }
}

void cpu_conv3d_bwd_im2col(float *dx, float *dW, float *db, const float *dy, const float *x,
                    const float *W, int B, int Cin, int Cout, int X, int Y, int Z, int k, int s,
                    int pad)
{
    ConvGeometry g = conv_geometry(Cin, X, Y, Z, k, s, pad);
    const long plane_cols = (long)g.Oy * g.Oz;
    if (db) cpu_conv_bias_grad(db, dy, B, Cout, g.out_plane);
    if (!dx && !dW) return;
    size_t slab_floats = (size_t)(g.rows * g.slab_planes * plane_cols);
    float *col = (!g.pointwise && dW) ? cpu_scratch(CPU_SCRATCH_IM2COL, slab_floats) : NULL;
    float *dcol = (!g.pointwise && dx) ? cpu_scratch(CPU_SCRATCH_IM2COL_GRAD, slab_floats) : NULL;
    for (int bi = 0; bi < B; bi++) {
        const float *xb = x + (long)bi * Cin * g.in_plane;
        const float *dyb = dy + (long)bi * Cout * g.out_plane;
        float *dxb = dx ? dx + (long)bi * Cin * g.in_plane : NULL;
        if (dxb && !g.pointwise) memset(dxb, 0, (size_t)(Cin * g.in_plane) * sizeof(float));
        for (int ox0 = 0; ox0 < g.Ox; ox0 += g.slab_planes) {
            int ox1 = ox0 + g.slab_planes < g.Ox ? ox0 + g.slab_planes : g.Ox;
            long ncols = (ox1 - ox0) * plane_cols;
            const float *dy_slab = dyb + ox0 * plane_cols;
            if (dW) {
                /* dW += dy_slab col^T */
                const float *slab = xb;
                if (!g.pointwise) {
                    vol2col(col, xb, &g, ox0, ox1);
                    slab = col;
                }
                cpu_sgemm(0, 1, Cout, (int)g.rows,
                            (int)ncols, 1.0f, dy_slab, (int)g.out_plane, slab, (int)ncols, 1.0f,
                            dW, (int)g.rows);
            }
            if (dxb) {
                /* dcol = W^T dy_slab; pointwise: that is dx itself */
                float *target = g.pointwise ? dxb : dcol;
                cpu_sgemm(1, 0, (int)g.rows, (int)ncols,
                            Cout, 1.0f, W, (int)g.rows, dy_slab, (int)g.out_plane, 0.0f, target,
                            (int)ncols);
                if (!g.pointwise) col2vol_add(dxb, dcol, &g, ox0, ox1);
            }
        }
    }
}
