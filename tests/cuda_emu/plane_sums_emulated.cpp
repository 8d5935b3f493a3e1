/* The per-plane sums of the CUDA backend run on the host through emu_cuda.h (see
 * test_plane_sums_emulated.sh, which cuts them out of cuda/cuda_norm.cu into
 * plane_sums_kernels.inc). Checked against double-precision references, for planes of one
 * chunk, of several with a ragged last one (V above kPlaneChunk), a batch of one and of three:
 *  - cuda_channel_sums_accumulate (a convolution's bias gradient): target[c] += sum over b, v
 *    of x[b, c, v], onto non-zero starting values, within one float rounding of the reference,
 *    nothing written past C;
 *  - cuda_instnorm_fwd: mean and rstd per plane, y = (x - mean) rstd gamma + beta;
 *  - cuda_instnorm_bwd: dgamma, dbeta accumulated, dx = rstd gamma (dy - mean(dy) - xhat
 *    mean(dy xhat)), with and without gamma, and with NULL dgamma/dbeta/dx;
 *  - the elementwise passes' vector path (aligned, V % 4 == 0) gives their scalar path's bits;
 *  - the fused UNETR passes: cuda_instnorm_lrelu_fwd equals cuda_instnorm_fwd, the add and the
 *    LeakyReLU (ops/cpu_math.h's formula, as the elementwise kernels) bit for bit, with no
 *    addend, one, and one aliasing y; cuda_instnorm_lrelu_bwd gated by the LeakyReLU's output
 *    equals leaky_relu_grad on its input then cuda_instnorm_bwd, bit for bit (dx, dgamma,
 *    dbeta; and without dx), on both the vector and the scalar path.
 * The emulation's block sums add in another order than the GPU's shuffles, so the question
 * here is the indexing, the chunking and the formulas, not bits. */
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "emu_cuda.h"
#include "emu_test_util.h"
#include "ops/cpu_math.h"          /* leaky_relu_value / _grad, MATH_ADD: the kernels use them */
#include "plane_sums_kernels.inc"  /* cut out of cuda/ by the .sh */


static EmuLcg rng{20261126u};
static std::vector<float> randoms(size_t n, double lo, double hi)
{
    std::vector<float> v(n);
    for (float &x : v) x = rng.uniform((float)lo, (float)hi);
    return v;
}
static bool close_to(double got, double want, double rtol, double atol)
{
    return std::fabs(got - want) <= atol + rtol * std::fabs(want);
}
static const float kSentinel = 12345.0f;

static void channel_sums_case(int B, int C, long V)
{
    const std::vector<float> x = randoms((size_t)B * C * V, -1.0, 3.0);
    std::vector<float> target = randoms((size_t)C + 1, -2.0, 2.0);
    target[C] = kSentinel;
    const std::vector<float> start = target;
    cuda_channel_sums_accumulate(target.data(), x.data(), B, C, V);
    for (int c = 0; c < C; c++) {
        double s = 0.0;
        for (int b = 0; b < B; b++)
            for (long v = 0; v < V; v++) s += x[((size_t)b * C + c) * V + v];
        const float want = start[c] + (float)s;
        EMU_CHECK(close_to(target[c], want, 2e-7, 1e-7 * std::fabs(s)),
              "channel sums B %d C %d V %ld: target[%d] = %.9g, expected %.9g", B, C, V, c,
              target[c], want);
    }
    EMU_CHECK(target[C] == kSentinel, "channel sums B %d C %d V %ld wrote past C", B, C, V);
}

static void instnorm_case(int B, int C, long V, bool affine)
{
    const size_t planes = (size_t)B * C, n = planes * V;
    const float eps = 1e-5f;
    const std::vector<float> x = randoms(n, -1.5, 2.5), dy = randoms(n, -1.0, 1.0);
    const std::vector<float> gamma = randoms(C, 0.5, 1.5), beta = randoms(C, -0.5, 0.5);
    std::vector<float> y(n, NAN), mean(planes, NAN), rstd(planes, NAN), dx(n, NAN);
    std::vector<float> dgamma = randoms(C, -1.0, 1.0), dbeta = randoms(C, -1.0, 1.0);
    const std::vector<float> dgamma0 = dgamma, dbeta0 = dbeta;
    const float *g = affine ? gamma.data() : NULL, *bt = affine ? beta.data() : NULL;
    cuda_instnorm_fwd(y.data(), mean.data(), rstd.data(), x.data(), g, bt, B, C, V, eps);
    cuda_instnorm_bwd(dx.data(), affine ? dgamma.data() : NULL, affine ? dbeta.data() : NULL,
                      dy.data(), x.data(), mean.data(), rstd.data(), g, B, C, V);
    /* a call with nothing but dx (no parameter gradients) must give the same dx */
    std::vector<float> dx_only(n, NAN);
    cuda_instnorm_bwd(dx_only.data(), NULL, NULL, dy.data(), x.data(), mean.data(), rstd.data(),
                      g, B, C, V);
    std::vector<double> sdg(C, 0.0), sdb(C, 0.0);
    double worst_y = 0.0, worst_dx = 0.0;
    for (size_t p = 0; p < planes; p++) {
        const int c = (int)(p % C);
        const float *xp = &x[p * V], *dyp = &dy[p * V];
        double s1 = 0.0, s2 = 0.0;
        for (long v = 0; v < V; v++) { s1 += xp[v]; s2 += (double)xp[v] * xp[v]; }
        const double mu = s1 / V, var = s2 / V - mu * mu, r = 1.0 / std::sqrt(var + eps);
        EMU_CHECK(close_to(mean[p], mu, 1e-6, 1e-7), "instnorm B %d C %d V %ld: mean[%zu] = %.9g, "
              "expected %.9g", B, C, V, p, mean[p], mu);
        EMU_CHECK(close_to(rstd[p], r, 1e-6, 0.0), "instnorm B %d C %d V %ld: rstd[%zu] = %.9g, "
              "expected %.9g", B, C, V, p, rstd[p], r);
        const double gc = affine ? gamma[c] : 1.0, bc = affine ? beta[c] : 0.0;
        double mdy = 0.0, mdyx = 0.0;
        for (long v = 0; v < V; v++) {
            const double xh = (xp[v] - mu) * r;
            mdy += dyp[v];
            mdyx += dyp[v] * xh;
        }
        sdb[c] += mdy;
        sdg[c] += mdyx;
        mdy /= V;
        mdyx /= V;
        for (long v = 0; v < V; v++) {
            const double xh = (xp[v] - mu) * r;
            worst_y = std::fmax(worst_y, std::fabs(y[p * V + v] - (xh * gc + bc)));
            const double want_dx = r * gc * (dyp[v] - mdy - xh * mdyx);
            worst_dx = std::fmax(worst_dx, std::fabs(dx[p * V + v] - want_dx));
            EMU_CHECK(dx_only[p * V + v] == dx[p * V + v], "instnorm B %d C %d V %ld: dx without "
                  "parameter gradients differs at %zu", B, C, V, p * V + v);
        }
    }
    EMU_CHECK(worst_y < 2e-5, "instnorm B %d C %d V %ld affine %d: y off by %.3g", B, C, V, affine,
          worst_y);
    EMU_CHECK(worst_dx < 2e-5, "instnorm B %d C %d V %ld affine %d: dx off by %.3g", B, C, V,
          affine, worst_dx);
    for (int c = 0; c < C; c++) {
        const double want_g = affine ? dgamma0[c] + sdg[c] : dgamma0[c];
        const double want_b = affine ? dbeta0[c] + sdb[c] : dbeta0[c];
        const double scale = 1.0 + std::sqrt((double)B * V);
        EMU_CHECK(close_to(dgamma[c], want_g, 1e-6, 1e-6 * scale), "instnorm B %d C %d V %ld: "
              "dgamma[%d] = %.9g, expected %.9g", B, C, V, c, dgamma[c], want_g);
        EMU_CHECK(close_to(dbeta[c], want_b, 1e-6, 1e-6 * scale), "instnorm B %d C %d V %ld: "
              "dbeta[%d] = %.9g, expected %.9g", B, C, V, c, dbeta[c], want_b);
    }
    printf("  instnorm B %d C %d V %ld (%d chunk(s)) affine %d: y within %.2g, dx within %.2g\n",
           B, C, V, plane_chunks(V), affine, worst_y, worst_dx);
}

/* The elementwise passes' vector path (16-byte aligned buffers, V % 4 == 0) against their
 * scalar path (every buffer shifted by one float): y and dx bit for bit, the statistics and the
 * parameter gradients too (their sums do not depend on the path). */
template <typename T>
static T *shifted(std::vector<T> &store, const std::vector<T> &from, int shift)
{
    store.assign(from.size() + 8, T(0));
    T *p = (T *)(((uintptr_t)store.data() + 15) & ~(uintptr_t)15) + shift;
    std::copy(from.begin(), from.end(), p);
    return p;
}

static void instnorm_paths_case(int B, int C, long V)
{
    const size_t planes = (size_t)B * C, n = planes * V;
    const std::vector<float> x = randoms(n, -1.5, 2.5), dy = randoms(n, -1.0, 1.0);
    const std::vector<float> gamma = randoms(C, 0.5, 1.5), beta = randoms(C, -0.5, 0.5);
    std::vector<float> out[2][6];  /* per path: y, dx, mean, rstd, dgamma, dbeta */
    for (int shift = 0; shift < 2; shift++) {
        std::vector<float> sx, sdy, sy, sdx;
        const float *px = shifted(sx, x, shift), *pdy = shifted(sdy, dy, shift);
        float *py = shifted(sy, std::vector<float>(n, NAN), shift);
        float *pdx = shifted(sdx, std::vector<float>(n, NAN), shift);
        std::vector<float> mean(planes, NAN), rstd(planes, NAN), dgamma(C, 0.0f), dbeta(C, 0.0f);
        cuda_instnorm_fwd(py, mean.data(), rstd.data(), px, gamma.data(), beta.data(), B, C, V,
                          1e-5f);
        cuda_instnorm_bwd(pdx, dgamma.data(), dbeta.data(), pdy, px, mean.data(), rstd.data(),
                          gamma.data(), B, C, V);
        out[shift][0].assign(py, py + n);
        out[shift][1].assign(pdx, pdx + n);
        out[shift][2] = mean;
        out[shift][3] = rstd;
        out[shift][4] = dgamma;
        out[shift][5] = dbeta;
    }
    static const char *const names[6] = {"y", "dx", "mean", "rstd", "dgamma", "dbeta"};
    for (int k = 0; k < 6; k++) {
        size_t differ = 0;
        for (size_t i = 0; i < out[0][k].size(); i++)
            differ += std::memcmp(&out[0][k][i], &out[1][k][i], sizeof(float)) != 0;
        EMU_CHECK(differ == 0, "instnorm B %d C %d V %ld: %zu of %zu %s values differ between the "
              "vector and the scalar path", B, C, V, differ, out[0][k].size(), names[k]);
    }
}


/* The fused instance norm + LeakyReLU kernels against the unfused sequence, bit for bit. */
static size_t bits_differ(const float *a, const float *b, size_t n)
{
    size_t d = 0;
    for (size_t i = 0; i < n; i++) d += std::memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return d;
}

static void fused_case(int B, int C, long V, bool affine, int shift)
{
    const size_t planes = (size_t)B * C, n = planes * V;
    const float slope = 0.01f, eps = 1e-5f;
    std::vector<float> x = randoms(n, -1.5, 2.5), add = randoms(n, -1.0, 1.0);
    const std::vector<float> dy = randoms(n, -1.0, 1.0);
    for (size_t i = 0; i < n; i += 61) x[i] = 0.0f;
    const std::vector<float> gamma = randoms(C, 0.5, 1.5), beta = randoms(C, -0.5, 0.5);
    const float *g = affine ? gamma.data() : NULL, *bt = affine ? beta.data() : NULL;
    std::vector<float> sx, sadd, sdy, sy, spre, sref, sgate, sdx, sdxr;
    const float *px = shifted(sx, x, shift), *pdy = shifted(sdy, dy, shift);
    float *padd = shifted(sadd, add, shift);
    float *py = shifted(sy, std::vector<float>(n, NAN), shift);
    float *ppre = shifted(spre, std::vector<float>(n, NAN), shift);
    float *pref = shifted(sref, std::vector<float>(n, NAN), shift);
    float *pgate = shifted(sgate, std::vector<float>(n, NAN), shift);
    float *pdx = shifted(sdx, std::vector<float>(n, NAN), shift);
    float *pdxr = shifted(sdxr, std::vector<float>(n, NAN), shift);
    std::vector<float> mean(planes, NAN), rstd(planes, NAN), mean_r(planes, NAN),
        rstd_r(planes, NAN);
    for (int with_addend = 0; with_addend < 3; with_addend++) {
        /* 0: no addend, 1: an addend, 2: the addend staged in y itself */
        cuda_instnorm_fwd(ppre, mean_r.data(), rstd_r.data(), px, g, bt, B, C, V, eps);
        for (size_t i = 0; i < n; i++) {
            const float v = with_addend ? ppre[i] + padd[i] : ppre[i];
            ppre[i] = v;
            pref[i] = leaky_relu_value(v, slope);
        }
        const float *a = with_addend == 1 ? padd : with_addend == 2 ? py : NULL;
        if (with_addend == 2) std::copy(padd, padd + n, py);
        cuda_instnorm_lrelu_fwd(py, mean.data(), rstd.data(), px, g, bt, a, B, C, V, eps, slope);
        EMU_CHECK(bits_differ(py, pref, n) == 0 && bits_differ(mean.data(), mean_r.data(), planes)
                  == 0 && bits_differ(rstd.data(), rstd_r.data(), planes) == 0,
                  "fused forward B %d C %d V %ld affine %d shift %d addend %d: %zu of %zu y "
                  "values differ from the unfused kernels", B, C, V, affine, shift, with_addend,
                  bits_differ(py, pref, n), n);
        for (size_t i = 0; i < n; i++) pgate[i] = leaky_relu_grad(ppre[i], pdy[i], slope);
        std::vector<float> dg_r = randoms(C, -1.0, 1.0), db_r = randoms(C, -1.0, 1.0);
        std::vector<float> dg = dg_r, db = db_r, dg2 = dg_r, db2 = db_r;
        cuda_instnorm_bwd(pdxr, dg_r.data(), db_r.data(), pgate, px, mean.data(), rstd.data(), g,
                          B, C, V);
        cuda_instnorm_lrelu_bwd(pdx, dg.data(), db.data(), pdy, py, slope, px, mean.data(),
                                rstd.data(), g, B, C, V);
        cuda_instnorm_lrelu_bwd(NULL, dg2.data(), db2.data(), pdy, py, slope, px, mean.data(),
                                rstd.data(), g, B, C, V);
        EMU_CHECK(bits_differ(pdx, pdxr, n) == 0, "fused backward B %d C %d V %ld shift %d "
                  "addend %d: %zu of %zu dx values differ from the unfused kernels", B, C, V,
                  shift, with_addend, bits_differ(pdx, pdxr, n), n);
        EMU_CHECK(bits_differ(dg.data(), dg_r.data(), C) == 0 &&
                      bits_differ(db.data(), db_r.data(), C) == 0 &&
                      bits_differ(dg2.data(), dg_r.data(), C) == 0 &&
                      bits_differ(db2.data(), db_r.data(), C) == 0,
                  "fused backward B %d C %d V %ld shift %d addend %d: dgamma/dbeta differ from "
                  "the unfused kernels (with or without dx)", B, C, V, shift, with_addend);
    }
}

int main()
{
    instnorm_paths_case(2, 3, 1000);
    instnorm_paths_case(1, 2, 2 * kPlaneChunk + 4);
    for (int B : {1, 3})
        for (int C : {1, 5})
            for (long V : {1L, 300L, kPlaneChunk, 2 * kPlaneChunk + 77}) channel_sums_case(B, C, V);
    instnorm_case(1, 3, 1000, true);
    instnorm_case(2, 2, kPlaneChunk + 333, true);
    instnorm_case(3, 2, 2 * kPlaneChunk + 1, false);
    for (int shift : {0, 1}) {
        fused_case(2, 3, 1000, true, shift);
        fused_case(1, 2, kPlaneChunk + 36, false, shift);
    }
    printf("%s: per-plane sums (conv bias gradient, instance norm, fused with LeakyReLU) on the "
           "emulation\n", emu_fails ? "FAIL" : "ok");
    return emu_fails ? 1 : 0;
}
