/* Fused ("flash-attention-2" style) multi-head attention of the CUDA backend, selected by
 * gpu_set_attention(ATTN_KERNEL_FUSED) (config key attention_kernel = fused).
 *
 * Forward: one block per (batch*head, tile of query rows). The query tile stays in shared
 * memory; key/value tiles stream through it; scores of one tile are turned into unnormalised
 * probabilities by the online softmax (src/ops/flash_attention_math.h, the same functions the
 * plain-C model in tests/unit/test_flash_tiling.c runs), the output accumulator is rescaled
 * and P V added. Only the row logsumexp [B, H, Tq] is saved for backward, instead of the
 * probabilities [B, H, Tq, Tk].
 *
 * Backward recomputes P = exp(S - lse) tile by tile:
 *   1. D = rowsum(dO * O) per (b, h, row) (one warp per row);
 *   2. one block per (batch*head, key tile): dV += P^T dO and dK += scale dS^T Q accumulated
 *      over every query tile in shared memory, written once;
 *   3. one block per (batch*head, query tile): dQ += scale dS K over every key tile.
 * dQ gets its own pass instead of fp32 atomicAdd from step 2: it recomputes S and dP once more
 * (about 2/5 more backward FLOPs) but is DETERMINISTIC (fixed summation order, like every
 * reduction of this backend, so runs are bitwise repeatable and N ranks match one rank), and it
 * writes dq straight into the strided (packed qkv) gradient without a zeroed fp32 scratch.
 *
 * Tiles: head dims are padded with zeros to a multiple of 16; 64 query rows / 64 keys per
 * tile for Dh <= 64, 32 beyond (shared memory: see tile_for). 128 threads per block: in fp32
 * each owns 4x4 outputs of a tile product, in bf16 each of the 4 warps owns 16x16 fragments;
 * the per-row softmax work is split among 128 / tile adjacent threads per row. Templated on Dh (8, 16, 24, 32, 64: the
 * configs and tests) with a runtime-Dh fallback up to kFlashMaxDh; larger heads (CASA's single
 * 768-wide head) keep the GEMM path, and attention_saved_floats says so to the arena planner.
 *
 * Without a GPU, tests/cuda_emu runs these kernels on the CPU through a host emulation of the
 * CUDA subset used here; tests/unit/test_flash_tiling.c models the algorithm in plain C.
 *
 * Precision: fp32 mode computes every tile product in fp32 on the CUDA cores (parity with the
 * CPU to ~1e-5). With gpu_set_math(bf16_gemm = 1) the operand tiles are stored as bf16 in
 * shared memory and multiplied on tensor cores (nvcuda::wmma 16x16x16, fp32 accumulate);
 * softmax statistics, accumulators, lse and D stay fp32.
 *
 * bf16 activations (attention_fwd_bf16 / attention_bwd_bf16): the kernels are templated on the
 * element type of q, k, v and out as well (TAct); bf16 inputs load into the bf16 tiles without
 * a conversion pass, out is rounded once when stored and widened when backward reads it. Those
 * entries always use the bf16 tensor-core tiles (T = TAct = bf16); dout stays fp32 and is
 * rounded as it is loaded into its tile. */
#include <cuda_bf16.h>
#include <mma.h>

#include <type_traits>

#include "cuda/cuda_kernels.cuh"  /* and cuda/cuda_bf16.cuh: widen, narrow_to, as_nv */
#include "cuda/cuda_flash_bwd_mma.cuh"
#include "cuda/cuda_flash_fwd_mma.cuh"
#include "cuda/cuda_ops.h"
#include "ops/attention_choice.h"
#include "ops/flash_attention_math.h"
#include "ops/gpu_device.h"

namespace {

constexpr int kFlashThreads = 128;
constexpr int kFlashMaxDh = ATTN_FLASH_MAX_DH;  /* the widest head the choice sends here */
constexpr int kMmaEdge = 16;       /* wmma fragment edge; head dims are padded to it */
constexpr int kSmemAlign = 128;    /* start of every shared-memory array (wmma needs 32 B) */

int g_attention_kernel = ATTN_KERNEL_GEMM;

__host__ __device__ constexpr int round_up(int x, int m) { return (x + m - 1) / m * m; }

/* Query rows / keys per tile. Shared memory at 64 (Dh 64): forward 84 KiB fp32 / 71 KiB bf16
 * (two or three blocks per H100 SM), dK/dV pass 134 / 123 KiB, dQ pass 117 / 106 KiB; at 32
 * (Dh up to 128) at most 107 KiB. The sm_90 limit is 227 KiB per block. */
__host__ __device__ constexpr int tile_for(int dh_padded) { return dh_padded <= 64 ? 64 : 32; }

/* ---- operand element types: fp32 (CUDA cores) or bf16 (tensor cores) ---- */

template <typename T> struct Operand;
template <> struct Operand<float> {
    /* odd leading dimension: column walks of a row-major tile hit different banks */
    static constexpr int kPad = 1;
    static __device__ __forceinline__ float make(float x) { return x; }
};
template <> struct Operand<__nv_bfloat16> {
    /* wmma wants leading dimensions that are multiples of 8 bf16 (16 bytes) */
    static constexpr int kPad = 8;
    static __device__ __forceinline__ __nv_bfloat16 make(float x) { return __float2bfloat16(x); }
};

/* Shared memory of one kernel: n_op operand tiles [tile][dhp] of type T, n_score fp32 score
 * tiles [tile][tile], their bf16 copies (the next product's operand; in fp32 mode the score
 * tile itself is the operand), n_acc fp32 accumulators [tile][dhp] and n_vec row vectors
 * [tile]. Same arithmetic on host (launch size) and device (carving). */
struct FlashLayout {
    int ld_op, ld_score, ld_conv, ld_acc;
    unsigned op, score, conv, acc, vec, bytes;              /* byte offsets, total */
    unsigned op_bytes, score_bytes, conv_bytes, acc_bytes;  /* one tile of each kind */
};

__host__ __device__ constexpr unsigned align_up(unsigned x) { return (x + kSmemAlign - 1) / kSmemAlign * kSmemAlign; }

template <typename T>
__host__ __device__ FlashLayout flash_layout(int dhp, int tile, int n_op, int n_score, int n_acc,
                                             int n_vec)
{
    constexpr bool kConvert = !std::is_same<T, float>::value;
    FlashLayout L;
    L.ld_op = dhp + Operand<T>::kPad;
    L.ld_score = tile + 4;  /* multiple of 4 floats (wmma accumulator loads/stores) */
    L.ld_conv = kConvert ? tile + Operand<T>::kPad : L.ld_score;
    L.ld_acc = dhp + 4;
    L.op_bytes = align_up((unsigned)(tile * L.ld_op * sizeof(T)));
    L.score_bytes = align_up((unsigned)(tile * L.ld_score * sizeof(float)));
    L.conv_bytes = kConvert ? align_up((unsigned)(tile * L.ld_conv * sizeof(T))) : 0;
    L.acc_bytes = align_up((unsigned)(tile * L.ld_acc * sizeof(float)));
    L.op = 0;
    L.score = L.op + n_op * L.op_bytes;
    L.conv = L.score + n_score * L.score_bytes;
    L.acc = L.conv + n_score * L.conv_bytes;
    L.vec = L.acc + n_acc * L.acc_bytes;
    L.bytes = L.vec + align_up((unsigned)(n_vec * tile * sizeof(float)));
    return L;
}

/* Carving helpers: tile i of each kind. Score tiles as operands: their bf16 copies, or
 * themselves in fp32 mode. */
struct Carver {
    unsigned char *base;
    FlashLayout L;
    template <typename T> __device__ T *op(int i) const { return (T *)(base + L.op + i * L.op_bytes); }
    __device__ float *score(int i) const { return (float *)(base + L.score + i * L.score_bytes); }
    template <typename T> __device__ T *score_operand(int i) const
    {
        if constexpr (std::is_same<T, float>::value) return score(i);
        else return (T *)(base + L.conv + i * L.conv_bytes);
    }
    __device__ float *acc(int i) const { return (float *)(base + L.acc + i * L.acc_bytes); }
    __device__ float *vec(int i, int tile) const { return (float *)(base + L.vec) + i * tile; }
};

/* ---- block-wide tile products: C[M, N] = alpha A B (+ C when accumulate) ----
 * A(m, k) = kAT ? A[k lda + m] : A[m lda + k];  B(k, n) = kBT ? B[n ldb + k] : B[k ldb + n].
 * M, N, K are multiples of 16. Every thread of the block must call (no early returns). */

/* fp32: each thread owns 4x4 outputs (16 FMAs per 8 shared loads). */
template <bool kAT, bool kBT>
__device__ __forceinline__ void tile_mma(float *C, int ldc, const float *A, int lda,
                                         const float *B, int ldb, int M, int N, int K,
                                         float alpha, bool accumulate)
{
    const int tiles_n = N / 4, tiles = (M / 4) * tiles_n;
    for (int t = threadIdx.x; t < tiles; t += blockDim.x) {
        const int r0 = (t / tiles_n) * 4, c0 = (t % tiles_n) * 4;
        float acc[4][4] = {};
        for (int k = 0; k < K; k++) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; i++) a[i] = kAT ? A[k * lda + r0 + i] : A[(r0 + i) * lda + k];
#pragma unroll
            for (int j = 0; j < 4; j++) b[j] = kBT ? B[(c0 + j) * ldb + k] : B[k * ldb + c0 + j];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) {
                float *c = C + (r0 + i) * ldc + c0 + j;
                *c = accumulate ? *c + alpha * acc[i][j] : alpha * acc[i][j];
            }
    }
}

/* bf16 operands on tensor cores: each warp owns 16x16 output fragments, fp32 accumulate. */
template <bool kAT, bool kBT>
__device__ __forceinline__ void tile_mma(float *C, int ldc, const __nv_bfloat16 *A, int lda,
                                         const __nv_bfloat16 *B, int ldb, int M, int N, int K,
                                         float alpha, bool accumulate)
{
    namespace wmma = nvcuda::wmma;
    using LayoutA = typename std::conditional<kAT, wmma::col_major, wmma::row_major>::type;
    using LayoutB = typename std::conditional<kBT, wmma::col_major, wmma::row_major>::type;
    const int warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const int tiles_n = N / kMmaEdge, tiles = (M / kMmaEdge) * tiles_n;
    for (int t = warp; t < tiles; t += warps) {
        const int r0 = (t / tiles_n) * kMmaEdge, c0 = (t % tiles_n) * kMmaEdge;
        wmma::fragment<wmma::accumulator, kMmaEdge, kMmaEdge, kMmaEdge, float> acc;
        wmma::fill_fragment(acc, 0.0f);
        for (int k = 0; k < K; k += kMmaEdge) {
            wmma::fragment<wmma::matrix_a, kMmaEdge, kMmaEdge, kMmaEdge, __nv_bfloat16, LayoutA> a;
            wmma::fragment<wmma::matrix_b, kMmaEdge, kMmaEdge, kMmaEdge, __nv_bfloat16, LayoutB> b;
            wmma::load_matrix_sync(a, kAT ? A + k * lda + r0 : A + r0 * lda + k, lda);
            wmma::load_matrix_sync(b, kBT ? B + c0 * ldb + k : B + k * ldb + c0, ldb);
            wmma::mma_sync(acc, a, b, acc);
        }
        float *cp = C + r0 * ldc + c0;
        if (accumulate) {
            /* same fragment type and layout, so element i of both is the same (row, col) */
            wmma::fragment<wmma::accumulator, kMmaEdge, kMmaEdge, kMmaEdge, float> prev;
            wmma::load_matrix_sync(prev, cp, ldc, wmma::mem_row_major);
            for (int i = 0; i < acc.num_elements; i++) acc.x[i] = prev.x[i] + alpha * acc.x[i];
        } else {
            for (int i = 0; i < acc.num_elements; i++) acc.x[i] *= alpha;
        }
        wmma::store_matrix_sync(cp, acc, ldc, wmma::mem_row_major);
    }
}

/* ---- global <-> shared ---- */

/* dst[r][c] = src[r ld_src + c] for r < rows_valid, c < dh; zero in the padding (rows up to
 * tile, columns up to dhp), so padded keys/rows/dims contribute nothing to any product.
 * TSrc: fp32 or bf16 in global memory (a bf16 source into a bf16 tile is copied exactly). */
template <typename T, typename TSrc>
__device__ __forceinline__ void load_tile(T *dst, int ld_dst, const TSrc *src, long ld_src,
                                          int rows_valid, int tile, int dh, int dhp)
{
    for (int i = threadIdx.x; i < tile * dhp; i += blockDim.x) {
        const int r = i / dhp, c = i % dhp;
        const float x = (r < rows_valid && c < dh) ? widen(src[(long)r * ld_src + c]) : 0.0f;
        dst[r * ld_dst + c] = Operand<T>::make(x);
    }
}

__device__ __forceinline__ void zero_acc(float *acc, int ld, int tile, int dhp)
{
    for (int i = threadIdx.x; i < tile * dhp; i += blockDim.x) acc[(i / dhp) * ld + i % dhp] = 0.0f;
}

/* dst[r ld_dst + c] = acc[r][c] (times row_scale[r] when given) for r < rows, c < dh, rounded
 * once when TOut is bf16. */
template <typename TOut>
__device__ __forceinline__ void store_rows(TOut *dst, long ld_dst, const float *acc, int ld_acc,
                                           const float *row_scale, int rows, int dh)
{
    for (int i = threadIdx.x; i < rows * dh; i += blockDim.x) {
        const int r = i / dh, c = i % dh;
        dst[(long)r * ld_dst + c] =
            narrow_to<TOut>(acc[r * ld_acc + c] * (row_scale ? row_scale[r] : 1.0f));
    }
}

/* bf16 mode: copy this part's columns of a finished fp32 score row into its operand tile
 * (no-op in fp32 mode, where the score tile is the operand). */
template <typename T>
__device__ __forceinline__ void convert_part(T *dst, const float *src, int part, int parts, int n)
{
    if constexpr (!std::is_same<T, float>::value)
        for (int j = part; j < n; j += parts) dst[j] = Operand<T>::make(src[j]);
    else
        (void)dst, (void)src, (void)part, (void)parts, (void)n;
}

/* The kParts adjacent lanes that share a row combine their partial maxima / sums (butterfly,
 * the order src/ops/flash_attention_math.h describes: every part ends with the same bits). */
template <int kParts> __device__ __forceinline__ float parts_max(float v)
{
    for (int o = 1; o < kParts; o <<= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
template <int kParts> __device__ __forceinline__ float parts_sum(float v)
{
    for (int o = 1; o < kParts; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* ---- forward ---- */

template <typename T, typename TAct, int kDh, int kTile>
__global__ void __launch_bounds__(kFlashThreads)
flash_fwd_kernel(TAct *out, float *lse, const TAct *q, const TAct *k, const TAct *v, int H,
                 int Tq, int Tk, int dh_runtime, int ldq, int ldkv, float scale)
{
    extern __shared__ __align__(kSmemAlign) unsigned char smem[];
    const int dh = kDh ? kDh : dh_runtime, dhp = round_up(dh, kMmaEdge);
    const int bh = blockIdx.x, b = bh / H, h = bh % H;
    const int row0 = blockIdx.y * kTile, rows = min(kTile, Tq - row0);
    /* kParts threads per row for the softmax work (adjacent lanes: shuffles combine them) */
    constexpr int kParts = kFlashThreads / kTile;
    static_assert(kParts * kTile == kFlashThreads && kParts <= 32, "rows must tile the block");
    const int my_row = threadIdx.x / kParts, my_part = threadIdx.x % kParts;
    const Carver sm{smem, flash_layout<T>(dhp, kTile, 3, 1, 1, 3)};
    T *Qs = sm.op<T>(0), *Ks = sm.op<T>(1), *Vs = sm.op<T>(2);
    float *S = sm.score(0), *O = sm.acc(0);
    T *P = sm.score_operand<T>(0);
    float *m = sm.vec(0, kTile), *l = sm.vec(1, kTile), *inv_sum = sm.vec(2, kTile);
    const int ld_op = sm.L.ld_op, ld_s = sm.L.ld_score, ld_p = sm.L.ld_conv, ld_o = sm.L.ld_acc;

    load_tile(Qs, ld_op, q + ((long)b * Tq + row0) * ldq + h * dh, ldq, rows, kTile, dh, dhp);
    zero_acc(O, ld_o, kTile, dhp);
    for (int r = threadIdx.x; r < kTile; r += blockDim.x) flash_row_init(&m[r], &l[r]);
    for (int key0 = 0; key0 < Tk; key0 += kTile) {
        const int keys = min(kTile, Tk - key0);
        const long kv_off = ((long)b * Tk + key0) * ldkv + h * dh;
        __syncthreads();  /* the previous tile's products are done with Ks, Vs, P */
        load_tile(Ks, ld_op, k + kv_off, ldkv, keys, kTile, dh, dhp);
        load_tile(Vs, ld_op, v + kv_off, ldkv, keys, kTile, dh, dhp);
        __syncthreads();
        tile_mma<false, true>(S, ld_s, Qs, ld_op, Ks, ld_op, kTile, kTile, dhp, scale, false);
        __syncthreads();
        {  /* online softmax of this tile, every thread on its part of its row; the row's parts
            * also rescale its output accumulator (no other thread touches O in this phase) */
            float *srow = S + my_row * ld_s, *orow = O + my_row * ld_o;
            float m_row = m[my_row], l_row = l[my_row];  /* read before the shuffles below */
            const float m_new = flash_row_new_max(
                m_row, parts_max<kParts>(flash_part_max(srow, my_part, kParts, keys)));
            const float sum =
                parts_sum<kParts>(flash_part_exp(srow, my_part, kParts, keys, kTile, m_new));
            const float row_rescale = flash_row_commit(&m_row, &l_row, m_new, sum);
            /* The shuffles order nothing in memory: without this barrier the compiler may sink
             * another part's read of m/l below part 0's write (a data race), and that part
             * would rescale its output columns by 1 instead of exp(m - m'). */
            __syncwarp();
            if (my_part == 0) m[my_row] = m_row, l[my_row] = l_row;
            for (int c = my_part; c < dhp; c += kParts) orow[c] *= row_rescale;
            convert_part(P + my_row * ld_p, srow, my_part, kParts, kTile);
        }
        __syncthreads();
        tile_mma<false, false>(O, ld_o, P, ld_p, Vs, ld_op, kTile, dhp, kTile, 1.0f, true);
    }
    __syncthreads();
    for (int r = threadIdx.x; r < rows; r += blockDim.x) {
        if (lse) lse[(long)bh * Tq + row0 + r] = flash_row_lse(m[r], l[r]);
        inv_sum[r] = flash_row_inv_sum(l[r]);
    }
    __syncthreads();
    store_rows(out + ((long)b * Tq + row0) * H * dh + h * dh, (long)H * dh, O, ld_o, inv_sum,
               rows, dh);
}

/* ---- backward ---- */

/* D[(b H + h) Tq + t] = sum_d dO[b, t, h Dh + d] O[b, t, h Dh + d]; one warp per row. */
template <typename TAct>
__global__ void flash_rowdot_kernel(float *D, const float *dout, const TAct *out, int B, int H,
                                    int Tq, int dh)
{
    const int warps = blockDim.x >> 5, lane = threadIdx.x & 31;
    const long row = (long)blockIdx.x * warps + (threadIdx.x >> 5);
    if (row >= (long)B * Tq * H) return;
    const long b = row / ((long)Tq * H), t = (row / H) % Tq, h = row % H;
    const long off = (b * Tq + t) * H * dh + h * dh;
    float s = 0.0f;
    for (int d = lane; d < dh; d += 32) s += dout[off + d] * widen(out[off + d]);
    s = warp_sum(s);
    if (lane == 0) D[(b * H + h) * Tq + t] = s;
}

/* S = scale Q K^T and dP = dO V^T for one (query tile, key tile), then in place P and dS. */
template <typename T>
__device__ __forceinline__ void scores_and_dscores(float *S, float *dP, T *P_op, T *dS_op,
                                                   const FlashLayout &L, const T *Qs,
                                                   const T *dOs, const T *Ks, const T *Vs,
                                                   const float *lse, const float *D, int rows,
                                                   int keys, int tile, int dhp, float scale)
{
    tile_mma<false, true>(S, L.ld_score, Qs, L.ld_op, Ks, L.ld_op, tile, tile, dhp, scale, false);
    tile_mma<false, true>(dP, L.ld_score, dOs, L.ld_op, Vs, L.ld_op, tile, tile, dhp, 1.0f, false);
    __syncthreads();
    {  /* blockDim.x / tile threads per row, each on its part of the columns */
        const int parts = (int)blockDim.x / tile, r = threadIdx.x / parts, part = threadIdx.x % parts;
        float *s = S + r * L.ld_score, *dp = dP + r * L.ld_score;
        flash_part_recompute_p(s, lse[r], r < rows, part, parts, keys, tile);
        flash_part_dscores(dp, s, D[r], part, parts, tile);
        if (P_op) convert_part(P_op + r * L.ld_conv, s, part, parts, tile);
        convert_part(dS_op + r * L.ld_conv, dp, part, parts, tile);
    }
    __syncthreads();
}

/* lse and D of one query tile into shared memory (padding rows: 0, their P is 0 anyway). */
__device__ __forceinline__ void load_row_stats(float *lse_s, float *D_s, const float *lse,
                                               const float *D, long base, int rows, int tile)
{
    for (int r = threadIdx.x; r < tile; r += blockDim.x) {
        lse_s[r] = r < rows ? lse[base + r] : 0.0f;
        D_s[r] = r < rows ? D[base + r] : 0.0f;
    }
}

template <typename T, typename TAct, int kDh, int kTile, typename TGrad>
__global__ void __launch_bounds__(kFlashThreads)
flash_bwd_dkv_kernel(TGrad *dk, TGrad *dv, const float *dout, const TAct *q, const TAct *k,
                     const TAct *v, const float *lse, const float *D, int H, int Tq, int Tk,
                     int dh_runtime, int ldq, int ldkv, float scale)
{
    extern __shared__ __align__(kSmemAlign) unsigned char smem[];
    const int dh = kDh ? kDh : dh_runtime, dhp = round_up(dh, kMmaEdge);
    const int bh = blockIdx.x, b = bh / H, h = bh % H, C = H * dh;
    const int key0 = blockIdx.y * kTile, keys = min(kTile, Tk - key0);
    const Carver sm{smem, flash_layout<T>(dhp, kTile, 4, 2, 2, 2)};
    T *Ks = sm.op<T>(0), *Vs = sm.op<T>(1), *Qs = sm.op<T>(2), *dOs = sm.op<T>(3);
    float *S = sm.score(0), *dP = sm.score(1), *dK = sm.acc(0), *dV = sm.acc(1);
    T *P = sm.score_operand<T>(0), *dS = sm.score_operand<T>(1);
    float *lse_s = sm.vec(0, kTile), *D_s = sm.vec(1, kTile);
    const FlashLayout &L = sm.L;
    const long kv_off = ((long)b * Tk + key0) * ldkv + h * dh;

    load_tile(Ks, L.ld_op, k + kv_off, ldkv, keys, kTile, dh, dhp);
    load_tile(Vs, L.ld_op, v + kv_off, ldkv, keys, kTile, dh, dhp);
    zero_acc(dK, L.ld_acc, kTile, dhp);
    zero_acc(dV, L.ld_acc, kTile, dhp);
    for (int row0 = 0; row0 < Tq; row0 += kTile) {
        const int rows = min(kTile, Tq - row0);
        __syncthreads();  /* the previous query tile's products are done */
        load_tile(Qs, L.ld_op, q + ((long)b * Tq + row0) * ldq + h * dh, ldq, rows, kTile, dh, dhp);
        load_tile(dOs, L.ld_op, dout + ((long)b * Tq + row0) * C + h * dh, C, rows, kTile, dh, dhp);
        load_row_stats(lse_s, D_s, lse, D, (long)bh * Tq + row0, rows, kTile);
        __syncthreads();
        scores_and_dscores(S, dP, P, dS, L, Qs, dOs, Ks, Vs, lse_s, D_s, rows, keys, kTile, dhp,
                           scale);
        /* dV += P^T dO, dK += scale dS^T Q (the two write different accumulators) */
        tile_mma<true, false>(dV, L.ld_acc, P, L.ld_conv, dOs, L.ld_op, kTile, dhp, kTile, 1.0f,
                              true);
        tile_mma<true, false>(dK, L.ld_acc, dS, L.ld_conv, Qs, L.ld_op, kTile, dhp, kTile, scale,
                              true);
    }
    __syncthreads();
    if (dk) store_rows(dk + kv_off, ldkv, dK, L.ld_acc, nullptr, keys, dh);
    if (dv) store_rows(dv + kv_off, ldkv, dV, L.ld_acc, nullptr, keys, dh);
}

template <typename T, typename TAct, int kDh, int kTile, typename TGrad>
__global__ void __launch_bounds__(kFlashThreads)
flash_bwd_dq_kernel(TGrad *dq, const float *dout, const TAct *q, const TAct *k, const TAct *v,
                    const float *lse, const float *D, int H, int Tq, int Tk, int dh_runtime,
                    int ldq, int ldkv, float scale)
{
    extern __shared__ __align__(kSmemAlign) unsigned char smem[];
    const int dh = kDh ? kDh : dh_runtime, dhp = round_up(dh, kMmaEdge);
    const int bh = blockIdx.x, b = bh / H, h = bh % H, C = H * dh;
    const int row0 = blockIdx.y * kTile, rows = min(kTile, Tq - row0);
    const Carver sm{smem, flash_layout<T>(dhp, kTile, 4, 2, 1, 2)};
    T *Qs = sm.op<T>(0), *dOs = sm.op<T>(1), *Ks = sm.op<T>(2), *Vs = sm.op<T>(3);
    float *S = sm.score(0), *dP = sm.score(1), *dQ = sm.acc(0);
    T *dS = sm.score_operand<T>(1);
    float *lse_s = sm.vec(0, kTile), *D_s = sm.vec(1, kTile);
    const FlashLayout &L = sm.L;
    const long q_off = ((long)b * Tq + row0) * ldq + h * dh;

    load_tile(Qs, L.ld_op, q + q_off, ldq, rows, kTile, dh, dhp);
    load_tile(dOs, L.ld_op, dout + ((long)b * Tq + row0) * C + h * dh, C, rows, kTile, dh, dhp);
    load_row_stats(lse_s, D_s, lse, D, (long)bh * Tq + row0, rows, kTile);
    zero_acc(dQ, L.ld_acc, kTile, dhp);
    for (int key0 = 0; key0 < Tk; key0 += kTile) {
        const int keys = min(kTile, Tk - key0);
        const long kv_off = ((long)b * Tk + key0) * ldkv + h * dh;
        __syncthreads();
        load_tile(Ks, L.ld_op, k + kv_off, ldkv, keys, kTile, dh, dhp);
        load_tile(Vs, L.ld_op, v + kv_off, ldkv, keys, kTile, dh, dhp);
        __syncthreads();
        scores_and_dscores(S, dP, (T *)nullptr, dS, L, Qs, dOs, Ks, Vs, lse_s, D_s, rows, keys,
                           kTile, dhp, scale);
        tile_mma<false, false>(dQ, L.ld_acc, dS, L.ld_conv, Ks, L.ld_op, kTile, dhp, kTile, scale,
                               true);
    }
    __syncthreads();
    store_rows(dq + q_off, ldq, dQ, L.ld_acc, nullptr, rows, dh);
}

/* ---- launches ---- */

/* Kernels above 48 KiB of dynamic shared memory must opt in, once per kernel (templated on
 * the kernel itself, not its pointer type, so every instantiation has its own record). */
template <auto kKernel>
void allow_smem(unsigned bytes)
{
    static unsigned allowed = 0;
    if (bytes <= allowed) return;
    CUDA_CHECK(cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)bytes));
    allowed = bytes;
}

struct FlashArgs {
    int B, H, Tq, Tk, Dh, ldq, ldkv;
    float scale;
};

template <typename T, typename TAct, int kDh>
void launch_fwd(TAct *out, float *lse, const TAct *q, const TAct *k, const TAct *v,
                const FlashArgs &a)
{
    const int dhp = round_up(a.Dh, kMmaEdge);
    constexpr int kTile = tile_for(kDh ? round_up(kDh, kMmaEdge) : kFlashMaxDh);
    const FlashLayout L = flash_layout<T>(dhp, kTile, 3, 1, 1, 3);
    auto kernel = flash_fwd_kernel<T, TAct, kDh, kTile>;
    allow_smem<flash_fwd_kernel<T, TAct, kDh, kTile>>(L.bytes);
    const dim3 grid((unsigned)(a.B * a.H), (unsigned)((a.Tq + kTile - 1) / kTile));
    kernel<<<grid, kFlashThreads, L.bytes, cuda_stream()>>>(out, lse, q, k, v, a.H, a.Tq, a.Tk,
                                                            a.Dh, a.ldq, a.ldkv, a.scale);
    CUDA_CHECK_LAUNCH();
}

template <typename T, typename TAct, int kDh, typename TGrad>
void launch_bwd(TGrad *dq, TGrad *dk, TGrad *dv, const float *dout, const TAct *q,
                const TAct *k, const TAct *v, const float *lse, const float *D,
                const FlashArgs &a)
{
    const int dhp = round_up(a.Dh, kMmaEdge);
    constexpr int kTile = tile_for(kDh ? round_up(kDh, kMmaEdge) : kFlashMaxDh);
    if (dk || dv) {
        const FlashLayout L = flash_layout<T>(dhp, kTile, 4, 2, 2, 2);
        auto kernel = flash_bwd_dkv_kernel<T, TAct, kDh, kTile, TGrad>;
        allow_smem<flash_bwd_dkv_kernel<T, TAct, kDh, kTile, TGrad>>(L.bytes);
        const dim3 grid((unsigned)(a.B * a.H), (unsigned)((a.Tk + kTile - 1) / kTile));
        kernel<<<grid, kFlashThreads, L.bytes, cuda_stream()>>>(
            dk, dv, dout, q, k, v, lse, D, a.H, a.Tq, a.Tk, a.Dh, a.ldq, a.ldkv, a.scale);
        CUDA_CHECK_LAUNCH();
    }
    if (dq) {
        const FlashLayout L = flash_layout<T>(dhp, kTile, 4, 2, 1, 2);
        auto kernel = flash_bwd_dq_kernel<T, TAct, kDh, kTile, TGrad>;
        allow_smem<flash_bwd_dq_kernel<T, TAct, kDh, kTile, TGrad>>(L.bytes);
        const dim3 grid((unsigned)(a.B * a.H), (unsigned)((a.Tq + kTile - 1) / kTile));
        kernel<<<grid, kFlashThreads, L.bytes, cuda_stream()>>>(
            dq, dout, q, k, v, lse, D, a.H, a.Tq, a.Tk, a.Dh, a.ldq, a.ldkv, a.scale);
        CUDA_CHECK_LAUNCH();
    }
}

/* 16-byte loads of rows of elem_bytes-sized elements need every row start aligned: the
 * pointer, the row stride and the head offset (h * Dh). */
bool rows_aligned16(const void *p, long ld, int dh, size_t elem_bytes)
{
    return ((uintptr_t)p & 15u) == 0 && ((size_t)ld * elem_bytes) % 16 == 0 &&
           ((size_t)dh * elem_bytes) % 16 == 0;
}

/* The register-resident bf16 forward (cuda/cuda_flash_fwd_mma.cuh), head widths 32 and 64. */
template <typename TAct, int kDh>
void launch_fwd_mma(TAct *out, float *lse, const TAct *q, const TAct *k, const TAct *v,
                    const FlashArgs &a)
{
    const bool vec = rows_aligned16(q, a.ldq, kDh, sizeof(TAct)) &&
                     rows_aligned16(k, a.ldkv, kDh, sizeof(TAct)) &&
                     rows_aligned16(v, a.ldkv, kDh, sizeof(TAct));
    const unsigned bytes = flash_mma::smem_bytes(kDh, 3, 0);  /* 27 KiB at Dh 64: no opt-in */
    const dim3 grid((unsigned)(a.B * a.H),
                    (unsigned)((a.Tq + flash_mma::kRows - 1) / flash_mma::kRows));
    auto kernel = flash_mma::flash_fwd_mma_kernel<kDh, TAct>;
    kernel<<<grid, flash_mma::kThreads, bytes, cuda_stream()>>>(out, lse, q, k, v, a.H, a.Tq, a.Tk,
                                                                a.ldq, a.ldkv, a.scale, vec);
    CUDA_CHECK_LAUNCH();
}

/* bf16 tiles at head widths 32 and 64 take the register-resident kernel (the wmma kernel
 * measured 0.72 ms at the paper's encoder shape on an H200, slower than the GEMM path's
 * 0.45 ms); other widths and the fp32 tiles keep the shared-memory kernel. */
template <typename T, typename TAct, int kDh>
void launch_fwd_best(TAct *out, float *lse, const TAct *q, const TAct *k, const TAct *v,
                     const FlashArgs &a)
{
    if constexpr (std::is_same<T, __nv_bfloat16>::value && (kDh == 32 || kDh == 64))
        launch_fwd_mma<TAct, kDh>(out, lse, q, k, v, a);
    else
        launch_fwd<T, TAct, kDh>(out, lse, q, k, v, a);
}

/* Head dims of the configs and tests get their own instantiation (constant loop bounds);
 * every other Dh up to kFlashMaxDh runs the runtime-Dh kernels. */
template <typename T, typename TAct>
void dispatch_fwd(TAct *out, float *lse, const TAct *q, const TAct *k, const TAct *v,
                  const FlashArgs &a)
{
    switch (a.Dh) {
    case 8: launch_fwd<T, TAct, 8>(out, lse, q, k, v, a); break;
    case 16: launch_fwd<T, TAct, 16>(out, lse, q, k, v, a); break;
    case 24: launch_fwd<T, TAct, 24>(out, lse, q, k, v, a); break;
    case 32: launch_fwd_best<T, TAct, 32>(out, lse, q, k, v, a); break;
    case 64: launch_fwd_best<T, TAct, 64>(out, lse, q, k, v, a); break;
    default: launch_fwd<T, TAct, 0>(out, lse, q, k, v, a); break;
    }
}

/* The register-resident bf16 backward (cuda/cuda_flash_bwd_mma.cuh), head widths 32 and 64. */
template <typename TAct, int kDh, typename TGrad>
void launch_bwd_mma(TGrad *dq, TGrad *dk, TGrad *dv, const float *dout, const TAct *q,
                    const TAct *k, const TAct *v, const float *lse, const float *D,
                    const FlashArgs &a)
{
    const bool vec = rows_aligned16(q, a.ldq, kDh, sizeof(TAct)) &&
                     rows_aligned16(k, a.ldkv, kDh, sizeof(TAct)) &&
                     rows_aligned16(v, a.ldkv, kDh, sizeof(TAct));
    const bool vec_dout = rows_aligned16(dout, (long)a.H * kDh, kDh, sizeof(float));
    const unsigned rows = (unsigned)flash_mma::kRows;
    if (dk || dv) {  /* K, V, Q, dO tiles and two vectors: 37 KiB at Dh 64, no opt-in */
        const dim3 grid((unsigned)(a.B * a.H), ((unsigned)a.Tk + rows - 1) / rows);
        auto kernel = flash_mma::flash_bwd_dkv_mma_kernel<kDh, TAct, TGrad>;
        kernel<<<grid, flash_mma::kThreads, flash_mma::smem_bytes(kDh, 4, 2), cuda_stream()>>>(
            dk, dv, dout, q, k, v, lse, D, a.H, a.Tq, a.Tk, a.ldq, a.ldkv, a.scale, vec,
            vec_dout);
        CUDA_CHECK_LAUNCH();
    }
    if (dq) {
        const dim3 grid((unsigned)(a.B * a.H), ((unsigned)a.Tq + rows - 1) / rows);
        auto kernel = flash_mma::flash_bwd_dq_mma_kernel<kDh, TAct, TGrad>;
        kernel<<<grid, flash_mma::kThreads, flash_mma::smem_bytes(kDh, 4, 0), cuda_stream()>>>(
            dq, dout, q, k, v, lse, D, a.H, a.Tq, a.Tk, a.ldq, a.ldkv, a.scale, vec, vec_dout);
        CUDA_CHECK_LAUNCH();
    }
}

template <typename T, typename TAct, int kDh, typename TGrad>
void launch_bwd_best(TGrad *dq, TGrad *dk, TGrad *dv, const float *dout, const TAct *q,
                     const TAct *k, const TAct *v, const float *lse, const float *D,
                     const FlashArgs &a)
{
    if constexpr (std::is_same<T, __nv_bfloat16>::value && (kDh == 32 || kDh == 64))
        launch_bwd_mma<TAct, kDh>(dq, dk, dv, dout, q, k, v, lse, D, a);
    else
        launch_bwd<T, TAct, kDh>(dq, dk, dv, dout, q, k, v, lse, D, a);
}

template <typename T, typename TAct, typename TGrad>
void dispatch_bwd(TGrad *dq, TGrad *dk, TGrad *dv, const float *dout, const TAct *q,
                  const TAct *k, const TAct *v, const float *lse, const float *D,
                  const FlashArgs &a)
{
    switch (a.Dh) {
    case 8: launch_bwd<T, TAct, 8>(dq, dk, dv, dout, q, k, v, lse, D, a); break;
    case 16: launch_bwd<T, TAct, 16>(dq, dk, dv, dout, q, k, v, lse, D, a); break;
    case 24: launch_bwd<T, TAct, 24>(dq, dk, dv, dout, q, k, v, lse, D, a); break;
    case 32: launch_bwd_best<T, TAct, 32>(dq, dk, dv, dout, q, k, v, lse, D, a); break;
    case 64: launch_bwd_best<T, TAct, 64>(dq, dk, dv, dout, q, k, v, lse, D, a); break;
    default: launch_bwd<T, TAct, 0>(dq, dk, dv, dout, q, k, v, lse, D, a); break;
    }
}

/* D = rowsum(dO * O) into SCRATCH_STATS (backward's step 1). */
template <typename TAct>
const float *row_dots(const float *dout, const TAct *out, int B, int H, int Tq, int Dh)
{
    const long rows = (long)B * H * Tq;
    float *D = (float *)cuda_scratch(SCRATCH_STATS, (size_t)rows * sizeof(float));
    const int warps_per_block = kThreads / 32;
    auto kernel = flash_rowdot_kernel<TAct>;
    kernel<<<(unsigned)((rows + warps_per_block - 1) / warps_per_block), kThreads, 0,
             cuda_stream()>>>(D, dout, out, B, H, Tq, Dh);
    CUDA_CHECK_LAUNCH();
    return D;
}

FlashArgs make_args(int B, int H, int Tq, int Tk, int Dh, int ldq, int ldkv)
{
    return FlashArgs{B, H, Tq, Tk, Dh, ldq, ldkv, 1.0f / sqrtf((float)Dh)};
}

}  // namespace

void gpu_set_attention(int kernel)
{
    if (kernel != ATTN_KERNEL_GEMM && kernel != ATTN_KERNEL_FUSED && kernel != ATTN_KERNEL_AUTO &&
        kernel != ATTN_KERNEL_CUDNN)
        alice_fatal_at(__FILE__, __LINE__, "gpu_set_attention: unknown attention kernel %d",
                       kernel);
    if (kernel == ATTN_KERNEL_CUDNN && !gpu_cudnn_attention_available())
        alice_fatal_at(__FILE__, __LINE__, "%s", gpu_cudnn_attention_unavailable_reason());
    g_attention_kernel = kernel;
}

int cuda_attention_kernel(void) { return g_attention_kernel; }

/* The rule is src/ops/attention_choice.h's (shared with the tests). CUDNN, and AUTO where it
 * offers a call to cuDNN, run the flash kernels for every call cuDNN declines
 * (cuda_cudnn_attention_takes): the same saved logsumexp, so attention_saved_floats does not
 * depend on which of the two ran. */
int cuda_flash_attention_applies(int Dh)
{
    return attention_saves_row_stats(g_attention_kernel, cuda_context()->bf16_gemm, Dh);
}

int cuda_flash_fwd_fast(int Dh) { return attention_flash_fast(Dh); }

size_t cuda_attention_saved_floats(int B, int H, int Tq, int Tk, int Dh)
{
    const size_t rows = (size_t)B * H * Tq;
    return cuda_flash_attention_applies(Dh) ? rows : rows * (size_t)Tk;
}

void cuda_flash_attention_fwd(float *out, float *lse, const float *q, const float *k,
                              const float *v, int B, int H, int Tq, int Tk, int Dh, int ldq,
                              int ldkv)
{
    if (B <= 0 || H <= 0 || Tq <= 0 || Tk <= 0) return;
    const FlashArgs a = make_args(B, H, Tq, Tk, Dh, ldq, ldkv);
    if (cuda_context()->bf16_gemm) dispatch_fwd<__nv_bfloat16>(out, lse, q, k, v, a);
    else dispatch_fwd<float>(out, lse, q, k, v, a);
}

void cuda_flash_attention_fwd_bf16(bf16_t *out, float *lse, const bf16_t *q, const bf16_t *k,
                                   const bf16_t *v, int B, int H, int Tq, int Tk, int Dh,
                                   int ldq, int ldkv)
{
    if (B <= 0 || H <= 0 || Tq <= 0 || Tk <= 0) return;
    const FlashArgs a = make_args(B, H, Tq, Tk, Dh, ldq, ldkv);
    dispatch_fwd<__nv_bfloat16>(as_nv(out), lse, as_nv(q), as_nv(k), as_nv(v), a);
}

void cuda_flash_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q,
                              const float *k, const float *v, const float *out, const float *lse,
                              int B, int H, int Tq, int Tk, int Dh, int ldq, int ldkv)
{
    if (B <= 0 || H <= 0 || Tq <= 0 || Tk <= 0 || (!dq && !dk && !dv)) return;
    const FlashArgs a = make_args(B, H, Tq, Tk, Dh, ldq, ldkv);
    const float *D = row_dots(dout, out, B, H, Tq, Dh);
    if (cuda_context()->bf16_gemm) dispatch_bwd<__nv_bfloat16>(dq, dk, dv, dout, q, k, v, lse, D, a);
    else dispatch_bwd<float>(dq, dk, dv, dout, q, k, v, lse, D, a);
}

void cuda_flash_attention_bwd_bf16(float *dq, float *dk, float *dv, const float *dout,
                                   const bf16_t *q, const bf16_t *k, const bf16_t *v,
                                   const bf16_t *out, const float *lse, int B, int H, int Tq,
                                   int Tk, int Dh, int ldq, int ldkv)
{
    if (B <= 0 || H <= 0 || Tq <= 0 || Tk <= 0 || (!dq && !dk && !dv)) return;
    const FlashArgs a = make_args(B, H, Tq, Tk, Dh, ldq, ldkv);
    const float *D = row_dots(dout, as_nv(out), B, H, Tq, Dh);
    dispatch_bwd<__nv_bfloat16>(dq, dk, dv, dout, as_nv(q), as_nv(k), as_nv(v), lse, D, a);
}

/* The same kernels with TGrad = bf16: each gradient rounded once as it is stored
 * (narrow_to, nearest even), the value the fp32 instantiation stores, so bit for bit the fp32
 * gradients rounded afterwards (tests/cuda_emu/flash_attention_emulated.cpp compares the two). */
void cuda_flash_attention_bwd_bf16_grad16(bf16_t *dq, bf16_t *dk, bf16_t *dv, const float *dout,
                                          const bf16_t *q, const bf16_t *k, const bf16_t *v,
                                          const bf16_t *out, const float *lse, int B, int H,
                                          int Tq, int Tk, int Dh, int ldq, int ldkv)
{
    if (B <= 0 || H <= 0 || Tq <= 0 || Tk <= 0 || (!dq && !dk && !dv)) return;
    const FlashArgs a = make_args(B, H, Tq, Tk, Dh, ldq, ldkv);
    const float *D = row_dots(dout, as_nv(out), B, H, Tq, Dh);
    __nv_bfloat16 *dq16 = dq ? as_nv(dq) : nullptr, *dk16 = dk ? as_nv(dk) : nullptr;
    __nv_bfloat16 *dv16 = dv ? as_nv(dv) : nullptr;
    dispatch_bwd<__nv_bfloat16>(dq16, dk16, dv16, dout, as_nv(q), as_nv(k), as_nv(v), lse, D, a);
}
