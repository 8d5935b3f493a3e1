#include "models/mae_decoder.h"

#include <stdio.h>

#include "nn/layers.h"

void mae_decoder_register(MaeDecoder *d, ParamSet *ps, const char *prefix, int in_width, int width,
                          int heads, int mlp, int depth, int P)
{
    d->in_width = in_width;
    d->width = width;
    d->P = P;
    char name[PARAM_NAME_MAX];
    snprintf(name, sizeof name, "%s.decoder_embed", prefix);
    register_linear(ps, name, in_width, width, 1, &d->embed_w, &d->embed_b);
    snprintf(name, sizeof name, "%s.mask_token", prefix);
    d->mask_token = params_add1(ps, name, width, 0, INIT_NORMAL_002);
    tstack_register(&d->stack, ps, prefix, width, heads, mlp, depth);
    snprintf(name, sizeof name, "%s.pred", prefix);
    register_linear(ps, name, width, P, 1, &d->pred_w, &d->pred_b);
}

/* H feeds GEMMs (pred, the head phi's fc1): bf16 with bf16 activations, stored so by the final
 * LayerNorm (no rounding launch per reader), unless a LayerNorm reads it too (CASA's keys with
 * casa_kv = features), which takes fp32. */
static void layout_stack_for_H(const MaeDecoder *d, MaeDecoderActs *a, Arena *ar, TStackMode mode,
                               int h_fp32)
{
    if (h_fp32)
        tstack_layout(&d->stack, &a->st, ar, a->B, a->N, mode);
    else
        tstack_layout_gemm_output(&d->stack, &a->st, ar, a->B, a->N, mode);
}

void mae_decoder_layout(const MaeDecoder *d, MaeDecoderActs *a, Arena *ar, int B, int N, int nvis,
                        int train, int h_fp32)
{
    a->B = B;
    a->N = N;
    a->nvis = nvis;
    size_t D = (size_t)d->width;
    a->z = arena_floats(ar, (size_t)B * nvis * D);
    a->pred = arena_floats(ar, (size_t)B * N * d->P);
    a->dH = train ? arena_floats(ar, (size_t)B * N * D) : NULL;
    a->dfull = train ? arena_floats(ar, (size_t)B * N * D) : NULL;
    a->dz = train ? arena_floats(ar, (size_t)B * nvis * D) : NULL;
    layout_stack_for_H(d, a, ar, train ? TSTACK_TRAIN : TSTACK_FORWARD_ONLY, h_fp32);
}

void mae_decoder_layout_features(const MaeDecoder *d, MaeDecoderActs *a, Arena *ar, int B, int N,
                                 int h_fp32)
{
    *a = (MaeDecoderActs){.B = B, .N = N, .nvis = N};
    layout_stack_for_H(d, a, ar, TSTACK_FORWARD_ONLY, h_fp32);
}

void mae_decoder_forward_features(const MaeDecoder *d, MaeDecoderActs *a, const ParamSet *ps,
                                  const float *V, const float *posD, const int *identity)
{
    const int B = a->B, N = a->N, D = d->width;
    /* no masked token: the projection lands in the sequence directly, in token order */
    linear_forward(ps, d->embed_w, d->embed_b, a->st.x0, V, B * N, d->in_width, D);
    ps->be->add_table_rows(a->st.x0, posD, identity, 0, B, N, D);
    tstack_forward(&d->stack, &a->st, ps);
}

void mae_decoder_forward(const MaeDecoder *d, MaeDecoderActs *a, const ParamSet *ps,
                         const float *V, const int *perm, const float *posD, const int *identity)
{
    const AliceBackend *be = ps->be;
    const int B = a->B, N = a->N, nvis = a->nvis, D = d->width;
    linear_forward(ps, d->embed_w, d->embed_b, a->z, V, B * nvis, d->in_width, D);
    be->insert_mask_tokens(a->st.x0, a->z, param(ps, d->mask_token), perm, B, N, nvis, D);
    be->add_table_rows(a->st.x0, posD, identity, 0, B, N, D);
    tstack_forward(&d->stack, &a->st, ps);
    act_linear_fwd(ps, d->pred_w, d->pred_b, (Act){a->pred, DTYPE_F32}, mae_decoder_H(a), NULL,
                   B * N, D, d->P);
}

void mae_decoder_backward(const MaeDecoder *d, MaeDecoderActs *a, ParamSet *ps, const float *V,
                          const int *perm, const float *dpred, const float *dH_extra, float *dV)
{
    const AliceBackend *be = ps->be;
    const int B = a->B, N = a->N, nvis = a->nvis, D = d->width;
    act_linear_bwd(ps, d->pred_w, d->pred_b, a->dH, dpred, mae_decoder_H(a), B * N, D, d->P);
    if (dH_extra) be->add(a->dH, a->dH, dH_extra, (size_t)B * N * D);
    tstack_backward(&d->stack, &a->st, ps, a->dH, a->dfull);
    be->insert_mask_tokens_bwd(a->dz, param_grad(ps, d->mask_token), a->dfull, perm, B, N, nvis, D);
    linear_backward(ps, d->embed_w, d->embed_b, dV, a->dz, V, B * nvis, d->in_width, D);
}

Act mae_decoder_H(const MaeDecoderActs *a) { return tstack_output(&a->st); }

double mae_decoder_features_flops(const MaeDecoder *d, int B, int N, int nvis)
{
    return 2.0 * B * nvis * (double)d->in_width * d->width + tstack_forward_flops(&d->stack, B, N);
}

double mae_decoder_forward_flops(const MaeDecoder *d, int B, int N, int nvis)
{
    return mae_decoder_features_flops(d, B, N, nvis) + 2.0 * B * N * (double)d->width * d->P;
}
