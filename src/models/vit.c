#include "models/vit.h"

#include <stdio.h>

#include "core/check.h"
#include "nn/layers.h"

void vit_encoder_register(VitEncoder *e, ParamSet *ps, const char *prefix, int patch, int width,
                          int heads, int mlp, int depth)
{
    e->patch = patch;
    e->P = patch * patch * patch;
    e->width = width;
    char name[PARAM_NAME_MAX];
    /* Stored in Conv3d layout so MONAI loads it as is; row-major it is the [E, P] matrix. */
    int shape[5] = {width, 1, patch, patch, patch};
    e->pe_params = params_range_open(ps);
    snprintf(name, sizeof name, "%s.patch_embedding.patch_embeddings.weight", prefix);
    e->pe_w = params_add(ps, name, 5, shape, 1, INIT_XAVIER_UNIFORM);
    snprintf(name, sizeof name, "%s.patch_embedding.patch_embeddings.bias", prefix);
    e->pe_b = params_add1(ps, name, width, 0, INIT_ZEROS);
    params_range_close(ps, &e->pe_params);
    tstack_register(&e->stack, ps, prefix, width, heads, mlp, depth);
}

static void layout(const VitEncoder *e, VitEncoderActs *a, Arena *ar, int B, int ntok,
                   TStackMode mode, int gathered)
{
    a->B = B;
    a->ntok = ntok;
    a->patches_sel = gathered ? arena_act(ar, (size_t)B * ntok * e->P, ar->act_type)
                              : (Act){NULL, DTYPE_F32};
    a->pe_in = (Act){NULL, DTYPE_F32};
    a->dtokens = mode == TSTACK_TRAIN ? arena_floats(ar, (size_t)B * ntok * e->width) : NULL;
    tstack_layout(&e->stack, &a->st, ar, B, ntok, mode);
}

void vit_encoder_layout(const VitEncoder *e, VitEncoderActs *a, Arena *ar, int B, int ntok,
                        TStackMode mode)
{
    layout(e, a, ar, B, ntok, mode, 1);
}

void vit_encoder_layout_all_tokens(const VitEncoder *e, VitEncoderActs *a, Arena *ar, int B,
                                   int ntok, TStackMode mode)
{
    layout(e, a, ar, B, ntok, mode, 0);
}

void vit_encoder_forward(const VitEncoder *e, VitEncoderActs *a, const ParamSet *ps,
                         const float *patches, int N, const int *idx, int idx_ld, const float *pos)
{
    vit_encoder_forward_act(e, a, ps, (Act){(void *)patches, DTYPE_F32}, N, idx, idx_ld, pos);
}

void vit_encoder_forward_act(const VitEncoder *e, VitEncoderActs *a, const ParamSet *ps,
                             Act patches, int N, const int *idx, int idx_ld, const float *pos)
{
    const AliceBackend *be = ps->be;
    if (a->patches_sel.p) {
        const float *in = act_f32(patches);  /* the gathers read fp32 patches */
        if (a->patches_sel.type == DTYPE_BF16)
            be->gather_rows_bf16(a->patches_sel.p, in, idx, idx_ld, a->B, N, a->ntok, e->P);
        else
            be->gather_rows(a->patches_sel.p, in, idx, idx_ld, a->B, N, a->ntok, e->P);
        a->pe_in = a->patches_sel;
    } else {  /* all tokens in order: the gathered copy would equal patches */
        ALICE_ASSERT(a->ntok == N, "vit encoder laid out for all tokens run on %d of %d tokens",
                     a->ntok, N);
        a->pe_in = patches;
    }
    act_linear_fwd(ps, e->pe_w, e->pe_b, (Act){a->st.x0, DTYPE_F32}, a->pe_in, NULL,
                   a->B * a->ntok, e->P, e->width);
    be->add_table_rows(a->st.x0, pos, idx, idx_ld, a->B, a->ntok, e->width);
    tstack_forward(&e->stack, &a->st, ps);
}

void vit_encoder_backward(const VitEncoder *e, VitEncoderActs *a, ParamSet *ps, const float *dout)
{
    vit_encoder_backward_taps(e, a, ps, dout, NULL);
}

void vit_encoder_backward_taps(const VitEncoder *e, VitEncoderActs *a, ParamSet *ps,
                               const float *dout, const float *const *dtaps)
{
    tstack_backward_taps(&e->stack, &a->st, ps, dout, dtaps, a->dtokens);
    /* The position embedding is fixed and the patches are data: only the weights get gradients. */
    ALICE_ASSERT(a->pe_in.p, "vit encoder backward before its forward");
    act_linear_bwd(ps, e->pe_w, e->pe_b, NULL, a->dtokens, a->pe_in, a->B * a->ntok, e->P,
                   e->width);
    params_grads_ready(ps, e->pe_params);
}

double vit_encoder_forward_flops(const VitEncoder *e, int B, int ntok)
{
    return 2.0 * B * ntok * (double)e->P * e->width + tstack_forward_flops(&e->stack, B, ntok);
}
