/* layernorm_bwd_dx16 (backend.h) on the CPU backend: LayerNorm's backward that also hands the
 * next linear layer's backward its bf16 dy (dx_bf16) and bias gradient (dx_colsum).
 *  - against independent references: dx against the double formula (1e-5 of the magnitude of
 *    its terms + 1e-6, the residual added in fp32: one more rounding of the sum); dx_bf16
 *    bit for bit the round-to-nearest-even of the op's dx written out in bf16_ref.h (not
 *    through ops/bf16.h); dx_colsum = its random start + the double column sums of the op's dx
 *    within 2^-23 of (|start| + sum |dx|) (the CPU sums each column in double, then two fp32
 *    roundings), and of the reference dx within the sum of the dx tolerances on top;
 *  - NULL behaviour: with dx_bf16 and dx_colsum NULL the op is layernorm_bwd bit for bit (dx,
 *    dgamma, dbeta accumulating onto random starts), and asking for them leaves those bits as
 *    they were; outputs not asked for stay untouched; rows = 0 touches nothing;
 *  - the contract the transformer stack relies on: linear_bwd_bf16_dy16 on dx_bf16 with
 *    dx_colsum as the bias gradient equals linear_bwd_bf16 on the fp32 dx bit for bit (dx,
 *    dW and db), on the CPU backend whose column sums are those of its linear layer;
 *  - the stack: tstack_backward_taps with bf16 activations (whose LayerNorms now hand proj and
 *    fc2 their bf16 dy and bias gradient through this op) gives every parameter gradient and
 *    dx0 bit for bit what the former sequence (layernorm_bwd, then act_linear_bwd on the fp32
 *    dx; stack_backward_former.h) gives, without taps, with a tap on the last block (the final
 *    norm's consumer then takes the fp32 g) and with a tap on the first block (block 1's LN1
 *    consumer), and with fp32 activations.
 * Shapes: below and above the OpenMP threshold (CPU_OMP_MIN_ELEMENTS, 32768 elements), widths
 * 70, 384 and 768, with and without gamma and residual. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "bf16_ref.h"
#include "nn/act.h"
#include "nn/transformer.h"
#include "ops/backend.h"
#include "stack_backward_former.h"
#include "test.h"

static const AliceBackend *be;
static uint32_t next_stream = 1;

static float *randn(size_t n, float scale) { return test_randn(6161, next_stream++, n, scale); }

/* A LayerNorm backward's inputs: x, dy, a residual gradient, gamma, and the statistics of x
 * (double, then rounded, as the forward saves them). */
typedef struct {
    int rows, dim;
    float *x, *dy, *res, *gamma, *mean, *rstd;
} LnCase;

static LnCase make_case(int rows, int dim)
{
    LnCase c = {rows, dim, NULL, NULL, NULL, NULL, NULL, NULL};
    const size_t n = (size_t)rows * dim;
    c.x = randn(n, 2.0f);
    c.dy = randn(n, 1.0f);
    c.res = randn(n, 3.0f);
    c.gamma = randn((size_t)dim, 1.0f);
    c.mean = malloc((size_t)(rows ? rows : 1) * sizeof(float));
    c.rstd = malloc((size_t)(rows ? rows : 1) * sizeof(float));
    for (int r = 0; r < rows; r++) {
        double s = 0.0, q = 0.0;
        for (int d = 0; d < dim; d++) s += c.x[(size_t)r * dim + d];
        const double mu = s / dim;
        for (int d = 0; d < dim; d++) {
            const double t = c.x[(size_t)r * dim + d] - mu;
            q += t * t;
        }
        c.mean[r] = (float)mu;
        c.rstd[r] = (float)(1.0 / sqrt(q / dim + 1e-5));
    }
    return c;
}

static void free_case(LnCase *c)
{
    free(c->x); free(c->dy); free(c->res); free(c->gamma); free(c->mean); free(c->rstd);
}

/* dx in double (the residual added) and the tolerance of each element. */
static void reference_dx(const LnCase *c, const float *gamma, const float *res, double *dx,
                         double *tol)
{
    const int dim = c->dim;
    for (int r = 0; r < c->rows; r++) {
        double sg = 0.0, sgx = 0.0, ag = 0.0, agx = 0.0;
        for (int d = 0; d < dim; d++) {
            const size_t i = (size_t)r * dim + d;
            const double g = (double)c->dy[i] * (gamma ? gamma[d] : 1.0);
            const double xh = ((double)c->x[i] - c->mean[r]) * c->rstd[r];
            sg += g, sgx += g * xh, ag += fabs(g), agx += fabs(g * xh);
        }
        for (int d = 0; d < dim; d++) {
            const size_t i = (size_t)r * dim + d;
            const double g = (double)c->dy[i] * (gamma ? gamma[d] : 1.0);
            const double xh = ((double)c->x[i] - c->mean[r]) * c->rstd[r];
            const double v = c->rstd[r] * (g - sg / dim - xh * sgx / dim);
            dx[i] = (res ? res[i] : 0.0) + v;
            tol[i] = 1e-5 * c->rstd[r] * (fabs(g) + ag / dim + fabs(xh) * agx / dim) + 1e-6 +
                     (res ? ldexp(fabs(dx[i]), -23) : 0.0);
        }
    }
}

/* The op's outputs; starts of the accumulated ones random, the others NaN / a bf16 NaN. */
typedef struct {
    float *dx, *dgamma, *dbeta, *dxsum;
    bf16_t *dx16;
} LnOut;

enum { UNWRITTEN16 = 0x7fa5 }; /* a bf16 NaN no rounding of a finite dx gives */

static LnOut fresh_out(const LnCase *c, const float *dgamma0, const float *dbeta0,
                       const float *dxsum0)
{
    const size_t n = (size_t)c->rows * c->dim;
    LnOut o = {test_filled(n, NAN), test_copy(dgamma0, (size_t)c->dim),
               test_copy(dbeta0, (size_t)c->dim), test_copy(dxsum0, (size_t)c->dim),
               malloc((n ? n : 1) * sizeof(bf16_t))};
    for (size_t i = 0; i < n; i++) o.dx16[i] = UNWRITTEN16;
    return o;
}

static void free_out(LnOut *o)
{
    free(o->dx); free(o->dgamma); free(o->dbeta); free(o->dxsum); free(o->dx16);
}

static size_t bf16_differing(const bf16_t *a, const bf16_t *b, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += a[i] != b[i];
    return bad;
}

static void check_op(int rows, int dim, int with_gamma, int with_res)
{
    LnCase c = make_case(rows, dim);
    const size_t n = (size_t)rows * dim;
    const float *gamma = with_gamma ? c.gamma : NULL, *res = with_res ? c.res : NULL;
    float *dgamma0 = randn((size_t)dim, 0.5f), *dbeta0 = randn((size_t)dim, 0.5f);
    float *dxsum0 = randn((size_t)dim, 0.5f);
    char what[160];
    snprintf(what, sizeof what, "layernorm_bwd_dx16 %dx%d gamma %d residual %d", rows, dim,
             with_gamma, with_res);

    LnOut plain = fresh_out(&c, dgamma0, dbeta0, dxsum0);
    be->layernorm_bwd(plain.dx, res, plain.dgamma, plain.dbeta, c.dy, c.x, c.mean, c.rstd,
                      gamma, rows, dim);
    /* NULL next-layer outputs: layernorm_bwd itself */
    LnOut nulls = fresh_out(&c, dgamma0, dbeta0, dxsum0);
    be->layernorm_bwd_dx16(nulls.dx, res, nulls.dgamma, nulls.dbeta, NULL, NULL, c.dy, c.x,
                           c.mean, c.rstd, gamma, rows, dim);
    TEST_CHECK(differing_bits(nulls.dx, plain.dx, n) == 0 &&
                   differing_bits(nulls.dgamma, plain.dgamma, (size_t)dim) == 0 &&
                   differing_bits(nulls.dbeta, plain.dbeta, (size_t)dim) == 0,
               "%s, both NULL: dx, dgamma or dbeta differ in bits from layernorm_bwd", what);
    /* every output */
    LnOut all = fresh_out(&c, dgamma0, dbeta0, dxsum0);
    be->layernorm_bwd_dx16(all.dx, res, all.dgamma, all.dbeta, all.dx16, all.dxsum, c.dy, c.x,
                           c.mean, c.rstd, gamma, rows, dim);
    TEST_CHECK(differing_bits(all.dx, plain.dx, n) == 0 &&
                   differing_bits(all.dgamma, plain.dgamma, (size_t)dim) == 0 &&
                   differing_bits(all.dbeta, plain.dbeta, (size_t)dim) == 0,
               "%s: dx, dgamma or dbeta differ in bits from layernorm_bwd", what);

    double *ref = malloc((n ? n : 1) * sizeof(double)), *tol = malloc((n ? n : 1) * sizeof(double));
    reference_dx(&c, gamma, res, ref, tol);
    size_t dx_off = 0;
    for (size_t i = 0; i < n; i++) dx_off += !(fabs(all.dx[i] - ref[i]) <= tol[i]);
    TEST_CHECK(dx_off == 0, "%s: %zu of %zu dx off the double formula", what, dx_off, n);

    size_t copy_off = 0;
    for (size_t i = 0; i < n; i++) copy_off += all.dx16[i] != bf16_reference_round(all.dx[i]);
    TEST_CHECK(copy_off == 0, "%s: %zu of %zu dx_bf16 are not dx rounded to nearest even", what,
               copy_off, n);

    size_t sum_off = 0, sum_ref_off = 0;
    for (int d = 0; d < dim; d++) {
        double s = dxsum0[d], a = fabs(dxsum0[d]), sref = dxsum0[d], slack = 0.0;
        for (int r = 0; r < rows; r++) {
            const size_t i = (size_t)r * dim + d;
            s += all.dx[i], a += fabs(all.dx[i]);
            sref += ref[i], slack += tol[i];
        }
        sum_off += !(fabs(all.dxsum[d] - s) <= ldexp(a, -23) + 1e-30);
        sum_ref_off += !(fabs(all.dxsum[d] - sref) <= ldexp(a, -23) + slack);
    }
    TEST_CHECK(sum_off == 0, "%s: %zu of %d dx_colsum off the double column sums of dx", what,
               sum_off, dim);
    TEST_CHECK(sum_ref_off == 0, "%s: %zu of %d dx_colsum off the double column sums of the "
               "reference dx", what, sum_ref_off, dim);

    /* one of them at a time: the same bits, the other untouched */
    LnOut copy_only = fresh_out(&c, dgamma0, dbeta0, dxsum0);
    LnOut sum_only = fresh_out(&c, dgamma0, dbeta0, dxsum0);
    be->layernorm_bwd_dx16(copy_only.dx, res, NULL, NULL, copy_only.dx16, NULL, c.dy, c.x,
                           c.mean, c.rstd, gamma, rows, dim);
    be->layernorm_bwd_dx16(sum_only.dx, res, NULL, NULL, NULL, sum_only.dxsum, c.dy, c.x,
                           c.mean, c.rstd, gamma, rows, dim);
    TEST_CHECK(bf16_differing(copy_only.dx16, all.dx16, n) == 0 &&
                   differing_bits(copy_only.dxsum, dxsum0, (size_t)dim) == 0 &&
                   differing_bits(copy_only.dgamma, dgamma0, (size_t)dim) == 0,
               "%s: dx_bf16 alone differs, or an output not asked for was written", what);
    size_t sum_copy_written = 0;
    for (size_t i = 0; i < n; i++) sum_copy_written += sum_only.dx16[i] != UNWRITTEN16;
    TEST_CHECK(differing_bits(sum_only.dxsum, all.dxsum, (size_t)dim) == 0 &&
                   sum_copy_written == 0 &&
                   differing_bits(sum_only.dbeta, dbeta0, (size_t)dim) == 0,
               "%s: dx_colsum alone differs, or an output not asked for was written", what);

    free(ref); free(tol);
    free_out(&plain); free_out(&nulls); free_out(&all); free_out(&copy_only);
    free_out(&sum_only);
    free(dgamma0); free(dbeta0); free(dxsum0);
    free_case(&c);
}

static int test_against_references(void)
{
    const int shapes[][2] = {{7, 70}, {37, 384}, {60, 768}};  /* 60 x 768: threaded */
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int with_gamma = 0; with_gamma < 2; with_gamma++)
            for (int with_res = 0; with_res < 2; with_res++)
                check_op(shapes[s][0], shapes[s][1], with_gamma, with_res);
    /* no rows: nothing touched */
    LnCase none = make_case(0, 16);
    float start[16];
    for (int d = 0; d < 16; d++) start[d] = (float)d;
    LnOut o = fresh_out(&none, start, start, start);
    be->layernorm_bwd_dx16(o.dx, NULL, o.dgamma, o.dbeta, o.dx16, o.dxsum, none.dy, none.x,
                           none.mean, none.rstd, none.gamma, 0, 16);
    TEST_CHECK(differing_bits(o.dxsum, start, 16) == 0 && differing_bits(o.dgamma, start, 16) == 0,
               "rows 0: an accumulated output changed");
    free_out(&o);
    free_case(&none);
    return 0;
}

/* linear_bwd_bf16_dy16 on dx_bf16 + dx_colsum == linear_bwd_bf16 on dx (dx, dW, db bits). */
static int test_feeds_linear_backward(void)
{
    const int rows = 45, dim = 384, in = 96;  /* the linear layer maps in -> dim */
    LnCase c = make_case(rows, dim);
    float *W = randn((size_t)dim * in, 0.1f);
    bf16_t *x = test_randn_bf16(6161, next_stream++, (size_t)rows * in, 1.0f);
    float *dW0 = randn((size_t)dim * in, 0.01f), *db0 = randn((size_t)dim, 0.01f);
    float *dgamma0 = randn((size_t)dim, 0.5f), *dbeta0 = randn((size_t)dim, 0.5f);

    LnOut o = fresh_out(&c, dgamma0, dbeta0, db0);
    be->layernorm_bwd_dx16(o.dx, c.res, o.dgamma, o.dbeta, o.dx16, o.dxsum, c.dy, c.x, c.mean,
                           c.rstd, c.gamma, rows, dim);
    float *dx_new = test_filled((size_t)rows * in, NAN), *dW_new = test_copy(dW0, (size_t)dim * in);
    be->linear_bwd_bf16_dy16(dx_new, dW_new, o.dx16, x, W, rows, in, dim);

    float *dx_old = test_filled((size_t)rows * in, NAN), *dW_old = test_copy(dW0, (size_t)dim * in);
    float *db_old = test_copy(db0, (size_t)dim);
    be->linear_bwd_bf16(dx_old, dW_old, db_old, o.dx, x, W, rows, in, dim);

    TEST_CHECK(differing_bits(dx_new, dx_old, (size_t)rows * in) == 0,
               "linear dx from dx_bf16 differs in bits from linear_bwd_bf16 on dx");
    TEST_CHECK(differing_bits(dW_new, dW_old, (size_t)dim * in) == 0,
               "linear dW from dx_bf16 differs in bits from linear_bwd_bf16 on dx");
    TEST_CHECK(differing_bits(o.dxsum, db_old, (size_t)dim) == 0,
               "dx_colsum differs in bits from linear_bwd_bf16's bias gradient of dx");
    TEST_CHECK(differing_bits(o.dxsum, db0, (size_t)dim) > (size_t)dim / 2,
               "dx_colsum left the bias gradient unchanged");
    free_out(&o);
    free(W); free(x); free(dW0); free(db0); free(dgamma0); free(dbeta0);
    free(dx_new); free(dW_new); free(dx_old); free(dW_old); free(db_old);
    free_case(&c);
    return 0;
}

static int test_stack_matches_former(void)
{
    check_stack_backward_taps_matches_former(be, DTYPE_BF16, FORMER_GELU_FUSED, 91, 0u);
    check_stack_backward_taps_matches_former(be, DTYPE_BF16, FORMER_GELU_FUSED, 92, 2u);
    check_stack_backward_taps_matches_former(be, DTYPE_BF16, FORMER_GELU_FUSED, 93, 1u);
    check_stack_backward_taps_matches_former(be, DTYPE_F32, FORMER_GELU_FUSED, 94, 3u);
    return 0;
}

int main(void)
{
    be = backend_cpu();
    TEST_RUN(test_against_references);
    TEST_RUN(test_feeds_linear_backward);
    TEST_RUN(test_stack_matches_former);
    return test_finish();
}
