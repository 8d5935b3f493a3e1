/* The own weight gradient of 3x3x3, stride 1, padding 1 convolutions (cuda/cuda_conv_wgrad3.cu)
 * on the host through emu_cuda.h (test_conv_wgrad3_emulated.sh cuts it into
 * conv_wgrad3_kernels.inc), against a double reference of
 *   dW[o, i, kx, ky, kz] += sum_{b, x, y, z} dy[b, o, x, y, z]
 *                           * in[b, i, x + kx - 1, y + ky - 1, z + kz - 1]
 * (zero outside the volume), on shapes that cover every path of the kernel:
 *  - UNETR's channel counts (1 -> 16, 16 -> 16: two thread groups per output, 32 -> 16: one
 *    thread per output pair, all 256 threads), an odd Cout (the zero padding channel), volumes
 *    that leave ragged tiles along Y and Z and one-voxel volumes (only padding around);
 *  - more tiles than blocks (each block loops over several tiles);
 *  - onto non-zero starting values (the contract accumulates), within 1e-5 of the scale of the
 *    sum of |terms|; bit-identical when run again with the blocks in a shuffled order (each
 *    block writes its own partials, added in block order);
 *  - cuda_conv_wgrad3_runs only for k 3, stride 1, padding 1, at most 32 channels and 256
 *    owner threads, Z at least one tile (32), with conv_wgrad_kernel = own. */
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "emu_cuda.h"
#include "emu_test_util.h"

/* What the cut file calls outside itself. */
enum GpuConvWgradKernel { CONV_WGRAD_KERNEL_OWN, CONV_WGRAD_KERNEL_CUDNN };
static int g_wgrad_kernel = CONV_WGRAD_KERNEL_OWN;
static int gpu_conv_wgrad_kernel() { return g_wgrad_kernel; }
#define ALICE_ASSERT(cond, ...) \
    do { if (!(cond)) alice_fatal_at(__FILE__, __LINE__, __VA_ARGS__); } while (0)
#include "cuda/cuda_conv_wgrad3.h"
#include "conv_wgrad3_kernels.inc"  /* cut out of cuda/ by the .sh */

static EmuLcg rng{20261127u};
static std::vector<float> randoms(size_t n, float scale)
{
    std::vector<float> v(n);
    for (float &x : v) x = rng.uniform(-scale, scale);
    return v;
}

static void wgrad3_case(int B, int Cin, int Cout, int X, int Y, int Z)
{
    const size_t V = (size_t)X * Y * Z, nw = (size_t)Cout * Cin * 27;
    const std::vector<float> x = randoms((size_t)B * Cin * V, 1.0f);
    const std::vector<float> dy = randoms((size_t)B * Cout * V, 1.0f);
    const std::vector<float> dW0 = randoms(nw, 2.0f);
    std::vector<float> dW = dW0;
    emu_block_order_seed = 0;
    cuda_conv_wgrad3(dW.data(), dy.data(), x.data(), B, Cin, Cout, X, Y, Z);

    double worst = 0.0;
    for (int o = 0; o < Cout; o++)
        for (int i = 0; i < Cin; i++)
            for (int k = 0; k < 27; k++) {
                const int kx = k / 9, ky = k / 3 % 3, kz = k % 3;
                const size_t w = ((size_t)o * Cin + i) * 27 + k;
                double acc = dW0[w], mag = std::fabs(acc);
                for (int b = 0; b < B; b++)
                    for (int px = 0; px < X; px++)
                        for (int py = 0; py < Y; py++)
                            for (int pz = 0; pz < Z; pz++) {
                                const int sx = px + kx - 1, sy = py + ky - 1, sz = pz + kz - 1;
                                if (sx < 0 || sx >= X || sy < 0 || sy >= Y || sz < 0 || sz >= Z)
                                    continue;
                                const double t =
                                    (double)dy[((size_t)b * Cout + o) * V +
                                               ((size_t)px * Y + py) * Z + pz] *
                                    x[((size_t)b * Cin + i) * V + ((size_t)sx * Y + sy) * Z + sz];
                                acc += t;
                                mag += std::fabs(t);
                            }
                const double err = std::fabs(dW[w] - acc) / (mag + 1e-30);
                if (!(err <= worst)) worst = err;  /* NaN (an unwritten sum) wins */
            }
    EMU_CHECK(worst <= 1e-5, "wgrad3 B %d %d -> %d at %dx%dx%d: dW %.3g relative off the "
              "reference", B, Cin, Cout, X, Y, Z, worst);

    /* again from the same start with the blocks in a shuffled order: the same bits */
    std::vector<float> again = dW0;
    emu_block_order_seed = 7;
    cuda_conv_wgrad3(again.data(), dy.data(), x.data(), B, Cin, Cout, X, Y, Z);
    emu_block_order_seed = 0;
    EMU_CHECK(std::memcmp(again.data(), dW.data(), nw * sizeof(float)) == 0,
              "wgrad3 %d -> %d: dW differs when the blocks run in another order", Cin, Cout);
    printf("  wgrad3 B %d %2d -> %2d at %2dx%2dx%2d: dW %.2g\n", B, Cin, Cout, X, Y, Z, worst);
}

int main()
{
    wgrad3_case(2, 3, 5, 5, 7, 37);    /* odd Cout, ragged tiles along Y and Z */
    wgrad3_case(1, 1, 16, 4, 9, 33);   /* UNETR's input layer: 8 owners, 32 groups */
    wgrad3_case(1, 16, 16, 3, 8, 40);  /* a res block: two groups per owner */
    wgrad3_case(1, 32, 16, 2, 4, 32);  /* the last decoder block: 256 owners, one group */
    wgrad3_case(1, 2, 2, 70, 8, 40);   /* 280 tiles: more than the 264 blocks */
    wgrad3_case(2, 1, 1, 1, 1, 1);     /* one voxel: only the centre tap sees the input */
    EMU_CHECK(cuda_conv_wgrad3_runs(1, 16, 3, 1, 1, 96) &&
                  cuda_conv_wgrad3_runs(16, 16, 3, 1, 1, 96) &&
                  cuda_conv_wgrad3_runs(32, 16, 3, 1, 1, 96),
              "UNETR's full-resolution 3x3x3 shapes must run on the own kernel");
    EMU_CHECK(!cuda_conv_wgrad3_runs(32, 32, 3, 1, 1, 96) &&
                  !cuda_conv_wgrad3_runs(64, 8, 3, 1, 1, 96) &&
                  !cuda_conv_wgrad3_runs(16, 16, 1, 1, 0, 96) &&
                  !cuda_conv_wgrad3_runs(16, 16, 3, 2, 1, 96) &&
                  !cuda_conv_wgrad3_runs(16, 16, 3, 1, 0, 96) &&
                  !cuda_conv_wgrad3_runs(16, 16, 3, 1, 1, 31),
              "only 3x3x3, stride 1, padding 1, <= 32 channels, <= 256 owners, Z >= 32 take the "
              "own kernel");
    g_wgrad_kernel = CONV_WGRAD_KERNEL_CUDNN;
    EMU_CHECK(!cuda_conv_wgrad3_runs(16, 16, 3, 1, 1, 96),
              "conv_wgrad_kernel = cudnn: own kernel ran");
    return emu_finish(emu_fails, "ok: own 3x3x3 weight gradient on the emulation");
}
