/* The timing scaffold of the benchmarks (tests/bench/bench_*.c): seconds per call between two
 * synchronisations of the backend, the "unfused vs fused" table of the fusion benchmarks, and
 * the skip line of a benchmark that finds no GPU. Figures are times and ratios measured in one
 * run; nothing asserts a time. */
#ifndef ALICE_BENCH_GPU_TIMING_H
#define ALICE_BENCH_GPU_TIMING_H

#include <stdio.h>

#include "core/timer.h"
#include "ops/backend.h"
#include "ops/gpu_device.h"

/* One call of the code timed: arg its inputs, variant which way it runs (e.g. BENCH_UNFUSED or
 * BENCH_FUSED), index the call's number, counting the warm-up calls from 0 (e.g. an optimiser's
 * step). */
typedef void (*BenchCall)(const void *arg, int variant, int index);

/* Wall-clock seconds per call: warmup calls, then iters calls between two synchronisations of
 * be, so launch overheads count as they do in a training step. */
static inline double bench_seconds_per_call(const AliceBackend *be, BenchCall call,
                                            const void *arg, int variant, int warmup, int iters)
{
    for (int i = 0; i < warmup; i++) call(arg, variant, i);
    be->synchronize();
    const double t0 = wall_seconds();
    for (int i = 0; i < iters; i++) call(arg, variant, warmup + i);
    be->synchronize();
    return (wall_seconds() - t0) / iters;
}

/* ---- the fusion table: unfused and fused variants of one call, timed in the same run ----
 * A header line "<title> <unfused column> <fused column> ratio", then one row per shape
 * "<name> unfused_ms fused_ms unfused/fused" (tests/gpu/run.sh reads the last three columns;
 * a ratio above 1: the fusion pays). */
enum { BENCH_UNFUSED, BENCH_FUSED };

/* The shape of a row: rows x in -> out for a linear layer, rows x out for a LayerNorm (in
 * unused). */
typedef struct {
    const char *name;
    int rows, in, out;
} BenchShape;

static inline void bench_fusion_header(const char *title, const char *unfused_column,
                                       const char *fused_column)
{
    printf("%-22s %13s %11s %8s\n", title, unfused_column, fused_column, "ratio");
}

/* A row of two variants' times (seconds, printed in ms) and their ratio a / b. */
static inline void bench_pair_print(const char *name, double a, double b)
{
    printf("%-22s %13.4f %11.4f %8.2f\n", name, 1e3 * a, 1e3 * b, a / b);
}

/* Times variants a and b of one call and prints their row; their seconds through *a_s, *b_s
 * (either may be NULL). */
static inline void bench_pair_row(const AliceBackend *gpu, const char *name, BenchCall call,
                                  const void *arg, int variant_a, int variant_b, int warmup,
                                  int iters, double *a_s, double *b_s)
{
    const double a = bench_seconds_per_call(gpu, call, arg, variant_a, warmup, iters);
    const double b = bench_seconds_per_call(gpu, call, arg, variant_b, warmup, iters);
    bench_pair_print(name, a, b);
    if (a_s) *a_s = a;
    if (b_s) *b_s = b;
}

static inline void bench_fusion_row(const AliceBackend *gpu, const char *name, BenchCall call,
                                    const void *arg, int warmup, int iters)
{
    bench_pair_row(gpu, name, call, arg, BENCH_UNFUSED, BENCH_FUSED, warmup, iters, NULL, NULL);
}

/* ---- no GPU: the benchmark prints a "skip" line and exits 0 ---- */
#ifdef ALICE_CUDA
/* The CUDA backend, or NULL (after the skip line) where no device is visible. */
static inline const AliceBackend *bench_gpu_or_skip(void)
{
    if (gpu_device_count() == 0) {
        printf("skip: no GPU visible; nothing to benchmark\n");
        return NULL;
    }
    return backend_cuda();
}
#endif

/* The whole main() of a GPU benchmark built without CUDA. */
static inline int bench_skip_without_cuda(void)
{
    printf("skip: no GPU (built without CUDA); nothing to benchmark\n");
    return 0;
}

#endif
