/* AdamW and the EMA target update of the CUDA backend: one pass over a flat buffer each. */
#include <math.h>

#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_ops.h"

static __global__ void adamw_kernel(float *param, const float *grad, float *m, float *v, size_t n,
                                    float beta1, float beta2, float eps, float step_size,
                                    float inv_sqrt_bc2, float decay)
{
    GRID_STRIDE(i, n) {
        const float g = grad[i];
        const float mi = beta1 * m[i] + (1.0f - beta1) * g;
        const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        param[i] = param[i] * decay - step_size * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps);
    }
}

void cuda_adamw(float *param, const float *grad, float *m, float *v, size_t n, float lr,
                float beta1, float beta2, float eps, float weight_decay, long step)
{
    if (n == 0) return;
    /* PyTorch's AdamW, as the CPU backend: decay first (decoupled), then the bias-corrected
     * step p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps); corrections computed once in double. */
    const double bc1 = 1.0 - pow(beta1, (double)step);
    const double bc2 = 1.0 - pow(beta2, (double)step);
    const float step_size = (float)(lr / bc1);
    const float inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
    const float decay = 1.0f - lr * weight_decay;
    adamw_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(param, grad, m, v, n, beta1, beta2,
                                                               eps, step_size, inv_sqrt_bc2, decay);
    CUDA_CHECK_LAUNCH();
}

static __global__ void ema_kernel(float *target, const float *online, size_t n, float momentum,
                                  float rest)
{
    GRID_STRIDE(i, n) target[i] = momentum * target[i] + rest * online[i];
}

void cuda_ema_update(float *target, const float *online, size_t n, float momentum)
{
    if (n == 0) return;
    ema_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(target, online, n, momentum,
                                                             1.0f - momentum);
    CUDA_CHECK_LAUNCH();
}
