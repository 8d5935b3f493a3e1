/* The LayerNorm input-gradient kernel of the CUDA backend (cuda/cuda_norm.cu
 * layernorm_dx_kernel and its launch, one warp per row) runs WITHOUT a GPU:
 * test_layernorm_dx_emulated.sh cuts both out of the source, rewrites the <<<...>>> launch into
 * emu_launch, and this file runs them through emu_cuda.h (a std::thread per CUDA thread, warp
 * sums through per-warp barriers). Checked, for rows that do not fill the last block, widths
 * below, at and above the warp size and not multiples of it, with and without gamma:
 *  - dx_residual = NULL: dx within 1e-5 * scale + 1e-6 of a double reference
 *    (rstd (g - mean(g) - xhat mean(g xhat)), g = dy gamma; scale the sum of the magnitudes of
 *    those terms: fp32 sums over 32 lanes and dim / 32 steps);
 *  - with dx_residual: dx equals, bit for bit, the residual plus the kernel's own dx without it
 *    (the contract: the fused store is the unfused dx followed by the add op);
 *  - dx is poisoned (NaN) first and has a poisoned tail past rows x dim: every element written,
 *    nothing past the end. */
#include "emu_cuda.h"

/* CUDA's round-to-nearest add, never contracted into an FMA (the host build has no FMA). */
inline float __fadd_rn(float a, float b) { return a + b; }

#include "layernorm_dx.inc"  /* cut out of cuda/cuda_norm.cu by the .sh */

static int fails = 0;
static void check(bool ok, const char *what, int rows, int dim, size_t i, double got, double want)
{
    if (ok) return;
    if (++fails <= 20)
        fprintf(stderr, "FAIL %s rows %d dim %d [%zu]: got %.9g, expected %.9g\n", what, rows, dim,
                i, got, want);
}

static uint64_t lcg_state = 12345;
static float uniform(float lo, float hi)
{
    lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (hi - lo) * (float)((lcg_state >> 40) * (1.0 / 16777216.0));
}

enum { kTail = 40 };

static void run_case(int rows, int dim, bool with_gamma)
{
    const size_t n = (size_t)rows * dim;
    std::vector<float> x(n), dy(n), res(n), gamma(dim), mean(rows), rstd(rows);
    for (auto &v : x) v = uniform(-2, 3);
    for (auto &v : dy) v = uniform(-1, 1);
    for (auto &v : res) v = uniform(-4, 4);
    for (auto &v : gamma) v = uniform(-1.5f, 1.5f);
    for (int r = 0; r < rows; r++) {
        double s = 0, q = 0;
        for (int d = 0; d < dim; d++) s += x[(size_t)r * dim + d];
        const double mu = s / dim;
        for (int d = 0; d < dim; d++) q += (x[(size_t)r * dim + d] - mu) * (x[(size_t)r * dim + d] - mu);
        mean[r] = (float)mu;
        rstd[r] = (float)(1.0 / std::sqrt(q / dim + 1e-5));
    }
    const float *g = with_gamma ? gamma.data() : nullptr;
    std::vector<float> plain(n + kTail, NAN), fused(n + kTail, NAN);
    launch_layernorm_dx(plain.data(), nullptr, dy.data(), x.data(), mean.data(), rstd.data(), g,
                        rows, dim);
    launch_layernorm_dx(fused.data(), res.data(), dy.data(), x.data(), mean.data(), rstd.data(),
                        g, rows, dim);
    for (int r = 0; r < rows; r++) {
        double sg = 0, sgx = 0, ag = 0, agx = 0;
        for (int d = 0; d < dim; d++) {
            const size_t i = (size_t)r * dim + d;
            const double gg = (double)dy[i] * (g ? g[d] : 1.0), xh = (x[i] - (double)mean[r]) * rstd[r];
            sg += gg, sgx += gg * xh, ag += std::fabs(gg), agx += std::fabs(gg * xh);
        }
        for (int d = 0; d < dim; d++) {
            const size_t i = (size_t)r * dim + d;
            const double gg = (double)dy[i] * (g ? g[d] : 1.0), xh = (x[i] - (double)mean[r]) * rstd[r];
            const double want = rstd[r] * (gg - sg / dim - xh * sgx / dim);
            const double scale = rstd[r] * (std::fabs(gg) + ag / dim + std::fabs(xh) * agx / dim);
            check(std::fabs(plain[i] - want) <= 1e-5 * scale + 1e-6, "dx vs double", rows, dim,
                  i, plain[i], want);
            const float expect = res[i] + plain[i];
            check(std::memcmp(&fused[i], &expect, sizeof expect) == 0,
                  "fused dx vs residual + dx (bits)", rows, dim, i, fused[i], expect);
        }
    }
    for (size_t i = n; i < n + kTail; i++) {
        check(std::isnan(plain[i]), "written past the end (no residual)", rows, dim, i, plain[i], NAN);
        check(std::isnan(fused[i]), "written past the end (residual)", rows, dim, i, fused[i], NAN);
    }
}

int main()
{
    const int shapes[][2] = {{1, 1}, {3, 31}, {9, 32}, {19, 70}, {17, 768}};
    for (const auto &s : shapes)
        for (int with_gamma = 0; with_gamma < 2; with_gamma++) run_case(s[0], s[1], with_gamma != 0);
    if (fails) {
        fprintf(stderr, "%d failures\n", fails);
        return 1;
    }
    printf("layernorm dx kernel (emulated): %zu shapes, with and without gamma and residual: ok\n",
           sizeof shapes / sizeof shapes[0]);
    return 0;
}
