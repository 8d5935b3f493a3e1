/* UNETR's res-block passes fused (backend.h instnorm_lrelu_fwd / instnorm_lrelu_bwd), on the
 * CPU backend, the reference:
 *  - the forward equals instnorm_fwd, add and leaky_relu_fwd in turn BIT FOR BIT (y, mean,
 *    rstd), with no addend, with one, and with the addend aliasing y (UNETR stages the residual
 *    branch's norm in the output), and is within 2e-6 * scale of a double reference of
 *    leaky_relu((x - mean) / sqrt(var + eps) gamma + beta + addend);
 *  - the backward, gated by the LeakyReLU's OUTPUT, equals leaky_relu_bwd on its INPUT then
 *    instnorm_bwd, bit for bit: dx, and dgamma/dbeta accumulated onto non-zero values, with
 *    and without dx, and with dx aliasing dy; and leaky_relu_bwd itself gives the same bits from the output as from the
 *    input, exact zeros included;
 * below and above the OpenMP threshold (planes split over threads), with and
 * without gamma/beta. Outputs are poisoned with NaN first, so an entry never written fails.
 * The composition's own gradients are checked by finite differences in test_ops_grad, the
 * whole UNETR's (through these ops) in test_unetr_grad. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "ops/backend.h"
#include "test.h"

#define SLOPE 0.01f
#define EPS 1e-5f

static const AliceBackend *be;
static uint32_t next_stream = 1;

static float *randn(size_t n, float scale) { return test_randn(7117, next_stream++, n, scale); }

static size_t differing(const float *a, const float *b, size_t n)
{
    size_t d = 0;
    for (size_t i = 0; i < n; i++) d += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return d;
}

#define SAME_BITS(got, want, n, ...) do { size_t d_ = differing((got), (want), (n)); \
    if (d_) { char w_[160]; snprintf(w_, sizeof w_, __VA_ARGS__); \
        TEST_CHECK(0, "%s: %zu of %zu values differ from the unfused ops", w_, d_, (size_t)(n)); } \
    } while (0)

/* Some exact zeros, so the LeakyReLU's branch at 0 is exercised. */
static void sprinkle_zeros(float *x, size_t n)
{
    for (size_t i = 0; i < n; i += 97) x[i] = 0.0f;
}

/* The double reference of the fused forward for plane p. */
static void check_forward_reference(const float *y, const float *x, const float *gamma,
                                    const float *beta, const float *addend, int C, long V,
                                    int planes, const char *what)
{
    double worst = 0.0;
    for (int p = 0; p < planes; p++) {
        const float *xp = x + (size_t)p * V;
        double s = 0.0, sq = 0.0;
        for (long i = 0; i < V; i++) s += xp[i];
        const double mu = s / V;
        for (long i = 0; i < V; i++) sq += (xp[i] - mu) * (xp[i] - mu);
        const double rs = 1.0 / sqrt(sq / V + EPS);
        const double g = gamma ? gamma[p % C] : 1.0, b = beta ? beta[p % C] : 0.0;
        for (long i = 0; i < V; i++) {
            double v = (xp[i] - mu) * rs * g + b + (addend ? addend[(size_t)p * V + i] : 0.0);
            double want = v > 0 ? v : SLOPE * v;
            double scale = fabs((xp[i] - mu) * rs * g) + fabs(b) + 1.0 +
                           (addend ? fabs(addend[(size_t)p * V + i]) : 0.0);
            worst = fmax(worst, fabs(y[(size_t)p * V + i] - want) / scale);
        }
    }
    TEST_CHECK(worst <= 2e-6, "%s: the fused forward is %.3g (relative) off its double reference",
               what, worst);
}

static void fusion_case(int B, int C, long V, int affine)
{
    const size_t n = (size_t)B * C * V;
    const int planes = B * C;
    char what[96];
    snprintf(what, sizeof what, "B %d C %d V %ld affine %d", B, C, V, affine);
    float *x = randn(n, 1.5f), *add = randn(n, 1.0f), *dy = randn(n, 1.0f);
    float *gamma = affine ? randn(C, 0.5f) : NULL, *beta = affine ? randn(C, 0.5f) : NULL;
    sprinkle_zeros(x, n);
    float *y = test_filled(n, NAN), *pre = test_filled(n, NAN), *ref = test_filled(n, NAN);
    float *mean = test_filled(planes, NAN), *rstd = test_filled(planes, NAN);
    float *mean_ref = test_filled(planes, NAN), *rstd_ref = test_filled(planes, NAN);
    for (int with_addend = 0; with_addend < 2; with_addend++) {
        const float *a = with_addend ? add : NULL;
        /* the unfused ops: pre = instnorm(x) (+ addend), ref = leaky_relu(pre) */
        be->instnorm_fwd(pre, mean_ref, rstd_ref, x, gamma, beta, B, C, V, EPS);
        if (a) be->add(pre, pre, a, n);
        be->leaky_relu_fwd(ref, pre, n, SLOPE);
        be->instnorm_lrelu_fwd(y, mean, rstd, x, gamma, beta, a, B, C, V, EPS, SLOPE);
        SAME_BITS(y, ref, n, "%s addend %d: forward y", what, with_addend);
        SAME_BITS(mean, mean_ref, planes, "%s addend %d: mean", what, with_addend);
        SAME_BITS(rstd, rstd_ref, planes, "%s addend %d: rstd", what, with_addend);
        check_forward_reference(y, x, gamma, beta, a, C, V, planes, what);
        if (a) {
            /* the addend staged in the output buffer itself */
            memcpy(y, add, n * sizeof(float));
            be->instnorm_lrelu_fwd(y, mean, rstd, x, gamma, beta, y, B, C, V, EPS, SLOPE);
            SAME_BITS(y, ref, n, "%s: forward with the addend aliasing y", what);
        }
        /* leaky_relu_bwd from the output gives the bits it gives from the input */
        float *g_in = test_filled(n, NAN), *g_out = test_filled(n, NAN);
        be->leaky_relu_bwd(g_in, dy, pre, n, SLOPE);
        be->leaky_relu_bwd(g_out, dy, ref, n, SLOPE);
        SAME_BITS(g_out, g_in, n, "%s addend %d: leaky_relu_bwd from the output", what,
                  with_addend);
        /* backward: the unfused ops gate by the input; the fused op by the output */
        float *dx_ref = test_filled(n, NAN), *dx = test_filled(n, NAN);
        float *dg_ref = randn(C, 1.0f), *db_ref = randn(C, 1.0f);
        float *dg = test_copy(dg_ref, C), *db = test_copy(db_ref, C);
        float *dg2 = test_copy(dg_ref, C), *db2 = test_copy(db_ref, C);
        be->instnorm_bwd(dx_ref, affine ? dg_ref : NULL, affine ? db_ref : NULL, g_in, x, mean,
                         rstd, gamma, B, C, V);
        be->instnorm_lrelu_bwd(dx, affine ? dg : NULL, affine ? db : NULL, dy, ref, SLOPE, x,
                               mean, rstd, gamma, B, C, V);
        SAME_BITS(dx, dx_ref, n, "%s addend %d: backward dx", what, with_addend);
        SAME_BITS(dg, dg_ref, C, "%s addend %d: dgamma", what, with_addend);
        SAME_BITS(db, db_ref, C, "%s addend %d: dbeta", what, with_addend);
        /* without dx: the parameter gradients alone, the same bits */
        be->instnorm_lrelu_bwd(NULL, affine ? dg2 : NULL, affine ? db2 : NULL, dy, ref, SLOPE, x,
                               mean, rstd, gamma, B, C, V);
        SAME_BITS(dg2, dg_ref, C, "%s addend %d: dgamma without dx", what, with_addend);
        SAME_BITS(db2, db_ref, C, "%s addend %d: dbeta without dx", what, with_addend);
        /* dx aliasing dy (the gated plane is staged in dx's own plane) */
        float *inplace = test_copy(dy, n);
        be->instnorm_lrelu_bwd(inplace, NULL, NULL, inplace, ref, SLOPE, x, mean, rstd, gamma,
                               B, C, V);
        SAME_BITS(inplace, dx_ref, n, "%s addend %d: backward dx aliasing dy", what,
                  with_addend);
        free(inplace);
        free(g_in), free(g_out), free(dx_ref), free(dx), free(dg_ref), free(db_ref);
        free(dg), free(db), free(dg2), free(db2);
    }
    free(x), free(add), free(dy), free(gamma), free(beta), free(y), free(pre), free(ref);
    free(mean), free(rstd), free(mean_ref), free(rstd_ref);
}

static int test_fusion_small(void)
{
    fusion_case(2, 3, 1000, 0);
    fusion_case(1, 2, 333, 1);
    return 0;
}

/* Above CPU_OMP_MIN_ELEMENTS: planes split over threads (without dx, each with a plane buffer). */
static int test_fusion_threaded(void)
{
    fusion_case(2, 4, 9000, 0);
    fusion_case(3, 2, 20000, 1);
    return 0;
}

int main(void)
{
    be = backend_cpu();
    TEST_RUN(test_fusion_small);
    TEST_RUN(test_fusion_threaded);
    return test_finish();
}
