/* The softmax backward of the GEMM-path attention (cuda/cuda_attention.cu
 * attention_softmax_bwd_kernel and launch_attention_softmax_bwd, one warp per row) runs WITHOUT
 * a GPU: test_attention_softmax_bwd_emulated.sh cuts both out of the source, rewrites the
 * <<<...>>> launch into emu_launch, and this file runs them through emu_cuda.h. Checked, for
 * rows that do not fill the last block and widths below, at and above the warp size and not
 * multiples of it (the CASA width 576 among them):
 *  - ds16 = NULL: ds = scale p (dp - sum(dp p)) in place, within 1e-5 * scale sum |terms| + 1e-7
 *    of a double reference (fp32 sums over 32 lanes and cols / 32 steps);
 *  - ds16 given: ds16 equals, bit for bit, the in-place fp32 result rounded to bf16 (nearest
 *    even, as cuda_round_to_bf16 rounds it: the contract that lets the bf16-GEMM paths drop
 *    their rounding pass), and ds is left as it was (dp);
 *  - outputs poisoned first with a poisoned tail past rows x cols: every element written,
 *    nothing past the end. */
#include "emu_cuda.h"
#include "emu_test_util.h"

#include "attention_softmax_bwd.inc"  /* cut out of cuda/cuda_attention.cu by the .sh */

static int fails = 0;
static void check(bool ok, const char *what, int rows, int cols, size_t i, double got, double want)
{
    if (ok) return;
    if (++fails <= 20)
        fprintf(stderr, "FAIL %s rows %d cols %d [%zu]: got %.9g, expected %.9g\n", what, rows,
                cols, i, got, want);
}

static EmuLcg lcg{2024};

enum { kTail = 40 };
static const uint16_t kPoison16 = 0x7fc1;  /* a bf16 NaN */

static void run_case(int rows, int cols, float scale)
{
    const size_t n = (size_t)rows * cols;
    std::vector<float> p(n), dp(n);
    for (int r = 0; r < rows; r++) {  /* p: a softmax row (positive, sums to 1) */
        double sum = 0;
        for (int c = 0; c < cols; c++)
            sum += p[(size_t)r * cols + c] = lcg.uniform(0.01f, 1.0f);
        for (int c = 0; c < cols; c++) p[(size_t)r * cols + c] = (float)(p[(size_t)r * cols + c] / sum);
    }
    for (auto &v : dp) v = lcg.uniform(-2, 2);
    std::vector<float> in_place(n + kTail, NAN), kept(n + kTail, NAN);
    std::copy(dp.begin(), dp.end(), in_place.begin());
    std::copy(dp.begin(), dp.end(), kept.begin());
    std::vector<__nv_bfloat16> ds16(n + kTail);
    for (auto &h : ds16) h.bits = kPoison16;
    launch_attention_softmax_bwd(in_place.data(), nullptr, p.data(), rows, cols, scale);
    launch_attention_softmax_bwd(kept.data(), ds16.data(), p.data(), rows, cols, scale);
    for (int r = 0; r < rows; r++) {
        double dot = 0, adot = 0;
        for (int c = 0; c < cols; c++) {
            const size_t i = (size_t)r * cols + c;
            dot += (double)dp[i] * p[i];
            adot += std::fabs((double)dp[i] * p[i]);
        }
        for (int c = 0; c < cols; c++) {
            const size_t i = (size_t)r * cols + c;
            const double want = scale * (double)p[i] * (dp[i] - dot);
            const double mag = std::fabs(scale * (double)p[i]) * (std::fabs(dp[i]) + adot);
            check(std::fabs(in_place[i] - want) <= 1e-5 * mag + 1e-7, "in-place ds vs double",
                  rows, cols, i, in_place[i], want);
            const uint16_t expect = bf16_from_float(in_place[i]);
            check(ds16[i].bits == expect, "ds16 vs in-place ds rounded (bits)", rows, cols, i,
                  bf16_to_float(ds16[i].bits), bf16_to_float(expect));
            check(std::memcmp(&kept[i], &dp[i], sizeof(float)) == 0,
                  "ds changed although ds16 was given", rows, cols, i, kept[i], dp[i]);
        }
    }
    for (size_t i = n; i < n + kTail; i++) {
        check(std::isnan(in_place[i]), "written past the end (in place)", rows, cols, i,
              in_place[i], NAN);
        check(ds16[i].bits == kPoison16, "written past the end (ds16)", rows, cols, i,
              bf16_to_float(ds16[i].bits), NAN);
    }
}

int main()
{
    const int shapes[][2] = {{1, 1}, {3, 31}, {9, 32}, {19, 70}, {12, 576}};
    for (const auto &s : shapes) {
        run_case(s[0], s[1], 0.125f);
        run_case(s[0], s[1], 1.0f / std::sqrt(768.0f));
    }
    return emu_finish(fails,
                      "attention softmax backward kernel (emulated): %zu shapes, fp32 in place "
                      "and bf16 store: ok",
                      sizeof shapes / sizeof shapes[0]);
}
