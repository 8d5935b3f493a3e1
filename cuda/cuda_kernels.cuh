/* Building blocks shared by the kernels of the CUDA backend: launch sizes, warp/block
 * reductions, and DETERMINISTIC device-wide and column reductions (fixed block counts and a
 * fixed summation tree, no float atomics), so a run is bitwise repeatable and N ranks agree
 * with one rank to float tolerance. */
#ifndef ALICE_CUDA_KERNELS_CUH
#define ALICE_CUDA_KERNELS_CUH

#include <type_traits>

#include "cuda/cuda_bf16.cuh"
#include "cuda/cuda_context.h"

constexpr int kThreads = 256;
/* Blocks of a device-wide reduction: eight per SM of an H100 (132 SMs), a full SM of 256-thread
 * blocks, so that with kReduceUnroll loads per thread about 4 MB are in flight, what HBM3's
 * bandwidth times its latency needs (run 9, H200: two blocks per SM and one load at a time
 * summed the 0.42 GB of gradients in 593 us, at 0.7 TB/s). Fixed, so the tree (and the
 * rounding) does not depend on n. */
constexpr int kReduceBlocks = 1056;
constexpr int kReduceUnroll = 4;
/* Grid-stride loops cap the grid here; each thread then loops. */
constexpr size_t kMaxBlocks = 65536;

static inline unsigned grid_for(size_t n, int threads = kThreads)
{
    size_t g = (n + (size_t)threads - 1) / (size_t)threads;
    if (g < 1) g = 1;
    if (g > kMaxBlocks) g = kMaxBlocks;
    return (unsigned)g;
}

#define GRID_STRIDE(i, n) \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)(n); \
         i += (size_t)gridDim.x * blockDim.x)

/* ---- 16-byte vectorised elementwise access ----
 * Elementwise kernels move kVecBytes per load/store (one LDG.128/STG.128 instead of four or
 * eight narrow ones) when EVERY pointer they touch is 16-byte aligned: the host checks with
 * aligned16() and passes the answer as a flag, and grid_stride_split() runs the element range
 * [0, n) as whole chunks of W elements through vec_op(first) and the rest (the tail, or all
 * of it when not aligned) one element at a time through scalar_op(i). Both ops must compute
 * each element exactly as the scalar kernel did, so the vector path changes no result bit. */
constexpr int kVecBytes = 16;

template <typename... P> static inline bool aligned16(const P *...p)
{
    bool ok = true;
    /* unary fold over the pack (C++17) */
    ((ok = ok && ((uintptr_t)p % kVecBytes) == 0), ...);
    return ok;
}

/* W elements of T: the unit one thread loads or stores at once (alignment at most 16, the
 * most the pointers are checked for; 32-byte packs become two 16-byte accesses). */
template <typename T, int W> struct alignas(sizeof(T) * W < kVecBytes ? sizeof(T) * W : kVecBytes)
    Pack {
    T v[W];
};

template <typename T, int W> __device__ __forceinline__ Pack<T, W> load_pack(const T *p)
{
    return *reinterpret_cast<const Pack<T, W> *>(p);
}

template <typename T, int W> __device__ __forceinline__ void store_pack(T *p, const Pack<T, W> &v)
{
    *reinterpret_cast<Pack<T, W> *>(p) = v;
}

/* Launch size for grid_stride_split: one thread per chunk (plus one for the tail). */
static inline unsigned grid_for_split(size_t n, bool vectorised, int W)
{
    return grid_for(vectorised ? n / (size_t)W + 1 : n);
}

template <int W, class VecOp, class ScalarOp>
__device__ __forceinline__ void grid_stride_split(size_t n, bool vectorised, VecOp vec_op,
                                                  ScalarOp scalar_op)
{
    const size_t chunks = vectorised ? n / W : 0, done = chunks * W;
    GRID_STRIDE(c, chunks) vec_op(c * W);
    GRID_STRIDE(k, n - done) scalar_op(done + k);
}

/* The same split over one row of n elements owned by one block (row-per-block kernels: the
 * row's base offset and any per-row value are computed once, not per element). */
template <int W, class VecOp, class ScalarOp>
__device__ __forceinline__ void block_stride_split(int n, bool vectorised, VecOp vec_op,
                                                   ScalarOp scalar_op)
{
    const int chunks = vectorised ? n / W : 0, done = chunks * W;
    for (int c = (int)threadIdx.x; c < chunks; c += (int)blockDim.x) vec_op(c * W);
    for (int k = (int)threadIdx.x; k < n - done; k += (int)blockDim.x) scalar_op(done + k);
}

/* Threads for a block_stride_split over rows of n: enough warps for one pass, at most kThreads
 * (short rows do not launch idle warps). */
static inline int threads_for_row(int n, bool vectorised, int W)
{
    const int units = vectorised ? n / W + 1 : n;
    const int warps = (units + 31) / 32;
    return warps < 1 ? 32 : (warps * 32 > kThreads ? kThreads : warps * 32);
}

/* Per-plane elementwise kernels ([planes, V] tensors: instance norm, channel concat/split):
 * x over one plane's V elements (4 floats per 16-byte access where V % 4 == 0 and the buffers
 * are aligned), y over the planes, striding past the grid's limit, so a thread finds its
 * plane's base and values once instead of dividing its flat index by V (a 64-bit division)
 * for every element:
 *     for (int p = blockIdx.y; p < planes; p += gridDim.y) grid_stride_split<kPlanePerVec>(...)
 */
constexpr int kPlanePerVec = 4;
constexpr unsigned kMaxPlaneBlocksY = 65535;

static inline dim3 plane_grid(int planes, long V, bool vectorised)
{
    const unsigned ys = (unsigned)planes < kMaxPlaneBlocksY ? (unsigned)planes : kMaxPlaneBlocksY;
    return dim3(grid_for_split((size_t)V, vectorised, kPlanePerVec), ys);
}

/* Row-per-block kernels stride over rows with this many blocks at most. */
static inline unsigned grid_for_rows(size_t rows)
{
    return (unsigned)(rows < 1 ? 1 : (rows > kMaxBlocks ? kMaxBlocks : rows));
}

/* dst[p] += the sum over blocks 0, 1, ... (in that order, in double) of partial[blk * n + p]:
 * the second pass of a reduction whose blocks each wrote their own partials, so that the result
 * does not depend on timing (the own convolutions' weight gradients). */
template <typename T>
static __global__ void add_block_partials_kernel(T *dst, const T *partial, int n, int blocks)
{
    GRID_STRIDE(p, n) {
        double s = 0.0;
        for (int blk = 0; blk < blocks; blk++) s += partial[(size_t)blk * n + p];
        dst[p] += (T)s;
    }
}

template <typename T> __device__ __forceinline__ T warp_sum(T v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it. */
template <typename T> __device__ T block_sum(T v)
{
    __shared__ T partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();  /* a previous call may still be reading partial[0] */
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    const int warps = (int)(blockDim.x + 31) >> 5;
    if (warp == 0) {
        v = lane < warps ? partial[lane] : T(0);
        v = warp_sum(v);
        if (lane == 0) partial[0] = v;
    }
    __syncthreads();
    return partial[0];
}

__device__ inline float block_max(float v)
{
    __shared__ float partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    const int warps = (int)(blockDim.x + 31) >> 5;
    if (warp == 0) {
        v = lane < warps ? partial[lane] : -INFINITY;
        v = warp_max(v);
        if (lane == 0) partial[0] = v;
    }
    __syncthreads();
    return partial[0];
}

/* ---- device-wide sums returned to the host ---- */

/* partials[block] = sum over the block's grid-stride share of f(i), in double. Each thread
 * evaluates kReduceUnroll strided terms before adding any (their loads are independent, so
 * they are in flight together) into as many accumulators, summed in a fixed order at the end. */
template <class F> __global__ void reduce_partials_kernel(double *partials, size_t n, F f)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    double acc[kReduceUnroll] = {};
    for (; i + (kReduceUnroll - 1) * stride < n; i += kReduceUnroll * stride) {
        double term[kReduceUnroll];
#pragma unroll
        for (int u = 0; u < kReduceUnroll; u++) term[u] = (double)f(i + u * stride);
#pragma unroll
        for (int u = 0; u < kReduceUnroll; u++) acc[u] += term[u];
    }
    for (; i < n; i += stride) acc[0] += (double)f(i); /* at most kReduceUnroll - 1 terms */
    double total = 0.0;
#pragma unroll
    for (int u = 0; u < kReduceUnroll; u++) total += acc[u];
    total = block_sum(total);
    if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

/* Sums count partials on the device into partials[count] (the caller allocates count + 1),
 * copies the total to the host and synchronises. */
double cuda_reduce_finish(double *partials, int count);
/* Sums count partials on the device into partials[count]; no host synchronisation. */
void cuda_reduce_finish_on_device(double *partials, int count);
/* ratio[0] = (float)(sum of the count partials / d), d = den[0] if den else den_const, and 0
 * where d == 0 (one block, on the device: a loss value the step reads later). */
void cuda_reduce_finish_ratio(float *ratio, const double *partials, int count, const double *den,
                              double den_const);

/* target[c] += sum over b < B and v < V of x[(b C + c) V + v] (x is [B, C, V]): a bias
 * gradient; deterministic (cuda/cuda_norm.cu, "per-plane sums"). */
void cuda_channel_sums_accumulate(float *target, const float *x, int B, int C, long V);

/* The partial sums of f(i), i < n, into the SCRATCH_REDUCE buffer (kReduceBlocks of them, and
 * room for the total after them); returns the buffer. */
template <class F> double *device_sum_partials(size_t n, F f)
{
    double *partials = (double *)cuda_scratch(SCRATCH_REDUCE, (kReduceBlocks + 1) * sizeof(double));
    reduce_partials_kernel<<<kReduceBlocks, kThreads, 0, cuda_stream()>>>(partials, n, f);
    CUDA_CHECK_LAUNCH();
    return partials;
}

/* sum_{i<n} f(i) in double; synchronises (the value goes to the host). */
template <class F> double device_sum(size_t n, F f)
{
    return cuda_reduce_finish(device_sum_partials(n, f), kReduceBlocks);
}

/* ---- column sums accumulated into vectors: target[o][c] += sum_r f(r, c)[o] ----
 * ONE launch. Blocks of 32 columns x 8 row lanes each sum one chunk of rows (each lane a
 * strided share, then the 8 lanes in order) and write that chunk's partial; the LAST block of
 * a column tile to arrive (each block's partials are fenced before its arrival is counted)
 * then sums the tile's partials in chunk order and adds them to the targets (parameter
 * gradients accumulate). This is exactly the arithmetic of the former two launches (partial
 * kernel, then a finish kernel), so the bits are those of before: deterministic, no float
 * atomics. f(r, c) returns a float (one sum) or ColsumTerms<N> (N sums from one pass over the
 * rows, e.g. LayerNorm's dgamma and dbeta); f may also write a per-element side output (it is
 * called exactly once for every r < rows, c < cols). */
constexpr int kColsumCols = 32, kColsumLanes = 8;
/* Chunks of rows: enough to fill the GPU, each long enough to amortise its partial write. */
constexpr long kColsumRowsPerChunk = 128, kColsumMaxChunks = 512;
/* Rows a lane evaluates before adding them (in row order, so the sums keep their bits): their
 * loads are in flight together. One load per lane at a time left the column sums
 * latency-bound, it seems (run 10: fc1's GELU backward pass at about 2 TB/s by our count of
 * its bytes, a slope-table lookup behind each load of h), as the device-wide reduction was
 * before its kReduceUnroll. */
constexpr int kColsumUnroll = 4;

/* A functor may split f(r, c) into load(r, c) -> Loaded (every global read of the element) and
 * finish(r, c, Loaded) -> value (the arithmetic and any side output it stores), keeping
 * operator() = finish(load): the kernel then issues the loads of kColsumUnroll rows before it
 * stores any row's side output, which the compiler cannot do for it (as far as it knows, a
 * store may alias the next row's inputs). */
template <class F, class = void> struct ColsumStaged {
    static constexpr bool value = false;
};
template <class F> struct ColsumStaged<F, std::void_t<typename F::Loaded>> {
    static constexpr bool value = true;
};

template <int N> struct ColsumTerms {
    float v[N];
};
template <int N> struct ColsumTargets {
    float *t[N];
};
__device__ __forceinline__ ColsumTerms<1> colsum_terms(float x) { return ColsumTerms<1>{{x}}; }
template <int N> __device__ __forceinline__ ColsumTerms<N> colsum_terms(const ColsumTerms<N> &x)
{
    return x;
}

template <int N, class F>
__global__ void __launch_bounds__(kColsumCols * kColsumLanes)
    colsum_kernel(ColsumTargets<N> target, float *partial, unsigned *arrivals, long rows,
                  int cols, long rows_per_chunk, F f)
{
    __shared__ float lanes[N][kColsumLanes][kColsumCols + 1];
    __shared__ bool tile_complete;
    const int c = blockIdx.x * kColsumCols + threadIdx.x;
    const long r0 = (long)blockIdx.y * rows_per_chunk;
    const long r1 = min(rows, r0 + rows_per_chunk);
    float acc[N];
#pragma unroll
    for (int o = 0; o < N; o++) acc[o] = 0.0f;
    if (c < cols) {
        long r = r0 + threadIdx.y;
        for (; r + (kColsumUnroll - 1) * kColsumLanes < r1; r += kColsumUnroll * kColsumLanes) {
            ColsumTerms<N> x[kColsumUnroll];
            if constexpr (ColsumStaged<F>::value) {
                typename F::Loaded in[kColsumUnroll];
#pragma unroll
                for (int k = 0; k < kColsumUnroll; k++) in[k] = f.load(r + k * kColsumLanes, c);
#pragma unroll
                for (int k = 0; k < kColsumUnroll; k++)
                    x[k] = colsum_terms(f.finish(r + k * kColsumLanes, c, in[k]));
            } else {
#pragma unroll
                for (int k = 0; k < kColsumUnroll; k++)
                    x[k] = colsum_terms(f(r + k * kColsumLanes, c));
            }
#pragma unroll
            for (int k = 0; k < kColsumUnroll; k++)
#pragma unroll
                for (int o = 0; o < N; o++) acc[o] += x[k].v[o];
        }
        for (; r < r1; r += kColsumLanes) {
            const ColsumTerms<N> x = colsum_terms(f(r, c));
#pragma unroll
            for (int o = 0; o < N; o++) acc[o] += x.v[o];
        }
    }
#pragma unroll
    for (int o = 0; o < N; o++) lanes[o][threadIdx.y][threadIdx.x] = acc[o];
    __syncthreads();
    /* partial[o][chunk][c] */
    const unsigned chunks = gridDim.y;
    const size_t per_output = (size_t)chunks * cols;
    if (threadIdx.y == 0 && c < cols) {
#pragma unroll
        for (int o = 0; o < N; o++) {
            float t = 0.0f;
            for (int k = 0; k < kColsumLanes; k++) t += lanes[o][k][threadIdx.x];
            partial[o * per_output + (size_t)blockIdx.y * cols + c] = t;
        }
        __threadfence();  /* this block's partials are visible device-wide before it arrives */
    }
    __syncthreads();
    if (threadIdx.x == 0 && threadIdx.y == 0) {
        /* atomicInc stores (old >= chunks - 1 ? 0 : old + 1): the last arrival finds
         * chunks - 1 and leaves the counter at zero for the next column sum. Column sums run
         * one after another on the context's one stream (no kernel of the next starts before
         * every block of this one has finished), so they share the counters safely. */
        tile_complete = atomicInc(&arrivals[blockIdx.x], chunks - 1) == chunks - 1;
        if (tile_complete) __threadfence();  /* the others' partials are read after this */
    }
    __syncthreads();
    if (!tile_complete || threadIdx.y != 0 || c >= cols) return;
#pragma unroll
    for (int o = 0; o < N; o++) {
        float t = 0.0f;
        /* __ldcg: from L2, never from a line this SM's L1 may hold from an earlier kernel */
        for (unsigned k = 0; k < chunks; k++)
            t += __ldcg(partial + o * per_output + (size_t)k * cols + c);
        target.t[o][c] += t;
    }
}

/* The arrival counters for tiles column tiles, all zero (cuda_reduce.cu). */
unsigned *cuda_colsum_arrivals(unsigned tiles);

template <int N, class F> void colsum_launch(ColsumTargets<N> target, long rows, int cols, F f)
{
    if (cols <= 0) return;
    long chunks = (rows + kColsumRowsPerChunk - 1) / kColsumRowsPerChunk;
    if (chunks < 1) chunks = 1;
    if (chunks > kColsumMaxChunks) chunks = kColsumMaxChunks;
    const long per_chunk = (rows + chunks - 1) / chunks;
    chunks = rows > 0 ? (rows + per_chunk - 1) / per_chunk : 1;
    float *partial =
        (float *)cuda_scratch(SCRATCH_COLSUM, (size_t)N * chunks * cols * sizeof(float));
    const unsigned tiles = (unsigned)((cols + kColsumCols - 1) / kColsumCols);
    unsigned *arrivals = cuda_colsum_arrivals(tiles);
    dim3 block(kColsumCols, kColsumLanes), grid(tiles, (unsigned)chunks);
    colsum_kernel<N, F><<<grid, block, 0, cuda_stream()>>>(target, partial, arrivals, rows, cols,
                                                           rows > 0 ? per_chunk : 0, f);
    CUDA_CHECK_LAUNCH();
}

/* target[c] += sum_r f(r, c) */
template <class F> void colsum_accumulate(float *target, long rows, int cols, F f)
{
    if (target) colsum_launch(ColsumTargets<1>{{target}}, rows, cols, f);
}

/* first[c] += sum_r f(r, c).v[0], second[c] += sum_r f(r, c).v[1]: one pass over the rows. */
template <class F>
void colsum2_accumulate(float *first, float *second, long rows, int cols, F f)
{
    colsum_launch(ColsumTargets<2>{{first, second}}, rows, cols, f);
}

/* f(r, c) = m[r * ld + c] */
struct MatrixElement {
    const float *m;
    long ld;
    __device__ float operator()(long r, int c) const { return m[r * ld + c]; }
};

/* f(r, c) = m[r * ld + c], and rounded[r * ld + c] = that value in bf16 (nearest even, as
 * cuda_round_to_bf16): a column sum that also makes the bf16 copy of m in the same pass. */
struct MatrixElementRoundedCopy {
    const float *m;
    long ld;
    __nv_bfloat16 *rounded;
    using Loaded = float;  /* staged (ColsumStaged): the element */
    __device__ float load(long r, int c) const { return m[r * ld + c]; }
    __device__ float finish(long r, int c, float v) const
    {
        rounded[r * ld + c] = __float2bfloat16_rn(v);
        return v;
    }
    __device__ float operator()(long r, int c) const { return finish(r, c, load(r, c)); }
};

#endif
