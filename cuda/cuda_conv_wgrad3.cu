/* Weight gradient of 3x3x3, stride 1, padding 1 convolutions with few channels, on NCDHW
 * tensors as they are (config key conv_wgrad_kernel = own; cuda/cuda_conv_wgrad3.h).
 *
 * Why: UNETR's four 3x3x3 convolutions at the full 96^3 crop (1 -> 16, 16 -> 16, 32 -> 16,
 * 16 -> 16) have cuDNN's backward-filter pick an sm80 kernel without shared-memory tiling for
 * NCDHW fp32/TF32 tensors: about 12 ms of the 51 ms step for some 200 GFLOP (runs 9-12, the
 * UNETR kernel profile), and neither Find (conv_autotune) nor channels-last copies
 * (conv_wgrad_layout = ndhwc) found a faster deterministic algorithm. The gradient is a GEMM
 * with a tiny output (Cout x Cin x 27) and a huge reduction (every voxel of the batch), so here:
 *  - a block takes tiles of 1 x kTileY x kTileZ output voxels (Z fastest, as in memory) of one
 *    batch element, stages every input channel's halo of the tile (3 x (kTileY + 2) x
 *    (kTileZ + 2), zero outside the volume) and every output channel's dy of the tile in shared
 *    memory, and keeps its sums in registers across its tiles;
 *  - a thread owns two output channels against one input channel, all 27 taps (54 sums), and
 *    walks runs of kSeg voxels along Z with the 3x3x3 input window in registers: each step
 *    loads the window's new 3x3 column and two dy values for 54 FMAs;
 *  - threads left over when Cin x ceil(Cout / 2) < 256 split the tile's runs into groups (at
 *    most kRunsPerTile: more would have no run to walk), whose sums are added in group order
 *    at the end; each block writes its partials, and a second kernel adds them onto dW in
 *    block order (in double). The tiles are dealt to blocks by index, so the result depends
 *    on the shape only, never on timing.
 * fp32 throughout (the TF32 setting is not applied here: fp32 FMAs are this kernel's tensor
 * math), so the result is closer to the CPU backend's than cuDNN's TF32 one. Measured on an
 * H200 (runs 13-14): the UNETR step 1.054-1.057x faster than with cuDNN's, the four gradients
 * about 9 ms instead of 12. */
#include "cuda/cuda_conv_wgrad3.h"
#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_ops.h"

/* The output tile of a block (one X plane), and the runs along Z a thread walks. */
constexpr int kTileY = 4;
constexpr int kTileZ = 32;
constexpr int kSeg = 8;
constexpr int kRunsPerTile = kTileY * (kTileZ / kSeg);
/* The staged input halo of one channel: X planes x - 1 .. x + 1, rows y0 - 1 .. y0 + kTileY,
 * columns z0 - 1 .. z0 + kTileZ. */
constexpr int kHaloRow = kTileZ + 2;
constexpr int kHaloPlane = (kTileY + 2) * kHaloRow;
constexpr int kHaloChannel = 3 * kHaloPlane;
/* dy of one channel over the tile, one float of padding so that the 8 output-channel pairs of
 * a warp read 8 different banks. */
constexpr int kDyChannel = kTileY * kTileZ + 1;
constexpr int kTaps = 27;
/* Output channels one thread owns, and the sums it keeps. */
constexpr int kOutPerThread = 2;
constexpr int kSums = kOutPerThread * kTaps;
/* Blocks at most: two per SM of an H100/H200 (132 SMs) at the largest tile (32 input
 * channels: 87 KB of shared memory). Fixed, so the partials' order does not depend on the
 * device. */
constexpr int kWgrad3Blocks = 264;

/* Thread groups that split a tile's runs: the threads beyond the owners, at most one per run. */
static __host__ __device__ int wgrad3_groups(int owners)
{
    const int groups = kThreads / owners;
    return groups < kRunsPerTile ? groups : kRunsPerTile;
}

/* Floats of dynamic shared memory: the tile, or the groups' sums at the end (the same bytes). */
static size_t wgrad3_smem_floats(int Cin, int Cout)
{
    const int pairs = (Cout + 1) / 2, owners = Cin * pairs, groups = wgrad3_groups(owners);
    const size_t tile = (size_t)Cin * kHaloChannel + (size_t)2 * pairs * kDyChannel;
    const size_t sums = (size_t)groups * owners * kSums;
    return tile > sums ? tile : sums;
}

/* partial[blockIdx.x, o, i, tap] = this block's sums of dy[b, o, v] x[b, i, v + tap - 1]. */
static __global__ void __launch_bounds__(kThreads, 2)
conv_wgrad3_partials_kernel(float *partial, const float *dy, const float *x, int B, int Cin,
                            int Cout, int X, int Y, int Z)
{
    extern __shared__ float wgrad3_smem[];
    float *xs = wgrad3_smem;                                  /* [Cin][3][kTileY + 2][kHaloRow] */
    float *ds = wgrad3_smem + (size_t)Cin * kHaloChannel;     /* [2 pairs][kDyChannel] */
    const int pairs = (Cout + 1) / 2, owners = Cin * pairs, groups = wgrad3_groups(owners);
    const int t = (int)threadIdx.x, owner = t % owners, group = t / owners;
    const bool computes = group < groups;
    /* the pair fastest: a warp's lanes read few input channels (broadcasts) and distinct dy
     * banks */
    const int pair = owner % pairs, i = owner / pairs;
    float acc[kOutPerThread][kTaps];
#pragma unroll
    for (int o = 0; o < kOutPerThread; o++)
#pragma unroll
        for (int k = 0; k < kTaps; k++) acc[o][k] = 0.0f;

    const long tiles_y = (Y + kTileY - 1) / kTileY, tiles_z = (Z + kTileZ - 1) / kTileZ;
    const long tiles = (long)B * X * tiles_y * tiles_z;
    const size_t plane = (size_t)Y * Z;
    for (long tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const int z0 = (int)(tile % tiles_z) * kTileZ;
        const int y0 = (int)(tile / tiles_z % tiles_y) * kTileY;
        const int gx = (int)(tile / (tiles_z * tiles_y) % X);
        const int b = (int)(tile / (tiles_z * tiles_y * X));
        __syncthreads(); /* the previous tile's reads are done */
        for (int e = t; e < Cin * kHaloChannel; e += kThreads) {
            const int c = e / kHaloChannel, r = e % kHaloChannel;
            const int xx = gx + r / kHaloPlane - 1, yy = y0 + r % kHaloPlane / kHaloRow - 1;
            const int zz = z0 + r % kHaloRow - 1;
            const bool inside = xx >= 0 && xx < X && yy >= 0 && yy < Y && zz >= 0 && zz < Z;
            xs[e] = inside ? x[((size_t)b * Cin + c) * X * plane + (size_t)xx * plane +
                               (size_t)yy * Z + zz]
                           : 0.0f;
        }
        for (int e = t; e < 2 * pairs * kTileY * kTileZ; e += kThreads) {
            const int c = e / (kTileY * kTileZ), r = e % (kTileY * kTileZ);
            const int yy = y0 + r / kTileZ, zz = z0 + r % kTileZ;
            /* the padding channel of an odd Cout, and voxels past the volume, add nothing */
            const bool inside = c < Cout && yy < Y && zz < Z;
            ds[c * kDyChannel + r] = inside ? dy[((size_t)b * Cout + c) * X * plane +
                                                 (size_t)gx * plane + (size_t)yy * Z + zz]
                                            : 0.0f;
        }
        __syncthreads();
        if (!computes) continue;
        const float *xi = xs + (size_t)i * kHaloChannel;
        for (int run = group; run < kRunsPerTile; run += groups) {
            const int ly = run / (kTileZ / kSeg), zs = run % (kTileZ / kSeg) * kSeg;
            const float *d0 = ds + (2 * pair) * kDyChannel + ly * kTileZ + zs;
            const float *d1 = d0 + kDyChannel;
            /* w[kx][ky][kz]: the input at (x + kx - 1, y + ky - 1, z + kz - 1) for the output
             * voxel z = z0 + zs + s; halo column zs + s + kz */
            float w[3][3][3];
#pragma unroll
            for (int kx = 0; kx < 3; kx++)
#pragma unroll
                for (int ky = 0; ky < 3; ky++) {
                    const float *col = xi + kx * kHaloPlane + (ly + ky) * kHaloRow + zs;
                    w[kx][ky][1] = col[0];
                    w[kx][ky][2] = col[1];
                }
#pragma unroll
            for (int s = 0; s < kSeg; s++) {
#pragma unroll
                for (int kx = 0; kx < 3; kx++)
#pragma unroll
                    for (int ky = 0; ky < 3; ky++) {
                        w[kx][ky][0] = w[kx][ky][1];
                        w[kx][ky][1] = w[kx][ky][2];
                        w[kx][ky][2] = xi[kx * kHaloPlane + (ly + ky) * kHaloRow + zs + s + 2];
                    }
                const float g0 = d0[s], g1 = d1[s];
#pragma unroll
                for (int kx = 0; kx < 3; kx++)
#pragma unroll
                    for (int ky = 0; ky < 3; ky++)
#pragma unroll
                        for (int kz = 0; kz < 3; kz++) {
                            acc[0][(kx * 3 + ky) * 3 + kz] += g0 * w[kx][ky][kz];
                            acc[1][(kx * 3 + ky) * 3 + kz] += g1 * w[kx][ky][kz];
                        }
            }
        }
    }
    /* the groups' sums, added in group order by group 0 */
    __syncthreads(); /* the last tile's reads are done: the tile's bytes now hold the sums */
    float *sums = wgrad3_smem;
    if (computes && group > 0)
#pragma unroll
        for (int o = 0; o < kOutPerThread; o++)
#pragma unroll
            for (int k = 0; k < kTaps; k++)
                sums[((size_t)group * owners + owner) * kSums + o * kTaps + k] = acc[o][k];
    __syncthreads();
    if (!computes || group > 0) return;
    for (int g = 1; g < groups; g++)
#pragma unroll
        for (int o = 0; o < kOutPerThread; o++)
#pragma unroll
            for (int k = 0; k < kTaps; k++)
                acc[o][k] += sums[((size_t)g * owners + owner) * kSums + o * kTaps + k];
    const size_t n = (size_t)Cout * Cin * kTaps;
#pragma unroll
    for (int o = 0; o < kOutPerThread; o++) {
        const int co = kOutPerThread * pair + o;
        if (co >= Cout) continue;
        float *dst = partial + blockIdx.x * n + ((size_t)co * Cin + i) * kTaps;
#pragma unroll
        for (int k = 0; k < kTaps; k++) dst[k] = acc[o][k];
    }
}

/* The shapes the kernel can take (owners within one block, the tile within shared memory). */
static bool wgrad3_fits(int Cin, int Cout)
{
    return Cin >= 1 && Cout >= 1 && Cin <= kWgrad3MaxChannels && Cout <= kWgrad3MaxChannels &&
           Cin * ((Cout + 1) / 2) <= kThreads;
}

bool cuda_conv_wgrad3_runs(int Cin, int Cout, int k, int s, int pad, int Z)
{
    /* Z >= kTileZ: the shapes measured faster than cuDNN's (UNETR's full-resolution ones, runs
     * 13-14); a shorter Z leaves lanes of every tile idle, and was never timed */
    return gpu_conv_wgrad_kernel() == CONV_WGRAD_KERNEL_OWN && k == 3 && s == 1 && pad == 1 &&
           Z >= kTileZ && wgrad3_fits(Cin, Cout);
}

/* Kernels above 48 KiB of dynamic shared memory must opt in, before their first launch at that
 * size (the eager step before a graph recording makes the call, never the recording). */
static void allow_wgrad3_smem(size_t bytes)
{
    static size_t allowed = 48 * 1024;
    if (bytes <= allowed) return;
    CUDA_CHECK(cudaFuncSetAttribute(conv_wgrad3_partials_kernel,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    allowed = bytes;
}

/* Calls so far (gpu_conv_wgrad3_calls: the GPU test checks that the key took effect). */
static long g_wgrad3_calls;

long gpu_conv_wgrad3_calls(void) { return g_wgrad3_calls; }

void cuda_conv_wgrad3(float *dW, const float *dy, const float *x, int B, int Cin, int Cout,
                      int X, int Y, int Z)
{
    ALICE_ASSERT(wgrad3_fits(Cin, Cout), "own 3x3x3 weight gradient called for %d -> %d channels "
                 "(at most %d each and %d owner threads)", Cin, Cout, kWgrad3MaxChannels, kThreads);
    const long tiles = (long)B * X * ((Y + kTileY - 1) / kTileY) * ((Z + kTileZ - 1) / kTileZ);
    if (tiles <= 0) return;
    const int blocks = (int)(tiles < kWgrad3Blocks ? tiles : kWgrad3Blocks);
    const int n = Cout * Cin * kTaps;
    float *partial = (float *)cuda_scratch(SCRATCH_WGRAD3_PARTIALS,
                                           (size_t)blocks * n * sizeof(float));
    const size_t smem = wgrad3_smem_floats(Cin, Cout) * sizeof(float);
    allow_wgrad3_smem(smem);
    conv_wgrad3_partials_kernel<<<blocks, kThreads, smem, cuda_stream()>>>(
        partial, dy, x, B, Cin, Cout, X, Y, Z);
    CUDA_CHECK_LAUNCH();
    add_block_partials_kernel<float><<<grid_for((size_t)n), kThreads, 0, cuda_stream()>>>(
        dW, partial, n, blocks);
    CUDA_CHECK_LAUNCH();
    g_wgrad3_calls++;
}
