#include "nn/transformer.h"

#include <stdio.h>

#include "core/check.h"
#include "nn/layers.h"

void tstack_register(TStack *s, ParamSet *ps, const char *prefix, int width, int heads, int mlp, int depth)
{
    ALICE_ASSERT(depth <= TSTACK_MAX_DEPTH, "depth %d above the supported %d", depth, TSTACK_MAX_DEPTH);
    s->width = width;
    s->heads = heads;
    s->mlp = mlp;
    s->depth = depth;
    char name[PARAM_NAME_MAX];
    int unused;
    for (int i = 0; i < depth; i++) {
        BlockParams *b = &s->blk[i];
        s->blk_params[i] = params_range_open(ps);
        snprintf(name, sizeof name, "%s.blocks.%d.norm1", prefix, i);
        register_layernorm(ps, name, width, &b->norm1_w, &b->norm1_b);
        snprintf(name, sizeof name, "%s.blocks.%d.attn.qkv", prefix, i);
        register_linear(ps, name, width, 3 * width, 0, &b->qkv_w, &unused);
        snprintf(name, sizeof name, "%s.blocks.%d.attn.out_proj", prefix, i);
        register_linear(ps, name, width, width, 1, &b->proj_w, &b->proj_b);
        snprintf(name, sizeof name, "%s.blocks.%d.norm2", prefix, i);
        register_layernorm(ps, name, width, &b->norm2_w, &b->norm2_b);
        snprintf(name, sizeof name, "%s.blocks.%d.mlp.linear1", prefix, i);
        register_linear(ps, name, width, mlp, 1, &b->fc1_w, &b->fc1_b);
        snprintf(name, sizeof name, "%s.blocks.%d.mlp.linear2", prefix, i);
        register_linear(ps, name, mlp, width, 1, &b->fc2_w, &b->fc2_b);
        params_range_close(ps, &s->blk_params[i]);
    }
    s->norm_params = params_range_open(ps);
    snprintf(name, sizeof name, "%s.norm", prefix);
    register_layernorm(ps, name, width, &s->norm_w, &s->norm_b);
    params_range_close(ps, &s->norm_params);
}

/* saved_floats: what attention saves for backward, or 0 for a forward-only block, which then
 * gets probs = NULL (the backend's "save nothing" contract) rather than a zero-sized buffer. */
static void layout_block(BlockActs *b, Arena *ar, size_t rows, int W, int M, size_t saved_floats)
{
    const DType t = ar->act_type;
    b->ln1 = arena_act(ar, rows * W, t);
    b->ln1_mean = arena_floats(ar, rows);
    b->ln1_rstd = arena_floats(ar, rows);
    b->qkv = arena_act(ar, rows * 3 * W, t);
    b->probs = saved_floats ? arena_floats(ar, saved_floats) : NULL;
    b->att = arena_act(ar, rows * W, t);
    b->mid = arena_floats(ar, rows * W);
    b->ln2 = arena_act(ar, rows * W, t);
    b->ln2_mean = arena_floats(ar, rows);
    b->ln2_rstd = arena_floats(ar, rows);
    b->h = arena_act(ar, rows * M, t);
    b->hg = arena_act(ar, rows * M, t);
    b->out = arena_floats(ar, rows * W);
}

/* The layout of tstack_layout; out_type: the final LayerNorm's output type. */
static void layout_stack(const TStack *s, TStackActs *a, Arena *ar, int B, int T, TStackMode mode,
                         DType out_type)
{
    const int train = mode == TSTACK_TRAIN;
    a->B = B;
    a->T = T;
    a->train = train;
    /* no drop-path unless tstack_layout_drop_path follows */
    for (int i = 0; i < TSTACK_MAX_DEPTH; i++) a->drop_rate[i] = 0.0f;
    a->drop_scale = NULL;
    a->drop_enabled = 0;
    size_t rows = (size_t)B * T, W = (size_t)s->width, M = (size_t)s->mlp;
    a->x0 = arena_floats(ar, rows * W);
    if (train) {
        /* what attention saves for backward: probabilities, or (fused CUDA) row logsumexps */
        size_t saved = ar->be->attention_saved_floats(B, s->heads, T, T, s->width / s->heads);
        for (int i = 0; i < s->depth; i++) layout_block(&a->act[i], ar, rows, (int)W, (int)M, saved);
    } else {
        /* Forward only (inference, the EMA target): attention saves nothing (probs = NULL),
         * and block i reads block i-1's out, so two alternating sets suffice. */
        BlockActs pair[2];
        layout_block(&pair[0], ar, rows, (int)W, (int)M, 0);
        layout_block(&pair[1], ar, rows, (int)W, (int)M, 0);
        for (int i = 0; i < s->depth; i++) {
            a->act[i] = pair[i % 2];
            /* out is the only buffer a later block or the caller reads */
            if (mode == TSTACK_FORWARD_TAPS) a->act[i].out = arena_floats(ar, rows * W);
        }
    }
    a->out = out_type == DTYPE_F32 ? arena_floats(ar, rows * W) : NULL;
    a->out16 = out_type == DTYPE_BF16 ? arena_act(ar, rows * W, DTYPE_BF16).p : NULL;
    a->out_mean = arena_floats(ar, rows);
    a->out_rstd = arena_floats(ar, rows);
    a->branch16 = ar->bf16_branches && ar->act_type == DTYPE_BF16
                      ? arena_act(ar, rows * W, DTYPE_BF16).p
                      : NULL;
    if (train) {
        a->g0 = arena_floats(ar, rows * W);
        a->g1 = arena_floats(ar, rows * W);
        a->dmid = arena_floats(ar, rows * W);
        a->dtmp = arena_floats(ar, rows * W);
        a->datt = arena_floats(ar, rows * W);
        a->dh1 = arena_act(ar, rows * M, ar->act_type);
        a->dh2 = arena_floats(ar, rows * M);
        a->dqkv = arena_act(ar, rows * 3 * W, ar->act_type);
    }
}

void tstack_layout(const TStack *s, TStackActs *a, Arena *ar, int B, int T, TStackMode mode)
{
    layout_stack(s, a, ar, B, T, mode, DTYPE_F32);
}

void tstack_layout_gemm_output(const TStack *s, TStackActs *a, Arena *ar, int B, int T,
                               TStackMode mode)
{
    layout_stack(s, a, ar, B, T, mode, ar->act_type);
}

void tstack_layout_drop_path(const TStack *s, TStackActs *a, Arena *ar, float max_rate)
{
    ALICE_ASSERT(a->train, "drop-path on a stack laid out for inference");
    drop_path_rates(a->drop_rate, s->depth, max_rate);
    a->drop_scale = drop_path_any(a->drop_rate, s->depth)
                        ? arena_floats(ar, tstack_drop_scale_count(s, a)) : NULL;
    a->drop_enabled = a->drop_scale != NULL;
}

size_t tstack_drop_scale_count(const TStack *s, const TStackActs *a)
{
    return drop_path_any(a->drop_rate, s->depth)
               ? (size_t)s->depth * DROP_BRANCH_COUNT * (size_t)a->B : 0;
}

/* Block blk's per-sample scales of branch br, or NULL where that block does not drop. */
static const float *drop_scales(const TStackActs *a, int blk, DropBranch br)
{
    if (!a->drop_scale || !a->drop_enabled || a->drop_rate[blk] <= 0.0f) return NULL;
    return a->drop_scale + drop_path_index(blk, br, a->B, 0);
}

/* A residual sum the next LayerNorm still has to make (bf16_branch_out): sum = base +
 * branch, branch the bf16 output of a block's projection or fc2. branch NULL: nothing pending,
 * the LayerNorm reads sum as it is. */
typedef struct {
    float *sum;
    const float *base;
    const bf16_t *branch;
} PendingSum;

/* y = residual + branch, branch = x W^T + b: the residual added in the linear layer's store
 * (act_linear_fwd); with bf16_branch_out (a->branch16) the branch stored in bf16 and the add
 * left to the next LayerNorm (returned pending); or with drop-path scales the branch stored
 * alone, then y = residual + scale[sample] branch in one pass. */
static PendingSum residual_branch_fwd(const ParamSet *ps, const TStackActs *a,
                                      const float *scales, int w, int b, float *y, Act x,
                                      const float *residual, int in, int out)
{
    const int rows = a->B * a->T;
    const PendingSum done = {y, NULL, NULL};
    if (!scales && a->branch16) {   /* laid out only with bf16 activations: x is bf16 */
        act_linear_fwd(ps, w, b, (Act){a->branch16, DTYPE_BF16}, x, NULL, rows, in, out);
        return (PendingSum){y, residual, a->branch16};
    }
    if (!scales) {
        act_linear_fwd(ps, w, b, (Act){y, DTYPE_F32}, x, residual, rows, in, out);
        return done;
    }
    act_linear_fwd(ps, w, b, (Act){y, DTYPE_F32}, x, NULL, rows, in, out);
    ps->be->add_group_scaled(y, residual, y, scales, a->B, (size_t)a->T * out);
    return done;
}

/* y = LayerNorm(p.sum), making the pending sum first (in the same pass) where there is one. */
static void residual_norm_fwd(const AliceBackend *be, PendingSum p, Act y, float *mean,
                              float *rstd, const float *gamma, const float *beta, int rows,
                              int W)
{
    if (p.branch)
        be->add_layernorm_fwd(p.sum, y.p, y.type, mean, rstd, p.base, p.branch, gamma, beta,
                              rows, W, LAYERNORM_EPS);
    else
        act_layernorm_fwd(be, y, mean, rstd, p.sum, gamma, beta, rows, W, LAYERNORM_EPS);
}

/* The gradient a dropping branch's output receives: scale[sample] g into scratch (NULL scales:
 * g itself). */
static const float *branch_dy(const AliceBackend *be, const TStackActs *a, const float *scales,
                              const float *g, float *scratch, int width)
{
    if (!scales) return g;
    be->add_group_scaled(scratch, NULL, g, scales, a->B, (size_t)a->T * width);
    return scratch;
}

Act tstack_output(const TStackActs *a)
{
    return a->out16 ? (Act){a->out16, DTYPE_BF16} : (Act){a->out, DTYPE_F32};
}

void tstack_forward(const TStack *s, TStackActs *a, const ParamSet *ps)
{
    const AliceBackend *be = ps->be;
    const int W = s->width, M = s->mlp, H = s->heads, B = a->B, T = a->T;
    const int rows = B * T;
    /* the block input x: x0, or the previous block's out once its LayerNorm made it */
    PendingSum x = {a->x0, NULL, NULL};
    for (int i = 0; i < s->depth; i++) {
        const BlockParams *p = &s->blk[i];
        BlockActs *b = &a->act[i];
        residual_norm_fwd(be, x, b->ln1, b->ln1_mean, b->ln1_rstd, param(ps, p->norm1_w),
                          param(ps, p->norm1_b), rows, W);
        act_linear_fwd(ps, p->qkv_w, NO_PARAM, b->qkv, b->ln1, NULL, rows, W, 3 * W);
        act_attention_fwd(be, b->att, b->probs, b->qkv, act_offset(b->qkv, W),
                          act_offset(b->qkv, 2 * (size_t)W), B, H, T, T, W / H, 3 * W, 3 * W);
        /* mid = x + proj(att): the residual added in the projection's store (bf16 activations;
         * fp32 ones add it after), or by norm2 (bf16_branch_out). x is x0 or the previous
         * block's out, never this block's mid. */
        const PendingSum mid =
            residual_branch_fwd(ps, a, drop_scales(a, i, DROP_BRANCH_ATTN), p->proj_w,
                                p->proj_b, b->mid, b->att, x.sum, W, W);
        residual_norm_fwd(be, mid, b->ln2, b->ln2_mean, b->ln2_rstd, param(ps, p->norm2_w),
                          param(ps, p->norm2_b), rows, W);
        act_linear_fwd(ps, p->fc1_w, p->fc1_b, b->h, b->ln2, NULL, rows, W, M);
        act_gelu_fwd(be, b->hg, b->h, (size_t)rows * M);
        /* out = mid + fc2(hg), the same way (with bf16_branch_out made by the next block's
         * norm1 or the final norm) */
        x = residual_branch_fwd(ps, a, drop_scales(a, i, DROP_BRANCH_MLP), p->fc2_w, p->fc2_b,
                                b->out, b->hg, b->mid, M, W);
    }
    residual_norm_fwd(be, x, tstack_output(a), a->out_mean, a->out_rstd, param(ps, s->norm_w),
                      param(ps, s->norm_b), rows, W);
}

/* A LayerNorm backward whose dx (dx_residual added) is the dy of a linear layer's backward
 * next: with dy16 (bf16 activations) it also writes dx's bf16 copy there and adds dx's column
 * sums to that layer's bias gradient consumer_b (layernorm_bwd_dx16); dy16 NULL: plain
 * layernorm_bwd (no consumer in the stack, fp32 activations, or a tap added to dx before the
 * consumer reads it). */
static void norm_bwd_feeding_linear(ParamSet *ps, bf16_t *dy16, int consumer_b, float *dx,
                                    const float *dx_residual, int norm_w, int norm_b,
                                    const float *dy, const float *x, const float *mean,
                                    const float *rstd, int rows, int W)
{
    ps->be->layernorm_bwd_dx16(dx, dx_residual, param_grad(ps, norm_w), param_grad(ps, norm_b),
                               dy16, dy16 ? param_grad(ps, consumer_b) : NULL, dy, x, mean,
                               rstd, param(ps, norm_w), rows, W);
}

/* The consumer's side: only the GEMMs on dy16 when its producer made it (and the bias
 * gradient), else the whole linear backward on the fp32 dy. dx fp32, or bf16 (fc2's dh1 with
 * bf16 activations) rounded in the dx GEMM's store on either path. */
static void linear_bwd_fed(ParamSet *ps, const bf16_t *dy16, int w, int b, Act dx,
                           const float *dy, Act x, int rows, int in, int out)
{
    if (dy16) act_linear_bwd_presummed(ps, w, dx, dy16, x, rows, in, out);
    else act_linear_bwd_dx(ps, w, b, dx, dy, x, rows, in, out);
}

/* The bf16 dy buffer for block blk's fc2 (NULL: its fc2 takes the fp32 g): none where a tap is
 * added to g before fc2 reads it, since the bias gradient summed by the producer would miss it,
 * nor where the MLP branch drops (its dy is g scaled per sample, not g). */
static bf16_t *fc2_dy16(bf16_t *dy16, const TStackActs *a, const float *const *dtaps, int blk)
{
    return (dtaps && dtaps[blk]) || drop_scales(a, blk, DROP_BRANCH_MLP) ? NULL : dy16;
}

void tstack_backward(const TStack *s, TStackActs *a, ParamSet *ps, const float *dout, float *dx0)
{
    tstack_backward_taps(s, a, ps, dout, NULL, dx0);
}

void tstack_backward_taps(const TStack *s, TStackActs *a, ParamSet *ps, const float *dout,
                          const float *const *dtaps, float *dx0)
{
    ALICE_ASSERT(a->train, "backward through a stack laid out for inference");
    const AliceBackend *be = ps->be;
    const int W = s->width, M = s->mlp, H = s->heads, B = a->B, T = a->T;
    const int rows = B * T;
    const size_t n = (size_t)rows * W;
    const float *last = s->depth ? a->act[s->depth - 1].out : a->x0;
    /* With bf16 activations every LayerNorm backward whose dx is a linear layer's dy (the final
     * norm's: the last block's fc2; LN2's: proj; LN1's: the previous block's fc2) hands that
     * layer dx in bf16 and its bias gradient, so the layer runs its two GEMMs only (no rounding
     * column sum over the fp32 dx). The bf16 dx lives in the first rows x W of a->dqkv, which
     * holds nothing then: dqkv is written by a block's attention backward and read by its qkv
     * backward, while the bf16 dx lives from a LayerNorm backward to its consumer (final norm
     * -> fc2, LN2 -> proj, LN1 -> the previous fc2), never across an attention backward and
     * qkv backward pair. Not where a tap is added to the consumer's dy in between (the bias
     * gradient would miss it): that consumer takes the fp32 g. */
    bf16_t *const dy16 = a->dqkv.type == DTYPE_BF16 ? a->dqkv.p : NULL;
    /* g: gradient w.r.t. the residual stream entering the current point; g16 its bf16 copy
     * for the fc2 that reads it, or NULL. */
    float *g = s->depth ? a->g0 : dx0;
    bf16_t *g16 = s->depth ? fc2_dy16(dy16, a, dtaps, s->depth - 1) : NULL;
    norm_bwd_feeding_linear(ps, g16, s->depth ? s->blk[s->depth - 1].fc2_b : NO_PARAM, g, NULL,
                            s->norm_w, s->norm_b, dout, last, a->out_mean, a->out_rstd, rows, W);
    params_grads_ready(ps, s->norm_params);
    for (int i = s->depth - 1; i >= 0; i--) {
        const BlockParams *p = &s->blk[i];
        BlockActs *b = &a->act[i];
        const float *x = i ? a->act[i - 1].out : a->x0;
        float *gnext = i ? (g == a->g0 ? a->g1 : a->g0) : dx0;
        /* g is the gradient w.r.t. block i's output here: add what read that output directly
         * (UNETR's skips from hidden states; g16 is NULL then). */
        if (dtaps && dtaps[i]) be->add(g, g, dtaps[i], n);
        const float *drop_attn = drop_scales(a, i, DROP_BRANCH_ATTN);
        /* MLP branch: out = mid + fc2(gelu(fc1(ln2(mid)))) (with drop-path: + scale fc2(..),
         * fc2's dy then scale g, in datt, which the attention branch fills only later) */
        const float *dy_fc2 = branch_dy(be, a, drop_scales(a, i, DROP_BRANCH_MLP), g, a->datt, W);
        linear_bwd_fed(ps, g16, p->fc2_w, p->fc2_b, a->dh1, dy_fc2, b->hg, rows, M, W);
        /* fc1 through its GELU, a->dh2 the scratch for dh (bf16: fused, dh never stored on
         * the GPU; dh1 read as bf16, widened in the fused pass) */
        act_linear_gelu_bwd_dy(ps, p->fc1_w, p->fc1_b, a->dtmp, a->dh1, b->h, a->dh2, b->ln2,
                               rows, W, M);
        /* dmid = g (the skip connection) + LayerNorm 2's input gradient, in one store (and
         * with bf16 activations its bf16 copy for proj, proj's bias gradient; not when the
         * attention branch drops: proj's dy is then dmid scaled) */
        bf16_t *const proj_dy16 = drop_attn ? NULL : dy16;
        norm_bwd_feeding_linear(ps, proj_dy16, p->proj_b, a->dmid, g, p->norm2_w, p->norm2_b,
                                a->dtmp, b->mid, b->ln2_mean, b->ln2_rstd, rows, W);
        /* Attention branch: mid = x + proj(attn(qkv(ln1(x)))) (drop-path: proj's dy is scale
         * dmid, in dtmp, free once LayerNorm 2's backward has read it) */
        const float *dy_proj = branch_dy(be, a, drop_attn, a->dmid, a->dtmp, W);
        linear_bwd_fed(ps, proj_dy16, p->proj_w, p->proj_b, (Act){a->datt, DTYPE_F32}, dy_proj,
                       b->att, rows, W, W);
        /* dqkv in bf16 with bf16 activations: the qkv layer has no bias, so its backward needs
         * dy only as the GEMMs' bf16 operand, and no rounding pass over an fp32 dqkv runs */
        act_attention_bwd(be, a->dqkv, act_offset(a->dqkv, W), act_offset(a->dqkv, 2 * (size_t)W),
                          a->datt, b->qkv, act_offset(b->qkv, W),
                          act_offset(b->qkv, 2 * (size_t)W), b->att, b->probs, B, H, T, T, W / H,
                          3 * W, 3 * W);
        act_linear_bwd_dy(ps, p->qkv_w, NO_PARAM, a->dtmp, a->dqkv, b->ln1, rows, W, 3 * W);
        /* gnext = dmid + LayerNorm 1's input gradient (gnext is g0/g1 other than g, or dx0:
         * the stack's input gradient, no linear layer of the stack reads it). Its bf16 copy
         * and bias gradient go to block i-1's fc2, whose range is reported ready later. */
        bf16_t *const gnext16 = i ? fc2_dy16(dy16, a, dtaps, i - 1) : NULL;
        norm_bwd_feeding_linear(ps, gnext16, i ? s->blk[i - 1].fc2_b : NO_PARAM, gnext, a->dmid,
                                p->norm1_w, p->norm1_b, a->dtmp, x, b->ln1_mean, b->ln1_rstd,
                                rows, W);
        params_grads_ready(ps, s->blk_params[i]);
        g = gnext;
        g16 = gnext16;
    }
}

double tstack_forward_flops(const TStack *s, int B, int T)
{
    double rows = (double)B * T, W = s->width, M = s->mlp;
    double per_block = 2.0 * rows * (3 * W * W + W * W + 2 * W * M) + 2.0 * 2.0 * B * (double)T * T * W;
    return per_block * s->depth;
}
