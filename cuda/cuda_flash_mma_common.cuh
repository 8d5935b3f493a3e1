/* Shared pieces of the register-resident flash-attention kernels on bf16 tensor cores
 * (cuda/cuda_flash_fwd_mma.cuh, cuda/cuda_flash_bwd_mma.cuh): the warp-level mma.sync
 * m16n8k16 product, bf16 packing, and the tile loader. The host emulation of tests/cuda_emu
 * supplies its own mma_bf16_m16n8k16 (same fragments, computed lane by lane).
 *
 * Fragments (PTX ISA, mma.m16n8k16, lane = 4 g + t): an accumulator holds rows g and g + 8,
 * columns 2t and 2t + 1 of a 16x8 tile; an A operand rows g and g + 8, columns 2t, 2t + 1,
 * 2t + 8, 2t + 9 of a 16x16 tile; a B operand rows (k) 2t, 2t + 1, 2t + 8, 2t + 9 of column
 * g. Two adjacent accumulators therefore ARE an A operand: products chain in registers.
 * Needs cuda/cuda_kernels.cuh (narrow_to, stdint) first. */
#ifndef ALICE_CUDA_FLASH_MMA_COMMON_CUH
#define ALICE_CUDA_FLASH_MMA_COMMON_CUH

namespace flash_mma {

constexpr int kRows = 64;        /* rows of every tile: queries or keys; 16 per warp */
constexpr int kWarps = kRows / 16;
constexpr int kThreads = 32 * kWarps;
constexpr int kPad = 8;          /* bf16 per shared row beyond Dh: 16 bytes, spreads banks */
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

__host__ __device__ constexpr int smem_row(int dh) { return dh + kPad; }
/* n_tiles bf16 tiles of kRows x smem_row(dh), then n_vecs fp32 vectors of kRows */
__host__ __device__ constexpr unsigned smem_bytes(int dh, int n_tiles, int n_vecs)
{
    return (unsigned)n_tiles * kRows * (unsigned)smem_row(dh) * 2u +
           (unsigned)n_vecs * kRows * 4u;
}

#ifndef ALICE_EMU_CUDA_H
/* d += a b for one warp: A 16x16 bf16 (4 registers of 2), B 16x8 bf16 (2), D 16x8 fp32 (4). */
__device__ __forceinline__ void mma_bf16_m16n8k16(float (&d)[4], const uint32_t (&a)[4],
                                                  uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Four 8x8 bf16 matrices from shared memory in one instruction: lanes 8m..8m+7 give the row
 * addresses (16 bytes each, 16-byte aligned) of matrix m, and r[m] receives this lane's part
 * in the fragment layout: row lane / 4, columns 2 (lane % 4) and + 1; with .trans the matrix is
 * transposed on the way (rows 2 (lane % 4) and + 1 of column lane / 4). */
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const uint16_t *row)
{
    const unsigned addr = (unsigned)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const uint16_t *row)
{
    const unsigned addr = (unsigned)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
#endif

__device__ __forceinline__ uint16_t bits_of(__nv_bfloat16 x) { return __bfloat16_as_ushort(x); }
__device__ __forceinline__ uint16_t bits_of(float x)
{
    return __bfloat16_as_ushort(__float2bfloat16_rn(x));
}
/* Two bf16 in one register: the lower column (or key) in the low half, as mma reads them. */
__device__ __forceinline__ uint32_t pack(uint16_t lo, uint16_t hi)
{
    return (uint32_t)lo | ((uint32_t)hi << 16);
}
__device__ __forceinline__ uint32_t pack_rounded(float lo, float hi)
{
    return pack(bits_of(lo), bits_of(hi));
}

struct alignas(16) Bf16x8 { uint16_t h[8]; };
struct alignas(16) Float4 { float f[4]; };

/* Eight consecutive elements as bf16 bits: one 16-byte load (bf16) or two (fp32) when the
 * launcher found every row start 16-byte aligned, else element by element. */
__device__ __forceinline__ void load8(uint16_t (&out)[8], const __nv_bfloat16 *p, bool vec)
{
    if (vec) {
        const Bf16x8 c = *reinterpret_cast<const Bf16x8 *>(p);
        for (int e = 0; e < 8; e++) out[e] = c.h[e];
    } else {
        for (int e = 0; e < 8; e++) out[e] = bits_of(p[e]);
    }
}
__device__ __forceinline__ void load8(uint16_t (&out)[8], const float *p, bool vec)
{
    if (vec) {
        const Float4 a = *reinterpret_cast<const Float4 *>(p);
        const Float4 b = *reinterpret_cast<const Float4 *>(p + 4);
        for (int e = 0; e < 4; e++) out[e] = bits_of(a.f[e]), out[4 + e] = bits_of(b.f[e]);
    } else {
        for (int e = 0; e < 8; e++) out[e] = bits_of(p[e]);
    }
}

/* kRows rows of kDh elements (row stride ld) into shared memory; rows from n_valid on are 0. */
template <int kDh, typename TAct>
__device__ __forceinline__ void load_tile(uint16_t *dst, const TAct *src, long ld, int n_valid,
                                          bool vec)
{
    constexpr int kChunks = kDh / 8;
    for (int c = threadIdx.x; c < kRows * kChunks; c += kThreads) {
        const int r = c / kChunks, col = (c % kChunks) * 8;
        uint16_t v[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        if (r < n_valid) load8(v, src + r * ld + col, vec);
        Bf16x8 chunk;
        for (int e = 0; e < 8; e++) chunk.h[e] = v[e];
        *reinterpret_cast<Bf16x8 *>(dst + r * smem_row(kDh) + col) = chunk;
    }
}

/* K and V rows [key0, key0 + kRows) of head h of batch element b into their shared tiles (rows
 * past Tk zeroed); returns how many of the rows exist. */
template <int kDh, typename TAct>
__device__ __forceinline__ int load_kv_tiles(uint16_t *Ks, uint16_t *Vs, const TAct *k,
                                             const TAct *v, int b, int h, int Tk, int key0,
                                             int ldkv, bool vec)
{
    const int n_valid = min(kRows, Tk - key0);
    const long off = ((long)b * Tk + key0) * ldkv + (long)h * kDh;
    load_tile<kDh>(Ks, k + off, ldkv, n_valid, vec);
    load_tile<kDh>(Vs, v + off, ldkv, n_valid, vec);
    return n_valid;
}

/* A fragments of rows [row0, row0 + 16) of a shared tile, one per 16-column k-step: one
 * ldmatrix.x4 each (matrices: rows 0-7 and 8-15 at columns 16 s, then at 16 s + 8). */
template <int kDh>
__device__ __forceinline__ void load_a_frags(uint32_t (&a)[kDh / 16][4], const uint16_t *tile,
                                             int row0, int lane)
{
    const uint16_t *r = tile + (row0 + (lane & 7) + 8 * ((lane >> 3) & 1)) * smem_row(kDh) +
                        8 * (lane >> 4);
    for (int s = 0; s < kDh / 16; s++) ldsm_x4(a[s], r + 16 * s);
}

/* d += the product with one 8-column group of B whose column n is shared row n0 + n and whose
 * k runs along that row (Q K^T with K's rows, dO V^T with V's): one ldmatrix.x4 per two
 * k-steps (matrices: columns 16 s, 16 s + 8, 16 s + 16, 16 s + 24 of rows n0..n0+7). */
template <int kDh>
__device__ __forceinline__ void mma_rows(float (&d)[4], const uint32_t (&a)[kDh / 16][4],
                                         const uint16_t *tile, int n0, int lane)
{
    static_assert(kDh % 32 == 0, "k-steps are loaded in pairs");
    const uint16_t *r = tile + (n0 + (lane & 7)) * smem_row(kDh) + 8 * (lane >> 3);
    for (int s = 0; s < kDh / 16; s += 2) {
        uint32_t b[4];
        ldsm_x4(b, r + 16 * s);
        mma_bf16_m16n8k16(d, a[s], b[0], b[1]);
        mma_bf16_m16n8k16(d, a[s + 1], b[2], b[3]);
    }
}

/* d0 += a B0 and d1 += a B1 for the two 8-column groups [c0, c0 + 8) and [c0 + 8, c0 + 16)
 * of 16 k-rows [k0, k0 + 16) of a shared tile whose k runs down the rows (P V with V, dS K
 * with K, P^T dO with dO): one ldmatrix.x4.trans (matrices: k-rows 0-7 and 8-15 of column
 * group 0, then of group 1). */
template <int kDh>
__device__ __forceinline__ void mma_cols2(float (&d0)[4], float (&d1)[4], const uint32_t (&a)[4],
                                          const uint16_t *tile, int k0, int c0, int lane)
{
    uint32_t b[4];
    ldsm_x4_trans(b, tile + (k0 + (lane & 7) + 8 * ((lane >> 3) & 1)) * smem_row(kDh) + c0 +
                         8 * (lane >> 4));
    mma_bf16_m16n8k16(d0, a, b[0], b[1]);
    mma_bf16_m16n8k16(d1, a, b[2], b[3]);
}

/* The A operand of keys (or queries) [16 s, 16 s + 16) from two adjacent accumulator groups,
 * rounded to bf16. */
__device__ __forceinline__ void a_from_acc(uint32_t (&a)[4], const float (&lo)[4],
                                           const float (&hi)[4])
{
    a[0] = pack_rounded(lo[0], lo[1]);
    a[1] = pack_rounded(lo[2], lo[3]);
    a[2] = pack_rounded(hi[0], hi[1]);
    a[3] = pack_rounded(hi[2], hi[3]);
}

}  // namespace flash_mma

#endif
