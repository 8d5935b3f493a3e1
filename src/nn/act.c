#include "nn/act.h"

#include <string.h>

#include "core/check.h"
#include "nn/layers.h"

DType act_type_for_precision(const char *precision, int bf16_activations)
{
    return strcmp(precision, "bf16") == 0 && bf16_activations ? DTYPE_BF16 : DTYPE_F32;
}

void arena_plan_mixed(Arena *a, const AliceBackend *be, const char *precision,
                      int bf16_activations, int bf16_branch_out)
{
    arena_plan(a, be, act_type_for_precision(precision, bf16_activations));
    a->bf16_branches = a->act_type == DTYPE_BF16 && bf16_branch_out;
}

Act arena_act(Arena *a, size_t n, DType t)
{
    /* arena_floats hands out 256-byte aligned blocks: ask for enough floats to hold n of t */
    const size_t floats = (n * dtype_bytes(t) + sizeof(float) - 1) / sizeof(float);
    return (Act){arena_floats(a, floats), t};
}

Act act_offset(Act a, size_t elems)
{
    return (Act){(char *)a.p + elems * dtype_bytes(a.type), a.type};
}

float *act_f32(Act a)
{
    ALICE_ASSERT(a.type == DTYPE_F32, "an fp32 tensor was expected, this one is bf16");
    return a.p;
}

static void same_type(Act a, Act b, const char *op)
{
    ALICE_ASSERT(a.type == b.type, "%s: tensors of different element types (%d, %d)", op,
                 (int)a.type, (int)b.type);
}

void act_layernorm_fwd(const AliceBackend *be, Act y, float *mean, float *rstd, const float *x,
                       const float *gamma, const float *beta, int rows, int dim, float eps)
{
    if (y.type == DTYPE_BF16)
        be->layernorm_fwd_bf16(y.p, mean, rstd, x, gamma, beta, rows, dim, eps);
    else
        be->layernorm_fwd(y.p, mean, rstd, x, gamma, beta, rows, dim, eps);
}

void act_linear_fwd(const ParamSet *ps, int w, int b, Act y, Act x, const float *residual,
                    int rows, int in, int out)
{
    if (x.type == DTYPE_BF16) {
        ps->be->linear_fwd_bf16(y.p, y.type, x.p, param(ps, w), b == NO_PARAM ? NULL : param(ps, b),
                                residual, rows, in, out);
    } else {
        const size_t n = (size_t)rows * out;
        backend_check_residual("act_linear_fwd", y.p, y.type, residual, n);
        float *yf = act_f32(y);
        linear_forward(ps, w, b, yf, x.p, rows, in, out);
        if (residual) ps->be->add(yf, yf, residual, n);
    }
}

void act_linear_bwd(ParamSet *ps, int w, int b, float *dx, const float *dy, Act x, int rows,
                    int in, int out)
{
    if (x.type == DTYPE_BF16)
        ps->be->linear_bwd_bf16(dx, param_grad(ps, w), b == NO_PARAM ? NULL : param_grad(ps, b),
                                dy, x.p, param(ps, w), rows, in, out);
    else
        linear_backward(ps, w, b, dx, dy, x.p, rows, in, out);
}

void act_linear_bwd_dx(ParamSet *ps, int w, int b, Act dx, const float *dy, Act x, int rows,
                       int in, int out)
{
    if (dx.type == DTYPE_F32) {
        act_linear_bwd(ps, w, b, dx.p, dy, x, rows, in, out);
        return;
    }
    ALICE_ASSERT(x.type == DTYPE_BF16, "linear backward: a bf16 dx needs a bf16 x");
    ps->be->linear_bwd_bf16_dx16(dx.p, param_grad(ps, w),
                                 b == NO_PARAM ? NULL : param_grad(ps, b), dy, x.p, param(ps, w),
                                 rows, in, out);
}

void act_linear_bwd_dy(ParamSet *ps, int w, int b, float *dx, Act dy, Act x, int rows, int in,
                       int out)
{
    if (dy.type == DTYPE_F32) {
        act_linear_bwd(ps, w, b, dx, dy.p, x, rows, in, out);
        return;
    }
    ALICE_ASSERT(x.type == DTYPE_BF16, "linear backward: a bf16 dy needs a bf16 x");
    ALICE_ASSERT(b == NO_PARAM, "linear backward: a bf16 dy only for a layer without bias (the "
                 "bias gradient sums the unrounded fp32 dy)");
    ps->be->linear_bwd_bf16_dy16(dx, param_grad(ps, w), dy.p, x.p, param(ps, w), rows, in, out);
}

void act_linear_bwd_presummed(ParamSet *ps, int w, Act dx, const bf16_t *dy16, Act x,
                              int rows, int in, int out)
{
    ALICE_ASSERT(x.type == DTYPE_BF16, "linear backward: a bf16 dy needs a bf16 x");
    if (dx.type == DTYPE_BF16)
        ps->be->linear_bwd_bf16_dy16_dx16(dx.p, param_grad(ps, w), dy16, x.p, param(ps, w), rows,
                                          in, out);
    else
        ps->be->linear_bwd_bf16_dy16(dx.p, param_grad(ps, w), dy16, x.p, param(ps, w), rows, in,
                                     out);
}

void act_gelu_fwd(const AliceBackend *be, Act y, Act x, size_t n)
{
    same_type(y, x, "gelu_fwd");
    if (x.type == DTYPE_BF16) be->gelu_fwd_bf16(y.p, x.p, n);
    else be->gelu_fwd(y.p, x.p, n);
}

void act_gelu_bwd(const AliceBackend *be, float *dx, const float *dy, Act x, size_t n)
{
    if (x.type == DTYPE_BF16) be->gelu_bwd_bf16(dx, dy, x.p, n);
    else be->gelu_bwd(dx, dy, x.p, n);
}

void act_linear_gelu_bwd(ParamSet *ps, int w, int b, float *dx, const float *dy_act, Act h,
                         float *dh_scratch, Act x, int rows, int in, int out)
{
    if (h.type == DTYPE_BF16 && x.type == DTYPE_BF16) {
        ps->be->linear_gelu_bwd_bf16(dx, param_grad(ps, w),
                                     b == NO_PARAM ? NULL : param_grad(ps, b), dy_act, h.p,
                                     dh_scratch, x.p, param(ps, w), rows, in, out);
        return;
    }
    act_gelu_bwd(ps->be, dh_scratch, dy_act, h, (size_t)rows * out);
    act_linear_bwd(ps, w, b, dx, dh_scratch, x, rows, in, out);
}

void act_linear_gelu_bwd_dy(ParamSet *ps, int w, int b, float *dx, Act dy_act, Act h,
                            float *dh_scratch, Act x, int rows, int in, int out)
{
    if (dy_act.type == DTYPE_F32) {
        act_linear_gelu_bwd(ps, w, b, dx, dy_act.p, h, dh_scratch, x, rows, in, out);
        return;
    }
    ALICE_ASSERT(h.type == DTYPE_BF16 && x.type == DTYPE_BF16,
                 "GELU-linear backward: a bf16 dy_act needs bf16 h and x");
    ps->be->linear_gelu_bwd_bf16_dy16(dx, param_grad(ps, w),
                                      b == NO_PARAM ? NULL : param_grad(ps, b), dy_act.p, h.p,
                                      dh_scratch, x.p, param(ps, w), rows, in, out);
}

void act_attention_fwd(const AliceBackend *be, Act out, float *saved, Act q, Act k, Act v,
                       int B, int H, int Tq, int Tk, int Dh, int ldq, int ldkv)
{
    same_type(out, q, "attention_fwd");
    same_type(q, k, "attention_fwd");
    same_type(k, v, "attention_fwd");
    if (q.type == DTYPE_BF16)
        be->attention_fwd_bf16(out.p, saved, q.p, k.p, v.p, B, H, Tq, Tk, Dh, ldq, ldkv);
    else
        be->attention_fwd(out.p, saved, q.p, k.p, v.p, B, H, Tq, Tk, Dh, ldq, ldkv);
}

void act_attention_bwd(const AliceBackend *be, Act dq, Act dk, Act dv, const float *dout, Act q,
                       Act k, Act v, Act out, const float *saved, int B, int H, int Tq, int Tk,
                       int Dh, int ldq, int ldkv)
{
    same_type(out, q, "attention_bwd");
    same_type(q, k, "attention_bwd");
    same_type(k, v, "attention_bwd");
    /* the gradients' one type: that of the first one given (absent ones: p NULL) */
    const Act grads[] = {dq, dk, dv};
    DType grad_type = DTYPE_F32;
    int typed = 0;
    for (int i = 0; i < 3; i++) {
        if (!grads[i].p) continue;
        if (typed) ALICE_ASSERT(grads[i].type == grad_type,
                                "attention_bwd: gradients of different element types");
        grad_type = grads[i].type;
        typed = 1;
    }
    if (grad_type == DTYPE_BF16) {
        ALICE_ASSERT(q.type == DTYPE_BF16, "attention_bwd: bf16 gradients need bf16 q, k, v");
        be->attention_bwd_bf16_grad16(dq.p, dk.p, dv.p, dout, q.p, k.p, v.p, out.p, saved, B, H,
                                      Tq, Tk, Dh, ldq, ldkv);
    } else if (q.type == DTYPE_BF16) {
        be->attention_bwd_bf16(dq.p, dk.p, dv.p, dout, q.p, k.p, v.p, out.p, saved, B, H, Tq, Tk,
                               Dh, ldq, ldkv);
    } else {
        be->attention_bwd(dq.p, dk.p, dv.p, dout, q.p, k.p, v.p, out.p, saved, B, H, Tq, Tk, Dh,
                          ldq, ldkv);
    }
}
