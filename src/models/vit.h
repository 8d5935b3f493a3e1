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
    float *patches_sel;   /* [B, ntok, P] */
    float *dtokens;       /* gradient w.r.t. the embedded tokens (training only) */
    TStackActs st;        /* st.out: encoder output [B, ntok, E] */
} VitEncoderActs;

void vit_encoder_register(VitEncoder *e, ParamSet *ps, const char *prefix, int patch, int width,
                          int heads, int mlp, int depth);
void vit_encoder_layout(const VitEncoder *e, VitEncoderActs *a, Arena *ar, int B, int ntok,
                        TStackMode mode);
/* patches [B, N, P]; the ntok tokens of sample b are idx[b*idx_ld + j]; pos [N, E]. */
void vit_encoder_forward(const VitEncoder *e, VitEncoderActs *a, const ParamSet *ps,
                         const float *patches, int N, const int *idx, int idx_ld, const float *pos);
/* dout [B, ntok, E]: accumulates parameter gradients (the input has none). */
void vit_encoder_backward(const VitEncoder *e, VitEncoderActs *a, ParamSet *ps, const float *dout);
/* Same, plus gradients w.r.t. the outputs of blocks i (dtaps[i], NULL for none; UNETR's skips
 * read a.st.act[i].out). */
void vit_encoder_backward_taps(const VitEncoder *e, VitEncoderActs *a, ParamSet *ps,
                               const float *dout, const float *const *dtaps);
double vit_encoder_forward_flops(const VitEncoder *e, int B, int ntok);

#endif
