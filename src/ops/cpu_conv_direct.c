/* CPU backend: direct 3D convolution for stride 1 (every UNETR conv: k 3 pad 1 and k 1 pad 0).
 *
 * Why not vol2col + sgemm (cpu_conv_im2col.c): UNETR's convs have few output channels (8-64)
 * over large volumes, so the GEMM has a short M side; the column matrix is written, packed
 * again by OpenBLAS and read once, and the time goes to memory traffic rather than flops.
 * Here each output row along z is accumulated in vector registers straight from the input:
 *
 *   forward  y[co, ox, oy, z..z+16) += W[co, ci, kx, ky, kz] * x[ci, ix, iy, z+kz-pad ..]
 *            (a tile of CB output channels x 2 vectors of z in registers)
 *   dx       the same kernel on dy with the weights transposed and flipped (stride 1:
 *            dx = conv(dy, W^T flipped, pad k-1-pad))
 *   dW       dot products of dy rows with shifted input rows, a tile of CB channels x k
 *            z-offsets in registers, summed over the whole volume before touching dW.
 *
 * The input is first copied with zero padding along z only (rows of Zs floats), so the z loop
 * has no edge tests; x/y edges are skipped by range. Work is split over (channel block,
 * x-plane) for the outputs and over (input channel, channel block) for dW, so every task
 * writes its own part and the result does not depend on the thread count.
 *
 * The vector type is GCC's generic vector; the kernels are compiled twice (x86-64-v3 with AVX2
 * and FMA, and the build's baseline) and picked at load time (target_clones). */
#pragma GCC optimize("fp-contract=fast")
#include "ops/cpu_ops.h"

#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "ops/cpu_scratch.h"

enum {
    VL = 8,       /* floats per vector */
    CB = 4,       /* output channels per register tile */
    ZT = 2,       /* z-vectors per register tile in the forward kernel */
    KMAX = 3      /* largest kernel the dW tile holds in registers */
};
typedef float vfloat __attribute__((vector_size(32)));

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CONV_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CONV_CLONES
#endif

/* Unaligned vector load (a macro: passing 32-byte vectors by value would change the ABI of
 * the baseline build, which GCC warns about). */
#define VLOAD(dst, p) memcpy(&(dst), (p), sizeof(vfloat))

static inline float vsum(const vfloat *v)
{
    float s = 0.0f;
    for (int i = 0; i < VL; i++) s += (*v)[i];
    return s;
}

int cpu_conv3d_direct_supported(int k, int s, int pad)
{
    return s == 1 && k >= 1 && k <= KMAX && pad >= 0 && pad <= k - 1;
}

/* Row length of the z-padded copy: every z-vector of the output reads k-1 floats past it. */
static long padded_row(int Oz, int k)
{
    return (long)(Oz + VL - 1) / VL * VL + k - 1;
}

/* xz[c, x, y, pad + z] = x[c, x, y, z], zero elsewhere in each row of Zs floats. */
static void pad_rows(float *xz, const float *x, long rows, int Z, int pad, long Zs)
{
    #pragma omp parallel for schedule(static) if (rows * Zs > CPU_OMP_MIN_ELEMENTS)
    for (long r = 0; r < rows; r++) {
        float *dst = xz + r * Zs;
        memset(dst, 0, (size_t)pad * sizeof(float));
        memcpy(dst + pad, x + r * Z, (size_t)Z * sizeof(float));
        memset(dst + pad + Z, 0, (size_t)(Zs - pad - Z) * sizeof(float));
    }
}

/* Weights regrouped as [out block][in][kx][ky][kz][CB] (zero past the last output channel),
 * so a tile's CB weights are adjacent. With transpose_flip the conv's W [Cout, Cin, k^3] is
 * read as the weights of dx = conv(dy, .): out = ci, in = co, kernel offsets reversed. */
static const float *pack_weights(const float *W, int Cout, int Cin, int k, int transpose_flip,
                                 int *blocks)
{
    const int k3 = k * k * k;
    const int O = transpose_flip ? Cin : Cout, I = transpose_flip ? Cout : Cin;
    const int nb = (O + CB - 1) / CB;
    float *wp = cpu_scratch(CPU_SCRATCH_WEIGHTS, (size_t)nb * I * k3 * CB);
    for (int ob = 0; ob < nb; ob++)
        for (int i = 0; i < I; i++)
            for (int kk = 0; kk < k3; kk++)
                for (int c = 0; c < CB; c++) {
                    int o = ob * CB + c;
                    float v = 0.0f;
                    if (o < O)
                        v = transpose_flip ? W[((long)i * Cin + o) * k3 + (k3 - 1 - kk)]
                                           : W[((long)o * Cin + i) * k3 + kk];
                    wp[(((long)ob * I + i) * k3 + kk) * CB + c] = v;
                }
    *blocks = nb;
    return wp;
}

/* Range [lo, hi) of kernel offsets kk with 0 <= o - pad + kk < n. */
static void kernel_range(int o, int pad, int k, int n, int *lo, int *hi)
{
    *lo = pad - o > 0 ? pad - o : 0;
    *hi = n + pad - o < k ? n + pad - o : k;
}

/* One batch element of a stride-1 conv: z-padded input [Cin, X, Y, Zs] -> y [Cout, Ox, Oy, Oz]. */
typedef struct {
    const float *xz;
    int Cin, X, Y;
    long Zs;
    const float *wp;       /* packed weights */
    const float *bias;     /* [Cout] or NULL */
    float *y;
    int Cout, Ox, Oy, Oz;
    int k, pad;
} DirectConv;

/* y tile: channels [cb*CB, +CB) x z [z0, z0 + nz) of row (ox, oy), nz <= nvec * VL. */
static inline __attribute__((always_inline)) void
forward_tile(const DirectConv *c, int cb, int ox, int oy, int z0, int nz, const int nvec)
{
    const int k = c->k, k3 = k * k * k;
    vfloat acc[CB][ZT];
    #pragma GCC unroll 4
    for (int j = 0; j < CB; j++) {
        int co = cb * CB + j;
        float b0 = c->bias && co < c->Cout ? c->bias[co] : 0.0f;
        #pragma GCC unroll 2
        for (int t = 0; t < nvec; t++) acc[j][t] = (vfloat){0} + b0;
    }
    int kx_lo, kx_hi, ky_lo, ky_hi;
    kernel_range(ox, c->pad, k, c->X, &kx_lo, &kx_hi);
    kernel_range(oy, c->pad, k, c->Y, &ky_lo, &ky_hi);
    for (int ci = 0; ci < c->Cin; ci++) {
        const float *wci = c->wp + ((long)cb * c->Cin + ci) * k3 * CB;
        for (int kx = kx_lo; kx < kx_hi; kx++) {
            const int ix = ox - c->pad + kx;
            for (int ky = ky_lo; ky < ky_hi; ky++) {
                const int iy = oy - c->pad + ky;
                const float *row = c->xz + (((long)ci * c->X + ix) * c->Y + iy) * c->Zs + z0;
                const float *w = wci + ((long)kx * k + ky) * k * CB;
                for (int kz = 0; kz < k; kz++) {
                    vfloat v[ZT];
                    #pragma GCC unroll 2
                    for (int t = 0; t < nvec; t++) VLOAD(v[t], row + kz + t * VL);
                    #pragma GCC unroll 4
                    for (int j = 0; j < CB; j++) {
                        const float wj = w[kz * CB + j];
                        #pragma GCC unroll 2
                        for (int t = 0; t < nvec; t++) acc[j][t] += wj * v[t];
                    }
                }
            }
        }
    }
    for (int j = 0; j < CB; j++) {
        int co = cb * CB + j;
        if (co >= c->Cout) break;
        float *dst = c->y + (((long)co * c->Ox + ox) * c->Oy + oy) * c->Oz + z0;
        if (nz == nvec * VL) {
            memcpy(dst, acc[j], (size_t)nz * sizeof(float));
        } else {
            float tmp[ZT * VL];
            memcpy(tmp, acc[j], (size_t)nvec * VL * sizeof(float));
            memcpy(dst, tmp, (size_t)nz * sizeof(float));
        }
    }
}

CONV_CLONES static void forward_plane(const DirectConv *c, int cb, int ox)
{
    for (int oy = 0; oy < c->Oy; oy++) {
        int z0 = 0;
        for (; z0 + ZT * VL <= c->Oz; z0 += ZT * VL) forward_tile(c, cb, ox, oy, z0, ZT * VL, ZT);
        for (; z0 < c->Oz; z0 += VL) {
            int nz = c->Oz - z0 < VL ? c->Oz - z0 : VL;
            forward_tile(c, cb, ox, oy, z0, nz, 1);
        }
    }
}

static void forward_all_planes(const DirectConv *c, int blocks)
{
    const int tasks = blocks * c->Ox;
    #pragma omp parallel for schedule(dynamic, 1)
    for (int t = 0; t < tasks; t++) forward_plane(c, t / c->Ox, t % c->Ox);
}

void cpu_conv3d_fwd_direct(float *y, const float *x, const float *W, const float *b, int B,
                           int Cin, int Cout, int X, int Y, int Z, int k, int pad)
{
    const int Ox = X + 2 * pad - k + 1, Oy = Y + 2 * pad - k + 1, Oz = Z + 2 * pad - k + 1;
    const long Zs = padded_row(Oz, k), in_vox = (long)X * Y * Z, out_vox = (long)Ox * Oy * Oz;
    int blocks;
    const float *wp = pack_weights(W, Cout, Cin, k, 0, &blocks);
    float *xz = cpu_scratch(CPU_SCRATCH_PADDED_IN, (size_t)Cin * X * Y * Zs);
    for (int bi = 0; bi < B; bi++) {
        pad_rows(xz, x + (long)bi * Cin * in_vox, (long)Cin * X * Y, Z, pad, Zs);
        DirectConv c = {.xz = xz, .Cin = Cin, .X = X, .Y = Y, .Zs = Zs, .wp = wp, .bias = b,
                        .y = y + (long)bi * Cout * out_vox, .Cout = Cout, .Ox = Ox, .Oy = Oy,
                        .Oz = Oz, .k = k, .pad = pad};
        forward_all_planes(&c, blocks);
    }
}

/* ---- dW ------------------------------------------------------------------------------------ */

/* One batch element: dW[co, ci, :] += sum over the volume of dy[co] times shifted x[ci]. */
typedef struct {
    const float *xz;       /* z-padded input [Cin, X, Y, Zs] (pad of the conv) */
    const float *dy;       /* [Cout, Ox, Oy, Oz] */
    float *dW;
    int Cin, X, Y;
    long Zs;
    int Cout, Ox, Oy, Oz;
    int k, pad;
} DirectGrad;

static inline __attribute__((always_inline)) void
weight_grad_tile(const DirectGrad *g, int ci, int cb, int kx, int ky, const int k)
{
    const int nc = g->Cout - cb * CB < CB ? g->Cout - cb * CB : CB;
    const int zfull = g->Oz / VL * VL;
    vfloat acc[CB][KMAX];
    float tail[CB][KMAX];
    for (int j = 0; j < CB; j++)
        for (int kz = 0; kz < KMAX; kz++) {
            acc[j][kz] = (vfloat){0};
            tail[j][kz] = 0.0f;
        }
    int ox_lo = kx > g->pad ? 0 : g->pad - kx, ox_hi = g->X + g->pad - kx;
    int oy_lo = ky > g->pad ? 0 : g->pad - ky, oy_hi = g->Y + g->pad - ky;
    if (ox_hi > g->Ox) ox_hi = g->Ox;
    if (oy_hi > g->Oy) oy_hi = g->Oy;
    const long dy_chan = (long)g->Ox * g->Oy * g->Oz;
    for (int ox = ox_lo; ox < ox_hi; ox++)
        for (int oy = oy_lo; oy < oy_hi; oy++) {
            const int ix = ox - g->pad + kx, iy = oy - g->pad + ky;
            const float *xrow = g->xz + (((long)ci * g->X + ix) * g->Y + iy) * g->Zs;
            const float *dyrow = g->dy + (((long)cb * CB * g->Ox + ox) * g->Oy + oy) * g->Oz;
            for (int z = 0; z < zfull; z += VL) {
                vfloat xv[KMAX];
                #pragma GCC unroll 3
                for (int kz = 0; kz < k; kz++) VLOAD(xv[kz], xrow + z + kz);
                #pragma GCC unroll 4
                for (int j = 0; j < CB; j++) {
                    if (j >= nc) break;
                    vfloat d;
                    VLOAD(d, dyrow + j * dy_chan + z);
                    #pragma GCC unroll 3
                    for (int kz = 0; kz < k; kz++) acc[j][kz] += d * xv[kz];
                }
            }
            for (int z = zfull; z < g->Oz; z++)
                for (int j = 0; j < nc; j++)
                    for (int kz = 0; kz < k; kz++)
                        tail[j][kz] += dyrow[j * dy_chan + z] * xrow[z + kz];
        }
    for (int j = 0; j < nc; j++) {
        float *dw = g->dW + ((((long)(cb * CB + j) * g->Cin + ci) * k + kx) * k + ky) * k;
        for (int kz = 0; kz < k; kz++) dw[kz] += vsum(&acc[j][kz]) + tail[j][kz];
    }
}

CONV_CLONES static void weight_grad_task(const DirectGrad *g, int ci, int cb)
{
    for (int kx = 0; kx < g->k; kx++)
        for (int ky = 0; ky < g->k; ky++) {
            if (g->k == 3) weight_grad_tile(g, ci, cb, kx, ky, 3);
            else if (g->k == 1) weight_grad_tile(g, ci, cb, kx, ky, 1);
            else weight_grad_tile(g, ci, cb, kx, ky, 2);
        }
}

static void weight_grad_all(const DirectGrad *g)
{
    const int blocks = (g->Cout + CB - 1) / CB, tasks = g->Cin * blocks;
    #pragma omp parallel for schedule(dynamic, 1)
    for (int t = 0; t < tasks; t++) weight_grad_task(g, t / blocks, t % blocks);
}

void cpu_conv3d_bwd_direct(float *dx, float *dW, const float *dy, const float *x, const float *W,
                           int B, int Cin, int Cout, int X, int Y, int Z, int k, int pad)
{
    const int Ox = X + 2 * pad - k + 1, Oy = Y + 2 * pad - k + 1, Oz = Z + 2 * pad - k + 1;
    const long in_vox = (long)X * Y * Z, out_vox = (long)Ox * Oy * Oz;
    if (dW) {
        const long Zs = padded_row(Oz, k);
        float *xz = cpu_scratch(CPU_SCRATCH_PADDED_IN, (size_t)Cin * X * Y * Zs);
        for (int bi = 0; bi < B; bi++) {
            pad_rows(xz, x + (long)bi * Cin * in_vox, (long)Cin * X * Y, Z, pad, Zs);
            DirectGrad g = {.xz = xz, .dy = dy + (long)bi * Cout * out_vox, .dW = dW, .Cin = Cin,
                            .X = X, .Y = Y, .Zs = Zs, .Cout = Cout, .Ox = Ox, .Oy = Oy, .Oz = Oz,
                            .k = k, .pad = pad};
            weight_grad_all(&g);
        }
    }
    if (dx) {
        /* dx = conv(dy, W^T flipped) with pad k-1-pad: its output is X x Y x Z again. */
        const int tpad = k - 1 - pad;
        const long Zs = padded_row(Z, k);
        int blocks;
        const float *wp = pack_weights(W, Cout, Cin, k, 1, &blocks);
        float *dyz = cpu_scratch(CPU_SCRATCH_PADDED_DY, (size_t)Cout * Ox * Oy * Zs);
        for (int bi = 0; bi < B; bi++) {
            pad_rows(dyz, dy + (long)bi * Cout * out_vox, (long)Cout * Ox * Oy, Oz, tpad, Zs);
            DirectConv c = {.xz = dyz, .Cin = Cout, .X = Ox, .Y = Oy, .Zs = Zs, .wp = wp,
                            .bias = NULL, .y = dx + (long)bi * Cin * in_vox, .Cout = Cin,
                            .Ox = X, .Oy = Y, .Oz = Z, .k = k, .pad = tpad};
            forward_all_planes(&c, blocks);
        }
    }
}
