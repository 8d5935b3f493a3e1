/* Host emulation of the CUDA subset that cuda/cuda_flash_attention.cu uses, so its kernels run
 * (slowly) on a machine without a GPU: one std::thread per CUDA thread, the blocks of a grid one
 * after another, __syncthreads = a std::barrier of the block (threads that return leave it, as
 * exited threads do on the GPU), warp shuffles through a per-warp barrier, nvcuda::wmma 16x16x16
 * fragments as full 16x16 arrays computed redundantly by every lane (stores by lane 0 between
 * warp barriers, so a lane's load of an accumulator never sees another lane's store), bf16 as
 * round-to-nearest-even on the upper 16 bits. Shared memory starts filled with 0xff bytes (NaN),
 * so a read of an element the kernel never wrote poisons the result.
 *
 * What it checks: indexing, tiling, padding, masking, barrier placement (races are likely,
 * not certain, to show up with real threads), the bf16/fp32 branches and every launch's grid and
 * shared-memory layout. What it cannot: real fragment layouts and alignment rules of wmma,
 * shared-memory capacity, bank conflicts, speed. Used by test_flash_attention_emulated.sh,
 * test_layernorm_dx_emulated.sh, test_colsum_emulated.sh and others (2-D blocks, 3-D grids,
 * static __shared__ arrays, atomicInc, __threadfence; the blocks of a grid optionally in a
 * shuffled order, emu_block_order_seed). The CUDA keywords, dim3, bf16 and the stream stand-in
 * are those of the serial emulation too (emu_cuda_types.h). */
#ifndef ALICE_EMU_CUDA_H
#define ALICE_EMU_CUDA_H

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#include "emu_cuda_types.h"

/* A kernel's __shared__ variables: one instance for all its threads (blocks run one at a time).
 * Unlike the dynamic smem buffer they are not poisoned per block: zero at first, then whatever
 * the previous block left. */
#define __shared__ static

/* State of the block being run (blocks run one at a time). */
inline thread_local EmuIndex threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
/* The thread's rank in its block, x fastest (warps are 32 consecutive ranks, as on the GPU). */
inline unsigned emu_thread_rank()
{
    return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}
/* Nonzero: the blocks of a grid run in a pseudo-random order drawn from this seed (a kernel
 * must not depend on which block runs last); 0: in order (blockIdx.x fastest). */
inline unsigned emu_block_order_seed;
/* The device's limit on gridDim.y and gridDim.z (65535 on every CUDA GPU so far). A test may
 * lower it, together with the kernel source's own cap (cut_kernels.py --replace), to run a
 * kernel's striding past the limit on a small grid. */
inline unsigned emu_max_grid_yz = 65535;
inline unsigned char *emu_smem;
inline std::barrier<> *emu_block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> emu_warp_barriers;
inline float emu_exchange[1024];

inline void __syncthreads() { emu_block_barrier->arrive_and_wait(); }
inline void emu_warp_sync() { emu_warp_barriers[emu_thread_rank() >> 5]->arrive_and_wait(); }
/* Every lane of the warp calls it (the kernels use the full mask). */
inline void __syncwarp(unsigned mask = 0xffffffffu)
{
    (void)mask;
    emu_warp_sync();
}

/* The warp_sum of cuda/cuda_kernels.cuh (every lane gets the sum), exchanged in double so
 * that double sums (block_sum<double>) keep their precision; exact for float. */
inline double emu_exchange_wide[1024];
template <typename T> T warp_sum(T v)
{
    emu_warp_sync();
    emu_exchange_wide[threadIdx.x] = (double)v;
    emu_warp_sync();
    T s = 0;
    const unsigned base = threadIdx.x & ~31u;
    for (unsigned i = 0; i < 32; i++) s += (T)emu_exchange_wide[base + i];
    emu_warp_sync();
    return s;
}

/* Every lane of the warp calls it (as the kernels do, with the full mask). */
inline float __shfl_xor_sync(unsigned mask, float v, int lane_mask)
{
    (void)mask;
    emu_warp_sync();
    emu_exchange[threadIdx.x] = v;
    emu_warp_sync();
    const float r = emu_exchange[(threadIdx.x & ~31u) | ((threadIdx.x & 31u) ^ (unsigned)lane_mask)];
    emu_warp_sync();
    return r;
}

/* kernel<<<grid, block, smem_bytes, stream>>>(args...); grid and block up to 3-D (z of the
 * grid: 1). */
template <typename Kernel, typename... Args>
void emu_launch(Kernel kernel, dim3 grid, dim3 block, unsigned smem_bytes, int stream,
                Args... args)
{
    (void)stream;
    /* A launch the GPU would refuse (cudaErrorInvalidConfiguration) fails here too. */
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > emu_max_grid_yz ||
        grid.z > emu_max_grid_yz || block.x * block.y * block.z == 0 ||
        block.x * block.y * block.z > 1024) {
        fprintf(stderr, "emu_launch: invalid configuration: grid %u x %u x %u (y and z at most "
                "%u), block %u x %u x %u (1 to 1024 threads)\n", grid.x, grid.y, grid.z,
                emu_max_grid_yz, block.x, block.y, block.z);
        exit(1);
    }
    std::vector<unsigned char> smem(smem_bytes + 256);
    blockDim = block;
    gridDim = grid;
    const unsigned threads_per_block = block.x * block.y * block.z;
    const size_t blocks = (size_t)grid.x * grid.y * grid.z;
    std::vector<size_t> order(blocks);
    for (size_t i = 0; i < blocks; i++) order[i] = i;
    if (emu_block_order_seed) {  /* Fisher-Yates with a xorshift generator */
        uint64_t s = 0x9e3779b97f4a7c15ull * emu_block_order_seed;
        for (size_t i = blocks; i > 1; i--) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            std::swap(order[i - 1], order[(size_t)(s % i)]);
        }
    }
    /* One std::thread per CUDA thread of a block, reused by every block of the grid (thread
     * creation, not the kernels, dominated the emulation's time): the host thread sets a block
     * up (smem poisoned, fresh barriers), releases the workers through `start`, and waits for
     * them at `done`. */
    std::barrier<> start((std::ptrdiff_t)threads_per_block + 1);
    std::barrier<> done((std::ptrdiff_t)threads_per_block + 1);
    std::unique_ptr<std::barrier<>> block_barrier;
    unsigned bx = 0, by = 0, bz = 0;
    bool grid_done = false;
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < threads_per_block; t++)
        threads.emplace_back([&, t] {
            threadIdx = {t % block.x, t / block.x % block.y, t / (block.x * block.y)};
            for (;;) {
                start.arrive_and_wait();
                if (grid_done) return;
                blockIdx = {bx, by, bz};
                kernel(args...);
                emu_block_barrier->arrive_and_drop();
                done.arrive_and_wait();
            }
        });
    for (const size_t linear_block : order) {
        bx = (unsigned)(linear_block % grid.x);
        by = (unsigned)(linear_block / grid.x % grid.y);
        bz = (unsigned)(linear_block / grid.x / grid.y);
        std::memset(smem.data(), 0xff, smem.size());
        emu_smem = smem.data();
        block_barrier.reset(new std::barrier<>((std::ptrdiff_t)threads_per_block));
        emu_block_barrier = block_barrier.get();
        emu_warp_barriers.clear();
        for (unsigned w = 0; w < (threads_per_block + 31) / 32; w++)
            emu_warp_barriers.emplace_back(new std::barrier<>(32));
        start.arrive_and_wait();
        done.arrive_and_wait();
    }
    grid_done = true;
    start.arrive_and_wait();
    for (auto &th : threads) th.join();
}

/* ---- global-memory atomics, fences and cache-hinted loads ----
 * Blocks run one after another, so another block's writes are complete before a block starts;
 * the atomics still are atomic among the threads of a block (they run concurrently). */
/* old = *p; *p = old >= limit ? 0 : old + 1; returns old (CUDA's atomicInc). */
inline unsigned atomicInc(unsigned *p, unsigned limit)
{
    std::atomic_ref<unsigned> a(*p);
    unsigned old = a.load();
    while (!a.compare_exchange_weak(old, old >= limit ? 0u : old + 1u)) {
    }
    return old;
}
inline unsigned atomicAdd(unsigned *p, unsigned v)
{
    return std::atomic_ref<unsigned>(*p).fetch_add(v);
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline float __ldcg(const float *p) { return *p; }

/* ---- bf16 (the type and its conversions: emu_cuda_types.h) ---- */
/* The low 16 bits of a register as a bf16 value (mma operands hold two). */
inline float emu_bf16_bits_to_float(uint32_t bits16) { return bf16_to_float((bf16_t)(bits16 & 0xffffu)); }

/* ---- mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (cuda/cuda_flash_fwd_mma.cuh) ----
 * The PTX ISA's fragment layout ("Matrix Fragments for mma.m16n8k16 with floating point
 * type"), lane = 4 g + t: A registers a0..a3 hold (row g, cols 2t, 2t+1), (g + 8, 2t..),
 * (g, 2t + 8..), (g + 8, 2t + 8..); B registers b0, b1 hold (k 2t, 2t+1; col g), (k 2t + 8..);
 * C/D hold (g, 2t), (g, 2t+1), (g + 8, 2t), (g + 8, 2t+1); the lower index in the low 16 bits.
 * Every lane publishes its registers, then computes its own four outputs from the whole
 * operands (fp32 accumulation in k order; the hardware's order is unspecified). */
inline uint32_t emu_mma_a[1024][4], emu_mma_b[1024][2];
inline void mma_bf16_m16n8k16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1)
{
    const unsigned tid = threadIdx.x, base = tid & ~31u;
    emu_warp_sync();
    for (int r = 0; r < 4; r++) emu_mma_a[tid][r] = a[r];
    emu_mma_b[tid][0] = b0;
    emu_mma_b[tid][1] = b1;
    emu_warp_sync();
    float A[16][16], B[16][8];
    for (unsigned lane = 0; lane < 32; lane++) {
        const int g = (int)lane >> 2, t = (int)lane & 3;
        const uint32_t *ar = emu_mma_a[base + lane], *br = emu_mma_b[base + lane];
        const int rows[4] = {g, g + 8, g, g + 8}, cols[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
        for (int r = 0; r < 4; r++) {
            A[rows[r]][cols[r]] = emu_bf16_bits_to_float(ar[r]);
            A[rows[r]][cols[r] + 1] = emu_bf16_bits_to_float(ar[r] >> 16);
        }
        for (int r = 0; r < 2; r++) {
            B[2 * t + 8 * r][g] = emu_bf16_bits_to_float(br[r]);
            B[2 * t + 8 * r + 1][g] = emu_bf16_bits_to_float(br[r] >> 16);
        }
    }
    const int g = (int)(tid & 31u) >> 2, t = (int)tid & 3;
    for (int e = 0; e < 4; e++) {
        const int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
        float acc = d[e];
        for (int kk = 0; kk < 16; kk++) acc += A[row][kk] * B[kk][col];
        d[e] = acc;
    }
    emu_warp_sync();
}

/* ---- ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16 ----
 * Lanes 8m..8m+7 give the row addresses of 8x8 matrix m; lane = 4 g + t receives in r[m] the
 * elements (row g, cols 2t, 2t+1) of matrix m, or with .trans (rows 2t, 2t+1 of col g). */
inline const uint16_t *emu_ldsm_rows[1024];
inline void emu_ldsm(uint32_t (&r)[4], const uint16_t *row, bool trans)
{
    const unsigned tid = threadIdx.x, base = tid & ~31u;
    emu_warp_sync();
    emu_ldsm_rows[tid] = row;
    emu_warp_sync();
    const unsigned g = (tid & 31u) >> 2, t = tid & 3u;
    for (unsigned m = 0; m < 4; m++) {
        const uint16_t *const *rows = emu_ldsm_rows + base + 8 * m;
        const uint16_t lo = trans ? rows[2 * t][g] : rows[g][2 * t];
        const uint16_t hi = trans ? rows[2 * t + 1][g] : rows[g][2 * t + 1];
        r[m] = (uint32_t)lo | ((uint32_t)hi << 16);
    }
    emu_warp_sync();
}
inline void ldsm_x4(uint32_t (&r)[4], const uint16_t *row) { emu_ldsm(r, row, false); }
inline void ldsm_x4_trans(uint32_t (&r)[4], const uint16_t *row) { emu_ldsm(r, row, true); }

inline float emu_float(float x) { return x; }
inline float emu_float(__nv_bfloat16 x) { return __bfloat162float(x); }

/* ---- nvcuda::wmma, 16x16x16 only ---- */
namespace nvcuda {
namespace wmma {
struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };

/* x[i * 16 + j] is logical element (i, j) of the 16x16 operand or accumulator. */
template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
    static constexpr int num_elements = 256;
    T x[256];
};

template <typename Use, typename T, typename Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout> &f, const T *p, unsigned ldm)
{
    constexpr bool col = std::is_same<Layout, col_major>::value;
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) f.x[i * 16 + j] = col ? p[i + j * ldm] : p[i * ldm + j];
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float> &f, const float *p,
                             unsigned ldm, layout_t layout)
{
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++)
            f.x[i * 16 + j] = layout == mem_col_major ? p[i + j * ldm] : p[i * ldm + j];
}
inline void store_matrix_sync(float *p, const fragment<accumulator, 16, 16, 16, float> &f,
                              unsigned ldm, layout_t layout)
{
    emu_warp_sync();
    if ((threadIdx.x & 31) == 0)
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 16; j++)
                (layout == mem_col_major ? p[i + j * ldm] : p[i * ldm + j]) = f.x[i * 16 + j];
    emu_warp_sync();
}
inline void fill_fragment(fragment<accumulator, 16, 16, 16, float> &f, float v)
{
    for (float &e : f.x) e = v;
}
template <typename T, typename LA, typename LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float> &d,
              const fragment<matrix_a, 16, 16, 16, T, LA> &a,
              const fragment<matrix_b, 16, 16, 16, T, LB> &b,
              const fragment<accumulator, 16, 16, 16, float> &c)
{
    float r[256];
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
            float s = c.x[i * 16 + j];
            for (int k = 0; k < 16; k++) s += emu_float(a.x[i * 16 + k]) * emu_float(b.x[k * 16 + j]);
            r[i * 16 + j] = s;
        }
    std::memcpy(d.x, r, sizeof r);
}
}  // namespace wmma
}  // namespace nvcuda

/* ---- the parts of cuda/cuda_kernels.cuh and cuda/cuda_context.h the file uses ---- */
constexpr int kThreads = 256;
enum CudaScratchSlot { SCRATCH_STATS, SCRATCH_COLSUM, SCRATCH_BF16_A, SCRATCH_ATTN_GRAD_F32,
                      SCRATCH_REDUCE, SCRATCH_BF16_B, SCRATCH_ATTN_GRAD, SCRATCH_ATTN_BF16,
                      SCRATCH_ATTN_PROBS, SCRATCH_POINTWISE_PARTIALS, SCRATCH_WGRAD3_PARTIALS,
                      EMU_SCRATCH_SLOTS };
struct CudaContext { int bf16_gemm; };
inline CudaContext emu_context;
inline CudaContext *cuda_context() { return &emu_context; }
/* One growable buffer per slot, as the real registry (cuda/cuda_context.h). */
inline std::vector<unsigned char> emu_scratch_buffers[EMU_SCRATCH_SLOTS];
inline void *cuda_scratch(CudaScratchSlot slot, size_t bytes)
{
    std::vector<unsigned char> &buf = emu_scratch_buffers[slot];
    if (buf.size() < bytes) buf.resize(bytes);
    return buf.data();
}
typedef int cudaError_t;
enum { cudaFuncAttributeMaxDynamicSharedMemorySize };
template <typename Kernel> int cudaFuncSetAttribute(Kernel, int, int) { return 0; }
#define CUDA_CHECK(call) (void)(call)
[[noreturn]] inline void alice_fatal_at(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fatal at %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

#endif
