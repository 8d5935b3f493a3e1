/* The one kernel of the cuDNN attention path (cuda/cuda_attention_cudnn.cu) that is ours:
 * cuDNN's compact bf16 gradient [rows, cols] widened into the fp32 destination with the row
 * stride of q or of the packed kv / qkv buffer (attention_bwd_bf16's contract). It runs WITHOUT
 * a GPU: test_cudnn_attention_emulated.sh cuts its source and host launcher out of cuda/,
 * rewrites <<<...>>> into emu_launch, and this file runs it serially on the host (emu_serial.h)
 * against the contract: dst[r*ld + c] == (float)src[r*cols + c] bit for bit (widening is exact),
 * and every element outside the view (the other two views of a packed qkv row, gaps after q's
 * columns, past the end) keeps its starting value. Shapes: a packed qkv view (ld = 3C) at each
 * of its three column offsets, a q with gaps (ld = C + 8), ld = cols, and row counts around the
 * block size, with the grid uncapped and capped at 3 blocks (each thread strides). cuDNN itself
 * is left to test_backend_parity on a GPU. */
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "emu_serial.h"
#define ALICE_FATAL(...) do { fprintf(stderr, __VA_ARGS__); abort(); } while (0)
#include "cudnn_attention_kernels.inc"  /* cut out of cuda/ by the .sh */

static int fails = 0;
/* Counts every failure, prints the first 20. */
#define CHECK(c, ...) do { if (!(c)) { if (fails++ < 20) { printf("FAIL: "); printf(__VA_ARGS__); \
    printf("\n"); } } } while (0)
static uint64_t rs = 0x9E3779B97F4A7C15ull;
static float urand()
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (float)((rs >> 11) * (1.0 / 9007199254740992.0)) * 8.0f - 4.0f;
}
static bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }
static const float kUntouched = -777.0f;

/* One view of cols columns at col0 in rows of stride ld. */
static void widen_case(long rows, int cols, long ld, int col0)
{
    std::vector<__nv_bfloat16> src((size_t)rows * cols);
    for (size_t i = 0; i < src.size(); i++) src[i] = __float2bfloat16_rn(urand());
    if (!src.empty()) src[0] = __float2bfloat16_rn(-0.0f);  /* the sign of zero survives too */
    const size_t n_dst = rows > 0 ? (size_t)(rows - 1) * ld + col0 + cols + 5 : 5;
    std::vector<float> dst(n_dst, kUntouched);
    cudnn_attention_widen_rows(dst.data() + col0, src.data(), rows, cols, ld);
    for (size_t i = 0; i < n_dst; i++) {
        const long r = (long)(i / (size_t)ld);
        const long c = (long)(i % (size_t)ld) - col0;
        const bool in_view = r < rows && c >= 0 && c < cols && i >= (size_t)col0;
        const float want = in_view ? __bfloat162float(src[(size_t)r * cols + c]) : kUntouched;
        CHECK(same_bits(dst[i], want), "rows %ld cols %d ld %ld col0 %d: element %zu (row %ld, "
              "col %ld) is %g, want %g", rows, cols, ld, col0, i, r, c, dst[i], want);
    }
}

int main()
{
    long runs = 0;
    for (unsigned cap : {1u << 30, 3u}) {  /* uncapped, then 3 blocks: every thread strides */
        emu_max_grid = cap;
        for (long rows : {1L, 7L, 33L, 290L}) {
            const int C = 64;
            for (int view = 0; view < 3; view++, runs++)  /* packed qkv: dq, dk, dv */
                widen_case(rows, C, 3L * C, view * C);
            widen_case(rows, 24, 24 + 8, 0), runs++;      /* q rows with a gap */
            widen_case(rows, 16, 16, 0), runs++;          /* compact */
            widen_case(rows, 48, 2L * 48, 48), runs++;    /* v of a packed kv buffer */
        }
        widen_case(0, 64, 192, 0), runs++;                /* nothing to do: no launch */
    }
    printf("%ld emulated launches (%ld cases): %s\n", emu_launches, runs,
           fails ? "FAILED" : "all bit for bit");
    return fails ? 1 : 0;
}
