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
 * Rows 1, 9 and 50 (a partial block of 8 rows). */
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "emu_cuda.h"
#include "emu_test_util.h"
/* widen, narrow_to, as_nv (the script's empty cuda_bf16.h stands in for CUDA's) */
#include "cuda/cuda_bf16.cuh"

/* CUDA's rsqrtf (the GPU's approximation differs in the last bits; the bit comparisons here
 * are between two kernels that both call it) */
static inline float rsqrtf(float v) { return 1.0f / std::sqrt(v); }

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

int main()
{
    for (int dim : {128, 384, 768, 1024, 37, 130, 1027, 1152}) {
        check_case<float>(9, dim, true);
        check_case<__nv_bfloat16>(9, dim, true);
    }
    check_case<float>(50, 768, false);
    check_case<__nv_bfloat16>(50, 384, true);
    check_case<float>(1, 640, true);
    printf("%s: LayerNorm forward on the emulation\n", emu_fails ? "FAIL" : "ok");
    return emu_fails ? 1 : 0;
}
