/* Benchmark inputs on the GPU: uniform values in [lo, hi) from a fixed LCG seed, so every run
 * of a benchmark times the same data (tests/bench/bench_*.c), as fp32 or rounded to bf16 on the
 * host. */
#ifndef ALICE_BENCH_GPU_DATA_H
#define ALICE_BENCH_GPU_DATA_H

#include <stdint.h>
#include <stdlib.h>

#include "ops/backend.h"
#include "ops/bf16.h"

/* The next value of the LCG *seed, uniform in [lo, hi). */
static inline float bench_uniform_next(uint32_t *seed, float lo, float hi)
{
    *seed = *seed * 1664525u + 1013904223u;
    return lo + (hi - lo) * (float)((*seed >> 8) * (1.0 / 16777216.0));
}

static inline float *bench_device_uniform(const AliceBackend *gpu, size_t n, uint32_t seed,
                                          float lo, float hi)
{
    float *h = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = bench_uniform_next(&seed, lo, hi);
    float *d = gpu->alloc(n * sizeof(float));
    gpu->upload(d, h, n * sizeof(float));
    free(h);
    return d;
}

/* The same values rounded to bf16 (nearest even), as bf16 activations hold them. */
static inline bf16_t *bench_device_uniform_bf16(const AliceBackend *gpu, size_t n, uint32_t seed,
                                                float lo, float hi)
{
    bf16_t *h = malloc((n ? n : 1) * sizeof(bf16_t));
    for (size_t i = 0; i < n; i++) h[i] = bf16_from_float(bench_uniform_next(&seed, lo, hi));
    bf16_t *d = gpu->alloc(n * sizeof(bf16_t));
    gpu->upload(d, h, n * sizeof(bf16_t));
    free(h);
    return d;
}

#endif
