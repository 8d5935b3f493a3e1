/* AdamW and the EMA target update of the CUDA backend: one pass over a flat buffer each. Both
 * rewrite weights, so where a bf16 copy of them is current (cuda/cuda_weight_copy.h) the same
 * pass writes the rounded new value there too and the copy stays current. */
#include <math.h>

#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_ops.h"
#include "cuda/cuda_weight_copy.h"

static __global__ void adamw_kernel(float *param, __nv_bfloat16 *param_bf16, const float *grad,
                                    float *m, float *v, size_t n, float beta1, float beta2,
                                    float eps, float step_size, float inv_sqrt_bc2, float decay)
{
    GRID_STRIDE(i, n) {
        const float g = grad[i];
        const float mi = beta1 * m[i] + (1.0f - beta1) * g;
        const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        const float p = param[i] * decay - step_size * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps);
        param[i] = p;
        if (param_bf16) param_bf16[i] = __float2bfloat16_rn(p);
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
    __nv_bfloat16 *copy = cuda_weight_bf16_for_update(param, n);
    adamw_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(param, copy, grad, m, v, n, beta1,
                                                               beta2, eps, step_size,
                                                               inv_sqrt_bc2, decay);
    CUDA_CHECK_LAUNCH();
}

static __global__ void ema_kernel(float *target, __nv_bfloat16 *target_bf16, const float *online,
                                  size_t n, float momentum, float rest)
{
    GRID_STRIDE(i, n) {
        const float t = momentum * target[i] + rest * online[i];
        target[i] = t;
        if (target_bf16) target_bf16[i] = __float2bfloat16_rn(t);
    }
}

void cuda_ema_update(float *target, const float *online, size_t n, float momentum)
{
    if (n == 0) return;
    __nv_bfloat16 *copy = cuda_weight_bf16_for_update(target, n);
    ema_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(target, copy, online, n, momentum,
                                                             1.0f - momentum);
    CUDA_CHECK_LAUNCH();
}
