/* The transformer stack's backward as it was before this and that fusion, kept as the
 * reference for the bits of the fused one (CPU backend: host memory), and the check that
 * tstack_backward gives every parameter gradient and dx0 exactly what it gives.
 *
 * Former sequence: attention's gradient in an fp32 dqkv of its own, then act_linear_bwd (which
 * rounds it for the bf16 GEMMs), as before a->dqkv took the activation type; fc1 through its
 * GELU either as act_linear_gelu_bwd (FORMER_GELU_FUSED) or as it was before that op,
 * act_gelu_bwd into a->dh2 then act_linear_bwd (FORMER_GELU_SEPARATE); every LayerNorm's dx
 * by layernorm_bwd and its consumer's backward by act_linear_bwd on the fp32 dx, as before
 * layernorm_bwd_dx16 handed bf16 stacks' linear layers their bf16 dy and bias gradient; fc2's
 * input gradient dh1 in an fp32 buffer of its own, then (bf16 activations) rounded to bf16
 * values by bf16_reference_round: the rounding PyTorch's autocast makes there (a matmul's
 * grad_input is bf16), which tstack_backward_taps makes in fc2's dx GEMM since a->dh1 took the
 * activation type (linear_bwd_bf16_dx16, then linear_gelu_bwd_bf16_dy16 widening it exactly:
 * the same values as this rounded fp32 dh1). Every other step as tstack_backward_taps has it
 * now, taps included. */
#ifndef ALICE_TEST_STACK_BACKWARD_FORMER_H
#define ALICE_TEST_STACK_BACKWARD_FORMER_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16_ref.h"
#include "nn/act.h"
#include "nn/arena.h"
#include "nn/layers.h" /* NO_PARAM */
#include "nn/transformer.h"
#include "test.h"

typedef enum { FORMER_GELU_SEPARATE, FORMER_GELU_FUSED } FormerGelu;

static inline void former_tstack_backward_taps(const TStack *s, TStackActs *a, ParamSet *ps,
                                               const float *dout, const float *const *dtaps,
                                               float *dx0, FormerGelu gelu)
{
    const AliceBackend *b_ = ps->be;
    const int W = s->width, M = s->mlp, H = s->heads, B = a->B, T = a->T;
    const int rows = B * T;
    const float *last = s->depth ? a->act[s->depth - 1].out : a->x0;
    float *g = s->depth ? a->g0 : dx0;
    float *dqkv = test_filled((size_t)rows * 3 * W, NAN);
    float *dh1 = test_filled((size_t)rows * M, NAN);
    const Act dq = {dqkv, DTYPE_F32};
    b_->layernorm_bwd(g, NULL, param_grad(ps, s->norm_w), param_grad(ps, s->norm_b), dout, last,
                      a->out_mean, a->out_rstd, param(ps, s->norm_w), rows, W);
    for (int i = s->depth - 1; i >= 0; i--) {
        const BlockParams *p = &s->blk[i];
        BlockActs *b = &a->act[i];
        const float *x = i ? a->act[i - 1].out : a->x0;
        float *gnext = i ? (g == a->g0 ? a->g1 : a->g0) : dx0;
        if (dtaps && dtaps[i]) b_->add(g, g, dtaps[i], (size_t)rows * W);
        act_linear_bwd(ps, p->fc2_w, p->fc2_b, dh1, g, b->hg, rows, M, W);
        if (a->dh1.type == DTYPE_BF16)
            for (size_t e = 0; e < (size_t)rows * M; e++)
                dh1[e] = (float)bf16_value(bf16_reference_round(dh1[e]));
        if (gelu == FORMER_GELU_FUSED) {
            act_linear_gelu_bwd(ps, p->fc1_w, p->fc1_b, a->dtmp, dh1, b->h, a->dh2, b->ln2, rows,
                                W, M);
        } else {
            act_gelu_bwd(b_, a->dh2, dh1, b->h, (size_t)rows * M);
            act_linear_bwd(ps, p->fc1_w, p->fc1_b, a->dtmp, a->dh2, b->ln2, rows, W, M);
        }
        b_->layernorm_bwd(a->dmid, g, param_grad(ps, p->norm2_w), param_grad(ps, p->norm2_b),
                          a->dtmp, b->mid, b->ln2_mean, b->ln2_rstd, param(ps, p->norm2_w), rows,
                          W);
        act_linear_bwd(ps, p->proj_w, p->proj_b, a->datt, a->dmid, b->att, rows, W, W);
        act_attention_bwd(b_, dq, act_offset(dq, W), act_offset(dq, 2 * (size_t)W), a->datt,
                          b->qkv, act_offset(b->qkv, W), act_offset(b->qkv, 2 * (size_t)W),
                          b->att, b->probs, B, H, T, T, W / H, 3 * W, 3 * W);
        act_linear_bwd(ps, p->qkv_w, NO_PARAM, a->dtmp, dqkv, b->ln1, rows, W, 3 * W);
        b_->layernorm_bwd(gnext, a->dmid, param_grad(ps, p->norm1_w), param_grad(ps, p->norm1_b),
                          a->dtmp, x, b->ln1_mean, b->ln1_rstd, param(ps, p->norm1_w), rows, W);
        g = gnext;
    }
    free(dqkv);
    free(dh1);
}

static inline void former_tstack_backward(const TStack *s, TStackActs *a, ParamSet *ps,
                                          const float *dout, float *dx0, FormerGelu gelu)
{
    former_tstack_backward_taps(s, a, ps, dout, NULL, dx0, gelu);
}

/* One small stack (random weights, biases and affines included) with activations of act_type:
 * tstack_backward_taps against former_tstack_backward_taps(gelu), both accumulating onto the
 * same earlier gradients, with a random tap (UNETR's skips from hidden states) added to the
 * output gradient of each block whose bit is set in tap_blocks (0: tstack_backward, no taps);
 * every gradient tensor and dx0 must match bit for bit, dx0 be written everywhere, and
 * a->dqkv have the activation type. */
static inline void check_stack_backward_taps_matches_former(const AliceBackend *be,
                                                            DType act_type, FormerGelu gelu,
                                                            uint64_t seed, unsigned tap_blocks)
{
    const int W = 24, heads = 2, M = 48, depth = 2, B = 2, T = 5;
    const size_t n = (size_t)B * T * W;
    uint32_t stream = 1;
    ParamSet ps;
    params_init_registry(&ps);
    TStack s;
    tstack_register(&s, &ps, "enc", W, heads, M, depth);
    params_allocate(&ps, be, 1);
    params_initialize(&ps, seed);
    /* Biases and LayerNorm affines start at zeros/ones: random values exercise them all. */
    float *noise = test_randn(seed, stream++, ps.total, 0.05f);
    for (size_t i = 0; i < ps.total; i++) ps.data[i] += noise[i];
    free(noise);

    Arena ar;
    arena_plan(&ar, be, act_type);
    TStackActs a;
    tstack_layout(&s, &a, &ar, B, T, TSTACK_TRAIN);
    arena_commit(&ar);
    tstack_layout(&s, &a, &ar, B, T, TSTACK_TRAIN);
    const char *what = act_type == DTYPE_BF16 ? "bf16 activations" : "fp32 activations";
    TEST_CHECK(a.dqkv.type == act_type, "%s: dqkv is of type %d", what, (int)a.dqkv.type);
    TEST_CHECK(a.dh1.type == act_type, "%s: dh1 is of type %d", what, (int)a.dh1.type);
    float *x0 = test_randn(seed, stream++, n, 1.0f), *dout = test_randn(seed, stream++, n, 1.0f);
    memcpy(a.x0, x0, n * sizeof(float));
    tstack_forward(&s, &a, &ps);

    float *grad0 = test_randn(seed, stream++, ps.total, 0.01f); /* gradients accumulate */
    float *dx_new = test_filled(n, NAN), *dx_old = test_filled(n, NAN);
    float *taps[TSTACK_MAX_DEPTH] = {NULL};
    for (int i = 0; i < depth; i++)
        if (tap_blocks >> i & 1u) taps[i] = test_randn(seed, stream++, n, 1.0f);
    const float *const *dtaps = tap_blocks ? (const float *const *)taps : NULL;
    memcpy(ps.grad, grad0, ps.total * sizeof(float));
    tstack_backward_taps(&s, &a, &ps, dout, dtaps, dx_new);
    float *grad_new = malloc(ps.total * sizeof(float));
    memcpy(grad_new, ps.grad, ps.total * sizeof(float));
    memcpy(ps.grad, grad0, ps.total * sizeof(float));
    former_tstack_backward_taps(&s, &a, &ps, dout, dtaps, dx_old, gelu);

    for (int t = 0; t < ps.count; t++) {
        const ParamInfo *info = &ps.info[t];
        const size_t bad = differing_bits(grad_new + info->offset, ps.grad + info->offset,
                                          info->numel);
        TEST_CHECK(bad == 0, "%s: gradient of %s differs from the former sequence in %zu of %zu "
                   "entries", what, info->name, bad, info->numel);
    }
    const size_t bad_dx = differing_bits(dx_new, dx_old, n);
    TEST_CHECK(bad_dx == 0, "%s: dx0 differs from the former sequence in %zu entries", what,
               bad_dx);
    size_t nan_dx = 0;
    for (size_t i = 0; i < n; i++) nan_dx += isnan(dx_new[i]) != 0;
    TEST_CHECK(nan_dx == 0, "%s: %zu entries of dx0 not written", what, nan_dx);
    TEST_CHECK(differing_bits(grad_new, grad0, ps.total) > ps.total / 2,
               "%s: backward left most gradients unchanged", what);

    free(x0); free(dout); free(grad0); free(dx_new); free(dx_old); free(grad_new);
    for (int i = 0; i < depth; i++) free(taps[i]);
    arena_free(&ar);
    params_free(&ps);
}

static inline void check_stack_backward_matches_former(const AliceBackend *be, DType act_type,
                                                       FormerGelu gelu, uint64_t seed)
{
    check_stack_backward_taps_matches_former(be, act_type, gelu, seed, 0u);
}

#endif
