/* Layout copies for the channels-last convolution weight gradients (cuda/cuda_conv_layout.h). */
#include "cuda/cuda_conv_layout.h"
#include "cuda/cuda_kernels.cuh"

/* ---- channels-last copies ---- */

/* A 32 x 32 tile of one batch element's [C, V] plane goes through shared memory, so both the
 * read (along V) and the write (along C) are contiguous per warp; the extra column keeps the
 * transposed read free of bank conflicts. 32 x 8 threads, each moving 4 elements. */
constexpr int kTile = 32, kTileRows = 8;

static __global__ void to_channels_last_kernel(float *dst, const float *src, int C, long V)
{
    __shared__ float tile[kTile][kTile + 1];
    const size_t batch = (size_t)blockIdx.z * (size_t)C * (size_t)V;
    const long v0 = (long)blockIdx.x * kTile;
    const int c0 = (int)blockIdx.y * kTile;
    for (int r = (int)threadIdx.y; r < kTile; r += kTileRows) {
        const int c = c0 + r;
        const long v = v0 + (long)threadIdx.x;
        if (c < C && v < V) tile[r][threadIdx.x] = src[batch + (size_t)c * V + (size_t)v];
    }
    __syncthreads();
    for (int r = (int)threadIdx.y; r < kTile; r += kTileRows) {
        const long v = v0 + r;
        const int c = c0 + (int)threadIdx.x;
        if (c < C && v < V) dst[batch + (size_t)v * C + (size_t)c] = tile[threadIdx.x][r];
    }
}

void cuda_to_channels_last(float *dst, const float *src, int B, int C, long V)
{
    if (B <= 0 || C <= 0 || V <= 0) return;
    const dim3 grid((unsigned)((V + kTile - 1) / kTile), (unsigned)((C + kTile - 1) / kTile),
                    (unsigned)B);
    to_channels_last_kernel<<<grid, dim3(kTile, kTileRows), 0, cuda_stream()>>>(dst, src, C, V);
    CUDA_CHECK_LAUNCH();
}

/* ---- the filter gradient back ---- */

static __global__ void filter_from_channels_last_kernel(float *dW, const float *dW_cl, int K,
                                                        int C, int R)
{
    const size_t n = (size_t)K * C * R;
    GRID_STRIDE(i, n) {
        /* i indexes dW [K, C, R]; its value sits at [K, R, C] in dW_cl */
        const int r = (int)(i % R);
        const size_t kc = i / R;
        const int c = (int)(kc % C), k = (int)(kc / C);
        dW[i] += dW_cl[((size_t)k * R + r) * C + c];
    }
}

void cuda_filter_from_channels_last_accumulate(float *dW, const float *dW_cl, int K, int C, int R)
{
    const size_t n = (size_t)K * C * R;
    if (n == 0) return;
    filter_from_channels_last_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(dW, dW_cl, K,
                                                                                  C, R);
    CUDA_CHECK_LAUNCH();
}
