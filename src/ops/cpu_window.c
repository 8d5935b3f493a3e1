/* CPU backend: the sliding-window inference ops (backend.h sw_*): window gather, Gaussian blend,
 * and the per-voxel softmax/argmax of the blend. The reference the CUDA kernels
 * (cuda/cuda_window.cu) match: the blend bit for bit, the softmax to expf's ulps. */
#pragma GCC optimize("no-trapping-math")
#include "ops/cpu_ops.h"

#include <string.h>

#include "ops/cpu_math.h"

/* Offset of voxel (x, y, z) of a [d0, d1, d2] grid. */
static size_t at(const int d[3], long x, long y, long z)
{
    return ((size_t)x * (size_t)d[1] + (size_t)y) * (size_t)d[2] + (size_t)z;
}

void cpu_sw_gather_window(float *dst, const float *vol, const int pd[3], const int w[3],
                          const int origin[3])
{
    for (int x = 0; x < w[0]; x++)
        for (int y = 0; y < w[1]; y++)
            memcpy(dst + at(w, x, y, 0), vol + at(pd, origin[0] + x, origin[1] + y, origin[2]),
                   (size_t)w[2] * sizeof(float));
}

void cpu_sw_blend_window(float *acc, float *count, const float *logits, const float *imp, int K,
                         const int pd[3], const int w[3], const int origin[3])
{
    const size_t pn = (size_t)pd[0] * pd[1] * pd[2], wn = (size_t)w[0] * w[1] * w[2];
    for (int c = 0; c < K; c++) {
        const float *src = logits + (size_t)c * wn;
        float *dst = acc + (size_t)c * pn;
        #pragma omp parallel for schedule(static)
        for (int x = 0; x < w[0]; x++)
            for (int y = 0; y < w[1]; y++) {
                const size_t d0 = at(pd, origin[0] + x, origin[1] + y, origin[2]);
                const size_t s0 = at(w, x, y, 0);
                for (int z = 0; z < w[2]; z++) dst[d0 + z] += src[s0 + z] * imp[s0 + z];
            }
    }
    #pragma omp parallel for schedule(static)
    for (int x = 0; x < w[0]; x++)
        for (int y = 0; y < w[1]; y++) {
            const size_t d0 = at(pd, origin[0] + x, origin[1] + y, origin[2]);
            const size_t s0 = at(w, x, y, 0);
            for (int z = 0; z < w[2]; z++) count[d0 + z] += imp[s0 + z];
        }
}

void cpu_sw_finish(uint8_t *labels, float *probs, const float *acc, const float *count, int K,
                   const int pd[3], const int dim[3], const int lo[3])
{
    const size_t pn = (size_t)pd[0] * pd[1] * pd[2], n = (size_t)dim[0] * dim[1] * dim[2];
    #pragma omp parallel for schedule(static)
    for (int x = 0; x < dim[0]; x++) {
        float blended[256], p[256];   /* K <= 256 (backend.h) */
        for (int y = 0; y < dim[1]; y++)
            for (int z = 0; z < dim[2]; z++) {
                const size_t q = at(pd, x + lo[0], y + lo[1], z + lo[2]), i = at(dim, x, y, z);
                for (int c = 0; c < K; c++) blended[c] = acc[(size_t)c * pn + q] / count[q];
                labels[i] = (uint8_t)voxel_softmax_argmax(blended, K, p);
                if (probs)
                    for (int c = 0; c < K; c++) probs[(size_t)c * n + i] = p[c];
            }
    }
}
