/* The reconstruction loss's row kernels of the CUDA backend (cuda/cuda_losses.cu) run WITHOUT a
 * GPU: test_recon_rows_emulated.sh cuts them and their launch functions out of the source,
 * rewrites the <<<...>>> launches into emu_launch, and this file runs them through emu_cuda.h
 * (a std::thread per CUDA thread, block barriers, warp sums). Checked:
 *  - normalize_rows (cuda_normalize_rows: the held kernel, vector and scalar; and the streamed
 *    kernel, both through the backend's dispatch past the held path's largest row and called
 *    directly on every shape) against a double reference, (x - mean) / sqrt(var + eps), within
 *    the float formula's own error (1e-6 relative, plus 2^-23 of the mean times 1/std: the
 *    rounding of the mean to float that the CPU backend's formula has too); rows of 1, 3, 31,
 *    33, 512, 1027 (not a multiple of 4), 4096 (16^3 patches), 16384 (the held path's largest:
 *    1024 threads) and 16388 (the streamed fallback) values; inputs aligned and shifted by one
 *    element (the scalar path); a mean far from 0 (100 + uniform) and a constant row (0 out);
 *  - masked_mse_bwd (cuda_masked_mse_bwd: the coefficient kernel and the row kernel) bit for
 *    bit against the CPU backend's formula coef * mask[r] * (pred - target) (cpu_masked_mse_bwd,
 *    no FMA on either side), and within 3 float roundings of the double
 *    2 scale mask (pred - target) / (dim sum(mask)); rows with mask 0 exactly +0 although their
 *    pred holds NaN and inf; nothing masked: all +0;
 *  - outputs poisoned (NaN) first, with a poisoned tail past rows x dim: every element written,
 *    nothing past the end. */
#include "emu_cuda.h"
#include "emu_test_util.h"
extern "C" {
#include "ops/cpu_math.h"  /* norm_pix_var_divisor, which the cut kernels call */
}

#include "recon_rows.inc"  /* cut out of cuda/ by the .sh */

static int fails = 0;
static void check(bool ok, const char *what, int rows, int dim, int shift, size_t i, double got,
                  double want)
{
    if (ok) return;
    if (++fails <= 20)
        fprintf(stderr, "FAIL %s rows %d dim %d shift %d [%zu]: got %.9g, expected %.9g\n", what,
                rows, dim, shift, i, got, want);
}

static EmuLcg lcg = {2024};
enum { kTail = 40 };
constexpr double kFloatEps = 1.0 / 16777216.0; /* 2^-24, float's unit roundoff */

/* n floats at a 64-byte boundary plus shift elements, then kTail poisoned (NaN) ones. */
struct Buffer {
    std::vector<float> raw;
    float *p;
    Buffer(size_t n, int shift) : raw(n + kTail + 16 + (size_t)shift, NAN)
    {
        const uintptr_t a = ((uintptr_t)raw.data() + 63) & ~(uintptr_t)63;
        p = (float *)a + shift;
    }
};

/* normalize_rows through fn (the backend's dispatch or the streamed kernel) on rows x dim values;
 * offset: the inputs' centre (a mean far from 0 tests the double accumulation). */
static void check_normalize(void (*fn)(float *, const float *, int, int, float), const char *what,
                            int rows, int dim, int shift, float offset)
{
    const size_t n = (size_t)rows * dim;
    const float eps = 1e-6f;
    Buffer x(n, shift), y(n, shift);
    for (size_t i = 0; i < n; i++) x.p[i] = offset + lcg.uniform(-1.0f, 1.0f);
    /* the last row constant: variance 0, every output 0 */
    for (int d = 0; d < dim; d++) x.p[(size_t)(rows - 1) * dim + d] = offset + 0.25f;
    fn(y.p, x.p, rows, dim, eps);
    for (int r = 0; r < rows; r++) {
        const float *xr = x.p + (size_t)r * dim;
        double s = 0.0, q = 0.0;
        for (int d = 0; d < dim; d++) s += xr[d];
        const double mean = s / dim;
        for (int d = 0; d < dim; d++) q += (xr[d] - mean) * (xr[d] - mean);
        /* the unbiased variance (MAE's torch var()), written out here */
        const double inv_std = 1.0 / std::sqrt(q / (dim > 1 ? dim - 1 : 1) + eps);
        for (int d = 0; d < dim; d++) {
            const size_t i = (size_t)r * dim + d;
            const double want = (xr[d] - mean) * inv_std;
            const double tol = 1e-6 * std::fabs(want) + 2.0 * kFloatEps * std::fabs(mean) * inv_std;
            check(std::fabs(y.p[i] - want) <= tol, what, rows, dim, shift, i, y.p[i], want);
        }
    }
    for (size_t i = n; i < n + kTail; i++)
        check(std::isnan(y.p[i]), "normalize_rows wrote past the end", rows, dim, shift, i,
              y.p[i], NAN);
}

/* masked_mse_bwd on rows x dim with mask[r] in {0, 1, 0.5} (or all 0: nothing_masked). */
static void check_masked_mse_bwd(int rows, int dim, int shift, bool nothing_masked)
{
    const size_t n = (size_t)rows * dim;
    const float scale = 1.5f;
    Buffer pred(n, shift), target(n, 0), dpred(n, shift), mask((size_t)rows, 0);
    double msum = 0.0;
    for (int r = 0; r < rows; r++) {
        mask.p[r] = nothing_masked ? 0.0f : (r % 4 == 0 ? 0.0f : (r % 4 == 3 ? 0.5f : 1.0f));
        msum += mask.p[r];
    }
    for (size_t i = 0; i < n; i++) {
        const bool visible = mask.p[i / dim] == 0.0f;
        /* a visible row's prediction may hold anything: its gradient is 0 all the same */
        pred.p[i] = visible ? (i % 2 ? NAN : INFINITY) : lcg.uniform(-2.0f, 2.0f);
        target.p[i] = lcg.uniform(-2.0f, 2.0f);
    }
    cuda_masked_mse_bwd(dpred.p, pred.p, target.p, mask.p, rows, dim, scale);
    const float coef = msum == 0.0 ? 0.0f : (float)(2.0 * scale / (dim * msum));
    for (size_t i = 0; i < n; i++) {
        const float m = mask.p[i / dim];
        if (m == 0.0f) {
            const float zero = 0.0f;
            check(std::memcmp(&dpred.p[i], &zero, sizeof zero) == 0,
                  "masked_mse_bwd of a visible row: not +0", rows, dim, shift, i, dpred.p[i], 0.0);
            continue;
        }
        const float cpu = coef * m * (pred.p[i] - target.p[i]);
        check(std::memcmp(&dpred.p[i], &cpu, sizeof cpu) == 0,
              "masked_mse_bwd vs the CPU formula (bits)", rows, dim, shift, i, dpred.p[i], cpu);
        const double want = 2.0 * scale * m * ((double)pred.p[i] - target.p[i]) / (dim * msum);
        check(std::fabs(dpred.p[i] - want) <= 3.0 * kFloatEps * std::fabs(want),
              "masked_mse_bwd vs double", rows, dim, shift, i, dpred.p[i], want);
    }
    for (size_t i = n; i < n + kTail; i++)
        check(std::isnan(dpred.p[i]), "masked_mse_bwd wrote past the end", rows, dim, shift, i,
              dpred.p[i], NAN);
}

int main()
{
    /* {rows, dim}: the held path's vector and scalar layouts, 1024 threads at 16384, the
     * streamed fallback past it (16388 = 4 * 4097) */
    const int shapes[][2] = {{3, 1},    {4, 3},   {3, 31},    {5, 33},    {4, 512},
                             {3, 1027}, {4, 4096}, {2, 16384}, {2, 16388}};
    int cases = 0;
    for (const auto &s : shapes)
        for (int shift = 0; shift < 2; shift++) {
            for (const float offset : {0.5f, 100.0f}) {
                check_normalize(cuda_normalize_rows, "normalize_rows", s[0], s[1], shift, offset);
                check_normalize(cuda_normalize_rows_streamed, "normalize_rows streamed", s[0],
                                s[1], shift, offset);
                cases += 2;
            }
        }
    const int mse_shapes[][2] = {{9, 1}, {8, 5}, {13, 37}, {10, 512}, {5, 4096}, {6, 1027}};
    for (const auto &s : mse_shapes)
        for (int shift = 0; shift < 2; shift++) {
            check_masked_mse_bwd(s[0], s[1], shift, false);
            check_masked_mse_bwd(s[0], s[1], shift, true);
            cases += 2;
        }
    return emu_finish(fails, "recon row kernels (emulated): %d cases of normalize_rows and "
                             "masked_mse_bwd: ok", cases);
}
