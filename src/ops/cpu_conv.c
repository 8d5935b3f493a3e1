/* CPU backend: 3D convolution (dispatch between the direct kernels of cpu_conv_direct.c and
 * the general vol2col + sgemm path of cpu_conv_im2col.c) and transposed convolution with
 * kernel == stride (one sgemm and a voxel shuffle). Layouts as PyTorch: x [B, Cin, X, Y, Z],
 * conv W [Cout, Cin, k, k, k], transposed-conv W [Cin, Cout, k, k, k]. */
#include "ops/cpu_ops.h"

#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "ops/cpu_scratch.h"

/* db[c] += sum over b and voxels of dy[b, c, :] (double accumulation). */
void cpu_conv_bias_grad(float *db, const float *dy, int B, int C, long V)
{
    #pragma omp parallel for schedule(static) if ((long)B * C * V > CPU_OMP_MIN_ELEMENTS)
    for (int c = 0; c < C; c++) {
        double acc = 0.0;
        for (int b = 0; b < B; b++) {
            const float *p = dy + ((long)b * C + c) * V;
            for (long i = 0; i < V; i++) acc += p[i];
        }
        db[c] += (float)acc;
    }
}

/* The direct kernels win where the GEMM's short side is short: few input channels (forward,
 * the M = Cout side is short and the column matrix costs more than its flops) or few output
 * channels (dx). From tests/bench/bench_conv.c on 2 cores: forward 2.4-3.7x faster up to 16
 * input channels, 0.6-0.8x at 32-128; the pointwise forward is a plain GEMM of x already. */
enum { DIRECT_MAX_CHANNELS = 24 };

static int direct_forward_wins(int Cin, int k) { return k > 1 && Cin <= DIRECT_MAX_CHANNELS; }

void cpu_conv3d_fwd(float *y, const float *x, const float *W, const float *b, int B, int Cin,
                    int Cout, int X, int Y, int Z, int k, int s, int pad)
{
    if (cpu_conv3d_direct_supported(k, s, pad) && direct_forward_wins(Cin, k))
        cpu_conv3d_fwd_direct(y, x, W, b, B, Cin, Cout, X, Y, Z, k, pad);
    else
        cpu_conv3d_fwd_im2col(y, x, W, b, B, Cin, Cout, X, Y, Z, k, s, pad);
}

void cpu_conv3d_bwd(float *dx, float *dW, float *db, const float *dy, const float *x,
                    const float *W, int B, int Cin, int Cout, int X, int Y, int Z, int k, int s,
                    int pad)
{
    /* Wide on both sides (ViT-level decoder convs): the GEMMs are well shaped, dW as well */
    const int wide = Cin > DIRECT_MAX_CHANNELS && Cout > DIRECT_MAX_CHANNELS;
    if (!cpu_conv3d_direct_supported(k, s, pad) || wide) {
        cpu_conv3d_bwd_im2col(dx, dW, db, dy, x, W, B, Cin, Cout, X, Y, Z, k, s, pad);
        return;
    }
    if (db) {
        const long out_vox = (long)(X + 2 * pad - k + 1) * (Y + 2 * pad - k + 1) * (Z + 2 * pad - k + 1);
        cpu_conv_bias_grad(db, dy, B, Cout, out_vox);
    }
    /* dx is the forward kernel run on dy: Cout plays the input channels */
    if (dx && !direct_forward_wins(Cout, k)) {
        cpu_conv3d_bwd_im2col(dx, NULL, NULL, dy, x, W, B, Cin, Cout, X, Y, Z, k, s, pad);
        dx = NULL;
    }
    cpu_conv3d_bwd_direct(dx, dW, dy, x, W, B, Cin, Cout, X, Y, Z, k, pad);
}

/* Between the GEMM result T [Cout*k^3, X*Y*Z] (row (co, i, j, l), column (x, y, z)) and the
 * output volume [Cout, kX, kY, kZ] (voxel (x*k + i, y*k + j, z*k + l)). With out_vol set, T
 * is copied into it adding the bias; otherwise in_vol is gathered back into T. */
static void shuffle_kernel_blocks(float *T, float *out_vol, const float *in_vol,
                                  const float *bias, int Cout, int X, int Y, int Z, int k)
{
    const long P = (long)X * Y * Z, k3 = (long)k * k * k;
    const long OY = (long)k * Y, OZ = (long)k * Z;
    #pragma omp parallel for collapse(2) schedule(static) if (Cout * k3 * P > CPU_OMP_MIN_ELEMENTS)
    for (int co = 0; co < Cout; co++)
        for (int ox = 0; ox < k * X; ox++) {
            int x = ox / k, i = ox % k;
            float bval = bias ? bias[co] : 0.0f;
            for (int oy = 0; oy < OY; oy++) {
                int yy = oy / k, j = (int)(oy % k);
                long vrow = (((long)co * k * X + ox) * OY + oy) * OZ;
                const long tcol = ((long)x * Y + yy) * Z;
                for (int l = 0; l < k; l++) {
                    float *trow = T + ((long)co * k3 + ((long)i * k + j) * k + l) * P + tcol;
                    if (out_vol)
                        for (int z = 0; z < Z; z++) out_vol[vrow + (long)z * k + l] = trow[z] + bval;
                    else
                        for (int z = 0; z < Z; z++) trow[z] = in_vol[vrow + (long)z * k + l];
                }
            }
        }
}

void cpu_conv_transpose3d_fwd(float *y, const float *x, const float *W, const float *b, int B,
                              int Cin, int Cout, int X, int Y, int Z, int k)
{
    const long P = (long)X * Y * Z, rows = (long)Cout * k * k * k;
    float *T = cpu_scratch(CPU_SCRATCH_KERNEL_BLOCKS, (size_t)(rows * P));
    for (int bi = 0; bi < B; bi++) {
        /* T = W^T x_b: W is [Cin, Cout k^3] */
        cpu_sgemm(1, 0, (int)rows, (int)P, Cin, 1.0f, W,
                    (int)rows, x + (long)bi * Cin * P, (int)P, 0.0f, T, (int)P);
        shuffle_kernel_blocks(T, y + (long)bi * rows * P, NULL, b, Cout, X, Y, Z, k);
    }
}

void cpu_conv_transpose3d_bwd(float *dx, float *dW, float *db, const float *dy, const float *x,
                              const float *W, int B, int Cin, int Cout, int X, int Y, int Z,
                              int k)
{
    const long P = (long)X * Y * Z, rows = (long)Cout * k * k * k;
    if (db) cpu_conv_bias_grad(db, dy, B, Cout, rows / Cout * P);
    if (!dx && !dW) return;
    float *dT = cpu_scratch(CPU_SCRATCH_KERNEL_BLOCKS, (size_t)(rows * P));
    for (int bi = 0; bi < B; bi++) {
        shuffle_kernel_blocks(dT, NULL, dy + (long)bi * rows * P, NULL, Cout, X, Y, Z, k);
        if (dx) /* dx_b = W dT */
            cpu_sgemm(0, 0, Cin, (int)P, (int)rows, 1.0f,
                        W, (int)rows, dT, (int)P, 0.0f, dx + (long)bi * Cin * P, (int)P);
        if (dW) /* dW += x_b dT^T */
            cpu_sgemm(0, 1, Cin, (int)rows, (int)P, 1.0f,
                        x + (long)bi * Cin * P, (int)P, dT, (int)P, 1.0f, dW, (int)rows);
    }
}
