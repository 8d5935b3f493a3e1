/* CPU backend: AdamW and the EMA target update, one pass over a flat buffer each. */
#include "ops/cpu_ops.h"

#include <math.h>

void cpu_adamw(float *param, const float *grad, float *m, float *v, size_t n, float lr,
               float beta1, float beta2, float eps, float weight_decay, long step)
{
    /* PyTorch's AdamW: decay first (decoupled from the gradient), then the bias-corrected
     * Adam step  p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps). */
    double bc1 = 1.0 - pow(beta1, (double)step);
    double bc2 = 1.0 - pow(beta2, (double)step);
    const float step_size = (float)(lr / bc1);
    const float inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
    const float decay = 1.0f - lr * weight_decay;
    #pragma omp parallel for simd schedule(static) if (n > CPU_OMP_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++) {
        float g = grad[i];
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        param[i] = param[i] * decay - step_size * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps);
    }
}

void cpu_ema_update(float *target, const float *online, size_t n, float momentum)
{
    const float rest = 1.0f - momentum;
    #pragma omp parallel for simd schedule(static) if (n > CPU_OMP_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++) target[i] = momentum * target[i] + rest * online[i];
}
