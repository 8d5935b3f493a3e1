/* Every op of the backend table on the CUDA backend against the CPU backend (the reference) on
 * fresh random inputs. Skipped (exit 77, "skip: no GPU") when built without CUDA or when no
 * device is visible.
 *
 * Rules of every case:
 *  - Outputs and input-gradient buffers are POISONED (NaN) on both backends before the op, so
 *    an element a backend forgets to write fails the comparison (NaN never compares close).
 *  - Parameter-gradient buffers start from the same random values on both backends, so a
 *    backend that overwrites instead of accumulating fails.
 *  - |gpu - cpu| <= atol + rtol |cpu| element by element, tolerances stated per op below
 *    (fp32, no TF32: differences come only from summation order, so elementwise ops get
 *    1e-6 and sums of K terms get about 1e-5 relative plus an absolute term growing with
 *    sqrt(K)). Mixed-precision modes (TF32, bf16 GEMMs) are checked at the end with the
 *    looser tolerances their 10-bit / 7-bit mantissas imply. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "ops/backend.h"
#include "ops/decay_mask.h"
#include "ops/gpu_device.h"
#include "test.h"

static const AliceBackend *cpu, *gpu;
static uint32_t next_stream = 1;

/* ---- paired buffers: the same host data on both backends ---- */

typedef enum { INIT_UNIFORM, INIT_POISON, INIT_ZERO } InitKind;

typedef struct {
    size_t n;
    float *host;
    float *c, *g; /* CPU-backend and GPU-backend memory */
} Pair;

typedef struct {
    size_t n;
    int *host;
    int *c, *g;
} IntPair;

static void fill_uniform(float *x, size_t n, float lo, float hi)
{
    RngStream s;
    rng_init(&s, 2024, 0, next_stream++, RNG_TEST);
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * rng_uniform(&s);
}

static Pair pair_make(size_t n, InitKind kind, float lo, float hi)
{
    Pair p = {n, malloc((n ? n : 1) * sizeof(float)), NULL, NULL};
    if (kind == INIT_UNIFORM) fill_uniform(p.host, n, lo, hi);
    else for (size_t i = 0; i < n; i++) p.host[i] = kind == INIT_POISON ? NAN : 0.0f;
    p.c = cpu->alloc((n ? n : 1) * sizeof(float));
    p.g = gpu->alloc((n ? n : 1) * sizeof(float));
    cpu->upload(p.c, p.host, n * sizeof(float));
    gpu->upload(p.g, p.host, n * sizeof(float));
    return p;
}

/* Inputs uniform in [-1, 1); outputs poisoned; parameter gradients random (accumulation). */
static Pair input(size_t n) { return pair_make(n, INIT_UNIFORM, -1.0f, 1.0f); }
static Pair output(size_t n) { return pair_make(n, INIT_POISON, 0, 0); }
static Pair param_grad(size_t n) { return pair_make(n, INIT_UNIFORM, -0.5f, 0.5f); }

static IntPair int_pair(const int *values, size_t n)
{
    IntPair p = {n, malloc((n ? n : 1) * sizeof(int)), NULL, NULL};
    memcpy(p.host, values, n * sizeof(int));
    p.c = cpu->alloc((n ? n : 1) * sizeof(int));
    p.g = gpu->alloc((n ? n : 1) * sizeof(int));
    cpu->upload(p.c, p.host, n * sizeof(int));
    gpu->upload(p.g, p.host, n * sizeof(int));
    return p;
}

static void pair_free(Pair *p)
{
    free(p->host);
    cpu->release(p->c);
    gpu->release(p->g);
}

static void int_pair_free(IntPair *p)
{
    free(p->host);
    cpu->release(p->c);
    gpu->release(p->g);
}

/* Element-by-element comparison of host copies (n values each); reports the count of bad
 * elements and the worst one. */
static void compare_values(const float *hc, const float *hg, size_t n, double rtol, double atol,
                           const char *what)
{
    size_t bad = 0, worst_i = 0;
    double worst = -1.0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)hg[i] - hc[i]), tol = atol + rtol * fabs(hc[i]);
        double r = err / tol;
        if (!(err <= tol)) bad++;
        if (!(r <= worst)) worst = r, worst_i = i;
    }
    TEST_CHECK(bad == 0, "%s: %zu of %zu elements off (rtol %g, atol %g); worst [%zu]: gpu %.9g, "
               "cpu %.9g", what, bad, n, rtol, atol, worst_i, n ? hg[worst_i] : 0.0f,
               n ? hc[worst_i] : 0.0f);
}

static void compare(const Pair *p, double rtol, double atol, const char *what)
{
    float *hc = malloc((p->n ? p->n : 1) * sizeof(float));
    float *hg = malloc((p->n ? p->n : 1) * sizeof(float));
    cpu->download(hc, p->c, p->n * sizeof(float));
    gpu->download(hg, p->g, p->n * sizeof(float));
    compare_values(hc, hg, p->n, rtol, atol, what);
    free(hc);
    free(hg);
}

/* Makes the GPU copy equal to the CPU copy again. Ops compared in a chain get identical inputs
 * this way: without it the last-bit differences of one op (the GPU contracts a*x + b*y into an
 * FMA, the CPU build does not) are amplified by the cancellation in the next (x + y with
 * y ~ -x), and that op's comparison would measure its inputs, not itself. */
static void pair_resync(const Pair *p)
{
    float *h = malloc((p->n ? p->n : 1) * sizeof(float));
    cpu->download(h, p->c, p->n * sizeof(float));
    gpu->upload(p->g, h, p->n * sizeof(float));
    free(h);
}

static void random_permutation(int *perm, int n)
{
    RngStream s;
    rng_init(&s, 2024, 1, next_stream++, RNG_TEST);
    rng_permutation(&s, perm, n);
}

/* ---- memory and elementwise ---- */

static int test_memory(void)
{
    Pair a = input(1000), b = output(1000);
    gpu->copy(b.g, a.g, 1000 * sizeof(float));
    cpu->copy(b.c, a.c, 1000 * sizeof(float));
    compare(&b, 0, 0, "copy");
    gpu->fill(b.g, 0.25f, 777);
    cpu->fill(b.c, 0.25f, 777);
    compare(&b, 0, 0, "fill (first 777 filled, rest copied)");
    gpu->synchronize();
    pair_free(&a);
    pair_free(&b);
    return 0;
}

static int test_elementwise(void)
{
    const size_t n = 100003; /* odd: tails of grid-stride loops */
    Pair x = input(n), y = input(n), out = output(n);
    gpu->axpby(y.g, x.g, 0.7f, -1.3f, n);
    cpu->axpby(y.c, x.c, 0.7f, -1.3f, n);
    compare(&y, 1e-6, 1e-7, "axpby");
    pair_resync(&y);
    gpu->scale(y.g, 3.5f, n);
    cpu->scale(y.c, 3.5f, n);
    compare(&y, 1e-6, 1e-7, "scale");
    pair_resync(&y);
    gpu->add(out.g, x.g, y.g, n);
    cpu->add(out.c, x.c, y.c, n);
    compare(&out, 1e-6, 1e-7, "add");
    gpu->add(x.g, x.g, y.g, n); /* aliasing */
    cpu->add(x.c, x.c, y.c, n);
    compare(&x, 1e-6, 1e-7, "add in place");
    pair_resync(&x);
    /* drop-path's add_group_scaled: 7 groups of n / 7 (a tail), scales 0, 2 and 1 / 0.85;
     * product and sum rounded on their own on both backends, so bit for bit */
    const int groups = 7;
    const size_t per = n / groups;
    Pair scales = output(groups), grouped = output(groups * per);
    float sch[7];
    for (int g = 0; g < groups; g++)
        sch[g] = g % 3 == 0 ? 0.0f : (g % 3 == 1 ? 2.0f : 1.0f / 0.85f);
    gpu->upload(scales.g, sch, sizeof sch);
    cpu->upload(scales.c, sch, sizeof sch);
    gpu->add_group_scaled(grouped.g, x.g, y.g, scales.g, groups, per);
    cpu->add_group_scaled(grouped.c, x.c, y.c, scales.c, groups, per);
    compare(&grouped, 0, 0, "add_group_scaled");
    gpu->add_group_scaled(y.g, NULL, y.g, scales.g, groups, per);   /* in place, no base */
    cpu->add_group_scaled(y.c, NULL, y.c, scales.c, groups, per);
    compare(&y, 0, 0, "add_group_scaled without base, in place");
    pair_resync(&y);
    pair_free(&scales);
    pair_free(&grouped);
    pair_resync(&x); /* sum_squares is checked at 1e-9: identical inputs */
    double sg = gpu->sum_squares(x.g, n), sc = cpu->sum_squares(x.c, n);
    TEST_CLOSE(sg, sc, 1e-9, 0, "sum_squares");
    /* the training loop's "all gradients finite" check is this norm (backend.h) */
    float inf = INFINITY;
    gpu->upload(x.g + 4242, &inf, sizeof inf);
    TEST_CHECK(isinf(gpu->sum_squares(x.g, n)), "sum_squares hides an inf");
    float nan = NAN;
    gpu->upload(x.g + 4242, &nan, sizeof nan);
    TEST_CHECK(isnan(gpu->sum_squares(x.g, n)), "sum_squares hides a NaN");
    /* b = 0 ignores y (BLAS convention, as the CPU): a poisoned y must not leak NaN. */
    gpu->axpby(out.g, y.g, -0.6f, 0.0f, n);
    cpu->axpby(out.c, y.c, -0.6f, 0.0f, n);
    compare(&out, 1e-6, 1e-7, "axpby with b = 0 onto a NaN-poisoned y");
    pair_free(&x);
    pair_free(&y);
    pair_free(&out);
    return 0;
}

/* More elements than one grid covers (grid_for caps at 65536 blocks of 256 threads = 2^24
 * threads), so every thread of the grid-stride loops runs more than one iteration, and the
 * device-wide reductions too. */
static int test_grid_stride(void)
{
    const size_t n = ((size_t)1 << 24) + ((size_t)1 << 20) + 3;
    Pair x = input(n), y = output(n);
    gpu->copy(y.g, x.g, n * sizeof(float));
    cpu->copy(y.c, x.c, n * sizeof(float));
    gpu->scale(y.g, -2.5f, n);
    cpu->scale(y.c, -2.5f, n);
    compare(&y, 1e-6, 0, "scale over 2^24 + 2^20 + 3 elements");
    gpu->gelu_fwd(y.g, x.g, n);
    cpu->gelu_fwd(y.c, x.c, n);
    compare(&y, 0, 1e-7, "gelu_fwd over 2^24 + 2^20 + 3 elements");  /* see test_activations */
    double sg = gpu->sum_squares(x.g, n), sc = cpu->sum_squares(x.c, n);
    TEST_CLOSE(sg, sc, 1e-9, 0, "sum_squares over 2^24 + 2^20 + 3 elements");
    float inf = INFINITY;
    gpu->upload(x.g + n - 1, &inf, sizeof inf); /* the very last element */
    TEST_CHECK(isinf(gpu->sum_squares(x.g, n)), "sum_squares hides an inf in the last element");
    pair_free(&x);
    pair_free(&y);
    return 0;
}

static int test_activations(void)
{
    const size_t n = 65537;
    Pair x = pair_make(n, INIT_UNIFORM, -4, 4), dy = input(n), y = output(n), dx = output(n);
    /* Both backends run one GELU (gelu_erf / gelu_erf_slope of ops/cpu_math.h: Abramowitz &
     * Stegun's erf, every product and sum rounded on its own, no FMA contraction on the GPU),
     * so they should agree bit for bit; atol 1e-7 (below one ulp of |y| >= 1, rtol 0) still
     * catches a kernel that falls back to CUDA's erff (up to 4.8e-7 off in gelu, 3.6e-7 in
     * its derivative on [-4, 4]) or to the tanh approximation (~5e-4). */
    gpu->gelu_fwd(y.g, x.g, n);
    cpu->gelu_fwd(y.c, x.c, n);
    compare(&y, 0, 1e-7, "gelu_fwd");
    gpu->gelu_bwd(dx.g, dy.g, x.g, n);
    cpu->gelu_bwd(dx.c, dy.c, x.c, n);
    compare(&dx, 0, 1e-7, "gelu_bwd");
    gpu->leaky_relu_fwd(y.g, x.g, n, 0.01f);
    cpu->leaky_relu_fwd(y.c, x.c, n, 0.01f);
    compare(&y, 1e-6, 0, "leaky_relu_fwd");
    gpu->leaky_relu_bwd(dx.g, dy.g, x.g, n, 0.01f);
    cpu->leaky_relu_bwd(dx.c, dy.c, x.c, n, 0.01f);
    compare(&dx, 1e-6, 0, "leaky_relu_bwd");
    pair_free(&x);
    pair_free(&dy);
    pair_free(&y);
    pair_free(&dx);
    return 0;
}

/* ---- GEMM ---- */

/* fp32 GEMM tolerance for K-term sums of uniform(-1,1) products. */
static double gemm_atol(int K) { return 2e-6 * sqrt((double)K) * 4.0; }

static void gemm_case(int transA, int transB, int M, int N, int K, int pad, int batch,
                      float alpha, float beta)
{
    /* Stored shapes with leading dimensions padded by pad, batches strided with a gap. */
    int ar = transA ? K : M, ac = transA ? M : K, br = transB ? N : K, bc = transB ? K : N;
    int lda = ac + pad, ldb = bc + pad, ldc = N + pad;
    long sA = (long)ar * lda + 3, sB = (long)br * ldb + 5, sC = (long)M * ldc + 7;
    Pair A = input((size_t)sA * batch), B = input((size_t)sB * batch);
    Pair C = beta != 0.0f ? input((size_t)sC * batch) : output((size_t)sC * batch);
    gpu->gemm(transA, transB, M, N, K, alpha, A.g, lda, sA, B.g, ldb, sB, beta, C.g, ldc, sC, batch);
    cpu->gemm(transA, transB, M, N, K, alpha, A.c, lda, sA, B.c, ldb, sB, beta, C.c, ldc, sC, batch);
    /* The padding of C is never written by either backend: compare only the M x N blocks. */
    Pair view = output((size_t)M * N * batch);
    float *hc = malloc(C.n * sizeof(float)), *hg = malloc(C.n * sizeof(float));
    cpu->download(hc, C.c, C.n * sizeof(float));
    gpu->download(hg, C.g, C.n * sizeof(float));
    float *vc = malloc(view.n * sizeof(float)), *vg = malloc(view.n * sizeof(float));
    for (int b = 0; b < batch; b++)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                vc[((size_t)b * M + i) * N + j] = hc[b * sC + (long)i * ldc + j];
                vg[((size_t)b * M + i) * N + j] = hg[b * sC + (long)i * ldc + j];
            }
    cpu->upload(view.c, vc, view.n * sizeof(float));
    gpu->upload(view.g, vg, view.n * sizeof(float));
    char what[160];
    snprintf(what, sizeof what, "gemm tA=%d tB=%d M=%d N=%d K=%d pad=%d batch=%d", transA, transB,
             M, N, K, pad, batch);
    compare(&view, 1e-5, gemm_atol(K), what);
    free(hc); free(hg); free(vc); free(vg);
    pair_free(&A); pair_free(&B); pair_free(&C); pair_free(&view);
}

static int test_gemm(void)
{
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            gemm_case(ta, tb, 37, 29, 45, 0, 1, 1.0f, 0.0f);
            gemm_case(ta, tb, 16, 24, 33, 3, 3, 0.5f, 1.0f); /* padded, batched, accumulating */
        }
    return 0;
}

static void linear_case(int rows, int in, int out, int with_bias)
{
    Pair x = input((size_t)rows * in), W = input((size_t)out * in), b = input(out);
    Pair y = output((size_t)rows * out), dy = input((size_t)rows * out);
    Pair dx = output((size_t)rows * in), dW = param_grad((size_t)out * in), db = param_grad(out);
    char what[160];
    gpu->linear_fwd(y.g, x.g, W.g, with_bias ? b.g : NULL, rows, in, out);
    cpu->linear_fwd(y.c, x.c, W.c, with_bias ? b.c : NULL, rows, in, out);
    snprintf(what, sizeof what, "linear_fwd %dx%d->%d bias=%d", rows, in, out, with_bias);
    compare(&y, 1e-5, gemm_atol(in), what);
    gpu->linear_bwd(dx.g, dW.g, with_bias ? db.g : NULL, dy.g, x.g, W.g, rows, in, out);
    cpu->linear_bwd(dx.c, dW.c, with_bias ? db.c : NULL, dy.c, x.c, W.c, rows, in, out);
    snprintf(what, sizeof what, "linear_bwd dx %dx%d->%d", rows, in, out);
    compare(&dx, 1e-5, gemm_atol(out), what);
    snprintf(what, sizeof what, "linear_bwd dW (accumulated) %dx%d->%d", rows, in, out);
    compare(&dW, 1e-5, gemm_atol(rows), what);
    snprintf(what, sizeof what, "linear_bwd db (accumulated) %dx%d->%d", rows, in, out);
    compare(&db, 1e-5, gemm_atol(rows), what);
    /* dx NULL: only the parameter gradients (accumulate a second time). */
    gpu->linear_bwd(NULL, dW.g, NULL, dy.g, x.g, W.g, rows, in, out);
    cpu->linear_bwd(NULL, dW.c, NULL, dy.c, x.c, W.c, rows, in, out);
    compare(&dW, 1e-5, 2 * gemm_atol(rows), "linear_bwd dW, dx = NULL");
    pair_free(&x); pair_free(&W); pair_free(&b); pair_free(&y); pair_free(&dy);
    pair_free(&dx); pair_free(&dW); pair_free(&db);
}

/* A bias 4 bytes into its buffer (a slice of a larger one): not fused into cuBLASLt's epilogue
 * (whose kernels may assume 16-byte alignment) but added by its own kernel. */
static void linear_offset_bias_case(int rows, int in, int out)
{
    Pair x = input((size_t)rows * in), W = input((size_t)out * in), b = input((size_t)out + 1);
    Pair y = output((size_t)rows * out);
    gpu->linear_fwd(y.g, x.g, W.g, b.g + 1, rows, in, out);
    cpu->linear_fwd(y.c, x.c, W.c, b.c + 1, rows, in, out);
    compare(&y, 1e-5, gemm_atol(in), "linear_fwd, bias at a 4-byte offset");
    pair_free(&x); pair_free(&W); pair_free(&b); pair_free(&y);
}

static int test_linear(void)
{
    linear_offset_bias_case(64, 96, 80);
    linear_case(50, 24, 40, 1);
    linear_case(33, 17, 9, 0);
    linear_case(1152, 768, 3072, 1); /* ViT-B MLP: 2 crops of 576 tokens */
    return 0;
}

/* ---- normalisation ---- */

/* LayerNorm forward at one width: the CUDA kernel keeps rows up to 256 and up to 1024 wide in
 * registers and streams wider ones (three code paths, the same bits). */
static void check_layernorm_width(int rows, int dim)
{
    Pair x = pair_make((size_t)rows * dim, INIT_UNIFORM, -2, 3), g = input(dim), b = input(dim);
    Pair y = output((size_t)rows * dim), mean = output(rows), rstd = output(rows);
    char what[64];
    gpu->layernorm_fwd(y.g, mean.g, rstd.g, x.g, g.g, b.g, rows, dim, 1e-5f);
    cpu->layernorm_fwd(y.c, mean.c, rstd.c, x.c, g.c, b.c, rows, dim, 1e-5f);
    snprintf(what, sizeof what, "layernorm_fwd y (width %d)", dim);
    compare(&y, 1e-5, 1e-5, what);
    snprintf(what, sizeof what, "layernorm_fwd rstd (width %d)", dim);
    compare(&rstd, 1e-5, 1e-6, what);
    pair_free(&x); pair_free(&g); pair_free(&b);
    pair_free(&y); pair_free(&mean); pair_free(&rstd);
}

/* Elements whose bits differ between two buffers of n floats in GPU-backend memory. */
static size_t gpu_bits_differ(const float *a, const float *b, size_t n)
{
    float *ha = malloc((n ? n : 1) * sizeof(float)), *hb = malloc((n ? n : 1) * sizeof(float));
    gpu->download(ha, a, n * sizeof(float));
    gpu->download(hb, b, n * sizeof(float));
    size_t differ = 0;
    for (size_t i = 0; i < n; i++) differ += memcmp(&ha[i], &hb[i], sizeof(float)) != 0;
    free(ha);
    free(hb);
    return differ;
}

/* layernorm_bwd with dx_residual (the transformer block's skip connection summed in the dx
 * kernel's store): CPU against GPU with the dx tolerance; on the GPU the fused dx equals
 * layernorm_bwd without a residual followed by the add op, bit for bit (the kernel adds with
 * __fadd_rn after forming the unfused value); the residual is read, never written; dgamma and
 * dbeta accumulate as without it. */
static void check_layernorm_residual(int rows, int dim)
{
    const size_t n = (size_t)rows * dim;
    Pair x = pair_make(n, INIT_UNIFORM, -2, 3), g = input(dim), b = input(dim);
    Pair y = output(n), mean = output(rows), rstd = output(rows);
    Pair dy = input(n), res = pair_make(n, INIT_UNIFORM, -3, 3), dx = output(n);
    Pair dg = param_grad(dim), dbt = param_grad(dim);
    char what[96];
    gpu->layernorm_fwd(y.g, mean.g, rstd.g, x.g, g.g, b.g, rows, dim, 1e-5f);
    cpu->layernorm_fwd(y.c, mean.c, rstd.c, x.c, g.c, b.c, rows, dim, 1e-5f);
    gpu->layernorm_bwd(dx.g, res.g, dg.g, dbt.g, dy.g, x.g, mean.g, rstd.g, g.g, rows, dim);
    cpu->layernorm_bwd(dx.c, res.c, dg.c, dbt.c, dy.c, x.c, mean.c, rstd.c, g.c, rows, dim);
    snprintf(what, sizeof what, "layernorm_bwd dx + dx_residual (%dx%d)", rows, dim);
    compare(&dx, 1e-4, 1e-5, what);
    compare(&dg, 1e-5, 1e-4, "layernorm_bwd dgamma with dx_residual (accumulated)");
    compare(&dbt, 1e-5, 1e-4, "layernorm_bwd dbeta with dx_residual (accumulated)");
    compare(&res, 0, 0, "layernorm_bwd: dx_residual unchanged");
    float *unfused = gpu->alloc(n * sizeof(float));
    gpu->fill(unfused, NAN, n);
    gpu->layernorm_bwd(unfused, NULL, NULL, NULL, dy.g, x.g, mean.g, rstd.g, g.g, rows, dim);
    gpu->add(unfused, res.g, unfused, n);
    const size_t differ = gpu_bits_differ(dx.g, unfused, n);
    TEST_CHECK(differ == 0, "layernorm_bwd on the GPU (%dx%d): %zu of %zu fused dx differ in "
               "bits from layernorm_bwd then add", rows, dim, differ, n);
    gpu->release(unfused);
    pair_free(&x); pair_free(&g); pair_free(&b); pair_free(&y); pair_free(&mean);
    pair_free(&rstd); pair_free(&dy); pair_free(&res); pair_free(&dx); pair_free(&dg);
    pair_free(&dbt);
}

/* layernorm_bwd with dx and both parameter gradients (every LayerNorm of the model): on the
 * GPU one kernel reads dy and x once for all three, its per-block column sums finished by a
 * column sum over the blocks. Against the CPU with the dx and column-sum tolerances; its dx
 * equals, bit for bit, dx asked alone (the dx kernel: the same arithmetic, so nvcc and ptxas
 * must contract it alike); a second call from the same start gives the same bits. */
static void check_layernorm_one_pass(int rows, int dim, int with_gamma)
{
    const size_t n = (size_t)rows * dim;
    Pair x = pair_make(n, INIT_UNIFORM, -2, 3), g = input(dim), b = input(dim);
    Pair y = output(n), mean = output(rows), rstd = output(rows);
    Pair dy = input(n), res = pair_make(n, INIT_UNIFORM, -3, 3), dx = output(n);
    Pair dg = param_grad(dim), dbt = param_grad(dim);
    const float *gamma_g = with_gamma ? g.g : NULL, *gamma_c = with_gamma ? g.c : NULL;
    float *dx2 = gpu->alloc(n * sizeof(float)), *dg2 = gpu->alloc(dim * sizeof(float));
    float *dbt2 = gpu->alloc(dim * sizeof(float));
    char what[128];
    gpu->layernorm_fwd(y.g, mean.g, rstd.g, x.g, gamma_g, b.g, rows, dim, 1e-5f);
    cpu->layernorm_fwd(y.c, mean.c, rstd.c, x.c, gamma_c, b.c, rows, dim, 1e-5f);
    pair_resync(&mean);
    pair_resync(&rstd);
    gpu->copy(dg2, dg.g, dim * sizeof(float));
    gpu->copy(dbt2, dbt.g, dim * sizeof(float));
    gpu->layernorm_bwd(dx.g, res.g, dg.g, dbt.g, dy.g, x.g, mean.g, rstd.g, gamma_g, rows, dim);
    cpu->layernorm_bwd(dx.c, res.c, dg.c, dbt.c, dy.c, x.c, mean.c, rstd.c, gamma_c, rows, dim);
    snprintf(what, sizeof what, "layernorm_bwd one pass %dx%d gamma %d: dx", rows, dim,
             with_gamma);
    compare(&dx, 1e-4, 1e-5, what);
    snprintf(what, sizeof what, "layernorm_bwd one pass %dx%d gamma %d: dgamma (accumulated)",
             rows, dim, with_gamma);
    compare(&dg, 1e-5, 2e-6 * sqrt((double)rows) * 8.0, what);
    snprintf(what, sizeof what, "layernorm_bwd one pass %dx%d gamma %d: dbeta (accumulated)",
             rows, dim, with_gamma);
    compare(&dbt, 1e-5, gemm_atol(rows), what);
    gpu->fill(dx2, NAN, n);
    gpu->layernorm_bwd(dx2, res.g, NULL, NULL, dy.g, x.g, mean.g, rstd.g, gamma_g, rows, dim);
    size_t differ = gpu_bits_differ(dx.g, dx2, n);
    TEST_CHECK(differ == 0, "layernorm_bwd %dx%d gamma %d: %zu of %zu dx of the one pass differ "
               "in bits from dx alone", rows, dim, with_gamma, differ, n);
    gpu->fill(dx2, NAN, n);
    gpu->layernorm_bwd(dx2, res.g, dg2, dbt2, dy.g, x.g, mean.g, rstd.g, gamma_g, rows, dim);
    differ = gpu_bits_differ(dx.g, dx2, n) + gpu_bits_differ(dg.g, dg2, dim) +
             gpu_bits_differ(dbt.g, dbt2, dim);
    TEST_CHECK(differ == 0, "layernorm_bwd one pass %dx%d gamma %d: a second call differs in %zu "
               "elements of dx, dgamma and dbeta", rows, dim, with_gamma, differ);
    gpu->release(dx2); gpu->release(dg2); gpu->release(dbt2);
    pair_free(&x); pair_free(&g); pair_free(&b); pair_free(&y); pair_free(&mean);
    pair_free(&rstd); pair_free(&dy); pair_free(&res); pair_free(&dx); pair_free(&dg);
    pair_free(&dbt);
}

/* layernorm_bwd_dx16 (every LayerNorm backward of a bf16 stack: dx also in bf16 and its column
 * sums for the next linear layer). On the GPU: dx, dgamma and dbeta keep layernorm_bwd's bits;
 * dx_bf16 is the GPU's dx rounded to nearest even, bit for bit; dx_colsum is within the fp32
 * tree's bound of the double column sums of the GPU's own dx (depth: a warp's rows, 8 warps,
 * the column sum over the blocks, generously 32 + rows / 8, times 2^-24 sum |.|), within the
 * dx tolerance summed of the CPU's, and deterministic; past the fused width
 * (kLnBwdFusedMaxDimWithDx, 1024) it has the bits of linear_bwd_bf16's bias gradient of dx
 * (the former sequence). And the consumer: linear_bwd_bf16_dy16 on dx_bf16 gives linear
 * layer dx and dW bit for bit what linear_bwd_bf16 gives on the fp32 dx. */
static void check_layernorm_dx16(int rows, int dim, int fused)
{
    const size_t n = (size_t)rows * dim;
    const int in = 96;  /* the consumer maps in -> dim */
    Pair x = pair_make(n, INIT_UNIFORM, -2, 3), g = input(dim), b = input(dim);
    Pair y = output(n), mean = output(rows), rstd = output(rows);
    Pair dy = input(n), res = pair_make(n, INIT_UNIFORM, -3, 3), dx = output(n);
    Pair dg = param_grad(dim), dbt = param_grad(dim), dxsum = param_grad(dim);
    Pair W = input((size_t)dim * in);
    float *dx_ref = gpu->alloc(n * sizeof(float)), *dg_ref = gpu->alloc(dim * sizeof(float));
    float *dbt_ref = gpu->alloc(dim * sizeof(float)), *dxsum2 = gpu->alloc(dim * sizeof(float));
    bf16_t *dx16 = gpu->alloc(n * sizeof(bf16_t)), *dx16_2 = gpu->alloc(n * sizeof(bf16_t));
    char what[160];
    gpu->layernorm_fwd(y.g, mean.g, rstd.g, x.g, g.g, b.g, rows, dim, 1e-5f);
    cpu->layernorm_fwd(y.c, mean.c, rstd.c, x.c, g.c, b.c, rows, dim, 1e-5f);
    pair_resync(&mean);
    pair_resync(&rstd);
    gpu->copy(dg_ref, dg.g, dim * sizeof(float));
    gpu->copy(dbt_ref, dbt.g, dim * sizeof(float));
    gpu->copy(dxsum2, dxsum.g, dim * sizeof(float));
    float *start = malloc(dim * sizeof(float));
    memcpy(start, dxsum.host, dim * sizeof(float));
    gpu->layernorm_bwd(dx_ref, res.g, dg_ref, dbt_ref, dy.g, x.g, mean.g, rstd.g, g.g, rows, dim);
    gpu->layernorm_bwd_dx16(dx.g, res.g, dg.g, dbt.g, dx16, dxsum.g, dy.g, x.g, mean.g, rstd.g,
                            g.g, rows, dim);
    cpu->layernorm_bwd_dx16(dx.c, res.c, dg.c, dbt.c, NULL, dxsum.c, dy.c, x.c, mean.c, rstd.c,
                            g.c, rows, dim);
    size_t differ = gpu_bits_differ(dx.g, dx_ref, n);
    if (fused)  /* past the fused width the parameter gradients' column sums run over dy, x */
        differ += gpu_bits_differ(dg.g, dg_ref, dim) + gpu_bits_differ(dbt.g, dbt_ref, dim);
    TEST_CHECK(differ == 0, "layernorm_bwd_dx16 %dx%d: %zu elements of dx%s differ in bits from "
               "layernorm_bwd's", rows, dim, differ, fused ? ", dgamma, dbeta" : "");
    snprintf(what, sizeof what, "layernorm_bwd_dx16 %dx%d: dgamma (accumulated)", rows, dim);
    compare(&dg, 1e-5, 2e-6 * sqrt((double)rows) * 8.0, what);
    snprintf(what, sizeof what, "layernorm_bwd_dx16 %dx%d: dbeta (accumulated)", rows, dim);
    compare(&dbt, 1e-5, gemm_atol(rows), what);

    float *hdx = malloc(n * sizeof(float)), *hsum = malloc(dim * sizeof(float));
    float *csum = malloc(dim * sizeof(float));
    bf16_t *h16 = malloc(n * sizeof(bf16_t));
    gpu->download(hdx, dx.g, n * sizeof(float));
    gpu->download(hsum, dxsum.g, dim * sizeof(float));
    cpu->download(csum, dxsum.c, dim * sizeof(float));
    gpu->download(h16, dx16, n * sizeof(bf16_t));
    size_t copy_off = 0, own_off = 0, cpu_off = 0;
    for (size_t i = 0; i < n; i++) copy_off += h16[i] != bf16_from_float(hdx[i]);
    const double depth = 32.0 + rows / 8.0;
    for (int c = 0; c < dim; c++) {
        double s = start[c], a = fabs(start[c]);
        for (int r = 0; r < rows; r++) {
            const double v = hdx[(size_t)r * dim + c];
            s += v, a += fabs(v);
        }
        own_off += !(fabs(hsum[c] - s) <= depth * ldexp(a, -24));
        cpu_off += !(fabs(hsum[c] - csum[c]) <= 1e-4 * a + 1e-5 * rows);
    }
    TEST_CHECK(copy_off == 0, "layernorm_bwd_dx16 %dx%d: %zu of %zu dx_bf16 are not the GPU's dx "
               "rounded to nearest even", rows, dim, copy_off, n);
    TEST_CHECK(own_off == 0, "layernorm_bwd_dx16 %dx%d: %zu of %d dx_colsum off the double sums "
               "of the GPU's dx", rows, dim, own_off, dim);
    TEST_CHECK(cpu_off == 0, "layernorm_bwd_dx16 %dx%d: %zu of %d dx_colsum off the CPU's", rows,
               dim, cpu_off, dim);

    /* a second call: the same bits */
    gpu->upload(dg_ref, dg.host, dim * sizeof(float));
    gpu->upload(dbt_ref, dbt.host, dim * sizeof(float));
    gpu->upload(dxsum2, start, dim * sizeof(float));
    gpu->layernorm_bwd_dx16(dx_ref, res.g, dg_ref, dbt_ref, dx16_2, dxsum2, dy.g, x.g, mean.g,
                            rstd.g, g.g, rows, dim);
    bf16_t *h16_2 = malloc(n * sizeof(bf16_t));
    gpu->download(h16_2, dx16_2, n * sizeof(bf16_t));
    differ = gpu_bits_differ(dxsum.g, dxsum2, dim) + gpu_bits_differ(dx.g, dx_ref, n) +
             (memcmp(h16, h16_2, n * sizeof(bf16_t)) != 0);
    TEST_CHECK(differ == 0, "layernorm_bwd_dx16 %dx%d: a second call gives other bits", rows,
               dim);

    /* the consumer: linear_bwd_bf16_dy16 on dx_bf16 against linear_bwd_bf16 on dx */
    bf16_t *xin = gpu->alloc((size_t)rows * in * sizeof(bf16_t));
    bf16_t *hx = malloc((size_t)rows * in * sizeof(bf16_t));
    for (size_t i = 0; i < (size_t)rows * in; i++) hx[i] = bf16_from_float(x.host[i % n] / 3);
    gpu->upload(xin, hx, (size_t)rows * in * sizeof(bf16_t));
    float *ldx_new = gpu->alloc((size_t)rows * in * sizeof(float));
    float *ldx_old = gpu->alloc((size_t)rows * in * sizeof(float));
    float *dW_new = gpu->alloc((size_t)dim * in * sizeof(float));
    float *dW_old = gpu->alloc((size_t)dim * in * sizeof(float));
    gpu->fill(dW_new, 0.25f, (size_t)dim * in);
    gpu->fill(dW_old, 0.25f, (size_t)dim * in);
    gpu->upload(dxsum2, start, dim * sizeof(float));
    gpu->linear_bwd_bf16_dy16(ldx_new, dW_new, dx16, xin, W.g, rows, in, dim);
    gpu->linear_bwd_bf16(ldx_old, dW_old, dxsum2, dx.g, xin, W.g, rows, in, dim);
    differ = gpu_bits_differ(ldx_new, ldx_old, (size_t)rows * in) +
             gpu_bits_differ(dW_new, dW_old, (size_t)dim * in);
    TEST_CHECK(differ == 0, "layernorm_bwd_dx16 %dx%d: %zu elements of the linear layer's dx and "
               "dW from dx_bf16 differ in bits from linear_bwd_bf16 on dx", rows, dim, differ);
    if (!fused) {
        differ = gpu_bits_differ(dxsum.g, dxsum2, dim);
        TEST_CHECK(differ == 0, "layernorm_bwd_dx16 %dx%d (past the fused width): %zu of %d "
                   "dx_colsum differ in bits from linear_bwd_bf16's bias gradient", rows, dim,
                   differ, dim);
    }
    gpu->release(xin); gpu->release(ldx_new); gpu->release(ldx_old); gpu->release(dW_new);
    gpu->release(dW_old);
    free(hx); free(h16_2); free(hdx); free(hsum); free(csum); free(h16); free(start);
    gpu->release(dx_ref); gpu->release(dg_ref); gpu->release(dbt_ref); gpu->release(dxsum2);
    gpu->release(dx16); gpu->release(dx16_2);
    pair_free(&x); pair_free(&g); pair_free(&b); pair_free(&y); pair_free(&mean);
    pair_free(&rstd); pair_free(&dy); pair_free(&res); pair_free(&dx); pair_free(&dg);
    pair_free(&dbt); pair_free(&dxsum); pair_free(&W);
}

static int test_layernorm(void)
{
    check_layernorm_width(37, 768);
    check_layernorm_width(37, 1100);
    check_layernorm_residual(300, 200);
    check_layernorm_residual(37, 768);  /* the model width */
    check_layernorm_one_pass(9216, 384, 1);  /* the decoder's, all tokens of 16 crops */
    check_layernorm_one_pass(2304, 768, 1);  /* the encoder's, visible tokens */
    check_layernorm_one_pass(45, 37, 0);     /* ragged last block, no gamma */
    check_layernorm_one_pass(300, 1100, 1);  /* above 48 KiB of shared memory: the opt-in */
    check_layernorm_one_pass(37, 1600, 1);   /* past the fused width: dx, then the column sum */
    check_layernorm_dx16(2304, 768, 1);  /* the encoder's LayerNorms in bf16 */
    check_layernorm_dx16(9216, 384, 1);  /* the decoder's */
    check_layernorm_dx16(45, 37, 1);     /* ragged last block */
    check_layernorm_dx16(37, 1100, 0);   /* past the width with dx's sums: the former sequence */
    const int rows = 300, dim = 200;
    Pair x = pair_make((size_t)rows * dim, INIT_UNIFORM, -2, 3), g = input(dim), b = input(dim);
    Pair y = output((size_t)rows * dim), mean = output(rows), rstd = output(rows);
    Pair dy = input((size_t)rows * dim), dx = output((size_t)rows * dim);
    Pair dg = param_grad(dim), dbt = param_grad(dim);
    gpu->layernorm_fwd(y.g, mean.g, rstd.g, x.g, g.g, b.g, rows, dim, 1e-5f);
    cpu->layernorm_fwd(y.c, mean.c, rstd.c, x.c, g.c, b.c, rows, dim, 1e-5f);
    compare(&y, 1e-5, 1e-5, "layernorm_fwd y");
    compare(&mean, 1e-5, 1e-6, "layernorm_fwd mean");
    compare(&rstd, 1e-5, 1e-6, "layernorm_fwd rstd");
    gpu->layernorm_bwd(dx.g, NULL, dg.g, dbt.g, dy.g, x.g, mean.g, rstd.g, g.g,
                       rows, dim);
    cpu->layernorm_bwd(dx.c, NULL, dg.c, dbt.c, dy.c, x.c, mean.c, rstd.c, g.c, rows, dim);
    compare(&dx, 1e-4, 1e-5, "layernorm_bwd dx");
    compare(&dg, 1e-5, 1e-4, "layernorm_bwd dgamma (accumulated)");
    compare(&dbt, 1e-5, 1e-4, "layernorm_bwd dbeta (accumulated)");
    pair_free(&x); pair_free(&g); pair_free(&b); pair_free(&y); pair_free(&mean);
    pair_free(&rstd); pair_free(&dy); pair_free(&dx); pair_free(&dg); pair_free(&dbt);
    return 0;
}

static int test_softmax(void)
{
    const int rows = 257, cols = 577;
    Pair x = pair_make((size_t)rows * cols, INIT_UNIFORM, -8, 8), y = output((size_t)rows * cols);
    Pair dy = input((size_t)rows * cols), dx = output((size_t)rows * cols);
    gpu->softmax_fwd(y.g, x.g, rows, cols);
    cpu->softmax_fwd(y.c, x.c, rows, cols);
    compare(&y, 1e-5, 1e-8, "softmax_fwd");
    gpu->softmax_bwd(dx.g, dy.g, y.g, rows, cols);
    cpu->softmax_bwd(dx.c, dy.c, y.c, rows, cols);
    compare(&dx, 1e-4, 1e-7, "softmax_bwd");
    pair_free(&x); pair_free(&y); pair_free(&dy); pair_free(&dx);
    return 0;
}

static int test_instnorm(void)
{
    const int B = 2, C = 3;
    const long V = 5 * 6 * 7 * 100; /* several chunks per plane */
    const size_t n = (size_t)B * C * V;
    for (int affine = 0; affine < 2; affine++) {
        Pair x = pair_make(n, INIT_UNIFORM, -1, 2), g = input(C), b = input(C);
        Pair y = output(n), mean = output(B * C), rstd = output(B * C);
        Pair dy = input(n), dx = output(n), dg = param_grad(C), dbt = param_grad(C);
        const float *gg = affine ? g.g : NULL, *gc = affine ? g.c : NULL;
        gpu->instnorm_fwd(y.g, mean.g, rstd.g, x.g, gg, affine ? b.g : NULL, B, C, V, 1e-5f);
        cpu->instnorm_fwd(y.c, mean.c, rstd.c, x.c, gc, affine ? b.c : NULL, B, C, V, 1e-5f);
        compare(&y, 1e-5, 1e-5, "instnorm_fwd y");
        compare(&mean, 1e-5, 1e-6, "instnorm_fwd mean");
        compare(&rstd, 1e-5, 1e-6, "instnorm_fwd rstd");
        gpu->instnorm_bwd(dx.g, affine ? dg.g : NULL, affine ? dbt.g : NULL, dy.g, x.g, mean.g,
                          rstd.g, gg, B, C, V);
        cpu->instnorm_bwd(dx.c, affine ? dg.c : NULL, affine ? dbt.c : NULL, dy.c, x.c, mean.c,
                          rstd.c, gc, B, C, V);
        compare(&dx, 1e-4, 1e-6, "instnorm_bwd dx");
        compare(&dg, 1e-5, 1e-3, "instnorm_bwd dgamma (accumulated)");
        compare(&dbt, 1e-5, 1e-3, "instnorm_bwd dbeta (accumulated)");
        pair_free(&x); pair_free(&g); pair_free(&b); pair_free(&y); pair_free(&mean);
        pair_free(&rstd); pair_free(&dy); pair_free(&dx); pair_free(&dg); pair_free(&dbt);
    }
    return 0;
}

/* The fused UNETR passes (instnorm_lrelu_fwd / _bwd) on the GPU: bit for bit the GPU's
 * unfused ops (instnorm, add, LeakyReLU; LeakyReLU backward on the input, then instnorm
 * backward), with no addend, one, and one staged in y; and within instnorm's tolerances of the
 * CPU's fused ops. Run under the own kernels and under cuDNN's instance norm (the fused entry
 * then runs the unfused sequence around it). */
static void instnorm_lrelu_case(int B, int C, long V, int affine, int kernel)
{
    const size_t n = (size_t)B * C * V;
    const float slope = 0.01f, eps = 1e-5f;
    char what[128];
    Pair x = pair_make(n, INIT_UNIFORM, -1, 2), g = input(C), b = input(C), add = input(n);
    Pair dy = input(n), y = output(n), mean = output(B * C), rstd = output(B * C);
    Pair dx = output(n), dg = param_grad(C), dbt = param_grad(C);
    float *pre = gpu->alloc(n * sizeof(float)), *ref = gpu->alloc(n * sizeof(float));
    float *gated = gpu->alloc(n * sizeof(float)), *dx_ref = gpu->alloc(n * sizeof(float));
    float *dg_ref = gpu->alloc(C * sizeof(float)), *db_ref = gpu->alloc(C * sizeof(float));
    float *mean_ref = gpu->alloc(B * C * sizeof(float));
    float *rstd_ref = gpu->alloc(B * C * sizeof(float));
    const float *gg = affine ? g.g : NULL, *gc = affine ? g.c : NULL;
    const float *bg = affine ? b.g : NULL, *bc = affine ? b.c : NULL;
    gpu_set_instnorm(kernel);
    for (int mode = 0; mode < 3; mode++) {  /* no addend, an addend, the addend staged in y */
        snprintf(what, sizeof what, "instnorm_lrelu (%s) B %d C %d V %ld affine %d addend mode %d",
                 kernel == INSTNORM_KERNEL_CUDNN ? "cudnn" : "own", B, C, V, affine, mode);
        const float *ag = mode == 1 ? add.g : mode == 2 ? y.g : NULL;
        const float *ac = mode == 1 ? add.c : mode == 2 ? y.c : NULL;
        gpu->instnorm_fwd(pre, mean_ref, rstd_ref, x.g, gg, bg, B, C, V, eps);
        if (mode) gpu->add(pre, pre, add.g, n);
        gpu->leaky_relu_fwd(ref, pre, n, slope);
        if (mode == 2) {
            gpu->copy(y.g, add.g, n * sizeof(float));
            cpu->copy(y.c, add.c, n * sizeof(float));
        }
        gpu->instnorm_lrelu_fwd(y.g, mean.g, rstd.g, x.g, gg, bg, ag, B, C, V, eps, slope);
        cpu->instnorm_lrelu_fwd(y.c, mean.c, rstd.c, x.c, gc, bc, ac, B, C, V, eps, slope);
        size_t differ = gpu_bits_differ(y.g, ref, n) + gpu_bits_differ(mean.g, mean_ref, B * C) +
                        gpu_bits_differ(rstd.g, rstd_ref, B * C);
        TEST_CHECK(differ == 0, "%s: forward, %zu values differ from the unfused GPU ops", what,
                   differ);
        compare(&y, 1e-5, 1e-5, what);
        pair_resync(&mean);
        pair_resync(&rstd);
        pair_resync(&y);
        gpu->leaky_relu_bwd(gated, dy.g, pre, n, slope);
        gpu->copy(dg_ref, dg.g, C * sizeof(float));
        gpu->copy(db_ref, dbt.g, C * sizeof(float));
        gpu->instnorm_bwd(dx_ref, affine ? dg_ref : NULL, affine ? db_ref : NULL, gated, x.g,
                          mean.g, rstd.g, gg, B, C, V);
        gpu->instnorm_lrelu_bwd(dx.g, affine ? dg.g : NULL, affine ? dbt.g : NULL, dy.g, y.g,
                                slope, x.g, mean.g, rstd.g, gg, B, C, V);
        cpu->instnorm_lrelu_bwd(dx.c, affine ? dg.c : NULL, affine ? dbt.c : NULL, dy.c, y.c,
                                slope, x.c, mean.c, rstd.c, gc, B, C, V);
        differ = gpu_bits_differ(dx.g, dx_ref, n) + gpu_bits_differ(dg.g, dg_ref, C) +
                 gpu_bits_differ(dbt.g, db_ref, C);
        TEST_CHECK(differ == 0, "%s: backward, %zu values differ from the unfused GPU ops", what,
                   differ);
        compare(&dx, 1e-4, 1e-6, what);
        compare(&dg, 1e-5, 1e-3, what);
        compare(&dbt, 1e-5, 1e-3, what);
        pair_resync(&dg);
        pair_resync(&dbt);
    }
    gpu_set_instnorm(INSTNORM_KERNEL_OWN);
    pair_free(&x); pair_free(&g); pair_free(&b); pair_free(&add); pair_free(&dy); pair_free(&y);
    pair_free(&mean); pair_free(&rstd); pair_free(&dx); pair_free(&dg); pair_free(&dbt);
    gpu->release(pre); gpu->release(ref); gpu->release(gated); gpu->release(dx_ref);
    gpu->release(dg_ref); gpu->release(db_ref); gpu->release(mean_ref); gpu->release(rstd_ref);
}

static int test_instnorm_lrelu(void)
{
    instnorm_lrelu_case(2, 3, 5 * 6 * 7 * 100, 0, INSTNORM_KERNEL_OWN);  /* several chunks */
    instnorm_lrelu_case(2, 2, 999, 1, INSTNORM_KERNEL_OWN);              /* the scalar path */
    instnorm_lrelu_case(2, 3, 4096, 1, INSTNORM_KERNEL_CUDNN);
    return 0;
}

/* ---- attention ---- */

/* Row logsumexp of the scaled scores in double, from the host copies of the inputs: the
 * reference for what the fused kernel saves instead of the probabilities. */
static void lse_reference(float *lse, const float *q, const float *k, int B, int H, int Tq,
                          int Tk, int Dh, int ldq, int ldkv)
{
    double *s = malloc((size_t)Tk * sizeof(double));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < Tq; i++) {
                double sum = 0.0;
                const double mx = test_attention_scores(s, q, k, b, h, i, Tq, Tk, Dh, ldq, ldkv);
                for (int j = 0; j < Tk; j++) sum += exp(s[j] - mx);
                lse[((size_t)b * H + h) * Tq + i] = (float)(mx + log(sum));
            }
    free(s);
}

/* n floats of GPU memory, poisoned (NaN) like every output. */
static float *poisoned_gpu_floats(size_t n)
{
    float *g = gpu->alloc((n ? n : 1) * sizeof(float)), *nan = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) nan[i] = NAN;
    gpu->upload(g, nan, n * sizeof(float));
    free(nan);
    return g;
}

/* The fused kernel's saved row logsumexps (saved_g, GPU memory) against lse_reference of the
 * host inputs q, k: lse ~ log Tk + O(1), so fp32 differences are summation order in the
 * logits, 1e-5 (1 + |lse|) scaled by tol. */
static void check_fused_lse(const float *saved_g, const float *q, const float *k, int B, int H,
                            int Tq, int Tk, int Dh, int ldq, int ldkv, double tol,
                            const char *what)
{
    const size_t rows = (size_t)B * H * Tq;
    float *lse = malloc(rows * sizeof(float)), *ref = malloc(rows * sizeof(float));
    gpu->download(lse, saved_g, rows * sizeof(float));
    lse_reference(ref, q, k, B, H, Tq, Tk, Dh, ldq, ldkv);
    size_t bad = 0, worst_i = 0;
    double worst = -1.0;
    for (size_t i = 0; i < rows; i++) {
        double err = fabs((double)lse[i] - ref[i]), tl = 1e-5 * tol * (1.0 + fabs(ref[i]));
        if (!(err <= tl)) bad++;
        if (!(err / tl <= worst)) worst = err / tl, worst_i = i;
    }
    TEST_CHECK(bad == 0, "%s: %zu of %zu rows off; worst [%zu]: gpu %.9g, reference %.9g", what,
               bad, rows, worst_i, lse[worst_i], ref[worst_i]);
    free(lse);
    free(ref);
}

/* tol scales every tolerance (1 in fp32). The GPU's saved buffer has the size its backend asks
 * for: probabilities (GEMM kernel, compared with the CPU's) or row logsumexps (fused kernel,
 * compared with a double-precision reference). */
static void attention_case(int B, int H, int Tq, int Tk, int Dh, int packed, double tol)
{
    const int C = H * Dh;
    /* packed: self-attention on one qkv buffer [B, T, 3C]; else q [B, Tq, C] and a packed kv
     * buffer [B, Tk, 2C] (cross-attention, as CASA). */
    const int ldq = packed ? 3 * C : C, ldkv = packed ? 3 * C : 2 * C;
    Pair qbuf = input((size_t)B * Tq * ldq), kvbuf = packed ? qbuf : input((size_t)B * Tk * ldkv);
    Pair dqbuf = output((size_t)B * Tq * ldq), dkvbuf = packed ? dqbuf : output((size_t)B * Tk * ldkv);
    Pair out = output((size_t)B * Tq * C), probs = output((size_t)B * H * Tq * Tk);
    Pair dout = input((size_t)B * Tq * C);
    const size_t rows = (size_t)B * H * Tq, n_saved = gpu->attention_saved_floats(B, H, Tq, Tk, Dh);
    const int fused = n_saved != probs.n;
    TEST_CHECK(n_saved == probs.n || n_saved == rows, "attention_saved_floats = %zu: neither "
               "probabilities (%zu) nor row logsumexps (%zu)", n_saved, probs.n, rows);
    float *saved_g = fused ? poisoned_gpu_floats(n_saved) : probs.g;
    const int koff = packed ? C : 0, voff = packed ? 2 * C : C;
    gpu->attention_fwd(out.g, saved_g, qbuf.g, kvbuf.g + koff, kvbuf.g + voff, B, H, Tq, Tk, Dh,
                       ldq, ldkv);
    cpu->attention_fwd(out.c, probs.c, qbuf.c, kvbuf.c + koff, kvbuf.c + voff, B, H, Tq, Tk, Dh,
                       ldq, ldkv);
    char what[160];
    snprintf(what, sizeof what, "attention_fwd%s out B=%d H=%d Tq=%d Tk=%d Dh=%d packed=%d",
             fused ? " (fused)" : "", B, H, Tq, Tk, Dh, packed);
    compare(&out, 1e-5 * tol, 1e-5 * tol, what);
    if (!fused) {
        compare(&probs, 1e-5 * tol, 1e-7 * tol, "attention_fwd probs");
    } else {
        check_fused_lse(saved_g, qbuf.host, kvbuf.host + koff, B, H, Tq, Tk, Dh, ldq, ldkv, tol,
                        "attention_fwd (fused) lse");
    }
    gpu->attention_bwd(dqbuf.g, dkvbuf.g + koff, dkvbuf.g + voff, dout.g, qbuf.g, kvbuf.g + koff,
                       kvbuf.g + voff, out.g, saved_g, B, H, Tq, Tk, Dh, ldq, ldkv);
    cpu->attention_bwd(dqbuf.c, dkvbuf.c + koff, dkvbuf.c + voff, dout.c, qbuf.c, kvbuf.c + koff,
                       kvbuf.c + voff, out.c, probs.c, B, H, Tq, Tk, Dh, ldq, ldkv);
    /* Every element of the packed gradient buffers is a dq, dk or dv element: all written. */
    snprintf(what, sizeof what, "attention_bwd%s d%s packed=%d", fused ? " (fused)" : "",
             packed ? "qkv" : "q", packed);
    compare(&dqbuf, 1e-4 * tol, 1e-5 * tol, what);
    if (!packed) compare(&dkvbuf, 1e-4 * tol, 1e-5 * tol, "attention_bwd dkv");
    if (fused) gpu->release(saved_g);
    pair_free(&qbuf); pair_free(&dqbuf); pair_free(&out); pair_free(&probs); pair_free(&dout);
    if (!packed) { pair_free(&kvbuf); pair_free(&dkvbuf); }
}

/* Forward only (saved = NULL on both backends: nothing saved, no backward may follow; the
 * GPU may take its forward-only kernel). Only out is compared, at attention_case's out
 * tolerance. Shapes: the paper's (B 2, T 576 and 144, Dh 64; Dh 32 at T 576), Dh 48 (a width
 * the fast forward does not take: its fallback), Tq != Tk both ways, and CASA's 768-wide
 * single head (the teacher pair runs forward only). A few MB per case. */
typedef struct {
    int B, H, Tq, Tk, Dh, packed;
} UnsavedShape;

static const UnsavedShape kUnsavedShapes[] = {
    {2, 12, 144, 144, 64, 1}, /* ViT-B, visible tokens */
    {2, 4, 576, 576, 64, 1},  /* ViT-B, all tokens (the EMA target's intact views) */
    {2, 4, 576, 576, 32, 1},  /* decoder head width, all tokens */
    {2, 4, 144, 144, 48, 1},  /* a head width outside the fast kernel's: the fallback */
    {2, 3, 100, 77, 64, 0},   /* Tq > Tk, neither a tile multiple */
    {2, 2, 77, 100, 32, 0},   /* Tq < Tk */
    {2, 1, 144, 576, 64, 0},  /* cross attention, several key tiles */
    {2, 1, 20, 30, 768, 0},   /* CASA head */
};
#define UNSAVED_SHAPE_COUNT ((int)(sizeof kUnsavedShapes / sizeof kUnsavedShapes[0]))

static void attention_unsaved_case(const UnsavedShape *u, double tol, const char *mode)
{
    const int B = u->B, H = u->H, Tq = u->Tq, Tk = u->Tk, Dh = u->Dh, C = H * Dh;
    const int ldq = u->packed ? 3 * C : C, ldkv = u->packed ? 3 * C : 2 * C;
    Pair qbuf = input((size_t)B * Tq * ldq);
    Pair kvbuf = u->packed ? qbuf : input((size_t)B * Tk * ldkv);
    Pair out = output((size_t)B * Tq * C);
    const int koff = u->packed ? C : 0, voff = u->packed ? 2 * C : C;
    gpu->attention_fwd(out.g, NULL, qbuf.g, kvbuf.g + koff, kvbuf.g + voff, B, H, Tq, Tk, Dh,
                       ldq, ldkv);
    cpu->attention_fwd(out.c, NULL, qbuf.c, kvbuf.c + koff, kvbuf.c + voff, B, H, Tq, Tk, Dh,
                       ldq, ldkv);
    char what[160];
    snprintf(what, sizeof what, "attention_fwd saved=NULL (%s) out B=%d H=%d Tq=%d Tk=%d Dh=%d "
             "packed=%d", mode, B, H, Tq, Tk, Dh, u->packed);
    compare(&out, 1e-5 * tol, 1e-5 * tol, what);
    pair_free(&qbuf); pair_free(&out);
    if (!u->packed) pair_free(&kvbuf);
}

static void attention_unsaved_cases(double tol, const char *mode)
{
    for (int i = 0; i < UNSAVED_SHAPE_COUNT; i++)
        attention_unsaved_case(&kUnsavedShapes[i], tol, mode);
}

static int test_attention(void)
{
    attention_case(2, 3, 17, 17, 8, 1, 1.0);
    attention_case(3, 2, 11, 23, 16, 0, 1.0);
    attention_case(2, 12, 144, 144, 64, 1, 1.0); /* ViT-B, visible tokens of a 192^2x64 crop */
    attention_unsaved_cases(1.0, "fp32, GEMM kernel");
    return 0;
}

/* The fused (flash) kernel: fp32 parity with the CPU at the same tolerances as the GEMM path
 * (out 1e-5 relative, gradients 1e-4), lse against double precision. Shapes: every templated
 * head width (8, 16, 24, 32, 64) and the runtime-Dh fallback (40, 128 at 32-row tiles), T not
 * a multiple of the 64 (or 32) tile, Tq != Tk (CASA), packed qkv and separate q / kv. CASA's
 * 768-wide head stays on the GEMM path: saved size = probabilities. */
static int test_attention_fused(void)
{
    gpu_set_attention(ATTN_KERNEL_FUSED);
    TEST_CHECK(gpu->attention_saved_floats(2, 12, 144, 576, 64) == (size_t)2 * 12 * 144,
               "fused: saved floats of B=2 H=12 Tq=144 Tk=576 Dh=64 should be B*H*Tq");
    TEST_CHECK(gpu->attention_saved_floats(2, 1, 144, 576, 768) == (size_t)2 * 144 * 576,
               "fused: a 768-wide head keeps the GEMM path (probabilities saved)");
    attention_case(2, 3, 17, 17, 8, 1, 1.0);
    attention_case(3, 2, 11, 23, 16, 0, 1.0);
    attention_case(2, 4, 70, 70, 24, 1, 1.0);     /* tiny config head width, two tiles */
    attention_case(2, 12, 144, 144, 32, 1, 1.0);  /* decoder head width */
    attention_case(2, 12, 144, 144, 64, 1, 1.0);  /* ViT-B, visible tokens */
    attention_case(2, 1, 144, 576, 64, 0, 1.0);   /* Tq != Tk: 3 query x 9 key tiles */
    attention_case(1, 2, 65, 130, 40, 0, 1.0);    /* runtime Dh, 32-row tiles */
    attention_case(1, 2, 33, 47, 128, 0, 1.0);    /* widest fused head */
    attention_case(2, 1, 20, 30, 768, 0, 1.0);    /* CASA head: GEMM path under fused */
    attention_unsaved_cases(1.0, "fp32, fused kernel");
    gpu_set_attention(ATTN_KERNEL_GEMM);
    return 0;
}

/* ---- patches and tokens ---- */

static int test_patches(void)
{
    /* A 2 x 3 x 4 token grid: every grid axis has its own length, so swapping any two of
     * them in the token order (n = (ix gy + iy) gz + iz) changes the result. */
    const int B = 2, X = 8, Y = 12, Z = 16, p = 4;
    const size_t n = (size_t)B * X * Y * Z;
    Pair vol = input(n), patches = output(n), back = output(n);
    gpu->patchify(patches.g, vol.g, B, X, Y, Z, p);
    cpu->patchify(patches.c, vol.c, B, X, Y, Z, p);
    compare(&patches, 0, 0, "patchify");
    gpu->unpatchify(back.g, patches.g, B, X, Y, Z, p);
    cpu->unpatchify(back.c, patches.c, B, X, Y, Z, p);
    compare(&back, 0, 0, "unpatchify");
    pair_free(&vol); pair_free(&patches); pair_free(&back);
    return 0;
}

static int test_gather_scatter(void)
{
    const int B = 3, N = 40, nsel = 13, C = 19, idx_ld = N; /* idx rows of a [B, N] perm */
    int *perm = malloc((size_t)B * N * sizeof(int));
    for (int b = 0; b < B; b++) random_permutation(perm + b * N, N);
    IntPair idx = int_pair(perm, (size_t)B * N);
    Pair in = input((size_t)B * N * C), out = output((size_t)B * nsel * C);
    Pair din = input((size_t)B * N * C), table = input((size_t)N * C);
    gpu->gather_rows(out.g, in.g, idx.g, idx_ld, B, N, nsel, C);
    cpu->gather_rows(out.c, in.c, idx.c, idx_ld, B, N, nsel, C);
    compare(&out, 0, 0, "gather_rows");
    gpu->scatter_add_rows(din.g, out.g, idx.g, idx_ld, B, N, nsel, C);
    cpu->scatter_add_rows(din.c, out.c, idx.c, idx_ld, B, N, nsel, C);
    compare(&din, 1e-6, 1e-7, "scatter_add_rows (accumulated)");
    gpu->add_table_rows(out.g, table.g, idx.g, idx_ld, B, nsel, C);
    cpu->add_table_rows(out.c, table.c, idx.c, idx_ld, B, nsel, C);
    compare(&out, 1e-6, 1e-7, "add_table_rows");
    free(perm);
    int_pair_free(&idx);
    pair_free(&in); pair_free(&out); pair_free(&din); pair_free(&table);
    return 0;
}

static int test_mask_tokens(void)
{
    const int B = 3, N = 64, nvis = 16, C = 24;
    int *perm = malloc((size_t)B * N * sizeof(int));
    for (int b = 0; b < B; b++) random_permutation(perm + b * N, N);
    IntPair pp = int_pair(perm, (size_t)B * N);
    Pair vis = input((size_t)B * nvis * C), tok = input(C), out = output((size_t)B * N * C);
    Pair dout = input((size_t)B * N * C), dvis = output((size_t)B * nvis * C), dtok = param_grad(C);
    gpu->insert_mask_tokens(out.g, vis.g, tok.g, pp.g, B, N, nvis, C);
    cpu->insert_mask_tokens(out.c, vis.c, tok.c, pp.c, B, N, nvis, C);
    compare(&out, 0, 0, "insert_mask_tokens");
    gpu->insert_mask_tokens_bwd(dvis.g, dtok.g, dout.g, pp.g, B, N, nvis, C);
    cpu->insert_mask_tokens_bwd(dvis.c, dtok.c, dout.c, pp.c, B, N, nvis, C);
    compare(&dvis, 0, 0, "insert_mask_tokens_bwd dvisible");
    compare(&dtok, 1e-5, 1e-5, "insert_mask_tokens_bwd dmask_token (accumulated)");
    free(perm);
    int_pair_free(&pp);
    pair_free(&vis); pair_free(&tok); pair_free(&out); pair_free(&dout); pair_free(&dvis);
    pair_free(&dtok);
    return 0;
}

/* The sliding-window ops (sw_gather_window, sw_blend_window, sw_finish): the gather and the
 * blend of three overlapping windows bit for bit (one product and one add each, no FMA on
 * either side), the finish's probabilities within 1e-6 (each side's expf) and its labels
 * equal wherever the two largest probabilities are more than 1e-5 apart. */
static int test_sliding_window_ops(void)
{
    const int pd[3] = {40, 36, 52}, w[3] = {16, 16, 16}, K = 14;
    const int origins[3][3] = {{0, 0, 0}, {8, 10, 12}, {24, 20, 36}};
    const int dim[3] = {36, 32, 48}, lo[3] = {2, 2, 2};
    const size_t pn = (size_t)pd[0] * pd[1] * pd[2], wn = (size_t)w[0] * w[1] * w[2];
    const size_t n = (size_t)dim[0] * dim[1] * dim[2];
    Pair vol = input(pn), imp = pair_make(wn, INIT_UNIFORM, 0.001f, 1.0f), win = output(wn);
    Pair acc = pair_make((size_t)K * pn, INIT_ZERO, 0, 0);
    Pair cnt = pair_make(pn, INIT_UNIFORM, 0.5f, 1.0f);
    Pair probs = output((size_t)K * n);
    for (int j = 0; j < 3; j++) {
        gpu->sw_gather_window(win.g, vol.g, pd, w, origins[j]);
        cpu->sw_gather_window(win.c, vol.c, pd, w, origins[j]);
        compare(&win, 0, 0, "sw_gather_window");
        Pair logits = pair_make((size_t)K * wn, INIT_UNIFORM, -4.0f, 4.0f);
        gpu->sw_blend_window(acc.g, cnt.g, logits.g, imp.g, K, pd, w, origins[j]);
        cpu->sw_blend_window(acc.c, cnt.c, logits.c, imp.c, K, pd, w, origins[j]);
        pair_free(&logits);
    }
    compare(&acc, 0, 0, "sw_blend_window acc (bit for bit)");
    compare(&cnt, 0, 0, "sw_blend_window count (bit for bit)");
    pair_resync(&acc);
    pair_resync(&cnt);
    uint8_t *lab_g = gpu->alloc(n), *lab_c = cpu->alloc(n);
    gpu->sw_finish(lab_g, probs.g, acc.g, cnt.g, K, pd, dim, lo);
    cpu->sw_finish(lab_c, probs.c, acc.c, cnt.c, K, pd, dim, lo);
    compare(&probs, 0, 1e-6, "sw_finish probabilities");
    uint8_t *hg = malloc(n), *hc = malloc(n);
    float *pc = malloc((size_t)K * n * sizeof(float));
    gpu->download(hg, lab_g, n);
    cpu->download(hc, lab_c, n);
    cpu->download(pc, probs.c, (size_t)K * n * sizeof(float));
    size_t wrong = 0;
    for (size_t i = 0; i < n; i++) {
        float top = -1.0f, second = -1.0f;
        for (int c = 0; c < K; c++) {
            const float p = pc[(size_t)c * n + i];
            if (p > top) second = top, top = p;
            else if (p > second) second = p;
        }
        wrong += top - second > 1e-5f && hg[i] != hc[i];
    }
    TEST_CHECK(wrong == 0, "sw_finish: %zu of %zu labels differ where the argmax is clear", wrong,
               n);
    free(hg); free(hc); free(pc);
    gpu->release(lab_g);
    cpu->release(lab_c);
    pair_free(&vol); pair_free(&imp); pair_free(&win); pair_free(&acc); pair_free(&cnt);
    pair_free(&probs);
    return 0;
}

static int test_pool_and_layout(void)
{
    const int B = 3, T = 50, C = 70;
    Pair in = input((size_t)B * T * C), pooled = output((size_t)B * C);
    Pair dpooled = input((size_t)B * C), din = output((size_t)B * T * C);
    gpu->mean_rows_fwd(pooled.g, in.g, B, T, C);
    cpu->mean_rows_fwd(pooled.c, in.c, B, T, C);
    compare(&pooled, 1e-5, 1e-6, "mean_rows_fwd");
    gpu->mean_rows_bwd(din.g, dpooled.g, B, T, C);
    cpu->mean_rows_bwd(din.c, dpooled.c, B, T, C);
    compare(&din, 1e-6, 1e-8, "mean_rows_bwd");
    Pair tr = output((size_t)B * T * C), back = output((size_t)B * T * C);
    gpu->transpose_tokens(tr.g, in.g, B, T, C);
    cpu->transpose_tokens(tr.c, in.c, B, T, C);
    compare(&tr, 0, 0, "transpose_tokens");
    gpu->transpose_tokens(back.g, tr.g, B, C, T);
    cpu->transpose_tokens(back.c, tr.c, B, C, T);
    compare(&back, 0, 0, "transpose_tokens back");
    const int C1 = 3, C2 = 5;
    const long V = 333;
    Pair a = input((size_t)B * C1 * V), b = input((size_t)B * C2 * V);
    Pair cat = output((size_t)B * (C1 + C2) * V), da = output(a.n), db = output(b.n);
    gpu->concat_channels(cat.g, a.g, b.g, B, C1, C2, V);
    cpu->concat_channels(cat.c, a.c, b.c, B, C1, C2, V);
    compare(&cat, 0, 0, "concat_channels");
    gpu->split_channels(da.g, db.g, cat.g, B, C1, C2, V);
    cpu->split_channels(da.c, db.c, cat.c, B, C1, C2, V);
    compare(&da, 0, 0, "split_channels a");
    compare(&db, 0, 0, "split_channels b");
    pair_free(&in); pair_free(&pooled); pair_free(&dpooled); pair_free(&din); pair_free(&tr);
    pair_free(&back); pair_free(&a); pair_free(&b); pair_free(&cat); pair_free(&da);
    pair_free(&db);
    return 0;
}

/* ---- vector normalisation and losses ---- */

static int test_l2norm(void)
{
    const int rows = 40, dim = 256;
    Pair x = input((size_t)rows * dim), y = output(x.n), norms = output(rows);
    Pair dy = input(x.n), dx = output(x.n);
    float zeros[256] = {0}; /* one all-zero row: the clamped branch */
    gpu->upload(x.g + 7 * dim, zeros, sizeof zeros);
    cpu->upload(x.c + 7 * dim, zeros, sizeof zeros);
    gpu->l2norm_fwd(y.g, norms.g, x.g, rows, dim, 1e-6f);
    cpu->l2norm_fwd(y.c, norms.c, x.c, rows, dim, 1e-6f);
    compare(&y, 1e-5, 1e-7, "l2norm_fwd y");
    compare(&norms, 1e-5, 1e-7, "l2norm_fwd norms");
    gpu->l2norm_bwd(dx.g, dy.g, x.g, norms.g, rows, dim, 1e-6f);
    cpu->l2norm_bwd(dx.c, dy.c, x.c, norms.c, rows, dim, 1e-6f);
    compare(&dx, 1e-4, 1e-6, "l2norm_bwd");
    pair_free(&x); pair_free(&y); pair_free(&norms); pair_free(&dy); pair_free(&dx);
    return 0;
}

static int test_cosine_loss(void)
{
    const int rows = 33, dim = 300;
    Pair a = input((size_t)rows * dim), b = input(a.n), da = output(a.n), db = output(a.n);
    Pair loss = output(1);
    gpu->cosine_loss_fwd(loss.g, a.g, b.g, rows, dim);
    cpu->cosine_loss_fwd(loss.c, a.c, b.c, rows, dim);
    compare(&loss, 1e-6, 1e-7, "cosine_loss_fwd");
    pair_free(&loss);
    gpu->cosine_loss_bwd(da.g, db.g, a.g, b.g, rows, dim, 0.7f);
    cpu->cosine_loss_bwd(da.c, db.c, a.c, b.c, rows, dim, 0.7f);
    compare(&da, 1e-4, 1e-8, "cosine_loss_bwd da");
    compare(&db, 1e-4, 1e-8, "cosine_loss_bwd db");
    Pair da2 = output(a.n);
    gpu->cosine_loss_bwd(da2.g, NULL, a.g, b.g, rows, dim, 1.0f);
    cpu->cosine_loss_bwd(da2.c, NULL, a.c, b.c, rows, dim, 1.0f);
    compare(&da2, 1e-4, 1e-8, "cosine_loss_bwd da, db = NULL");
    pair_free(&a); pair_free(&b); pair_free(&da); pair_free(&db); pair_free(&da2);
    return 0;
}

static int test_soft_ce(void)
{
    const int rows = 33, dim = 300;
    Pair s = input((size_t)rows * dim), t = input(s.n), c = input((size_t)dim), ds = output(s.n);
    /* DINO's temperatures: sharp softmaxes exercise the max-shifted log-sum-exp */
    const float inv_ts = 1.0f / 0.1f, inv_tt = 1.0f / 0.04f;
    Pair loss = output(1);
    gpu->soft_ce_fwd(loss.g, s.g, t.g, c.g, rows, dim, inv_ts, inv_tt);
    cpu->soft_ce_fwd(loss.c, s.c, t.c, c.c, rows, dim, inv_ts, inv_tt);
    compare(&loss, 1e-6, 1e-7, "soft_ce_fwd");
    pair_free(&loss);
    gpu->soft_ce_bwd(ds.g, s.g, t.g, c.g, rows, dim, inv_ts, inv_tt, 0.7f);
    cpu->soft_ce_bwd(ds.c, s.c, t.c, c.c, rows, dim, inv_ts, inv_tt, 0.7f);
    compare(&ds, 1e-4, 1e-8, "soft_ce_bwd ds");
    pair_free(&s); pair_free(&t); pair_free(&c); pair_free(&ds);
    return 0;
}

/* normalize_rows and the masked MSE on rows x dim. The CUDA normalize_rows holds rows of up
 * to 16384 values in registers (16-byte loads when dim % 4 == 0, else scalar ones) and streams
 * longer ones; masked_mse_bwd writes visible rows (mask 0) as zeros without reading them, and
 * the CPU writes the same zeros: a NaN prediction there must leave the loss and every gradient
 * finite. */
static void reconstruction_loss_case(int rows, int dim)
{
    char what[96];
    Pair x = pair_make((size_t)rows * dim, INIT_UNIFORM, 0, 1), target = output(x.n);
    gpu->normalize_rows(target.g, x.g, rows, dim, 1e-6f);
    cpu->normalize_rows(target.c, x.c, rows, dim, 1e-6f);
    snprintf(what, sizeof what, "normalize_rows, dim %d", dim);
    compare(&target, 1e-5, 1e-5, what);
    pair_resync(&target);
    float *mask = malloc(rows * sizeof(float));
    for (int r = 0; r < rows; r++) mask[r] = (r * 7 % 4) != 0 ? 1.0f : 0.0f;
    Pair m = pair_make(rows, INIT_ZERO, 0, 0);
    gpu->upload(m.g, mask, rows * sizeof(float));
    cpu->upload(m.c, mask, rows * sizeof(float));
    Pair pred = input(x.n), dpred = output(x.n);
    Pair loss = output(1);
    gpu->masked_mse_fwd(loss.g, pred.g, target.g, m.g, rows, dim);
    cpu->masked_mse_fwd(loss.c, pred.c, target.c, m.c, rows, dim);
    snprintf(what, sizeof what, "masked_mse_fwd, dim %d", dim);
    compare(&loss, 1e-6, 1e-7, what);
    gpu->masked_mse_bwd(dpred.g, pred.g, target.g, m.g, rows, dim, 1.5f);
    cpu->masked_mse_bwd(dpred.c, pred.c, target.c, m.c, rows, dim, 1.5f);
    snprintf(what, sizeof what, "masked_mse_bwd, dim %d", dim);
    compare(&dpred, 1e-5, 1e-10, what);
    /* NaN predictions on the visible rows: the same loss, exact zeros there */
    for (int r = 0; r < rows; r++)
        if (mask[r] == 0.0f)
            for (int d = 0; d < dim; d++) pred.host[(size_t)r * dim + d] = NAN;
    cpu->upload(pred.c, pred.host, pred.n * sizeof(float));
    gpu->upload(pred.g, pred.host, pred.n * sizeof(float));
    gpu->masked_mse_fwd(loss.g, pred.g, target.g, m.g, rows, dim);
    cpu->masked_mse_fwd(loss.c, pred.c, target.c, m.c, rows, dim);
    snprintf(what, sizeof what, "masked_mse_fwd, NaN on visible rows, dim %d", dim);
    compare(&loss, 1e-6, 1e-7, what);
    gpu->masked_mse_bwd(dpred.g, pred.g, target.g, m.g, rows, dim, 1.5f);
    cpu->masked_mse_bwd(dpred.c, pred.c, target.c, m.c, rows, dim, 1.5f);
    snprintf(what, sizeof what, "masked_mse_bwd, NaN on visible rows, dim %d", dim);
    compare(&dpred, 1e-5, 1e-10, what);
    float *dg = malloc(dpred.n * sizeof(float));
    gpu->download(dg, dpred.g, dpred.n * sizeof(float));
    size_t nonzero = 0;
    for (size_t i = 0; i < dpred.n; i++) nonzero += mask[i / dim] == 0.0f && dg[i] != 0.0f;
    TEST_CHECK(nonzero == 0, "masked_mse_bwd, dim %d: %zu gradients of visible rows not 0", dim,
               nonzero);
    free(dg);
    /* Nothing masked: zero loss, zero gradient (not NaN). */
    Pair none = pair_make(rows, INIT_ZERO, 0, 0);
    gpu->masked_mse_fwd(loss.g, pred.g, target.g, none.g, rows, dim);
    float lg;
    gpu->download(&lg, loss.g, sizeof lg);
    TEST_CLOSE(lg, 0.0, 0, 0, "masked_mse_fwd with nothing masked");
    pair_free(&loss);
    gpu->masked_mse_bwd(dpred.g, pred.g, target.g, none.g, rows, dim, 1.0f);
    cpu->masked_mse_bwd(dpred.c, pred.c, target.c, none.c, rows, dim, 1.0f);
    compare(&dpred, 0, 0, "masked_mse_bwd with nothing masked");
    free(mask);
    pair_free(&x); pair_free(&target); pair_free(&m); pair_free(&pred); pair_free(&dpred);
    pair_free(&none);
}

static int test_reconstruction_loss(void)
{
    reconstruction_loss_case(96, 512);  /* 8^3 patches */
    reconstruction_loss_case(40, 4096); /* the paper's 16^3 patches: 16-byte loads, 256 threads */
    reconstruction_loss_case(21, 1027); /* dim % 4 != 0: scalar loads */
    reconstruction_loss_case(3, 16388); /* past the held path's 16384: the streamed kernel */
    return 0;
}

static void dicece_case(int B, int K, long V)
{
    Pair logits = pair_make((size_t)B * K * V, INIT_UNIFORM, -3, 3), probs = output(logits.n);
    Pair dlogits = output(logits.n);
    int *lab = malloc((size_t)B * V * sizeof(int));
    RngStream s;
    rng_init(&s, 2024, 2, next_stream++, RNG_TEST);
    for (long i = 0; i < B * V; i++) lab[i] = (int)rng_below(&s, K);
    IntPair labels = int_pair(lab, (size_t)B * V);
    Pair values = output(SEG_LOSS_VALUE_COUNT);
    gpu->dicece_fwd(probs.g, values.g, logits.g, labels.g, B, K, V);
    cpu->dicece_fwd(probs.c, values.c, logits.c, labels.c, B, K, V);
    compare(&probs, 1e-5, 1e-8, "dicece_fwd probs");
    float vg[SEG_LOSS_VALUE_COUNT], vc[SEG_LOSS_VALUE_COUNT];
    gpu->download(vg, values.g, sizeof vg);
    cpu->download(vc, values.c, sizeof vc);
    TEST_CLOSE(vg[SEG_LOSS_CE], vc[SEG_LOSS_CE], 1e-5, 1e-7, "dicece_fwd ce");
    TEST_CLOSE(vg[SEG_LOSS_DICE], vc[SEG_LOSS_DICE], 1e-5, 1e-7, "dicece_fwd dice");
    TEST_CHECK(vg[SEG_LOSS_BAD_LABELS] == 0.0f && vc[SEG_LOSS_BAD_LABELS] == 0.0f,
               "dicece_fwd counted %g (gpu) / %g (cpu) labels outside 0..%d, expected none",
               vg[SEG_LOSS_BAD_LABELS], vc[SEG_LOSS_BAD_LABELS], K - 1);
    pair_free(&values);
    gpu->dicece_bwd(dlogits.g, probs.g, labels.g, B, K, V, 1.0f, 0.8f);
    cpu->dicece_bwd(dlogits.c, probs.c, labels.c, B, K, V, 1.0f, 0.8f);
    compare(&dlogits, 1e-4, 1e-11, "dicece_bwd");
    free(lab);
    int_pair_free(&labels);
    pair_free(&logits); pair_free(&probs); pair_free(&dlogits);
}

static int test_dicece(void)
{
    dicece_case(2, 4, 6 * 7 * 8 * 50); /* several chunks per (b, k) */
    dicece_case(1, 14, 9 * 10 * 11);   /* the 13 organs + background of the phantoms */
    return 0;
}

/* ---- optimiser ---- */

/* A decay mask (ops/decay_mask.h) over n elements with both bit values: random words in the
 * first half, then alternating runs of 1 to 97 elements (tensor-like), bits past n clear. */
static uint32_t *decay_mask_host(size_t n)
{
    const size_t words = decay_mask_words(n);
    uint32_t *mask = calloc(words ? words : 1, sizeof(uint32_t));
    RngStream s;
    rng_init(&s, 2024, 2, next_stream++, RNG_TEST);
    for (size_t w = 0; w < words / 2; w++) mask[w] = rng_u32(&s);
    int on = 1;
    for (size_t i = (words / 2) * DECAY_MASK_WORD_BITS; i < n; on = !on) {
        const size_t run = 1 + rng_below(&s, 97);
        if (on) decay_mask_set_range(mask, i, i + run <= n ? run : n - i);
        i += run;
    }
    return mask;
}

/* On the GPU alone, the one AdamW pass with a clipping factor and the EMA target against the
 * three launches it replaces (scale, adamw with the factor 1, ema_update), BIT FOR BIT, on
 * copies of the pairs' GPU buffers from element shift on (shift 1: the kernels' scalar path).
 * tests/cuda_emu/test_adamw_emulated.sh checks the same on the host emulation of the kernels;
 * this is the check on the card's own arithmetic. */
static void gpu_fused_adamw_matches_sequence(const Pair *p, const Pair *g, const Pair *m,
                                             const Pair *v, const Pair *t, const uint32_t *mask,
                                             size_t shift)
{
    enum { P, G, M, V, T, BUFS };
    const Pair *from[BUFS] = {p, g, m, v, t};
    const char *names[BUFS] = {"param", "grad", "m", "v", "EMA target"};
    const size_t n = p->n, bytes = n * sizeof(float), len = n - shift;
    float *run[2][BUFS];  /* [0] the fused pass, [1] the sequence */
    for (int r = 0; r < 2; r++)
        for (int k = 0; k < BUFS; k++) {
            run[r][k] = gpu->alloc(bytes);
            gpu->copy(run[r][k], from[k]->g, bytes);
        }
    const float scale = 0.37f, momentum = 0.996f;
    AdamwHyper h = {1e-3f, 0.9f, 0.95f, 1e-8f, 10.0f, 6, scale};
    float *const *f = run[0], *const *q = run[1];
    gpu->adamw(f[P] + shift, f[G] + shift, f[M] + shift, f[V] + shift, mask, len, h,
               f[T] + shift, momentum);
    gpu->scale(q[G] + shift, scale, len);
    h.grad_scale = 1.0f;
    gpu->adamw(q[P] + shift, q[G] + shift, q[M] + shift, q[V] + shift, mask, len, h, NULL, 0.0f);
    gpu->ema_update(q[T] + shift, q[P] + shift, len, momentum);
    float *a = malloc(bytes), *b = malloc(bytes);
    for (int k = 0; k < BUFS; k++) {
        if (k == G) continue;  /* the sequence scaled its gradients; the fused pass did not */
        gpu->download(a, run[0][k], bytes);
        gpu->download(b, run[1][k], bytes);
        TEST_CHECK(memcmp(a, b, bytes) == 0, "GPU adamw with clipping factor and EMA target "
                   "(shift %zu): %s differs from scale + adamw + ema_update", shift, names[k]);
    }
    gpu->download(a, run[0][G], bytes);
    TEST_CHECK(memcmp(a, g->host, bytes) == 0, "GPU adamw (shift %zu) wrote the gradients", shift);
    free(a);
    free(b);
    for (int r = 0; r < 2; r++)
        for (int k = 0; k < BUFS; k++) gpu->release(run[r][k]);
}

static int test_optimizer(void)
{
    const size_t n = 50001, words = decay_mask_words(n);
    Pair p = input(n), g = input(n), m = pair_make(n, INIT_UNIFORM, -0.1f, 0.1f);
    Pair v = pair_make(n, INIT_UNIFORM, 0, 0.01f), t = input(n);
    uint32_t *mask = decay_mask_host(n);
    uint32_t *mask_c = cpu->alloc(words * sizeof(uint32_t));
    uint32_t *mask_g = gpu->alloc(words * sizeof(uint32_t));
    cpu->upload(mask_c, mask, words * sizeof(uint32_t));
    gpu->upload(mask_g, mask, words * sizeof(uint32_t));
    /* A weight decay large enough that a decay bit read wrong moves the parameter by 1e-2
     * relative, far past the tolerance. Steps 1-3 with the mask, step 4 without (all decay);
     * steps 2 and 4 with a clipping factor (a factor not applied moves m by 60%), steps 3 and
     * 4 with the EMA target updated in the same pass (t compared after the loop). */
    const float grad_scale[4] = {1.0f, 0.4f, 1.0f, 0.7f};
    for (long step = 1; step <= 4; step++) {
        const AdamwHyper h = {1e-3f, 0.9f, 0.95f, 1e-8f, 10.0f, step, grad_scale[step - 1]};
        gpu->adamw(p.g, g.g, m.g, v.g, step < 4 ? mask_g : NULL, n, h, step >= 3 ? t.g : NULL,
                   0.9f);
        cpu->adamw(p.c, g.c, m.c, v.c, step < 4 ? mask_c : NULL, n, h, step >= 3 ? t.c : NULL,
                   0.9f);
    }
    compare(&p, 1e-6, 1e-7, "adamw param");
    compare(&m, 1e-6, 1e-8, "adamw m");
    compare(&v, 1e-6, 1e-10, "adamw v");
    compare(&t, 1e-6, 1e-7, "adamw's fused EMA target");
    compare(&g, 0, 0, "adamw leaves the gradients as they were (clipping inside the pass)");
    /* A buffer shifted by one element (the kernel's scalar path) with the mask of the shifted
     * range: elements 1.. of the buffer above, as a call on a tensor inside a ParamSet; with a
     * clipping factor and the EMA target (shifted too). */
    const AdamwHyper h5 = {1e-3f, 0.9f, 0.95f, 1e-8f, 10.0f, 5, 0.3f};
    gpu->adamw(p.g + 1, g.g + 1, m.g + 1, v.g + 1, mask_g, n - 1, h5, t.g + 1, 0.95f);
    cpu->adamw(p.c + 1, g.c + 1, m.c + 1, v.c + 1, mask_c, n - 1, h5, t.c + 1, 0.95f);
    compare(&p, 1e-6, 1e-7, "adamw param (misaligned buffer)");
    compare(&m, 1e-6, 1e-8, "adamw m (misaligned buffer)");
    compare(&v, 1e-6, 1e-10, "adamw v (misaligned buffer)");
    compare(&t, 1e-6, 1e-7, "adamw's fused EMA target (misaligned buffer)");
    gpu_fused_adamw_matches_sequence(&p, &g, &m, &v, &t, mask_g, 0);
    gpu_fused_adamw_matches_sequence(&p, &g, &m, &v, &t, mask_g, 1);
    free(mask);
    cpu->release(mask_c);
    gpu->release(mask_g);
    gpu->ema_update(t.g, p.g, n, 0.996f);
    cpu->ema_update(t.c, p.c, n, 0.996f);
    compare(&t, 1e-6, 1e-7, "ema_update");
    /* clip_segments (per-tensor clipping): a segment of 7, an empty one, one of two pieces
     * (39993 > SEGMENT_PIECE_MAX), one of 10001; max_norm between their norms (~2, ~115, ~58),
     * so two are scaled and one is not. Sums add in another order: a factor may differ in its
     * last bit. */
    const size_t seg[] = {0, 7, 7, 40000, n};
    SegmentPieces sp_g, sp_c;
    segment_pieces_build(&sp_g, gpu, seg, 4);
    segment_pieces_build(&sp_c, cpu, seg, 4);
    gpu->clip_segments(g.g, &sp_g, 30.0);
    cpu->clip_segments(g.c, &sp_c, 30.0);
    compare(&g, 2e-7, 0, "clip_segments");
    segment_pieces_free(&sp_g, gpu);
    segment_pieces_free(&sp_c, cpu);
    pair_free(&p); pair_free(&g); pair_free(&m); pair_free(&v); pair_free(&t);
    return 0;
}

/* ---- 3D convolutions ---- */

static void conv_case(int B, int Cin, int Cout, int X, int Y, int Z, int k, int s, int pad)
{
    const int Xo = (X + 2 * pad - k) / s + 1, Yo = (Y + 2 * pad - k) / s + 1;
    const int Zo = (Z + 2 * pad - k) / s + 1;
    const size_t nx = (size_t)B * Cin * X * Y * Z, ny = (size_t)B * Cout * Xo * Yo * Zo;
    const size_t nw = (size_t)Cout * Cin * k * k * k;
    Pair x = input(nx), W = input(nw), b = input(Cout), y = output(ny), dy = input(ny);
    Pair dx = output(nx), dW = param_grad(nw), db = param_grad(Cout);
    char what[160];
    const int terms = Cin * k * k * k;
    gpu->conv3d_fwd(y.g, x.g, W.g, b.g, B, Cin, Cout, X, Y, Z, k, s, pad);
    cpu->conv3d_fwd(y.c, x.c, W.c, b.c, B, Cin, Cout, X, Y, Z, k, s, pad);
    snprintf(what, sizeof what, "conv3d_fwd Cin=%d Cout=%d %dx%dx%d k=%d s=%d pad=%d", Cin, Cout,
             X, Y, Z, k, s, pad);
    compare(&y, 1e-5, gemm_atol(terms), what);
    gpu->conv3d_bwd(dx.g, dW.g, db.g, dy.g, x.g, W.g, B, Cin, Cout, X, Y, Z, k, s, pad);
    cpu->conv3d_bwd(dx.c, dW.c, db.c, dy.c, x.c, W.c, B, Cin, Cout, X, Y, Z, k, s, pad);
    compare(&dx, 1e-5, gemm_atol(Cout * k * k * k), "conv3d_bwd dx");
    compare(&dW, 1e-5, gemm_atol((int)(ny / Cout)), "conv3d_bwd dW (accumulated)");
    compare(&db, 1e-5, gemm_atol((int)(ny / Cout)), "conv3d_bwd db (accumulated)");
    pair_free(&x); pair_free(&W); pair_free(&b); pair_free(&y); pair_free(&dy); pair_free(&dx);
    pair_free(&dW); pair_free(&db);
}

/* As UNETR calls them: no bias (b = NULL, db = NULL), and the first block's conv without an
 * input gradient (dx = NULL): the GPU must neither touch nor need what is NULL, and dW must
 * still accumulate. */
static void conv_nobias_case(int B, int Cin, int Cout, int X, int Y, int Z, int k, int s, int pad)
{
    const int Xo = (X + 2 * pad - k) / s + 1, Yo = (Y + 2 * pad - k) / s + 1;
    const int Zo = (Z + 2 * pad - k) / s + 1;
    const size_t nx = (size_t)B * Cin * X * Y * Z, ny = (size_t)B * Cout * Xo * Yo * Zo;
    const size_t nw = (size_t)Cout * Cin * k * k * k;
    Pair x = input(nx), W = input(nw), y = output(ny), dy = input(ny), dW = param_grad(nw);
    char what[160];
    gpu->conv3d_fwd(y.g, x.g, W.g, NULL, B, Cin, Cout, X, Y, Z, k, s, pad);
    cpu->conv3d_fwd(y.c, x.c, W.c, NULL, B, Cin, Cout, X, Y, Z, k, s, pad);
    snprintf(what, sizeof what, "conv3d_fwd no bias Cin=%d Cout=%d %dx%dx%d k=%d s=%d pad=%d",
             Cin, Cout, X, Y, Z, k, s, pad);
    compare(&y, 1e-5, gemm_atol(Cin * k * k * k), what);
    gpu->conv3d_bwd(NULL, dW.g, NULL, dy.g, x.g, W.g, B, Cin, Cout, X, Y, Z, k, s, pad);
    cpu->conv3d_bwd(NULL, dW.c, NULL, dy.c, x.c, W.c, B, Cin, Cout, X, Y, Z, k, s, pad);
    compare(&dW, 1e-5, gemm_atol((int)(ny / Cout)), "conv3d_bwd dW only (dx = db = NULL)");
    pair_free(&x); pair_free(&W); pair_free(&y); pair_free(&dy); pair_free(&dW);
}

static void conv_transpose_case(int B, int Cin, int Cout, int X, int Y, int Z, int k)
{
    const size_t nx = (size_t)B * Cin * X * Y * Z, ny = (size_t)B * Cout * X * Y * Z * k * k * k;
    const size_t nw = (size_t)Cin * Cout * k * k * k;
    Pair x = input(nx), W = input(nw), b = input(Cout), y = output(ny), dy = input(ny);
    Pair dx = output(nx), dW = param_grad(nw), db = param_grad(Cout);
    gpu->conv_transpose3d_fwd(y.g, x.g, W.g, b.g, B, Cin, Cout, X, Y, Z, k);
    cpu->conv_transpose3d_fwd(y.c, x.c, W.c, b.c, B, Cin, Cout, X, Y, Z, k);
    compare(&y, 1e-5, gemm_atol(Cin), "conv_transpose3d_fwd");
    gpu->conv_transpose3d_bwd(dx.g, dW.g, db.g, dy.g, x.g, W.g, B, Cin, Cout, X, Y, Z, k);
    cpu->conv_transpose3d_bwd(dx.c, dW.c, db.c, dy.c, x.c, W.c, B, Cin, Cout, X, Y, Z, k);
    compare(&dx, 1e-5, gemm_atol(Cout * k * k * k), "conv_transpose3d_bwd dx");
    compare(&dW, 1e-5, gemm_atol(B * X * Y * Z), "conv_transpose3d_bwd dW (accumulated)");
    compare(&db, 1e-5, gemm_atol((int)(ny / Cout)), "conv_transpose3d_bwd db (accumulated)");
    pair_free(&x); pair_free(&W); pair_free(&b); pair_free(&y); pair_free(&dy); pair_free(&dx);
    pair_free(&dW); pair_free(&db);
}

static int test_conv(void)
{
    conv_case(2, 3, 5, 8, 7, 6, 3, 1, 1);  /* UNETR residual blocks */
    conv_case(1, 4, 6, 8, 8, 8, 2, 2, 0);  /* strided */
    conv_case(2, 5, 3, 6, 5, 4, 1, 1, 0);  /* 1x1x1 head */
    /* Wide on both sides: the CPU takes its vol2col + sgemm path, cuDNN other algorithms. */
    conv_case(1, 32, 40, 6, 5, 4, 3, 1, 1);
    conv_nobias_case(2, 3, 5, 7, 6, 5, 3, 1, 1);
    conv_nobias_case(1, 32, 24, 5, 4, 6, 1, 1, 0);
    conv_transpose_case(2, 6, 4, 3, 4, 5, 2);
    conv_transpose_case(1, 48, 16, 2, 3, 4, 2); /* UNETR up-sampling: many in, few out */
    return 0;
}

/* ---- mixed-precision modes (looser, stated tolerances) ---- */

static void linear_mode_case(const char *mode, double rtol, double atol_per_sqrt_k)
{
    const int rows = 256, in = 768, out = 512;
    Pair x = input((size_t)rows * in), W = input((size_t)out * in), b = input(out);
    Pair y = output((size_t)rows * out);
    gpu->linear_fwd(y.g, x.g, W.g, b.g, rows, in, out);
    cpu->linear_fwd(y.c, x.c, W.c, b.c, rows, in, out);
    char what[120];
    snprintf(what, sizeof what, "linear_fwd in %s mode", mode);
    compare(&y, rtol, atol_per_sqrt_k * sqrt((double)in), what);
    /* Backward through the same mode (bf16: dy rounded once for both GEMMs). */
    Pair dy = input((size_t)rows * out), dx = output((size_t)rows * in);
    Pair dW = param_grad((size_t)out * in), db = param_grad(out);
    gpu->linear_bwd(dx.g, dW.g, db.g, dy.g, x.g, W.g, rows, in, out);
    cpu->linear_bwd(dx.c, dW.c, db.c, dy.c, x.c, W.c, rows, in, out);
    snprintf(what, sizeof what, "linear_bwd dx in %s mode", mode);
    compare(&dx, rtol, atol_per_sqrt_k * sqrt((double)out), what);
    snprintf(what, sizeof what, "linear_bwd dW (accumulated) in %s mode", mode);
    compare(&dW, rtol, atol_per_sqrt_k * sqrt((double)rows), what);
    compare(&db, 1e-5, gemm_atol(rows), "linear_bwd db (fp32 column sums in any mode)");
    pair_free(&x); pair_free(&W); pair_free(&b); pair_free(&y);
    pair_free(&dy); pair_free(&dx); pair_free(&dW); pair_free(&db);
}

static int test_mixed_precision(void)
{
    /* TF32: inputs rounded to 10-bit mantissas (relative 2^-11 each), products summed in fp32:
     * error per term ~ 1e-3 of |x w|, random signs: ~1e-3 sqrt(K) absolute for |x|,|w| < 1. */
    gpu_set_math(1, 0);
    linear_mode_case("tf32", 1e-2, 2e-3);
    /* bf16: 7-bit mantissas (relative 2^-8 per input): ~8x the TF32 error. */
    gpu_set_math(0, 1);
    linear_mode_case("bf16", 5e-2, 1.6e-2);
    /* Attention GEMMs through the bf16 path too: logits off by ~1e-2, probabilities by ~1e-2
     * relative, so 2000x the fp32 tolerances (out: 2e-2; gradients: 0.2 relative + 2e-2). */
    attention_case(2, 4, 33, 33, 16, 1, 2000.0);
    /* each operand rounded once per call (cuda_attention.cu): cross attention with element
     * slices at odd offsets, and CASA's one 768-wide head over several batch elements */
    attention_case(3, 2, 11, 23, 16, 0, 2000.0);
    attention_case(3, 1, 36, 72, 768, 0, 2000.0);
    attention_unsaved_cases(2000.0, "bf16 GEMMs, GEMM kernel");
    /* The fused kernel in bf16: tiles rounded to bf16 on tensor cores, softmax statistics and
     * accumulators in fp32: the same stated tolerances (out 2e-2; gradients 0.2 rel + 2e-2). */
    gpu_set_attention(ATTN_KERNEL_FUSED);
    attention_case(2, 4, 33, 33, 16, 1, 2000.0);
    attention_case(2, 3, 70, 70, 8, 1, 2000.0);
    attention_case(2, 2, 37, 100, 24, 0, 2000.0);
    attention_case(2, 12, 144, 144, 32, 1, 2000.0);
    attention_case(1, 12, 130, 130, 64, 1, 2000.0);
    attention_case(1, 2, 65, 130, 40, 0, 2000.0);
    attention_unsaved_cases(2000.0, "bf16 GEMMs, fused kernel");
    gpu_set_attention(ATTN_KERNEL_GEMM);
    gpu_set_math(0, 0);
    return 0;
}

/* ---- bf16 weight copies (cuda/cuda_weight_copy.h) ----
 * A bf16 GEMM reading a weight buffer (weights_hint) uses the buffer's bf16 copy instead of
 * rounding the fp32 weights on the spot. The copy is the same rounding, so the GEMM must give
 * the same BITS as on an unregistered copy of the weights, after every kind of write to them: a
 * write the copy misses (stale copy) shows up as a mismatch. Two tensors of one registered
 * buffer: one at offset 0, one at an offset whose bf16 copy is only 32-byte aligned. */

enum WeightWrite { WRITE_ADAMW, WRITE_ADAMW_EMA, WRITE_EMA, WRITE_UPLOAD, WRITE_FILL, WRITE_AXPBY,
                   WRITE_SCALE, WRITE_ADD, WRITE_COPY, WRITE_COUNT };
static const char *const kWeightWriteName[WRITE_COUNT] = {
    "adamw", "adamw's EMA target", "ema_update", "upload", "fill", "axpby", "scale", "add", "copy"};

/* The same write on the registered tensor w and on the plain tensor p (n floats each). */
static void write_both(enum WeightWrite kind, float *w, float *p, const float *src, float *m1,
                       float *v1, float *m2, float *v2, const float *host, size_t n, long step)
{
    float *dst[2] = {w, p}, *mom[2] = {m1, m2}, *var[2] = {v1, v2};
    for (int i = 0; i < 2; i++) {
        switch (kind) {
        case WRITE_ADAMW:
            gpu->adamw(dst[i], src, mom[i], var[i], NULL, n,
                       (AdamwHyper){0.05f, 0.9f, 0.95f, 1e-8f, 0.05f, step, 1.0f}, NULL, 0.0f);
            break;
        case WRITE_ADAMW_EMA: {
            /* The weights as the EMA target of an AdamW pass over a scratch online set (the
             * same values and zero moments for both tensors, so both targets move alike). */
            float *online = gpu->alloc(3 * n * sizeof(float));
            gpu->upload(online, host, n * sizeof(float));
            gpu->fill(online + n, 0.0f, 2 * n);
            gpu->adamw(online, src, online + n, online + 2 * n, NULL, n,
                       (AdamwHyper){0.05f, 0.9f, 0.95f, 1e-8f, 0.05f, step, 0.5f}, dst[i], 0.5f);
            gpu->release(online);
            break;
        }
        case WRITE_EMA: gpu->ema_update(dst[i], src, n, 0.5f); break;
        case WRITE_UPLOAD: gpu->upload(dst[i], host, n * sizeof(float)); break;
        case WRITE_FILL: gpu->fill(dst[i], 0.375f, n / 2); break;
        case WRITE_AXPBY: gpu->axpby(dst[i], src, 0.25f, -1.5f, n); break;
        case WRITE_SCALE: gpu->scale(dst[i] + n / 3, 3.0f, n - n / 3); break;
        case WRITE_ADD: gpu->add(dst[i], dst[i], src, n); break;
        case WRITE_COPY: gpu->copy(dst[i] + 7, src, (n - 7) * sizeof(float)); break;
        case WRITE_COUNT: break;
        }
    }
}

/* linear_fwd and linear_bwd's dx on both weight tensors must agree bit for bit. */
static void same_bits(const float *x, const float *w, const float *p, float *y, float *dx,
                      int rows, int in, int out, const char *after)
{
    const size_t ny = (size_t)rows * out, nx = (size_t)rows * in;
    const size_t most = nx > ny ? nx : ny;
    float *h1 = malloc(most * sizeof(float)), *h2 = malloc(most * sizeof(float));
    gpu->linear_fwd(y, x, w, NULL, rows, in, out);
    gpu->download(h1, y, ny * sizeof(float));
    gpu->linear_fwd(y, x, p, NULL, rows, in, out);
    gpu->download(h2, y, ny * sizeof(float));
    TEST_CHECK(memcmp(h1, h2, ny * sizeof(float)) == 0,
               "bf16 linear_fwd on registered weights differs from plain weights after %s", after);
    /* dx = dy W, with dy := y: W is the GEMM's second operand here. */
    gpu->linear_bwd(dx, NULL, NULL, y, x, w, rows, in, out);
    gpu->download(h1, dx, nx * sizeof(float));
    gpu->linear_bwd(dx, NULL, NULL, y, x, p, rows, in, out);
    gpu->download(h2, dx, nx * sizeof(float));
    TEST_CHECK(memcmp(h1, h2, nx * sizeof(float)) == 0,
               "bf16 linear_bwd dx on registered weights differs from plain weights after %s",
               after);
    free(h1);
    free(h2);
}

static int test_bf16_weight_copies(void)
{
    const int rows = 64, in = 96, out = 80;
    const size_t n = (size_t)out * in, second = 16 * 1001;  /* as params: 64 B, bf16 32 B */
    float *weights = gpu->alloc((second + n) * sizeof(float));
    gpu->weights_hint(weights, second + n);
    Pair init = input(second + n), src = input(n), x = input((size_t)rows * in);
    Pair m = pair_make(2 * n, INIT_UNIFORM, -0.1f, 0.1f), v = pair_make(2 * n, INIT_UNIFORM, 0, 0.01f);
    Pair fresh = input(n), y = output((size_t)rows * out), dx = output((size_t)rows * in);
    float *plain = gpu->alloc(n * sizeof(float));
    /* AdamW moves each tensor by its own moments: both tensors' moments must start equal (they
     * then stay equal, as both get the same updates), or the weights themselves differ. */
    gpu->copy(m.g + n, m.g, n * sizeof(float));
    gpu->copy(v.g + n, v.g, n * sizeof(float));
    gpu_set_math(0, 1);
    gpu_set_weight_copies(1);
    const unsigned long long copies_before = gpu_weight_copy_bytes();
    const size_t offsets[2] = {0, second};
    for (int t = 0; t < 2; t++) {
        float *w = weights + offsets[t];
        gpu->copy(weights, init.g, (second + n) * sizeof(float));
        gpu->copy(plain, w, n * sizeof(float));
        char what[96];
        snprintf(what, sizeof what, "registration (tensor at offset %zu)", offsets[t]);
        same_bits(x.g, w, plain, y.g, dx.g, rows, in, out, what);
        /* The registered run really read a copy (else equal bits would prove nothing). */
        TEST_CHECK(gpu_weight_copy_bytes() - copies_before == (second + n) * 2,
                   "bf16 weight copies: %llu bytes made, expected %zu (one copy of the buffer)",
                   gpu_weight_copy_bytes() - copies_before, (second + n) * 2);
        for (int k = 0; k < WRITE_COUNT; k++) {
            write_both((enum WeightWrite)k, w, plain, src.g, m.g, v.g, m.g + n, v.g + n,
                       fresh.host, n, 1 + k);
            snprintf(what, sizeof what, "%s (tensor at offset %zu)", kWeightWriteName[k],
                     offsets[t]);
            same_bits(x.g, w, plain, y.g, dx.g, rows, in, out, what);
        }
        /* Copies switched off while the weights change, then on again: none may be trusted. */
        gpu_set_weight_copies(0);
        write_both(WRITE_ADAMW, w, plain, src.g, m.g, v.g, m.g + n, v.g + n, fresh.host, n, 9);
        same_bits(x.g, w, plain, y.g, dx.g, rows, in, out, "adamw with copies off");
        gpu_set_weight_copies(1);
        same_bits(x.g, w, plain, y.g, dx.g, rows, in, out, "copies switched on again");
    }
    gpu_set_math(0, 0);
    gpu->weights_forget(weights);
    TEST_CHECK(gpu_weight_copy_bytes() == copies_before, "weights_forget left %llu bytes of copies",
               gpu_weight_copy_bytes() - copies_before);
    gpu->release(weights);
    gpu->release(plain);
    pair_free(&init); pair_free(&src); pair_free(&x); pair_free(&m); pair_free(&v);
    pair_free(&fresh); pair_free(&y); pair_free(&dx);
    return 0;
}

/* ---- bf16 activations (backend.h, "mixed precision: bf16 activations") ----
 * bf16 inputs are made on the host (bf16_from_float of uniform values) and uploaded to both
 * backends; bf16 outputs are poisoned with the bf16 NaN 0x7fc0, downloaded, widened exactly to
 * fp32 and compared by compare_values. Tolerances:
 *  - GEMM-based outputs: both backends multiply the same bf16 values (exact products) and sum
 *    in fp32, so fp32 outputs differ by summation order only (1e-5 relative + gemm_atol(K));
 *    a bf16 output is rounded once from such an fp32 value, so it may land one bf16 ulp away:
 *    an ulp is at most 2^-7 of |y| (2^-8 to 2^-7 with 8 significant bits), added to rtol.
 *  - LayerNorm / GELU with a bf16 output: the fp32 tolerances of their fp32 ops plus one ulp.
 *  - attention: the GPU rounds P, dout and dS to bf16 for its tensor-core products, the CPU
 *    keeps them fp32: the "2000x fp32" tolerances of the bf16 attention cases of
 *    test_mixed_precision (out 2e-2; gradients 0.2 relative + 2e-2). */

static const double kBf16Ulp = 1.0 / 128.0;  /* 2^-7: one ulp, relative, in the worst case */
static const bf16_t kBf16Poison = 0x7fc0;    /* quiet NaN */

typedef struct {
    size_t n;
    bf16_t *host;
    bf16_t *c, *g;
} Bf16Pair;

static Bf16Pair bf16_pair_make(size_t n, InitKind kind, float lo, float hi)
{
    Bf16Pair p = {n, malloc((n ? n : 1) * sizeof(bf16_t)), NULL, NULL};
    float *values = malloc((n ? n : 1) * sizeof(float));
    if (kind == INIT_UNIFORM) fill_uniform(values, n, lo, hi);
    for (size_t i = 0; i < n; i++)
        p.host[i] = kind == INIT_UNIFORM ? bf16_from_float(values[i])
                    : kind == INIT_POISON ? kBf16Poison : 0;
    free(values);
    p.c = cpu->alloc((n ? n : 1) * sizeof(bf16_t));
    p.g = gpu->alloc((n ? n : 1) * sizeof(bf16_t));
    cpu->upload(p.c, p.host, n * sizeof(bf16_t));
    gpu->upload(p.g, p.host, n * sizeof(bf16_t));
    return p;
}

static Bf16Pair bf16_input(size_t n) { return bf16_pair_make(n, INIT_UNIFORM, -1.0f, 1.0f); }
static Bf16Pair bf16_output(size_t n) { return bf16_pair_make(n, INIT_POISON, 0, 0); }

static void bf16_pair_free(Bf16Pair *p)
{
    free(p->host);
    cpu->release(p->c);
    gpu->release(p->g);
}

/* n bf16 values from either backend's memory, widened (exactly) to fp32. */
static float *download_widened(const AliceBackend *be, const bf16_t *src, size_t n)
{
    bf16_t *raw = malloc((n ? n : 1) * sizeof(bf16_t));
    float *out = malloc((n ? n : 1) * sizeof(float));
    be->download(raw, src, n * sizeof(bf16_t));
    for (size_t i = 0; i < n; i++) out[i] = bf16_to_float(raw[i]);
    free(raw);
    return out;
}

static void compare_bf16(const Bf16Pair *p, double rtol, double atol, const char *what)
{
    float *hc = download_widened(cpu, p->c, p->n), *hg = download_widened(gpu, p->g, p->n);
    compare_values(hc, hg, p->n, rtol, atol, what);
    free(hc);
    free(hg);
}

/* Host fp32 copy of a bf16 pair's values (the inputs of double-precision references). */
static float *widened_host(const Bf16Pair *p)
{
    float *out = malloc((p->n ? p->n : 1) * sizeof(float));
    for (size_t i = 0; i < p->n; i++) out[i] = bf16_to_float(p->host[i]);
    return out;
}

/* linear_fwd_bf16 (fp32 and bf16 y, with and without bias) and linear_bwd_bf16. registered:
 * on the GPU, W and b live in a weights_hint buffer (the bf16 weight copies, the model's case;
 * bias_offset 1 puts the bias's copy at a 2-byte offset, so the bf16 bias cannot ride the
 * epilogue and takes the fp32-then-round route); otherwise they are rounded into scratch. */
static void bf16_linear_case(int rows, int in, int out, int registered, size_t bias_offset)
{
    Bf16Pair x = bf16_input((size_t)rows * in), ybf = bf16_output((size_t)rows * out);
    Pair W = input((size_t)out * in), b = input(out), y32 = output((size_t)rows * out);
    Pair dy = input((size_t)rows * out), dx = output((size_t)rows * in);
    Pair dW = param_grad((size_t)out * in), db = param_grad(out);
    const size_t w_floats = (size_t)out * in, b_at = (w_floats + 15) / 16 * 16 + bias_offset;
    float *weights = NULL;
    const float *Wg = W.g, *bg = b.g;
    if (registered) {
        weights = gpu->alloc((b_at + out) * sizeof(float));
        gpu->weights_hint(weights, b_at + out);
        gpu->upload(weights, W.host, w_floats * sizeof(float));
        gpu->upload(weights + b_at, b.host, (size_t)out * sizeof(float));
        Wg = weights;
        bg = weights + b_at;
    }
    char what[200];
    const char *where = registered ? (bias_offset ? "registered, bias copy at a 2-byte offset"
                                                  : "registered weights")
                                   : "plain weights";
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        gpu->linear_fwd_bf16(y32.g, DTYPE_F32, x.g, Wg, with_bias ? bg : NULL, NULL, rows, in,
                             out);
        cpu->linear_fwd_bf16(y32.c, DTYPE_F32, x.c, W.c, with_bias ? b.c : NULL, NULL, rows, in,
                             out);
        snprintf(what, sizeof what, "linear_fwd_bf16 fp32 y, bias %d, %dx%d->%d, %s", with_bias,
                 rows, in, out, where);
        compare(&y32, 1e-5, gemm_atol(in), what);
        gpu->linear_fwd_bf16(ybf.g, DTYPE_BF16, x.g, Wg, with_bias ? bg : NULL, NULL, rows, in,
                             out);
        cpu->linear_fwd_bf16(ybf.c, DTYPE_BF16, x.c, W.c, with_bias ? b.c : NULL, NULL, rows, in,
                             out);
        snprintf(what, sizeof what, "linear_fwd_bf16 bf16 y, bias %d, %dx%d->%d, %s", with_bias,
                 rows, in, out, where);
        compare_bf16(&ybf, kBf16Ulp + 1e-5, gemm_atol(in), what);
        /* y = residual + x W^T + b: the residual is cuBLASLt's C (beta = 1) and y its D; the
         * residual is read, never written. A fresh poisoned y. */
        Pair res = pair_make((size_t)rows * out, INIT_UNIFORM, -3, 3);
        Pair yres = output((size_t)rows * out);
        gpu->linear_fwd_bf16(yres.g, DTYPE_F32, x.g, Wg, with_bias ? bg : NULL, res.g, rows, in,
                             out);
        cpu->linear_fwd_bf16(yres.c, DTYPE_F32, x.c, W.c, with_bias ? b.c : NULL, res.c, rows,
                             in, out);
        snprintf(what, sizeof what, "linear_fwd_bf16 fp32 y + residual, bias %d, %dx%d->%d, %s",
                 with_bias, rows, in, out, where);
        compare(&yres, 1e-5, gemm_atol(in), what);
        compare(&res, 0, 0, "linear_fwd_bf16: the residual unchanged");
        pair_free(&res);
        pair_free(&yres);
    }
    gpu->linear_bwd_bf16(dx.g, dW.g, db.g, dy.g, x.g, Wg, rows, in, out);
    cpu->linear_bwd_bf16(dx.c, dW.c, db.c, dy.c, x.c, W.c, rows, in, out);
    snprintf(what, sizeof what, "linear_bwd_bf16 dx (dy rounded, W bf16), %s", where);
    compare(&dx, 1e-5, gemm_atol(out), what);
    compare(&dW, 1e-5, gemm_atol(rows), "linear_bwd_bf16 dW (accumulated)");
    compare(&db, 1e-5, gemm_atol(rows), "linear_bwd_bf16 db (fp32 sums of the unrounded dy)");
    /* dx = NULL: the dW GEMM alone must give the same accumulation (twice now). */
    gpu->linear_bwd_bf16(NULL, dW.g, NULL, dy.g, x.g, Wg, rows, in, out);
    cpu->linear_bwd_bf16(NULL, dW.c, NULL, dy.c, x.c, W.c, rows, in, out);
    compare(&dW, 1e-5, 2 * gemm_atol(rows), "linear_bwd_bf16 dW, dx = NULL");
    if (registered) {
        gpu->weights_forget(weights);
        gpu->release(weights);
    }
    bf16_pair_free(&x); bf16_pair_free(&ybf);
    pair_free(&W); pair_free(&b); pair_free(&y32); pair_free(&dy); pair_free(&dx);
    pair_free(&dW); pair_free(&db);
}

static void same_gpu_bits(const void *a, const void *b, size_t bytes, const char *what);

static void bf16_layernorm_gelu_case(int rows, int dim)
{
    const size_t n = (size_t)rows * dim;
    Pair x = pair_make(n, INIT_UNIFORM, -2, 3), g = input(dim), b = input(dim);
    Pair mean = output(rows), rstd = output(rows);
    Bf16Pair y = bf16_output(n);
    gpu->layernorm_fwd_bf16(y.g, mean.g, rstd.g, x.g, g.g, b.g, rows, dim, 1e-6f);
    cpu->layernorm_fwd_bf16(y.c, mean.c, rstd.c, x.c, g.c, b.c, rows, dim, 1e-6f);
    compare_bf16(&y, kBf16Ulp + 1e-5, 1e-5, "layernorm_fwd_bf16 y");
    compare(&mean, 1e-5, 1e-6, "layernorm_fwd_bf16 mean");
    compare(&rstd, 1e-5, 1e-6, "layernorm_fwd_bf16 rstd");
    /* The bf16 LayerNorm outputs (CASA's lnq and lnkv, the MAE decoder's H) replace a rounding
     * of the fp32 output by the GEMMs reading it: on the GPU the bf16 output must be, bit for
     * bit, to_bf16 of the fp32 layernorm_fwd (one kernel template, rounded at the store). */
    Pair y32 = output(n);
    Bf16Pair y32r = bf16_output(n);
    gpu->layernorm_fwd(y32.g, NULL, NULL, x.g, g.g, b.g, rows, dim, 1e-6f);
    gpu->to_bf16(y32r.g, y32.g, n);
    same_gpu_bits(y.g, y32r.g, n * sizeof(bf16_t), "layernorm_fwd_bf16 against to_bf16 of "
                  "layernorm_fwd");
    pair_free(&y32);
    bf16_pair_free(&y32r);
    /* GELU: one formula on both backends (see test_activations), x widened exactly, y rounded
     * once: equal bits expected, one ulp allowed for an fp32 result on a rounding boundary. */
    Bf16Pair gx = bf16_pair_make(n, INIT_UNIFORM, -4, 4), gy = bf16_output(n);
    Pair dy = input(n), dx = output(n);
    gpu->gelu_fwd_bf16(gy.g, gx.g, n);
    cpu->gelu_fwd_bf16(gy.c, gx.c, n);
    compare_bf16(&gy, kBf16Ulp, 1e-7, "gelu_fwd_bf16");
    gpu->gelu_bwd_bf16(dx.g, dy.g, gx.g, n);
    cpu->gelu_bwd_bf16(dx.c, dy.c, gx.c, n);
    compare(&dx, 0, 1e-7, "gelu_bwd_bf16");
    pair_free(&x); pair_free(&g); pair_free(&b); pair_free(&mean); pair_free(&rstd);
    pair_free(&dy); pair_free(&dx);
    bf16_pair_free(&y); bf16_pair_free(&gx); bf16_pair_free(&gy);
}

/* attention_fwd_bf16 / attention_bwd_bf16 on the backend's current attention kernel; layouts
 * as attention_case (packed qkv, or q and a packed kv buffer). */
static void bf16_attention_case(int B, int H, int Tq, int Tk, int Dh, int packed)
{
    const double tol = 2000.0;
    const int C = H * Dh;
    const int ldq = packed ? 3 * C : C, ldkv = packed ? 3 * C : 2 * C;
    Bf16Pair qbuf = bf16_input((size_t)B * Tq * ldq);
    Bf16Pair kvbuf = packed ? qbuf : bf16_input((size_t)B * Tk * ldkv);
    Pair dqbuf = output((size_t)B * Tq * ldq);
    Pair dkvbuf = packed ? dqbuf : output((size_t)B * Tk * ldkv);
    Pair probs = output((size_t)B * H * Tq * Tk), dout = input((size_t)B * Tq * C);
    Bf16Pair out = bf16_output((size_t)B * Tq * C);
    const size_t n_saved = gpu->attention_saved_floats(B, H, Tq, Tk, Dh);
    const int fused = n_saved != probs.n;
    float *saved_g = fused ? poisoned_gpu_floats(n_saved) : probs.g;
    const int koff = packed ? C : 0, voff = packed ? 2 * C : C;
    gpu->attention_fwd_bf16(out.g, saved_g, qbuf.g, kvbuf.g + koff, kvbuf.g + voff, B, H, Tq, Tk,
                            Dh, ldq, ldkv);
    cpu->attention_fwd_bf16(out.c, probs.c, qbuf.c, kvbuf.c + koff, kvbuf.c + voff, B, H, Tq, Tk,
                            Dh, ldq, ldkv);
    char what[160];
    snprintf(what, sizeof what, "attention_fwd_bf16%s out B=%d H=%d Tq=%d Tk=%d Dh=%d packed=%d",
             fused ? " (fused)" : "", B, H, Tq, Tk, Dh, packed);
    compare_bf16(&out, 1e-5 * tol, 1e-5 * tol, what);
    if (!fused) {
        compare(&probs, 1e-5 * tol, 1e-7 * tol, "attention_fwd_bf16 probs");
    } else {
        float *qh = widened_host(&qbuf), *kvh = packed ? qh : widened_host(&kvbuf);
        check_fused_lse(saved_g, qh, kvh + koff, B, H, Tq, Tk, Dh, ldq, ldkv, tol,
                        "attention_fwd_bf16 (fused) lse");
        free(qh);
        if (!packed) free(kvh);
    }
    gpu->attention_bwd_bf16(dqbuf.g, dkvbuf.g + koff, dkvbuf.g + voff, dout.g, qbuf.g,
                            kvbuf.g + koff, kvbuf.g + voff, out.g, saved_g, B, H, Tq, Tk, Dh, ldq,
                            ldkv);
    cpu->attention_bwd_bf16(dqbuf.c, dkvbuf.c + koff, dkvbuf.c + voff, dout.c, qbuf.c,
                            kvbuf.c + koff, kvbuf.c + voff, out.c, probs.c, B, H, Tq, Tk, Dh, ldq,
                            ldkv);
    snprintf(what, sizeof what, "attention_bwd_bf16%s d%s B=%d H=%d Tq=%d Tk=%d Dh=%d",
             fused ? " (fused)" : "", packed ? "qkv" : "q", B, H, Tq, Tk, Dh);
    compare(&dqbuf, 1e-4 * tol, 1e-5 * tol, what);
    if (!packed) compare(&dkvbuf, 1e-4 * tol, 1e-5 * tol, "attention_bwd_bf16 dkv");
    if (fused) gpu->release(saved_g);
    bf16_pair_free(&qbuf); bf16_pair_free(&out);
    pair_free(&dqbuf); pair_free(&probs); pair_free(&dout);
    if (!packed) { bf16_pair_free(&kvbuf); pair_free(&dkvbuf); }
}

static void bf16_attention_cases(void)
{
    bf16_attention_case(2, 3, 17, 17, 8, 1);
    bf16_attention_case(3, 2, 11, 23, 16, 0);
    bf16_attention_case(2, 2, 37, 100, 24, 0);   /* Tq != Tk, tiny config head width */
    bf16_attention_case(1, 12, 130, 130, 64, 1); /* ViT-B head width, tails of 64-row tiles */
    bf16_attention_case(1, 2, 65, 130, 40, 0);   /* runtime Dh (fused: 32-row tiles) */
    bf16_attention_case(2, 1, 20, 30, 768, 0);   /* CASA head: the GEMM path under fused too */
}

/* attention_fwd_bf16 forward only (saved = NULL on both backends; see kUnsavedShapes): out
 * compared at bf16_attention_case's out tolerance. */
static void bf16_attention_unsaved_case(const UnsavedShape *u, const char *kernel)
{
    const double tol = 2000.0;
    const int B = u->B, H = u->H, Tq = u->Tq, Tk = u->Tk, Dh = u->Dh, C = H * Dh;
    const int ldq = u->packed ? 3 * C : C, ldkv = u->packed ? 3 * C : 2 * C;
    Bf16Pair qbuf = bf16_input((size_t)B * Tq * ldq);
    Bf16Pair kvbuf = u->packed ? qbuf : bf16_input((size_t)B * Tk * ldkv);
    Bf16Pair out = bf16_output((size_t)B * Tq * C);
    const int koff = u->packed ? C : 0, voff = u->packed ? 2 * C : C;
    gpu->attention_fwd_bf16(out.g, NULL, qbuf.g, kvbuf.g + koff, kvbuf.g + voff, B, H, Tq, Tk,
                            Dh, ldq, ldkv);
    cpu->attention_fwd_bf16(out.c, NULL, qbuf.c, kvbuf.c + koff, kvbuf.c + voff, B, H, Tq, Tk,
                            Dh, ldq, ldkv);
    char what[160];
    snprintf(what, sizeof what, "attention_fwd_bf16 saved=NULL (%s) out B=%d H=%d Tq=%d Tk=%d "
             "Dh=%d packed=%d", kernel, B, H, Tq, Tk, Dh, u->packed);
    compare_bf16(&out, 1e-5 * tol, 1e-5 * tol, what);
    bf16_pair_free(&qbuf); bf16_pair_free(&out);
    if (!u->packed) bf16_pair_free(&kvbuf);
}

static void bf16_attention_unsaved_cases(const char *kernel)
{
    for (int i = 0; i < UNSAVED_SHAPE_COUNT; i++)
        bf16_attention_unsaved_case(&kUnsavedShapes[i], kernel);
}

/* gelu_fwd_bf16 for every bf16 input, in bit order and shifted by one element (the GPU's scalar
 * path): the GPU looks each result up in a table of all 65536 that the device filled with the
 * formula (cuda/cuda_elementwise.cu), so this compares that whole table with the CPU. Bit for
 * bit where the CPU's result is a number; NaN where it is NaN (payloads aside). */
static void bf16_gelu_every_input_case(void)
{
    const size_t n = (size_t)1 << 16;
    Bf16Pair x = bf16_pair_make(n + 1, INIT_ZERO, 0, 0), y = bf16_output(n + 1);
    for (size_t i = 0; i < n; i++) x.host[i] = (bf16_t)i;
    cpu->upload(x.c, x.host, (n + 1) * sizeof(bf16_t));
    gpu->upload(x.g, x.host, (n + 1) * sizeof(bf16_t));
    bf16_t *hc = malloc((n + 1) * sizeof(bf16_t)), *hg = malloc((n + 1) * sizeof(bf16_t));
    for (size_t shift = 0; shift <= 1; shift++) {
        gpu->gelu_fwd_bf16(y.g + shift, x.g + shift, n);
        cpu->gelu_fwd_bf16(y.c + shift, x.c + shift, n);
        cpu->download(hc, y.c, (n + 1) * sizeof(bf16_t));
        gpu->download(hg, y.g, (n + 1) * sizeof(bf16_t));
        size_t bad = 0, first = 0;
        for (size_t i = shift; i < n + shift; i++) {
            const float c = bf16_to_float(hc[i]), g = bf16_to_float(hg[i]);
            const int same = isnan(c) ? isnan(g) : hc[i] == hg[i];
            if (!same && bad++ == 0) first = i;
        }
        TEST_CHECK(bad == 0, "gelu_fwd_bf16, every input, shift %zu: %zu of %zu differ; first: x "
                   "0x%04x, gpu 0x%04x, cpu 0x%04x", shift, bad, n, bad ? x.host[first] : 0,
                   bad ? hg[first] : 0, bad ? hc[first] : 0);
    }
    free(hc);
    free(hg);
    bf16_pair_free(&x);
    bf16_pair_free(&y);
}

/* add_layernorm_fwd (bf16_branch_out): the sum is one fp32 add on both backends (the same
 * bits); y and the statistics with layernorm_fwd_bf16's tolerances, in both output types; on
 * the GPU y and the statistics are the plain LayerNorm's bits on the sum (the contract). */
static void add_layernorm_case(int rows, int dim)
{
    const size_t n = (size_t)rows * dim;
    Pair x = pair_make(n, INIT_UNIFORM, -2, 3), g = input(dim), b = input(dim);
    Bf16Pair branch = bf16_pair_make(n, INIT_UNIFORM, -2, 2);
    for (int typ = 0; typ < 2; typ++) {
        const DType yt = typ ? DTYPE_BF16 : DTYPE_F32;
        const char *tn = typ ? "bf16 y" : "fp32 y";
        Pair sum = output(n), mean = output(rows), rstd = output(rows), y32 = output(n);
        Pair plain_mean = output(rows), plain_rstd = output(rows), plain32 = output(n);
        Bf16Pair y16 = bf16_output(n), plain16 = bf16_output(n);
        void *yg = typ ? (void *)y16.g : (void *)y32.g, *yc = typ ? (void *)y16.c : (void *)y32.c;
        gpu->add_layernorm_fwd(sum.g, yg, yt, mean.g, rstd.g, x.g, branch.g, g.g, b.g, rows, dim,
                               1e-6f);
        cpu->add_layernorm_fwd(sum.c, yc, yt, mean.c, rstd.c, x.c, branch.c, g.c, b.c, rows, dim,
                               1e-6f);
        compare(&sum, 0, 0, "add_layernorm_fwd sum (x + widened branch, exact)");
        if (typ) compare_bf16(&y16, kBf16Ulp + 1e-5, 1e-5, "add_layernorm_fwd bf16 y");
        else compare(&y32, 1e-5, 1e-5, "add_layernorm_fwd fp32 y");
        compare(&mean, 1e-5, 1e-6, "add_layernorm_fwd mean");
        compare(&rstd, 1e-5, 1e-6, "add_layernorm_fwd rstd");
        void *pg = typ ? (void *)plain16.g : (void *)plain32.g;
        if (typ)
            gpu->layernorm_fwd_bf16(pg, plain_mean.g, plain_rstd.g, sum.g, g.g, b.g, rows, dim,
                                    1e-6f);
        else
            gpu->layernorm_fwd(pg, plain_mean.g, plain_rstd.g, sum.g, g.g, b.g, rows, dim, 1e-6f);
        same_gpu_bits(yg, pg, n * (typ ? sizeof(bf16_t) : sizeof(float)),
                      typ ? "add_layernorm_fwd bf16 y against layernorm_fwd_bf16 of the sum"
                          : "add_layernorm_fwd fp32 y against layernorm_fwd of the sum");
        same_gpu_bits(mean.g, plain_mean.g, rows * sizeof(float), "add_layernorm_fwd mean");
        same_gpu_bits(rstd.g, plain_rstd.g, rows * sizeof(float), "add_layernorm_fwd rstd");
        printf("  add_layernorm_fwd %d x %d, %s: sum exact, the plain LayerNorm's bits\n", rows,
               dim, tn);
        pair_free(&sum); pair_free(&mean); pair_free(&rstd); pair_free(&y32);
        pair_free(&plain_mean); pair_free(&plain_rstd); pair_free(&plain32);
        bf16_pair_free(&y16); bf16_pair_free(&plain16);
    }
    pair_free(&x); pair_free(&g); pair_free(&b);
    bf16_pair_free(&branch);
}

/* Every bf16-activation op, CPU against GPU; the math mode stays fp32 (these ops are bf16 by
 * their types, whatever gpu_set_math says). Last: the newest kernels. */
static int test_bf16_activations(void)
{
    bf16_linear_case(37, 96, 80, 0, 0);
    bf16_linear_case(64, 48, 144, 1, 0);
    bf16_linear_case(33, 64, 40, 1, 1);
    bf16_layernorm_gelu_case(67, 768);
    add_layernorm_case(67, 768);   /* the vector kernel */
    add_layernorm_case(13, 200);   /* the scalar kernel (200 is no multiple of 128) */
    bf16_gelu_every_input_case();
    gpu_set_attention(ATTN_KERNEL_GEMM);
    bf16_attention_cases();
    bf16_attention_unsaved_cases("GEMM kernel");
    gpu_set_attention(ATTN_KERNEL_FUSED);
    bf16_attention_cases();
    bf16_attention_unsaved_cases("fused kernel");
    gpu_set_attention(ATTN_KERNEL_GEMM);
    return 0;
}

/* ---- 16-byte vector paths vs scalar paths of the CUDA kernels ----
 * The elementwise, patch, gather and masked-MSE kernels load and store 16 bytes at a time
 * only when EVERY pointer they touch is 16-byte aligned (cuda/cuda_kernels.cuh), and fall
 * back to one element at a time otherwise. Both paths must give the same bits. Each op runs on
 * the GPU on the same values from aligned buffers (vector path; odd sizes add a scalar tail)
 * and from copies shifted by one element (scalar path), and with only one pointer shifted
 * (mixed alignment must take the scalar path too); the aligned run is also held to the CPU. */

/* A GPU copy of n elements of size elem at byte offset elem (misaligned for 16-byte access);
 * the buffer to release is *base. */
static void *gpu_shifted_copy(void **base, const void *src, size_t n, size_t elem)
{
    *base = gpu->alloc((n + 1) * elem);
    char *shifted = (char *)*base + elem;
    gpu->copy(shifted, src, n * elem);
    return shifted;
}

static void same_gpu_bits(const void *a, const void *b, size_t bytes, const char *what)
{
    unsigned char *ha = malloc(bytes ? bytes : 1), *hb = malloc(bytes ? bytes : 1);
    gpu->download(ha, a, bytes);
    gpu->download(hb, b, bytes);
    TEST_CHECK(memcmp(ha, hb, bytes) == 0, "%s: the two results differ in bits", what);
    free(ha);
    free(hb);
}

static void vector_paths_elementwise(void)
{
    const size_t n = 100003; /* 4-float chunks and a 3-element tail */
    Pair x = pair_make(n, INIT_UNIFORM, -4, 4), y = input(n), out = output(n), dx = output(n);
    void *bx, *by, *bo, *bdx;
    float *xs = gpu_shifted_copy(&bx, x.g, n, sizeof(float));
    float *ys = gpu_shifted_copy(&by, y.g, n, sizeof(float));
    float *os = gpu_shifted_copy(&bo, out.g, n, sizeof(float));
    float *dxs = gpu_shifted_copy(&bdx, dx.g, n, sizeof(float));
    gpu->add(out.g, x.g, y.g, n);
    cpu->add(out.c, x.c, y.c, n);
    compare(&out, 0, 0, "add, aligned (vector path)");
    gpu->add(os, xs, ys, n);
    same_gpu_bits(out.g, os, n * sizeof(float), "add, all pointers shifted");
    gpu->add(os, x.g, ys, n);
    same_gpu_bits(out.g, os, n * sizeof(float), "add, one input shifted");
    gpu->gelu_fwd(out.g, x.g, n);
    cpu->gelu_fwd(out.c, x.c, n);
    compare(&out, 0, 1e-7, "gelu_fwd, aligned (vector path)");
    gpu->gelu_fwd(os, xs, n);
    same_gpu_bits(out.g, os, n * sizeof(float), "gelu_fwd, shifted");
    gpu->gelu_bwd(dx.g, y.g, x.g, n);
    cpu->gelu_bwd(dx.c, y.c, x.c, n);
    compare(&dx, 0, 1e-7, "gelu_bwd, aligned (vector path)");
    gpu->gelu_bwd(dxs, ys, xs, n);
    same_gpu_bits(dx.g, dxs, n * sizeof(float), "gelu_bwd, shifted");
    gpu->gelu_bwd(dxs, y.g, xs, n);
    same_gpu_bits(dx.g, dxs, n * sizeof(float), "gelu_bwd, x shifted only");
    gpu->release(bx); gpu->release(by); gpu->release(bo); gpu->release(bdx);
    pair_free(&x); pair_free(&y); pair_free(&out); pair_free(&dx);
}

static void vector_paths_bf16(void)
{
    const size_t n = 4099; /* 8-value chunks and a 3-value tail */
    Bf16Pair x = bf16_pair_make(n, INIT_UNIFORM, -4, 4), y = bf16_output(n);
    Pair dy = input(n), dx = output(n);
    void *bx, *by, *bdy, *bdx;
    bf16_t *xs = gpu_shifted_copy(&bx, x.g, n, sizeof(bf16_t));
    bf16_t *ys = gpu_shifted_copy(&by, y.g, n, sizeof(bf16_t));
    float *dys = gpu_shifted_copy(&bdy, dy.g, n, sizeof(float));
    float *dxs = gpu_shifted_copy(&bdx, dx.g, n, sizeof(float));
    gpu->gelu_fwd_bf16(y.g, x.g, n);
    cpu->gelu_fwd_bf16(y.c, x.c, n);
    compare_bf16(&y, kBf16Ulp, 1e-7, "gelu_fwd_bf16, aligned (vector path)");
    gpu->gelu_fwd_bf16(ys, xs, n);
    same_gpu_bits(y.g, ys, n * sizeof(bf16_t), "gelu_fwd_bf16, shifted");
    gpu->gelu_fwd_bf16(ys, x.g, n);
    same_gpu_bits(y.g, ys, n * sizeof(bf16_t), "gelu_fwd_bf16, output shifted only");
    gpu->gelu_bwd_bf16(dx.g, dy.g, x.g, n);
    cpu->gelu_bwd_bf16(dx.c, dy.c, x.c, n);
    compare(&dx, 0, 1e-7, "gelu_bwd_bf16, aligned (vector path)");
    gpu->gelu_bwd_bf16(dxs, dys, xs, n);
    same_gpu_bits(dx.g, dxs, n * sizeof(float), "gelu_bwd_bf16, shifted");
    gpu->gelu_bwd_bf16(dx.g + 4, dy.g + 4, xs + 4, n - 4); /* fp32 sides aligned, x not */
    same_gpu_bits(dx.g, dxs, n * sizeof(float), "gelu_bwd_bf16, x shifted only");
    gpu->release(bx); gpu->release(by); gpu->release(bdy); gpu->release(bdx);
    bf16_pair_free(&x); bf16_pair_free(&y); pair_free(&dy); pair_free(&dx);
}

/* fp32 -> bf16 rounding (to_bf16_kernel) through a mixed-precision GEMM, which rounds its fp32
 * operand x into scratch: x shifted by one float takes the scalar path. */
static void vector_paths_round_bf16(void)
{
    const int rows = 5, in = 27, out = 16; /* x: 135 floats, 16 chunks of 8 and a 7 tail */
    Pair x = input((size_t)rows * in), W = input((size_t)out * in);
    Pair y = output((size_t)rows * out), ys = output((size_t)rows * out);
    void *bx;
    float *xs = gpu_shifted_copy(&bx, x.g, x.n, sizeof(float));
    gpu_set_math(0, 1);
    gpu->linear_fwd(y.g, x.g, W.g, NULL, rows, in, out);
    gpu->linear_fwd(ys.g, xs, W.g, NULL, rows, in, out);
    same_gpu_bits(y.g, ys.g, y.n * sizeof(float), "bf16 GEMM operand rounding, x shifted");
    gpu_set_math(0, 0);
    gpu->release(bx);
    pair_free(&x); pair_free(&W); pair_free(&y); pair_free(&ys);
}

/* The backend op to_bf16 (the projection head's input copy): the GPU's to_bf16_kernel against
 * the CPU's bf16_from_float, bit for bit, on uniform values, exact ties (low half 0x8000: to
 * even), a value past the largest bf16 (to infinity) and a subnormal; shifted by one element
 * (the scalar path) the GPU must give the same bits. */
static void vector_paths_to_bf16(void)
{
    const size_t n = 4099; /* 8-value chunks and a 3-value tail */
    Pair x = input(n);
    for (size_t i = 0; i < n; i += 7) {
        uint32_t bits;
        memcpy(&bits, &x.host[i], sizeof bits);
        bits = (bits & 0xffff0000u) | 0x8000u;
        memcpy(&x.host[i], &bits, sizeof bits);
    }
    x.host[1] = 3.3961e38f;
    x.host[2] = 1e-40f;
    cpu->upload(x.c, x.host, n * sizeof(float));
    gpu->upload(x.g, x.host, n * sizeof(float));
    Bf16Pair y = bf16_output(n);
    gpu->to_bf16(y.g, x.g, n);
    cpu->to_bf16(y.c, x.c, n);
    bf16_t *hc = malloc(n * sizeof(bf16_t)), *hg = malloc(n * sizeof(bf16_t));
    cpu->download(hc, y.c, n * sizeof(bf16_t));
    gpu->download(hg, y.g, n * sizeof(bf16_t));
    size_t differ = 0;
    for (size_t i = 0; i < n; i++) differ += hc[i] != hg[i];
    TEST_CHECK(differ == 0, "to_bf16: %zu of %zu values differ in bits between the backends",
               differ, n);
    void *bx, *by;
    float *xs = gpu_shifted_copy(&bx, x.g, n, sizeof(float));
    bf16_t *ys = gpu_shifted_copy(&by, y.g, n, sizeof(bf16_t));
    gpu->to_bf16(ys, xs, n);
    same_gpu_bits(y.g, ys, n * sizeof(bf16_t), "to_bf16, shifted");
    gpu->release(bx); gpu->release(by);
    free(hc); free(hg);
    pair_free(&x); bf16_pair_free(&y);
}

/* A bf16 result of both backends, bit for bit (the ops that round their fp32 values once). */
static void same_bf16_backends(const Bf16Pair *y, const char *what)
{
    bf16_t *hc = malloc((y->n ? y->n : 1) * sizeof(bf16_t));
    bf16_t *hg = malloc((y->n ? y->n : 1) * sizeof(bf16_t));
    cpu->download(hc, y->c, y->n * sizeof(bf16_t));
    gpu->download(hg, y->g, y->n * sizeof(bf16_t));
    size_t differ = 0;
    for (size_t i = 0; i < y->n; i++) differ += hc[i] != hg[i];
    TEST_CHECK(differ == 0, "%s: %zu of %zu values differ in bits between the backends", what,
               differ, y->n);
    free(hc);
    free(hg);
}

static void vector_paths_patch_case(int B, int X, int Y, int Z, int p)
{
    const size_t n = (size_t)B * X * Y * Z;
    Pair vol = input(n), patches = output(n), back = output(n);
    void *bv, *bp;
    char what[96];
    gpu->patchify(patches.g, vol.g, B, X, Y, Z, p);
    cpu->patchify(patches.c, vol.c, B, X, Y, Z, p);
    snprintf(what, sizeof what, "patchify B %d, %dx%dx%d, p %d", B, X, Y, Z, p);
    compare(&patches, 0, 0, what);
    gpu->unpatchify(back.g, patches.g, B, X, Y, Z, p);
    cpu->unpatchify(back.c, patches.c, B, X, Y, Z, p);
    snprintf(what, sizeof what, "unpatchify B %d, %dx%dx%d, p %d", B, X, Y, Z, p);
    compare(&back, 0, 0, what);
    float *vs = gpu_shifted_copy(&bv, vol.g, n, sizeof(float));
    float *ps = gpu_shifted_copy(&bp, patches.g, n, sizeof(float));
    gpu->patchify(ps, vs, B, X, Y, Z, p);
    same_gpu_bits(patches.g, ps, n * sizeof(float), "patchify, shifted");
    gpu->patchify(ps, vol.g, B, X, Y, Z, p);
    same_gpu_bits(patches.g, ps, n * sizeof(float), "patchify, patches shifted only");
    gpu->unpatchify(vs, patches.g, B, X, Y, Z, p);
    same_gpu_bits(back.g, vs, n * sizeof(float), "unpatchify, volume shifted only");
    /* patchify_bf16 (the target's patches with bf16 activations): the CPU's rounding, bit for
     * bit; patches shifted by one bf16 (scalar path) the same bits */
    Bf16Pair p16 = bf16_output(n);
    gpu->patchify_bf16(p16.g, vol.g, B, X, Y, Z, p);
    cpu->patchify_bf16(p16.c, vol.c, B, X, Y, Z, p);
    snprintf(what, sizeof what, "patchify_bf16 B %d, %dx%dx%d, p %d", B, X, Y, Z, p);
    same_bf16_backends(&p16, what);
    void *bp16;
    bf16_t *p16s = gpu_shifted_copy(&bp16, p16.g, n, sizeof(bf16_t));
    gpu->patchify_bf16(p16s, vol.g, B, X, Y, Z, p);
    same_gpu_bits(p16.g, p16s, n * sizeof(bf16_t), "patchify_bf16, patches shifted");
    gpu->release(bp16);
    bf16_pair_free(&p16);
    gpu->release(bv); gpu->release(bp);
    pair_free(&vol); pair_free(&patches); pair_free(&back);
}

static void vector_paths_rows(int C, int dim)
{
    const int B = 3, N = 40, nsel = 13, idx_ld = N;
    int *perm = malloc((size_t)B * N * sizeof(int));
    for (int b = 0; b < B; b++) random_permutation(perm + b * N, N);
    IntPair idx = int_pair(perm, (size_t)B * N);
    Pair in = input((size_t)B * N * C), out = output((size_t)B * nsel * C);
    void *bo, *bi;
    char what[96];
    gpu->gather_rows(out.g, in.g, idx.g, idx_ld, B, N, nsel, C);
    cpu->gather_rows(out.c, in.c, idx.c, idx_ld, B, N, nsel, C);
    snprintf(what, sizeof what, "gather_rows, C %d", C);
    compare(&out, 0, 0, what);
    float *os = gpu_shifted_copy(&bo, out.g, out.n, sizeof(float));
    float *is = gpu_shifted_copy(&bi, in.g, in.n, sizeof(float));
    gpu->gather_rows(os, is, idx.g, idx_ld, B, N, nsel, C);
    same_gpu_bits(out.g, os, out.n * sizeof(float), "gather_rows, shifted");
    gpu->gather_rows(os, in.g, idx.g, idx_ld, B, N, nsel, C);
    same_gpu_bits(out.g, os, out.n * sizeof(float), "gather_rows, output shifted only");
    /* gather_rows_bf16 (the student's visible tokens with bf16 activations): the CPU's
     * rounding, bit for bit; input shifted by one float (scalar path) the same bits */
    Bf16Pair o16 = bf16_output(out.n);
    gpu->gather_rows_bf16(o16.g, in.g, idx.g, idx_ld, B, N, nsel, C);
    cpu->gather_rows_bf16(o16.c, in.c, idx.c, idx_ld, B, N, nsel, C);
    snprintf(what, sizeof what, "gather_rows_bf16, C %d", C);
    same_bf16_backends(&o16, what);
    void *bo16;
    bf16_t *o16s = gpu_shifted_copy(&bo16, o16.g, o16.n, sizeof(bf16_t));
    gpu->gather_rows_bf16(o16s, is, idx.g, idx_ld, B, N, nsel, C);
    same_gpu_bits(o16.g, o16s, o16.n * sizeof(bf16_t), "gather_rows_bf16, shifted");
    gpu->release(bo16);
    bf16_pair_free(&o16);
    gpu->release(bo); gpu->release(bi);
    free(perm);
    int_pair_free(&idx);
    pair_free(&in); pair_free(&out);

    const int rows = 29;
    Pair pred = input((size_t)rows * dim), target = input(pred.n), dpred = output(pred.n);
    float *mask = malloc(rows * sizeof(float));
    for (int r = 0; r < rows; r++) mask[r] = r % 3 != 0 ? 1.0f : 0.0f;
    Pair m = pair_make(rows, INIT_ZERO, 0, 0);
    gpu->upload(m.g, mask, rows * sizeof(float));
    cpu->upload(m.c, mask, rows * sizeof(float));
    void *bp, *bt, *bd;
    gpu->masked_mse_bwd(dpred.g, pred.g, target.g, m.g, rows, dim, 1.5f);
    cpu->masked_mse_bwd(dpred.c, pred.c, target.c, m.c, rows, dim, 1.5f);
    snprintf(what, sizeof what, "masked_mse_bwd, dim %d", dim);
    compare(&dpred, 1e-5, 1e-10, what);
    float *ps = gpu_shifted_copy(&bp, pred.g, pred.n, sizeof(float));
    float *ts = gpu_shifted_copy(&bt, target.g, pred.n, sizeof(float));
    float *ds = gpu_shifted_copy(&bd, dpred.g, pred.n, sizeof(float));
    gpu->masked_mse_bwd(ds, ps, ts, m.g, rows, dim, 1.5f);
    same_gpu_bits(dpred.g, ds, pred.n * sizeof(float), "masked_mse_bwd, shifted");
    gpu->masked_mse_bwd(dpred.g, pred.g, ts, m.g, rows, dim, 1.5f);
    same_gpu_bits(dpred.g, ds, pred.n * sizeof(float), "masked_mse_bwd, target shifted only");
    gpu->release(bp); gpu->release(bt); gpu->release(bd);
    free(mask);
    pair_free(&pred); pair_free(&target); pair_free(&dpred); pair_free(&m);
}

static int test_vector_paths(void)
{
    vector_paths_elementwise();
    vector_paths_bf16();
    vector_paths_round_bf16();
    vector_paths_to_bf16();
    vector_paths_patch_case(2, 8, 12, 16, 4);  /* float4 runs of p = 4 */
    vector_paths_patch_case(3, 16, 24, 32, 8); /* B 3, a 2 x 3 x 4 grid of 8^3 patches */
    vector_paths_patch_case(2, 6, 9, 12, 3);   /* p % 4 != 0: scalar path only */
    vector_paths_rows(20, 512);                /* rows of whole float4 chunks */
    vector_paths_rows(19, 37);                 /* odd rows: scalar path / tails */
    return 0;
}

/* ---- one-launch column sums (bias and LayerNorm parameter gradients) ----
 * Each column sum is one kernel whose last block per column tile finishes the tile; its
 * arrival counters must be zero again after every call, so every case runs twice in a row
 * (gradients accumulate) against the CPU. The bf16 linear backward rounds dy for its GEMMs in
 * the column sum's pass when db is given: dx and dW must equal, bit for bit, those of the call
 * without db (dy rounded by its own kernel). LayerNorm's dgamma and dbeta come from one
 * two-output launch: each must equal, bit for bit, the one-output launch that runs when the
 * other gradient is NULL. 70100 rows: 512 chunks of rows, the most, the last one ragged. */
static void colsum_linear_case(int rows, int in, int out, int bf16_math)
{
    Pair x = input((size_t)rows * in), W = input((size_t)out * in), dy = input((size_t)rows * out);
    Pair dx = output((size_t)rows * in), dW = param_grad((size_t)out * in), db = param_grad(out);
    Bf16Pair x16 = bf16_input((size_t)rows * in);
    float *dx_plain = gpu->alloc(dx.n * sizeof(float)), *dW_plain = gpu->alloc(dW.n * sizeof(float));
    char what[160];
    const char *mode = bf16_math ? "linear_bwd, bf16 GEMMs" : "linear_bwd_bf16";
    if (bf16_math) gpu_set_math(0, 1);
    for (int call = 1; call <= 2; call++) {
        gpu->copy(dW_plain, dW.g, dW.n * sizeof(float));
        if (bf16_math) {
            gpu->linear_bwd(dx.g, dW.g, db.g, dy.g, x.g, W.g, rows, in, out);
            cpu->linear_bwd(dx.c, dW.c, db.c, dy.c, x.c, W.c, rows, in, out);
            gpu->linear_bwd(dx_plain, dW_plain, NULL, dy.g, x.g, W.g, rows, in, out);
        } else {
            gpu->linear_bwd_bf16(dx.g, dW.g, db.g, dy.g, x16.g, W.g, rows, in, out);
            cpu->linear_bwd_bf16(dx.c, dW.c, db.c, dy.c, x16.c, W.c, rows, in, out);
            gpu->linear_bwd_bf16(dx_plain, dW_plain, NULL, dy.g, x16.g, W.g, rows, in, out);
        }
        snprintf(what, sizeof what, "%s %dx%d->%d, call %d: db (accumulated) vs CPU", mode, rows,
                 in, out, call);
        compare(&db, 1e-5, call * gemm_atol(rows), what);
        snprintf(what, sizeof what, "%s %dx%d->%d, call %d: dx with db (dy rounded in the column "
                 "sum) vs without", mode, rows, in, out, call);
        same_gpu_bits(dx.g, dx_plain, dx.n * sizeof(float), what);
        snprintf(what, sizeof what, "%s %dx%d->%d, call %d: dW with db vs without", mode, rows, in,
                 out, call);
        same_gpu_bits(dW.g, dW_plain, dW.n * sizeof(float), what);
    }
    if (bf16_math) gpu_set_math(0, 0);
    gpu->release(dx_plain); gpu->release(dW_plain);
    bf16_pair_free(&x16);
    pair_free(&x); pair_free(&W); pair_free(&dy); pair_free(&dx); pair_free(&dW); pair_free(&db);
}

static void colsum_layernorm_case(int rows, int dim)
{
    Pair x = pair_make((size_t)rows * dim, INIT_UNIFORM, -2, 3), g = input(dim), b = input(dim);
    Pair y = output((size_t)rows * dim), mean = output(rows), rstd = output(rows);
    Pair dy = input((size_t)rows * dim), dg = param_grad(dim), dbt = param_grad(dim);
    float *dg_alone = gpu->alloc(dim * sizeof(float)), *dbt_alone = gpu->alloc(dim * sizeof(float));
    char what[160];
    gpu->layernorm_fwd(y.g, mean.g, rstd.g, x.g, g.g, b.g, rows, dim, 1e-5f);
    cpu->layernorm_fwd(y.c, mean.c, rstd.c, x.c, g.c, b.c, rows, dim, 1e-5f);
    pair_resync(&mean);
    pair_resync(&rstd);
    for (int call = 1; call <= 2; call++) {
        gpu->copy(dg_alone, dg.g, dim * sizeof(float));
        gpu->copy(dbt_alone, dbt.g, dim * sizeof(float));
        gpu->layernorm_bwd(NULL, NULL, dg.g, dbt.g, dy.g, x.g, mean.g, rstd.g, g.g, rows, dim);
        cpu->layernorm_bwd(NULL, NULL, dg.c, dbt.c, dy.c, x.c, mean.c, rstd.c, g.c, rows, dim);
        gpu->layernorm_bwd(NULL, NULL, dg_alone, NULL, dy.g, x.g, mean.g, rstd.g, g.g, rows, dim);
        gpu->layernorm_bwd(NULL, NULL, NULL, dbt_alone, dy.g, x.g, mean.g, rstd.g, g.g, rows, dim);
        snprintf(what, sizeof what, "layernorm_bwd %dx%d, call %d: dgamma (accumulated) vs CPU",
                 rows, dim, call);
        compare(&dg, 1e-5, call * 2e-6 * sqrt((double)rows) * 8.0, what);
        snprintf(what, sizeof what, "layernorm_bwd %dx%d, call %d: dbeta (accumulated) vs CPU",
                 rows, dim, call);
        compare(&dbt, 1e-5, call * gemm_atol(rows), what);
        snprintf(what, sizeof what, "layernorm_bwd %dx%d, call %d: dgamma of the two-output "
                 "column sum vs the one-output one", rows, dim, call);
        same_gpu_bits(dg.g, dg_alone, dim * sizeof(float), what);
        snprintf(what, sizeof what, "layernorm_bwd %dx%d, call %d: dbeta of the two-output "
                 "column sum vs the one-output one", rows, dim, call);
        same_gpu_bits(dbt.g, dbt_alone, dim * sizeof(float), what);
    }
    gpu->release(dg_alone); gpu->release(dbt_alone);
    pair_free(&x); pair_free(&g); pair_free(&b); pair_free(&y); pair_free(&mean);
    pair_free(&rstd); pair_free(&dy); pair_free(&dg); pair_free(&dbt);
}

static int test_column_sums(void)
{
    /* bf16 GEMM widths stay multiples of 8 (16-byte rows); the column tiles still end ragged */
    colsum_linear_case(7, 24, 40, 0);      /* one chunk of rows, a ragged second column tile */
    colsum_linear_case(1152, 768, 768, 0); /* ViT-B projection, 2 crops of 576 tokens */
    colsum_linear_case(4608, 64, 24, 1);   /* 36 chunks, fp32 API in bf16-GEMM mode */
    colsum_linear_case(70100, 8, 40, 0);   /* 512 chunks, the last one ragged (93 rows) */
    colsum_layernorm_case(1, 31);
    colsum_layernorm_case(4607, 768);  /* 36 chunks, the last one ragged */
    colsum_layernorm_case(70100, 33);
    return 0;
}

/* ---- the MLP's fc1 backward through its GELU as one op (linear_gelu_bwd_bf16) ----
 * CPU vs GPU with the bf16 linear tolerances (dh is one formula on both backends, so its bf16
 * copy is the same; the GEMMs and db's summation order differ): with and without db (the GPU's
 * fused column-sum path, and its fallback), outputs poisoned, dW and db accumulating. And the
 * contract on the GPU: the fused entry equals gelu_bwd_bf16 into a scratch followed by
 * linear_bwd_bf16 BIT FOR BIT, for every combination of NULL outputs. */
enum { LG_DX = 1, LG_DW = 2, LG_DB = 4 };

/* The dx and dW GEMMs here reach K = 3072 and 4608 on tensor cores, whose fp32 accumulation may
 * truncate its additions instead of rounding them (Fasi et al., "Numerical behavior of NVIDIA
 * tensor cores", PeerJ CS 2021): up to 2^-23 of the running sum per 8-term step, which for sums
 * up to ~60 at K = 4608 is ~4e-3, beyond gemm_atol's round-to-nearest estimate. 1e-6 K on top
 * covers it; a dh left unrounded (~3e-2 at these K) or a missing GELU factor (O(1)) stays far
 * outside. */
static double tensor_core_atol(int K) { return gemm_atol(K) + 1e-6 * K; }

static void linear_gelu_unfused_bits(const Pair *dy, const Bf16Pair *h, const Bf16Pair *x,
                                     const Pair *W, int rows, int in, int out, int outputs)
{
    const size_t nh = (size_t)rows * out, nx = (size_t)rows * in, nw = (size_t)out * in;
    Pair dW = param_grad(nw), db = param_grad(out);
    float *dx_f = poisoned_gpu_floats(nx), *dx_u = poisoned_gpu_floats(nx);
    float *dW_u = gpu->alloc(nw * sizeof(float)), *db_u = gpu->alloc(out * sizeof(float));
    float *scratch_f = poisoned_gpu_floats(nh), *scratch_u = poisoned_gpu_floats(nh);
    gpu->copy(dW_u, dW.g, nw * sizeof(float));
    gpu->copy(db_u, db.g, out * sizeof(float));
    gpu->linear_gelu_bwd_bf16(outputs & LG_DX ? dx_f : NULL, outputs & LG_DW ? dW.g : NULL,
                              outputs & LG_DB ? db.g : NULL, dy->g, h->g, scratch_f, x->g, W->g,
                              rows, in, out);
    gpu->gelu_bwd_bf16(scratch_u, dy->g, h->g, nh);
    gpu->linear_bwd_bf16(outputs & LG_DX ? dx_u : NULL, outputs & LG_DW ? dW_u : NULL,
                         outputs & LG_DB ? db_u : NULL, scratch_u, x->g, W->g, rows, in, out);
    char what[200];
    snprintf(what, sizeof what, "linear_gelu_bwd_bf16 %dx%d->%d (dx %d, dW %d, db %d): GPU fused "
             "vs gelu_bwd_bf16 + linear_bwd_bf16", rows, in, out, !!(outputs & LG_DX),
             !!(outputs & LG_DW), !!(outputs & LG_DB));
    same_gpu_bits(dx_f, dx_u, nx * sizeof(float), what);
    same_gpu_bits(dW.g, dW_u, nw * sizeof(float), what);
    same_gpu_bits(db.g, db_u, (size_t)out * sizeof(float), what);
    gpu->release(dx_f); gpu->release(dx_u); gpu->release(dW_u); gpu->release(db_u);
    gpu->release(scratch_f); gpu->release(scratch_u);
    pair_free(&dW); pair_free(&db);
}

static void linear_gelu_case(int rows, int in, int out, int all_output_sets)
{
    const size_t nh = (size_t)rows * out, nx = (size_t)rows * in, nw = (size_t)out * in;
    Pair dy = input(nh), W = input(nw);
    Bf16Pair h = bf16_pair_make(nh, INIT_UNIFORM, -3, 3), x = bf16_input(nx);
    char what[200];
    for (int with_db = 1; with_db >= 0; with_db--) {
        Pair dx = output(nx), dW = param_grad(nw), db = param_grad(out), scratch = output(nh);
        gpu->linear_gelu_bwd_bf16(dx.g, dW.g, with_db ? db.g : NULL, dy.g, h.g, scratch.g, x.g,
                                  W.g, rows, in, out);
        cpu->linear_gelu_bwd_bf16(dx.c, dW.c, with_db ? db.c : NULL, dy.c, h.c, scratch.c, x.c,
                                  W.c, rows, in, out);
        snprintf(what, sizeof what, "linear_gelu_bwd_bf16 %dx%d->%d, db %d: dx", rows, in, out,
                 with_db);
        compare(&dx, 1e-5, tensor_core_atol(out), what);
        snprintf(what, sizeof what, "linear_gelu_bwd_bf16 %dx%d->%d, db %d: dW (accumulated)",
                 rows, in, out, with_db);
        compare(&dW, 1e-5, tensor_core_atol(rows), what);
        snprintf(what, sizeof what, "linear_gelu_bwd_bf16 %dx%d->%d, db %d: db (accumulated; "
                 "untouched without)", rows, in, out, with_db);
        compare(&db, 1e-5, with_db ? gemm_atol(rows) : 0.0, what);
        pair_free(&dx); pair_free(&dW); pair_free(&db); pair_free(&scratch);
    }
    const int sets[] = {LG_DX | LG_DW | LG_DB, LG_DX | LG_DW, LG_DW | LG_DB, LG_DX | LG_DB,
                        LG_DB};
    const int count = all_output_sets ? (int)(sizeof sets / sizeof *sets) : 2;
    for (int s = 0; s < count; s++) linear_gelu_unfused_bits(&dy, &h, &x, &W, rows, in, out, sets[s]);
    pair_free(&dy); pair_free(&W);
    bf16_pair_free(&h); bf16_pair_free(&x);
}

/* h = every finite bf16 value once (inf and NaN replaced by 0: their dh is NaN, whose bits
 * need not agree): the fused pass looks gelu'(h) up in the device's table of every bf16 value
 * (cuda_gelu_slope_bf16_table), the unfused gelu_bwd_bf16 evaluates the formula, so fused
 * equal to unfused bit for bit checks that whole table on the device. */
static void linear_gelu_every_h_case(void)
{
    const int rows = 64, in = 32, out = 1024; /* rows * out = 65536 */
    const size_t nh = (size_t)rows * out;
    Pair dy = input(nh), W = input((size_t)out * in);
    Bf16Pair h = bf16_pair_make(nh, INIT_ZERO, 0, 0), x = bf16_input((size_t)rows * in);
    for (size_t i = 0; i < nh; i++)
        h.host[i] = ((i >> 7) & 0xff) == 0xff ? 0 : (bf16_t)i; /* exponent all ones: inf, NaN */
    cpu->upload(h.c, h.host, nh * sizeof(bf16_t));
    gpu->upload(h.g, h.host, nh * sizeof(bf16_t));
    linear_gelu_unfused_bits(&dy, &h, &x, &W, rows, in, out, LG_DX | LG_DW | LG_DB);
    pair_free(&dy); pair_free(&W);
    bf16_pair_free(&h); bf16_pair_free(&x);
}

static int test_linear_gelu_bwd(void)
{
    linear_gelu_case(37, 24, 40, 1);       /* ragged: one chunk of rows, a ragged column tile */
    linear_gelu_case(4608, 768, 3072, 0);  /* ViT-B fc1, 8 crops of 576 tokens */
    linear_gelu_every_h_case();
    return 0;
}

/* ---- fc2's input gradient in bf16 (linear_bwd_bf16_dx16, _dy16_dx16) and fc1's GELU backward
 * reading it (linear_gelu_bwd_bf16_dy16) ----
 * dx16 on the GPU against the GPU's fp32-dx entry rounded on the host: cuBLASLt may run another
 * kernel for a bf16 D, so the two agree within one bf16 unit (2^-7 relative at worst, plus the
 * fp32 accumulation's tensor_core_atol), bit for bit where the accumulation is the same; dW and
 * db are the fp32-dx entry's bits (the same GEMM plan and column sum). Against the CPU backend:
 * the bf16 linear tolerances plus that unit. The GELU entry equals linear_gelu_bwd_bf16 on the
 * widened dy_act BIT FOR BIT on the GPU (fused path and fallbacks) and the CPU within
 * linear_gelu_case's tolerances. Outputs poisoned (a NaN left unwritten fails). */
static void dx16_against_fp32_dx(const Bf16Pair *dx16, const float *dx32_gpu, size_t n, int K,
                                 const char *what)
{
    float *got = download_widened(gpu, dx16->g, n), *f32 = malloc((n ? n : 1) * sizeof(float));
    gpu->download(f32, dx32_gpu, n * sizeof(float));
    size_t same = 0;
    for (size_t i = 0; i < n; i++) {
        same += bf16_from_float(f32[i]) == bf16_from_float(got[i]);
        f32[i] = bf16_to_float(bf16_from_float(f32[i]));
    }
    compare_values(f32, got, n, kBf16Ulp, tensor_core_atol(K), what);
    printf("  %s: %zu of %zu entries the fp32 dx's rounding exactly\n", what, same, n);
    free(got);
    free(f32);
}

static void linear_dx16_case(int rows, int in, int out, int bf16_dy)
{
    const size_t ny = (size_t)rows * out, nx = (size_t)rows * in, nw = (size_t)out * in;
    Pair dy = input(ny), W = input(nw), dW = param_grad(nw), db = param_grad(out);
    Bf16Pair x = bf16_input(nx), dy16 = bf16_input(ny), dx = bf16_output(nx);
    float *dx32 = poisoned_gpu_floats(nx), *dW32 = gpu->alloc(nw * sizeof(float));
    float *db32 = gpu->alloc(out * sizeof(float));
    gpu->copy(dW32, dW.g, nw * sizeof(float));
    gpu->copy(db32, db.g, out * sizeof(float));
    const char *entry = bf16_dy ? "linear_bwd_bf16_dy16_dx16" : "linear_bwd_bf16_dx16";
    if (bf16_dy) {
        gpu->linear_bwd_bf16_dy16_dx16(dx.g, dW.g, dy16.g, x.g, W.g, rows, in, out);
        cpu->linear_bwd_bf16_dy16_dx16(dx.c, dW.c, dy16.c, x.c, W.c, rows, in, out);
        gpu->linear_bwd_bf16_dy16(dx32, dW32, dy16.g, x.g, W.g, rows, in, out);
    } else {
        gpu->linear_bwd_bf16_dx16(dx.g, dW.g, db.g, dy.g, x.g, W.g, rows, in, out);
        cpu->linear_bwd_bf16_dx16(dx.c, dW.c, db.c, dy.c, x.c, W.c, rows, in, out);
        gpu->linear_bwd_bf16(dx32, dW32, db32, dy.g, x.g, W.g, rows, in, out);
    }
    char what[200];
    snprintf(what, sizeof what, "%s %dx%d->%d: GPU dx vs the GPU's fp32 dx rounded", entry, rows,
             out, in);
    dx16_against_fp32_dx(&dx, dx32, nx, out, what);
    snprintf(what, sizeof what, "%s %dx%d->%d: dW, db vs the fp32-dx entry's", entry, rows, out,
             in);
    same_gpu_bits(dW.g, dW32, nw * sizeof(float), what);
    same_gpu_bits(db.g, db32, (size_t)out * sizeof(float), what);
    snprintf(what, sizeof what, "%s %dx%d->%d: dx GPU vs CPU", entry, rows, out, in);
    compare_bf16(&dx, 1e-5 + kBf16Ulp, tensor_core_atol(out), what);
    snprintf(what, sizeof what, "%s %dx%d->%d: dW GPU vs CPU (accumulated)", entry, rows, out, in);
    compare(&dW, 1e-5, tensor_core_atol(rows), what);
    snprintf(what, sizeof what, "%s %dx%d->%d: db GPU vs CPU (accumulated; untouched for dy16)",
             entry, rows, out, in);
    compare(&db, 1e-5, bf16_dy ? 0.0 : gemm_atol(rows), what);
    gpu->release(dx32); gpu->release(dW32); gpu->release(db32);
    pair_free(&dy); pair_free(&W); pair_free(&dW); pair_free(&db);
    bf16_pair_free(&x); bf16_pair_free(&dy16); bf16_pair_free(&dx);
}

static void linear_gelu_dy16_case(int rows, int in, int out)
{
    const size_t nh = (size_t)rows * out, nx = (size_t)rows * in, nw = (size_t)out * in;
    Pair W = input(nw);
    Bf16Pair dy16 = bf16_pair_make(nh, INIT_UNIFORM, -2, 2);
    Bf16Pair h = bf16_pair_make(nh, INIT_UNIFORM, -3, 3), x = bf16_input(nx);
    float *wide = widened_host(&dy16), *wide_g = gpu->alloc((nh ? nh : 1) * sizeof(float));
    gpu->upload(wide_g, wide, nh * sizeof(float));
    char what[200];
    const int sets[] = {LG_DX | LG_DW | LG_DB, LG_DX | LG_DW, LG_DW | LG_DB, LG_DB};
    for (size_t s = 0; s < sizeof sets / sizeof *sets; s++) {
        const int o = sets[s];
        Pair dx = output(nx), dW = param_grad(nw), db = param_grad(out), scratch = output(nh);
        float *dx_w = poisoned_gpu_floats(nx), *dW_w = gpu->alloc(nw * sizeof(float));
        float *db_w = gpu->alloc(out * sizeof(float)), *scratch_w = poisoned_gpu_floats(nh);
        gpu->copy(dW_w, dW.g, nw * sizeof(float));
        gpu->copy(db_w, db.g, out * sizeof(float));
        gpu->linear_gelu_bwd_bf16_dy16(o & LG_DX ? dx.g : NULL, o & LG_DW ? dW.g : NULL,
                                       o & LG_DB ? db.g : NULL, dy16.g, h.g, scratch.g, x.g, W.g,
                                       rows, in, out);
        cpu->linear_gelu_bwd_bf16_dy16(o & LG_DX ? dx.c : NULL, o & LG_DW ? dW.c : NULL,
                                       o & LG_DB ? db.c : NULL, dy16.c, h.c, scratch.c, x.c, W.c,
                                       rows, in, out);
        gpu->linear_gelu_bwd_bf16(o & LG_DX ? dx_w : NULL, o & LG_DW ? dW_w : NULL,
                                  o & LG_DB ? db_w : NULL, wide_g, h.g, scratch_w, x.g, W.g,
                                  rows, in, out);
        snprintf(what, sizeof what, "linear_gelu_bwd_bf16_dy16 %dx%d->%d (dx %d, dW %d, db %d): "
                 "GPU vs linear_gelu_bwd_bf16 on the widened dy_act", rows, in, out,
                 !!(o & LG_DX), !!(o & LG_DW), !!(o & LG_DB));
        if (o & LG_DX) same_gpu_bits(dx.g, dx_w, nx * sizeof(float), what);
        same_gpu_bits(dW.g, dW_w, nw * sizeof(float), what);
        same_gpu_bits(db.g, db_w, (size_t)out * sizeof(float), what);
        snprintf(what, sizeof what, "linear_gelu_bwd_bf16_dy16 %dx%d->%d (dx %d, dW %d, db %d): "
                 "GPU vs CPU", rows, in, out, !!(o & LG_DX), !!(o & LG_DW), !!(o & LG_DB));
        if (o & LG_DX) compare(&dx, 1e-5, tensor_core_atol(out), what);
        compare(&dW, 1e-5, tensor_core_atol(rows), what);
        compare(&db, 1e-5, gemm_atol(rows), what);
        gpu->release(dx_w); gpu->release(dW_w); gpu->release(db_w); gpu->release(scratch_w);
        pair_free(&dx); pair_free(&dW); pair_free(&db); pair_free(&scratch);
    }
    free(wide);
    gpu->release(wide_g);
    pair_free(&W);
    bf16_pair_free(&dy16); bf16_pair_free(&h); bf16_pair_free(&x);
}

static int test_mlp_dh1_bf16(void)
{
    linear_dx16_case(37, 40, 24, 0);       /* ragged, fp32 dy (db from it) */
    linear_dx16_case(37, 40, 24, 1);       /* bf16 dy (the LayerNorm backward's, presummed) */
    linear_dx16_case(4608, 3072, 768, 0);  /* ViT-B fc2: dh1 [4608, 3072] */
    linear_dx16_case(4608, 3072, 768, 1);
    linear_gelu_dy16_case(37, 24, 40);
    linear_gelu_dy16_case(4608, 768, 3072); /* ViT-B fc1 */
    return 0;
}

/* ---- instance norm through cuDNN (gpu_set_instnorm(INSTNORM_KERNEL_CUDNN)) ----
 * cuDNN's batch norm over the (b, c) planes against the CPU backend and against the own kernels
 * on the GPU, with and without gamma/beta, parameter gradients accumulated onto random values.
 * Tolerances: cuDNN reduces in fp32 in an order it does not document, the own kernels and the
 * CPU in double, so y, rstd and dx get 1e-4 relative (fp32 statistics of up to 1e5 terms) and
 * the parameter gradients, fp32 sums of B*V terms of magnitude up to ~2, an absolute
 * 1e-6 * B*V on top of 1e-5 relative. The forward's mean and rstd are compared too: the
 * backend saves them for instnorm_bwd, whichever kernel runs it. */

/* A pair holding the same host values as p (a parameter gradient's starting point). */
static Pair pair_copy(const Pair *p)
{
    Pair q = pair_make(p->n, INIT_ZERO, 0, 0);
    memcpy(q.host, p->host, p->n * sizeof(float));
    cpu->upload(q.c, q.host, q.n * sizeof(float));
    gpu->upload(q.g, q.host, q.n * sizeof(float));
    return q;
}

/* got and ref: n floats in GPU-backend memory (the cuDNN and the own kernel's results). */
static void compare_on_gpu(const float *got, const float *ref, size_t n, double rtol, double atol,
                           const char *what)
{
    float *hg = malloc((n ? n : 1) * sizeof(float)), *hr = malloc((n ? n : 1) * sizeof(float));
    gpu->download(hg, got, n * sizeof(float));
    gpu->download(hr, ref, n * sizeof(float));
    compare_values(hr, hg, n, rtol, atol, what);
    free(hg);
    free(hr);
}

static void instnorm_cudnn_case(int B, int C, long V, float eps, int affine)
{
    const size_t n = (size_t)B * C * V, planes = (size_t)B * C;
    const double grad_atol = 1e-6 * (double)B * (double)V;
    char what[160];
#define INSTNORM_WHAT(part) (snprintf(what, sizeof what, "instnorm cudnn B %d C %d V %ld eps %g " \
                                      "affine %d: %s", B, C, V, (double)eps, affine, part), what)
    Pair x = pair_make(n, INIT_UNIFORM, -1, 2), g = input(C), b = input(C), dy = input(n);
    Pair y = output(n), mean = output(planes), rstd = output(planes);
    Pair dx = output(n), dg = param_grad(C), dbt = param_grad(C);
    Pair dg_own = pair_copy(&dg), dbt_own = pair_copy(&dbt);
    Pair y_own = output(n), mean_own = output(planes), rstd_own = output(planes);
    Pair dx_own = output(n);
    const float *gg = affine ? g.g : NULL, *gc = affine ? g.c : NULL;
    const float *bg = affine ? b.g : NULL, *bc = affine ? b.c : NULL;

    gpu_set_instnorm(INSTNORM_KERNEL_CUDNN);
    gpu->instnorm_fwd(y.g, mean.g, rstd.g, x.g, gg, bg, B, C, V, eps);
    cpu->instnorm_fwd(y.c, mean.c, rstd.c, x.c, gc, bc, B, C, V, eps);
    compare(&y, 1e-4, 1e-5, INSTNORM_WHAT("fwd y vs cpu"));
    compare(&mean, 1e-5, 1e-6, INSTNORM_WHAT("fwd mean vs cpu"));
    compare(&rstd, 1e-4, 1e-6, INSTNORM_WHAT("fwd rstd vs cpu"));
    gpu->instnorm_bwd(dx.g, affine ? dg.g : NULL, affine ? dbt.g : NULL, dy.g, x.g, mean.g,
                      rstd.g, gg, B, C, V);
    cpu->instnorm_bwd(dx.c, affine ? dg.c : NULL, affine ? dbt.c : NULL, dy.c, x.c, mean.c,
                      rstd.c, gc, B, C, V);
    compare(&dx, 1e-4, 1e-5, INSTNORM_WHAT("bwd dx vs cpu"));
    compare(&dg, 1e-5, affine ? grad_atol : 0.0, INSTNORM_WHAT("bwd dgamma vs cpu (accumulated)"));
    compare(&dbt, 1e-5, affine ? grad_atol : 0.0, INSTNORM_WHAT("bwd dbeta vs cpu (accumulated)"));

    /* the own kernels on the same GPU inputs; backward from cuDNN's statistics for both */
    gpu_set_instnorm(INSTNORM_KERNEL_OWN);
    gpu->instnorm_fwd(y_own.g, mean_own.g, rstd_own.g, x.g, gg, bg, B, C, V, eps);
    gpu->instnorm_bwd(dx_own.g, affine ? dg_own.g : NULL, affine ? dbt_own.g : NULL, dy.g, x.g,
                      mean.g, rstd.g, gg, B, C, V);
    compare_on_gpu(y.g, y_own.g, n, 1e-4, 1e-5, INSTNORM_WHAT("fwd y vs own kernel"));
    compare_on_gpu(mean.g, mean_own.g, planes, 1e-5, 1e-6, INSTNORM_WHAT("fwd mean vs own kernel"));
    compare_on_gpu(rstd.g, rstd_own.g, planes, 1e-4, 1e-6, INSTNORM_WHAT("fwd rstd vs own kernel"));
    compare_on_gpu(dx.g, dx_own.g, n, 1e-4, 1e-5, INSTNORM_WHAT("bwd dx vs own kernel"));
    compare_on_gpu(dg.g, dg_own.g, (size_t)C, 1e-5, affine ? grad_atol : 0.0,
                   INSTNORM_WHAT("bwd dgamma vs own kernel"));
    compare_on_gpu(dbt.g, dbt_own.g, (size_t)C, 1e-5, affine ? grad_atol : 0.0,
                   INSTNORM_WHAT("bwd dbeta vs own kernel"));
#undef INSTNORM_WHAT
    Pair *all[] = {&x, &g, &b, &dy, &y, &mean, &rstd, &dx, &dg, &dbt, &dg_own, &dbt_own, &y_own,
                   &mean_own, &rstd_own, &dx_own};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pair_free(all[i]);
}

/* Where cuDNN cannot run the call the own kernels must, bit for bit: an epsilon below
 * CUDNN_BN_MIN_EPSILON (0 in cuDNN 9, so a negative one; the variance of x is ~0.75, so
 * var + eps stays positive) and a backward without dx (cuDNN always writes dx). */
static void instnorm_cudnn_fallbacks(void)
{
    const int B = 2, C = 3;
    const long V = 1009;
    const size_t n = (size_t)B * C * V, planes = (size_t)B * C;
    const float eps = -1e-3f;
    Pair x = pair_make(n, INIT_UNIFORM, -1, 2), g = input(C), b = input(C), dy = input(n);
    Pair y = output(n), mean = output(planes), rstd = output(planes);
    Pair y_own = output(n), mean_own = output(planes), rstd_own = output(planes);
    Pair dg = param_grad(C), dbt = param_grad(C);
    Pair dg_own = pair_copy(&dg), dbt_own = pair_copy(&dbt);
    gpu_set_instnorm(INSTNORM_KERNEL_CUDNN);
    gpu->instnorm_fwd(y.g, mean.g, rstd.g, x.g, g.g, b.g, B, C, V, eps);
    gpu->instnorm_bwd(NULL, dg.g, dbt.g, dy.g, x.g, mean.g, rstd.g, g.g, B, C, V);
    gpu_set_instnorm(INSTNORM_KERNEL_OWN);
    gpu->instnorm_fwd(y_own.g, mean_own.g, rstd_own.g, x.g, g.g, b.g, B, C, V, eps);
    gpu->instnorm_bwd(NULL, dg_own.g, dbt_own.g, dy.g, x.g, mean.g, rstd.g, g.g, B, C, V);
    TEST_CHECK(gpu_bits_differ(y.g, y_own.g, n) == 0 &&
               gpu_bits_differ(mean.g, mean_own.g, planes) == 0 &&
               gpu_bits_differ(rstd.g, rstd_own.g, planes) == 0,
               "instnorm cudnn, eps %g below CUDNN_BN_MIN_EPSILON: the forward is not the own "
               "kernels' bit for bit", (double)eps);
    TEST_CHECK(gpu_bits_differ(dg.g, dg_own.g, (size_t)C) == 0 &&
               gpu_bits_differ(dbt.g, dbt_own.g, (size_t)C) == 0,
               "instnorm cudnn, backward without dx: dgamma/dbeta are not the own kernels' bit "
               "for bit");
    cpu->instnorm_fwd(y.c, mean.c, rstd.c, x.c, g.c, b.c, B, C, V, eps);
    compare(&y, 1e-5, 1e-5, "instnorm cudnn fallback (eps < minimum): fwd y vs cpu");
    Pair *all[] = {&x, &g, &b, &dy, &y, &mean, &rstd, &y_own, &mean_own, &rstd_own, &dg, &dbt,
                   &dg_own, &dbt_own};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pair_free(all[i]);
}

static int test_instnorm_cudnn(void)
{
    const int before = gpu_instnorm_kernel();
    for (int affine = 0; affine < 2; affine++) {
        instnorm_cudnn_case(2, 3, 1009, 1e-5f, affine);   /* V prime: a multiple of nothing */
        instnorm_cudnn_case(1, 1, 4099, 1e-5f, affine);   /* one plane */
        /* a large epsilon: a backward that recomputed the statistics with another epsilon
         * (it takes none from the backend) would be off by ~30% */
        instnorm_cudnn_case(2, 3, 1009, 0.5f, affine);
    }
    instnorm_cudnn_case(2, 16, 48L * 48 * 48, 1e-5f, 0);  /* UNETR res block at 48^3 */
    instnorm_cudnn_fallbacks();
    gpu_set_instnorm(before);
    return 0;
}

/* ---- attention's bf16 gradients and the qkv layer's bf16 dy (attention_bwd_bf16_grad16,
 * linear_bwd_bf16_dy16: the transformer's qkv backward without an fp32 dqkv) ----
 * CPU vs GPU at the tolerances of the bf16 attention cases plus one bf16 ulp (each gradient is
 * rounded once more), and of bf16_linear_case for the linear backward. On the GPU the
 * contracts BIT FOR BIT: attention_bwd_bf16_grad16 equals attention_bwd_bf16 (fp32 gradients)
 * rounded to bf16 on the host (nearest even, as the kernels round), with every element outside
 * the requested views (gaps between q's rows, views passed as NULL) left as it was; and
 * linear_bwd_bf16_dy16 equals linear_bwd_bf16 on dy widened to fp32 with db NULL. Both
 * attention kernels (GEMM: fp32 stand-ins rounded after; fused: rounded in the store). */
enum { G16_Q = 1, G16_K = 2, G16_V = 4 };

/* Whether element i of a buffer with row stride ld lies in the view of C columns at col0. */
static int in_view(size_t i, int ld, int col0, int C)
{
    const int col = (int)(i % (size_t)ld);
    return col >= col0 && col < col0 + C;
}

/* The bf16 gradient buffer g16 (GPU) against the fp32 gradients g32 (GPU) rounded, where a
 * requested view owns the element; elsewhere its starting value init, bit for bit. views: up to
 * three (mask bit, first column) pairs in this buffer. Owned elements must match bit for bit
 * unless g16_rtol > 0: cuDNN's bf16 and fp32 calls build different graphs (strided gradients
 * against compact ones), which may run different engines and so sum in another order; then
 * |got - ref| <= g16_rtol |ref| + g16_atol. */
static double g16_rtol, g16_atol;

static void grad16_bits(const bf16_t *g16, const float *g32, const bf16_t *init, size_t n,
                        int ld, int C, const int (*views)[2], int n_views, int which,
                        const char *what)
{
    bf16_t *got = malloc((n ? n : 1) * sizeof(bf16_t));
    float *ref = malloc((n ? n : 1) * sizeof(float));
    gpu->download(got, g16, n * sizeof(bf16_t));
    gpu->download(ref, g32, n * sizeof(float));
    size_t bad = 0, first_bad = 0;
    for (size_t i = 0; i < n; i++) {
        bf16_t want = init[i];
        int owned = 0;
        for (int v = 0; v < n_views; v++)
            if ((which & views[v][0]) && in_view(i, ld, views[v][1], C)) owned = 1;
        if (owned) want = bf16_from_float(ref[i]);
        const double err = fabs(bf16_to_float(got[i]) - ref[i]);
        const int off = owned && g16_rtol > 0 ? !(err <= g16_rtol * fabs(ref[i]) + g16_atol)
                                              : got[i] != want;
        if (off && bad++ == 0) first_bad = i;
    }
    TEST_CHECK(bad == 0, "%s: %zu of %zu elements differ from the fp32 gradients rounded "
               "(first [%zu]: got 0x%04x)", what, bad, n, first_bad,
               n ? (unsigned)got[first_bad] : 0u);
    free(got);
    free(ref);
}

static void grad16_attention_case(int B, int H, int Tq, int Tk, int Dh, int packed, int which)
{
    const double tol = 2000.0;
    const int C = H * Dh;
    const int ldq = packed ? 3 * C : C + 8, ldkv = packed ? 3 * C : 2 * C;  /* gaps in q rows */
    const size_t nq = (size_t)B * Tq * ldq, nkv = packed ? nq : (size_t)B * Tk * ldkv;
    const int koff = packed ? C : 0, voff = packed ? 2 * C : C;
    Bf16Pair qbuf = bf16_input(nq), kvbuf = packed ? qbuf : bf16_input(nkv);
    Pair probs = output((size_t)B * H * Tq * Tk), dout = input((size_t)B * Tq * C);
    Bf16Pair out = bf16_output((size_t)B * Tq * C);
    const size_t n_saved = gpu->attention_saved_floats(B, H, Tq, Tk, Dh);
    const int fused = n_saved != probs.n;
    float *saved_g = fused ? poisoned_gpu_floats(n_saved) : probs.g;
    gpu->attention_fwd_bf16(out.g, saved_g, qbuf.g, kvbuf.g + koff, kvbuf.g + voff, B, H, Tq, Tk,
                            Dh, ldq, ldkv);
    cpu->attention_fwd_bf16(out.c, probs.c, qbuf.c, kvbuf.c + koff, kvbuf.c + voff, B, H, Tq, Tk,
                            Dh, ldq, ldkv);
    /* bf16 gradients start as random values (the same on both backends): what the op does not
     * own must keep them */
    Bf16Pair dq16 = bf16_input(nq), dkv16 = packed ? dq16 : bf16_input(nkv);
    bf16_t *dq_g = which & G16_Q ? dq16.g : NULL, *dq_c = which & G16_Q ? dq16.c : NULL;
    bf16_t *dk_g = which & G16_K ? dkv16.g + koff : NULL, *dk_c = which & G16_K ? dkv16.c + koff : NULL;
    bf16_t *dv_g = which & G16_V ? dkv16.g + voff : NULL, *dv_c = which & G16_V ? dkv16.c + voff : NULL;
    gpu->attention_bwd_bf16_grad16(dq_g, dk_g, dv_g, dout.g, qbuf.g, kvbuf.g + koff,
                                   kvbuf.g + voff, out.g, saved_g, B, H, Tq, Tk, Dh, ldq, ldkv);
    cpu->attention_bwd_bf16_grad16(dq_c, dk_c, dv_c, dout.c, qbuf.c, kvbuf.c + koff,
                                   kvbuf.c + voff, out.c, probs.c, B, H, Tq, Tk, Dh, ldq, ldkv);
    char what[200];
    snprintf(what, sizeof what, "attention_bwd_bf16_grad16%s d%s (q %d k %d v %d) B=%d H=%d "
             "Tq=%d Tk=%d Dh=%d", fused ? " (fused)" : "", packed ? "qkv" : "q",
             !!(which & G16_Q), !!(which & G16_K), !!(which & G16_V), B, H, Tq, Tk, Dh);
    compare_bf16(&dq16, 1e-4 * tol + kBf16Ulp, 1e-5 * tol, what);
    if (!packed) compare_bf16(&dkv16, 1e-4 * tol + kBf16Ulp, 1e-5 * tol, what);
    /* the contract on the GPU: fp32 gradients into poisoned buffers, rounded on the host */
    float *dq32 = poisoned_gpu_floats(nq), *dkv32 = packed ? dq32 : poisoned_gpu_floats(nkv);
    gpu->attention_bwd_bf16(which & G16_Q ? dq32 : NULL, which & G16_K ? dkv32 + koff : NULL,
                            which & G16_V ? dkv32 + voff : NULL, dout.g, qbuf.g, kvbuf.g + koff,
                            kvbuf.g + voff, out.g, saved_g, B, H, Tq, Tk, Dh, ldq, ldkv);
    if (packed) {
        const int views[3][2] = {{G16_Q, 0}, {G16_K, C}, {G16_V, 2 * C}};
        grad16_bits(dq16.g, dq32, dq16.host, nq, ldq, C, views, 3, which, what);
    } else {
        const int qviews[1][2] = {{G16_Q, 0}}, kvviews[2][2] = {{G16_K, 0}, {G16_V, C}};
        grad16_bits(dq16.g, dq32, dq16.host, nq, ldq, C, qviews, 1, which, what);
        grad16_bits(dkv16.g, dkv32, dkv16.host, nkv, ldkv, C, kvviews, 2, which, what);
    }
    gpu->release(dq32);
    if (!packed) gpu->release(dkv32);
    if (fused) gpu->release(saved_g);
    bf16_pair_free(&qbuf); bf16_pair_free(&out); bf16_pair_free(&dq16);
    pair_free(&probs); pair_free(&dout);
    if (!packed) { bf16_pair_free(&kvbuf); bf16_pair_free(&dkv16); }
}

static void grad16_attention_cases(void)
{
    grad16_attention_case(2, 3, 17, 17, 8, 1, G16_Q | G16_K | G16_V);
    grad16_attention_case(2, 2, 37, 100, 24, 0, G16_Q | G16_K | G16_V);  /* gaps in q's rows */
    grad16_attention_case(1, 12, 130, 130, 64, 1, G16_Q | G16_K | G16_V); /* ViT-B heads */
    grad16_attention_case(1, 4, 70, 70, 32, 1, G16_Q | G16_K | G16_V);    /* decoder heads */
    grad16_attention_case(1, 2, 65, 130, 40, 0, G16_Q | G16_V);          /* runtime Dh */
    grad16_attention_case(1, 12, 130, 130, 64, 1, G16_K | G16_V);        /* no dq */
    grad16_attention_case(1, 12, 130, 130, 64, 1, G16_Q);                /* dq only */
    /* CASA's one head: GEMM path, the elements one batched GEMM, q rows with gaps */
    grad16_attention_case(3, 1, 20, 32, 768, 0, G16_Q | G16_K | G16_V);
}

static void dy16_linear_case(int rows, int in, int out)
{
    const size_t nx = (size_t)rows * in, ny = (size_t)rows * out, nw = (size_t)out * in;
    Bf16Pair x = bf16_input(nx), dy = bf16_input(ny);
    Pair W = input(nw);
    float *dy32_host = widened_host(&dy), *dy32 = gpu->alloc(ny * sizeof(float));
    gpu->upload(dy32, dy32_host, ny * sizeof(float));
    char what[200];
    for (int outputs = 3; outputs >= 1; outputs--) {  /* bit 1: dx, bit 2: dW */
        const int want_dx = outputs & 1, want_dW = outputs & 2;
        Pair dx = output(nx), dW = param_grad(nw);
        float *dx_u = poisoned_gpu_floats(nx), *dW_u = gpu->alloc(nw * sizeof(float));
        gpu->copy(dW_u, dW.g, nw * sizeof(float));
        gpu->linear_bwd_bf16_dy16(want_dx ? dx.g : NULL, want_dW ? dW.g : NULL, dy.g, x.g, W.g,
                                  rows, in, out);
        cpu->linear_bwd_bf16_dy16(want_dx ? dx.c : NULL, want_dW ? dW.c : NULL, dy.c, x.c, W.c,
                                  rows, in, out);
        snprintf(what, sizeof what, "linear_bwd_bf16_dy16 %dx%d->%d (dx %d, dW %d)", rows, in,
                 out, !!want_dx, !!want_dW);
        if (want_dx) compare(&dx, 1e-5, tensor_core_atol(out), what);
        compare(&dW, 1e-5, want_dW ? tensor_core_atol(rows) : 0.0, what);
        gpu->linear_bwd_bf16(want_dx ? dx_u : NULL, want_dW ? dW_u : NULL, NULL, dy32, x.g, W.g,
                             rows, in, out);
        snprintf(what, sizeof what, "linear_bwd_bf16_dy16 %dx%d->%d (dx %d, dW %d): GPU vs "
                 "linear_bwd_bf16 on dy widened", rows, in, out, !!want_dx, !!want_dW);
        if (want_dx) same_gpu_bits(dx.g, dx_u, nx * sizeof(float), what);
        same_gpu_bits(dW.g, dW_u, nw * sizeof(float), what);
        gpu->release(dx_u); gpu->release(dW_u);
        pair_free(&dx); pair_free(&dW);
    }
    free(dy32_host);
    gpu->release(dy32);
    bf16_pair_free(&x); bf16_pair_free(&dy); pair_free(&W);
}

static int test_qkv_bf16_gradients(void)
{
    dy16_linear_case(37, 24, 72);
    dy16_linear_case(1152, 768, 2304);  /* ViT-B qkv, 2 crops of 576 tokens */
    gpu_set_attention(ATTN_KERNEL_GEMM);
    grad16_attention_cases();
    gpu_set_attention(ATTN_KERNEL_FUSED);
    grad16_attention_cases();
    gpu_set_attention(ATTN_KERNEL_GEMM);
    return 0;
}

/* ---- the fp32 attention entry points under bf16 GEMMs, GEMM kernel (cuda/cuda_attention.cu) ----
 * Each fp32 operand is rounded to bf16 once per call (q, k, v, P and dout whole, dS in the
 * softmax backward's store), not by every per-element GEMM (CASA's 16 elements made 256
 * rounding launches a paper step). The GEMMs and the values they get are then those of the
 * bf16 entry points on the same inputs rounded (to_bf16; both batch a single head's elements
 * into one GEMM), so the saved probabilities and the fp32 gradients must equal
 * attention_fwd_bf16 / attention_bwd_bf16's BIT FOR BIT (the same cuBLASLt plans: every batch
 * element's slice at a multiple of 8 elements, as in the model's shapes), each wanted subset of
 * gradients too; out (fp32 here, a bf16 GEMM output there) within one bf16 rounding. The CPU
 * comparison of the same path: test_mixed_precision. */
enum { RO_DQ = 1, RO_DK = 2, RO_DV = 4 };

static void attention_rounded_once_case(int B, int H, int Tq, int Tk, int Dh, int packed)
{
    const int C = H * Dh;
    const int ldq = packed ? 3 * C : C, ldkv = packed ? 3 * C : 2 * C;
    const size_t nq = (size_t)B * Tq * ldq, nkv = packed ? nq : (size_t)B * Tk * ldkv;
    const size_t n_out = (size_t)B * Tq * C, n_probs = (size_t)B * H * Tq * Tk;
    const int koff = packed ? C : 0, voff = packed ? 2 * C : C;
    TEST_CHECK(gpu->attention_saved_floats(B, H, Tq, Tk, Dh) == n_probs,
               "GEMM attention kernel: the saved buffer should hold the probabilities");
    Pair q = input(nq), kv = packed ? q : input(nkv), dout = input(n_out);
    bf16_t *q16 = gpu->alloc(nq * sizeof(bf16_t));
    bf16_t *kv16 = packed ? q16 : gpu->alloc(nkv * sizeof(bf16_t));
    gpu->to_bf16(q16, q.g, nq);
    if (!packed) gpu->to_bf16(kv16, kv.g, nkv);
    float *out32 = poisoned_gpu_floats(n_out);
    float *saved32 = poisoned_gpu_floats(n_probs), *saved16 = poisoned_gpu_floats(n_probs);
    bf16_t *out16 = gpu->alloc(n_out * sizeof(bf16_t));
    gpu->attention_fwd(out32, saved32, q.g, kv.g + koff, kv.g + voff, B, H, Tq, Tk, Dh, ldq,
                       ldkv);
    gpu->attention_fwd_bf16(out16, saved16, q16, kv16 + koff, kv16 + voff, B, H, Tq, Tk, Dh, ldq,
                            ldkv);
    char what[200];
    snprintf(what, sizeof what, "attention_fwd (bf16 GEMMs) B=%d H=%d Tq=%d Tk=%d Dh=%d packed=%d "
             "saved probabilities vs attention_fwd_bf16 on rounded inputs", B, H, Tq, Tk, Dh,
             packed);
    same_gpu_bits(saved32, saved16, n_probs * sizeof(float), what);
    float *h32 = malloc(n_out * sizeof(float)), *h16 = malloc(n_out * sizeof(float));
    bf16_t *h16raw = malloc(n_out * sizeof(bf16_t));
    gpu->download(h32, out32, n_out * sizeof(float));
    gpu->download(h16raw, out16, n_out * sizeof(bf16_t));
    for (size_t i = 0; i < n_out; i++) h16[i] = bf16_to_float(h16raw[i]);
    snprintf(what, sizeof what, "attention_fwd (bf16 GEMMs) B=%d H=%d Tq=%d Tk=%d Dh=%d out vs "
             "attention_fwd_bf16's", B, H, Tq, Tk, Dh);
    compare_values(h32, h16, n_out, kBf16Ulp, 1e-6, what);
    free(h32); free(h16); free(h16raw);
    const int subsets[] = {RO_DQ | RO_DK | RO_DV, RO_DV, RO_DQ | RO_DK, RO_DK};
    for (size_t s = 0; s < sizeof subsets / sizeof subsets[0]; s++) {
        const int w = subsets[s];
        float *dq_a = poisoned_gpu_floats(nq), *dkv_a = packed ? dq_a : poisoned_gpu_floats(nkv);
        float *dq_b = poisoned_gpu_floats(nq), *dkv_b = packed ? dq_b : poisoned_gpu_floats(nkv);
        gpu->attention_bwd(w & RO_DQ ? dq_a : NULL, w & RO_DK ? dkv_a + koff : NULL,
                           w & RO_DV ? dkv_a + voff : NULL, dout.g, q.g, kv.g + koff,
                           kv.g + voff, out32, saved32, B, H, Tq, Tk, Dh, ldq, ldkv);
        gpu->attention_bwd_bf16(w & RO_DQ ? dq_b : NULL, w & RO_DK ? dkv_b + koff : NULL,
                                w & RO_DV ? dkv_b + voff : NULL, dout.g, q16, kv16 + koff,
                                kv16 + voff, out16, saved16, B, H, Tq, Tk, Dh, ldq, ldkv);
        snprintf(what, sizeof what, "attention_bwd (bf16 GEMMs) B=%d H=%d Tq=%d Tk=%d Dh=%d "
                 "packed=%d (dq %d dk %d dv %d) vs attention_bwd_bf16 on rounded inputs", B, H,
                 Tq, Tk, Dh, packed, !!(w & RO_DQ), !!(w & RO_DK), !!(w & RO_DV));
        same_gpu_bits(dq_a, dq_b, nq * sizeof(float), what);
        if (!packed) same_gpu_bits(dkv_a, dkv_b, nkv * sizeof(float), what);
        gpu->release(dq_a); gpu->release(dq_b);
        if (!packed) { gpu->release(dkv_a); gpu->release(dkv_b); }
    }
    gpu->release(out32); gpu->release(saved32); gpu->release(saved16); gpu->release(out16);
    gpu->release(q16);
    if (!packed) gpu->release(kv16);
    pair_free(&q); pair_free(&dout);
    if (!packed) pair_free(&kv);
}

static int test_attention_rounded_once(void)
{
    gpu_set_math(0, 1);
    gpu_set_attention(ATTN_KERNEL_GEMM);
    /* CASA: one 768-wide head, q and kv: the elements one batched GEMM on both sides */
    attention_rounded_once_case(3, 1, 36, 72, 768, 0);
    attention_rounded_once_case(2, 4, 40, 40, 16, 1);   /* packed qkv, several heads */
    attention_rounded_once_case(2, 2, 24, 56, 32, 0);   /* Tq != Tk, several heads */
    gpu_set_math(0, 0);
    return 0;
}

/* ---- attention_kernel = cudnn: cuDNN's fused attention (cuda/cuda_attention_cudnn.cu) ----
 * The bf16 attention cases above with ATTN_KERNEL_CUDNN, at the tolerances of the bf16 flash
 * cases: out, cuDNN's saved statistics against the row logsumexp reference (check_fused_lse:
 * the flash kernels' meaning and layout, which the fallback relies on), fp32 gradients, and
 * the bf16 gradients against the fp32 ones within the cases' tolerances, not bit for bit (the
 * two calls build different cuDNN graphs, grad16_bits); untouched elements still exactly. The model's shapes (Dh 64
 * and 32, T 144 and 576, packed qkv; cross attention) must really run on cuDNN: no shape
 * refused (gpu_cudnn_attention_graphs). Shapes outside them (Dh 24 and 40, gaps in q rows)
 * may be refused by a cuDNN and then run the flash kernels: only the results are checked. */
static int test_attention_cudnn(void)
{
    if (!gpu_cudnn_attention_available()) {
        printf("skip: attention_kernel = cudnn cases: this build has no cuDNN frontend headers "
               "(scripts/deps.sh)\n");
        return 0;
    }
    gpu_set_attention(ATTN_KERNEL_CUDNN);
    bf16_attention_case(2, 12, 144, 144, 64, 1); /* ViT-B heads, visible tokens */
    bf16_attention_case(1, 4, 576, 576, 64, 1);  /* ViT-B heads, all tokens */
    bf16_attention_case(2, 4, 144, 144, 32, 1);  /* decoder head width */
    bf16_attention_case(1, 4, 576, 576, 32, 1);
    bf16_attention_case(2, 1, 144, 576, 64, 0);  /* cross attention: q and a packed kv */
    g16_rtol = 1e-4 * 2000.0 + kBf16Ulp;   /* grad16_attention_case's tolerances */
    g16_atol = 1e-5 * 2000.0;
    grad16_attention_case(1, 12, 144, 144, 64, 1, G16_Q | G16_K | G16_V);
    grad16_attention_case(1, 4, 576, 576, 32, 1, G16_Q | G16_K | G16_V);
    grad16_attention_case(1, 12, 144, 144, 64, 1, G16_K | G16_V); /* dq to the spare scratch */
    for (int i = 0; i < 3; i++)  /* forward only (inference graphs): the ViT-B and decoder shapes */
        bf16_attention_unsaved_case(&kUnsavedShapes[i], "cudnn kernel");
    int built = 0, refused = 0;
    gpu_cudnn_attention_graphs(&built, &refused);
    printf("cudnn attention: %d graphs built, %d shapes refused at the model's shapes\n", built,
           refused);
    TEST_CHECK(built > 0 && refused == 0, "cuDNN refused %d of the model's attention shapes "
               "(%d graphs built): see the log_warn lines above for cuDNN's reasons", refused,
               built);
    /* odd shapes: cuDNN or the flash fallback, the results must hold either way */
    for (int i = 3; i < UNSAVED_SHAPE_COUNT; i++)
        bf16_attention_unsaved_case(&kUnsavedShapes[i], "cudnn kernel");
    bf16_attention_case(2, 2, 37, 100, 24, 0);
    grad16_attention_case(2, 2, 37, 100, 24, 0, G16_Q | G16_K | G16_V);  /* gaps in q's rows */
    grad16_attention_case(1, 2, 65, 130, 40, 0, G16_Q | G16_V);
    bf16_attention_case(2, 1, 20, 30, 768, 0);   /* CASA head: the GEMM path */
    g16_rtol = g16_atol = 0;
    gpu_set_attention(ATTN_KERNEL_GEMM);
    return 0;
}

int main(void)
{
    /* Device count first: backend_cuda() (rightly) errors out when no device is visible. */
    if (gpu_device_count() == 0) {
        printf("skip: no GPU (built without CUDA, or cudaGetDeviceCount finds no device)\n");
        return 77;
    }
    cpu = backend_cpu();
    gpu = backend_cuda();
    TEST_RUN(test_memory);
    TEST_RUN(test_elementwise);
    TEST_RUN(test_grid_stride);
    TEST_RUN(test_activations);
    TEST_RUN(test_gemm);
    TEST_RUN(test_linear);
    TEST_RUN(test_layernorm);
    TEST_RUN(test_softmax);
    TEST_RUN(test_instnorm);
    TEST_RUN(test_instnorm_lrelu);
    TEST_RUN(test_sliding_window_ops);
    TEST_RUN(test_attention);
    TEST_RUN(test_patches);
    TEST_RUN(test_gather_scatter);
    TEST_RUN(test_mask_tokens);
    TEST_RUN(test_pool_and_layout);
    TEST_RUN(test_l2norm);
    TEST_RUN(test_cosine_loss);
    TEST_RUN(test_soft_ce);
    TEST_RUN(test_reconstruction_loss);
    TEST_RUN(test_dicece);
    TEST_RUN(test_optimizer);
    TEST_RUN(test_conv);
    /* Last, after every established op: a CUDA error in a new kernel ends the process (fatal
     * check), and the cases before it have then already reported. */
    TEST_RUN(test_attention_fused);
    TEST_RUN(test_mixed_precision);
    TEST_RUN(test_bf16_weight_copies);
    TEST_RUN(test_bf16_activations);
    TEST_RUN(test_vector_paths);
    TEST_RUN(test_column_sums);
    TEST_RUN(test_linear_gelu_bwd);
    TEST_RUN(test_mlp_dh1_bf16);
    TEST_RUN(test_instnorm_cudnn);
    TEST_RUN(test_qkv_bf16_gradients);
    TEST_RUN(test_attention_cudnn);
    TEST_RUN(test_attention_rounded_once);
    return test_finish();
}
