/* Residual adds fused into the op before them (CPU backend, the reference):
 *  - linear_fwd_bf16 with a residual equals linear_fwd_bf16 without one followed by the add
 *    op, BIT FOR BIT (the CPU op runs the add op itself on its stored result), and both are
 *    within the bf16 contract's tolerance of a double reference written here
 *    (residual + sum bf16(x) bf16(W) + b): |got - ref| <= 2e-5 * scale + 1e-6, scale the
 *    sum of |terms| (K <= 100 fp32 roundings of partial sums, as test_ops_bf16);
 *  - layernorm_bwd with dx_residual equals layernorm_bwd followed by the add op, bit for bit,
 *    with and without gamma, below and above the OpenMP threshold (rows x dim > 32768), and
 *    within 1e-5 * scale + 1e-6 of a double reference of LayerNorm's input gradient plus the
 *    residual; dgamma and dbeta accumulate exactly as without the residual;
 *  - the contract's checks: a residual with a bf16 y, a y overlapping the residual, and a dx
 *    overlapping dx_residual each end the process with an error (run in a child process).
 * Outputs are poisoned with NaN first, so an entry the op never writes fails. */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bf16_ref.h"
#include "ops/backend.h"
#include "test.h"

#define REL 2e-5
#define ABS 1e-6

static const AliceBackend *be;
static uint32_t next_stream = 1;

static float *randn(size_t n, float scale) { return test_randn(5151, next_stream++, n, scale); }

static bf16_t *randn_bf16(size_t n, float scale)
{
    return test_randn_bf16(5151, next_stream++, n, scale);
}

/* round-to-nearest-even of a float, computed here (not through ops/bf16.h), for the
 * references. */
static double bf16_rounded(float v) { return bf16_value(bf16_reference_round(v)); }

static void linear_residual_case(int rows, int in, int out, int with_bias)
{
    const size_t ny = (size_t)rows * out;
    bf16_t *x = randn_bf16((size_t)rows * in, 1.0f);
    float *W = randn((size_t)out * in, 0.3f), *b = with_bias ? randn(out, 0.5f) : NULL;
    float *res = randn(ny, 2.0f);
    float *fused = test_filled(ny, NAN), *unfused = test_filled(ny, NAN);
    be->linear_fwd_bf16(fused, DTYPE_F32, x, W, b, res, rows, in, out);
    be->linear_fwd_bf16(unfused, DTYPE_F32, x, W, b, NULL, rows, in, out);
    be->add(unfused, unfused, res, ny);
    const size_t d = differing_bits(fused, unfused, ny);
    TEST_CHECK(d == 0, "linear %dx%d->%d bias %d: %zu of %zu fused outputs differ in bits from "
               "linear then add", rows, in, out, with_bias, d, ny);
    double *ref = calloc(ny, sizeof(double)), *scale = calloc(ny, sizeof(double));
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < out; o++) {
            double s = res[(size_t)r * out + o] + (b ? b[o] : 0.0);
            double sc = fabs(res[(size_t)r * out + o]) + (b ? fabs(b[o]) : 0.0);
            for (int i = 0; i < in; i++) {
                const double t = bf16_value(x[(size_t)r * in + i]) *
                                 bf16_rounded(W[(size_t)o * in + i]);
                s += t;
                sc += fabs(t);
            }
            ref[(size_t)r * out + o] = s;
            scale[(size_t)r * out + o] = sc;
        }
    char what[96];
    snprintf(what, sizeof what, "linear + residual %dx%d->%d bias %d vs double", rows, in, out,
             with_bias);
    test_compare_ref(what, fused, ref, scale, ny, REL, ABS);
    free(ref); free(scale);
    free(x); free(W); free(b); free(res); free(fused); free(unfused);
}

static int test_linear_residual(void)
{
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        linear_residual_case(70, 67, 45, with_bias);  /* sizes not multiples of anything */
        linear_residual_case(1, 3, 1, with_bias);
    }
    linear_residual_case(300, 96, 128, 1);  /* above the OpenMP threshold (38400 outputs) */
    return 0;
}

/* dx reference in double: rstd (g - mean(g) - xhat mean(g xhat)) + residual, g = dy gamma;
 * scale: the sum of the magnitudes of those terms. */
static void layernorm_dx_reference(double *ref, double *scale, const float *dy, const float *x,
                                   const float *mean, const float *rstd, const float *gamma,
                                   const float *res, int rows, int dim)
{
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * dim, *dyr = dy + (size_t)r * dim;
        double sg = 0, sgx = 0, ag = 0, agx = 0;
        for (int d = 0; d < dim; d++) {
            const double g = (double)dyr[d] * (gamma ? gamma[d] : 1.0);
            const double xh = ((double)xr[d] - mean[r]) * rstd[r];
            sg += g, sgx += g * xh, ag += fabs(g), agx += fabs(g * xh);
        }
        for (int d = 0; d < dim; d++) {
            const size_t i = (size_t)r * dim + d;
            const double g = (double)dyr[d] * (gamma ? gamma[d] : 1.0);
            const double xh = ((double)xr[d] - mean[r]) * rstd[r];
            ref[i] = rstd[r] * (g - sg / dim - xh * sgx / dim) + res[i];
            scale[i] = rstd[r] * (fabs(g) + ag / dim + fabs(xh) * agx / dim) + fabs(res[i]);
        }
    }
}

static void layernorm_residual_case(int rows, int dim, int with_gamma)
{
    const size_t n = (size_t)rows * dim;
    float *x = randn(n, 1.5f), *g = with_gamma ? randn(dim, 1.0f) : NULL, *bt = randn(dim, 1.0f);
    float *dy = randn(n, 1.0f), *res = randn(n, 1.0f);
    float *y = test_filled(n, NAN), *mean = test_filled(rows, NAN), *rstd = test_filled(rows, NAN);
    be->layernorm_fwd(y, mean, rstd, x, g, bt, rows, dim, 1e-5f);
    float *dg0 = randn(dim, 0.5f), *db0 = randn(dim, 0.5f);
    float *dg1 = malloc(dim * sizeof(float)), *db1 = malloc(dim * sizeof(float));
    float *dg2 = malloc(dim * sizeof(float)), *db2 = malloc(dim * sizeof(float));
    memcpy(dg1, dg0, dim * sizeof(float)); memcpy(db1, db0, dim * sizeof(float));
    memcpy(dg2, dg0, dim * sizeof(float)); memcpy(db2, db0, dim * sizeof(float));
    float *fused = test_filled(n, NAN), *unfused = test_filled(n, NAN);
    be->layernorm_bwd(fused, res, with_gamma ? dg1 : NULL, db1, dy, x, mean, rstd, g, rows, dim);
    be->layernorm_bwd(unfused, NULL, with_gamma ? dg2 : NULL, db2, dy, x, mean, rstd, g, rows,
                      dim);
    be->add(unfused, res, unfused, n);  /* the block's order: dmid = g + LayerNorm's dx */
    char what[112];
    size_t d = differing_bits(fused, unfused, n);
    TEST_CHECK(d == 0, "layernorm_bwd %dx%d gamma %d: %zu of %zu fused dx differ in bits from "
               "layernorm_bwd then add", rows, dim, with_gamma, d, n);
    d = differing_bits(dg1, dg2, dim) + differing_bits(db1, db2, dim);
    TEST_CHECK(d == 0, "layernorm_bwd %dx%d: dgamma/dbeta changed by the residual (%zu)", rows,
               dim, d);
    double *ref = calloc(n, sizeof(double)), *scale = calloc(n, sizeof(double));
    layernorm_dx_reference(ref, scale, dy, x, mean, rstd, g, res, rows, dim);
    snprintf(what, sizeof what, "layernorm_bwd dx + residual %dx%d gamma %d vs double", rows,
             dim, with_gamma);
    test_compare_ref(what, fused, ref, scale, n, 1e-5, ABS);
    free(ref); free(scale);
    free(x); free(g); free(bt); free(dy); free(res); free(y); free(mean); free(rstd);
    free(dg0); free(db0); free(dg1); free(db1); free(dg2); free(db2); free(fused); free(unfused);
}

static int test_layernorm_residual(void)
{
    for (int with_gamma = 0; with_gamma < 2; with_gamma++) {
        layernorm_residual_case(33, 70, with_gamma);
        layernorm_residual_case(200, 200, with_gamma);  /* 40000 > the OpenMP threshold */
    }
    return 0;
}

/* The child runs one contract violation; the case passes when it ends with an error. */
static int dies(void (*violation)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr)) _exit(0);  /* the expected error stays quiet */
        violation();
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

enum { VIOLATION_ROWS = 4, VIOLATION_IN = 3, VIOLATION_OUT = 5 };

static void residual_into_bf16_y(void)
{
    bf16_t x[VIOLATION_ROWS * VIOLATION_IN] = {0}, y[VIOLATION_ROWS * VIOLATION_OUT];
    float W[VIOLATION_OUT * VIOLATION_IN] = {0}, res[VIOLATION_ROWS * VIOLATION_OUT] = {0};
    be->linear_fwd_bf16(y, DTYPE_BF16, x, W, NULL, res, VIOLATION_ROWS, VIOLATION_IN,
                        VIOLATION_OUT);
}

static void y_overlaps_residual(void)
{
    bf16_t x[VIOLATION_ROWS * VIOLATION_IN] = {0};
    float W[VIOLATION_OUT * VIOLATION_IN] = {0}, buf[VIOLATION_ROWS * VIOLATION_OUT + 1] = {0};
    be->linear_fwd_bf16(buf + 1, DTYPE_F32, x, W, NULL, buf, VIOLATION_ROWS, VIOLATION_IN,
                        VIOLATION_OUT);
}

static void dx_overlaps_residual(void)
{
    enum { ROWS = 2, DIM = 8 };
    float x[ROWS * DIM] = {0}, dy[ROWS * DIM] = {0}, mean[ROWS] = {0}, rstd[ROWS] = {1, 1};
    float buf[ROWS * DIM + DIM] = {0};
    be->layernorm_bwd(buf + DIM, buf, NULL, NULL, dy, x, mean, rstd, NULL, ROWS, DIM);
}

static int test_contract_checks(void)
{
    TEST_CHECK(dies(residual_into_bf16_y), "a residual with a bf16 y was accepted");
    TEST_CHECK(dies(y_overlaps_residual), "a y overlapping the residual was accepted");
    TEST_CHECK(dies(dx_overlaps_residual), "a dx overlapping dx_residual was accepted");
    return 0;
}

int main(void)
{
    be = backend_cpu();
    TEST_RUN(test_linear_residual);
    TEST_RUN(test_layernorm_residual);
    TEST_RUN(test_contract_checks);
    return test_finish();
}
