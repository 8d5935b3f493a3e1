/* The channels-last layout kernels (cuda/cuda_conv_layout.cu) on the host through emu_cuda.h
 * (test_conv_layout_emulated.sh cuts them into conv_layout_kernels.inc):
 *  - cuda_to_channels_last: dst[b, v, c] = src[b, c, v] exactly, for C and V below, at and
 *    above the 32-wide tile (ragged tiles on both axes), batches of 1 and 3; nothing written
 *    past the end;
 *  - cuda_filter_from_channels_last_accumulate: dW[k, c, r] += dW_cl[k, r, c] exactly (one
 *    float add onto non-zero starting values) for 3x3x3, 1x1x1 and 2x2x2 kernels. */
#include <cstdio>
#include <cstring>
#include <vector>

#include "emu_cuda.h"
#include "emu_test_util.h"
#include "conv_layout_kernels.inc"  /* cut out of cuda/ by the .sh */

static EmuLcg rng{20261127u};
static const float kSentinel = 4242.0f;

static std::vector<float> randoms(size_t n)
{
    std::vector<float> v(n);
    for (float &x : v) x = rng.uniform(-2.0f, 2.0f);
    return v;
}

static void transpose_case(int B, int C, long V)
{
    const size_t n = (size_t)B * C * V;
    const std::vector<float> src = randoms(n);
    std::vector<float> dst(n + 1, NAN);
    dst[n] = kSentinel;
    cuda_to_channels_last(dst.data(), src.data(), B, C, V);
    size_t wrong = 0;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
            for (long v = 0; v < V; v++) {
                const float want = src[((size_t)b * C + c) * V + v];
                const float got = dst[((size_t)b * V + v) * C + c];
                wrong += std::memcmp(&want, &got, sizeof(float)) != 0;
            }
    EMU_CHECK(wrong == 0, "to_channels_last B %d C %d V %ld: %zu of %zu values misplaced", B, C,
              V, wrong, n);
    EMU_CHECK(dst[n] == kSentinel, "to_channels_last B %d C %d V %ld wrote past the end", B, C, V);
}

static void filter_case(int K, int C, int R)
{
    const size_t n = (size_t)K * C * R;
    const std::vector<float> cl = randoms(n), start = randoms(n);
    std::vector<float> dW = start;
    dW.push_back(kSentinel);
    cuda_filter_from_channels_last_accumulate(dW.data(), cl.data(), K, C, R);
    size_t wrong = 0;
    for (int k = 0; k < K; k++)
        for (int c = 0; c < C; c++)
            for (int r = 0; r < R; r++) {
                const size_t i = ((size_t)k * C + c) * R + r;
                const float want = start[i] + cl[((size_t)k * R + r) * C + c];
                wrong += std::memcmp(&want, &dW[i], sizeof(float)) != 0;
            }
    EMU_CHECK(wrong == 0, "filter from channels-last K %d C %d R %d: %zu of %zu values wrong", K,
              C, R, wrong, n);
    EMU_CHECK(dW[n] == kSentinel, "filter from channels-last K %d C %d R %d wrote past the end",
              K, C, R);
}

int main()
{
    for (int B : {1, 3})
        for (int C : {1, 16, 33})
            for (long V : {1L, 31L, 64L, 100L}) transpose_case(B, C, V);
    transpose_case(2, 70, 7 * 6 * 5);
    filter_case(16, 16, 27);
    filter_case(14, 16, 1);
    filter_case(5, 33, 8);
    printf("%s: channels-last layout kernels of the convolution weight gradients on the "
           "emulation\n", emu_fails ? "FAIL" : "ok");
    return emu_fails ? 1 : 0;
}
