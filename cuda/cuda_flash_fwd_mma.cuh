/* Register-resident flash-attention forward on bf16 tensor cores (mma.sync m16n8k16), for head
 * widths 32 and 64 (the paper's decoder and encoder). Included by cuda/cuda_flash_attention.cu;
 * the host emulation of tests/cuda_emu compiles it too (cuda/cuda_flash_mma_common.cuh).
 *
 * Why a second forward: the wmma kernel of cuda_flash_attention.cu moves every score tile
 * through shared memory (store accumulator, softmax there, reload as operand) and measured
 * 0.72 ms for B*H = 96, T = 576, Dh = 64 on an H200, slower than the GEMM path (0.45 ms). Here
 * the scores never leave registers: the accumulator fragment of S = Q K^T has the layout of the
 * A operand of P V (per lane: rows g and g + 8, columns 2t and 2t + 1 of each 8-key group), so
 * the online softmax runs on the fragments and P goes straight into the next mma.
 *
 * Block: 4 warps, 64 query rows (16 per warp); key/value tiles of 64 rows stream through
 * shared memory as bf16 bits (rows past Tk zero-filled, their scores masked to -inf). Scores are
 * scaled by scale * log2(e) so exp2f does the exponentials; lse = m ln 2 + log(l) in natural
 * units, as flash_attention_math.h defines it for the backward. P is rounded to bf16 for P V
 * (as the wmma kernel and the GEMM path do); l sums the unrounded p. lse is written only when
 * a backward will read it (lse != NULL). */
#ifndef ALICE_CUDA_FLASH_FWD_MMA_CUH
#define ALICE_CUDA_FLASH_FWD_MMA_CUH

#include "cuda/cuda_flash_mma_common.cuh"

namespace flash_mma {

/* grid (B*H, ceil(Tq / kRows)), kThreads threads, smem_bytes(kDh, 3, 0) of dynamic shared
 * memory (Q, K, V tiles).
 * out [B, Tq, H*Dh]; q rows of stride ldq, k and v rows of stride ldkv, head h at column h*Dh;
 * lse [B, H, Tq] or NULL. */
template <int kDh, typename TAct>
__global__ void __launch_bounds__(kThreads)
flash_fwd_mma_kernel(TAct *out, float *lse, const TAct *q, const TAct *k, const TAct *v, int H,
                     int Tq, int Tk, int ldq, int ldkv, float scale, bool vec)
{
    static_assert(kDh % 16 == 0 && kDh <= 64, "head width: a multiple of 16 up to 64");
    constexpr int kLd = smem_row(kDh);
    constexpr int kSteps = kDh / 16;     /* k-steps of Q K^T */
    constexpr int kKeyGroups = kRows / 8; /* 8-key column groups of S */
    constexpr int kDhGroups = kDh / 8;   /* 8-wide column groups of O */
    extern __shared__ __align__(16) unsigned char smem[];
    uint16_t *Qs = reinterpret_cast<uint16_t *>(smem);
    uint16_t *Ks = Qs + kRows * kLd;
    uint16_t *Vs = Ks + kRows * kLd;

    const int bh = blockIdx.x, b = bh / H, h = bh % H;
    const int row0 = blockIdx.y * kRows;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, t = lane & 3;  /* fragment row group, column pair */
    const float scale_log2 = scale * kLog2e;

    load_tile<kDh>(Qs, q + ((long)b * Tq + row0) * ldq + (long)h * kDh, ldq,
                   min(kRows, Tq - row0), vec);

    uint32_t qa[kSteps][4];
    float o[kDhGroups][4];
    for (int j = 0; j < kDhGroups; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float m_lo = -INFINITY, m_hi = -INFINITY;  /* rows g and g + 8 of this warp, log2 units */
    float l_lo = 0.0f, l_hi = 0.0f;            /* this lane's part of the rows' sums */

    for (int key0 = 0; key0 < Tk; key0 += kRows) {
        const int n_valid = load_kv_tiles<kDh>(Ks, Vs, k, v, b, h, Tk, key0, ldkv, vec);
        __syncthreads();
        if (key0 == 0) load_a_frags<kDh>(qa, Qs, warp * 16, lane);

        /* S = Q K^T: element e of group j is key 8j + 2t + (e & 1), row g + 8 (e >> 1) */
        float sc[kKeyGroups][4];
        for (int j = 0; j < kKeyGroups; j++) {
            sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.0f;
            mma_rows<kDh>(sc[j], qa, Ks, 8 * j, lane);
        }
        float mx_lo = -INFINITY, mx_hi = -INFINITY;
        for (int j = 0; j < kKeyGroups; j++)
            for (int e = 0; e < 4; e++) {
                const int key = 8 * j + 2 * t + (e & 1);
                const float x = key < n_valid ? sc[j][e] * scale_log2 : -INFINITY;
                sc[j][e] = x;
                if (e < 2) mx_lo = fmaxf(mx_lo, x);
                else mx_hi = fmaxf(mx_hi, x);
            }
        /* the four lanes of a row (t = 0..3) hold its 64 scores between them */
        for (int off = 1; off < 4; off <<= 1) {
            mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, off));
            mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, off));
        }
        const float mn_lo = fmaxf(m_lo, mx_lo), mn_hi = fmaxf(m_hi, mx_hi);
        const float corr_lo = exp2f(m_lo - mn_lo), corr_hi = exp2f(m_hi - mn_hi);
        m_lo = mn_lo;
        m_hi = mn_hi;
        float sum_lo = 0.0f, sum_hi = 0.0f;
        for (int j = 0; j < kKeyGroups; j++) {
            sc[j][0] = exp2f(sc[j][0] - mn_lo);
            sc[j][1] = exp2f(sc[j][1] - mn_lo);
            sc[j][2] = exp2f(sc[j][2] - mn_hi);
            sc[j][3] = exp2f(sc[j][3] - mn_hi);
            sum_lo += sc[j][0] + sc[j][1];
            sum_hi += sc[j][2] + sc[j][3];
        }
        l_lo = l_lo * corr_lo + sum_lo;
        l_hi = l_hi * corr_hi + sum_hi;
        for (int j = 0; j < kDhGroups; j++) {
            o[j][0] *= corr_lo;
            o[j][1] *= corr_lo;
            o[j][2] *= corr_hi;
            o[j][3] *= corr_hi;
        }

        /* O += P V over 16 keys at a time: P's A fragment is two adjacent S groups */
        for (int s = 0; s < kRows / 16; s++) {
            uint32_t pa[4];
            a_from_acc(pa, sc[2 * s], sc[2 * s + 1]);
            for (int j = 0; j < kDhGroups; j += 2)
                mma_cols2<kDh>(o[j], o[j + 1], pa, Vs, 16 * s, 8 * j, lane);
        }
        __syncthreads();  /* the next tile overwrites K and V */
    }

    for (int off = 1; off < 4; off <<= 1) {
        l_lo += __shfl_xor_sync(0xffffffffu, l_lo, off);
        l_hi += __shfl_xor_sync(0xffffffffu, l_hi, off);
    }
    const int r_lo = row0 + warp * 16 + g, r_hi = r_lo + 8;
    const int C = H * kDh;
    const float inv_lo = 1.0f / l_lo, inv_hi = 1.0f / l_hi;
    for (int j = 0; j < kDhGroups; j++) {
        const int col = h * kDh + 8 * j + 2 * t;
        if (r_lo < Tq) {
            TAct *dst = out + ((long)b * Tq + r_lo) * C + col;
            dst[0] = narrow_to<TAct>(o[j][0] * inv_lo);
            dst[1] = narrow_to<TAct>(o[j][1] * inv_lo);
        }
        if (r_hi < Tq) {
            TAct *dst = out + ((long)b * Tq + r_hi) * C + col;
            dst[0] = narrow_to<TAct>(o[j][2] * inv_hi);
            dst[1] = narrow_to<TAct>(o[j][3] * inv_hi);
        }
    }
    if (lse && t == 0) {
        if (r_lo < Tq) lse[(long)bh * Tq + r_lo] = m_lo * kLn2 + logf(l_lo);
        if (r_hi < Tq) lse[(long)bh * Tq + r_hi] = m_hi * kLn2 + logf(l_hi);
    }
}

}  // namespace flash_mma

#endif
