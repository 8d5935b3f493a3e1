/* The DiceCE forward of the CUDA backend run on the host through emu_cuda.h (see
 * test_dicece_emulated.sh, which cuts cuda_dicece_fwd, its kernels and the reductions it uses
 * out of cuda/ into dicece_kernels.inc).
 *
 * Checked against a double-precision reference (softmax over K per voxel, mean CE over the B*V
 * voxels with the labels outside 0..K-1 left out, MONAI's Dice with smooth 1e-5, the count of
 * those labels), for one and several Dice chunks (V above kDiceChunk, a ragged last chunk), a
 * batch of one and of two, batches with labels -1 and K, and more Dice segments (B*K) than the
 * grid's y limit (lowered to 3, see EMU_MAX_GRID_YZ):
 *  - the probabilities within 1e-6 relative, ce and dice within 1e-5 (the emulation's warp
 *    sums add in another order than the GPU's shuffles, so bits are not the question here;
 *    test_backend_parity compares the GPU with the CPU backend);
 *  - values[SEG_LOSS_BAD_LABELS] is the exact count, values written and nothing past them;
 *  - a NaN logit at a voxel with a valid label makes ce NaN, as on the CPU backend (the sum
 *    once dropped every NaN term, hiding a divergence in the logged ce);
 *  - the op leaves the values where it was told (backend memory, read after it: no host
 *    read-back inside, which the cut would not compile with: alice_die is not declared). */
#include <cmath>
#include <cstdio>
#include <vector>

#include "emu_cuda.h"

extern "C" {
#include "ops/backend.h"   /* SegLossValue */
}

using std::isnan;   /* device code calls it unqualified (CUDA's math API) */
/* The grid's y limit, in the kernels' cap (the .sh replaces kMaxPlaneBlocksY's 65535 by it)
 * and in the emulation (main): 3, so that B*K segments above it stride as above 65535. */
#define EMU_MAX_GRID_YZ 3u
#include "dicece_kernels.inc"  /* cut out of cuda/ by the .sh */

static int fails = 0;
/* Counts every failure, prints the first 20. */
#define CHECK(c, ...) do { if (!(c)) { if (fails++ < 20) { printf("FAIL: "); printf(__VA_ARGS__); \
    printf("\n"); } } } while (0)

static uint64_t rs = 88172645463325252ull;
static double urand() { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return (rs >> 11) * (1.0 / 9007199254740992.0); }

static bool close_to(double got, double want, double rtol, double atol)
{
    return std::fabs(got - want) <= atol + rtol * std::fabs(want);
}

static void check_case(int B, int K, long V, int bad_every)
{
    const size_t n = (size_t)B * K * V, nv = (size_t)B * V;
    std::vector<float> logits(n), probs(n, NAN);
    std::vector<int> labels(nv);
    for (size_t i = 0; i < n; i++) logits[i] = (float)(urand() * 6.0 - 3.0);
    long bad = 0;
    for (size_t i = 0; i < nv; i++) {
        labels[i] = (int)(urand() * K);
        if (bad_every && i % (size_t)bad_every == 3) {
            labels[i] = (i / (size_t)bad_every) % 2 ? K : -1;
            bad++;
        }
    }
    /* the reference, in double */
    std::vector<double> p(n), inter((size_t)B * K), psum((size_t)B * K), ysum((size_t)B * K);
    double ce = 0.0;
    for (int b = 0; b < B; b++)
        for (long v = 0; v < V; v++) {
            double mx = -INFINITY, sum = 0.0;
            for (int k = 0; k < K; k++) mx = std::fmax(mx, logits[((size_t)b * K + k) * V + v]);
            for (int k = 0; k < K; k++) sum += std::exp(logits[((size_t)b * K + k) * V + v] - mx);
            const int y = labels[(size_t)b * V + v];
            for (int k = 0; k < K; k++) {
                const size_t i = ((size_t)b * K + k) * V + v;
                p[i] = std::exp(logits[i] - mx) / sum;
                const int hit = y == k;
                inter[b * K + k] += p[i] * hit, psum[b * K + k] += p[i], ysum[b * K + k] += hit;
                if (hit) ce -= std::log(p[i]);
            }
        }
    ce /= (double)B * V;
    double dice = 0.0;
    for (int i = 0; i < B * K; i++) dice += (2 * inter[i] + 1e-5) / (psum[i] + ysum[i] + 1e-5);
    dice = 1.0 - dice / (B * K);

    float values[SEG_LOSS_VALUE_COUNT + 1];
    for (float &v : values) v = NAN;
    values[SEG_LOSS_VALUE_COUNT] = 12345.0f;
    cuda_dicece_fwd(probs.data(), values, logits.data(), labels.data(), B, K, V);
    size_t worst = 0;
    double worst_err = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double err = std::fabs(probs[i] - p[i]) / std::fmax(p[i], 1e-30);
        if (!(err <= worst_err)) worst_err = err, worst = i;
    }
    CHECK(worst_err <= 1e-6, "B %d K %d V %ld: probs[%zu] %.9g, reference %.9g", B, K, V, worst,
          probs[worst], p[worst]);
    CHECK(close_to(values[SEG_LOSS_CE], ce, 1e-5, 1e-7), "B %d K %d V %ld: ce %.9g, reference %.9g",
          B, K, V, values[SEG_LOSS_CE], ce);
    CHECK(close_to(values[SEG_LOSS_DICE], dice, 1e-5, 1e-7),
          "B %d K %d V %ld: dice %.9g, reference %.9g", B, K, V, values[SEG_LOSS_DICE], dice);
    CHECK(values[SEG_LOSS_BAD_LABELS] == (float)bad, "B %d K %d V %ld: %g labels counted outside "
          "0..%d, expected %ld", B, K, V, values[SEG_LOSS_BAD_LABELS], K - 1, bad);
    CHECK(values[SEG_LOSS_VALUE_COUNT] == 12345.0f, "B %d K %d V %ld: wrote past the values", B, K, V);
    printf("  B %d K %d V %ld (%ld Dice chunk(s)), %ld bad labels: ce %.7f (ref %.7f), dice %.7f "
           "(ref %.7f), probs worst relative %.1e\n", B, K, V, (V + kDiceChunk - 1) / kDiceChunk,
           bad, values[SEG_LOSS_CE], ce, values[SEG_LOSS_DICE], dice, worst_err);
}

/* A NaN logit at a voxel with a valid label: its CE term is NaN and so is the mean, as on the
 * CPU backend (cpu_dicece_fwd), so the logged ce shows the divergence; a bad label's term is
 * left out by its label, whatever its value. */
static void check_nan_logit()
{
    const int B = 1, K = 3;
    const long V = 1000;
    std::vector<float> logits((size_t)B * K * V), probs(logits.size());
    std::vector<int> labels((size_t)B * V);
    for (size_t i = 0; i < logits.size(); i++) logits[i] = (float)(urand() * 2.0 - 1.0);
    for (size_t i = 0; i < labels.size(); i++) labels[i] = (int)(i % K);
    logits[17] = NAN;   /* class 0 of voxel 17, whose label is valid */
    float values[SEG_LOSS_VALUE_COUNT];
    cuda_dicece_fwd(probs.data(), values, logits.data(), labels.data(), B, K, V);
    CHECK(isnan(values[SEG_LOSS_CE]), "a NaN logit at a valid label: ce %.9g, expected NaN",
          values[SEG_LOSS_CE]);
    CHECK(values[SEG_LOSS_BAD_LABELS] == 0.0f, "a NaN logit counted as a bad label (%g)",
          values[SEG_LOSS_BAD_LABELS]);
    printf("  a NaN logit at a valid label: ce %g (NaN, as the CPU backend)\n",
           values[SEG_LOSS_CE]);
}

/* reduce_partials_kernel on a small grid, so that its unrolled loop (kReduceUnroll strided
 * terms per pass) and its tail both run: f(i) = i + 1 sums to n (n + 1) / 2 exactly in double
 * only when every index is counted once. */
struct IndexPlusOne {
    __device__ double operator()(size_t i) const { return (double)(i + 1); }
};

static void check_reduce_unrolled(unsigned grid, size_t n)
{
    std::vector<double> partials(grid + 1, NAN);
    partials[grid] = 12345.0;
    emu_launch(reduce_partials_kernel<IndexPlusOne>, dim3(grid), dim3(kThreads), 0, 0,
               partials.data(), n, IndexPlusOne{});
    double total = 0.0;
    for (unsigned b = 0; b < grid; b++) total += partials[b];
    const double want = (double)n * (double)(n + 1) / 2.0;
    CHECK(total == want, "reduce_partials_kernel grid %u n %zu: %.17g, expected %.17g", grid, n,
          total, want);
    CHECK(partials[grid] == 12345.0, "reduce_partials_kernel grid %u n %zu wrote past its "
          "partials", grid, n);
}

int main()
{
    emu_max_grid_yz = EMU_MAX_GRID_YZ;
    for (unsigned grid : {1u, 3u})
        for (size_t passes : {0, 1, 3})
            for (size_t extra : {0, 1, 255, 700}) {
                const size_t stride = (size_t)grid * kThreads;
                check_reduce_unrolled(grid, passes * kReduceUnroll * stride + extra);
            }
    check_case(1, 3, 1000, 0);
    check_case(2, 4, 777, 0);
    check_case(2, 3, kDiceChunk + 1234, 0);   /* two Dice chunks, the second ragged */
    check_case(2, 3, 999, 97);                /* labels -1 and K: counted, left out of ce */
    check_nan_logit();
    if (fails) {
        printf("%d check(s) failed\n", fails);
        return 1;
    }
    printf("ok: cuda_dicece_fwd on the emulation matches the double reference; values finished "
           "on the device; reduce_partials_kernel counts every term once\n");
    return 0;
}
