/* fc2's input gradient dh1 in bf16 (PyTorch's bf16 autocast rounds a matmul's grad_input to
 * bf16, and GELU's backward then reads it so): the three backend entries behind it, on the CPU
 * backend (the reference the CUDA backend is compared with in test_backend_parity).
 *  - linear_bwd_bf16_dx16 and linear_bwd_bf16_dy16_dx16, their contract bit for bit: dx is the
 *    fp32 dx of linear_bwd_bf16 / linear_bwd_bf16_dy16 rounded by bf16_reference_round (round
 *    to nearest even written out in bf16_ref.h, not ops/bf16.h), dW and db have those ops'
 *    bits; for every output set (dx, dW, db NULL in turn), dx poisoned first (0xffff, a NaN:
 *    an entry left unwritten fails), dW and db accumulating onto earlier values.
 *  - the same dx against a double-precision reference: the exact products of the bf16 operands
 *    (bf16(dy) or dy16, bf16(W): 8-bit significands, exact in double) summed in double. The fp32
 *    accumulation of `out` terms is within out 2^-24 sum|terms| of it, and the one rounding to
 *    bf16 (8 significant bits) within 2^-8 of its value, so
 *    |got - ref| <= 2^-8 |ref| + 1.01 out 2^-24 sum|terms|. Truncating instead of rounding
 *    (error up to 2^-7) breaks that bound for a large share of entries (checked: the bound can
 *    tell), and at least 95% of entries equal the reference rounding of ref itself (they differ
 *    only where fp32 accumulation crosses a rounding boundary).
 *  - linear_gelu_bwd_bf16_dy16: bit for bit linear_gelu_bwd_bf16 on dy_act widened to fp32
 *    (every output set), and against a double reference of the whole backward from the widened
 *    dy_act: GELU' = Phi(x) + x phi(x) with libm's erf and exp, matmuls in double, with
 *    test_linear_gelu_bwd's bounds (there derived: dh rounded to bf16 for the GEMMs, 4e-3 of
 *    sum |dh W|, plus 1e-6 of sum |dy W| for the GELU slope's own error; db 2e-5 of sum |dh|
 *    plus 1e-6 of sum |dy|). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "bf16_ref.h"
#include "ops/backend.h"
#include "gelu_ref.h"
#include "test.h"

static const AliceBackend *be;
static uint32_t next_stream = 1;

static float *randn(size_t n, float scale) { return test_randn(6262, next_stream++, n, scale); }

static bf16_t *randn_bf16(size_t n, float scale)
{
    return test_randn_bf16(6262, next_stream++, n, scale);
}

enum { BF16_POISON = 0xffff };

static bf16_t *poisoned_bf16(size_t n)
{
    bf16_t *p = malloc((n ? n : 1) * sizeof(bf16_t));
    for (size_t i = 0; i < n; i++) p[i] = BF16_POISON;
    return p;
}

static size_t bf16_differ_from_rounded(const bf16_t *got, const float *f32, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += got[i] != bf16_reference_round(f32[i]);
    return bad;
}

enum OutputSet { WITH_ALL, WITHOUT_DB, WITHOUT_DX, WITHOUT_DW, DB_ONLY, OUTPUT_SETS };
static const char *const output_set_names[OUTPUT_SETS] = {
    "dx, dW, db", "dx, dW (no db)", "dW, db (no dx)", "dx, db (no dW)", "db only"};

/* Which dy the linear backward reads: fp32 (linear_bwd_bf16_dx16, with db) or bf16
 * (linear_bwd_bf16_dy16_dx16: no bias, so db stays NULL). */
enum DyKind { DY_FP32, DY_BF16 };

typedef struct {
    int has_dx, has_dw, has_db;
} Outputs;

static Outputs outputs_of(enum OutputSet set, enum DyKind kind)
{
    Outputs o = {set != WITHOUT_DX && set != DB_ONLY, set != WITHOUT_DW && set != DB_ONLY,
                 set != WITHOUT_DB && kind == DY_FP32};
    return o;
}

/* ---- linear_bwd_bf16_dx16 / _dy16_dx16: the contract, bit for bit ---- */

static void dx16_contract_case(int rows, int in, int out, enum OutputSet set, enum DyKind kind)
{
    const size_t ny = (size_t)rows * out, nx = (size_t)rows * in, nw = (size_t)out * in;
    const Outputs o = outputs_of(set, kind);
    if (kind == DY_BF16 && !o.has_dx && !o.has_dw) return; /* nothing to run without a bias */
    float *dy = randn(ny, 1.0f), *W = randn(nw, 0.2f);
    bf16_t *dy16 = randn_bf16(ny, 1.0f), *x = randn_bf16(nx, 1.0f);
    float *dW0 = randn(nw, 0.3f), *db0 = randn((size_t)out, 0.3f);
    bf16_t *dx_new = poisoned_bf16(nx);
    float *dW_new = test_copy(dW0, nw), *db_new = test_copy(db0, out);
    float *dx_old = test_filled(nx, NAN), *dW_old = test_copy(dW0, nw), *db_old = test_copy(db0, out);
    bf16_t *dxn = o.has_dx ? dx_new : NULL;
    float *dWn = o.has_dw ? dW_new : NULL, *dWo = o.has_dw ? dW_old : NULL;
    if (kind == DY_FP32) {
        be->linear_bwd_bf16_dx16(dxn, dWn, o.has_db ? db_new : NULL, dy, x, W, rows, in, out);
        be->linear_bwd_bf16(o.has_dx ? dx_old : NULL, dWo, o.has_db ? db_old : NULL, dy, x, W,
                            rows, in, out);
    } else {
        be->linear_bwd_bf16_dy16_dx16(dxn, dWn, dy16, x, W, rows, in, out);
        be->linear_bwd_bf16_dy16(o.has_dx ? dx_old : NULL, dWo, dy16, x, W, rows, in, out);
    }
    const char *what = output_set_names[set];
    const char *entry = kind == DY_FP32 ? "linear_bwd_bf16_dx16" : "linear_bwd_bf16_dy16_dx16";
    if (o.has_dx) {
        const size_t bad = bf16_differ_from_rounded(dx_new, dx_old, nx);
        TEST_CHECK(bad == 0, "%s %s %dx%dx%d: dx differs from the fp32 dx rounded in %zu of %zu "
                   "entries", entry, what, rows, in, out, bad, nx);
    } else {
        size_t written = 0;
        for (size_t i = 0; i < nx; i++) written += dx_new[i] != BF16_POISON;
        TEST_CHECK(written == 0, "%s %s: dx NULL, yet %zu entries written", entry, what, written);
    }
    TEST_CHECK(differing_bits(dW_new, dW_old, nw) == 0, "%s %s %dx%dx%d: dW differs in %zu "
               "entries", entry, what, rows, in, out, differing_bits(dW_new, dW_old, nw));
    TEST_CHECK(differing_bits(db_new, db_old, out) == 0, "%s %s: db differs in %zu entries",
               entry, what, differing_bits(db_new, db_old, out));
    if (o.has_dw) TEST_CHECK(differing_bits(dW_new, dW0, nw) > nw / 2, "%s %s: dW did not "
                             "accumulate", entry, what);
    if (!o.has_db) TEST_CHECK(differing_bits(db_new, db0, out) == 0, "%s %s: db NULL, yet "
                              "changed", entry, what);
    free(dy); free(W); free(dy16); free(x); free(dW0); free(db0);
    free(dx_new); free(dW_new); free(db_new); free(dx_old); free(dW_old); free(db_old);
}

static int test_dx16_contract(void)
{
    for (int kind = DY_FP32; kind <= DY_BF16; kind++)
        for (int set = 0; set < OUTPUT_SETS; set++) {
            dx16_contract_case(37, 19, 45, (enum OutputSet)set, (enum DyKind)kind); /* ragged */
            dx16_contract_case(64, 32, 96, (enum OutputSet)set, (enum DyKind)kind);
        }
    return 0;
}

/* ---- dx16 against double math and the reference rounding ---- */

static void dx16_double_case(enum DyKind kind)
{
    const int rows = 53, in = 29, out = 71;
    const size_t ny = (size_t)rows * out, nx = (size_t)rows * in, nw = (size_t)out * in;
    float *dy = randn(ny, 1.0f), *W = randn(nw, 0.2f);
    bf16_t *dy16 = randn_bf16(ny, 1.0f), *x = randn_bf16(nx, 1.0f);
    bf16_t *dx = poisoned_bf16(nx);
    if (kind == DY_FP32) be->linear_bwd_bf16_dx16(dx, NULL, NULL, dy, x, W, rows, in, out);
    else be->linear_bwd_bf16_dy16_dx16(dx, NULL, dy16, x, W, rows, in, out);

    /* the GEMM's operands: dy rounded (fp32 dy) or as it is (bf16 dy), W rounded */
    double *dyv = malloc(ny * sizeof(double)), *Wv = malloc(nw * sizeof(double));
    for (size_t i = 0; i < ny; i++)
        dyv[i] = kind == DY_FP32 ? bf16_value(bf16_reference_round(dy[i])) : bf16_value(dy16[i]);
    for (size_t i = 0; i < nw; i++) Wv[i] = bf16_value(bf16_reference_round(W[i]));
    float *got = malloc(nx * sizeof(float));
    double *ref = malloc(nx * sizeof(double)), *scale = malloc(nx * sizeof(double));
    size_t exact = 0, truncation_off = 0;
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < in; j++) {
            double s = 0.0, mag = 0.0;
            for (int k = 0; k < out; k++) {
                const double t = dyv[(size_t)r * out + k] * Wv[(size_t)k * in + j];
                s += t;
                mag += fabs(t);
            }
            const size_t i = (size_t)r * in + j;
            got[i] = (float)bf16_value(dx[i]);
            ref[i] = s;
            scale[i] = fabs(s) + 1.01 * out * ldexp(mag, -16); /* x 2^-8 below: out 2^-24 mag */
            exact += dx[i] == bf16_reference_round((float)s);
            /* truncation toward zero of the fp32 sum: what a missing rounding would store */
            const double truncated = bf16_value((bf16_t)(float_bits((float)s) >> 16));
            truncation_off += fabs(truncated - s) > ldexp(scale[i], -8);
        }
    const char *entry = kind == DY_FP32 ? "linear_bwd_bf16_dx16" : "linear_bwd_bf16_dy16_dx16";
    char what[96];
    snprintf(what, sizeof what, "%s: dx vs double", entry);
    test_compare_ref(what, got, ref, scale, nx, ldexp(1.0, -8), 1e-30);
    TEST_CHECK(exact >= nx * 95 / 100, "%s: only %zu of %zu entries are the reference rounding "
               "of the double sum", entry, exact, nx);
    TEST_CHECK(truncation_off > nx / 5, "%s: the bound cannot tell truncation from rounding "
               "(%zu of %zu truncated entries off)", entry, truncation_off, nx);
    free(dy); free(W); free(dy16); free(x); free(dx); free(dyv); free(Wv); free(got); free(ref);
    free(scale);
}

static int test_dx16_double_reference(void)
{
    dx16_double_case(DY_FP32);
    dx16_double_case(DY_BF16);
    return 0;
}

/* ---- linear_gelu_bwd_bf16_dy16 ---- */

static float *widened(const bf16_t *h, size_t n)
{
    float *f = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) f[i] = (float)bf16_value(h[i]);
    return f;
}

static void gelu_dy16_contract_case(int rows, int in, int out, enum OutputSet set)
{
    const size_t nh = (size_t)rows * out, nx = (size_t)rows * in, nw = (size_t)out * in;
    const Outputs o = outputs_of(set, DY_FP32);
    bf16_t *dy16 = randn_bf16(nh, 1.0f), *h = randn_bf16(nh, 1.5f), *x = randn_bf16(nx, 1.0f);
    float *dy_wide = widened(dy16, nh), *W = randn(nw, 0.2f);
    float *dW0 = randn(nw, 0.3f), *db0 = randn((size_t)out, 0.3f);
    float *dx_n = test_filled(nx, NAN), *dW_n = test_copy(dW0, nw), *db_n = test_copy(db0, out);
    float *dx_o = test_filled(nx, NAN), *dW_o = test_copy(dW0, nw), *db_o = test_copy(db0, out);
    float *scratch_n = test_filled(nh, NAN), *scratch_o = test_filled(nh, NAN);
    be->linear_gelu_bwd_bf16_dy16(o.has_dx ? dx_n : NULL, o.has_dw ? dW_n : NULL,
                                  o.has_db ? db_n : NULL, dy16, h, scratch_n, x, W, rows, in,
                                  out);
    be->linear_gelu_bwd_bf16(o.has_dx ? dx_o : NULL, o.has_dw ? dW_o : NULL,
                             o.has_db ? db_o : NULL, dy_wide, h, scratch_o, x, W, rows, in, out);
    const char *what = output_set_names[set];
    TEST_CHECK(differing_bits(dx_n, dx_o, nx) == 0, "gelu dy16 %s %dx%dx%d: dx differs in %zu "
               "entries", what, rows, in, out, differing_bits(dx_n, dx_o, nx));
    TEST_CHECK(differing_bits(dW_n, dW_o, nw) == 0, "gelu dy16 %s: dW differs in %zu entries",
               what, differing_bits(dW_n, dW_o, nw));
    TEST_CHECK(differing_bits(db_n, db_o, out) == 0, "gelu dy16 %s: db differs in %zu entries",
               what, differing_bits(db_n, db_o, out));
    if (o.has_dx) {
        size_t unwritten = 0;
        for (size_t i = 0; i < nx; i++) unwritten += isnan(dx_n[i]) != 0;
        TEST_CHECK(unwritten == 0, "gelu dy16 %s: %zu entries of dx unwritten", what, unwritten);
    }
    free(dy16); free(h); free(x); free(dy_wide); free(W); free(dW0); free(db0);
    free(dx_n); free(dW_n); free(db_n); free(dx_o); free(dW_o); free(db_o);
    free(scratch_n); free(scratch_o);
}

static int test_gelu_dy16_contract(void)
{
    for (int set = 0; set < OUTPUT_SETS; set++) {
        gelu_dy16_contract_case(37, 19, 45, (enum OutputSet)set);
        gelu_dy16_contract_case(64, 32, 96, (enum OutputSet)set);
    }
    return 0;
}

static int test_gelu_dy16_double_reference(void)
{
    const int rows = 41, in = 23, out = 45;
    const size_t nh = (size_t)rows * out, nx = (size_t)rows * in, nw = (size_t)out * in;
    bf16_t *dy16 = randn_bf16(nh, 1.0f), *h = randn_bf16(nh, 1.5f), *x = randn_bf16(nx, 1.0f);
    float *W = randn(nw, 0.2f), *db0 = randn((size_t)out, 0.3f);
    float *dx = test_filled(nx, NAN), *dW = test_filled(nw, 0.0f), *db = test_copy(db0, out);
    float *scratch = test_filled(nh, NAN);
    be->linear_gelu_bwd_bf16_dy16(dx, dW, db, dy16, h, scratch, x, W, rows, in, out);

    double *dh = malloc(nh * sizeof(double)), *dyv = malloc(nh * sizeof(double));
    for (size_t i = 0; i < nh; i++) {
        dyv[i] = bf16_value(dy16[i]);
        dh[i] = dyv[i] * gelu_slope_exact(bf16_value(h[i]));
    }
    double *dx_ref = calloc(nx, sizeof(double)), *dx_scale = calloc(nx, sizeof(double));
    double *dW_ref = calloc(nw, sizeof(double)), *dW_scale = calloc(nw, sizeof(double));
    double *db_ref = calloc(out, sizeof(double)), *db_scale = calloc(out, sizeof(double));
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < out; k++) {
            const double d = dh[(size_t)r * out + k], dyk = dyv[(size_t)r * out + k];
            for (int j = 0; j < in; j++) {
                const double w = W[(size_t)k * in + j], xv = bf16_value(x[(size_t)r * in + j]);
                dx_ref[(size_t)r * in + j] += d * w;
                dx_scale[(size_t)r * in + j] += fabs(d * w) + 2.5e-4 * fabs(dyk * w);
                dW_ref[(size_t)k * in + j] += d * xv;
                dW_scale[(size_t)k * in + j] += fabs(d * xv) + 2.5e-4 * fabs(dyk * xv);
            }
            db_ref[k] += d;
            db_scale[k] += fabs(d) + 0.05 * fabs(dyk);
        }
    for (int k = 0; k < out; k++) {
        db_ref[k] += db0[k];
        db_scale[k] += fabs(db0[k]);
    }
    test_compare_ref("gelu dy16: dx vs double", dx, dx_ref, dx_scale, nx, 4e-3, 1e-7);
    test_compare_ref("gelu dy16: dW vs double", dW, dW_ref, dW_scale, nw, 4e-3, 1e-7);
    test_compare_ref("gelu dy16: db vs double", db, db_ref, db_scale, (size_t)out, 2e-5, 1e-7);
    free(dy16); free(h); free(x); free(W); free(db0); free(dx); free(dW); free(db);
    free(scratch); free(dh); free(dyv); free(dx_ref); free(dx_scale); free(dW_ref);
    free(dW_scale); free(db_ref); free(db_scale);
    return 0;
}

int main(void)
{
    be = backend_cpu();
    TEST_RUN(test_dx16_contract);
    TEST_RUN(test_dx16_double_reference);
    TEST_RUN(test_gelu_dy16_contract);
    TEST_RUN(test_gelu_dy16_double_reference);
    return test_finish();
}
