/* Patches, token gathers/scatters, mask tokens, pooling and channel/token layout ops of the
 * CUDA backend. Each output element is written by exactly one thread (no atomics) except in
 * scatter_add_rows, where indices of one batch element are distinct token positions. */
#include <climits>

#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_ops.h"

/* Patchify / unpatchify: one block per token t = b*N + n (grid-stride over tokens). Token n =
 * (ix*gy + iy)*gz + iz, element e = (px*p + py)*p + pz (see backend.h): pz is fastest both in
 * the patch row and in the volume (Z fastest), so a token is p^2 runs of p contiguous floats
 * on BOTH sides and consecutive threads touch consecutive addresses in both (64-byte runs for
 * p = 16: whole sectors, so reading the volume coalesced or writing the patches coalesced is
 * the same choice). The token's corner voxel is found once per block with 64-bit math; within
 * a token 32-bit indices suffice (p^3 < 2^31, checked on the host). When p and Z are multiples
 * of 4 and both pointers 16-byte aligned, every float4 lies inside one run on both sides. */
struct PatchGeometry {
    int X, Y, Z, p, gy, gz, N;
    size_t tokens;
};

static PatchGeometry patch_geometry(int B, int X, int Y, int Z, int p)
{
    if ((long long)p * p * p > INT_MAX) {
        ALICE_FATAL("patchify: patch size %d is too large (p^3 must fit in a 32-bit int); use "
                    "a patch size of at most 1290", p);
    }
    const int gy = Y / p, gz = Z / p, N = (X / p) * gy * gz;
    return PatchGeometry{X, Y, Z, p, gy, gz, N, (size_t)B * N};
}

/* Offset of voxel (px, py, 0) of token t's patch in the volume. */
__device__ __forceinline__ size_t token_corner(size_t t, const PatchGeometry &g)
{
    const size_t b = t / g.N;
    const int n = (int)(t - b * g.N);
    const int ix = n / (g.gy * g.gz), iy = (n / g.gz) % g.gy, iz = n % g.gz;
    return ((b * g.X + (size_t)ix * g.p) * g.Y + (size_t)iy * g.p) * g.Z + (size_t)iz * g.p;
}

/* Volume offset, relative to the token corner, of patch element e (32-bit: e < p^3). */
__device__ __forceinline__ size_t patch_element_offset(int e, const PatchGeometry &g)
{
    const unsigned p = (unsigned)g.p, run = (unsigned)e / p, pz = (unsigned)e - run * p;
    const unsigned px = run / p, py = run - px * p;
    return ((size_t)px * g.Y + py) * g.Z + pz;
}

/* to_patches: patches <- vol, else vol <- patches (the same element pairs, one kernel). */
template <bool kToPatches>
static __global__ void patch_copy_kernel(float *patches, float *vol, PatchGeometry g,
                                         bool vectorised)
{
    constexpr int W = kVecBytes / (int)sizeof(float);
    const int p3 = g.p * g.p * g.p;
    for (size_t t = blockIdx.x; t < g.tokens; t += gridDim.x) {
        float *row = patches + t * p3;
        float *corner = vol + token_corner(t, g);
        block_stride_split<W>(
            p3, vectorised,
            [&](int e) {
                float *v = corner + patch_element_offset(e, g);
                if (kToPatches) store_pack(row + e, load_pack<float, W>(v));
                else store_pack(v, load_pack<float, W>(row + e));
            },
            [&](int e) {
                float *v = corner + patch_element_offset(e, g);
                if (kToPatches) row[e] = *v;
                else *v = row[e];
            });
    }
}

template <bool kToPatches>
static void launch_patch_copy(float *patches, float *vol, int B, int X, int Y, int Z, int p)
{
    if ((size_t)B * X * Y * Z == 0 || p <= 0) return;
    const PatchGeometry g = patch_geometry(B, X, Y, Z, p);
    if (g.tokens == 0) return;
    constexpr int W = kVecBytes / (int)sizeof(float);
    const bool vec = p % W == 0 && Z % W == 0 && aligned16(patches, vol);
    patch_copy_kernel<kToPatches><<<grid_for_rows(g.tokens), threads_for_row(p * p * p, vec, W),
                                    0, cuda_stream()>>>(patches, vol, g, vec);
    CUDA_CHECK_LAUNCH();
}

void cuda_patchify(float *patches, const float *vol, int B, int X, int Y, int Z, int p)
{
    /* vol is only read on this path (the kernel is shared with unpatchify). */
    launch_patch_copy<true>(patches, const_cast<float *>(vol), B, X, Y, Z, p);
}

void cuda_unpatchify(float *vol, const float *patches, int B, int X, int Y, int Z, int p)
{
    launch_patch_copy<false>(const_cast<float *>(patches), vol, B, X, Y, Z, p);
}

/* v converted element by element to TOut (narrow_to: float unchanged; bf16 rounded to nearest
 * even, the rounding of to_bf16_kernel that a bf16 GEMM's fp32 operand path applies). */
template <typename TOut, int W>
__device__ __forceinline__ Pack<TOut, W> narrowed_pack(const Pack<float, W> &v)
{
    Pack<TOut, W> r;
#pragma unroll
    for (int k = 0; k < W; k++) r.v[k] = narrow_to<TOut>(v.v[k]);
    return r;
}

/* One block per output row (b, j) (grid-stride over rows): the source row is looked up once
 * per row, then C contiguous floats are copied (float4 when C % 4 == 0 and aligned), stored as
 * TOut (bf16: gather_rows_bf16, the student's patch embedding input, each value rounded once;
 * its 4-value store is 8 bytes, aligned as every chunk starts at a multiple of 4 elements). */
template <typename TOut>
static __global__ void gather_rows_kernel(TOut *out, const float *in, const int *idx, int idx_ld,
                                          int N, int nsel, int C, size_t rows, bool vectorised)
{
    constexpr int W = kVecBytes / (int)sizeof(float);
    for (size_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const size_t b = r / nsel;
        const int j = (int)(r - b * nsel);
        const float *src = in + (b * N + idx[b * idx_ld + j]) * C;
        TOut *dst = out + r * C;
        block_stride_split<W>(
            C, vectorised,
            [&](int c) { store_pack(dst + c, narrowed_pack<TOut>(load_pack<float, W>(src + c))); },
            [&](int c) { dst[c] = narrow_to<TOut>(src[c]); });
    }
}

template <typename TOut>
static void launch_gather_rows(TOut *out, const float *in, const int *idx, int idx_ld, int B,
                               int N, int nsel, int C)
{
    const size_t rows = (size_t)B * nsel;
    if (rows == 0 || C <= 0) return;
    constexpr int W = kVecBytes / (int)sizeof(float);
    const bool vec = C % W == 0 && aligned16(out, in);
    gather_rows_kernel<TOut><<<grid_for_rows(rows), threads_for_row(C, vec, W), 0,
                               cuda_stream()>>>(out, in, idx, idx_ld, N, nsel, C, rows, vec);
    CUDA_CHECK_LAUNCH();
}

void cuda_gather_rows(float *out, const float *in, const int *idx, int idx_ld, int B, int N,
                      int nsel, int C)
{
    launch_gather_rows(out, in, idx, idx_ld, B, N, nsel, C);
}

void cuda_gather_rows_bf16(bf16_t *out, const float *in, const int *idx, int idx_ld, int B, int N,
                           int nsel, int C)
{
    launch_gather_rows(as_nv(out), in, idx, idx_ld, B, N, nsel, C);
}

/* ---- patchify_bf16: patchify's walk, each value rounded once at its store (narrowed_pack,
 * nearest even), the rounding bf16_operand applies: the target's patch embedding GEMM gets the
 * same bits with no rounding launch. The vector path reads a float4 and stores 4 bf16 (8 bytes:
 * aligned, as both pointers are 16-byte aligned and every chunk starts at a multiple of 4
 * elements). */
static __global__ void patchify_bf16_kernel(__nv_bfloat16 *patches, const float *vol,
                                            PatchGeometry g, bool vectorised)
{
    constexpr int W = kVecBytes / (int)sizeof(float);
    const int p3 = g.p * g.p * g.p;
    for (size_t t = blockIdx.x; t < g.tokens; t += gridDim.x) {
        __nv_bfloat16 *row = patches + t * p3;
        const float *corner = vol + token_corner(t, g);
        block_stride_split<W>(
            p3, vectorised,
            [&](int e) {
                store_pack(row + e,
                           narrowed_pack<__nv_bfloat16>(
                               load_pack<float, W>(corner + patch_element_offset(e, g))));
            },
            [&](int e) { row[e] = __float2bfloat16_rn(corner[patch_element_offset(e, g)]); });
    }
}

void cuda_patchify_bf16(bf16_t *patches, const float *vol, int B, int X, int Y, int Z, int p)
{
    if ((size_t)B * X * Y * Z == 0 || p <= 0) return;
    const PatchGeometry g = patch_geometry(B, X, Y, Z, p);
    if (g.tokens == 0) return;
    constexpr int W = kVecBytes / (int)sizeof(float);
    const bool vec = p % W == 0 && Z % W == 0 && aligned16(patches, vol);
    patchify_bf16_kernel<<<grid_for_rows(g.tokens), threads_for_row(p * p * p, vec, W), 0,
                           cuda_stream()>>>(as_nv(patches), vol, g, vec);
    CUDA_CHECK_LAUNCH();
}


static __global__ void scatter_add_rows_kernel(float *din, const float *dout, const int *idx,
                                               int idx_ld, int N, int nsel, int C, size_t n)
{
    GRID_STRIDE(i, n) {
        const int c = (int)(i % C);
        const size_t bj = i / C;
        const int j = (int)(bj % nsel), b = (int)(bj / nsel);
        /* atomic only to stay correct if an index repeats; distinct indices never contend */
        atomicAdd(&din[((size_t)b * N + idx[(size_t)b * idx_ld + j]) * C + c], dout[i]);
    }
}

void cuda_scatter_add_rows(float *din, const float *dout, const int *idx, int idx_ld, int B,
                           int N, int nsel, int C)
{
    const size_t n = (size_t)B * nsel * C;
    if (n == 0 || !din) return;
    scatter_add_rows_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(din, dout, idx, idx_ld,
                                                                          N, nsel, C, n);
    CUDA_CHECK_LAUNCH();
}

static __global__ void add_table_rows_kernel(float *x, const float *table, const int *idx,
                                             int idx_ld, int nsel, int C, size_t n)
{
    GRID_STRIDE(i, n) {
        const int c = (int)(i % C);
        const size_t bj = i / C;
        const int j = (int)(bj % nsel), b = (int)(bj / nsel);
        x[i] += table[(size_t)idx[(size_t)b * idx_ld + j] * C + c];
    }
}

void cuda_add_table_rows(float *x, const float *table, const int *idx, int idx_ld, int B,
                         int nsel, int C)
{
    const size_t n = (size_t)B * nsel * C;
    if (n == 0) return;
    add_table_rows_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(x, table, idx, idx_ld, nsel,
                                                                        C, n);
    CUDA_CHECK_LAUNCH();
}

/* Thread per (b, j, c), j over all N positions of perm. */
static __global__ void insert_mask_tokens_kernel(float *out, const float *visible,
                                                 const float *mask_token, const int *perm, int N,
                                                 int nvis, int C, size_t n)
{
    GRID_STRIDE(i, n) {
        const int c = (int)(i % C);
        const size_t bj = i / C;
        const int j = (int)(bj % N), b = (int)(bj / N);
        const float value = j < nvis ? visible[((size_t)b * nvis + j) * C + c] : mask_token[c];
        out[((size_t)b * N + perm[(size_t)b * N + j]) * C + c] = value;
    }
}

void cuda_insert_mask_tokens(float *out, const float *visible, const float *mask_token,
                             const int *perm, int B, int N, int nvis, int C)
{
    const size_t n = (size_t)B * N * C;
    if (n == 0) return;
    insert_mask_tokens_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(
        out, visible, mask_token, perm, N, nvis, C, n);
    CUDA_CHECK_LAUNCH();
}

static __global__ void gather_visible_grad_kernel(float *dvisible, const float *dout,
                                                  const int *perm, int N, int nvis, int C,
                                                  size_t n)
{
    GRID_STRIDE(i, n) {
        const int c = (int)(i % C);
        const size_t bj = i / C;
        const int j = (int)(bj % nvis), b = (int)(bj / nvis);
        dvisible[i] = dout[((size_t)b * N + perm[(size_t)b * N + j]) * C + c];
    }
}

/* Row r of the masked rows (r over B * (N - nvis)) of dout. */
struct MaskedRowElement {
    const float *dout;
    const int *perm;
    int N, nvis, C;
    __device__ float operator()(long r, int c) const
    {
        const int nmask = N - nvis;
        const long b = r / nmask;
        const int j = nvis + (int)(r % nmask);
        return dout[((size_t)b * N + perm[(size_t)b * N + j]) * C + c];
    }
};

void cuda_insert_mask_tokens_bwd(float *dvisible, float *dmask_token, const float *dout,
                                 const int *perm, int B, int N, int nvis, int C)
{
    const size_t n = (size_t)B * nvis * C;
    if (dvisible && n > 0) {
        gather_visible_grad_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(
            dvisible, dout, perm, N, nvis, C, n);
        CUDA_CHECK_LAUNCH();
    }
    if (dmask_token && N > nvis)
        colsum_accumulate(dmask_token, (long)B * (N - nvis), C,
                          MaskedRowElement{dout, perm, N, nvis, C});
}

/* out[b, c] = mean_t in[b, t, c]: thread per (b, c), coalesced over c. The sum runs in double
 * in row order and is rounded once before the float division, as the CPU backend's column sum
 * (cpu_mean_rows_fwd), so both give the same bits; a float sum drifted from it by 3e-6
 * relative at T = 3456 (the DINO centre's rows) and more with longer columns. */
static __global__ void mean_rows_fwd_kernel(float *out, const float *in, int T, int C, size_t n)
{
    GRID_STRIDE(i, n) {
        const size_t b = i / C;
        const int c = (int)(i % C);
        const float *p = in + b * T * C + c;
        double s = 0.0;
        for (int t = 0; t < T; t++) s += p[(size_t)t * C];
        out[i] = (float)s / (float)T;
    }
}

void cuda_mean_rows_fwd(float *out, const float *in, int B, int T, int C)
{
    const size_t n = (size_t)B * C;
    if (n == 0) return;
    mean_rows_fwd_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(out, in, T, C, n);
    CUDA_CHECK_LAUNCH();
}

/* dout times the float 1/T, as the CPU backend (cpu_mean_rows_bwd): dividing by T rounds
 * differently by up to an ulp where T is not a power of two. */
static __global__ void mean_rows_bwd_kernel(float *din, const float *dout, int T, int C,
                                            float inv_T, size_t n)
{
    GRID_STRIDE(i, n) {
        const size_t b = i / ((size_t)T * C);
        din[i] = dout[b * C + i % C] * inv_T;
    }
}

void cuda_mean_rows_bwd(float *din, const float *dout, int B, int T, int C)
{
    const size_t n = (size_t)B * T * C;
    if (n == 0 || !din) return;
    mean_rows_bwd_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(din, dout, T, C,
                                                                       1.0f / (float)T, n);
    CUDA_CHECK_LAUNCH();
}

/* Channel concat and split over plane_grid: output plane p = b (C1 + C2) + c of the
 * concatenation is a's plane b C1 + c (c < C1) or b's plane b C2 + c - C1; each plane is a
 * copy of V floats, 16 bytes at a time where V % 4 == 0 and the buffers are aligned. (A flat
 * kernel divided every element's 64-bit index by V and by C1 + C2: run 9 measured 1.2 ms of
 * these per UNETR step.) */
static __device__ __forceinline__ void copy_plane(float *dst, const float *src, long V,
                                                  bool vectorised)
{
    constexpr int W = kPlanePerVec;
    grid_stride_split<W>(
        (size_t)V, vectorised,
        [=](size_t v) { store_pack(dst + v, load_pack<float, W>(src + v)); },
        [=](size_t v) { dst[v] = src[v]; });
}

/* The plane of a or b that is plane p of the concatenation (NULL when that side is NULL). */
template <typename T>
static __device__ __forceinline__ T *concat_part(T *a, T *b, int C1, int C2, long V, int p)
{
    const int C = C1 + C2, bb = p / C, c = p % C;
    if (c < C1) return a ? a + ((size_t)bb * C1 + c) * V : nullptr;
    return b ? b + ((size_t)bb * C2 + (c - C1)) * V : nullptr;
}

static __global__ void concat_channels_kernel(float *out, const float *a, const float *b, int C1,
                                              int C2, long V, int planes, bool vectorised)
{
    for (int p = (int)blockIdx.y; p < planes; p += (int)gridDim.y)
        copy_plane(out + (size_t)p * V, concat_part(a, b, C1, C2, V, p), V, vectorised);
}

void cuda_concat_channels(float *out, const float *a, const float *b, int B, int C1, int C2,
                          long V)
{
    const int planes = B * (C1 + C2);
    if (planes <= 0 || V <= 0) return;
    const bool vec = V % kPlanePerVec == 0 && aligned16(out, a, b);
    concat_channels_kernel<<<plane_grid(planes, V, vec), kThreads, 0, cuda_stream()>>>(
        out, a, b, C1, C2, V, planes, vec);
    CUDA_CHECK_LAUNCH();
}

static __global__ void split_channels_kernel(float *da, float *db, const float *dout, int C1,
                                             int C2, long V, int planes, bool vectorised)
{
    for (int p = (int)blockIdx.y; p < planes; p += (int)gridDim.y) {
        float *dst = concat_part(da, db, C1, C2, V, p);
        if (dst) copy_plane(dst, dout + (size_t)p * V, V, vectorised);
    }
}

void cuda_split_channels(float *da, float *db, const float *dout, int B, int C1, int C2, long V)
{
    const int planes = B * (C1 + C2);
    if (planes <= 0 || V <= 0 || (!da && !db)) return;
    const bool vec = V % kPlanePerVec == 0 && aligned16(da, db, dout);
    split_channels_kernel<<<plane_grid(planes, V, vec), kThreads, 0, cuda_stream()>>>(
        da, db, dout, C1, C2, V, planes, vec);
    CUDA_CHECK_LAUNCH();
}

/* out[b, c, r] = in[b, r, c] through a 32x32 shared tile so both sides are coalesced. */
constexpr int kTile = 32, kTileRows = 8;

/* Tile rows beyond gridDim.y (65535 at most: rows past about 2.1 million) are taken by the
 * same blocks in turn, the tile reused after a barrier. */
static __global__ void transpose_kernel(float *out, const float *in, int rows, int cols)
{
    __shared__ float tile[kTile][kTile + 1];
    const size_t b = blockIdx.z;
    const float *src = in + b * rows * cols;
    float *dst = out + b * rows * cols;
    const int tile_rows = (rows + kTile - 1) / kTile;
    for (int ty = blockIdx.y; ty < tile_rows; ty += gridDim.y) {
        int c = blockIdx.x * kTile + threadIdx.x;
        for (int k = threadIdx.y; k < kTile; k += kTileRows) {
            const int r = ty * kTile + k;
            if (r < rows && c < cols) tile[k][threadIdx.x] = src[(size_t)r * cols + c];
        }
        __syncthreads();
        const int r = ty * kTile + threadIdx.x;
        for (int k = threadIdx.y; k < kTile; k += kTileRows) {
            c = blockIdx.x * kTile + k;
            if (r < rows && c < cols) dst[(size_t)c * rows + r] = tile[threadIdx.x][k];
        }
        __syncthreads();   /* the next tile row overwrites the tile */
    }
}

void cuda_transpose_tokens(float *out, const float *in, int B, int rows, int cols)
{
    if (B <= 0 || rows <= 0 || cols <= 0) return;
    dim3 block(kTile, kTileRows);
    const int tile_rows = (rows + kTile - 1) / kTile;
    dim3 grid((cols + kTile - 1) / kTile, tile_rows < 65535 ? tile_rows : 65535, B);
    transpose_kernel<<<grid, block, 0, cuda_stream()>>>(out, in, rows, cols);
    CUDA_CHECK_LAUNCH();
}
