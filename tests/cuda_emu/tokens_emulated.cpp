/* cuda/cuda_tokens.cu's mean_rows_fwd and transpose kernels on the host through emu_cuda.h (see
 * test_tokens_emulated.sh, which cuts them into tokens_kernels.inc), against references
 * computed here: the CPU backend's formula for the mean (bit for bit), the definition of the
 * transpose (exact). */
#include <cstdio>
#include <vector>

#include "emu_cuda.h"
#include "emu_test_util.h"
#include "tokens_kernels.inc"  /* cut out of cuda/ by the .sh */

static EmuLcg rng{20261128u};
static const float kSentinel = 12345.0f;

static void mean_rows_case(int B, int T, int C)
{
    std::vector<float> in((size_t)B * T * C), out((size_t)B * C + 1, kSentinel);
    for (float &x : in) x = rng.uniform(5.0f, 7.0f);
    cuda_mean_rows_fwd(out.data(), in.data(), B, T, C);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            double s = 0.0;   /* cpu_mean_rows_fwd: cpu_add_column_sums, then / (float)T */
            for (int t = 0; t < T; t++) s += in[((size_t)b * T + t) * C + c];
            const float want = (float)s / (float)T;
            EMU_CHECK(out[(size_t)b * C + c] == want, "mean_rows B %d T %d C %d: out[%d, %d] = "
                      "%.9g, the CPU formula %.9g", B, T, C, b, c, out[(size_t)b * C + c], want);
        }
    EMU_CHECK(out[(size_t)B * C] == kSentinel, "mean_rows B %d T %d C %d wrote past out", B, T, C);
}

/* grid_rows: the tile rows the launch gets (0: all, as cuda_transpose_tokens below 65535) */
static void transpose_case(int B, int rows, int cols, unsigned grid_rows)
{
    std::vector<float> in((size_t)B * rows * cols), out(in.size() + 1, kSentinel);
    for (size_t i = 0; i < in.size(); i++) in[i] = (float)i;
    const unsigned tile_rows = (unsigned)((rows + kTile - 1) / kTile);
    const dim3 grid((cols + kTile - 1) / kTile, grid_rows ? grid_rows : tile_rows, B);
    emu_launch(transpose_kernel, grid, dim3(kTile, kTileRows), 0, 0, out.data(), in.data(),
               rows, cols);
    long wrong = 0;
    for (int b = 0; b < B; b++)
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                wrong += out[((size_t)b * cols + c) * rows + r] !=
                         in[((size_t)b * rows + r) * cols + c];
    EMU_CHECK(wrong == 0, "transpose B %d %d x %d, %u of %u tile rows in the grid: %ld elements "
              "wrong", B, rows, cols, grid.y, tile_rows, wrong);
    EMU_CHECK(out[in.size()] == kSentinel, "transpose B %d %d x %d wrote past out", B, rows, cols);
}

int main()
{
    mean_rows_case(2, 3456, 5);   /* T of the DINO centre's rows */
    mean_rows_case(1, 7, 33);
    for (unsigned grid_rows : {0u, 1u, 2u}) {
        transpose_case(2, 200, 70, grid_rows);   /* 7 tile rows, ragged both ways */
        transpose_case(1, 32, 32, grid_rows);
    }
    return emu_finish(emu_fails, "ok: mean_rows_fwd gives the CPU backend's bits; the transpose "
                      "is exact with fewer grid rows than tile rows");
}
