/* Sliding-window inference ops of the CUDA backend (backend.h sw_*; the CPU reference is
 * src/ops/cpu_window.c): the windows are cut from the volume uploaded once, each window's
 * logits are blended into device accumulators (in window order: one launch per window, so
 * overlapping windows never race), and the softmax/argmax runs on the device, so only the labels
 * (and the probabilities when asked for) come down. Rows of a window (its (x, y) lines along z)
 * run over plane_grid: 16-byte accesses where the line starts allow. */
#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_ops.h"
#include "ops/cpu_math.h"  /* MATH_MUL, MATH_ADD: the CPU's product and add, no FMA */

struct SwGeometry {
    int pd0, pd1, pd2, w0, w1, w2, o0, o1, o2;
};

static SwGeometry sw_geometry(const int pd[3], const int w[3], const int origin[3])
{
    return SwGeometry{pd[0], pd[1], pd[2], w[0], w[1], w[2], origin[0], origin[1], origin[2]};
}

/* Offset in the volume of window line `row` (= x * w1 + y), and in the window. */
static __device__ __forceinline__ size_t volume_line(const SwGeometry &g, int row)
{
    const int x = row / g.w1, y = row % g.w1;
    return ((size_t)(g.o0 + x) * g.pd1 + (size_t)(g.o1 + y)) * g.pd2 + (size_t)g.o2;
}

/* Lines may take 16-byte accesses when every line start in both grids is 16-byte aligned. */
static bool lines_vectorised(const SwGeometry &g, const void *a, const void *b)
{
    return g.w2 % kPlanePerVec == 0 && g.pd2 % kPlanePerVec == 0 && g.o2 % kPlanePerVec == 0 &&
           aligned16((const float *)a, (const float *)b);
}

static __global__ void sw_gather_kernel(float *dst, const float *vol, SwGeometry g,
                                        bool vectorised)
{
    constexpr int W = kPlanePerVec;
    const int rows = g.w0 * g.w1;
    for (int row = (int)blockIdx.y; row < rows; row += (int)gridDim.y) {
        const float *src = vol + volume_line(g, row);
        float *out = dst + (size_t)row * g.w2;
        grid_stride_split<W>(
            (size_t)g.w2, vectorised,
            [=](size_t z) { store_pack(out + z, load_pack<float, W>(src + z)); },
            [=](size_t z) { out[z] = src[z]; });
    }
}

void cuda_sw_gather_window(float *dst, const float *vol, const int pd[3], const int w[3],
                           const int origin[3])
{
    if (w[0] <= 0 || w[1] <= 0 || w[2] <= 0) return;   /* an empty grid is a launch error */
    const SwGeometry g = sw_geometry(pd, w, origin);
    const bool vec = lines_vectorised(g, dst, vol);
    sw_gather_kernel<<<plane_grid(g.w0 * g.w1, g.w2, vec), kThreads, 0, cuda_stream()>>>(
        dst, vol, g, vec);
    CUDA_CHECK_LAUNCH();
}

/* acc[c, line] += logits[c, line] * imp[line] for every class, then count[line] += imp[line]. */
static __global__ void sw_blend_kernel(float *acc, float *count, const float *logits,
                                       const float *imp, int K, size_t pn, size_t wn,
                                       SwGeometry g)
{
    const int rows = g.w0 * g.w1;
    for (int row = (int)blockIdx.y; row < rows; row += (int)gridDim.y) {
        const size_t d0 = volume_line(g, row), s0 = (size_t)row * g.w2;
        for (int z = (int)(blockIdx.x * blockDim.x + threadIdx.x); z < g.w2;
             z += (int)(gridDim.x * blockDim.x)) {
            const float wt = imp[s0 + z];
            for (int c = 0; c < K; c++) {
                float *a = acc + (size_t)c * pn + d0 + z;
                *a = MATH_ADD(*a, MATH_MUL(logits[(size_t)c * wn + s0 + z], wt));
            }
            count[d0 + z] = MATH_ADD(count[d0 + z], wt);
        }
    }
}

void cuda_sw_blend_window(float *acc, float *count, const float *logits, const float *imp, int K,
                          const int pd[3], const int w[3], const int origin[3])
{
    if (w[0] <= 0 || w[1] <= 0 || w[2] <= 0) return;   /* an empty grid is a launch error */
    const SwGeometry g = sw_geometry(pd, w, origin);
    const size_t pn = (size_t)pd[0] * pd[1] * pd[2], wn = (size_t)w[0] * w[1] * w[2];
    sw_blend_kernel<<<plane_grid(g.w0 * g.w1, g.w2, false), kThreads, 0, cuda_stream()>>>(
        acc, count, logits, imp, K, pn, wn, g);
    CUDA_CHECK_LAUNCH();
}

/* voxel_softmax_argmax (ops/cpu_math.h) of acc[., q] / count[q] without a per-thread array:
 * the maximum, the sum of the exponentials in class order, then each probability (the same
 * operations on the same values, so the same results as the formula with its array). */
static __global__ void sw_finish_kernel(uint8_t *labels, float *probs, const float *acc,
                                        const float *count, int K, size_t pn, int pd1, int pd2,
                                        int d1, int d2, int lo0, int lo1, int lo2, size_t n)
{
    GRID_STRIDE(i, n) {
        const int z = (int)(i % (size_t)d2);
        const size_t xy = i / (size_t)d2;
        const int y = (int)(xy % (size_t)d1), x = (int)(xy / (size_t)d1);
        const size_t q = ((size_t)(x + lo0) * pd1 + (size_t)(y + lo1)) * pd2 + (size_t)(z + lo2);
        const float cq = count[q];
        float mx = acc[q] / cq;
        for (int c = 1; c < K; c++) mx = fmaxf(mx, acc[(size_t)c * pn + q] / cq);
        float sum = 0.0f;
        for (int c = 0; c < K; c++) sum += expf(acc[(size_t)c * pn + q] / cq - mx);
        int best = 0;
        float best_p = 0.0f;
        for (int c = 0; c < K; c++) {
            const float p = expf(acc[(size_t)c * pn + q] / cq - mx) / sum;
            if (probs) probs[(size_t)c * n + i] = p;
            if (c == 0 || p > best_p) best = c, best_p = p;
        }
        labels[i] = (uint8_t)best;
    }
}

void cuda_sw_finish(uint8_t *labels, float *probs, const float *acc, const float *count, int K,
                    const int pd[3], const int dim[3], const int lo[3])
{
    const size_t n = (size_t)dim[0] * dim[1] * dim[2], pn = (size_t)pd[0] * pd[1] * pd[2];
    if (n == 0) return;
    sw_finish_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(
        labels, probs, acc, count, K, pn, pd[1], pd[2], dim[1], dim[2], lo[0], lo[1], lo[2], n);
    CUDA_CHECK_LAUNCH();
}
