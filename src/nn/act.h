/* Activation tensors of either element type (mixed precision).
 *
 * With precision = bf16 the transformer stacks keep the tensors that feed GEMMs and attention
 * (LayerNorm outputs, qkv, the attention output, the MLP's hidden layer before and after GELU)
 * in bf16, halving their memory and traffic; the residual stream, gradients, weights and
 * LayerNorm statistics stay fp32 (the backend contract: "mixed precision" in ops/backend.h).
 * An Act carries its element type, and the act_* calls below pick the backend op for it, so
 * model code is written once for both precisions. */
#ifndef ALICE_ACT_H
#define ALICE_ACT_H

#include <stddef.h>

#include "nn/arena.h"
#include "nn/params.h"

typedef struct {
    void *p;
    DType type;
} Act;

static inline size_t dtype_bytes(DType t) { return t == DTYPE_BF16 ? sizeof(bf16_t) : sizeof(float); }

/* The element type of mixed-precision activations for config keys precision (fp32 | bf16) and
 * bf16_activations. */
DType act_type_for_precision(const char *precision, int bf16_activations);

/* arena_plan for the activation types of config keys precision, bf16_activations and
 * bf16_branch_out (the last only with bf16 activations). */
void arena_plan_mixed(Arena *a, const AliceBackend *be, const char *precision,
                      int bf16_activations, int bf16_branch_out);

/* n elements of type t from the arena. */
Act arena_act(Arena *a, size_t n, DType t);
/* The tensor starting elems elements into a (e.g. k and v inside a packed qkv). */
Act act_offset(Act a, size_t elems);
/* The fp32 tensor behind a (a programming error when a is bf16). */
float *act_f32(Act a);

/* y = LayerNorm(x) of the fp32 residual stream x; mean and rstd [rows] saved. */
void act_layernorm_fwd(const AliceBackend *be, Act y, float *mean, float *rstd, const float *x,
                       const float *gamma, const float *beta, int rows, int dim, float eps);
/* y = residual + x W^T + b for the tensors W = ps[w], b = ps[b] (or NO_PARAM); an fp32 x needs
 * an fp32 y. residual: fp32 [rows, out] or NULL, only with an fp32 y that does not overlap it;
 * bf16 x adds it in the GEMM's store (linear_fwd_bf16), fp32 x by the add op after the linear
 * layer (its results unchanged by the fusion). */
void act_linear_fwd(const ParamSet *ps, int w, int b, Act y, Act x, const float *residual,
                    int rows, int in, int out);
/* dx = dy W (NULL skips), dW and db accumulate into the ParamSet's gradients. */
void act_linear_bwd(ParamSet *ps, int w, int b, float *dx, const float *dy, Act x, int rows,
                    int in, int out);
/* act_linear_bwd with dx an Act: fp32 dx is act_linear_bwd; a bf16 dx (fc2's input gradient,
 * read only by fc1's GELU backward: PyTorch's autocast rounding) needs a bf16 x and is the fp32
 * dx rounded once (linear_bwd_bf16_dx16: the CUDA backend rounds in the GEMM's store). */
void act_linear_bwd_dx(ParamSet *ps, int w, int b, Act dx, const float *dy, Act x, int rows,
                       int in, int out);
/* act_linear_bwd with dy an Act: fp32 dy is act_linear_bwd; a bf16 dy (the bf16 gradient of
 * act_attention_bwd) needs a bf16 x and a layer without bias (b = NO_PARAM: a bias gradient
 * would sum the unrounded fp32 dy) and gives exactly act_linear_bwd on dy widened to fp32
 * (linear_bwd_bf16_dy16: no rounding pass over dy). */
void act_linear_bwd_dy(ParamSet *ps, int w, int b, float *dx, Act dy, Act x, int rows, int in,
                       int out);
/* The linear backward of a layer whose dy's producer already made what the layer needs of
 * dy besides its GEMMs: dy16 = dy rounded to bf16, and the bias gradient (if the layer has
 * one) already accumulated from the UNROUNDED fp32 dy (layernorm_bwd_dx16's dx_bf16 and
 * dx_colsum), so the reason act_linear_bwd_dy refuses a bf16 dy with a bias does not apply.
 * Runs only dx = dy W (NULL skips) and dW += dy^T x (linear_bwd_bf16_dy16) with a bf16 x:
 * together with that producer, exactly act_linear_bwd on the fp32 dy but for the order in which
 * the backend summed the bias gradient. */
void act_linear_bwd_presummed(ParamSet *ps, int w, Act dx, const bf16_t *dy16, Act x,
                              int rows, int in, int out);
/* GELU (x and y of one type) and its backward into fp32 dx. */
void act_gelu_fwd(const AliceBackend *be, Act y, Act x, size_t n);
void act_gelu_bwd(const AliceBackend *be, float *dx, const float *dy, Act x, size_t n);
/* The backward of y = GELU(h), h = x W^T + b (the MLP's fc1 and its GELU): dh = dy_act gelu'(h),
 * then act_linear_bwd on dh. dh_scratch: fp32 [rows, out] the call may use (contents undefined
 * afterwards). With h and x both bf16 the backend's fused linear_gelu_bwd_bf16 (bit-identical to
 * the two calls; the CUDA backend never stores dh); otherwise exactly act_gelu_bwd into
 * dh_scratch followed by act_linear_bwd. */
void act_linear_gelu_bwd(ParamSet *ps, int w, int b, float *dx, const float *dy_act, Act h,
                         float *dh_scratch, Act x, int rows, int in, int out);
/* act_linear_gelu_bwd with dy_act an Act: a bf16 dy_act (act_linear_bwd_dx's bf16 dx) needs
 * bf16 h and x and gives exactly act_linear_gelu_bwd on dy_act widened
 * (linear_gelu_bwd_bf16_dy16). */
void act_linear_gelu_bwd_dy(ParamSet *ps, int w, int b, float *dx, Act dy_act, Act h,
                            float *dh_scratch, Act x, int rows, int in, int out);
/* Attention (backend attention_fwd/bwd semantics) with q, k, v and out of one type.
 * Backward writes dq, dk, dv (p NULL: not needed) of one type: fp32, or bf16 with bf16 q, k, v
 * (attention_bwd_bf16_grad16: each gradient rounded once, bit for bit the fp32 gradients
 * rounded afterwards), for a consumer that rounds them to bf16 anyway (act_linear_bwd_dy). */
void act_attention_fwd(const AliceBackend *be, Act out, float *saved, Act q, Act k, Act v,
                       int B, int H, int Tq, int Tk, int Dh, int ldq, int ldkv);
void act_attention_bwd(const AliceBackend *be, Act dq, Act dk, Act dv, const float *dout, Act q,
                       Act k, Act v, Act out, const float *saved, int B, int H, int Tq, int Tk,
                       int Dh, int ldq, int ldkv);

#endif
