/* CASA, the conditional anatomical semantic alignment module (eqs. 3-4): queries from the
 * online encoder's visible tokens LN_q(V) W_q, keys and values from LN_kv(features) W_k, W_v
 * where features are phi(H) (student, S) or psi(Y) (teacher, T), single-head scaled
 * dot-product attention, output projection zeta. The query path is computed once per view
 * and shared by S and T; T is computed with the same weights and no gradient. */
#ifndef ALICE_CASA_H
#define ALICE_CASA_H

#include "nn/act.h"
#include "nn/arena.h"
#include "nn/params.h"

typedef struct {
    int qdim, kvdim, dim, out;
    int norm_q_w, norm_q_b, norm_kv_w, norm_kv_b, q_w, k_w, v_w, zeta_w, zeta_b;
} Casa;

/* Query path of one view: [B, Tq] tokens. */
/* The LayerNorm outputs lnq and lnkv are read only as GEMM operands (the q, k, v layers'
 * forward and weight gradient), so with bf16 activations they are stored in bf16 by the
 * LayerNorm itself (the value the bf16 GEMMs would round them to: no rounding launch each). */
typedef struct {
    int B, Tq;
    Act lnq;
    float *mean, *rstd, *q;
    float *dq, *dlnq, *dV;        /* training: dV is the gradient reaching V */
} CasaQuery;

/* Key/value path and output of one (query, features) pair: [B, Tk] feature tokens. */
typedef struct {
    int B, Tk, train;
    Act lnkv;
    float *mean, *rstd, *k, *v, *probs, *att, *out;
    float *dout, *datt, *dk, *dv, *dlnkv, *dlnkv2, *dfeat;   /* training; dfeat w.r.t. features */
} CasaKV;

void casa_register(Casa *c, ParamSet *ps, const char *prefix, int qdim, int kvdim, int dim, int out);
void casa_query_layout(const Casa *c, CasaQuery *q, Arena *ar, int B, int Tq, int train);
void casa_kv_layout(const Casa *c, CasaKV *kv, Arena *ar, int B, int Tq, int Tk, int train);
void casa_query_forward(const Casa *c, CasaQuery *q, const ParamSet *ps, const float *V);
void casa_kv_forward(const Casa *c, const CasaQuery *q, CasaKV *kv, const ParamSet *ps, const float *feat);
/* Uses kv->dout; writes kv->dfeat and q->dq (overwritten: each query path has exactly one
 * trained key/value pair, the student one; the teacher pair carries no gradient). */
void casa_kv_backward(const Casa *c, CasaQuery *q, CasaKV *kv, ParamSet *ps, const float *feat);
/* Uses q->dq from casa_kv_backward; writes q->dV. */
void casa_query_backward(const Casa *c, CasaQuery *q, ParamSet *ps, const float *V);

#endif
