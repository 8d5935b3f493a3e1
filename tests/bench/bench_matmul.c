/* GEMM throughput of the CPU backend at ViT-B/16 shapes (width 768, 12 heads of 64; 576 and
 * 144 tokens = crop 192x192x64 of 16^3 patches, all tokens and the 25% visible ones):
 * backend_cpu()->linear_fwd / linear_bwd / gemm beside plain cblas_sgemm on the same shapes in
 * the same process. Prints GFLOP/s of both and the ratio backend / cblas (1.00 = no overhead).
 * The reference is OpenBLAS with its own threads (as many as OpenMP has); the backend runs
 * OpenBLAS single-threaded and splits GEMMs over the OpenMP threads (src/ops/cpu_blas.c).
 * Times are the best of several repetitions. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/rng.h"
#include "core/timer.h"
#include "ops/backend.h"

enum { WIDTH = 768, HEADS = 12, HEAD_DIM = 64, REPEATS = 5 };

static const AliceBackend *be;
/* OpenBLAS threads of the reference runs (the backend sets 1 for its own calls). */
static int reference_threads;

static float *randn(size_t n)
{
    RngStream s;
    rng_init(&s, 99, 0, (uint32_t)n, RNG_TEST);
    float *x = be->alloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = rng_normal(&s);
    return x;
}

typedef void (*Runner)(void *);

/* Best time of REPEATS runs, each of enough calls to take about 50 ms. */
static double best_seconds(Runner run, void *arg, double flops)
{
    run(arg); /* warm-up: threads started, pages touched */
    int calls = (int)(50e-3 * 50e9 / flops) + 1;
    double best = 1e30;
    for (int r = 0; r < REPEATS; r++) {
        double t0 = wall_seconds();
        for (int c = 0; c < calls; c++) run(arg);
        double dt = (wall_seconds() - t0) / calls;
        if (dt < best) best = dt;
    }
    return best;
}

typedef struct {
    int rows, in, out;
    float *x, *W, *b, *y, *dy, *dx, *dW, *db;
} LinearCase;

static void run_linear_fwd(void *p)
{
    LinearCase *c = p;
    be->linear_fwd(c->y, c->x, c->W, c->b, c->rows, c->in, c->out);
}

static void run_cblas_linear_fwd(void *p)
{
    LinearCase *c = p;
    openblas_set_num_threads(reference_threads);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, c->rows, c->out, c->in, 1.0f, c->x,
                c->in, c->W, c->in, 0.0f, c->y, c->out);
}

static void run_linear_bwd(void *p)
{
    LinearCase *c = p;
    be->linear_bwd(c->dx, c->dW, c->db, c->dy, c->x, c->W, c->rows, c->in, c->out);
}

static void run_cblas_linear_bwd(void *p)
{
    LinearCase *c = p;
    openblas_set_num_threads(reference_threads);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c->rows, c->in, c->out, 1.0f, c->dy,
                c->out, c->W, c->in, 0.0f, c->dx, c->in);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, c->out, c->in, c->rows, 1.0f, c->dy,
                c->out, c->x, c->in, 1.0f, c->dW, c->in);
}

typedef struct {
    int tA, tB, M, N, K, lda, ldb, ldc, batch;
    long sA, sB, sC;
    float *A, *B, *C;
} GemmCase;

static void run_gemm(void *p)
{
    GemmCase *g = p;
    be->gemm(g->tA, g->tB, g->M, g->N, g->K, 1.0f, g->A, g->lda, g->sA, g->B, g->ldb, g->sB,
             0.0f, g->C, g->ldc, g->sC, g->batch);
}

static void run_cblas_gemm(void *p)
{
    GemmCase *g = p;
    openblas_set_num_threads(reference_threads);
    for (int i = 0; i < g->batch; i++)
        cblas_sgemm(CblasRowMajor, g->tA ? CblasTrans : CblasNoTrans,
                    g->tB ? CblasTrans : CblasNoTrans, g->M, g->N, g->K, 1.0f, g->A + i * g->sA,
                    g->lda, g->B + i * g->sB, g->ldb, 0.0f, g->C + i * g->sC, g->ldc);
}

static void row(const char *op, const char *shape, double flops, Runner ours, Runner ref,
                void *arg)
{
    double t_ref = best_seconds(ref, arg, flops);
    double t_ours = best_seconds(ours, arg, flops);
    printf("%-12s %-34s %9.1f %9.1f %7.2f\n", op, shape, flops / t_ours * 1e-9,
           flops / t_ref * 1e-9, t_ref / t_ours);
    fflush(stdout);
}

static void bench_all_shapes(void)
{
    static const int tokens[] = {576, 144};
    static const int linear_shapes[][2] = {{WIDTH, 3 * WIDTH}, {WIDTH, WIDTH}, {WIDTH, 4 * WIDTH},
                                           {4 * WIDTH, WIDTH}};
    for (int t = 0; t < 2; t++) {
        int rows = tokens[t];
        for (int s = 0; s < 4; s++) {
            LinearCase c = {.rows = rows, .in = linear_shapes[s][0], .out = linear_shapes[s][1]};
            c.x = randn((size_t)rows * c.in), c.W = randn((size_t)c.out * c.in);
            c.b = randn(c.out), c.y = randn((size_t)rows * c.out), c.dy = randn((size_t)rows * c.out);
            c.dx = randn((size_t)rows * c.in), c.dW = randn((size_t)c.out * c.in), c.db = randn(c.out);
            char shape[64];
            snprintf(shape, sizeof shape, "%d x %d -> %d", rows, c.in, c.out);
            double flops = 2.0 * rows * c.in * c.out;
            row("linear_fwd", shape, flops, run_linear_fwd, run_cblas_linear_fwd, &c);
            row("linear_bwd", shape, 2 * flops, run_linear_bwd, run_cblas_linear_bwd, &c);
            be->release(c.x), be->release(c.W), be->release(c.b), be->release(c.y);
            be->release(c.dy), be->release(c.dx), be->release(c.dW), be->release(c.db);
        }
        /* Attention scores and context per head, read in place from a packed qkv buffer
         * [T, 3*768] (head h at column h*64): S = Q K^T, then O = P V, batched over heads. */
        float *qkv = randn((size_t)rows * 3 * WIDTH), *S = randn((size_t)HEADS * rows * rows);
        float *O = randn((size_t)rows * WIDTH);
        GemmCase qk = {.tA = 0, .tB = 1, .M = rows, .N = rows, .K = HEAD_DIM, .lda = 3 * WIDTH,
                       .ldb = 3 * WIDTH, .ldc = rows, .batch = HEADS, .sA = HEAD_DIM,
                       .sB = HEAD_DIM, .sC = (long)rows * rows, .A = qkv, .B = qkv + WIDTH, .C = S};
        GemmCase pv = {.tA = 0, .tB = 0, .M = rows, .N = HEAD_DIM, .K = rows, .lda = rows,
                       .ldb = 3 * WIDTH, .ldc = WIDTH, .batch = HEADS, .sA = (long)rows * rows,
                       .sB = HEAD_DIM, .sC = HEAD_DIM, .A = S, .B = qkv + 2 * WIDTH, .C = O};
        char shape[64];
        snprintf(shape, sizeof shape, "12 x (%d x %d x 64) QK^T", rows, rows);
        row("gemm", shape, 2.0 * HEADS * rows * rows * HEAD_DIM, run_gemm, run_cblas_gemm, &qk);
        snprintf(shape, sizeof shape, "12 x (%d x 64 x %d) PV", rows, rows);
        row("gemm", shape, 2.0 * HEADS * rows * rows * HEAD_DIM, run_gemm, run_cblas_gemm, &pv);
        be->release(qkv), be->release(S), be->release(O);
    }
}

int main(void)
{
    be = backend_cpu();
    printf("CPU backend GEMMs at ViT-B/16 shapes beside cblas_sgemm with as many OpenBLAS "
           "threads as OpenMP threads\n");
    printf("%-12s %-34s %9s %9s %7s\n", "op", "shape", "GFLOP/s", "cblas", "ratio");
    /* At all threads, then on one thread, where the ratio is the backend's own overhead
     * free of scheduling effects (on a shared machine the threaded figures vary). */
    int all_threads = omp_get_max_threads();
    for (int pass = 0; pass < (all_threads > 1 ? 2 : 1); pass++) {
        int threads = pass == 0 ? all_threads : 1;
        omp_set_num_threads(threads);
        reference_threads = threads;
        printf("-- %d thread%s\n", threads, threads > 1 ? "s" : "");
        bench_all_shapes();
    }
    return 0;
}
