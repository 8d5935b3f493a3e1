/* CPU backend: AdamW and the EMA target update, one pass over a flat buffer each. */
#include "ops/cpu_ops.h"

#include "ops/adamw_math.h"
#include "ops/decay_mask.h"

void cpu_adamw(float *param, const float *grad, float *m, float *v, const uint32_t *decay_mask,
               size_t n, float lr, float beta1, float beta2, float eps, float weight_decay,
               long step)
{
    /* PyTorch's AdamW (ops/adamw_math.h: the per-element update the CUDA kernel shares, here
     * with every operation rounded on its own, as before); elements whose decay bit is clear
     * take the factor 1, the bits of weight_decay 0. */
    const AdamwCoeffs c = adamw_coeffs(lr, beta1, beta2, eps, weight_decay, step);
    #pragma omp parallel for simd schedule(static) if (n > CPU_OMP_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++) {
        const float factor = decay_bit(decay_mask, i) ? c.decay : 1.0f;
        param[i] = adamw_element(param[i], grad[i], &m[i], &v[i], factor, c);
    }
}

void cpu_ema_update(float *target, const float *online, size_t n, float momentum)
{
    const float rest = 1.0f - momentum;
    #pragma omp parallel for simd schedule(static) if (n > CPU_OMP_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++) target[i] = momentum * target[i] + rest * online[i];
}
