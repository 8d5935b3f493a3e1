/* What the emulated tests of the one-launch column sum (colsum_kernel in cuda/cuda_kernels.cuh)
 * share: colsum_emulated.cpp and linear_gelu_bwd_emulated.cpp include it after emu_cuda.h and
 * before their cut kernels (*_kernels.inc).
 *  - cuda_colsum_arrivals: the stand-in for cuda_reduce.cu's arrival counters, which every call
 *    must leave zero (the last block of each column tile resets its counter);
 *  - poison_partials: NaN over the partial sums before each call, so a finish that reads a
 *    partial not written in this call fails;
 *  - CHECK: counts failures, prints the first 20;
 *  - EmuUniform: seeded uniform draws (each test keeps its own seed, so its inputs do not
 *    change);
 *  - bit and tolerance comparisons of column sums. */
#ifndef ALICE_EMU_COLSUM_SUPPORT_H
#define ALICE_EMU_COLSUM_SUPPORT_H

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

/* ---- the arrival counters and the partials' scratch ---- */

/* cuda_reduce.cu zeroes its counters once; the kernel must leave them zero after every call. */
inline std::vector<unsigned> g_arrivals(1024, 0u);
unsigned *cuda_colsum_arrivals(unsigned tiles)
{
    if (tiles > g_arrivals.size()) alice_fatal_at(__FILE__, __LINE__, "%u tiles", tiles);
    return g_arrivals.data();
}

/* The index of the first arrival counter left nonzero (its value in *left when left is not
 * null), or -1 when all are zero. All are zeroed afterwards, so one failing call does not
 * spoil the next. */
inline long arrivals_left_nonzero(unsigned *left)
{
    long at = -1;
    for (size_t i = 0; i < g_arrivals.size() && at < 0; i++)
        if (g_arrivals[i] != 0) {
            at = (long)i;
            if (left) *left = g_arrivals[i];
        }
    std::fill(g_arrivals.begin(), g_arrivals.end(), 0u);
    return at;
}

/* The floats of SCRATCH_COLSUM a test poisons: set once in main (chunks x columns at most). */
inline size_t g_partial_floats;
inline void poison_partials()
{
    float *p = (float *)cuda_scratch(SCRATCH_COLSUM, g_partial_floats * sizeof(float));
    std::fill(p, p + g_partial_floats, NAN);
}

/* ---- checks ---- */

inline int fails = 0;
#define CHECK(c, ...)                                                                           \
    do {                                                                                        \
        if (!(c)) {                                                                             \
            if (fails++ < 20) {                                                                 \
                printf("FAIL: ");                                                               \
                printf(__VA_ARGS__);                                                            \
                printf("\n");                                                                   \
            }                                                                                   \
        }                                                                                       \
    } while (0)

/* n floats uniform in [lo, hi) from one mt19937 stream per test, drawn in call order. */
class EmuUniform {
public:
    explicit EmuUniform(unsigned seed) : rng_(seed) {}
    std::vector<float> operator()(size_t n, float lo, float hi)
    {
        std::uniform_real_distribution<float> d(lo, hi);
        std::vector<float> v(n);
        for (float &x : v) x = d(rng_);
        return v;
    }

private:
    std::mt19937 rng_;
};

/* got equals want bit for bit in every column (NaN payloads included: poison never replaced
 * counts); reports how many columns differ and the first. */
inline void same_bits(const std::vector<float> &got, const std::vector<float> &want,
                      const char *what, long rows, int cols)
{
    int bad = 0, first = -1;
    for (size_t c = 0; c < got.size(); c++)
        if (std::memcmp(&got[c], &want[c], sizeof(float)) != 0) {
            if (first < 0) first = (int)c;
            bad++;
        }
    CHECK(bad == 0, "%s rows %ld cols %d: %d columns differ from the reference sums, first [%d] "
          "%.9g vs %.9g", what, rows, cols, bad, first, first >= 0 ? got[first] : 0.0f,
          first >= 0 ? want[first] : 0.0f);
}

/* Every after[c] within the fp32 rounding bound of the column sum's tree of before[c] + the
 * sum over rows of g(r, c), against that sum in double: each partial rounds once per add, at
 * most per_lane + 8 + chunks + 1 adds deep (8 strided row lanes per chunk of rows, at most 512
 * chunks), relative to the sum of magnitudes. */
template <class G>
void near_double(const std::vector<float> &after, const std::vector<float> &before, long rows,
                 int cols, G g, const char *what)
{
    const long chunks = std::min(512L, std::max(1L, (rows + 127) / 128));
    const long depth = (rows / chunks + 8) / 8 + 8 + chunks + 2;
    for (int c = 0; c < cols; c++) {
        double exact = before[c], mag = std::fabs(before[c]);
        for (long r = 0; r < rows; r++) {
            exact += g(r, c);
            mag += std::fabs(g(r, c));
        }
        const double tol = (double)depth * std::ldexp(1.0, -24) * mag + 1e-30;
        CHECK(std::fabs(after[c] - exact) <= tol, "%s rows %ld cols %d col %d: %.9g vs double "
              "%.12g (tol %.3g)", what, rows, cols, c, after[c], exact, tol);
    }
}

#endif
