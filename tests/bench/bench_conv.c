/* 3D convolution speed of the CPU backend at UNETR shapes (tiny preset: feature size 8 at crop
 * 32^3; paper-like channel counts at lower resolution). conv3d forward and backward (dx + dW)
 * through backend_cpu() -- the direct kernels of src/ops/cpu_conv_direct.c -- beside the same
 * shapes through the vol2col + sgemm path (cpu_conv3d_*_im2col, the previous implementation,
 * kept as the fallback for strided convs); transposed conv (k = s = 2) through the backend
 * beside a plain loop. Prints ms of both and the ratio reference / backend (> 1: backend
 * faster), plus the largest relative difference between the two results. Times are the best
 * of several repetitions. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/timer.h"
#include "ops/backend.h"
#include "ops/cpu_ops.h"

enum { REPEATS = 3 };

static const AliceBackend *be;

static float *randn(size_t n, uint32_t salt)
{
    RngStream s;
    rng_init(&s, 7, 0, salt, RNG_TEST);
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = rng_normal(&s);
    return x;
}

typedef struct {
    const char *what;
    int B, Cin, Cout, X, k, pad;
    float *x, *W, *b, *y, *dy, *dx, *dW, *db;
} ConvCase;

typedef void (*Runner)(ConvCase *);

static double best_ms(Runner run, ConvCase *c)
{
    run(c); /* warm-up: pages touched, scratch grown */
    double best = 1e30;
    for (int r = 0; r < REPEATS; r++) {
        double t0 = wall_seconds();
        run(c);
        double dt = wall_seconds() - t0;
        if (dt < best) best = dt;
    }
    return best * 1e3;
}

static void fwd_backend(ConvCase *c)
{
    be->conv3d_fwd(c->y, c->x, c->W, c->b, c->B, c->Cin, c->Cout, c->X, c->X, c->X, c->k, 1, c->pad);
}
static void fwd_reference(ConvCase *c)
{
    cpu_conv3d_fwd_im2col(c->y, c->x, c->W, c->b, c->B, c->Cin, c->Cout, c->X, c->X, c->X, c->k, 1,
                          c->pad);
}
static void bwd_backend(ConvCase *c)
{
    be->conv3d_bwd(c->dx, c->dW, c->db, c->dy, c->x, c->W, c->B, c->Cin, c->Cout, c->X, c->X, c->X,
                   c->k, 1, c->pad);
}
static void bwd_reference(ConvCase *c)
{
    cpu_conv3d_bwd_im2col(c->dx, c->dW, c->db, c->dy, c->x, c->W, c->B, c->Cin, c->Cout, c->X, c->X,
                          c->X, c->k, 1, c->pad);
}

static void convT_fwd_backend(ConvCase *c)
{
    be->conv_transpose3d_fwd(c->y, c->x, c->W, c->b, c->B, c->Cin, c->Cout, c->X, c->X, c->X, 2);
}
/* y[b, co, 2x+i, 2y+j, 2z+l] = b[co] + sum_ci x[b, ci, x, y, z] W[ci, co, i, j, l] */
static void convT_fwd_reference(ConvCase *c)
{
    const int n = c->X, o = 2 * n;
    const long in_vox = (long)n * n * n, out_vox = (long)o * o * o;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int bi = 0; bi < c->B; bi++)
        for (int co = 0; co < c->Cout; co++) {
            float *yc = c->y + ((long)bi * c->Cout + co) * out_vox;
            for (long v = 0; v < out_vox; v++) yc[v] = c->b[co];
            for (int ci = 0; ci < c->Cin; ci++) {
                const float *xc = c->x + ((long)bi * c->Cin + ci) * in_vox;
                const float *w = c->W + ((long)ci * c->Cout + co) * 8;
                for (int x = 0; x < o; x++)
                    for (int y = 0; y < o; y++)
                        for (int z = 0; z < o; z++)
                            yc[((long)x * o + y) * o + z] +=
                                xc[((long)(x / 2) * n + y / 2) * n + z / 2] * w[(x % 2) * 4 + (y % 2) * 2 + z % 2];
            }
        }
}

static double max_rel_diff(const float *a, const float *b, size_t n)
{
    double scale = 1e-30, diff = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (fabs(b[i]) > scale) scale = fabs(b[i]);
        if (fabs(a[i] - b[i]) > diff) diff = fabs(a[i] - b[i]);
    }
    return diff / scale;
}

static void report(const char *what, const char *op, double ref_ms, double be_ms, double rel)
{
    printf("%-34s %-9s reference %9.2f ms  backend %9.2f ms  ratio %6.2fx  max rel diff %.1e\n",
           what, op, ref_ms, be_ms, ref_ms / be_ms, rel);
}

static void conv_case(const char *what, int B, int Cin, int Cout, int X, int k, int pad)
{
    ConvCase c = {.what = what, .B = B, .Cin = Cin, .Cout = Cout, .X = X, .k = k, .pad = pad};
    const int O = X + 2 * pad - k + 1;
    const size_t nx = (size_t)B * Cin * X * X * X, ny = (size_t)B * Cout * O * O * O;
    const size_t nw = (size_t)Cout * Cin * k * k * k;
    c.x = randn(nx, 1), c.W = randn(nw, 2), c.b = randn(Cout, 3), c.dy = randn(ny, 4);
    c.y = calloc(ny, sizeof(float)), c.dx = calloc(nx, sizeof(float));
    c.dW = calloc(nw, sizeof(float)), c.db = calloc(Cout, sizeof(float));
    float *y_ref = malloc(ny * sizeof(float)), *dx_ref = malloc(nx * sizeof(float));
    float *dW_ref = calloc(nw, sizeof(float));

    double ref = best_ms(fwd_reference, &c);
    memcpy(y_ref, c.y, ny * sizeof(float));
    double fast = best_ms(fwd_backend, &c);
    report(what, "fwd", ref, fast, max_rel_diff(c.y, y_ref, ny));

    /* dW accumulates: compare one call of each from zero */
    ref = best_ms(bwd_reference, &c);
    memcpy(dx_ref, c.dx, nx * sizeof(float));
    memset(c.dW, 0, nw * sizeof(float));
    bwd_reference(&c);
    memcpy(dW_ref, c.dW, nw * sizeof(float));
    fast = best_ms(bwd_backend, &c);
    memset(c.dW, 0, nw * sizeof(float));
    bwd_backend(&c);
    double rel = fmax(max_rel_diff(c.dx, dx_ref, nx), max_rel_diff(c.dW, dW_ref, nw));
    report(what, "bwd", ref, fast, rel);
    free(c.x), free(c.W), free(c.b), free(c.dy), free(c.y), free(c.dx), free(c.dW), free(c.db);
    free(y_ref), free(dx_ref), free(dW_ref);
}

static void convT_case(const char *what, int B, int Cin, int Cout, int X)
{
    ConvCase c = {.what = what, .B = B, .Cin = Cin, .Cout = Cout, .X = X, .k = 2};
    const size_t nx = (size_t)B * Cin * X * X * X, ny = nx / Cin * Cout * 8;
    c.x = randn(nx, 5), c.W = randn((size_t)Cin * Cout * 8, 6), c.b = randn(Cout, 7);
    c.y = calloc(ny, sizeof(float));
    float *y_ref = malloc(ny * sizeof(float));
    double ref = best_ms(convT_fwd_reference, &c);
    memcpy(y_ref, c.y, ny * sizeof(float));
    double fast = best_ms(convT_fwd_backend, &c);
    report(what, "fwd", ref, fast, max_rel_diff(c.y, y_ref, ny));
    free(c.x), free(c.W), free(c.b), free(c.y), free(y_ref);
}

int main(void)
{
    be = backend_cpu();
    printf("conv3d: backend (direct kernels) vs vol2col + sgemm; convT: backend vs plain loop\n");
    conv_case("conv3d k3 B2 1->8 32^3 (enc1)", 2, 1, 8, 32, 3, 1);
    conv_case("conv3d k3 B2 8->8 32^3", 2, 8, 8, 32, 3, 1);
    conv_case("conv3d k3 B2 16->8 32^3 (dec)", 2, 16, 8, 32, 3, 1);
    conv_case("conv3d k1 B2 8->14 32^3 (out)", 2, 8, 14, 32, 1, 0);
    conv_case("conv3d k3 B1 32->16 48^3", 1, 32, 16, 48, 3, 1);
    conv_case("conv3d k3 B2 128->128 8^3", 2, 128, 128, 8, 3, 1);
    convT_case("convT k2 B2 16->8 16^3", 2, 16, 8, 16);
    convT_case("convT k2 B2 96->64 2^3", 2, 96, 64, 2);
    return 0;
}
