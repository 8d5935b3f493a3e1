/* The MLP's fc1 backward through its GELU as one backend op (linear_gelu_bwd_bf16, backend.h)
 * on the CPU backend:
 *  - its contract, bit for bit: the fused entry equals gelu_bwd_bf16 into a scratch followed
 *    by linear_bwd_bf16, with and without db, with dx and/or dW NULL, accumulating into dW and
 *    db that already hold values (outputs poisoned with NaN first: an entry never written
 *    fails);
 *  - against an independent double-precision reference of the whole backward: GELU' from its
 *    definition Phi(x) + x phi(x) with libm's erf and exp, the matmuls in double. Tolerances:
 *    dx and dW multiply dh rounded to bf16 (8 significant bits: relative error <= 2^-8) by W
 *    rounded to bf16 (dx: 2^-8 more) or by the exact bf16 x (dW), so each product is within
 *    2^-7 (1 + 2^-9) of the exact one; fp32 accumulation of at most 45 terms adds under
 *    45 * 2^-24. So |got - ref| <= 8e-3 * sum_k |dh_k W_k| + 1e-6 * sum_k |dy_k W_k| + 1e-7
 *    (a worst-case bound: every rounding at its limit in one direction), the middle term
 *    for the GELU slope's own error (A&S erf: 1.5e-7 absolute, so Phi within 7.5e-8; cpu_expf
 *    about 1 ulp), which does not scale with dh where the slope crosses zero (x near -0.75).
 *    db sums fp32 dh (unrounded): 2e-5 * sum |dh| + 1e-6 * sum |dy|. Dropping the GELU factor,
 *    a transpose, or rounding db's terms to bf16 breaks these;
 *  - the transformer stack: one backward through tstack_backward (which now calls
 *    act_linear_gelu_bwd for fc1) gives every parameter gradient and dx0 bit for bit what the
 *    former sequence (act_gelu_bwd, then act_linear_bwd; stack_backward_former.h) gives, with fp32
 *    and with bf16 activations. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "bf16_ref.h"
#include "nn/act.h"
#include "nn/layers.h"
#include "nn/transformer.h"
#include "ops/backend.h"
#include "stack_backward_former.h"
#include "gelu_ref.h"
#include "test.h"

static const AliceBackend *be;
static uint32_t next_stream = 1;

static float *randn(size_t n, float scale) { return test_randn(5151, next_stream++, n, scale); }

static bf16_t *randn_bf16(size_t n, float scale)
{
    return test_randn_bf16(5151, next_stream++, n, scale);
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

    float *dx_f = test_filled(nx, NAN), *dW_f = test_copy(dW0, nw), *db_f = test_copy(db0, out);
    float *dx_u = test_filled(nx, NAN), *dW_u = test_copy(dW0, nw), *db_u = test_copy(db0, out);
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

static int test_double_reference(void)
{
    const int rows = 41, in = 23, out = 45;
    const size_t nh = (size_t)rows * out, nx = (size_t)rows * in, nw = (size_t)out * in;
    float *dy = randn(nh, 1.0f), *W = randn(nw, 0.2f);
    bf16_t *h = randn_bf16(nh, 1.5f), *x = randn_bf16(nx, 1.0f);
    float *dW0 = randn(nw, 0.3f), *db0 = randn((size_t)out, 0.3f);
    float *dx = test_filled(nx, NAN), *dW = test_copy(dW0, nw), *db = test_copy(db0, out);
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
            dx_scale[(size_t)r * in + j] = mag + 1.25e-4 * mag_dy; /* 8e-3 * (.) = 1e-6 dy term */
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
            dW_scale[(size_t)k * in + j] = mag + 1.25e-4 * mag_dy + fabs(dW0[(size_t)k * in + j]);
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
    test_compare_ref("dx vs double", dx, dx_ref, dx_scale, nx, 8e-3, 1e-7);
    test_compare_ref("dW vs double", dW, dW_ref, dW_scale, nw, 8e-3, 1e-7);
    test_compare_ref("db vs double", db, db_ref, db_scale, (size_t)out, 2e-5, 1e-7);

    /* Sensitivity: without the GELU factor dx is far off the reference (guards the bound). */
    size_t off = 0;
    for (size_t i = 0; i < nh; i++) scratch[i] = dy[i];
    float *dx_plain = test_filled(nx, NAN);
    be->linear_bwd_bf16(dx_plain, NULL, NULL, scratch, x, W, rows, in, out);
    for (size_t i = 0; i < nx; i++)
        off += fabs(dx_plain[i] - dx_ref[i]) > 8e-3 * dx_scale[i] + 1e-7;
    TEST_CHECK(off > nx / 2, "the tolerance cannot tell a missing GELU factor (%zu of %zu off)",
               off, nx);

    free(dy); free(W); free(h); free(x); free(dW0); free(db0); free(dx); free(dW); free(db);
    free(scratch); free(dh); free(ref); free(scale); free(dx_plain);
    return 0;
}

/* ---- the transformer stack: new path == former sequence, bit for bit ---- */

static int test_stack_backward_unchanged(void)
{
    check_stack_backward_matches_former(be, DTYPE_F32, FORMER_GELU_SEPARATE, 77);
    check_stack_backward_matches_former(be, DTYPE_BF16, FORMER_GELU_SEPARATE, 77);
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
