/* MAE-style light transformer decoder: projects the visible encoder tokens to its width,
 * inserts the mask token at every masked position, adds the fixed position embedding, runs its
 * blocks and predicts the voxels of every patch. H (the normalised block output) is what the
 * Alice head phi reads. */
#ifndef ALICE_MAE_DECODER_H
#define ALICE_MAE_DECODER_H

#include "nn/transformer.h"

typedef struct {
    int in_width, width, P;
    int embed_w, embed_b, mask_token, pred_w, pred_b;
    TStack stack;
} MaeDecoder;

typedef struct {
    int B, N, nvis;
    float *z;        /* [B, nvis, D] projected visible tokens */
    float *pred;     /* [B, N, P] */
    float *dH;       /* [B, N, D] gradient w.r.t. H (training) */
    float *dfull;    /* [B, N, D] gradient w.r.t. the block input (training) */
    float *dz;       /* [B, nvis, D] (training) */
    TStackActs st;   /* st.x0: full token sequence; H: mae_decoder_H */
} MaeDecoderActs;

void mae_decoder_register(MaeDecoder *d, ParamSet *ps, const char *prefix, int in_width, int width,
                          int heads, int mlp, int depth, int P);
/* h_fp32: H is also read by a LayerNorm (CASA's keys, casa_kv = features), so it stays fp32
 * with bf16 activations too; 0: bf16 there (see mae_decoder_H). */
void mae_decoder_layout(const MaeDecoder *d, MaeDecoderActs *a, Arena *ar, int B, int N, int nvis,
                        int train, int h_fp32);
/* V [B, nvis, E] visible encoder tokens, perm [B, N], posD [N, D], identity [N] (0..N-1, read
 * by every sample: idx_ld 0). */
void mae_decoder_forward(const MaeDecoder *d, MaeDecoderActs *a, const ParamSet *ps,
                         const float *V, const int *perm, const float *posD, const int *identity);
/* The decoder over all N tokens of B samples, none masked, up to H (no voxel prediction, no
 * gradients): the EMA teacher's features (teacher_decoder = full). Only st and B, N, nvis = N
 * of the acts are set. V [B, N, E]. */
void mae_decoder_layout_features(const MaeDecoder *d, MaeDecoderActs *a, Arena *ar, int B, int N,
                                 int h_fp32);
void mae_decoder_forward_features(const MaeDecoder *d, MaeDecoderActs *a, const ParamSet *ps,
                                  const float *V, const float *posD, const int *identity);
/* dpred [B, N, P]; dH_extra [B, N, D] or NULL (gradient reaching H from other losses);
 * dV [B, nvis, E] overwritten. */
void mae_decoder_backward(const MaeDecoder *d, MaeDecoderActs *a, ParamSet *ps, const float *V,
                          const int *perm, const float *dpred, const float *dH_extra, float *dV);
/* H [B, N, D], the normalised block output (pred's and phi's input): bf16 with bf16
 * activations (the stack's final LayerNorm stores it rounded: tstack_layout_gemm_output) unless
 * laid out with h_fp32, else fp32. */
Act mae_decoder_H(const MaeDecoderActs *a);
double mae_decoder_forward_flops(const MaeDecoder *d, int B, int N, int nvis);
/* The same without the voxel prediction: what mae_decoder_forward_features costs (nvis = N). */
double mae_decoder_features_flops(const MaeDecoder *d, int B, int N, int nvis);

#endif
