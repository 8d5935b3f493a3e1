/* The two small kernels of the cuDNN instance norm (cuda/cuda_instnorm_cudnn.cu: gamma/beta
 * expanded to one scale/bias per (b, c) plane, and cuDNN's per-plane dscale/dbias folded over b
 * into dgamma/dbeta) run WITHOUT a GPU: test_instnorm_cudnn_emulated.sh cuts their source and
 * their host launchers out of cuda/, rewrites <<<...>>> into emu_launch, and this file runs
 * them serially on the host (emu_serial.h: no barriers or shuffles, so the serial order is a
 * valid schedule) against the contract's formulas:
 *  - expansion: scale[b*C + c] = gamma[c] (1 without), bias[b*C + c] = beta[c] (0 without),
 *    exactly; with B = 1 and NULL gamma/beta it makes the persistent ones/zeros buffer;
 *  - fold: dgamma[c] += sum_b dscale[b*C + c], dbeta[c] += sum_b dbias[b*C + c], summed in
 *    double in b order and rounded once (bit for bit), onto non-zero starting values; a NULL
 *    dgamma or dbeta leaves the other one right;
 * for channel counts around the block size, grids uncapped and capped at 3 blocks (every thread
 * of a grid-stride loop runs several elements), and nothing written past the end of a buffer.
 * What this cannot see (cuDNN itself, speed) is left to test_backend_parity and
 * bench_instnorm on a GPU. */
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "emu_serial.h"
#define ALICE_FATAL(...) do { fprintf(stderr, __VA_ARGS__); abort(); } while (0)
#include "instnorm_cudnn_kernels.inc"  /* cut out of cuda/ by the .sh */

static int fails = 0;
/* Counts every failure, prints the first 20. */
#define CHECK(c, ...) do { if (!(c)) { if (fails++ < 20) { printf("FAIL: "); printf(__VA_ARGS__); \
    printf("\n"); } } } while (0)
static uint64_t rs = 88172645463325252ull;
static float urand()
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (float)((rs >> 11) * (1.0 / 9007199254740992.0)) * 4.0f - 2.0f;
}
static std::vector<float> randoms(size_t n)
{
    std::vector<float> v(n);
    for (float &x : v) x = urand();
    return v;
}
static bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

static const float kSentinel = 12345.0f;

static void expand_case(int B, int C, bool with_gamma, bool with_beta)
{
    const size_t planes = (size_t)B * C;
    std::vector<float> gamma = randoms(C), beta = randoms(C);
    std::vector<float> scale(planes + 1, NAN), bias(planes + 1, NAN);
    scale[planes] = bias[planes] = kSentinel;
    instnorm_expand_affine(scale.data(), bias.data(), with_gamma ? gamma.data() : NULL,
                           with_beta ? beta.data() : NULL, B, C);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            const size_t p = (size_t)b * C + c;
            CHECK(same_bits(scale[p], with_gamma ? gamma[c] : 1.0f),
                  "expand B %d C %d gamma %d: scale[%zu] = %g", B, C, with_gamma, p, scale[p]);
            CHECK(same_bits(bias[p], with_beta ? beta[c] : 0.0f),
                  "expand B %d C %d beta %d: bias[%zu] = %g", B, C, with_beta, p, bias[p]);
        }
    CHECK(scale[planes] == kSentinel && bias[planes] == kSentinel,
          "expand B %d C %d wrote past the %zu planes", B, C, planes);
}

static void fold_case(int B, int C, bool want_dgamma, bool want_dbeta)
{
    const size_t planes = (size_t)B * C;
    std::vector<float> dscale = randoms(planes), dbias = randoms(planes);
    std::vector<float> dgamma = randoms(C + 1), dbeta = randoms(C + 1);
    dgamma[C] = dbeta[C] = kSentinel;
    const std::vector<float> dgamma0 = dgamma, dbeta0 = dbeta;
    instnorm_fold_param_grads(want_dgamma ? dgamma.data() : NULL,
                              want_dbeta ? dbeta.data() : NULL, dscale.data(), dbias.data(), B, C);
    for (int c = 0; c < C; c++) {
        double g = 0.0, b = 0.0;
        for (int bi = 0; bi < B; bi++) {
            g += dscale[(size_t)bi * C + c];
            b += dbias[(size_t)bi * C + c];
        }
        const float want_g = want_dgamma ? dgamma0[c] + (float)g : dgamma0[c];
        const float want_b = want_dbeta ? dbeta0[c] + (float)b : dbeta0[c];
        CHECK(same_bits(dgamma[c], want_g), "fold B %d C %d (dgamma %d): dgamma[%d] = %.9g, "
              "expected %.9g", B, C, want_dgamma, c, dgamma[c], want_g);
        CHECK(same_bits(dbeta[c], want_b), "fold B %d C %d (dbeta %d): dbeta[%d] = %.9g, "
              "expected %.9g", B, C, want_dbeta, c, dbeta[c], want_b);
    }
    CHECK(dgamma[C] == kSentinel && dbeta[C] == kSentinel, "fold B %d C %d wrote past C", B, C);
}

int main()
{
    long runs = 0;
    for (unsigned cap : {1u << 30, 3u}) {  /* uncapped, then 3 blocks: every thread strides */
        emu_max_grid = cap;
        for (int B : {1, 2, 3})
            for (int C : {1, 3, 16, 255, 256, 257, 1000}) {
                for (int mask = 0; mask < 4; mask++) {
                    expand_case(B, C, mask & 1, mask & 2);
                    fold_case(B, C, mask & 1, mask & 2);
                    runs += 2;
                }
            }
    }
    /* the persistent ones/zeros buffer of affine = False: B = 1, C = capacity, no gamma/beta */
    emu_max_grid = 1u << 30;
    expand_case(1, 4099, false, false);
    printf("%ld emulated launches (%ld cases): %s\n", emu_launches, runs + 1,
           fails ? "FAIL" : "all bit-exact");
    return fails ? 1 : 0;
}
