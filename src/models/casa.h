/* CASA, the conditional anatomical semantic alignment module (eqs. 3-4), in two forms.
 *
 * single (the paper's eqs. 3-4, the default): queries from the online encoder's visible tokens
 * LN_q(V) W_q, keys and values from LN_kv(features) W_k, W_v where features are phi(H)
 * (student, S) or psi(Yd) (teacher, T), or with casa_kv = features H and Yd themselves (kvdim
 * wide), single-head scaled dot-product attention, output projection zeta.
 *
 * transformer (the released code's cross-attention layer, casa_layer = transformer): the query
 * token is first projected into the heads' output space, x0 = LN_q(V) W_in + b_in, and the
 * layer is post-norm with residuals from it:
 *   q = x0 W_q, k = LN_kv(f) W_k, v = LN_kv(f) W_v, a = MHA(q, k, v; heads)
 *   y1 = LN_1(x0 + zeta(a)),  y = LN_2(y1 + W_f2 relu(W_f1 y1 + b_f1) + b_f2)
 * S and T share x0, so their difference is bounded by the LayerNorms around it.
 *
 * Either way the query path is computed once per view and shared by S and T; T is computed
 * with the same weights and no gradient. */
#ifndef ALICE_CASA_H
#define ALICE_CASA_H

#include "nn/act.h"
#include "nn/arena.h"
#include "nn/params.h"

typedef struct {
    int qdim, kvdim, dim, out;
    int transformer, heads, ffn;   /* heads = 1 for the single form */
    int norm_q_w, norm_q_b, norm_kv_w, norm_kv_b, q_w, k_w, v_w, zeta_w, zeta_b;
    /* transformer only (NO_PARAM otherwise) */
    int in_w, in_b, norm1_w, norm1_b, ffn1_w, ffn1_b, ffn2_w, ffn2_b, norm2_w, norm2_b;
} Casa;

/* Query path of one view: [B, Tq] tokens. */
/* The LayerNorm outputs lnq and lnkv are read only as GEMM operands (the q, k, v layers'
 * forward and weight gradient), so with bf16 activations they are stored in bf16 by the
 * LayerNorm itself (the value the bf16 GEMMs would round them to: no rounding launch each). */
typedef struct {
    int B, Tq;
    Act lnq;
    float *mean, *rstd, *q;
    float *x0;                    /* transformer: the projected query token [B*Tq, out] */
    float *dq, *dlnq, *dV;        /* training: dV is the gradient reaching V */
    float *dx0;                   /* transformer, training */
} CasaQuery;

/* Key/value path and output of one (query, features) pair: [B, Tk] feature tokens. */
typedef struct {
    int B, Tk, train;
    Act lnkv;
    float *mean, *rstd, *k, *v, *probs, *att, *out;
    float *dout, *datt, *dk, *dv, *dlnkv, *dlnkv2, *dfeat;   /* training; dfeat w.r.t. features */
    /* transformer: z1 = x0 + zeta(att), y1 = LN_1(z1), hpre = y1 W_f1 + b_f1, h = relu(hpre),
     * z2 = y1 + h W_f2 + b_f2, out = LN_2(z2); and their gradients when training */
    float *z1, *y1, *mean1, *rstd1, *hpre, *h, *z2, *mean2, *rstd2;
    float *dz2, *dh, *dy1, *dz1;
} CasaKV;

/* heads and ffn: casa_layer = transformer with that many heads and feed-forward width;
 * transformer = 0 gives the single form (heads and ffn unused). */
void casa_register(Casa *c, ParamSet *ps, const char *prefix, int qdim, int kvdim, int dim, int out,
                   int transformer, int heads, int ffn);
void casa_query_layout(const Casa *c, CasaQuery *q, Arena *ar, int B, int Tq, int train);
void casa_kv_layout(const Casa *c, CasaKV *kv, Arena *ar, int B, int Tq, int Tk, int train);
void casa_query_forward(const Casa *c, CasaQuery *q, const ParamSet *ps, const float *V);
void casa_kv_forward(const Casa *c, const CasaQuery *q, CasaKV *kv, const ParamSet *ps, const float *feat);
/* Uses kv->dout; writes kv->dfeat and q->dq (single) or q->dx0 (transformer), overwritten:
 * each query path has exactly one trained key/value pair, the student one; the teacher pair
 * carries no gradient. */
void casa_kv_backward(const Casa *c, CasaQuery *q, CasaKV *kv, ParamSet *ps, const float *feat);
/* Uses q->dq / q->dx0 from casa_kv_backward; writes q->dV. */
void casa_query_backward(const Casa *c, CasaQuery *q, ParamSet *ps, const float *V);
/* Matmul FLOPs of one forward of the query path ([B, Tq]) and of one key/value pair. */
double casa_query_flops(const Casa *c, int B, int Tq);
double casa_kv_flops(const Casa *c, int B, int Tq, int Tk);

#endif
