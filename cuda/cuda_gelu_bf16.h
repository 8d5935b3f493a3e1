/* The bf16 GELU tables of cuda/cuda_elementwise.cu, C linkage. The forward's per-element
 * formula kernel, for tests/bench/bench_cuda_elementwise.c (a C file) to time beside the
 * backend's gelu_fwd_bf16.
 * The backend op (cuda_gelu_fwd_bf16, cuda/cuda_elementwise.cu) looks every result up in a table
 * of all 65536 bf16 inputs that this same formula filled, so both give the same bits; the
 * formula kernel runs in the backend only while a CUDA graph records before the table exists. */
#ifndef ALICE_CUDA_GELU_BF16_H
#define ALICE_CUDA_GELU_BF16_H

#include <stddef.h>

#include "ops/bf16.h"

#ifdef __cplusplus
extern "C" {
#endif

/* y = bf16(gelu_erf(x)) elementwise (ops/cpu_math.h), evaluated per element on the device. */
void cuda_gelu_fwd_bf16_formula(bf16_t *y, const bf16_t *x, size_t n);

/* The device table of gelu_erf_slope(x) (ops/cpu_math.h) for every bf16 x, indexed by x's bits
 * (65536 floats, filled by the device with that formula alongside the forward's table), for the
 * GELU-fused bias-gradient pass (cuda/cuda_blas.cu): a lookup instead of ~90 fp32 instructions
 * per element, the same bits. NULL while a CUDA graph records before the tables exist (the
 * caller then evaluates the formula). */
const float *cuda_gelu_slope_bf16_table(void);

#ifdef __cplusplus
}
#endif

#endif
