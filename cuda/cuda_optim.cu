/* AdamW and the EMA target update of the CUDA backend: one pass over a flat buffer each. Both
 * rewrite weights, so where a bf16 copy of them is current (cuda/cuda_weight_copy.h) the same
 * pass writes the rounded new value there too and the copy stays current. */
#include <math.h>

#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_ops.h"
#include "cuda/cuda_weight_copy.h"
#include "ops/adamw_math.h"
#include "ops/decay_mask.h"

/* AdamW over a whole ParamSet in one launch (ops/adamw_math.h for the arithmetic, shared with
 * the CPU backend; ops/decay_mask.h for which elements decay). Each element gets the roundings
 * of the former per-tensor kernel (adamw_math.h spells them out with intrinsics, so the
 * vectorised and the scalar loop cannot be contracted differently), with the decay factor
 * c.decay or 1 picked by its mask bit (a weight_decay 0 tensor had the factor 1 too): the
 * results are the bits of the former one launch per tensor.
 * Vectorised path: 4 floats per 16-byte access of param, grad, m and v, an 8-byte store of
 * their bf16 copy, and one mask word load for the 4 bits (i is a multiple of 4, so they share
 * a word); the scalar path takes the tail and misaligned buffers. */
constexpr int kAdamwPerVec = kVecBytes / (int)sizeof(float);

static __global__ void adamw_kernel(float *param, __nv_bfloat16 *param_bf16, const float *grad,
                                    float *m, float *v, const uint32_t *decay_mask, size_t n,
                                    AdamwCoeffs c, bool vectorised)
{
    constexpr int W = kAdamwPerVec;
    grid_stride_split<W>(
        n, vectorised,
        [=](size_t i) {
            const Pack<float, W> vg = load_pack<float, W>(grad + i);
            Pack<float, W> vp = load_pack<float, W>(param + i);
            Pack<float, W> vm = load_pack<float, W>(m + i), vv = load_pack<float, W>(v + i);
            const uint32_t bits = decay_bits(decay_mask, i, W);
            Pack<__nv_bfloat16, W> vb;
#pragma unroll
            for (int k = 0; k < W; k++) {
                const float factor = (bits >> k) & 1u ? c.decay : 1.0f;
                vp.v[k] = adamw_element(vp.v[k], vg.v[k], &vm.v[k], &vv.v[k], factor, c);
                vb.v[k] = __float2bfloat16_rn(vp.v[k]);
            }
            store_pack(m + i, vm);
            store_pack(v + i, vv);
            store_pack(param + i, vp);
            if (param_bf16) store_pack(param_bf16 + i, vb);
        },
        [=](size_t i) {
            float mi = m[i], vi = v[i];
            const float factor = decay_bit(decay_mask, i) ? c.decay : 1.0f;
            const float p = adamw_element(param[i], grad[i], &mi, &vi, factor, c);
            m[i] = mi;
            v[i] = vi;
            param[i] = p;
            if (param_bf16) param_bf16[i] = __float2bfloat16_rn(p);
        });
}

void cuda_adamw(float *param, const float *grad, float *m, float *v, const uint32_t *decay_mask,
                size_t n, float lr, float beta1, float beta2, float eps, float weight_decay,
                long step)
{
    if (n == 0) return;
    const AdamwCoeffs c = adamw_coeffs(lr, beta1, beta2, eps, weight_decay, step);
    /* A ParamSet's buffer is one registered weight buffer, so the whole range has one copy. */
    __nv_bfloat16 *copy = cuda_weight_bf16_for_update(param, n);
    /* The 4 bf16 of a chunk are one 8-byte store: the copy needs 8-byte alignment. */
    const bool copy_aligned = !copy || (uintptr_t)copy % (kAdamwPerVec * sizeof(*copy)) == 0;
    const bool vec = aligned16(param, grad, (const float *)m, (const float *)v) && copy_aligned;
    adamw_kernel<<<grid_for_split(n, vec, kAdamwPerVec), kThreads, 0, cuda_stream()>>>(
        param, copy, grad, m, v, decay_mask, n, c, vec);
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
