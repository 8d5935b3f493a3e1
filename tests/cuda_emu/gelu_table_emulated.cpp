/* The bf16 GELU forward of the CUDA backend by table lookup (cuda/cuda_elementwise.cu:
 * g_gelu_bf16_table, gelu_bf16_table_fill_kernel, gelu_fwd_bf16_table_kernel and their launches)
 * runs WITHOUT a GPU: test_gelu_table_emulated.sh cuts them out of the source and this file runs
 * them through emu_cuda.h (a std::thread per CUDA thread, __syncthreads a barrier; the kernel's
 * __shared__ table is one array that every block restages). Checked, bit for bit against the
 * CPU backend's bf16(gelu_erf(x)) (src/ops/cpu_math.h, what cpu gelu_fwd_bf16 computes):
 *  - the filled tables, for every one of the 65536 bf16 inputs: the forward's results and the
 *    backward's gelu_erf_slope (g_gelu_slope_bf16_table, the fused bias pass's; bits compared,
 *    NaN for NaN, payloads aside: the host compiler may order a NaN sum's operands either way);
 *  - the lookup kernel over all 65536 inputs, in bit order (packs that straddle the hot range's
 *    ends: the mixed hot / global path) and shuffled (hot and cold values in one pack), on
 *    16-byte aligned buffers (the vector path: two packs a step, the odd pack, the tail) and
 *    shifted ones (one element at a time), with grids of 1, 3 and as many blocks as needed
 *    (every thread strides several times, or once);
 *  - small sizes around the pack width; nothing is written past n. */
#include "emu_cuda.h"
#include "cuda/cuda_bf16.cuh" /* widen, narrow_to: compiled against the emulation's bf16 */
extern "C" {
#include "ops/cpu_math.h"
}

#include "gelu_table.inc" /* cut out of cuda/ by the .sh */

#include <vector>

static int fails = 0;
#define CHECK(c, ...) do { if (!(c)) { if (fails++ < 20) { printf("FAIL: "); printf(__VA_ARGS__); \
    printf("\n"); } } } while (0)

static uint16_t reference(uint16_t bits) { return bf16_from_float(gelu_erf(bf16_to_float(bits))); }

enum { kSentinel = 0x1234, kSlack = 64 };

/* 64-byte aligned storage of n + kSlack values, the first at element offset off */
struct Buf {
    std::vector<uint16_t> raw;
    uint16_t *p;
    Buf(size_t n, int off) : raw(n + 2 * kSlack)
    {
        uintptr_t a = ((uintptr_t)raw.data() + 63) & ~(uintptr_t)63;
        p = (uint16_t *)a + off;
    }
};

static void run(const std::vector<uint16_t> &values, size_t n, int off_x, int off_y,
                unsigned blocks, const char *what)
{
    Buf x(n, off_x), y(n, off_y);
    for (size_t i = 0; i < n; i++) x.p[i] = values[i % values.size()];
    for (size_t i = 0; i < n + 16; i++) y.p[i] = kSentinel;
    launch_gelu_fwd_bf16_table(y.p, x.p, n, blocks);
    for (size_t i = 0; i < n; i++)
        CHECK(y.p[i] == reference(x.p[i]),
              "%s n %zu off %d/%d blocks %u [%zu]: x 0x%04x y 0x%04x, expected 0x%04x", what, n,
              off_x, off_y, blocks, i, x.p[i], y.p[i], reference(x.p[i]));
    for (size_t i = n; i < n + 16; i++)
        CHECK(y.p[i] == kSentinel, "%s n %zu off %d/%d: wrote past n at %zu", what, n, off_x,
              off_y, i);
}

int main()
{
    fill_gelu_bf16_table();
    for (int i = 0; i < kBf16Values; i++)
        CHECK(g_gelu_bf16_table[i] == reference((uint16_t)i),
              "table[0x%04x] = 0x%04x, expected 0x%04x", i, g_gelu_bf16_table[i],
              reference((uint16_t)i));
    size_t slope_wrong = 0;
    for (int i = 0; i < kBf16Values; i++) {
        const float want = gelu_erf_slope(bf16_to_float((uint16_t)i));
        const float got = g_gelu_slope_bf16_table[i];
        slope_wrong +=
            std::isnan(want) ? !std::isnan(got) : std::memcmp(&want, &got, sizeof want) != 0;
    }
    CHECK(slope_wrong == 0, "slope table: %zu of %d entries differ from gelu_erf_slope",
          slope_wrong, kBf16Values);
    /* the hot range is what the kernel assumes: bits 2^-23 .. below 2^9 */
    CHECK(bf16_to_float((uint16_t)kGeluHotFirst) == 0x1p-23f, "hot range starts at 2^-23");
    CHECK(bf16_to_float((uint16_t)(kGeluHotFirst + kGeluHotPerSign)) == 512.0f,
          "hot range ends at 2^9");

    std::vector<uint16_t> ordered(kBf16Values), shuffled(kBf16Values);
    for (int i = 0; i < kBf16Values; i++) ordered[i] = shuffled[i] = (uint16_t)i;
    uint64_t s = 88172645463325252ull;
    for (size_t i = shuffled.size(); i > 1; i--) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        std::swap(shuffled[i - 1], shuffled[(size_t)(s % i)]);
    }
    const unsigned many = 1u << 20; /* no cap: the launch asks for what n needs */
    for (unsigned blocks : {1u, 3u, many}) {
        run(ordered, kBf16Values, 0, 0, blocks, "all inputs in order");
        run(shuffled, kBf16Values, 0, 0, blocks, "all inputs shuffled");
        run(shuffled, kBf16Values + 13, 8, 0, blocks, "shuffled, tail of 13");
        run(shuffled, kBf16Values, 1, 1, blocks, "shuffled, shifted (scalar path)");
        run(shuffled, kBf16Values, 0, 4, blocks, "shuffled, y misaligned (scalar path)");
    }
    const size_t small[] = {1, 7, 8, 9, 16, 17, 1031};
    for (size_t n : small)
        for (int off : {0, 1})
            for (unsigned blocks : {1u, many}) run(shuffled, n, off, off, blocks, "small");
    printf("%s (%d failures)\n", fails ? "FAILED" : "all ok", fails);
    return fails != 0;
}
