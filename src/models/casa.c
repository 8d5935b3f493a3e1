#include "models/casa.h"

#include <stdio.h>

#include "core/check.h"
#include "nn/act.h"
#include "nn/layers.h"
#include "nn/transformer.h"

void casa_register(Casa *c, ParamSet *ps, const char *prefix, int qdim, int kvdim, int dim, int out)
{
    c->qdim = qdim;
    c->kvdim = kvdim;
    c->dim = dim;
    c->out = out;
    char name[PARAM_NAME_MAX];
    int unused;
    snprintf(name, sizeof name, "%s.norm_q", prefix);
    register_layernorm(ps, name, qdim, &c->norm_q_w, &c->norm_q_b);
    snprintf(name, sizeof name, "%s.norm_kv", prefix);
    register_layernorm(ps, name, kvdim, &c->norm_kv_w, &c->norm_kv_b);
    snprintf(name, sizeof name, "%s.q", prefix);
    register_linear(ps, name, qdim, dim, 0, &c->q_w, &unused);
    snprintf(name, sizeof name, "%s.k", prefix);
    register_linear(ps, name, kvdim, dim, 0, &c->k_w, &unused);
    snprintf(name, sizeof name, "%s.v", prefix);
    register_linear(ps, name, kvdim, dim, 0, &c->v_w, &unused);
    snprintf(name, sizeof name, "%s.zeta", prefix);
    register_linear(ps, name, dim, out, 1, &c->zeta_w, &c->zeta_b);
}

void casa_query_layout(const Casa *c, CasaQuery *q, Arena *ar, int B, int Tq, int train)
{
    size_t r = (size_t)B * Tq;
    q->B = B;
    q->Tq = Tq;
    q->lnq = arena_act(ar, r * c->qdim, ar->act_type);
    q->mean = arena_floats(ar, r);
    q->rstd = arena_floats(ar, r);
    q->q = arena_floats(ar, r * c->dim);
    q->dq = train ? arena_floats(ar, r * c->dim) : NULL;
    q->dlnq = train ? arena_floats(ar, r * c->qdim) : NULL;
    q->dV = train ? arena_floats(ar, r * c->qdim) : NULL;
}

void casa_kv_layout(const Casa *c, CasaKV *kv, Arena *ar, int B, int Tq, int Tk, int train)
{
    size_t rk = (size_t)B * Tk, rq = (size_t)B * Tq;
    kv->B = B;
    kv->Tk = Tk;
    kv->train = train;
    kv->lnkv = arena_act(ar, rk * c->kvdim, ar->act_type);
    kv->mean = arena_floats(ar, rk);
    kv->rstd = arena_floats(ar, rk);
    kv->k = arena_floats(ar, rk * c->dim);
    kv->v = arena_floats(ar, rk * c->dim);
    /* forward only (the teacher): attention saves nothing, probs = NULL */
    kv->probs = train ? arena_floats(ar, ar->be->attention_saved_floats(B, 1, Tq, Tk, c->dim))
                      : NULL;
    kv->att = arena_floats(ar, rq * c->dim);
    kv->out = arena_floats(ar, rq * c->out);
    if (!train) return;
    kv->dout = arena_floats(ar, rq * c->out);
    kv->datt = arena_floats(ar, rq * c->dim);
    kv->dk = arena_floats(ar, rk * c->dim);
    kv->dv = arena_floats(ar, rk * c->dim);
    kv->dlnkv = arena_floats(ar, rk * c->kvdim);
    kv->dlnkv2 = arena_floats(ar, rk * c->kvdim);
    kv->dfeat = arena_floats(ar, rk * c->kvdim);
}

void casa_query_forward(const Casa *c, CasaQuery *q, const ParamSet *ps, const float *V)
{
    const int R = q->B * q->Tq;
    act_layernorm_fwd(ps->be, q->lnq, q->mean, q->rstd, V, param(ps, c->norm_q_w),
                      param(ps, c->norm_q_b), R, c->qdim, LAYERNORM_EPS);
    act_linear_fwd(ps, c->q_w, NO_PARAM, (Act){q->q, DTYPE_F32}, q->lnq, NULL, R, c->qdim,
                   c->dim);
}

void casa_kv_forward(const Casa *c, const CasaQuery *q, CasaKV *kv, const ParamSet *ps, const float *feat)
{
    const AliceBackend *be = ps->be;
    const int Rk = kv->B * kv->Tk;
    act_layernorm_fwd(be, kv->lnkv, kv->mean, kv->rstd, feat, param(ps, c->norm_kv_w),
                      param(ps, c->norm_kv_b), Rk, c->kvdim, LAYERNORM_EPS);
    act_linear_fwd(ps, c->k_w, NO_PARAM, (Act){kv->k, DTYPE_F32}, kv->lnkv, NULL, Rk, c->kvdim,
                   c->dim);
    act_linear_fwd(ps, c->v_w, NO_PARAM, (Act){kv->v, DTYPE_F32}, kv->lnkv, NULL, Rk, c->kvdim,
                   c->dim);
    be->attention_fwd(kv->att, kv->probs, q->q, kv->k, kv->v, kv->B, 1, q->Tq, kv->Tk, c->dim,
                      c->dim, c->dim);
    linear_forward(ps, c->zeta_w, c->zeta_b, kv->out, kv->att, kv->B * q->Tq, c->dim, c->out);
}

void casa_kv_backward(const Casa *c, CasaQuery *q, CasaKV *kv, ParamSet *ps, const float *feat)
{
    const AliceBackend *be = ps->be;
    const int Rq = kv->B * q->Tq, Rk = kv->B * kv->Tk;
    ALICE_ASSERT(kv->train, "casa backward through a key/value pair laid out forward only");
    linear_backward(ps, c->zeta_w, c->zeta_b, kv->datt, kv->dout, kv->att, Rq, c->dim, c->out);
    be->attention_bwd(q->dq, kv->dk, kv->dv, kv->datt, q->q, kv->k, kv->v, kv->att, kv->probs,
                      kv->B, 1, q->Tq, kv->Tk, c->dim, c->dim, c->dim);
    act_linear_bwd(ps, c->k_w, NO_PARAM, kv->dlnkv, kv->dk, kv->lnkv, Rk, c->kvdim, c->dim);
    act_linear_bwd(ps, c->v_w, NO_PARAM, kv->dlnkv2, kv->dv, kv->lnkv, Rk, c->kvdim, c->dim);
    be->add(kv->dlnkv, kv->dlnkv, kv->dlnkv2, (size_t)Rk * c->kvdim);
    be->layernorm_bwd(kv->dfeat, NULL, param_grad(ps, c->norm_kv_w), param_grad(ps, c->norm_kv_b),
                      kv->dlnkv, feat, kv->mean, kv->rstd, param(ps, c->norm_kv_w), Rk, c->kvdim);
}

void casa_query_backward(const Casa *c, CasaQuery *q, ParamSet *ps, const float *V)
{
    const int R = q->B * q->Tq;
    act_linear_bwd(ps, c->q_w, NO_PARAM, q->dlnq, q->dq, q->lnq, R, c->qdim, c->dim);
    ps->be->layernorm_bwd(q->dV, NULL, param_grad(ps, c->norm_q_w), param_grad(ps, c->norm_q_b),
                          q->dlnq, V, q->mean, q->rstd, param(ps, c->norm_q_w), R, c->qdim);
}
