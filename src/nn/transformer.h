/* A stack of pre-norm transformer blocks (MONAI TransformerBlock) with a final LayerNorm.
 * TStack holds the tensor indices (shared by the online and the EMA target ParamSet, which
 * have identical layouts); TStackActs holds the activations of one batch shape. */
#ifndef ALICE_TRANSFORMER_H
#define ALICE_TRANSFORMER_H

#include "nn/act.h"
#include "nn/arena.h"
#include "nn/drop_path.h"
#include "nn/params.h"

#define TSTACK_MAX_DEPTH 48
#define LAYERNORM_EPS 1e-5f

typedef struct {
    int norm1_w, norm1_b, qkv_w, proj_w, proj_b, norm2_w, norm2_b, fc1_w, fc1_b, fc2_w, fc2_b;
} BlockParams;

typedef struct {
    int width, heads, mlp, depth;
    BlockParams blk[TSTACK_MAX_DEPTH];
    int norm_w, norm_b;
    /* Tensor ranges of each block and of the final norm: backward reports each as done. */
    ParamRange blk_params[TSTACK_MAX_DEPTH], norm_params;
} TStack;

/* ln1, qkv, att, ln2, h, hg feed GEMMs and attention: bf16 with precision = bf16 (the arena's
 * act_type); the residual stream (mid, out), statistics and saved attention stay fp32. */
typedef struct {
    Act ln1, qkv, att, ln2, h, hg;
    float *ln1_mean, *ln1_rstd, *probs, *mid, *ln2_mean, *ln2_rstd, *out;
} BlockActs;

typedef struct {
    int B, T, train;
    BlockActs act[TSTACK_MAX_DEPTH];  /* forward-only stacks reuse two sets */
    float *x0;                        /* input [B, T, W], written by the caller */
    float *out, *out_mean, *out_rstd; /* final LayerNorm output (out NULL when out16 holds it) */
    /* the final LayerNorm's output in bf16 instead of out (tstack_layout_gemm_output with bf16
     * activations; NULL otherwise): for a stack whose output is read only as bf16 GEMM
     * operands. Read it through tstack_output. */
    bf16_t *out16;
    /* backward scratch; dqkv in the arena's act_type: with bf16 activations attention's
     * backward stores its gradient in bf16, the qkv GEMMs' operand (rounded in the store, the
     * same bits as rounding an fp32 dqkv); between a block's qkv backward and the next
     * attention backward its first [B T, W] hold the bf16 dy that each LayerNorm backward
     * hands the linear layer reading its dx (tstack_backward_taps). dh1, fc2's input
     * gradient, is in act_type too: read only by fc1's GELU backward, and bf16 there in
     * PyTorch's autocast (a matmul's grad_input has the autocast type), so fc2's dx GEMM rounds
     * it in its store (linear_bwd_bf16_dx16) */
    float *g0, *g1, *dmid, *dtmp, *dh2, *datt;
    /* bf16_branch_out (the arena's bf16_branches): a block's projection or fc2 output in bf16
     * [B T, W], added to the residual stream by the LayerNorm after it (add_layernorm_fwd);
     * NULL otherwise. One buffer serves both: each branch is read by the next LayerNorm,
     * before the next branch is written. */
    bf16_t *branch16;
    Act dqkv, dh1;
    /* Drop-path (tstack_layout_drop_path; nn/drop_path.h): block i's branches are scaled per
     * sample by drop_scale[drop_path_index(i, branch, B, b)] (backend memory, the owner's draws)
     * where drop_rate[i] > 0 and drop_enabled (host; set by the layout, cleared by an owner whose
     * forward is inference: UNETR's validation windows). drop_scale NULL: no drop-path (every
     * rate 0, or not laid out). A backward must follow a forward with drop_enabled unchanged. */
    float drop_rate[TSTACK_MAX_DEPTH];
    float *drop_scale;
    int drop_enabled;
} TStackActs;

/* Registers "<prefix>.blocks.{i}.*" and "<prefix>.norm.*". */
void tstack_register(TStack *s, ParamSet *ps, const char *prefix, int width, int heads, int mlp, int depth);
/* What a stack's activations are laid out for. The forward-only modes keep no backward
 * buffers, and every block's probs is NULL (attention saves nothing; backend.h attention_fwd). */
typedef enum {
    TSTACK_FORWARD_ONLY,  /* block i reads only block i-1's out: two alternating sets */
    TSTACK_TRAIN,         /* everything backward reads, per block */
    TSTACK_FORWARD_TAPS,  /* forward only, but every block's out kept apart for readers of
                           * intermediate blocks (UNETR's skips); the rest alternates */
} TStackMode;

/* Lays out activations for B x T tokens (GEMM inputs in the arena's act_type). */
void tstack_layout(const TStack *s, TStackActs *a, Arena *arena, int B, int T, TStackMode mode);
/* tstack_layout for a stack whose output (the final LayerNorm's) only feeds bf16 GEMMs (the MAE
 * decoder's H: its pred layer and the head phi's fc1): with bf16 activations the LayerNorm
 * stores it in bf16 (out16, out NULL), the value those GEMMs would round it to (layernorm_fwd_bf16
 * rounds the fp32 result at its store), so no rounding launch per reader; fp32 activations: as
 * tstack_layout. */
void tstack_layout_gemm_output(const TStack *s, TStackActs *a, Arena *arena, int B, int T,
                               TStackMode mode);
/* Drop-path for a TSTACK_TRAIN layout: block i drops at max_rate i / (depth - 1)
 * (drop_path_rates); lays out the scales [depth][DROP_BRANCH_COUNT][B] the owner uploads
 * before every forward (none when no block drops: max_rate 0 or depth 1). A block that drops
 * adds its branches' outputs to the residual stream in a pass of its own (add_group_scaled)
 * instead of in the projection's store, and its branches' linear layers take their dy in fp32
 * (scaled), not the bf16 copy the LayerNorm backward before them would hand them. */
void tstack_layout_drop_path(const TStack *s, TStackActs *a, Arena *arena, float max_rate);
/* Floats of a's drop_scale (0 without drop-path): the owner's upload size. */
size_t tstack_drop_scale_count(const TStack *s, const TStackActs *a);
/* The final LayerNorm's output: out (fp32) or out16 (bf16). */
Act tstack_output(const TStackActs *a);
void tstack_forward(const TStack *s, TStackActs *a, const ParamSet *ps);
/* dout: gradient w.r.t. out; dx0 (overwritten) receives the gradient w.r.t. x0. */
void tstack_backward(const TStack *s, TStackActs *a, ParamSet *ps, const float *dout, float *dx0);
/* Same, with extra gradients w.r.t. block outputs: dtaps[i] (NULL entries, or dtaps NULL, for
 * none) adds to the gradient of act[i].out, for models that read intermediate blocks. */
void tstack_backward_taps(const TStack *s, TStackActs *a, ParamSet *ps, const float *dout,
                          const float *const *dtaps, float *dx0);
/* Matmul FLOPs of one forward (2 per multiply-add), for utilisation figures. */
double tstack_forward_flops(const TStack *s, int B, int T);

#endif
