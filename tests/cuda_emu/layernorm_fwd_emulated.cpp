/* LayerNorm forward of the CUDA backend run on the host through emu_cuda.h (see
 * test_layernorm_fwd_emulated.sh, which cuts it out of cuda/ into layernorm_fwd.inc).
 *
 * For widths the vector kernel takes (128 * kVec, kVec 1..8: 128, 384, 768, 1024) and widths it
 * does not (37, 130, 1027 with a tail past the last whole 4-element chunk; 1152, above its
 * limit), fp32 and bf16 outputs, with and without gamma and beta:
 *  - y, mean and rstd against a double-precision reference (mean within 1e-6 of the row's
 *    spread, rstd within 1e-5 relative, y within 2e-5 for fp32 and one bf16 unit for bf16);
 *  - the same rows through the scalar kernel (buffers shifted by one float, so the launcher's
 *    alignment check sends them there) give the vector kernel's bits exactly: y, mean, rstd;
 *  - nothing is written past the last row.
 * Rows 1, 9 and 50 (a partial block of 8 rows).
 * The add of add_layernorm_fwd (bf16_branch_out: a bf16 branch added to x in the LayerNorm's
 * pass), at the same widths, aligned (vector kernel where the width allows) and shifted
 * (scalar kernel), also with only the sum or only the branch misaligned, without gamma and
 * beta, and 50 rows: sum is x + the widened branch bit for bit, and y, mean and rstd are the
 * plain LayerNorm's bits on that sum (the op's contract), with nothing written past the last
 * row. Built with -fsanitize=alignment: a 16-byte access through a misaligned pointer (a
 * launcher that sent one to the vector kernel) stops the test. */
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "emu_cuda.h"
#include "emu_test_util.h"
extern "C" {
#include "ops/backend.h" /* DType */
}
/* widen, narrow_to, as_nv (the script's empty cuda_bf16.h stands in for CUDA's) */
#include "cuda/cuda_bf16.cuh"

/* CUDA's rsqrtf (the GPU's approximation differs in the last bits; the bit comparisons here
 * are between two kernels that both call it) */
static inline float rsqrtf(float v) { return 1.0f / std::sqrt(v); }

/* src/ops/backend.c's check, as the CUDA backend calls it: fatal on an overlap. */
extern "C" void backend_check_add_layernorm(const char *op, const float *sum, const float *x,
                                            const bf16_t *branch, size_t n)
{
    const char *s = (const char *)sum, *a = (const char *)x, *b = (const char *)branch;
    const size_t fb = n * sizeof(float), bb = n * sizeof(bf16_t);
    if (n && ((s < a + fb && a < s + fb) || (s < b + bb && b < s + fb)))
        alice_fatal_at(__FILE__, __LINE__, "%s: the sum overlaps x or the branch", op);
}

#include "layernorm_fwd.inc" /* cut out of cuda/cuda_kernels.cuh and cuda/cuda_norm.cu */


static EmuLcg rng{20261126u};

enum { kGuard = 8 }; /* elements past the end of every output, checked untouched */
static const float kSentinel = 12345.0f;

static float as_float(float v) { return v; }
static float as_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> static bool same_bits(T a, T b) { return std::memcmp(&a, &b, sizeof a) == 0; }

template <typename T> static void fill_sentinel(std::vector<T> &v)
{
    for (T &e : v) e = narrow_to<T>(kSentinel);
}

/* One launch through the launcher, its buffers shifted by `shift` floats (the data copied to
 * the shifted place): shift 0 keeps 16-byte alignment, shift 1 breaks it. */
template <typename T> struct LnRun {
    std::vector<T> y;
    std::vector<float> mean, rstd;
};

template <typename T>
static LnRun<T> run_ln(const std::vector<float> &x, const std::vector<float> &gamma,
                       const std::vector<float> &beta, bool affine, int rows, int dim, int shift)
{
    const size_t n = (size_t)rows * dim;
    /* 64 extra floats of room: shifts stay inside the buffers; alignas via over-allocation */
    std::vector<float> xb(n + 64), gb(dim + 64), bb(dim + 64);
    float *xa = (float *)(((uintptr_t)xb.data() + 15) & ~(uintptr_t)15) + shift;
    float *ga = (float *)(((uintptr_t)gb.data() + 15) & ~(uintptr_t)15) + shift;
    float *ba = (float *)(((uintptr_t)bb.data() + 15) & ~(uintptr_t)15) + shift;
    std::memcpy(xa, x.data(), n * sizeof(float));
    std::memcpy(ga, gamma.data(), dim * sizeof(float));
    std::memcpy(ba, beta.data(), dim * sizeof(float));
    std::vector<T> yb(n + 64 + kGuard);
    fill_sentinel(yb);
    T *ya = (T *)(((uintptr_t)yb.data() + 15) & ~(uintptr_t)15) + shift;
    LnRun<T> r;
    r.mean.assign(rows + kGuard, kSentinel);
    r.rstd.assign(rows + kGuard, kSentinel);
    launch_layernorm_fwd(ya, r.mean.data(), r.rstd.data(), xa, affine ? ga : NULL,
                         affine ? ba : NULL, rows, dim, 1e-5f);
    r.y.assign(ya, ya + n + kGuard);
    return r;
}

template <typename T> static void check_case(int rows, int dim, bool affine)
{
    const bool bf16 = sizeof(T) == 2;
    const size_t n = (size_t)rows * dim;
    std::vector<float> x(n), gamma(dim), beta(dim);
    for (size_t i = 0; i < n; i++) x[i] = rng.uniform(-1.5f, 2.5f);
    for (int d = 0; d < dim; d++) {
        gamma[d] = rng.uniform(0.5f, 1.5f);
        beta[d] = rng.uniform(-0.5f, 0.5f);
    }
    const LnRun<T> a = run_ln<T>(x, gamma, beta, affine, rows, dim, 0);
    const LnRun<T> s = run_ln<T>(x, gamma, beta, affine, rows, dim, 1);
    const bool vector_path = dim % 128 == 0 && dim / 128 <= kLnVecMax;
    double worst_y = 0.0;
    for (int r = 0; r < rows; r++) {
        double s1 = 0.0, s2 = 0.0;
        for (int d = 0; d < dim; d++) s1 += x[(size_t)r * dim + d];
        const double mu = s1 / dim;
        for (int d = 0; d < dim; d++) {
            const double t = x[(size_t)r * dim + d] - mu;
            s2 += t * t;
        }
        const double rstd = 1.0 / std::sqrt(s2 / dim + 1e-5);
        EMU_CHECK(std::fabs(a.mean[r] - mu) <= 1e-6 * (1.0 + std::sqrt(s2 / dim)),
                  "rows %d dim %d: mean[%d] = %.9g, expected %.9g", rows, dim, r, a.mean[r], mu);
        EMU_CHECK(std::fabs(a.rstd[r] - rstd) <= 1e-5 * rstd, "rows %d dim %d: rstd[%d] = %.9g, "
              "expected %.9g", rows, dim, r, a.rstd[r], rstd);
        EMU_CHECK(same_bits(a.mean[r], s.mean[r]) && same_bits(a.rstd[r], s.rstd[r]),
              "rows %d dim %d: row %d's statistics differ between the aligned and the shifted "
              "launch", rows, dim, r);
        for (int d = 0; d < dim; d++) {
            const size_t i = (size_t)r * dim + d;
            const double want = (x[i] - mu) * rstd * (affine ? gamma[d] : 1.0) +
                                (affine ? beta[d] : 0.0);
            const double got = as_float(a.y[i]);
            const double tol = bf16 ? std::fabs(want) * (1.0 / 256) + 1e-5 : 2e-5;
            worst_y = std::fmax(worst_y, std::fabs(got - want));
            EMU_CHECK(std::fabs(got - want) <= tol, "rows %d dim %d %s: y[%zu] = %.9g, expected "
                  "%.9g", rows, dim, bf16 ? "bf16" : "fp32", i, got, want);
            EMU_CHECK(same_bits(a.y[i], s.y[i]), "rows %d dim %d %s: y[%zu] differs between the "
                  "aligned (%s kernel) and the shifted (scalar kernel) launch", rows, dim,
                  bf16 ? "bf16" : "fp32", i, vector_path ? "vector" : "scalar");
        }
    }
    for (int g = 0; g < kGuard; g++) {
        const T guard = narrow_to<T>(kSentinel);
        EMU_CHECK(same_bits(a.y[n + g], guard) && same_bits(s.y[n + g], guard),
              "rows %d dim %d: y written past the last row", rows, dim);
        EMU_CHECK(a.mean[rows + g] == kSentinel && a.rstd[rows + g] == kSentinel,
              "rows %d dim %d: statistics written past the last row", rows, dim);
    }
    printf("  rows %2d dim %4d %s %s (%s kernel when aligned): y within %.2g of the reference, "
           "the scalar kernel's bits\n", rows, dim, bf16 ? "bf16" : "fp32",
           affine ? "affine" : "plain ", vector_path ? "vector" : "scalar", worst_y);
}

/* add_layernorm_fwd's entry (cuda_add_layernorm_fwd) and its path through the launcher: sum
 * and y from one launch with the branch. shift_x shifts x and y, shift_sum the sum and
 * shift_branch the branch (floats, bf16 elements): with x aligned, a shifted sum or branch must
 * send the launch to the scalar kernel too (the build's -fsanitize=alignment stops the test at
 * a 16-byte access of a misaligned pointer). */
template <typename T>
static void check_add_case(int rows, int dim, int shift_x, int shift_sum, int shift_branch,
                           bool affine)
{
    const size_t n = (size_t)rows * dim;
    std::vector<float> x(n), gamma(dim), beta(dim);
    std::vector<__nv_bfloat16> branch(n);
    for (size_t i = 0; i < n; i++) {
        x[i] = rng.uniform(-1.5f, 2.5f);
        branch[i] = narrow_to<__nv_bfloat16>(rng.uniform(-2.0f, 2.0f));
    }
    for (int d = 0; d < dim; d++) {
        gamma[d] = rng.uniform(0.5f, 1.5f);
        beta[d] = rng.uniform(-0.5f, 0.5f);
    }
    std::vector<float> xb(n + 64), sb(n + 64 + kGuard, kSentinel);
    std::vector<__nv_bfloat16> bb(n + 64);
    std::vector<T> yb(n + 64 + kGuard);
    fill_sentinel(yb);
    float *xa = (float *)(((uintptr_t)xb.data() + 15) & ~(uintptr_t)15) + shift_x;
    float *sa = (float *)(((uintptr_t)sb.data() + 15) & ~(uintptr_t)15) + shift_sum;
    __nv_bfloat16 *ba =
        (__nv_bfloat16 *)(((uintptr_t)bb.data() + 15) & ~(uintptr_t)15) + shift_branch;
    T *ya = (T *)(((uintptr_t)yb.data() + 15) & ~(uintptr_t)15) + shift_x;
    std::memcpy(xa, x.data(), n * sizeof(float));
    std::memcpy(ba, branch.data(), n * sizeof(__nv_bfloat16));
    std::vector<float> mean(rows + kGuard, kSentinel), rstd(rows + kGuard, kSentinel);
    cuda_add_layernorm_fwd(sa, ya, sizeof(T) == 2 ? DTYPE_BF16 : DTYPE_F32, mean.data(),
                           rstd.data(), xa, reinterpret_cast<const bf16_t *>(ba),
                           affine ? gamma.data() : NULL, affine ? beta.data() : NULL, rows, dim,
                           1e-5f);
    /* the reference: the add on the host, then the plain launch on the sum */
    std::vector<float> want_sum(n);
    for (size_t i = 0; i < n; i++) want_sum[i] = x[i] + __bfloat162float(branch[i]);
    const LnRun<T> plain = run_ln<T>(want_sum, gamma, beta, affine, rows, dim, 0);
    int bad_sum = 0, bad_y = 0, bad_stats = 0;
    for (size_t i = 0; i < n; i++) {
        bad_sum += !same_bits(sa[i], want_sum[i]);
        bad_y += !same_bits(ya[i], plain.y[i]);
    }
    for (int r = 0; r < rows; r++)
        bad_stats += !same_bits(mean[r], plain.mean[r]) || !same_bits(rstd[r], plain.rstd[r]);
    EMU_CHECK(bad_sum == 0 && bad_y == 0 && bad_stats == 0, "add rows %d dim %d shifts %d/%d/%d: "
              "%d sum, %d y and %d rows' statistics differ from the add followed by the plain "
              "LayerNorm", rows, dim, shift_x, shift_sum, shift_branch, bad_sum, bad_y,
              bad_stats);
    for (int g = 0; g < kGuard; g++) {
        EMU_CHECK(sa[n + g] == kSentinel && same_bits(ya[n + g], narrow_to<T>(kSentinel)) &&
                      mean[rows + g] == kSentinel && rstd[rows + g] == kSentinel,
                  "add rows %d dim %d: written past the last row", rows, dim);
    }
    const bool aligned = shift_x == 0 && shift_sum == 0 && shift_branch % 8 == 0;
    const bool vector_path = aligned && dim % 128 == 0 && dim / 128 <= kLnVecMax;
    printf("  add rows %2d dim %4d %s %s shifts x %d sum %d branch %d (%s kernel): sum, y and "
           "statistics are the add's and the plain LayerNorm's bits\n", rows, dim,
           sizeof(T) == 2 ? "bf16" : "fp32", affine ? "affine" : "plain ", shift_x, shift_sum,
           shift_branch, vector_path ? "vector" : "scalar");
}

int main()
{
    for (int dim : {128, 384, 768, 1024, 37, 130, 1027, 1152}) {
        check_case<float>(9, dim, true);
        check_case<__nv_bfloat16>(9, dim, true);
    }
    check_case<float>(50, 768, false);
    check_case<__nv_bfloat16>(50, 384, true);
    check_case<float>(1, 640, true);
    for (int dim : {384, 768, 130, 1027})
        for (int shift : {0, 1}) {
            check_add_case<__nv_bfloat16>(9, dim, shift, shift, shift, true);
            check_add_case<float>(9, dim, shift, shift, shift, true);
        }
    /* x aligned, the sum or the branch not; no gamma and beta; a partial block of rows */
    check_add_case<__nv_bfloat16>(9, 768, 0, 1, 0, true);
    check_add_case<__nv_bfloat16>(9, 768, 0, 0, 1, true);
    check_add_case<float>(9, 384, 0, 0, 4, true);
    check_add_case<__nv_bfloat16>(50, 768, 0, 0, 0, false);
    check_add_case<float>(50, 130, 1, 1, 1, false);
    printf("%s: LayerNorm forward on the emulation\n", emu_fails ? "FAIL" : "ok");
    return emu_fails ? 1 : 0;
}
