/* CPU backend: AdamW (with clipping's gradient scale and, optionally, the EMA target update in
 * the same pass), the EMA target update alone, one pass over a flat buffer each, and per-tensor
 * clipping over the pieces of ops/segment_pieces.h. */
#include "ops/cpu_ops.h"

#include <math.h>

#include "core/check.h"
#include "ops/adamw_math.h"
#include "ops/clip_math.h"
#include "ops/decay_mask.h"
#include "ops/ema_math.h"

void cpu_adamw(float *param, const float *grad, float *m, float *v, const uint32_t *decay_mask,
               size_t n, AdamwHyper h, float *ema_target, float ema_momentum)
{
    /* PyTorch's AdamW (ops/adamw_math.h: the per-element update the CUDA kernel shares, here
     * with every operation rounded on its own, as before); elements whose decay bit is clear
     * take the factor 1, the bits of weight_decay 0. */
    const AdamwCoeffs c = adamw_coeffs(h);
    if (!ema_target) {
        #pragma omp parallel for simd schedule(static) if (n > CPU_OMP_MIN_ELEMENTS)
        for (size_t i = 0; i < n; i++) {
            const float factor = decay_bit(decay_mask, i) ? c.decay : 1.0f;
            param[i] = adamw_element(param[i], grad[i], &m[i], &v[i], factor, c);
        }
        return;
    }
    /* The target reads the parameter this pass just wrote, element by element: a target that
     * overlaps param would read values that are not the online network's. */
    ALICE_ASSERT(ema_target + n <= param || param + n <= ema_target,
                 "adamw: the EMA target overlaps the parameters");
    /* rest as cpu_ema_update forms it, so the bits equal adamw then ema_update. */
    const float rest = 1.0f - ema_momentum;
    #pragma omp parallel for simd schedule(static) if (n > CPU_OMP_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++) {
        const float factor = decay_bit(decay_mask, i) ? c.decay : 1.0f;
        const float p = adamw_element(param[i], grad[i], &m[i], &v[i], factor, c);
        param[i] = p;
        ema_target[i] = ema_element(ema_target[i], p, ema_momentum, rest);
    }
}

void cpu_ema_update(float *target, const float *online, size_t n, float momentum)
{
    const float rest = 1.0f - momentum;
    #pragma omp parallel for simd schedule(static) if (n > CPU_OMP_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++) target[i] = ema_element(target[i], online[i], momentum, rest);
}

void cpu_clip_segments(float *x, const SegmentPieces *sp, double max_norm)
{
    const size_t *start = sp->piece_start;
    /* Segment by segment, so a tensor that fits in cache is scaled while it is still there
     * (a pass over every sum, then one over every scale, measured 0.92x the former loop's
     * speed in bench_adamw); each piece summed by one thread (its bits whatever the thread
     * count), then the segment's pieces added in order, as the GPU adds them. */
    for (int s = 0; s < sp->segments; s++) {
        const int first = sp->segment_first_piece[s], end = sp->segment_first_piece[s + 1];
        #pragma omp parallel for schedule(static) if (end - first > 1)
        for (int k = first; k < end; k++) {
            double sum = 0.0;
            #pragma omp simd reduction(+ : sum)
            for (size_t i = start[k]; i < start[k + 1]; i++) sum += (double)x[i] * (double)x[i];
            sp->piece_sums[k] = sum;
        }
        double sum = 0.0;
        for (int k = first; k < end; k++) sum += sp->piece_sums[k];
        const float factor = clip_factor(sqrt(sum), max_norm);
        if (factor >= 1.0f || end == first) continue;
        const size_t a = start[first], b = start[end];
        #pragma omp parallel for simd schedule(static) if (b - a > CPU_OMP_MIN_ELEMENTS)
        for (size_t i = a; i < b; i++) x[i] *= factor;
    }
}
