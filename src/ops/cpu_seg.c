/* CPU backend: the DiceCE segmentation loss on logits [B, K, V] (MONAI's DiceCELoss with
 * softmax, one-hot labels, background included, smooth_nr = smooth_dr = 1e-5, and PyTorch's
 * mean cross-entropy). Voxels are processed in chunks so that the class loop (stride V) runs
 * over contiguous voxel runs and vectorises. */
/* Lets GCC vectorise the clamps of cpu_expf (see ops/cpu_math.h). */
#pragma GCC optimize("no-trapping-math")
#include "ops/cpu_ops.h"

#include <math.h>
#include <stdlib.h>

#include "core/check.h"
#include "ops/cpu_math.h"

#define DICE_SMOOTH 1e-5
enum { VOXEL_CHUNK = 256 };

/* Per (b, k): intersection sum_v p*y, prediction sum_v p, label count sum_v y. */
static void dice_statistics(const float *probs, const int *labels, int B, int K, long V,
                            double *inter, double *psum, double *ysum)
{
    #pragma omp parallel for collapse(2) schedule(static) if ((long)B * K * V > CPU_OMP_MIN_ELEMENTS)
    for (int b = 0; b < B; b++)
        for (int k = 0; k < K; k++) {
            const float *p = probs + ((long)b * K + k) * V;
            const int *lab = labels + (long)b * V;
            double i_acc = 0.0, p_acc = 0.0, y_acc = 0.0;
            for (long v = 0; v < V; v++) {
                int hit = lab[v] == k;
                p_acc += p[v];
                i_acc += hit ? p[v] : 0.0f;
                y_acc += hit;
            }
            inter[b * K + k] = i_acc;
            psum[b * K + k] = p_acc;
            ysum[b * K + k] = y_acc;
        }
}

void cpu_dicece_fwd(float *probs, float *values, const float *logits, const int *labels, int B,
                    int K, long V)
{
    long nchunks = (V + VOXEL_CHUNK - 1) / VOXEL_CHUNK;
    double ce_sum = 0.0;
    long bad_labels = 0;
    #pragma omp parallel for collapse(2) schedule(static) reduction(+ : ce_sum, bad_labels) if ((long)B * K * V > CPU_OMP_MIN_ELEMENTS)
    for (int b = 0; b < B; b++)
        for (long ch = 0; ch < nchunks; ch++) {
            long v0 = ch * VOXEL_CHUNK;
            int n = (int)(V - v0 < VOXEL_CHUNK ? V - v0 : VOXEL_CHUNK);
            const float *lg = logits + (long)b * K * V + v0;
            float *pr = probs + (long)b * K * V + v0;
            const int *lab = labels + (long)b * V + v0;
            float mx[VOXEL_CHUNK], sum[VOXEL_CHUNK];
            for (int i = 0; i < n; i++) {
                mx[i] = -INFINITY;
                sum[i] = 0.0f;
            }
            for (int k = 0; k < K; k++)
                for (int i = 0; i < n; i++) mx[i] = fmaxf(mx[i], lg[(long)k * V + i]);
            for (int k = 0; k < K; k++)
                for (int i = 0; i < n; i++) {
                    float e = cpu_expf(lg[(long)k * V + i] - mx[i]);
                    pr[(long)k * V + i] = e;
                    sum[i] += e;
                }
            for (int i = 0; i < n; i++) {
                int y = lab[i];
                if (y < 0 || y >= K) {
                    bad_labels++;
                    continue;
                }
                /* -log softmax = log(sum) - (logit - max), without forming log(p) */
                ce_sum += logf(sum[i]) - (lg[(long)y * V + i] - mx[i]);
            }
            for (int i = 0; i < n; i++) sum[i] = 1.0f / sum[i];
            for (int k = 0; k < K; k++)
                for (int i = 0; i < n; i++) pr[(long)k * V + i] *= sum[i];
        }
    /* Counted, not refused here: the reader of the values stops the run, the same on every
     * backend (the CUDA op cannot stop it without waiting for the device). */
    values[SEG_LOSS_BAD_LABELS] = (float)bad_labels;
    double *stats = xmalloc((size_t)3 * B * K * sizeof(double));
    double *inter = stats, *psum = stats + B * K, *ysum = stats + 2 * B * K;
    dice_statistics(probs, labels, B, K, V, inter, psum, ysum);
    double dice_mean = 0.0;
    for (int i = 0; i < B * K; i++)
        dice_mean += (2.0 * inter[i] + DICE_SMOOTH) / (psum[i] + ysum[i] + DICE_SMOOTH);
    free(stats);
    values[SEG_LOSS_CE] = (float)(ce_sum / ((double)B * V));
    values[SEG_LOSS_DICE] = (float)(1.0 - dice_mean / (B * K));
}

void cpu_dicece_bwd(float *dlogits, const float *probs, const int *labels, int B, int K, long V,
                    float w_ce, float w_dice)
{
    double *stats = xmalloc((size_t)3 * B * K * sizeof(double));
    double *inter = stats, *psum = stats + B * K, *ysum = stats + 2 * B * K;
    dice_statistics(probs, labels, B, K, V, inter, psum, ysum);
    /* d dice / d p[b,k,v] = a[b,k] y + c[b,k] with
     *   a = -(2 / den) / (B K),  c = (num / den^2) / (B K),
     *   num = 2 I + s, den = Sp + Sy + s. Both are scaled by w_dice here. */
    float *a = xmalloc((size_t)2 * B * K * sizeof(float));
    float *c = a + B * K;
    for (int i = 0; i < B * K; i++) {
        double num = 2.0 * inter[i] + DICE_SMOOTH, den = psum[i] + ysum[i] + DICE_SMOOTH;
        a[i] = (float)(-w_dice * 2.0 / den / ((double)B * K));
        c[i] = (float)(w_dice * num / (den * den) / ((double)B * K));
    }
    free(stats);
    const float ce_scale = (float)(w_ce / ((double)B * V));
    long nchunks = (V + VOXEL_CHUNK - 1) / VOXEL_CHUNK;
    #pragma omp parallel for collapse(2) schedule(static) if ((long)B * K * V > CPU_OMP_MIN_ELEMENTS)
    for (int b = 0; b < B; b++)
        for (long ch = 0; ch < nchunks; ch++) {
            long v0 = ch * VOXEL_CHUNK;
            int n = (int)(V - v0 < VOXEL_CHUNK ? V - v0 : VOXEL_CHUNK);
            const float *pr = probs + (long)b * K * V + v0;
            const int *lab = labels + (long)b * V + v0;
            float *dl = dlogits + (long)b * K * V + v0;
            const float *ab = a + b * K, *cb = c + b * K;
            /* dot[i] = sum_k p_k g_k with g_k = a_k [y == k] + c_k */
            float dot[VOXEL_CHUNK];
            /* a label outside 0..K-1 (counted by the forward, reported after the step) is in
             * no class: no term, and no read past the class planes (as the CUDA kernel) */
            for (int i = 0; i < n; i++) {
                const int y = lab[i];
                dot[i] = y >= 0 && y < K ? ab[y] * pr[(long)y * V + i] : 0.0f;
            }
            for (int k = 0; k < K; k++)
                for (int i = 0; i < n; i++) dot[i] += cb[k] * pr[(long)k * V + i];
            /* dz_k = w_ce (p_k - y_k) / (B V) + p_k (g_k - dot) */
            for (int k = 0; k < K; k++)
                for (int i = 0; i < n; i++) {
                    float p = pr[(long)k * V + i];
                    int hit = lab[i] == k;
                    float g = (hit ? ab[k] : 0.0f) + cb[k];
                    dl[(long)k * V + i] = ce_scale * (p - (hit ? 1.0f : 0.0f)) + p * (g - dot[i]);
                }
        }
    free(a);
}
