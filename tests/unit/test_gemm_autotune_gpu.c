/* The cuBLASLt autotune (gemm_autotune, cuda/cuda_gemm_autotune.h) on a GPU; skipped elsewhere
 * ("skip: no GPU"). Model-shaped bf16 GEMMs run once with autotune off and once with it on
 * (fresh plans: on and off keep their own, so the second run's first call of each shape is the
 * one whose candidates are timed, on that call's own operands):
 *  - fc1 forward, bf16 y with the bias epilogue (rows 2304, 768 -> 3072);
 *  - fc2 forward with the residual as cuBLASLt's C and y as D (C != D, beta = 1), fp32 y;
 *  - the weight gradient dW += dy^T x in place (beta = 1) with K = 9216 rows, and its dx;
 *  - a strided batch of attention-shaped products accumulated in place (beta = 1; the backend's
 *    gemm under bf16 GEMMs, gpu_set_math(0, 1): operands rounded to bf16, exact here).
 * Checks: every result against a double reference from the same bf16 operands on sampled
 * entries, relative to the sum of |terms| (an in-place GEMM whose trials had accumulated into
 * the real output would be off by a whole product, about 1/sqrt(K) of that sum, against a
 * tolerance of 1e-4 of it: so "accumulated exactly once"); the residual left unwritten, bit for
 * bit; on against off over every entry (fp32 sums in another order: 1e-4 of the largest value,
 * plus one bf16 ulp for a bf16 output); and the statistics: each shape's plan tuned with
 * autotune on, none with it off. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "ops/backend.h"
#include "ops/bf16.h"
#include "ops/gpu_device.h"
#include "test.h"

enum { SAMPLES = 256 };
#define REL_SUM 1e-4   /* of the sum of |terms|: fp32 accumulation over up to 9216 terms */
#define BF16_ULP (1.0 / 128.0)

static const AliceBackend *gpu;

/* bf16-representable uniform values in [-1, 1): the operands the GPU and reference share. */
static float *host_values(size_t n, uint32_t sample)
{
    RngStream s;
    rng_init(&s, 2027, 0, sample, RNG_TEST);
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = bf16_round(2.0f * rng_uniform(&s) - 1.0f);
    return x;
}

static bf16_t *host_bf16(const float *x, size_t n)
{
    bf16_t *h = malloc(n * sizeof(bf16_t));
    for (size_t i = 0; i < n; i++) h[i] = bf16_from_float(x[i]);
    return h;
}

static void *device_copy(const void *host, size_t bytes)
{
    void *d = gpu->alloc(bytes);
    gpu->upload(d, host, bytes);
    return d;
}

static float *download_floats(const float *d, size_t n)
{
    float *h = malloc(n * sizeof(float));
    gpu->download(h, d, n * sizeof(float));
    return h;
}

/* Entries of an output of n elements to compare with the reference. */
static void sample_entries(size_t *at, size_t n, uint32_t sample)
{
    RngStream s;
    rng_init(&s, 2027, 1, sample, RNG_TEST);
    for (int i = 0; i < SAMPLES; i++) at[i] = (size_t)rng_below(&s, (uint32_t)n);
}

/* One reference entry in double: init + sum_k a[k a_step] b[k b_step] over n terms, in k's
 * order; *mag: the scale of its rounding error, init_mag + the sum of the terms' magnitudes. */
static double dot_reference(double init, double init_mag, const float *a, size_t a_step,
                            const float *b, size_t b_step, int n, double *mag)
{
    double sum = init, abs_sum = init_mag;
    for (int k = 0; k < n; k++) {
        const double t = (double)a[k * a_step] * b[k * b_step];
        sum += t;
        abs_sum += fabs(t);
    }
    *mag = abs_sum;
    return sum;
}

/* got (a full output) against ref/scale at the sampled entries. */
static void check_samples(const char *what, const float *got, const size_t *at, const double *ref,
                          const double *scale)
{
    float g[SAMPLES];
    for (int i = 0; i < SAMPLES; i++) g[i] = got[at[i]];
    test_compare_ref(what, g, ref, scale, SAMPLES, REL_SUM, 1e-6);
}

/* on against off over all n entries: another summation order, and for a bf16 output one
 * rounding step either side. */
static void check_on_off(const char *what, const float *on, const float *off, size_t n,
                         int bf16_out)
{
    double largest = 0.0;
    for (size_t i = 0; i < n; i++) largest = fmax(largest, fabs(off[i]));
    size_t bad = 0, worst = 0;
    double worst_r = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double tol = 1e-4 * largest + (bf16_out ? BF16_ULP * fabs(off[i]) : 0.0);
        const double r = fabs((double)on[i] - off[i]) / tol;
        if (!(r <= 1.0)) bad++;
        if (!(r <= worst_r)) worst_r = r, worst = i;
    }
    TEST_CHECK(bad == 0, "%s: autotune on vs off: %zu of %zu entries differ; worst %zu: on %.9g, "
               "off %.9g", what, bad, n, worst, on[worst], off[worst]);
}

/* Plans tuned by running fn with autotune as given (the statistics' difference). */
static int tuned_by(void (*fn)(void *), void *arg, int autotune)
{
    GpuGemmAutotuneStats before, after;
    gpu_gemm_autotune_stats(&before);
    gpu_set_gemm_autotune(autotune);
    fn(arg);
    gpu->synchronize();
    gpu_set_gemm_autotune(0);
    gpu_gemm_autotune_stats(&after);
    return after.plans_tuned - before.plans_tuned;
}

static void check_tuned(const char *what, int tuned_off, int tuned_on, int plans)
{
    TEST_CHECK(tuned_off == 0, "%s: autotune off tuned %d plans", what, tuned_off);
    TEST_CHECK(tuned_on == plans, "%s: autotune on tuned %d plans, expected %d (one per shape)",
               what, tuned_on, plans);
}

/* ---- linear forward: y = x W^T + b (+ residual) ---- */
typedef struct {
    int rows, in, out, bf16_y, with_residual;
    float *y;       /* device: fp32 y, or bf16 y (as bf16_t) */
    bf16_t *x;      /* device */
    float *W, *b, *residual;  /* device */
} LinearCase;

static void run_linear_fwd(void *arg)
{
    LinearCase *c = arg;
    gpu->linear_fwd_bf16(c->y, c->bf16_y ? DTYPE_BF16 : DTYPE_F32, c->x, c->W, c->b,
                         c->residual, c->rows, c->in, c->out);
}

/* y set to NaN (all bits set: NaN in fp32 and in bf16), so an entry left unwritten fails. */
static void poison_y(const LinearCase *c)
{
    const size_t bytes = (size_t)c->rows * c->out * (c->bf16_y ? sizeof(bf16_t) : sizeof(float));
    unsigned char *h = malloc(bytes);
    memset(h, 0xff, bytes);
    gpu->upload(c->y, h, bytes);
    free(h);
}

/* y downloaded as floats (a bf16 y widened). */
static float *download_y(const LinearCase *c)
{
    const size_t n = (size_t)c->rows * c->out;
    if (!c->bf16_y) return download_floats(c->y, n);
    bf16_t *h = malloc(n * sizeof(bf16_t));
    gpu->download(h, c->y, n * sizeof(bf16_t));
    float *f = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) f[i] = bf16_to_float(h[i]);
    free(h);
    return f;
}

static int linear_fwd_case(const char *what, int rows, int in, int out, int bf16_y,
                           int with_residual, uint32_t seed)
{
    const size_t nx = (size_t)rows * in, nw = (size_t)out * in, ny = (size_t)rows * out;
    float *x = host_values(nx, seed), *W = host_values(nw, seed + 1);
    float *b = host_values(out, seed + 2), *res = host_values(ny, seed + 3);
    bf16_t *x16 = host_bf16(x, nx);
    LinearCase c = {rows, in, out, bf16_y, with_residual, NULL, NULL, NULL, NULL, NULL};
    c.y = gpu->alloc(ny * (bf16_y ? sizeof(bf16_t) : sizeof(float)));
    c.x = device_copy(x16, nx * sizeof(bf16_t));
    c.W = device_copy(W, nw * sizeof(float));
    c.b = device_copy(b, out * sizeof(float));
    c.residual = with_residual ? device_copy(res, ny * sizeof(float)) : NULL;

    poison_y(&c);
    const int tuned_off = tuned_by(run_linear_fwd, &c, 0);
    float *off = download_y(&c);
    poison_y(&c);
    const int tuned_on = tuned_by(run_linear_fwd, &c, 1);
    float *on = download_y(&c);

    size_t at[SAMPLES];
    double ref[SAMPLES], scale[SAMPLES];
    sample_entries(at, ny, seed);
    for (int i = 0; i < SAMPLES; i++) {
        const size_t r = at[i] / out, o = at[i] % out;
        const double bias = bf16_y ? bf16_round(b[o]) : b[o];  /* a bf16 y's bias is bf16 */
        double mag;
        ref[i] = dot_reference(bias + (with_residual ? res[at[i]] : 0.0),
                               fabs(bias) + (with_residual ? fabs(res[at[i]]) : 0.0),
                               x + r * in, 1, W + o * in, 1, in, &mag);
        /* a bf16 y: its one rounding, BF16_ULP / 2 of the value, as a share of the sum */
        scale[i] = mag + (bf16_y ? BF16_ULP / REL_SUM * fabs(ref[i]) : 0.0);
    }
    char label[128];
    snprintf(label, sizeof label, "%s, autotune off", what);
    check_samples(label, off, at, ref, scale);
    snprintf(label, sizeof label, "%s, autotune on", what);
    check_samples(label, on, at, ref, scale);
    check_on_off(what, on, off, ny, bf16_y);
    check_tuned(what, tuned_off, tuned_on, 1);
    if (with_residual) {  /* the trials read the residual (cuBLASLt's C), never wrote it */
        float *after = download_floats(c.residual, ny);
        TEST_CHECK(memcmp(after, res, ny * sizeof(float)) == 0,
                   "%s: the residual changed on the device", what);
        free(after);
    }
    free(off); free(on); free(x); free(W); free(b); free(res); free(x16);
    gpu->release(c.y); gpu->release(c.x); gpu->release(c.W); gpu->release(c.b);
    gpu->release(c.residual);
    return 0;
}

static int test_fc1_forward_bias_epilogue(void)
{
    return linear_fwd_case("fc1 forward, bf16 y, bias epilogue", 2304, 768, 3072, 1, 0, 10);
}

static int test_fc2_forward_residual(void)
{
    return linear_fwd_case("fc2 forward, residual C != D", 2304, 3072, 768, 0, 1, 20);
}

/* ---- linear backward: dx = dy W, dW += dy^T x (in place, beta = 1) ---- */
typedef struct {
    int rows, in, out;
    float *dx, *dW, *dW0, *dy, *W;  /* device; dW0 the starting gradient */
    bf16_t *x;
} LinearBwdCase;

static void run_linear_bwd(void *arg)
{
    LinearBwdCase *c = arg;
    gpu->copy(c->dW, c->dW0, (size_t)c->out * c->in * sizeof(float));
    gpu->fill(c->dx, NAN, (size_t)c->rows * c->in);  /* an unwritten entry fails */
    gpu->linear_bwd_bf16(c->dx, c->dW, NULL, c->dy, c->x, c->W, c->rows, c->in, c->out);
}

static int test_weight_gradient_in_place(void)
{
    const char *what = "dW += dy^T x (K = 9216 rows, in place)";
    const int rows = 9216, in = 768, out = 768;
    const size_t nx = (size_t)rows * in, nw = (size_t)out * in, ny = (size_t)rows * out;
    float *x = host_values(nx, 30), *W = host_values(nw, 31), *dy = host_values(ny, 32);
    float *dW0 = host_values(nw, 33);
    bf16_t *x16 = host_bf16(x, nx);
    LinearBwdCase c = {rows, in, out, NULL, NULL, NULL, NULL, NULL, NULL};
    c.dx = gpu->alloc(nx * sizeof(float));
    c.dW = gpu->alloc(nw * sizeof(float));
    c.dW0 = device_copy(dW0, nw * sizeof(float));
    c.dy = device_copy(dy, ny * sizeof(float));
    c.W = device_copy(W, nw * sizeof(float));
    c.x = device_copy(x16, nx * sizeof(bf16_t));

    const int tuned_off = tuned_by(run_linear_bwd, &c, 0);
    float *dW_off = download_floats(c.dW, nw), *dx_off = download_floats(c.dx, nx);
    const int tuned_on = tuned_by(run_linear_bwd, &c, 1);
    float *dW_on = download_floats(c.dW, nw), *dx_on = download_floats(c.dx, nx);

    size_t at[SAMPLES];
    double ref[SAMPLES], scale[SAMPLES];
    sample_entries(at, nw, 30);
    for (int i = 0; i < SAMPLES; i++) {  /* dW[o, k] = dW0 + sum_r dy[r, o] x[r, k] */
        const size_t o = at[i] / in, k = at[i] % in;
        ref[i] = dot_reference(dW0[at[i]], fabs(dW0[at[i]]), dy + o, out, x + k, in, rows,
                               &scale[i]);
    }
    check_samples("dW, autotune off", dW_off, at, ref, scale);
    check_samples("dW, autotune on (accumulated exactly once)", dW_on, at, ref, scale);
    sample_entries(at, nx, 31);
    for (int i = 0; i < SAMPLES; i++) {  /* dx[r, k] = sum_o dy[r, o] W[o, k] */
        const size_t r = at[i] / in, k = at[i] % in;
        ref[i] = dot_reference(0.0, 0.0, dy + r * out, 1, W + k, in, out, &scale[i]);
    }
    check_samples("dx, autotune off", dx_off, at, ref, scale);
    check_samples("dx, autotune on", dx_on, at, ref, scale);
    check_on_off("dW", dW_on, dW_off, nw, 0);
    check_on_off("dx", dx_on, dx_off, nx, 0);
    check_tuned(what, tuned_off, tuned_on, 2);  /* the dx and the dW GEMM */
    free(x); free(W); free(dy); free(dW0); free(x16);
    free(dW_off); free(dx_off); free(dW_on); free(dx_on);
    gpu->release(c.dx); gpu->release(c.dW); gpu->release(c.dW0); gpu->release(c.dy);
    gpu->release(c.W); gpu->release(c.x);
    return 0;
}

/* ---- strided batch, in place: C_b += A_b B_b (attention-shaped) ---- */
typedef struct {
    int M, N, K, batch;
    float *A, *B, *C, *C0;  /* device; A and B bf16-representable */
} BatchCase;

static void run_batch(void *arg)
{
    BatchCase *c = arg;
    const size_t nc = (size_t)c->batch * c->M * c->N;
    gpu->copy(c->C, c->C0, nc * sizeof(float));
    gpu_set_math(0, 1);
    gpu->gemm(0, 0, c->M, c->N, c->K, 1.0f, c->A, c->K, (long)c->M * c->K, c->B, c->N,
              (long)c->K * c->N, 1.0f, c->C, c->N, (long)c->M * c->N, c->batch);
    gpu_set_math(0, 0);
}

static int test_batched_in_place(void)
{
    const char *what = "strided batch C += A B (in place)";
    const int M = 576, N = 64, K = 576, batch = 6;
    const size_t na = (size_t)batch * M * K, nb = (size_t)batch * K * N;
    const size_t nc = (size_t)batch * M * N;
    float *A = host_values(na, 40), *B = host_values(nb, 41), *C0 = host_values(nc, 42);
    BatchCase c = {M, N, K, batch, NULL, NULL, NULL, NULL};
    c.A = device_copy(A, na * sizeof(float));
    c.B = device_copy(B, nb * sizeof(float));
    c.C0 = device_copy(C0, nc * sizeof(float));
    c.C = gpu->alloc(nc * sizeof(float));

    const int tuned_off = tuned_by(run_batch, &c, 0);
    float *off = download_floats(c.C, nc);
    const int tuned_on = tuned_by(run_batch, &c, 1);
    float *on = download_floats(c.C, nc);

    size_t at[SAMPLES];
    double ref[SAMPLES], scale[SAMPLES];
    sample_entries(at, nc, 40);
    for (int i = 0; i < SAMPLES; i++) {
        const size_t b = at[i] / ((size_t)M * N), m = at[i] / N % M, n = at[i] % N;
        ref[i] = dot_reference(C0[at[i]], fabs(C0[at[i]]), A + (b * M + m) * K, 1,
                               B + b * K * N + n, N, K, &scale[i]);
    }
    check_samples("batch, autotune off", off, at, ref, scale);
    check_samples("batch, autotune on (accumulated exactly once)", on, at, ref, scale);
    check_on_off(what, on, off, nc, 0);
    check_tuned(what, tuned_off, tuned_on, 1);
    free(A); free(B); free(C0); free(off); free(on);
    gpu->release(c.A); gpu->release(c.B); gpu->release(c.C0); gpu->release(c.C);
    return 0;
}

int main(void)
{
    if (gpu_device_count() == 0) {
        printf("skip: no GPU (built without CUDA, or cudaGetDeviceCount finds no device)\n");
        return 77;
    }
    gpu = backend_cuda();
    TEST_RUN(test_fc1_forward_bias_epilogue);
    TEST_RUN(test_fc2_forward_residual);
    TEST_RUN(test_weight_gradient_in_place);
    TEST_RUN(test_batched_in_place);
    GpuGemmAutotuneStats s;
    gpu_gemm_autotune_stats(&s);
    printf("gemm autotune: %d plans tuned, %d kept the heuristic's first, %d candidates timed, "
           "%d skipped; one launch each: chosen %.4f ms vs first %.4f ms\n", s.plans_tuned,
           s.kept_first, s.candidates_timed, s.candidates_skipped, s.chosen_ms, s.first_ms);
    return test_finish();
}
