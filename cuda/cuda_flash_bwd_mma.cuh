/* Register-resident flash-attention backward on bf16 tensor cores (mma.sync m16n8k16), head
 * widths 32 and 64; the partner of cuda/cuda_flash_fwd_mma.cuh, included by
 * cuda/cuda_flash_attention.cu and compiled by the host emulation of tests/cuda_emu too.
 *
 * The same two deterministic passes as the shared-memory kernels of cuda_flash_attention.cu
 * (no atomics: fixed summation order, bitwise repeatable), with every score-sized product in
 * registers:
 *   dK/dV pass, one block per (batch*head, 64 keys), each warp owning 16 keys: for every query
 *     tile, S^T = K Q^T, P^T = exp(S^T scale - lse), dV += P^T dO, dP^T = V dO^T,
 *     dS^T = P^T (dP^T - D), dK += dS^T Q;
 *   dQ pass, one block per (batch*head, 64 queries), each warp owning 16 queries: for every
 *     key tile, S = Q K^T, P = exp(S scale - lse), dP = dO V^T, dS = P (dP - D), dQ += dS K.
 * Transposing the score tile costs nothing: a warp that owns keys simply computes K Q^T, whose
 * accumulators are again the A operand of the next product. P (P^T) and dS (dS^T) are rounded
 * to bf16 for their products, dO to bf16 as it is loaded (as the other kernels do); lse
 * (natural units, from the forward) and D = rowsum(dO O) stay fp32. dq, dk, dv are written
 * (not accumulated) with q's and kv's row strides, in TGrad: fp32, or bf16 rounded once from
 * the fp32 value the fp32 instantiation stores (attention_bwd_bf16_grad16); any may be NULL. */
#ifndef ALICE_CUDA_FLASH_BWD_MMA_CUH
#define ALICE_CUDA_FLASH_BWD_MMA_CUH

#include "cuda/cuda_bf16.cuh"  /* narrow_to */
#include "cuda/cuda_flash_mma_common.cuh"

namespace flash_mma {

/* Rows of one head: dst[r * ld + c] = acc * scale for the fragment layout of an accumulator
 * group, rounded once when TGrad is bf16 (the fp32 product, then narrow_to). */
template <typename TGrad>
__device__ __forceinline__ void store_acc(TGrad *dst, long ld, const float (&acc)[4], int r_lo,
                                          int rows_valid, int col, float scale)
{
    if (r_lo < rows_valid) {
        dst[r_lo * ld + col] = narrow_to<TGrad>(acc[0] * scale);
        dst[r_lo * ld + col + 1] = narrow_to<TGrad>(acc[1] * scale);
    }
    if (r_lo + 8 < rows_valid) {
        dst[(r_lo + 8) * ld + col] = narrow_to<TGrad>(acc[2] * scale);
        dst[(r_lo + 8) * ld + col + 1] = narrow_to<TGrad>(acc[3] * scale);
    }
}

/* grid (B*H, ceil(Tk / kRows)), kThreads threads, smem_bytes(kDh, 4, 2): K, V, Q, dO tiles, then
 * lse (log2 units) and D of the query tile. */
template <int kDh, typename TAct, typename TGrad>
__global__ void __launch_bounds__(kThreads)
flash_bwd_dkv_mma_kernel(TGrad *dk, TGrad *dv, const float *dout, const TAct *q, const TAct *k,
                         const TAct *v, const float *lse, const float *D, int H, int Tq, int Tk,
                         int ldq, int ldkv, float scale, bool vec, bool vec_dout)
{
    static_assert(kDh % 16 == 0 && kDh <= 64, "head width: a multiple of 16 up to 64");
    constexpr int kLd = smem_row(kDh);
    constexpr int kSteps = kDh / 16;
    constexpr int kDhGroups = kDh / 8;
    extern __shared__ __align__(16) unsigned char smem[];
    uint16_t *Ks = reinterpret_cast<uint16_t *>(smem);
    uint16_t *Vs = Ks + kRows * kLd, *Qs = Vs + kRows * kLd, *dOs = Qs + kRows * kLd;
    float *lse2_s = reinterpret_cast<float *>(dOs + kRows * kLd), *D_s = lse2_s + kRows;

    const int bh = blockIdx.x, b = bh / H, h = bh % H;
    const int key0 = blockIdx.y * kRows, keys = min(kRows, Tk - key0);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int C = H * kDh;
    const float scale_log2 = scale * kLog2e;

    const long kv_off = ((long)b * Tk + key0) * ldkv + (long)h * kDh;  /* dk, dv rows too */
    load_kv_tiles<kDh>(Ks, Vs, k, v, b, h, Tk, key0, ldkv, vec);

    uint32_t ka[kSteps][4], va[kSteps][4];
    float dk_acc[kDhGroups][4], dv_acc[kDhGroups][4];
    for (int j = 0; j < kDhGroups; j++)
        for (int e = 0; e < 4; e++) dk_acc[j][e] = dv_acc[j][e] = 0.0f;

    for (int q0 = 0; q0 < Tq; q0 += kRows) {
        const int n_q = min(kRows, Tq - q0);
        load_tile<kDh>(Qs, q + ((long)b * Tq + q0) * ldq + (long)h * kDh, ldq, n_q, vec);
        load_tile<kDh>(dOs, dout + ((long)b * Tq + q0) * C + (long)h * kDh, C, n_q, vec_dout);
        for (int r = threadIdx.x; r < kRows; r += kThreads) {
            const long row = (long)bh * Tq + q0 + r;
            lse2_s[r] = r < n_q ? lse[row] * kLog2e : 0.0f;
            D_s[r] = r < n_q ? D[row] : 0.0f;
        }
        __syncthreads();
        if (q0 == 0) {
            load_a_frags<kDh>(ka, Ks, warp * 16, lane);
            load_a_frags<kDh>(va, Vs, warp * 16, lane);
        }
        /* 16 queries at a time (two 8-query groups: few live registers): S^T and dP^T, whose
         * element e of group j is query 8j + 2t + (e & 1), key g + 8 (e >> 1); then
         * dV += P^T dO and dK += dS^T Q */
        for (int s = 0; s < kRows / 16; s++) {
            float pt[2][4], dst[2][4];
            for (int half = 0; half < 2; half++) {
                const int j = 2 * s + half;
                for (int e = 0; e < 4; e++) pt[half][e] = dst[half][e] = 0.0f;
                mma_rows<kDh>(pt[half], ka, Qs, 8 * j, lane);
                mma_rows<kDh>(dst[half], va, dOs, 8 * j, lane);
                for (int e = 0; e < 4; e++) {
                    const int qi = 8 * j + 2 * t + (e & 1);
                    const float p = qi < n_q ? exp2f(pt[half][e] * scale_log2 - lse2_s[qi]) : 0.0f;
                    pt[half][e] = p;
                    dst[half][e] = p * (dst[half][e] - D_s[qi]);
                }
            }
            uint32_t pa[4], sa[4];
            a_from_acc(pa, pt[0], pt[1]);
            a_from_acc(sa, dst[0], dst[1]);
            for (int j = 0; j < kDhGroups; j += 2) {
                mma_cols2<kDh>(dv_acc[j], dv_acc[j + 1], pa, dOs, 16 * s, 8 * j, lane);
                mma_cols2<kDh>(dk_acc[j], dk_acc[j + 1], sa, Qs, 16 * s, 8 * j, lane);
            }
        }
        __syncthreads();  /* the next query tile overwrites Q, dO, lse, D */
    }
    const int r_lo = warp * 16 + g;
    for (int j = 0; j < kDhGroups; j++) {
        const int col = 8 * j + 2 * t;
        if (dv) store_acc(dv + kv_off, ldkv, dv_acc[j], r_lo, keys, col, 1.0f);
        if (dk) store_acc(dk + kv_off, ldkv, dk_acc[j], r_lo, keys, col, scale);
    }
}

/* grid (B*H, ceil(Tq / kRows)), kThreads threads, smem_bytes(kDh, 4, 0): Q, dO, K, V tiles. */
template <int kDh, typename TAct, typename TGrad>
__global__ void __launch_bounds__(kThreads)
flash_bwd_dq_mma_kernel(TGrad *dq, const float *dout, const TAct *q, const TAct *k,
                        const TAct *v, const float *lse, const float *D, int H, int Tq, int Tk,
                        int ldq, int ldkv, float scale, bool vec, bool vec_dout)
{
    static_assert(kDh % 16 == 0 && kDh <= 64, "head width: a multiple of 16 up to 64");
    constexpr int kLd = smem_row(kDh);
    constexpr int kSteps = kDh / 16;
    constexpr int kDhGroups = kDh / 8;
    extern __shared__ __align__(16) unsigned char smem[];
    uint16_t *Qs = reinterpret_cast<uint16_t *>(smem);
    uint16_t *dOs = Qs + kRows * kLd, *Ks = dOs + kRows * kLd, *Vs = Ks + kRows * kLd;

    const int bh = blockIdx.x, b = bh / H, h = bh % H;
    const int row0 = blockIdx.y * kRows, rows = min(kRows, Tq - row0);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int C = H * kDh;
    const float scale_log2 = scale * kLog2e;

    const long q_off = ((long)b * Tq + row0) * ldq + (long)h * kDh;
    load_tile<kDh>(Qs, q + q_off, ldq, rows, vec);
    load_tile<kDh>(dOs, dout + ((long)b * Tq + row0) * C + (long)h * kDh, C, rows, vec_dout);
    /* lse and D of rows g and g + 8 of this warp (rows past Tq: never stored) */
    const int r_lo = warp * 16 + g;
    const long stat = (long)bh * Tq + row0;
    const float lse2_lo = r_lo < rows ? lse[stat + r_lo] * kLog2e : 0.0f;
    const float lse2_hi = r_lo + 8 < rows ? lse[stat + r_lo + 8] * kLog2e : 0.0f;
    const float D_lo = r_lo < rows ? D[stat + r_lo] : 0.0f;
    const float D_hi = r_lo + 8 < rows ? D[stat + r_lo + 8] : 0.0f;

    uint32_t qa[kSteps][4], da[kSteps][4];
    float dq_acc[kDhGroups][4];
    for (int j = 0; j < kDhGroups; j++) dq_acc[j][0] = dq_acc[j][1] = dq_acc[j][2] = dq_acc[j][3] = 0.0f;

    for (int key0 = 0; key0 < Tk; key0 += kRows) {
        const int n_valid = load_kv_tiles<kDh>(Ks, Vs, k, v, b, h, Tk, key0, ldkv, vec);
        __syncthreads();
        if (key0 == 0) {
            load_a_frags<kDh>(qa, Qs, warp * 16, lane);
            load_a_frags<kDh>(da, dOs, warp * 16, lane);
        }
        /* 16 keys at a time: S and dP, whose element e of group j is key 8j + 2t + (e & 1),
         * row g + 8 (e >> 1); then dQ += dS K */
        for (int s = 0; s < kRows / 16; s++) {
            float ds[2][4];
            for (int half = 0; half < 2; half++) {
                const int j = 2 * s + half;
                float sc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                for (int e = 0; e < 4; e++) ds[half][e] = 0.0f;
                mma_rows<kDh>(sc, qa, Ks, 8 * j, lane);
                mma_rows<kDh>(ds[half], da, Vs, 8 * j, lane);
                for (int e = 0; e < 4; e++) {
                    const int key = 8 * j + 2 * t + (e & 1);
                    const bool hi = e >> 1;
                    const float p = key < n_valid
                                        ? exp2f(sc[e] * scale_log2 - (hi ? lse2_hi : lse2_lo))
                                        : 0.0f;
                    ds[half][e] = p * (ds[half][e] - (hi ? D_hi : D_lo));
                }
            }
            uint32_t sa[4];
            a_from_acc(sa, ds[0], ds[1]);
            for (int j = 0; j < kDhGroups; j += 2)
                mma_cols2<kDh>(dq_acc[j], dq_acc[j + 1], sa, Ks, 16 * s, 8 * j, lane);
        }
        __syncthreads();  /* the next key tile overwrites K and V */
    }
    for (int j = 0; j < kDhGroups; j++)
        store_acc(dq + q_off, ldq, dq_acc[j], r_lo, rows, 8 * j + 2 * t, scale);
}

}  // namespace flash_mma

#endif
