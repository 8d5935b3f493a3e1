/* Which path the CUDA backend's attention takes for a call, as pure functions of the selected
 * kernel (GpuAttentionKernel, config key attention_kernel), the math mode and the head width:
 * cuda/cuda_flash_attention.cu and cuda/cuda_attention_cudnn.cu decide by them, and
 * tests/unit/test_attention_kernel_key.c checks the whole table without a GPU. Plain C, so gcc
 * and nvcc compile the same rule.
 *
 * AUTO is the default and follows the GPU measurements (H200, tests/gpu/run.sh): bf16 attention
 * forward + backward ran 2.03x faster through cuDNN's fused attention than through the own flash
 * kernels at head width 64 and 1.31x at 32, and the paper step took 16.1 ms with it, 18.2 ms
 * with the own kernels (run 8); the flash kernels in turn beat the GEMM path only on their
 * register-resident bf16 tiles (head widths 32 and 64). So AUTO: cuDNN where the flash kernels'
 * fast tiles would run and the build has cuDNN's attention, else the flash kernels there, the
 * GEMM path everywhere else. */
#ifndef ALICE_ATTENTION_CHOICE_H
#define ALICE_ATTENTION_CHOICE_H

#include "ops/gpu_device.h"

/* Widest head of the flash kernels (wider heads, CASA's single 768-wide one, keep GEMMs). */
enum { ATTN_FLASH_MAX_DH = 128 };

/* Head widths with register-resident tensor-core flash kernels (the fast bf16 tiles). */
static inline int attention_flash_fast(int Dh) { return Dh == 32 || Dh == 64; }

/* 1 when a call saves row logsumexps [B, H, Tq] (the flash kernels, or cuDNN, whose statistics
 * are the same numbers in the same layout), 0 when it saves the probabilities [B, H, Tq, Tk]
 * (the GEMM path). bf16_gemm: the math mode rounds GEMM operands to bf16 (precision = bf16). The
 * arena planner sizes the saved buffer by this (attention_saved_floats), so forward and backward
 * of one call must agree on it, and they do: it depends on nothing they do not share. */
static inline int attention_saves_row_stats(int kernel, int bf16_gemm, int Dh)
{
    if (kernel == ATTN_KERNEL_AUTO) return bf16_gemm && attention_flash_fast(Dh);
    return (kernel == ATTN_KERNEL_FUSED || kernel == ATTN_KERNEL_CUDNN) && Dh >= 1 &&
           Dh <= ATTN_FLASH_MAX_DH;
}

/* Head widths cuDNN's fused attention takes on sm80/sm90: multiples of 8 up to 128. */
static inline int attention_cudnn_head_width(int Dh) { return Dh >= 8 && Dh <= 128 && Dh % 8 == 0; }

/* 1 when a bf16 attention call is offered to cuDNN (its pointer alignment is checked apart, in
 * cuda_cudnn_attention_takes; a call cuDNN then declines runs the flash kernels on the same saved
 * statistics): CUDNN at every head width cuDNN takes; AUTO where it would run the fast flash
 * tiles, if this build has cuDNN's attention (cudnn_built: gpu_cudnn_attention_available());
 * never under GEMM or FUSED. */
static inline int attention_uses_cudnn(int kernel, int bf16_gemm, int Dh, int cudnn_built)
{
    if (!cudnn_built || !attention_cudnn_head_width(Dh)) return 0;
    if (kernel == ATTN_KERNEL_CUDNN) return 1;
    return kernel == ATTN_KERNEL_AUTO && attention_saves_row_stats(kernel, bf16_gemm, Dh);
}

#endif
