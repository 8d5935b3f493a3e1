/* Internal declarations of the CPU backend (OpenMP + OpenBLAS). Each cpu_<concern>.c file
 * implements one group; cpu_backend.c assembles them into the AliceBackend table. The
 * semantics of every function are those documented in ops/backend.h. */
#ifndef ALICE_CPU_OPS_H
#define ALICE_CPU_OPS_H

#include <stddef.h>

#include "ops/backend.h" /* DType, bf16_t */

/* Below this many elements an elementwise loop runs on one thread: starting an OpenMP team
 * costs more than the loop. */
#define CPU_OMP_MIN_ELEMENTS 32768

/* OpenBLAS runs single-threaded inside this backend: every parallel GEMM is split across the
 * OpenMP threads instead (cpu_blas.c says why). Called before any sgemm from this backend;
 * a no-op for OpenBLAS's OpenMP build, cheap for the pthread build once set. */
void cpu_blas_single_thread(void);
/* One GEMM (row-major, as cblas_sgemm) on all OpenMP threads, or on the calling thread when
 * small or already inside a parallel region. */
void cpu_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc);

/* cpu_memory.c */
void *cpu_alloc(size_t bytes);
void cpu_release(void *p);
void cpu_upload(void *dst, const void *host_src, size_t bytes);
void cpu_download(void *host_dst, const void *src, size_t bytes);
void cpu_copy(void *dst, const void *src, size_t bytes);
void cpu_fill(float *x, float value, size_t n);
void cpu_synchronize(void);
/* The CPU GEMMs read fp32 weights directly: nothing to keep. */
void cpu_weights_hint(const float *data, size_t n);
void cpu_weights_forget(const float *data);

/* cpu_elementwise.c */
void cpu_axpby(float *y, const float *x, float a, float b, size_t n);
void cpu_scale(float *x, float a, size_t n);
void cpu_add(float *out, const float *a, const float *b, size_t n);
void cpu_add_group_scaled(float *out, const float *base, const float *y, const float *scale,
                          int groups, size_t n);
double cpu_sum_squares(const float *x, size_t n);

/* cpu_blas.c */
void cpu_gemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
              long strideA, const float *B, int ldb, long strideB, float beta, float *C, int ldc,
              long strideC, int batch);
void cpu_linear_fwd(float *y, const float *x, const float *W, const float *b, int rows, int in,
                    int out);
void cpu_linear_bwd(float *dx, float *dW, float *db, const float *dy, const float *x,
                    const float *W, int rows, int in, int out);
/* db[c] += sum over rows of dy[r * ld + c] for c < cols, accumulated in double; deterministic
 * for a given thread count. Shared by linear, insert_mask_tokens and conv biases. */
void cpu_add_column_sums(float *db, const float *dy, long rows, int cols, long ld);

/* cpu_norm.c */
void cpu_layernorm_fwd(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                       const float *beta, int rows, int dim, float eps);
void cpu_layernorm_bwd(float *dx, const float *dx_residual, float *dgamma, float *dbeta,
                       const float *dy, const float *x, const float *mean, const float *rstd,
                       const float *gamma, int rows, int dim);
void cpu_layernorm_bwd_dx16(float *dx, const float *dx_residual, float *dgamma, float *dbeta,
                            bf16_t *dx_bf16, float *dx_colsum, const float *dy, const float *x,
                            const float *mean, const float *rstd, const float *gamma, int rows,
                            int dim);
void cpu_instnorm_fwd(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                      const float *beta, int B, int C, long V, float eps);
void cpu_instnorm_bwd(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                      const float *mean, const float *rstd, const float *gamma, int B, int C,
                      long V);
void cpu_instnorm_lrelu_fwd(float *y, float *mean, float *rstd, const float *x,
                            const float *gamma, const float *beta, const float *addend, int B,
                            int C, long V, float eps, float slope);
void cpu_instnorm_lrelu_bwd(float *dx, float *dgamma, float *dbeta, const float *dy,
                            const float *act, float slope, const float *x, const float *mean,
                            const float *rstd, const float *gamma, int B, int C, long V);

/* cpu_window.c */
void cpu_sw_gather_window(float *dst, const float *vol, const int pd[3], const int w[3],
                          const int origin[3]);
void cpu_sw_blend_window(float *acc, float *count, const float *logits, const float *imp, int K,
                         const int pd[3], const int w[3], const int origin[3]);
void cpu_sw_finish(uint8_t *labels, float *probs, const float *acc, const float *count, int K,
                   const int pd[3], const int dim[3], const int lo[3]);

/* cpu_activation.c */
void cpu_gelu_fwd(float *y, const float *x, size_t n);
void cpu_gelu_bwd(float *dx, const float *dy, const float *x, size_t n);
void cpu_softmax_fwd(float *y, const float *x, int rows, int cols);
void cpu_softmax_bwd(float *dx, const float *dy, const float *y, int rows, int cols);
void cpu_leaky_relu_fwd(float *y, const float *x, size_t n, float slope);
void cpu_leaky_relu_bwd(float *dx, const float *dy, const float *x, size_t n, float slope);
/* In-place softmax of one row (shared with attention). */
void cpu_softmax_row(float *row, int cols);

/* cpu_attention.c; probs may be NULL in forward (forward only: nothing saved) */
void cpu_attention_fwd(float *out, float *probs, const float *q, const float *k, const float *v,
                       int B, int H, int Tq, int Tk, int Dh, int ldq, int ldkv);
void cpu_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q,
                       const float *k, const float *v, const float *out, const float *probs, int B,
                       int H, int Tq, int Tk, int Dh, int ldq, int ldkv);
/* probs [B, H, Tq, Tk] */
size_t cpu_attention_saved_floats(int B, int H, int Tq, int Tk, int Dh);

/* cpu_tokens.c */
void cpu_patchify(float *patches, const float *vol, int B, int X, int Y, int Z, int p);
void cpu_unpatchify(float *vol, const float *patches, int B, int X, int Y, int Z, int p);
void cpu_gather_rows(float *out, const float *in, const int *idx, int idx_ld, int B, int N,
                     int nsel, int C);
void cpu_patchify_bf16(bf16_t *patches, const float *vol, int B, int X, int Y, int Z, int p);
void cpu_gather_rows_bf16(bf16_t *out, const float *in, const int *idx, int idx_ld, int B, int N,
                          int nsel, int C);
void cpu_scatter_add_rows(float *din, const float *dout, const int *idx, int idx_ld, int B,
                          int N, int nsel, int C);
void cpu_add_table_rows(float *x, const float *table, const int *idx, int idx_ld, int B,
                        int nsel, int C);
void cpu_insert_mask_tokens(float *out, const float *visible, const float *mask_token,
                            const int *perm, int B, int N, int nvis, int C);
void cpu_insert_mask_tokens_bwd(float *dvisible, float *dmask_token, const float *dout,
                                const int *perm, int B, int N, int nvis, int C);
void cpu_mean_rows_fwd(float *out, const float *in, int B, int T, int C);
void cpu_mean_rows_bwd(float *din, const float *dout, int B, int T, int C);
void cpu_concat_channels(float *out, const float *a, const float *b, int B, int C1, int C2,
                         long V);
void cpu_split_channels(float *da, float *db, const float *dout, int B, int C1, int C2, long V);
void cpu_transpose_tokens(float *out, const float *in, int B, int rows, int cols);

/* cpu_losses.c */
void cpu_l2norm_fwd(float *y, float *norms, const float *x, int rows, int dim, float eps);
void cpu_l2norm_bwd(float *dx, const float *dy, const float *x, const float *norms, int rows,
                    int dim, float eps);
void cpu_cosine_loss_fwd(float *loss, const float *a, const float *b, int rows, int dim);
void cpu_cosine_loss_bwd(float *da, float *db, const float *a, const float *b, int rows,
                         int dim, float scale);
void cpu_soft_ce_fwd(float *loss, const float *s, const float *t, const float *center, int rows,
                     int dim, float inv_ts, float inv_tt);
void cpu_soft_ce_bwd(float *ds, const float *s, const float *t, const float *center, int rows,
                     int dim, float inv_ts, float inv_tt, float scale);
void cpu_normalize_rows(float *out, const float *x, int rows, int dim, float eps);
void cpu_masked_mse_fwd(float *loss, const float *pred, const float *target, const float *mask,
                        int rows, int dim);
void cpu_masked_mse_bwd(float *dpred, const float *pred, const float *target, const float *mask,
                        int rows, int dim, float scale);

/* cpu_optim.c */
void cpu_adamw(float *param, const float *grad, float *m, float *v, const uint32_t *decay_mask,
               size_t n, AdamwHyper h, float *ema_target, float ema_momentum);
void cpu_ema_update(float *target, const float *online, size_t n, float momentum);
void cpu_clip_segments(float *x, const SegmentPieces *sp, double max_norm);

/* cpu_conv.c */
void cpu_conv3d_fwd(float *y, const float *x, const float *W, const float *b, int B, int Cin,
                    int Cout, int X, int Y, int Z, int k, int s, int pad);
void cpu_conv3d_bwd(float *dx, float *dW, float *db, const float *dy, const float *x,
                    const float *W, int B, int Cin, int Cout, int X, int Y, int Z, int k, int s,
                    int pad);
void cpu_conv_transpose3d_fwd(float *y, const float *x, const float *W, const float *b, int B,
                              int Cin, int Cout, int X, int Y, int Z, int k);
void cpu_conv_transpose3d_bwd(float *dx, float *dW, float *db, const float *dy, const float *x,
                              const float *W, int B, int Cin, int Cout, int X, int Y, int Z,
                              int k);
/* db[c] += sum over b and voxels of dy[b, c, :] (accumulated in double). */
void cpu_conv_bias_grad(float *db, const float *dy, int B, int C, long V);

/* cpu_conv_im2col.c: conv3d of any geometry (vol2col + sgemm); the fallback and the benchmark's
 * reference. Same semantics as cpu_conv3d_fwd / _bwd. */
void cpu_conv3d_fwd_im2col(float *y, const float *x, const float *W, const float *b, int B,
                           int Cin, int Cout, int X, int Y, int Z, int k, int s, int pad);
void cpu_conv3d_bwd_im2col(float *dx, float *dW, float *db, const float *dy, const float *x,
                           const float *W, int B, int Cin, int Cout, int X, int Y, int Z, int k,
                           int s, int pad);

/* cpu_conv_direct.c: direct conv3d for stride 1, k <= 3, pad <= k - 1 (every UNETR conv),
 * vectorised over z. Same semantics as cpu_conv3d_fwd / _bwd except that db is not touched. */
int cpu_conv3d_direct_supported(int k, int s, int pad);
void cpu_conv3d_fwd_direct(float *y, const float *x, const float *W, const float *b, int B,
                           int Cin, int Cout, int X, int Y, int Z, int k, int pad);
void cpu_conv3d_bwd_direct(float *dx, float *dW, const float *dy, const float *x, const float *W,
                           int B, int Cin, int Cout, int X, int Y, int Z, int k, int pad);

/* cpu_seg.c */
void cpu_dicece_fwd(float *probs, float *values, const float *logits, const int *labels, int B,
                    int K, long V);
void cpu_dicece_bwd(float *dlogits, const float *probs, const int *labels, int B, int K, long V,
                    float w_ce, float w_dice);

/* cpu_bf16.c: the mixed-precision ops (bf16 activations), the fp32 ops above run on widened
 * inputs and bf16-rounded GEMM operands; outputs rounded once. */
void cpu_linear_fwd_bf16(void *y, DType y_type, const bf16_t *x, const float *W, const float *b,
                         const float *residual, int rows, int in, int out);
void cpu_linear_bwd_bf16(float *dx, float *dW, float *db, const float *dy, const bf16_t *x,
                         const float *W, int rows, int in, int out);
void cpu_layernorm_fwd_bf16(bf16_t *y, float *mean, float *rstd, const float *x,
                            const float *gamma, const float *beta, int rows, int dim, float eps);
void cpu_add_layernorm_fwd(float *sum, void *y, DType y_type, float *mean, float *rstd,
                           const float *x, const bf16_t *branch, const float *gamma,
                           const float *beta, int rows, int dim, float eps);
void cpu_gelu_fwd_bf16(bf16_t *y, const bf16_t *x, size_t n);
void cpu_gelu_bwd_bf16(float *dx, const float *dy, const bf16_t *x, size_t n);
void cpu_linear_gelu_bwd_bf16(float *dx, float *dW, float *db, const float *dy_act,
                              const bf16_t *h, float *dh_scratch, const bf16_t *x,
                              const float *W, int rows, int in, int out);
void cpu_attention_fwd_bf16(bf16_t *out, float *saved, const bf16_t *q, const bf16_t *k,
                            const bf16_t *v, int B, int H, int Tq, int Tk, int Dh, int ldq,
                            int ldkv);
void cpu_attention_bwd_bf16(float *dq, float *dk, float *dv, const float *dout, const bf16_t *q,
                            const bf16_t *k, const bf16_t *v, const bf16_t *out,
                            const float *saved, int B, int H, int Tq, int Tk, int Dh, int ldq,
                            int ldkv);
void cpu_attention_bwd_bf16_grad16(bf16_t *dq, bf16_t *dk, bf16_t *dv, const float *dout,
                                   const bf16_t *q, const bf16_t *k, const bf16_t *v,
                                   const bf16_t *out, const float *saved, int B, int H, int Tq,
                                   int Tk, int Dh, int ldq, int ldkv);
void cpu_linear_bwd_bf16_dy16(float *dx, float *dW, const bf16_t *dy, const bf16_t *x,
                              const float *W, int rows, int in, int out);
void cpu_linear_bwd_bf16_dx16(bf16_t *dx, float *dW, float *db, const float *dy, const bf16_t *x,
                              const float *W, int rows, int in, int out);
void cpu_linear_bwd_bf16_dy16_dx16(bf16_t *dx, float *dW, const bf16_t *dy, const bf16_t *x,
                                   const float *W, int rows, int in, int out);
void cpu_linear_gelu_bwd_bf16_dy16(float *dx, float *dW, float *db, const bf16_t *dy_act,
                                   const bf16_t *h, float *dh_scratch, const bf16_t *x,
                                   const float *W, int rows, int in, int out);
void cpu_to_bf16(bf16_t *y, const float *x, size_t n);

#endif
