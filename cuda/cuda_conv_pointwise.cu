/* Pointwise (1x1x1, stride 1, no padding) 3D convolutions with few channels, on NCDHW tensors
 * as they are (config key pointwise_conv = own; cuda/cuda_conv_pointwise.h). UNETR has three
 * at the full 96^3 crop (the input block's 1 -> 16 projection, the last decoder block's
 * 32 -> 16 projection, the 16 -> 14 output convolution with its bias): memory-bound maps over
 * the voxels, which cuDNN runs through its NCDHW <-> NDHWC conversions, a cuBLAS gemv and a
 * cudnnAddTensor for the bias (run 9's UNETR profile). Here each is one pass:
 *  - forward y[b, o, v] = bias[o] + sum_i W[o, i] x[b, i, v] and the data gradient (the same
 *    map with W transposed) give each thread one voxel, its inputs in registers;
 *  - the weight gradient dW[o, i] += sum_{b, v} dy[b, o, v] x[b, i, v] stages tiles of both
 *    through shared memory, each thread summing one output channel against a run of input
 *    channels, per-block partials added up in a fixed order by a second kernel (deterministic,
 *    as the backend's other reductions). The bias gradient is the backend's channel sums. */
#include "cuda/cuda_conv_pointwise.h"
#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_ops.h"

/* ---- the map: forward and data gradient ---- */

/* out[b, o, v] = (bias ? bias[o] : 0) + sum_i Wm[o, i] in[b, i, v] over nin <= NIN inputs,
 * Wm[o, i] = W[o * nin + i] (forward) or, transposed, W[i * nout + o] (data gradient, W being
 * the forward's [nout_fwd = nin, nin_fwd = nout] weights). The weights sit in shared memory. */
template <int NIN>
static __global__ void pointwise_map_kernel(float *out, const float *in, const float *W,
                                            const float *bias, int nin, int nout, long V,
                                            size_t voxels, bool transposed)
{
    __shared__ float w[kPointwiseMaxChannels * kPointwiseMaxChannels];
    for (int j = (int)threadIdx.x; j < nin * nout; j += (int)blockDim.x) {
        const int o = j / nin, i = j % nin;
        w[j] = transposed ? W[(size_t)i * nout + o] : W[j];
    }
    __syncthreads();
    GRID_STRIDE(t, voxels) {
        const size_t b = t / (size_t)V, v = t % (size_t)V;
        const float *src = in + b * (size_t)nin * V + v;
        float x[NIN];
#pragma unroll
        for (int i = 0; i < NIN; i++) x[i] = i < nin ? src[(size_t)i * V] : 0.0f;
        float *dst = out + b * (size_t)nout * V + v;
        for (int o = 0; o < nout; o++) {
            float acc = bias ? bias[o] : 0.0f;
#pragma unroll
            for (int i = 0; i < NIN; i++)
                if (i < nin) acc += w[o * nin + i] * x[i];
            dst[(size_t)o * V] = acc;
        }
    }
}

static void pointwise_map(float *out, const float *in, const float *W, const float *bias,
                          int nin, int nout, int B, long V, bool transposed)
{
    const size_t voxels = (size_t)B * (size_t)V;
    if (voxels == 0) return;
    if (nin <= 16)
        pointwise_map_kernel<16><<<grid_for(voxels), kThreads, 0, cuda_stream()>>>(
            out, in, W, bias, nin, nout, V, voxels, transposed);
    else
        pointwise_map_kernel<kPointwiseMaxChannels><<<grid_for(voxels), kThreads, 0,
                                                      cuda_stream()>>>(
            out, in, W, bias, nin, nout, V, voxels, transposed);
    CUDA_CHECK_LAUNCH();
}

/* ---- the weight gradient ---- */

/* Voxels of one tile, and the blocks the tiles are dealt to (each block takes tiles blk,
 * blk + grid, ... in order, so the partials do not depend on timing). */
constexpr int kPointwiseTile = 64;
constexpr int kPointwiseBlocks = 528;
/* Input channels one thread sums against its output channel. */
constexpr int kPointwiseRun = 4;

/* partial[blk, o, i] = sum over the block's tiles of dy[b, o, v] x[b, i, v]. Thread j owns
 * output channel o = j / runs and input channels run (j % runs) * kPointwiseRun + [0, 4). */
static __global__ void pointwise_wgrad_partials_kernel(float *partial, const float *dy,
                                                       const float *x, int cin, int cout, int B,
                                                       long V)
{
    __shared__ float xs[kPointwiseMaxChannels][kPointwiseTile];
    __shared__ float ds[kPointwiseMaxChannels][kPointwiseTile];
    const int runs = (cin + kPointwiseRun - 1) / kPointwiseRun;
    const int j = (int)threadIdx.x, o = j / runs, i0 = (j % runs) * kPointwiseRun;
    const bool owner = o < cout;
    float acc[kPointwiseRun] = {0.0f, 0.0f, 0.0f, 0.0f};
    const long tiles_per_batch = (V + kPointwiseTile - 1) / kPointwiseTile;
    const long tiles = tiles_per_batch * B;
    for (long tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const long b = tile / tiles_per_batch, v0 = (tile % tiles_per_batch) * kPointwiseTile;
        const int len = (int)(V - v0 < kPointwiseTile ? V - v0 : kPointwiseTile);
        __syncthreads();  /* the previous tile's reads are done */
        for (int k = j; k < (cin + cout) * kPointwiseTile; k += (int)blockDim.x) {
            const int ch = k / kPointwiseTile, t = k % kPointwiseTile;
            const bool is_x = ch < cin;
            const int c = is_x ? ch : ch - cin;
            const float *src = is_x ? x + ((size_t)b * cin + c) * V
                                    : dy + ((size_t)b * cout + c) * V;
            const float val = t < len ? src[v0 + t] : 0.0f;
            if (is_x) xs[c][t] = val;
            else ds[c][t] = val;
        }
        __syncthreads();
        if (owner)
            for (int t = 0; t < kPointwiseTile; t++) {
                const float d = ds[o][t];
#pragma unroll
                for (int r = 0; r < kPointwiseRun; r++)
                    if (i0 + r < cin) acc[r] += d * xs[i0 + r][t];
            }
    }
    if (owner)
        for (int r = 0; r < kPointwiseRun; r++)
            if (i0 + r < cin)
                partial[((size_t)blockIdx.x * cout + o) * cin + i0 + r] = acc[r];
}

static void pointwise_wgrad(float *dW, const float *dy, const float *x, int cin, int cout, int B,
                            long V)
{
    const int pairs = cin * cout;
    float *partial = (float *)cuda_scratch(SCRATCH_POINTWISE_PARTIALS,
                                           (size_t)kPointwiseBlocks * pairs * sizeof(float));
    pointwise_wgrad_partials_kernel<<<kPointwiseBlocks, kThreads, 0, cuda_stream()>>>(
        partial, dy, x, cin, cout, B, V);
    CUDA_CHECK_LAUNCH();
    add_block_partials_kernel<float><<<grid_for((size_t)pairs), kThreads, 0, cuda_stream()>>>(
        dW, partial, pairs, kPointwiseBlocks);
    CUDA_CHECK_LAUNCH();
}

/* ---- the backend's entry points ---- */

bool cuda_pointwise_conv_runs(int Cin, int Cout, int k, int s, int pad)
{
    /* the weight gradient's threads: one output channel and kPointwiseRun inputs each */
    const int owners = Cout * ((Cin + kPointwiseRun - 1) / kPointwiseRun);
    return gpu_pointwise_conv() == POINTWISE_CONV_OWN && k == 1 && s == 1 && pad == 0 &&
           Cin >= 1 && Cout >= 1 && Cin <= kPointwiseMaxChannels &&
           Cout <= kPointwiseMaxChannels && owners <= kThreads;
}

void cuda_pointwise_conv_fwd(float *y, const float *x, const float *W, const float *b, int B,
                             int Cin, int Cout, long V)
{
    pointwise_map(y, x, W, b, Cin, Cout, B, V, false);
}

void cuda_pointwise_conv_bwd(float *dx, float *dW, float *db, const float *dy, const float *x,
                             const float *W, int B, int Cin, int Cout, long V)
{
    if (dx) pointwise_map(dx, dy, W, NULL, Cout, Cin, B, V, true);
    if (dW) pointwise_wgrad(dW, dy, x, Cin, Cout, B, V);
    if (db) cuda_channel_sums_accumulate(db, dy, B, Cout, V);
}
