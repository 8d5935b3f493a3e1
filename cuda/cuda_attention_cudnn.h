/* bf16 attention through cuDNN's fused scaled-dot-product attention (cuDNN graph API through
 * NVIDIA's header-only cudnn-frontend), selected by gpu_set_attention(ATTN_KERNEL_CUDNN)
 * (config key attention_kernel = cudnn) and by the default ATTN_KERNEL_AUTO at head widths 32
 * and 64 in bf16 (src/ops/attention_choice.h). cuda/cuda_attention.cu's bf16 entry points ask
 * cuda_cudnn_attention_takes() first; every call it declines keeps the flash kernels (which
 * read and write the same saved row logsumexp [B, H, Tq], so forward and backward may even be
 * served by different kernels). Built without the frontend headers (scripts/deps.sh installs
 * them) cuda_cudnn_attention_compiled() is 0 and choosing the kernel is an error
 * (GPU_CUDNN_ATTENTION_MISSING_MSG of src/ops/gpu_device.h). */
#ifndef ALICE_CUDA_ATTENTION_CUDNN_H
#define ALICE_CUDA_ATTENTION_CUDNN_H

#include <stddef.h>

#include "ops/bf16.h"

/* 1 when this build has the cuDNN frontend (the path can run), 0 otherwise. */
int cuda_cudnn_attention_compiled(void);

/* Whether the cuDNN path runs this bf16 attention: attention_uses_cudnn (src/ops/
 * attention_choice.h: ATTN_KERNEL_CUDNN with Dh a multiple of 8 up to 128, or ATTN_KERNEL_AUTO
 * with bf16 GEMMs at Dh 32 or 64, in a build with the frontend), and q, k, v, out and their row
 * strides are 16-byte aligned (cuDNN's requirement for its TMA loads). Depends only on
 * arguments that forward and backward share, so both make the same choice. */
int cuda_cudnn_attention_takes(const bf16_t *q, const bf16_t *k, const bf16_t *v,
                               const bf16_t *out, int Dh, int ldq, int ldkv);

/* The entry points return 1 when cuDNN ran the call, 0 when it declined it without doing
 * anything (this cuDNN builds no graph for the shape: said once per shape with log_warn): the
 * caller then runs the flash kernels, which read and write the same saved statistics.
 *
 * The backend's attention_fwd_bf16 contract (src/ops/backend.h): out [B, Tq, H*Dh] bf16,
 * stats (the row logsumexp of the scaled scores, [B, H, Tq] fp32) into saved unless saved is
 * NULL (forward only: cuDNN's inference graph, no statistics). */
int cuda_cudnn_attention_fwd_bf16(bf16_t *out, float *saved, const bf16_t *q, const bf16_t *k,
                                  const bf16_t *v, int B, int H, int Tq, int Tk, int Dh, int ldq,
                                  int ldkv);
/* attention_bwd_bf16: fp32 dq, dk, dv (any may be NULL) widened from cuDNN's bf16 gradients. */
int cuda_cudnn_attention_bwd_bf16(float *dq, float *dk, float *dv, const float *dout,
                                  const bf16_t *q, const bf16_t *k, const bf16_t *v,
                                  const bf16_t *out, const float *saved, int B, int H, int Tq,
                                  int Tk, int Dh, int ldq, int ldkv);
/* attention_bwd_bf16_grad16: cuDNN writes its bf16 gradients straight into dq, dk, dv; also
 * declines (0) when a destination is not 16-byte aligned. */
int cuda_cudnn_attention_bwd_bf16_grad16(bf16_t *dq, bf16_t *dk, bf16_t *dv, const float *dout,
                                         const bf16_t *q, const bf16_t *k, const bf16_t *v,
                                         const bf16_t *out, const float *saved, int B, int H,
                                         int Tq, int Tk, int Dh, int ldq, int ldkv);

/* For tests without a GPU: builds the graph description of one cuDNN attention call (kind 0
 * forward saving statistics, 1 forward only, 2 backward; strides as the entry points pass them;
 * ld_dq/ld_dk/ld_dv only for backward) exactly as the path does, and runs the frontend's
 * validate() for compute capability sm_version (e.g. 90) instead of asking a device: cuDNN's
 * support surface for those dims, strides and types. 1 when an attempt validates (why = its
 * label), 0 otherwise (why = every attempt's reason; or the missing-headers message). C linkage:
 * tests/unit/test_cudnn_attention_graphs.c calls it. */
#ifdef __cplusplus
extern "C"
#endif
int cuda_cudnn_attention_validate_offline(int kind, int B, int H, int Tq, int Tk, int Dh, int ldq,
                                          int ldkv, int ld_dq, int ld_dk, int ld_dv,
                                          int sm_version, char *why, size_t why_len);

#endif
