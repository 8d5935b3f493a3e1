/* The ops seam: model code calls operations only through this table, so the same model runs
 * on the CPU backend (src/ops/cpu_<op>.c, OpenMP + OpenBLAS) and the CUDA backend (cuda/<op>.cu).
 *
 * Conventions (shared by every backend; tests compare backends op by op):
 *  - Every pointer argument is backend memory (device memory for CUDA), fp32 unless stated;
 *    index arrays are int32 in backend memory. Model code never dereferences them on the host.
 *  - Row-major, C order. A "rows x dim" matrix has dim contiguous.
 *  - Backward ops OVERWRITE input gradients (dx) and ACCUMULATE parameter gradients
 *    (dW, db, dgamma, dbeta, dmask_token) so a parameter used twice sums its gradients.
 *    A NULL gradient pointer means "not needed" and is skipped.
 *  - Volumes are [B, C, X, Y, Z] with Z fastest (PyTorch/MONAI [B, C, H, W, D]).
 *  - Ops that return a float (losses, reductions) synchronise and return it to the host.
 */
#ifndef ALICE_BACKEND_H
#define ALICE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "ops/adamw_math.h"
#include "ops/bf16.h"
#include "ops/segment_pieces.h"

/* Element type of an activation tensor (mixed precision stores some in bf16). */
typedef enum { DTYPE_F32 = 0, DTYPE_BF16 = 1 } DType;

/* The values dicece_fwd writes, one float each, in this order, to backend memory: the mean
 * cross-entropy, the Dice loss, and the number of label voxels outside 0..K-1 (the reader of
 * the values refuses a step with any: the op itself cannot stop the run without a host wait). */
typedef enum {
    SEG_LOSS_CE,
    SEG_LOSS_DICE,
    SEG_LOSS_BAD_LABELS,
    SEG_LOSS_VALUE_COUNT
} SegLossValue;

/* Recorded backend work replayed with one launch (the graph_* entries of the table); opaque,
 * defined by the backend that makes it. */
typedef struct BackendGraph BackendGraph;

/* The argument check of the ops that add a residual in their store (linear_fwd_bf16,
 * layernorm_bwd), shared by the backends: fatal (naming op) when residual is given but out
 * is not fp32, or when out's n elements overlap residual's (both backends read residual and
 * write out in one pass, so an overlap would read values already overwritten). */
void backend_check_residual(const char *op, const void *out, DType out_type,
                            const float *residual, size_t n);

/* The argument check of add_layernorm_fwd, shared by the backends: fatal (naming op) when
 * sum's n floats overlap x's or the n bf16 of branch (the kernels read x and branch after
 * writing sum, the scalar one three times). */
void backend_check_add_layernorm(const char *op, const float *sum, const float *x,
                                 const bf16_t *branch, size_t n);

typedef struct AliceBackend {
    const char *name;

    /* ---- memory ---- */
    void *(*alloc)(size_t bytes);
    void (*release)(void *p);
    void (*upload)(void *dst, const void *host_src, size_t bytes);
    void (*download)(void *host_dst, const void *src, size_t bytes);
    void (*copy)(void *dst, const void *src, size_t bytes);
    void (*fill)(float *x, float value, size_t n);
    void (*synchronize)(void);
    /* [data, data + n) holds parameters: GEMMs read it many times between writes, and it is
     * written only through upload, copy, fill, axpby, scale, add, adamw (its parameters and
     * its EMA target) and ema_update (the optimiser, the EMA step, initialisation and
     * checkpoint loads). A backend may keep a derived copy (the CUDA backend: bf16 weights
     * for mixed-precision GEMMs, made again after each write); the CPU backend keeps nothing.
     * weights_forget comes before release. */
    void (*weights_hint)(const float *data, size_t n);
    void (*weights_forget)(const float *data);

    /* ---- elementwise and reductions ---- */
    /* y = a*x + b*y */
    void (*axpby)(float *y, const float *x, float a, float b, size_t n);
    void (*scale)(float *x, float a, size_t n);
    /* out = a + b (out may alias a or b) */
    void (*add)(float *out, const float *a, const float *b, size_t n);
    /* Per-group scaling, for drop-path (nn/drop_path.h): for groups g < groups of n elements
     * each, out[g n + i] = base[g n + i] + scale[g] y[g n + i] (product and sum each rounded,
     * never fused: scaled_add_value in ops/cpu_math.h), or scale[g] y[g n + i] when base is
     * NULL. scale [groups] in backend memory; out may alias base or y. */
    void (*add_group_scaled)(float *out, const float *base, const float *y, const float *scale,
                             int groups, size_t n);
    /* Sum of squares, accumulated in double. Non-finite exactly when some element is (a NaN
     * or an Inf stays one; finite squares of floats cannot overflow a double sum), so the
     * gradient norm is also the training loop's "every gradient finite" check. */
    double (*sum_squares)(const float *x, size_t n);
    /* Per-segment clipping (clip_mode = per_tensor, DINO's clip_gradients): for each segment s
     * of sp (ops/segment_pieces.h), norm_s = sqrt of the sum of its elements' squares (each
     * piece summed in double, then the segment's pieces added in order); where
     * clip_factor(norm_s, max_norm) (ops/clip_math.h) is below 1, every element of s is
     * multiplied by it (one float product). One pass over x and no host synchronisation. */
    void (*clip_segments)(float *x, const SegmentPieces *sp, double max_norm);

    /* ---- GEMM ----
     * For i < batch: C_i = alpha * op(A_i) * op(B_i) + beta * C_i, op(A_i) is M x K, op(B_i)
     * is K x N, C_i is M x N; matrices at A + i*strideA etc., leading dimensions lda, ldb, ldc
     * (row-major: number of elements between consecutive rows as stored). */
    void (*gemm)(int transA, int transB, int M, int N, int K, float alpha,
                 const float *A, int lda, long strideA, const float *B, int ldb, long strideB,
                 float beta, float *C, int ldc, long strideC, int batch);
    /* Linear layer (PyTorch nn.Linear): y[r, o] = sum_i x[r, i] W[o, i] + b[o]; b may be NULL. */
    void (*linear_fwd)(float *y, const float *x, const float *W, const float *b,
                       int rows, int in, int out);
    /* dx = dy W (overwrite), dW += dy^T x, db += column sums of dy. */
    void (*linear_bwd)(float *dx, float *dW, float *db, const float *dy, const float *x,
                       const float *W, int rows, int in, int out);

    /* ---- normalisation and activations ---- */
    /* LayerNorm over the last dim; mean and rstd [rows] are saved for backward. */
    void (*layernorm_fwd)(float *y, float *mean, float *rstd, const float *x,
                          const float *gamma, const float *beta, int rows, int dim, float eps);
    /* dx = dx_residual + (LayerNorm's input gradient): the other gradient of the residual
     * stream (a pre-norm block's skip connection) summed in the same store, so the block needs
     * no separate add. dx_residual NULL: dx is LayerNorm's input gradient alone. dx must not
     * overlap dx_residual (checked). */
    void (*layernorm_bwd)(float *dx, const float *dx_residual, float *dgamma, float *dbeta,
                          const float *dy, const float *x, const float *mean, const float *rstd,
                          const float *gamma, int rows, int dim);
    /* GELU, exact erf form: x/2 (1 + erf(x/sqrt 2)) */
    void (*gelu_fwd)(float *y, const float *x, size_t n);
    void (*gelu_bwd)(float *dx, const float *dy, const float *x, size_t n);
    /* Softmax over rows of length cols. */
    void (*softmax_fwd)(float *y, const float *x, int rows, int cols);
    void (*softmax_bwd)(float *dx, const float *dy, const float *y, int rows, int cols);

    /* ---- attention ----
     * Multi-head scaled dot-product attention, queries and keys/values from any sources.
     * q[b, t, h*Dh + d] with row stride ldq (so a packed qkv buffer of width 3C is q = qkv,
     * k = qkv + C, v = qkv + 2C, ldq = ldkv = 3C). out [B, Tq, H*Dh] contiguous.
     * saved holds attention_saved_floats(B, H, Tq, Tk, Dh) floats that forward writes and
     * backward reads; its content belongs to the backend: the CPU backend (and the CUDA GEMM
     * kernel) saves probs [B, H, Tq, Tk] = softmax(q k^T / sqrt(Dh)), the CUDA fused kernel only
     * the row logsumexp [B, H, Tq]. Size it with the query (activation arenas do), and do not
     * change the backend's attention kernel between planning, forward and backward.
     * saved may be NULL: forward only (no backward may follow), nothing is saved, so a
     * forward-only stack (the EMA target, inference) needs no [B, H, Tq, Tk] buffer.
     * Backward also reads out (the forward's output) and writes dq, dk, dv with the same
     * strides as q, k, v (overwrite). */
    void (*attention_fwd)(float *out, float *saved, const float *q, const float *k,
                          const float *v, int B, int H, int Tq, int Tk, int Dh,
                          int ldq, int ldkv);
    void (*attention_bwd)(float *dq, float *dk, float *dv, const float *dout, const float *q,
                          const float *k, const float *v, const float *out, const float *saved,
                          int B, int H, int Tq, int Tk, int Dh, int ldq, int ldkv);
    size_t (*attention_saved_floats)(int B, int H, int Tq, int Tk, int Dh);

    /* ---- patches and tokens ----
     * vol [B, X, Y, Z] (one channel) <-> patches [B, N, p^3], N = (X/p)(Y/p)(Z/p), token n =
     * (ix*gy + iy)*gz + iz, element (px*p + py)*p + pz: identical to MONAI's Conv3d patch
     * embedding followed by flatten(2).transpose(1, 2). */
    void (*patchify)(float *patches, const float *vol, int B, int X, int Y, int Z, int p);
    void (*unpatchify)(float *vol, const float *patches, int B, int X, int Y, int Z, int p);
    /* out[b, j, :] = in[b, idx[b*idx_ld + j], :] for j < nsel; in is [B, N, C]. */
    void (*gather_rows)(float *out, const float *in, const int *idx, int idx_ld,
                        int B, int N, int nsel, int C);
    /* patchify and gather_rows storing bf16: each value rounded once (nearest even, bit for
     * bit to_bf16 of the fp32 op's output), for a patch embedding whose input is read only as a
     * bf16 GEMM operand (the target's patches; the student's visible tokens): the GEMMs get
     * the bits their fp32 operand path would round to, without a rounding pass of their own. */
    void (*patchify_bf16)(bf16_t *patches, const float *vol, int B, int X, int Y, int Z, int p);
    void (*gather_rows_bf16)(bf16_t *out, const float *in, const int *idx, int idx_ld, int B,
                             int N, int nsel, int C);
    /* Backward of gather_rows: din[b, idx[b*idx_ld + j], :] += dout[b, j, :]. */
    void (*scatter_add_rows)(float *din, const float *dout, const int *idx, int idx_ld,
                             int B, int N, int nsel, int C);
    /* x[b, j, :] += table[idx[b*idx_ld + j], :] (fixed position embeddings of visible tokens) */
    void (*add_table_rows)(float *x, const float *table, const int *idx, int idx_ld,
                           int B, int nsel, int C);
    /* perm [B, N]: perm[b, :nvis] are the visible token positions (in the order of visible),
     * perm[b, nvis:] the masked ones. out[b, perm[b, j]] = visible[b, j] for j < nvis and
     * mask_token otherwise. */
    void (*insert_mask_tokens)(float *out, const float *visible, const float *mask_token,
                               const int *perm, int B, int N, int nvis, int C);
    void (*insert_mask_tokens_bwd)(float *dvisible, float *dmask_token, const float *dout,
                                   const int *perm, int B, int N, int nvis, int C);

    /* ---- pooling, normalisation of vectors, losses ---- */
    /* out[b, c] = mean_t in[b, t, c] */
    void (*mean_rows_fwd)(float *out, const float *in, int B, int T, int C);
    void (*mean_rows_bwd)(float *din, const float *dout, int B, int T, int C);
    /* y = x / max(||x||, eps) per row; norms [rows] saved. */
    void (*l2norm_fwd)(float *y, float *norms, const float *x, int rows, int dim, float eps);
    void (*l2norm_bwd)(float *dx, const float *dy, const float *x, const float *norms,
                       int rows, int dim, float eps);
    /* The losses' forward ops write their value to *loss, ONE float of backend memory, and
     * return without waiting for it: the step reads its loss terms once, after the backward
     * (a host read-back mid-step would stall the GPU and break stream capture).
     * Cosine loss: mean over rows of (1 - cos(a_r, b_r)). bwd: da, db (either may be NULL)
     * receive scale * d(loss)/d(.), overwritten. */
    void (*cosine_loss_fwd)(float *loss, const float *a, const float *b, int rows, int dim);
    void (*cosine_loss_bwd)(float *da, float *db, const float *a, const float *b, int rows,
                            int dim, float scale);
    /* DINO soft cross-entropy (align_loss = dino): mean over rows of
     * H(t, s) = -sum_k softmax((t - center) inv_tt)_k log softmax(s inv_ts)_k,
     * inv_tt = 1/teacher_temp, inv_ts = 1/student_temp, center [dim] shared by every row; the
     * teacher side t is a constant. bwd: ds = scale * d(loss)/ds
     * = scale inv_ts (softmax(s inv_ts) - softmax((t - center) inv_tt)) / rows, overwritten. */
    void (*soft_ce_fwd)(float *loss, const float *s, const float *t, const float *center,
                        int rows, int dim, float inv_ts, float inv_tt);
    void (*soft_ce_bwd)(float *ds, const float *s, const float *t, const float *center, int rows,
                        int dim, float inv_ts, float inv_tt, float scale);
    /* Per-row normalisation of reconstruction targets (MAE norm_pix_loss):
     * out = (x - mean) / sqrt(var + eps), var the unbiased variance (MAE's torch var(): sum of
     * squares over dim - 1; ops/cpu_math.h norm_pix_var_divisor). No gradient. */
    void (*normalize_rows)(float *out, const float *x, int rows, int dim, float eps);
    /* MSE on masked rows (eq. 1): sum_r mask[r] * mean_d (pred - target)^2 / sum_r mask[r].
     * mask [rows] is 1 for masked patches, 0 for visible; 0 when nothing is masked. */
    void (*masked_mse_fwd)(float *loss, const float *pred, const float *target,
                           const float *mask, int rows, int dim);
    void (*masked_mse_bwd)(float *dpred, const float *pred, const float *target,
                           const float *mask, int rows, int dim, float scale);

    /* ---- optimiser and target network (flat buffers) ---- */
    /* AdamW (decoupled decay, PyTorch's formula: ops/adamw_math.h) over n elements, one pass:
     * m, v moments updated in place; h.step is 1-based for bias correction. Each gradient is
     * used as fl(grad * h.grad_scale) (global-norm clipping inside the pass, with the bits of
     * scale followed by adamw); grad itself is only read. decay_mask (backend memory,
     * ops/decay_mask.h: bit i set <=> element i decays) selects the elements that take
     * h.weight_decay, so a whole ParamSet (tensors with and without decay, zero padding between
     * them) is one call; NULL means every element decays. ema_target non-NULL: the same pass
     * then also does ema_update(ema_target, param, n, ema_momentum) with the new parameters
     * (the same bits as that call after this one); ema_target must not overlap param. */
    void (*adamw)(float *param, const float *grad, float *m, float *v,
                  const uint32_t *decay_mask, size_t n, AdamwHyper h, float *ema_target,
                  float ema_momentum);
    /* target = momentum * target + (1 - momentum) * online (ops/ema_math.h) */
    void (*ema_update)(float *target, const float *online, size_t n, float momentum);

    /* ---- 3D convolution network ops (UNETR) ----
     * conv3d: x [B, Cin, X, Y, Z], W [Cout, Cin, k, k, k] (PyTorch layout), b [Cout] or NULL,
     * stride s, zero padding pad on every side; y [B, Cout, X', Y', Z'],
     * X' = (X + 2 pad - k) / s + 1. */
    void (*conv3d_fwd)(float *y, const float *x, const float *W, const float *b, int B,
                       int Cin, int Cout, int X, int Y, int Z, int k, int s, int pad);
    void (*conv3d_bwd)(float *dx, float *dW, float *db, const float *dy, const float *x,
                       const float *W, int B, int Cin, int Cout, int X, int Y, int Z,
                       int k, int s, int pad);
    /* Transposed conv with kernel == stride (UNETR up-sampling): x [B, Cin, X, Y, Z],
     * W [Cin, Cout, k, k, k] (PyTorch ConvTranspose3d layout), y [B, Cout, kX, kY, kZ]. */
    void (*conv_transpose3d_fwd)(float *y, const float *x, const float *W, const float *b,
                                 int B, int Cin, int Cout, int X, int Y, int Z, int k);
    void (*conv_transpose3d_bwd)(float *dx, float *dW, float *db, const float *dy,
                                 const float *x, const float *W, int B, int Cin, int Cout,
                                 int X, int Y, int Z, int k);
    /* Instance norm over each (b, c) volume of V voxels; gamma/beta [C] or NULL (affine=False);
     * mean, rstd [B*C] saved. */
    void (*instnorm_fwd)(float *y, float *mean, float *rstd, const float *x,
                         const float *gamma, const float *beta, int B, int C, long V, float eps);
    void (*instnorm_bwd)(float *dx, float *dgamma, float *dbeta, const float *dy,
                         const float *x, const float *mean, const float *rstd,
                         const float *gamma, int B, int C, long V);
    /* LeakyReLU: y = x > 0 ? x : slope x. The backward's x may be the forward's output y
     * instead of its input (slope >= 0: y > 0 exactly where x > 0, the same bits). */
    void (*leaky_relu_fwd)(float *y, const float *x, size_t n, float slope);
    void (*leaky_relu_bwd)(float *dx, const float *dy, const float *x, size_t n, float slope);
    /* UNETR's res-block pattern in one pass over the volume instead of three:
     * y = leaky_relu(instnorm(x) + addend, slope), addend [B, C, V] or NULL (nothing added),
     * BIT-IDENTICAL to instnorm_fwd into y, add, leaky_relu_fwd. addend may alias y (each
     * element is read before it is written); mean and rstd are saved as by instnorm_fwd. */
    void (*instnorm_lrelu_fwd)(float *y, float *mean, float *rstd, const float *x,
                               const float *gamma, const float *beta, const float *addend,
                               int B, int C, long V, float eps, float slope);
    /* instnorm_bwd of dy gated by LeakyReLU's slope at act (the LeakyReLU's output, or its
     * input): BIT-IDENTICAL to leaky_relu_bwd(tmp, dy, act, slope) then instnorm_bwd(tmp),
     * without the intermediate's write and read. dx may alias dy, not x. */
    void (*instnorm_lrelu_bwd)(float *dx, float *dgamma, float *dbeta, const float *dy,
                               const float *act, float slope, const float *x,
                               const float *mean, const float *rstd, const float *gamma,
                               int B, int C, long V);
    /* ---- sliding-window inference (eval/sliding_window.h) ----
     * A volume [pd0, pd1, pd2] (the padded grid) and windows [w0, w1, w2]; window voxel
     * (x, y, z) at origin o is volume voxel o + (x, y, z). */
    /* dst [w] = the window of vol at origin. */
    void (*sw_gather_window)(float *dst, const float *vol, const int pd[3], const int w[3],
                             const int origin[3]);
    /* acc[c, o + v] += logits[c, v] * imp[v] for c < K, then count[o + v] += imp[v]: one float
     * product and one float add each (no FMA), so both backends give the same bits. */
    void (*sw_blend_window)(float *acc, float *count, const float *logits, const float *imp,
                            int K, const int pd[3], const int w[3], const int origin[3]);
    /* For each voxel i of the image grid dim, placed at offset lo in the padded grid (q):
     * labels[i] = the first argmax and probs[c * |dim| + i] (probs may be NULL) the softmax of
     * acc[c, q] / count[q] over c < K (ops/cpu_math.h voxel_softmax_argmax); K <= 256. */
    void (*sw_finish)(uint8_t *labels, float *probs, const float *acc, const float *count,
                      int K, const int pd[3], const int dim[3], const int lo[3]);

    /* Segmentation losses on logits [B, K, V] and int32 labels [B, V] in 0..K-1.
     * probs [B, K, V] = softmax over K is written by fwd and reused by bwd.
     * ce = mean over B*V voxels of -log p_label;
     * dice = 1 - mean over (b, k) of (2 sum p*y + 1e-5) / (sum p + sum y + 1e-5) (MONAI
     * DiceLoss(softmax=True, to_onehot_y=True), smooth_nr = smooth_dr = 1e-5).
     * values [SEG_LOSS_VALUE_COUNT] is backend memory (SegLossValue: ce, dice, the count of
     * labels outside 0..K-1, which leave ce out and must stop the caller); like the other
     * losses, the op returns without waiting for them (no host read-back mid-step).
     * bwd writes dlogits = w_ce * d ce + w_dice * d dice. */
    void (*dicece_fwd)(float *probs, float *values, const float *logits, const int *labels,
                       int B, int K, long V);
    void (*dicece_bwd)(float *dlogits, const float *probs, const int *labels, int B, int K,
                       long V, float w_ce, float w_dice);
    /* out [B, C1 + C2, V] = concat(a [B, C1, V], b [B, C2, V]) along channels; bwd splits. */
    void (*concat_channels)(float *out, const float *a, const float *b, int B, int C1,
                            int C2, long V);
    void (*split_channels)(float *da, float *db, const float *dout, int B, int C1, int C2,
                           long V);
    /* out[b, c, n] = in[b, n, c] (tokens -> feature volume); its own inverse with rows/cols
     * swapped, so backward is the same op. */
    void (*transpose_tokens)(float *out, const float *in, int B, int rows, int cols);
    /* ---- mixed precision: bf16 activations (precision = bf16) ----
     * The transformer stacks keep their GEMM inputs and attention tensors in bf16 (bf16_t,
     * src/ops/bf16.h); the residual stream, weights, biases, gradients and LayerNorm statistics
     * stay fp32. Conventions of these ops:
     *  - bf16 inputs are widened exactly; every fp32 operand of a GEMM (weights, dy) is rounded
     *    to bf16 and products are accumulated in fp32 (the CUDA backend: tensor cores);
     *  - a bf16 output is rounded once, from the fp32 result;
     *  - gradients are fp32 and follow the fp32 ops' overwrite/accumulate rules.
     * linear: y = x W^T + b with x bf16 and y of type y_type; with a bf16 y the bias is rounded
     * to bf16 before it is added (cuBLASLt's epilogue takes the bias in the output type).
     * residual (fp32 [rows, out]) or NULL: y = residual + x W^T + b, the skip connection of a
     * residual block added in the GEMM's store (cuBLASLt: C = residual, beta = 1, D = y) rather
     * than by a separate add over y; only with an fp32 y that does not overlap it (checked).
     * linear_bwd: dx = dy W (fp32), dW += dy^T x, db += column sums of dy (fp32, unrounded). */
    void (*linear_fwd_bf16)(void *y, DType y_type, const bf16_t *x, const float *W,
                            const float *b, const float *residual, int rows, int in, int out);
    void (*linear_bwd_bf16)(float *dx, float *dW, float *db, const float *dy, const bf16_t *x,
                            const float *W, int rows, int in, int out);
    /* LayerNorm of fp32 x (the residual stream) with a bf16 output; mean, rstd fp32. */
    void (*layernorm_fwd_bf16)(bf16_t *y, float *mean, float *rstd, const float *x,
                               const float *gamma, const float *beta, int rows, int dim,
                               float eps);
    /* A bf16 residual branch (bf16_branch_out: attention's projection or fc2 stored in bf16,
     * PyTorch autocast's rounding) added to the fp32 residual stream inside the LayerNorm that
     * reads the sum: sum = x + widen(branch) (fp32), y = LayerNorm(sum) in y_type (fp32 or
     * bf16), mean and rstd fp32. sum must not overlap x or branch (checked). Contract: the
     * bits of that add followed by layernorm_fwd / layernorm_fwd_bf16 on sum. */
    void (*add_layernorm_fwd)(float *sum, void *y, DType y_type, float *mean, float *rstd,
                              const float *x, const bf16_t *branch, const float *gamma,
                              const float *beta, int rows, int dim, float eps);
    /* GELU of a bf16 tensor into a bf16 tensor; backward dx = dy gelu'(x), fp32. */
    void (*gelu_fwd_bf16)(bf16_t *y, const bf16_t *x, size_t n);
    void (*gelu_bwd_bf16)(float *dx, const float *dy, const bf16_t *x, size_t n);
    /* The MLP's fc1 backward through its GELU, y = GELU(h), h = x W^T + b with bf16 x and h:
     * dh = dy_act gelu'(h) in fp32 (gelu_bwd_bf16's formula), then exactly linear_bwd_bf16 on
     * dh (dx = dh W, dW += dh^T x, db += column sums of dh; dx and dW may be NULL as there).
     * dh_scratch: rows*out floats the op may use (contents undefined afterwards; it must not
     * overlap the other arguments), so the CPU reference allocates nothing. Contract: the
     * results are BIT-IDENTICAL to gelu_bwd_bf16(dh_scratch, dy_act, h, rows*out) followed by
     * linear_bwd_bf16(dx, dW, db, dh_scratch, x, W, rows, in, out) on the same backend. The
     * CUDA backend, given db, computes dh inside the bias column sum's pass (which also writes
     * dh's bf16 copy for the two GEMMs) and never stores the fp32 dh: one launch and two
     * passes over rows*out floats fewer. */
    void (*linear_gelu_bwd_bf16)(float *dx, float *dW, float *db, const float *dy_act,
                                 const bf16_t *h, float *dh_scratch, const bf16_t *x,
                                 const float *W, int rows, int in, int out);
    /* attention_fwd/bwd on bf16 q, k, v and a bf16 out (layouts, strides and saved as the fp32
     * ops): scores, softmax and its statistics in fp32 from the exact bf16 inputs, out rounded
     * once. Backward writes fp32 dq, dk, dv from an fp32 dout. The CUDA backend rounds P,
     * dout and dS to bf16 for its tensor-core products; the CPU backend (the reference) keeps
     * them fp32, so the two agree within bf16 tolerances, not bit for bit. saved may be
     * NULL here too: forward only, nothing saved. */
    void (*attention_fwd_bf16)(bf16_t *out, float *saved, const bf16_t *q, const bf16_t *k,
                               const bf16_t *v, int B, int H, int Tq, int Tk, int Dh, int ldq,
                               int ldkv);
    void (*attention_bwd_bf16)(float *dq, float *dk, float *dv, const float *dout,
                               const bf16_t *q, const bf16_t *k, const bf16_t *v,
                               const bf16_t *out, const float *saved, int B, int H, int Tq,
                               int Tk, int Dh, int ldq, int ldkv);
    /* attention_bwd_bf16 with bf16 dq, dk, dv (same strides, any may be NULL): each gradient
     * rounded once (nearest even) from the fp32 value attention_bwd_bf16 computes, so the
     * results are BIT-IDENTICAL to attention_bwd_bf16 into fp32 buffers followed by rounding
     * them to bf16 on the same backend. For the transformer's qkv layer, whose backward
     * (linear_bwd_bf16_dy16) wants dy in bf16 anyway: the CUDA flash kernels round in their
     * store, so the fp32 [rows, 3C] gradient is never written nor read back for rounding. */
    void (*attention_bwd_bf16_grad16)(bf16_t *dq, bf16_t *dk, bf16_t *dv, const float *dout,
                                      const bf16_t *q, const bf16_t *k, const bf16_t *v,
                                      const bf16_t *out, const float *saved, int B, int H,
                                      int Tq, int Tk, int Dh, int ldq, int ldkv);
    /* linear_bwd_bf16 of a layer WITHOUT bias whose dy is bf16 already (a bias gradient would
     * need the unrounded fp32 dy): dx = dy W (fp32), dW += dy^T x; dx or dW may be NULL.
     * BIT-IDENTICAL to linear_bwd_bf16(dx, dW, NULL, dy widened to fp32, x, W, ...), whose
     * rounding of dy to bf16 changes nothing then: the CUDA backend feeds dy to its GEMMs as
     * it is, one rounding launch and one fp32 pass over [rows, out] fewer. */
    void (*linear_bwd_bf16_dy16)(float *dx, float *dW, const bf16_t *dy, const bf16_t *x,
                                 const float *W, int rows, int in, int out);
    /* linear_bwd_bf16 (fp32 dy, db from it) and linear_bwd_bf16_dy16 (bf16 dy, no db) with dx
     * stored in bf16: dx = dy W accumulated in fp32 and rounded once (nearest even), dW and db
     * exactly as those ops. PyTorch's bf16 autocast rounds a matmul's input gradient so (the
     * transformer's fc2, whose dx is fc1's GELU backward's dy_act: linear_gelu_bwd_bf16_dy16).
     * The CPU backend: BIT-IDENTICAL to the fp32-dx op followed by to_bf16 of dx. The CUDA
     * backend rounds in the GEMM's store (cuBLASLt, bf16 D), so the fp32 dx is never written;
     * cuBLASLt may pick another kernel for a bf16 D, so against the fp32-dx op rounded it agrees
     * within one bf16 unit where the accumulation order differs, bit for bit otherwise. */
    void (*linear_bwd_bf16_dx16)(bf16_t *dx, float *dW, float *db, const float *dy,
                                 const bf16_t *x, const float *W, int rows, int in, int out);
    void (*linear_bwd_bf16_dy16_dx16)(bf16_t *dx, float *dW, const bf16_t *dy, const bf16_t *x,
                                      const float *W, int rows, int in, int out);
    /* linear_gelu_bwd_bf16 with a bf16 dy_act (linear_bwd_bf16_dx16's dx): BIT-IDENTICAL, on
     * either backend, to linear_gelu_bwd_bf16 on dy_act widened to fp32 (dh = widened dy_act
     * times gelu'(h) in fp32: PyTorch's GELU backward on bf16 tensors, fp32 math). */
    void (*linear_gelu_bwd_bf16_dy16)(float *dx, float *dW, float *db, const bf16_t *dy_act,
                                      const bf16_t *h, float *dh_scratch, const bf16_t *x,
                                      const float *W, int rows, int in, int out);
    /* layernorm_bwd that also hands the NEXT linear layer's backward what it needs of dx (the
     * pre-norm transformer: the residual stream's gradient that a LayerNorm backward forms is
     * the dy of the linear layer before it): dx_bf16 (NULL: not wanted) = the final dx
     * (dx_residual included) rounded to bf16 (nearest even, bit for bit to_bf16 of dx), and
     * dx_colsum (NULL: not wanted) += the column sums of that fp32 dx (the linear layer's bias
     * gradient, accumulated like every parameter gradient). Either needs dx. With both NULL it
     * is layernorm_bwd itself; dx, dgamma and dbeta always have layernorm_bwd's bits. So
     * linear_bwd_bf16_dy16 on dx_bf16 plus dx_colsum is linear_bwd_bf16 on dx, except the bias
     * gradient's summation order: the CPU backend sums as its linear_bwd_bf16 does (the same
     * bits); the CUDA backend adds dx's column sums in the fused LayerNorm kernel's per-block
     * partials (deterministic, another order), its rounding pass over dx saved. */
    void (*layernorm_bwd_dx16)(float *dx, const float *dx_residual, float *dgamma, float *dbeta,
                               bf16_t *dx_bf16, float *dx_colsum, const float *dy,
                               const float *x, const float *mean, const float *rstd,
                               const float *gamma, int rows, int dim);
    /* y = x rounded to bf16 (nearest even, the rounding of every bf16 GEMM operand), n
     * elements: an fp32 tensor that feeds bf16 GEMMs more than once (the projection head's
     * input: fc1 forward and its weight gradient) is rounded once and kept, instead of being
     * rounded again by each fp32-input GEMM. */
    void (*to_bf16)(bf16_t *y, const float *x, size_t n);

    /* ---- graphs: enqueued work recorded once, replayed as one launch ----
     * NULL on a backend that cannot record (the CPU backend runs every op at its call). The
     * CUDA backend records the work this thread enqueues on its stream (CUDA graphs) and
     * replays it with one launch, so a step of ~2600 kernels costs the host one call.
     * graph_capture_begin: from here until graph_capture_end, ops of this thread are recorded,
     * NOT run; returns 0 (with a log_warn naming why) when recording cannot start.
     * graph_capture_end: the recorded work as a graph ready to launch, or NULL when it cannot
     * be replayed (a host wait, an allocation, a scratch buffer that had to grow or a failed
     * CUDA capture or instantiation in between; log_warn names the first reason). Nothing
     * recorded has run either way: run the same work again eagerly after a NULL.
     * graph_launch: runs the recorded work again on the stream, with the pointers and scalar
     * arguments it was recorded with (only the memory contents may differ); returns 0 WITHOUT
     * launching when memory the graph uses moved since (a scratch buffer or bf16 weight copy
     * reallocated): free it, run the work eagerly and record it again.
     * graph_free: releases a graph (NULL is fine). */
    int (*graph_capture_begin)(void);
    BackendGraph *(*graph_capture_end)(void);
    int (*graph_launch)(BackendGraph *graph);
    void (*graph_free)(BackendGraph *graph);
} AliceBackend;

/* The CPU backend (always present). */
const AliceBackend *backend_cpu(void);
/* The CUDA backend, or NULL when built without CUDA. Errors out when built with CUDA but no
 * device is visible. */
const AliceBackend *backend_cuda(void);
/* "cpu" or "cuda"; a clear error for anything else or for cuda without a GPU. */
const AliceBackend *backend_by_name(const char *name);

#endif
