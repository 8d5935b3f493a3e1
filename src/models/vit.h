/* 3D ViT encoder (MONAI ViT names): linear patch embedding of the selected patches, fixed
 * sin-cos position embedding, pre-norm transformer blocks, final LayerNorm. It runs on any
 * subset of tokens: the visible ones of a masked view, or all of them (identity index). */
#ifndef ALICE_VIT_H
#define ALICE_VIT_H

#include "nn/transformer.h"

typedef struct {
    int patch, P, width;
    int pe_w, pe_b;       /* patch_embedding.patch_embeddings.{weight [E,1,p,p,p], bias} */
    ParamRange pe_params; /* the two above, reported done after the last op of backward */
    TStack stack;
} VitEncoder;

typedef struct {
    int B, ntok;
    /* [B, ntok, P], the gathered tokens, in the arena's act_type (bf16: rounded by the gather
     * itself, gather_rows_bf16, the patch embedding's GEMM operand; the embedding's forward and
     * weight gradient round it by no launch of their own); p NULL: laid out for all tokens */
    Act patches_sel;
    Act pe_in;            /* what the patch embedding read (patches_sel or the caller's patches),
                           * set by forward: backward's x */
    float *dtokens;       /* gradient w.r.t. the embedded tokens (training only) */
    TStackActs st;        /* st.out: encoder output [B, ntok, E] */
} VitEncoderActs;

void vit_encoder_register(VitEncoder *e, ParamSet *ps, const char *prefix, int patch, int width,
                          int heads, int mlp, int depth);
void vit_encoder_layout(const VitEncoder *e, VitEncoderActs *a, Arena *ar, int B, int ntok,
                        TStackMode mode);
/* vit_encoder_layout for a forward on ALL N tokens in order (ntok = N; the EMA teacher's intact
 * views): the patch embedding reads the caller's patches as they are, so no gathered [B, N, P]
 * copy is laid out nor made (for the paper's teacher batch a 151 MB buffer and a copy pass over
 * it). Forward's idx must then be the identity (only the position embedding reads it). */
void vit_encoder_layout_all_tokens(const VitEncoder *e, VitEncoderActs *a, Arena *ar, int B,
                                   int ntok, TStackMode mode);
/* patches [B, N, P]; the ntok tokens of sample b are idx[b*idx_ld + j]; pos [N, E]. patches is
 * read again by backward when laid out for all tokens (keep it unchanged until then). */
void vit_encoder_forward(const VitEncoder *e, VitEncoderActs *a, const ParamSet *ps,
                         const float *patches, int N, const int *idx, int idx_ld, const float *pos);
/* vit_encoder_forward on patches of either type: a bf16 patches (patchify_bf16: the EMA
 * target's intact views, whose patches nothing else reads) only with vit_encoder_layout_all_tokens,
 * read by the patch embedding's GEMM as they are (the bits its fp32 operand path would round
 * them to). */
void vit_encoder_forward_act(const VitEncoder *e, VitEncoderActs *a, const ParamSet *ps,
                             Act patches, int N, const int *idx, int idx_ld, const float *pos);
/* dout [B, ntok, E]: accumulates parameter gradients (the input has none). */
void vit_encoder_backward(const VitEncoder *e, VitEncoderActs *a, ParamSet *ps, const float *dout);
/* Same, plus gradients w.r.t. the outputs of blocks i (dtaps[i], NULL for none; UNETR's skips
 * read a.st.act[i].out). */
void vit_encoder_backward_taps(const VitEncoder *e, VitEncoderActs *a, ParamSet *ps,
                               const float *dout, const float *const *dtaps);
double vit_encoder_forward_flops(const VitEncoder *e, int B, int ntok);

#endif
