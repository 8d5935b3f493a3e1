/* The MLP's fc1 backward through its GELU as one backend op (linear_gelu_bwd_bf16, backend.h)
 * on the CPU backend:
 *  - its contract, bit for bit: the fused entry equals gelu_bwd_bf16 into a scratch followed
 *    by linear_bwd_bf16, with and without db, with dx and/or dW NULL, accumulating into dW and
 *    db that already hold values (outputs poisoned with NaN first: an entry never written
 *    fails);
 *  - against an independent double-precision reference of the whole backward: GELU' from its
 *    definition Phi(x) + x phi(x) with libm's erf and exp, the matmuls in double. Tolerances:
 *    dx and dW multiply dh rounded to bf16 (relative error <= 2^-9) by W rounded to bf16 (dx:
 *    2^-9 more) or by the exact bf16 x (dW), so each product is within 2^-8 (1 + 2^-10) of the
 *    exact one; fp32 accumulation of at most 45 terms adds under 45 * 2^-24. So
 *    |got - ref| <= 4e-3 * sum_k |dh_k W_k| + 1e-6 * sum_k |dy_k W_k| + 1e-7, the middle term
 *    for the GELU slope's own error (A&S erf: 1.5e-7 absolute, so Phi within 7.5e-8; cpu_expf
 *    about 1 ulp), which does not scale with dh where the slope crosses zero (x near -0.75).
 *    db sums fp32 dh (unrounded): 2e-5 * sum |dh| + 1e-6 * sum |dy|. Dropping the GELU factor,
 *    a transpose, or rounding db's terms to bf16 breaks these;
 *  - the transformer stack: one backward through tstack_backward (which now calls
 *    act_linear_gelu_bwd for fc1) gives every parameter gradient and dx0 bit for bit what the
 *    former sequence (act_gelu_bwd, then act_linear_bwd; written out below) gives, with fp32
 *    and with bf16 activations. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "bf16_ref.h"
#include "nn/act.h"
#include "nn/layers.h"
#include "nn/transformer.h"
#include "ops/backend.h"
#include "test.h"

static const AliceBackend *be;
static uint32_t next_stream = 1;

static float *randn(size_t n, float scale) { return test_randn(5151, next_stream++, n, scale); }

static bf16_t *randn_bf16(size_t n, float scale)
{
    return test_randn_bf16(5151, next_stream++, n, scale);
}

static float *copy_of(const float *x, size_t n)
{
    float *y = malloc((n ? n : 1) * sizeof(float));
    memcpy(y, x, n * sizeof(float));
    return y;
}

static size_t nans(const float *a, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += isnan(a[i]) != 0;
    return bad;
}

/* ---- the contract: fused == gelu_bwd_bf16 + linear_bwd_bf16, bit for bit ---- */

enum OutputSet { WITH_ALL, WITHOUT_DB, WITHOUT_DX, WITHOUT_DW, DB_ONLY, OUTPUT_SETS };
static const char *const output_set_names[OUTPUT_SETS] = {
    "dx, dW, db", "dx, dW (no db)", "dW, db (no dx)", "dx, db (no dW)", "db only"};

static void contract_case(int rows, int in, int out, enum OutputSet set)
{
    const size_t nh = (size_t)rows * out, nx = (size_t)rows * in, nw = (size_t)out * in;
    float *dy = randn(nh, 1.0f), *W = randn(nw, 0.2f);
    bf16_t *h = randn_bf16(nh, 1.5f), *x = randn_bf16(nx, 1.0f);
    /* dW and db accumulate: both start from earlier gradients */
    float *dW0 = randn(nw, 0.3f), *db0 = randn((size_t)out, 0.3f);
    const int has_dx = set != WITHOUT_DX && set != DB_ONLY;
    const int has_dw = set != WITHOUT_DW && set != DB_ONLY;
    const int has_db = set != WITHOUT_DB;

    float *dx_f = test_filled(nx, NAN), *dW_f = copy_of(dW0, nw), *db_f = copy_of(db0, out);
    float *dx_u = test_filled(nx, NAN), *dW_u = copy_of(dW0, nw), *db_u = copy_of(db0, out);
    float *scratch_f = test_filled(nh, NAN), *scratch_u = test_filled(nh, NAN);

    be->linear_gelu_bwd_bf16(has_dx ? dx_f : NULL, has_dw ? dW_f : NULL, has_db ? db_f : NULL,
                             dy, h, scratch_f, x, W, rows, in, out);
    be->gelu_bwd_bf16(scratch_u, dy, h, nh);
    be->linear_bwd_bf16(has_dx ? dx_u : NULL, has_dw ? dW_u : NULL, has_db ? db_u : NULL,
                        scratch_u, x, W, rows, in, out);

    const char *what = output_set_names[set];
    if (has_dx) {
        TEST_CHECK(nans(dx_f, nx) == 0, "%s %dx%dx%d: dx has unwritten entries", what, rows, in,
                   out);
        TEST_CHECK(differing_bits(dx_f, dx_u, nx) == 0, "%s %dx%dx%d: dx differs from the "
                   "unfused sequence in %zu entries", what, rows, in, out,
                   differing_bits(dx_f, dx_u, nx));
    } else {
        TEST_CHECK(nans(dx_f, nx) == nx, "%s: dx NULL, yet dx was written", what);
    }
    TEST_CHECK(differing_bits(dW_f, dW_u, nw) == 0, "%s %dx%dx%d: dW differs in %zu entries",
               what, rows, in, out, differing_bits(dW_f, dW_u, nw));
    TEST_CHECK(differing_bits(db_f, db_u, out) == 0, "%s %dx%dx%d: db differs in %zu entries",
               what, rows, in, out, differing_bits(db_f, db_u, out));
    if (!has_dw) TEST_CHECK(differing_bits(dW_f, dW0, nw) == 0, "%s: dW NULL, yet changed", what);
    if (!has_db) TEST_CHECK(differing_bits(db_f, db0, out) == 0, "%s: db NULL, yet changed", what);
    if (has_dw) TEST_CHECK(differing_bits(dW_f, dW0, nw) > nw / 2, "%s: dW did not accumulate",
                           what);

    free(dy); free(W); free(h); free(x); free(dW0); free(db0);
    free(dx_f); free(dW_f); free(db_f); free(dx_u); free(dW_u); free(db_u);
    free(scratch_f); free(scratch_u);
}

static int test_contract_bit_identical(void)
{
    for (int set = 0; set < OUTPUT_SETS; set++) {
        contract_case(37, 19, 45, (enum OutputSet)set); /* ragged */
        contract_case(64, 32, 96, (enum OutputSet)set);
    }
    return 0;
}

/* ---- independent double-precision reference of the whole backward ---- */

/* d/dx [x Phi(x)] = Phi(x) + x phi(x), from the definitions with libm. */
static double gelu_slope_exact(double x)
{
    const double Phi = 0.5 * (1.0 + erf(x / sqrt(2.0)));
    const double phi = exp(-0.5 * x * x) / sqrt(2.0 * M_PI);
    return Phi + x * phi;
}

static int test_double_reference(void)
{
    const int rows = 41, in = 23, out = 45;
    const size_t nh = (size_t)rows * out, nx = (size_t)rows * in, nw = (size_t)out * in;
    float *dy = randn(nh, 1.0f), *W = randn(nw, 0.2f);
    bf16_t *h = randn_bf16(nh, 1.5f), *x = randn_bf16(nx, 1.0f);
    float *dW0 = randn(nw, 0.3f), *db0 = randn((size_t)out, 0.3f);
    float *dx = test_filled(nx, NAN), *dW = copy_of(dW0, nw), *db = copy_of(db0, out);
    float *scratch = test_filled(nh, NAN);
    be->linear_gelu_bwd_bf16(dx, dW, db, dy, h, scratch, x, W, rows, in, out);

    double *dh = malloc(nh * sizeof(double));
    for (size_t i = 0; i < nh; i++) dh[i] = (double)dy[i] * gelu_slope_exact(bf16_value(h[i]));

    double *ref = calloc(nx + nw + out, sizeof(double)), *scale = calloc(nx + nw + out, sizeof(double));
    double *dx_ref = ref, *dW_ref = ref + nx, *db_ref = ref + nx + nw;
    double *dx_scale = scale, *dW_scale = scale + nx, *db_scale = scale + nx + nw;
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < in; j++) {
            double s = 0.0, mag = 0.0, mag_dy = 0.0;
            for (int k = 0; k < out; k++) {
                s += dh[(size_t)r * out + k] * W[(size_t)k * in + j];
                mag += fabs(dh[(size_t)r * out + k] * W[(size_t)k * in + j]);
                mag_dy += fabs((double)dy[(size_t)r * out + k] * W[(size_t)k * in + j]);
            }
            dx_ref[(size_t)r * in + j] = s;
            dx_scale[(size_t)r * in + j] = mag + 2.5e-4 * mag_dy; /* 4e-3 * (.) = 1e-6 dy term */
        }
    for (int k = 0; k < out; k++)
        for (int j = 0; j < in; j++) {
            double s = dW0[(size_t)k * in + j], mag = 0.0, mag_dy = 0.0;
            for (int r = 0; r < rows; r++) {
                const double xv = bf16_value(x[(size_t)r * in + j]);
                s += dh[(size_t)r * out + k] * xv;
                mag += fabs(dh[(size_t)r * out + k] * xv);
                mag_dy += fabs((double)dy[(size_t)r * out + k] * xv);
            }
            dW_ref[(size_t)k * in + j] = s;
            dW_scale[(size_t)k * in + j] = mag + 2.5e-4 * mag_dy + fabs(dW0[(size_t)k * in + j]);
        }
    for (int k = 0; k < out; k++) {
        double s = db0[k], mag = fabs(db0[k]), mag_dy = 0.0;
        for (int r = 0; r < rows; r++) {
            s += dh[(size_t)r * out + k];
            mag += fabs(dh[(size_t)r * out + k]);
            mag_dy += fabs(dy[(size_t)r * out + k]);
        }
        db_ref[k] = s;
        db_scale[k] = mag + 0.05 * mag_dy; /* 2e-5 * (.) = 1e-6 dy term */
    }
    test_compare_ref("dx vs double", dx, dx_ref, dx_scale, nx, 4e-3, 1e-7);
    test_compare_ref("dW vs double", dW, dW_ref, dW_scale, nw, 4e-3, 1e-7);
    test_compare_ref("db vs double", db, db_ref, db_scale, (size_t)out, 2e-5, 1e-7);

    /* Sensitivity: without the GELU factor dx is far off the reference (guards the bound). */
    size_t off = 0;
    for (size_t i = 0; i < nh; i++) scratch[i] = dy[i];
    float *dx_plain = test_filled(nx, NAN);
    be->linear_bwd_bf16(dx_plain, NULL, NULL, scratch, x, W, rows, in, out);
    for (size_t i = 0; i < nx; i++)
        off += fabs(dx_plain[i] - dx_ref[i]) > 4e-3 * dx_scale[i] + 1e-7;
    TEST_CHECK(off > nx / 2, "the tolerance cannot tell a missing GELU factor (%zu of %zu off)",
               off, nx);

    free(dy); free(W); free(h); free(x); free(dW0); free(db0); free(dx); free(dW); free(db);
    free(scratch); free(dh); free(ref); free(scale); free(dx_plain);
    return 0;
}

/* ---- the transformer stack: new path == former sequence, bit for bit ---- */

/* tstack_backward_taps as it was before act_linear_gelu_bwd (dtaps NULL): the GELU backward
 * into a->dh2, then fc1's backward on it. Kept here as the reference for the bits. */
static void former_tstack_backward(const TStack *s, TStackActs *a, ParamSet *ps,
                                   const float *dout, float *dx0)
{
    const AliceBackend *b_ = ps->be;
    const int W = s->width, M = s->mlp, H = s->heads, B = a->B, T = a->T;
    const int rows = B * T;
    const float *last = s->depth ? a->act[s->depth - 1].out : a->x0;
    float *g = s->depth ? a->g0 : dx0;
    b_->layernorm_bwd(g, NULL, param_grad(ps, s->norm_w), param_grad(ps, s->norm_b), dout, last,
                      a->out_mean, a->out_rstd, param(ps, s->norm_w), rows, W);
    for (int i = s->depth - 1; i >= 0; i--) {
        const BlockParams *p = &s->blk[i];
        BlockActs *b = &a->act[i];
        const float *x = i ? a->act[i - 1].out : a->x0;
        float *gnext = i ? (g == a->g0 ? a->g1 : a->g0) : dx0;
        act_linear_bwd(ps, p->fc2_w, p->fc2_b, a->dh1, g, b->hg, rows, M, W);
        act_gelu_bwd(b_, a->dh2, a->dh1, b->h, (size_t)rows * M);
        act_linear_bwd(ps, p->fc1_w, p->fc1_b, a->dtmp, a->dh2, b->ln2, rows, W, M);
        b_->layernorm_bwd(a->dmid, g, param_grad(ps, p->norm2_w), param_grad(ps, p->norm2_b),
                          a->dtmp, b->mid, b->ln2_mean, b->ln2_rstd, param(ps, p->norm2_w), rows,
                          W);
        act_linear_bwd(ps, p->proj_w, p->proj_b, a->datt, a->dmid, b->att, rows, W, W);
        act_attention_bwd(b_, a->dqkv, a->dqkv + W, a->dqkv + 2 * W, a->datt, b->qkv,
                          act_offset(b->qkv, W), act_offset(b->qkv, 2 * (size_t)W), b->att,
                          b->probs, B, H, T, T, W / H, 3 * W, 3 * W);
        act_linear_bwd(ps, p->qkv_w, NO_PARAM, a->dtmp, a->dqkv, b->ln1, rows, W, 3 * W);
        b_->layernorm_bwd(gnext, a->dmid, param_grad(ps, p->norm1_w), param_grad(ps, p->norm1_b),
                          a->dtmp, x, b->ln1_mean, b->ln1_rstd, param(ps, p->norm1_w), rows, W);
        g = gnext;
    }
}

static void stack_case(DType act_type)
{
    const int W = 24, heads = 2, M = 48, depth = 2, B = 2, T = 5;
    const size_t n = (size_t)B * T * W;
    ParamSet ps;
    params_init_registry(&ps);
    TStack s;
    tstack_register(&s, &ps, "enc", W, heads, M, depth);
    params_allocate(&ps, be, 1);
    params_initialize(&ps, 77);
    /* Biases and LayerNorm affines start at zeros/ones: random values exercise them all. */
    float *noise = randn(ps.total, 0.05f);
    for (size_t i = 0; i < ps.total; i++) ps.data[i] += noise[i];
    free(noise);

    Arena ar;
    arena_plan(&ar, be, act_type);
    TStackActs a;
    tstack_layout(&s, &a, &ar, B, T, TSTACK_TRAIN);
    arena_commit(&ar);
    tstack_layout(&s, &a, &ar, B, T, TSTACK_TRAIN);
    float *x0 = randn(n, 1.0f), *dout = randn(n, 1.0f);
    memcpy(a.x0, x0, n * sizeof(float));
    tstack_forward(&s, &a, &ps);

    float *grad0 = randn(ps.total, 0.01f); /* gradients accumulate onto earlier ones */
    float *dx_new = test_filled(n, NAN), *dx_old = test_filled(n, NAN);
    memcpy(ps.grad, grad0, ps.total * sizeof(float));
    tstack_backward(&s, &a, &ps, dout, dx_new);
    float *grad_new = copy_of(ps.grad, ps.total);
    memcpy(ps.grad, grad0, ps.total * sizeof(float));
    former_tstack_backward(&s, &a, &ps, dout, dx_old);

    const char *what = act_type == DTYPE_BF16 ? "bf16 activations" : "fp32 activations";
    for (int t = 0; t < ps.count; t++) {
        const ParamInfo *info = &ps.info[t];
        const size_t bad = differing_bits(grad_new + info->offset, ps.grad + info->offset,
                                          info->numel);
        TEST_CHECK(bad == 0, "%s: gradient of %s differs from the former sequence in %zu of %zu "
                   "entries", what, info->name, bad, info->numel);
    }
    TEST_CHECK(nans(dx_new, n) == 0 && differing_bits(dx_new, dx_old, n) == 0,
               "%s: dx0 differs from the former sequence in %zu entries", what,
               differing_bits(dx_new, dx_old, n));
    TEST_CHECK(differing_bits(grad_new, grad0, ps.total) > ps.total / 2,
               "%s: backward left most gradients unchanged", what);

    free(x0); free(dout); free(grad0); free(dx_new); free(dx_old); free(grad_new);
    arena_free(&ar);
    params_free(&ps);
}

static int test_stack_backward_unchanged(void)
{
    stack_case(DTYPE_F32);
    stack_case(DTYPE_BF16);
    return 0;
}

int main(void)
{
    be = backend_cpu();
    TEST_RUN(test_contract_bit_identical);
    TEST_RUN(test_double_reference);
    TEST_RUN(test_stack_backward_unchanged);
    return test_finish();
}
