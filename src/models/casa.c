#include "models/casa.h"

#include <stdio.h>

#include "core/check.h"
#include "nn/act.h"
#include "nn/layers.h"
#include "nn/transformer.h"

void casa_register(Casa *c, ParamSet *ps, const char *prefix, int qdim, int kvdim, int dim, int out,
                   int transformer, int heads, int ffn)
{
    c->qdim = qdim;
    c->kvdim = kvdim;
    c->dim = dim;
    c->out = out;
    c->transformer = transformer;
    c->heads = transformer ? heads : 1;
    c->ffn = transformer ? ffn : 0;
    ALICE_ASSERT(dim % c->heads == 0, "casa: width %d over %d heads", dim, c->heads);
    char name[PARAM_NAME_MAX];
    int unused;
    /* The single form's tensors in their order (its checkpoints' layout), the layer's after. */
    snprintf(name, sizeof name, "%s.norm_q", prefix);
    register_layernorm(ps, name, qdim, &c->norm_q_w, &c->norm_q_b);
    snprintf(name, sizeof name, "%s.norm_kv", prefix);
    register_layernorm(ps, name, kvdim, &c->norm_kv_w, &c->norm_kv_b);
    snprintf(name, sizeof name, "%s.q", prefix);
    register_linear(ps, name, transformer ? out : qdim, dim, 0, &c->q_w, &unused);
    snprintf(name, sizeof name, "%s.k", prefix);
    register_linear(ps, name, kvdim, dim, 0, &c->k_w, &unused);
    snprintf(name, sizeof name, "%s.v", prefix);
    register_linear(ps, name, kvdim, dim, 0, &c->v_w, &unused);
    snprintf(name, sizeof name, "%s.zeta", prefix);
    register_linear(ps, name, dim, out, 1, &c->zeta_w, &c->zeta_b);
    c->in_w = c->in_b = c->norm1_w = c->norm1_b = c->ffn1_w = c->ffn1_b = NO_PARAM;
    c->ffn2_w = c->ffn2_b = c->norm2_w = c->norm2_b = NO_PARAM;
    if (!transformer) return;
    snprintf(name, sizeof name, "%s.q_in", prefix);
    register_linear(ps, name, qdim, out, 1, &c->in_w, &c->in_b);
    snprintf(name, sizeof name, "%s.norm1", prefix);
    register_layernorm(ps, name, out, &c->norm1_w, &c->norm1_b);
    snprintf(name, sizeof name, "%s.ffn1", prefix);
    register_linear(ps, name, out, ffn, 1, &c->ffn1_w, &c->ffn1_b);
    snprintf(name, sizeof name, "%s.ffn2", prefix);
    register_linear(ps, name, ffn, out, 1, &c->ffn2_w, &c->ffn2_b);
    snprintf(name, sizeof name, "%s.norm2", prefix);
    register_layernorm(ps, name, out, &c->norm2_w, &c->norm2_b);
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
    q->x0 = c->transformer ? arena_floats(ar, r * c->out) : NULL;
    q->dq = train ? arena_floats(ar, r * c->dim) : NULL;
    q->dlnq = train ? arena_floats(ar, r * c->qdim) : NULL;
    q->dV = train ? arena_floats(ar, r * c->qdim) : NULL;
    q->dx0 = train && c->transformer ? arena_floats(ar, r * c->out) : NULL;
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
    kv->probs = train ? arena_floats(ar, ar->be->attention_saved_floats(B, c->heads, Tq, Tk,
                                                                        c->dim / c->heads))
                      : NULL;
    kv->att = arena_floats(ar, rq * c->dim);
    kv->out = arena_floats(ar, rq * c->out);
    kv->z1 = kv->y1 = kv->mean1 = kv->rstd1 = kv->hpre = kv->h = NULL;
    kv->z2 = kv->mean2 = kv->rstd2 = kv->dz2 = kv->dh = kv->dy1 = kv->dz1 = NULL;
    if (c->transformer) {
        kv->z1 = arena_floats(ar, rq * c->out);
        kv->y1 = arena_floats(ar, rq * c->out);
        kv->mean1 = arena_floats(ar, rq);
        kv->rstd1 = arena_floats(ar, rq);
        kv->hpre = arena_floats(ar, rq * c->ffn);
        kv->h = arena_floats(ar, rq * c->ffn);
        kv->z2 = arena_floats(ar, rq * c->out);
        kv->mean2 = arena_floats(ar, rq);
        kv->rstd2 = arena_floats(ar, rq);
    }
    if (!train) return;
    kv->dout = arena_floats(ar, rq * c->out);
    kv->datt = arena_floats(ar, rq * c->dim);
    kv->dk = arena_floats(ar, rk * c->dim);
    kv->dv = arena_floats(ar, rk * c->dim);
    kv->dlnkv = arena_floats(ar, rk * c->kvdim);
    kv->dlnkv2 = arena_floats(ar, rk * c->kvdim);
    kv->dfeat = arena_floats(ar, rk * c->kvdim);
    if (c->transformer) {
        kv->dz2 = arena_floats(ar, rq * c->out);
        kv->dh = arena_floats(ar, rq * c->ffn);
        kv->dy1 = arena_floats(ar, rq * c->out);
        kv->dz1 = arena_floats(ar, rq * c->out);
    }
}

void casa_query_forward(const Casa *c, CasaQuery *q, const ParamSet *ps, const float *V)
{
    const int R = q->B * q->Tq;
    act_layernorm_fwd(ps->be, q->lnq, q->mean, q->rstd, V, param(ps, c->norm_q_w),
                      param(ps, c->norm_q_b), R, c->qdim, LAYERNORM_EPS);
    if (!c->transformer) {
        act_linear_fwd(ps, c->q_w, NO_PARAM, (Act){q->q, DTYPE_F32}, q->lnq, NULL, R, c->qdim,
                       c->dim);
        return;
    }
    act_linear_fwd(ps, c->in_w, c->in_b, (Act){q->x0, DTYPE_F32}, q->lnq, NULL, R, c->qdim,
                   c->out);
    linear_forward(ps, c->q_w, NO_PARAM, q->q, q->x0, R, c->out, c->dim);
}

/* The transformer form after the attention: z1 = x0 + zeta(att), y1 = LN_1(z1), the ReLU
 * feed-forward with its residual z2, out = LN_2(z2). */
static void layer_forward(const Casa *c, const CasaQuery *q, CasaKV *kv, const ParamSet *ps)
{
    const AliceBackend *be = ps->be;
    const int Rq = kv->B * q->Tq;
    act_linear_fwd(ps, c->zeta_w, c->zeta_b, (Act){kv->z1, DTYPE_F32}, (Act){kv->att, DTYPE_F32},
                   q->x0, Rq, c->dim, c->out);
    be->layernorm_fwd(kv->y1, kv->mean1, kv->rstd1, kv->z1, param(ps, c->norm1_w),
                      param(ps, c->norm1_b), Rq, c->out, LAYERNORM_EPS);
    linear_forward(ps, c->ffn1_w, c->ffn1_b, kv->hpre, kv->y1, Rq, c->out, c->ffn);
    be->leaky_relu_fwd(kv->h, kv->hpre, (size_t)Rq * c->ffn, 0.0f);   /* ReLU */
    act_linear_fwd(ps, c->ffn2_w, c->ffn2_b, (Act){kv->z2, DTYPE_F32}, (Act){kv->h, DTYPE_F32},
                   kv->y1, Rq, c->ffn, c->out);
    be->layernorm_fwd(kv->out, kv->mean2, kv->rstd2, kv->z2, param(ps, c->norm2_w),
                      param(ps, c->norm2_b), Rq, c->out, LAYERNORM_EPS);
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
    be->attention_fwd(kv->att, kv->probs, q->q, kv->k, kv->v, kv->B, c->heads, q->Tq, kv->Tk,
                      c->dim / c->heads, c->dim, c->dim);
    if (c->transformer) {
        layer_forward(c, q, kv, ps);
        return;
    }
    linear_forward(ps, c->zeta_w, c->zeta_b, kv->out, kv->att, kv->B * q->Tq, c->dim, c->out);
}

/* Backward of layer_forward from kv->dout: writes kv->datt and kv->dz1 (the gradient of
 * z1 = x0 + zeta(att), which reaches x0 through the residual). */
static void layer_backward(const Casa *c, const CasaQuery *q, CasaKV *kv, ParamSet *ps)
{
    const AliceBackend *be = ps->be;
    const int Rq = kv->B * q->Tq;
    be->layernorm_bwd(kv->dz2, NULL, param_grad(ps, c->norm2_w), param_grad(ps, c->norm2_b),
                      kv->dout, kv->z2, kv->mean2, kv->rstd2, param(ps, c->norm2_w), Rq, c->out);
    linear_backward(ps, c->ffn2_w, c->ffn2_b, kv->dh, kv->dz2, kv->h, Rq, c->ffn, c->out);
    be->leaky_relu_bwd(kv->dh, kv->dh, kv->hpre, (size_t)Rq * c->ffn, 0.0f);
    linear_backward(ps, c->ffn1_w, c->ffn1_b, kv->dy1, kv->dh, kv->y1, Rq, c->out, c->ffn);
    be->add(kv->dy1, kv->dy1, kv->dz2, (size_t)Rq * c->out);   /* z2's residual from y1 */
    be->layernorm_bwd(kv->dz1, NULL, param_grad(ps, c->norm1_w), param_grad(ps, c->norm1_b),
                      kv->dy1, kv->z1, kv->mean1, kv->rstd1, param(ps, c->norm1_w), Rq, c->out);
    linear_backward(ps, c->zeta_w, c->zeta_b, kv->datt, kv->dz1, kv->att, Rq, c->dim, c->out);
}

void casa_kv_backward(const Casa *c, CasaQuery *q, CasaKV *kv, ParamSet *ps, const float *feat)
{
    const AliceBackend *be = ps->be;
    const int Rq = kv->B * q->Tq, Rk = kv->B * kv->Tk;
    ALICE_ASSERT(kv->train, "casa backward through a key/value pair laid out forward only");
    if (c->transformer)
        layer_backward(c, q, kv, ps);
    else
        linear_backward(ps, c->zeta_w, c->zeta_b, kv->datt, kv->dout, kv->att, Rq, c->dim,
                        c->out);
    be->attention_bwd(q->dq, kv->dk, kv->dv, kv->datt, q->q, kv->k, kv->v, kv->att, kv->probs,
                      kv->B, c->heads, q->Tq, kv->Tk, c->dim / c->heads, c->dim, c->dim);
    act_linear_bwd(ps, c->k_w, NO_PARAM, kv->dlnkv, kv->dk, kv->lnkv, Rk, c->kvdim, c->dim);
    act_linear_bwd(ps, c->v_w, NO_PARAM, kv->dlnkv2, kv->dv, kv->lnkv, Rk, c->kvdim, c->dim);
    be->add(kv->dlnkv, kv->dlnkv, kv->dlnkv2, (size_t)Rk * c->kvdim);
    be->layernorm_bwd(kv->dfeat, NULL, param_grad(ps, c->norm_kv_w), param_grad(ps, c->norm_kv_b),
                      kv->dlnkv, feat, kv->mean, kv->rstd, param(ps, c->norm_kv_w), Rk, c->kvdim);
    if (!c->transformer) return;
    /* x0 feeds q and, through the residual, z1 */
    linear_backward(ps, c->q_w, NO_PARAM, q->dx0, q->dq, q->x0, Rq, c->out, c->dim);
    be->add(q->dx0, q->dx0, kv->dz1, (size_t)Rq * c->out);
}

void casa_query_backward(const Casa *c, CasaQuery *q, ParamSet *ps, const float *V)
{
    const int R = q->B * q->Tq;
    if (c->transformer)
        act_linear_bwd(ps, c->in_w, c->in_b, q->dlnq, q->dx0, q->lnq, R, c->qdim, c->out);
    else
        act_linear_bwd(ps, c->q_w, NO_PARAM, q->dlnq, q->dq, q->lnq, R, c->qdim, c->dim);
    ps->be->layernorm_bwd(q->dV, NULL, param_grad(ps, c->norm_q_w), param_grad(ps, c->norm_q_b),
                          q->dlnq, V, q->mean, q->rstd, param(ps, c->norm_q_w), R, c->qdim);
}

double casa_query_flops(const Casa *c, int B, int Tq)
{
    const double rows = (double)B * Tq;
    return c->transformer ? 2.0 * rows * ((double)c->qdim * c->out + (double)c->out * c->dim)
                          : 2.0 * rows * (double)c->qdim * c->dim;
}

double casa_kv_flops(const Casa *c, int B, int Tq, int Tk)
{
    const double rq = (double)B * Tq, rk = (double)B * Tk;
    double f = 2.0 * rk * 2.0 * c->kvdim * c->dim + 2.0 * 2.0 * rq * Tk * c->dim +
               2.0 * rq * (double)c->dim * c->out;
    if (c->transformer) f += 2.0 * rq * 2.0 * (double)c->out * c->ffn;
    return f;
}
