/* bf16 copies of the weight buffers (backend weights_hint) for the mixed-precision GEMMs of
 * cuda_blas.cu; see src/ops/weight_copy_map.h for why. Every entry of the backend table that
 * can write a weight buffer keeps the copies honest: the *_weights_aware wrappers mark the
 * copy stale before writing, and AdamW / EMA update fp32 weights and their copy in one pass. */
#ifndef ALICE_CUDA_WEIGHT_COPY_H
#define ALICE_CUDA_WEIGHT_COPY_H

#include <cuda_bf16.h>
#include <stddef.h>

/* out[i] = in[i] rounded to nearest-even bf16 (the one rounding of every bf16 GEMM operand). */
void cuda_round_to_bf16(__nv_bfloat16 *out, const float *in, size_t n);

/* Table entries weights_hint / weights_forget. */
void cuda_weights_hint(const float *data, size_t n);
void cuda_weights_forget(const float *data);

/* The current bf16 copy of the operand [p, p + span_floats) when it lies inside a weight buffer
 * (made first when stale), or NULL: not a weight, or copies switched off. */
const __nv_bfloat16 *cuda_weight_bf16(const float *p, size_t span_floats);

/* Makes every existing copy that is stale current again (one rounding launch each), in
 * stream order: before a graph launch (cuda/cuda_graph.cu), whose recorded GEMMs read the
 * copies without the lazy refresh of cuda_weight_bf16. */
void cuda_weight_copies_refresh(void);

/* For kernels that rewrite all of [p, p + n): the bf16 copy of that range to write alongside,
 * when the copy is current (it then stays current); otherwise NULL, and the copy (if any) is
 * marked stale. */
__nv_bfloat16 *cuda_weight_bf16_for_update(const float *p, size_t n);

/* Memory entries of the table that may write weights: the copy goes stale, then the op. */
void cuda_upload_weights_aware(void *dst, const void *host_src, size_t bytes);
void cuda_copy_weights_aware(void *dst, const void *src, size_t bytes);
void cuda_fill_weights_aware(float *x, float value, size_t n);
void cuda_axpby_weights_aware(float *y, const float *x, float a, float b, size_t n);
void cuda_scale_weights_aware(float *x, float a, size_t n);
void cuda_add_weights_aware(float *out, const float *a, const float *b, size_t n);

#endif
