/* Benchmark inputs on the GPU: uniform values in [lo, hi) from a fixed LCG seed, so every run
 * of a benchmark times the same data (tests/bench/bench_cuda_*.c). */
#ifndef ALICE_BENCH_GPU_DATA_H
#define ALICE_BENCH_GPU_DATA_H

#include <stdint.h>
#include <stdlib.h>

#include "ops/backend.h"

static inline float *bench_device_uniform(const AliceBackend *gpu, size_t n, uint32_t seed,
                                          float lo, float hi)
{
    float *h = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        h[i] = lo + (hi - lo) * (float)((seed >> 8) * (1.0 / 16777216.0));
    }
    float *d = gpu->alloc(n * sizeof(float));
    gpu->upload(d, h, n * sizeof(float));
    free(h);
    return d;
}

#endif
