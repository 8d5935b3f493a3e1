/* Internal declarations of the CUDA backend. Each cuda_<concern>.cu implements one group;
 * backend_cuda.cu assembles them into the AliceBackend table. Semantics are exactly those
 * documented in src/ops/backend.h (the CPU backend is the reference). */
#ifndef ALICE_CUDA_OPS_H
#define ALICE_CUDA_OPS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "ops/backend.h"  /* DType, bf16_t (the same bits as __nv_bfloat16) */
#ifdef __cplusplus
}
#endif

/* cuda_memory.cu */
void *cuda_alloc(size_t bytes);
void cuda_release(void *p);
void cuda_upload(void *dst, const void *host_src, size_t bytes);
void cuda_download(void *host_dst, const void *src, size_t bytes);
void cuda_copy(void *dst, const void *src, size_t bytes);
void cuda_fill(float *x, float value, size_t n);
void cuda_synchronize(void);

/* cuda_elementwise.cu */
void cuda_axpby(float *y, const float *x, float a, float b, size_t n);
void cuda_scale(float *x, float a, size_t n);
void cuda_add(float *out, const float *a, const float *b, size_t n);
void cuda_add_group_scaled(float *out, const float *base, const float *y, const float *scale,
                           int groups, size_t n);
double cuda_sum_squares(const float *x, size_t n);
void cuda_gelu_fwd(float *y, const float *x, size_t n);
void cuda_gelu_bwd(float *dx, const float *dy, const float *x, size_t n);
void cuda_leaky_relu_fwd(float *y, const float *x, size_t n, float slope);
void cuda_leaky_relu_bwd(float *dx, const float *dy, const float *x, size_t n, float slope);
void cuda_gelu_fwd_bf16(bf16_t *y, const bf16_t *x, size_t n);
void cuda_gelu_bwd_bf16(float *dx, const float *dy, const bf16_t *x, size_t n);

/* cuda_blas.cu */
void cuda_gemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
               long strideA, const float *B, int ldb, long strideB, float beta, float *C, int ldc,
               long strideC, int batch);
void cuda_linear_fwd(float *y, const float *x, const float *W, const float *b, int rows, int in,
                     int out);
void cuda_linear_bwd(float *dx, float *dW, float *db, const float *dy, const float *x,
                     const float *W, int rows, int in, int out);
/* Same GEMM, operands rounded to bf16, fp32 accumulate and output (mixed precision). */
void cuda_gemm_bf16(int transA, int transB, int M, int N, int K, float alpha, const float *A,
                    int lda, long strideA, const float *B, int ldb, long strideB, float beta,
                    float *C, int ldc, long strideC, int batch);
/* db[c] += sum_r dy[r * ld + c] (deterministic). */
void cuda_add_column_sums(float *db, const float *dy, long rows, int cols, long ld);
/* GEMM on bf16 operands (fp32 accumulate) with an fp32 or bf16 C of type c_type (a bf16 C is
 * rounded once from the fp32 result; beta must then be 0). */
void cuda_gemm_bf16_operands(int transA, int transB, int M, int N, int K, float alpha,
                             const bf16_t *A, int lda, long strideA, const bf16_t *B, int ldb,
                             long strideB, float beta, void *C, DType c_type, int ldc,
                             long strideC, int batch);
/* Mixed precision with bf16 activations (backend.h, "bf16 activations"). */
void cuda_linear_fwd_bf16(void *y, DType y_type, const bf16_t *x, const float *W, const float *b,
                          const float *residual, int rows, int in, int out);
void cuda_linear_bwd_bf16(float *dx, float *dW, float *db, const float *dy, const bf16_t *x,
                          const float *W, int rows, int in, int out);
void cuda_linear_gelu_bwd_bf16(float *dx, float *dW, float *db, const float *dy_act,
                               const bf16_t *h, float *dh_scratch, const bf16_t *x,
                               const float *W, int rows, int in, int out);
/* No bias, dy bf16 already: the GEMMs read it as it is (no rounding launch). */
void cuda_linear_bwd_bf16_dy16(float *dx, float *dW, const bf16_t *dy, const bf16_t *x,
                               const float *W, int rows, int in, int out);
/* dx in bf16, rounded in the dx GEMM's store (fp32 dy: db from it; bf16 dy: no bias). */
void cuda_linear_bwd_bf16_dx16(bf16_t *dx, float *dW, float *db, const float *dy, const bf16_t *x,
                               const float *W, int rows, int in, int out);
void cuda_linear_bwd_bf16_dy16_dx16(bf16_t *dx, float *dW, const bf16_t *dy, const bf16_t *x,
                                    const float *W, int rows, int in, int out);
/* cuda_linear_gelu_bwd_bf16 with a bf16 dy_act (widened in the fused pass). */
void cuda_linear_gelu_bwd_bf16_dy16(float *dx, float *dW, float *db, const bf16_t *dy_act,
                                    const bf16_t *h, float *dh_scratch, const bf16_t *x,
                                    const float *W, int rows, int in, int out);
/* The backend's to_bf16: cuda_round_to_bf16 (cuda/cuda_weight_copy.cu), the kernel that makes
 * the weight copies and rounds every fp32 GEMM operand. */
void cuda_to_bf16(bf16_t *y, const float *x, size_t n);

/* cuda_norm.cu */
void cuda_layernorm_fwd(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                        const float *beta, int rows, int dim, float eps);
void cuda_layernorm_bwd(float *dx, const float *dx_residual, float *dgamma, float *dbeta,
                        const float *dy, const float *x, const float *mean, const float *rstd,
                        const float *gamma, int rows, int dim);
void cuda_layernorm_bwd_dx16(float *dx, const float *dx_residual, float *dgamma, float *dbeta,
                             bf16_t *dx_bf16, float *dx_colsum, const float *dy, const float *x,
                             const float *mean, const float *rstd, const float *gamma, int rows,
                             int dim);
void cuda_layernorm_fwd_bf16(bf16_t *y, float *mean, float *rstd, const float *x,
                             const float *gamma, const float *beta, int rows, int dim, float eps);
void cuda_add_layernorm_fwd(float *sum, void *y, DType y_type, float *mean, float *rstd,
                            const float *x, const bf16_t *branch, const float *gamma,
                            const float *beta, int rows, int dim, float eps);
void cuda_softmax_fwd(float *y, const float *x, int rows, int cols);
void cuda_softmax_bwd(float *dx, const float *dy, const float *y, int rows, int cols);
void cuda_instnorm_fwd(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                       const float *beta, int B, int C, long V, float eps);
void cuda_instnorm_bwd(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                       const float *mean, const float *rstd, const float *gamma, int B, int C,
                       long V);
/* cuda_window.cu: sliding-window inference (backend.h sw_*). */
void cuda_sw_gather_window(float *dst, const float *vol, const int pd[3], const int w[3],
                           const int origin[3]);
void cuda_sw_blend_window(float *acc, float *count, const float *logits, const float *imp, int K,
                          const int pd[3], const int w[3], const int origin[3]);
void cuda_sw_finish(uint8_t *labels, float *probs, const float *acc, const float *count, int K,
                    const int pd[3], const int dim[3], const int lo[3]);
/* The fused UNETR res-block passes (backend.h instnorm_lrelu_fwd / _bwd), own kernels. */
void cuda_instnorm_lrelu_fwd(float *y, float *mean, float *rstd, const float *x,
                             const float *gamma, const float *beta, const float *addend, int B,
                             int C, long V, float eps, float slope);
void cuda_instnorm_lrelu_bwd(float *dx, float *dgamma, float *dbeta, const float *dy,
                             const float *act, float slope, const float *x, const float *mean,
                             const float *rstd, const float *gamma, int B, int C, long V);
/* cuda_instnorm_cudnn.cu: the backend's instnorm entries; they run cuDNN's batch norm over
 * the (b, c) planes under gpu_set_instnorm(INSTNORM_KERNEL_CUDNN) where it can, the own kernels
 * above otherwise. */
void cuda_instnorm_fwd_selected(float *y, float *mean, float *rstd, const float *x,
                                const float *gamma, const float *beta, int B, int C, long V,
                                float eps);
void cuda_instnorm_bwd_selected(float *dx, float *dgamma, float *dbeta, const float *dy,
                                const float *x, const float *mean, const float *rstd,
                                const float *gamma, int B, int C, long V);
void cuda_instnorm_lrelu_fwd_selected(float *y, float *mean, float *rstd, const float *x,
                                      const float *gamma, const float *beta, const float *addend,
                                      int B, int C, long V, float eps, float slope);
void cuda_instnorm_lrelu_bwd_selected(float *dx, float *dgamma, float *dbeta, const float *dy,
                                      const float *act, float slope, const float *x,
                                      const float *mean, const float *rstd, const float *gamma,
                                      int B, int C, long V);

/* cuda_attention.cu: the backend's entry points; they run the fused kernels below when
 * cuda_flash_attention_applies(Dh), batched GEMMs with materialised probabilities otherwise
 * (the bf16 entries offer the call to cuDNN first: cuda_cudnn_attention_takes). */
void cuda_attention_fwd(float *out, float *saved, const float *q, const float *k, const float *v,
                        int B, int H, int Tq, int Tk, int Dh, int ldq, int ldkv);
void cuda_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q,
                        const float *k, const float *v, const float *out, const float *saved,
                        int B, int H, int Tq, int Tk, int Dh, int ldq, int ldkv);
/* bf16 q, k, v and out; P, dout and dS rounded to bf16 for the tensor-core products. */
void cuda_attention_fwd_bf16(bf16_t *out, float *saved, const bf16_t *q, const bf16_t *k,
                             const bf16_t *v, int B, int H, int Tq, int Tk, int Dh, int ldq,
                             int ldkv);
void cuda_attention_bwd_bf16(float *dq, float *dk, float *dv, const float *dout, const bf16_t *q,
                             const bf16_t *k, const bf16_t *v, const bf16_t *out,
                             const float *saved, int B, int H, int Tq, int Tk, int Dh, int ldq,
                             int ldkv);
/* The same with bf16 dq, dk, dv, each rounded once from the fp32 value: the flash kernels round
 * in their store; the GEMM path computes fp32 gradients into scratch and rounds them after. */
void cuda_attention_bwd_bf16_grad16(bf16_t *dq, bf16_t *dk, bf16_t *dv, const float *dout,
                                    const bf16_t *q, const bf16_t *k, const bf16_t *v,
                                    const bf16_t *out, const float *saved, int B, int H, int Tq,
                                    int Tk, int Dh, int ldq, int ldkv);
/* The GEMM path's way to bf16 gradients: bwd32 (an attention backward with fp32 gradients,
 * cuda_attention_bwd_bf16's signature) into fp32 stand-ins laid out like dq, dk, dv, then each
 * rounded once into its view. Declared for the host emulation, which runs it with the flash
 * kernels as bwd32 (tests/cuda_emu/flash_attention_emulated.cpp). */
typedef void (*CudaAttentionBwdBf16Fn)(float *dq, float *dk, float *dv, const float *dout,
                                       const bf16_t *q, const bf16_t *k, const bf16_t *v,
                                       const bf16_t *out, const float *saved, int B, int H,
                                       int Tq, int Tk, int Dh, int ldq, int ldkv);
void cuda_attention_bwd_bf16_rounded_after(CudaAttentionBwdBf16Fn bwd32, bf16_t *dq, bf16_t *dk,
                                           bf16_t *dv, const float *dout, const bf16_t *q,
                                           const bf16_t *k, const bf16_t *v, const bf16_t *out,
                                           const float *saved, int B, int H, int Tq, int Tk,
                                           int Dh, int ldq, int ldkv);

/* cuda_flash_attention.cu: fused attention (lse [B, H, Tq] saved instead of probabilities) */
int cuda_flash_attention_applies(int Dh);
/* The kernel gpu_set_attention chose (enum GpuAttentionKernel). */
int cuda_attention_kernel(void);
/* Whether the register-resident bf16 forward takes this head width (forward-only attention
 * uses it whatever kernel is selected: nothing to save, so no backward to match). */
int cuda_flash_fwd_fast(int Dh);
size_t cuda_attention_saved_floats(int B, int H, int Tq, int Tk, int Dh);
void cuda_flash_attention_fwd(float *out, float *lse, const float *q, const float *k,
                              const float *v, int B, int H, int Tq, int Tk, int Dh, int ldq,
                              int ldkv);
void cuda_flash_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q,
                              const float *k, const float *v, const float *out, const float *lse,
                              int B, int H, int Tq, int Tk, int Dh, int ldq, int ldkv);
/* The same kernels reading bf16 q, k, v (and out) directly into their bf16 tiles. */
void cuda_flash_attention_fwd_bf16(bf16_t *out, float *lse, const bf16_t *q, const bf16_t *k,
                                   const bf16_t *v, int B, int H, int Tq, int Tk, int Dh,
                                   int ldq, int ldkv);
void cuda_flash_attention_bwd_bf16(float *dq, float *dk, float *dv, const float *dout,
                                   const bf16_t *q, const bf16_t *k, const bf16_t *v,
                                   const bf16_t *out, const float *lse, int B, int H, int Tq,
                                   int Tk, int Dh, int ldq, int ldkv);
/* ... storing bf16 dq, dk, dv (each rounded once, in the kernels' store). */
void cuda_flash_attention_bwd_bf16_grad16(bf16_t *dq, bf16_t *dk, bf16_t *dv, const float *dout,
                                          const bf16_t *q, const bf16_t *k, const bf16_t *v,
                                          const bf16_t *out, const float *lse, int B, int H,
                                          int Tq, int Tk, int Dh, int ldq, int ldkv);

/* cuda_tokens.cu */
void cuda_patchify(float *patches, const float *vol, int B, int X, int Y, int Z, int p);
void cuda_unpatchify(float *vol, const float *patches, int B, int X, int Y, int Z, int p);
void cuda_gather_rows(float *out, const float *in, const int *idx, int idx_ld, int B, int N,
                      int nsel, int C);
void cuda_patchify_bf16(bf16_t *patches, const float *vol, int B, int X, int Y, int Z, int p);
void cuda_gather_rows_bf16(bf16_t *out, const float *in, const int *idx, int idx_ld, int B, int N,
                           int nsel, int C);
void cuda_scatter_add_rows(float *din, const float *dout, const int *idx, int idx_ld, int B,
                           int N, int nsel, int C);
void cuda_add_table_rows(float *x, const float *table, const int *idx, int idx_ld, int B,
                         int nsel, int C);
void cuda_insert_mask_tokens(float *out, const float *visible, const float *mask_token,
                             const int *perm, int B, int N, int nvis, int C);
void cuda_insert_mask_tokens_bwd(float *dvisible, float *dmask_token, const float *dout,
                                 const int *perm, int B, int N, int nvis, int C);
void cuda_mean_rows_fwd(float *out, const float *in, int B, int T, int C);
void cuda_mean_rows_bwd(float *din, const float *dout, int B, int T, int C);
void cuda_concat_channels(float *out, const float *a, const float *b, int B, int C1, int C2,
                          long V);
void cuda_split_channels(float *da, float *db, const float *dout, int B, int C1, int C2, long V);
void cuda_transpose_tokens(float *out, const float *in, int B, int rows, int cols);

/* cuda_losses.cu */
void cuda_l2norm_fwd(float *y, float *norms, const float *x, int rows, int dim, float eps);
void cuda_l2norm_bwd(float *dx, const float *dy, const float *x, const float *norms, int rows,
                     int dim, float eps);
void cuda_cosine_loss_fwd(float *loss, const float *a, const float *b, int rows, int dim);
void cuda_cosine_loss_bwd(float *da, float *db, const float *a, const float *b, int rows, int dim,
                          float scale);
void cuda_soft_ce_fwd(float *loss, const float *s, const float *t, const float *center, int rows,
                      int dim, float inv_ts, float inv_tt);
void cuda_soft_ce_bwd(float *ds, const float *s, const float *t, const float *center, int rows,
                      int dim, float inv_ts, float inv_tt, float scale);
void cuda_normalize_rows(float *out, const float *x, int rows, int dim, float eps);
void cuda_masked_mse_fwd(float *loss, const float *pred, const float *target, const float *mask,
                         int rows, int dim);
void cuda_masked_mse_bwd(float *dpred, const float *pred, const float *target, const float *mask,
                         int rows, int dim, float scale);
void cuda_dicece_fwd(float *probs, float *values, const float *logits, const int *labels, int B,
                     int K, long V);
void cuda_dicece_bwd(float *dlogits, const float *probs, const int *labels, int B, int K, long V,
                     float w_ce, float w_dice);

/* cuda_optim.cu */
void cuda_adamw(float *param, const float *grad, float *m, float *v, const uint32_t *decay_mask,
                size_t n, AdamwHyper h, float *ema_target, float ema_momentum);
void cuda_ema_update(float *target, const float *online, size_t n, float momentum);
void cuda_clip_segments(float *x, const SegmentPieces *sp, double max_norm);

/* cuda_conv.cu */
void cuda_conv3d_fwd(float *y, const float *x, const float *W, const float *b, int B, int Cin,
                     int Cout, int X, int Y, int Z, int k, int s, int pad);
void cuda_conv3d_bwd(float *dx, float *dW, float *db, const float *dy, const float *x,
                     const float *W, int B, int Cin, int Cout, int X, int Y, int Z, int k, int s,
                     int pad);
void cuda_conv_transpose3d_fwd(float *y, const float *x, const float *W, const float *b, int B,
                               int Cin, int Cout, int X, int Y, int Z, int k);
void cuda_conv_transpose3d_bwd(float *dx, float *dW, float *db, const float *dy, const float *x,
                               const float *W, int B, int Cin, int Cout, int X, int Y, int Z,
                               int k);

#endif
