/* AdamW's arithmetic, PyTorch's formula (torch.optim.AdamW): decay first, decoupled from the
 * gradient, then the bias-corrected Adam step
 *     p <- p (1 - lr wd) - lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps),
 *     bc1 = 1 - beta1^step, bc2 = 1 - beta2^step (step 1-based).
 * The per-step coefficients are computed once on the host (in double, rounded to float once);
 * the per-element update is one inline shared by gcc and nvcc (ALICE_HOSTDEV), so the CPU
 * backend and the CUDA kernel run the same expression. Elements that do not decay (biases,
 * norms: ops/decay_mask.h) use the factor 1, which multiplies exactly, so they get the bits of
 * an update with weight_decay = 0.
 *
 * Global-norm clipping happens inside the same pass: each gradient is first multiplied by the
 * step's grad_scale, one float product fl(g * grad_scale), which is exactly what the former
 * separate scaling pass (backend op scale: x[i] *= a) stored, so the update has the bits of
 * "scale the gradients, then AdamW" without writing the gradients (they stay unscaled). The
 * factor 1 (no clipping) multiplies exactly.
 *
 * Zero padding stays zero: with p = g = m = v = 0, m and v stay 0 and the step is
 * 0 * factor - step_size * 0 / (0 + eps) = +0, provided eps > 0 (0/0 is NaN; the config key
 * adam_eps is therefore required to be positive). */
#ifndef ALICE_ADAMW_MATH_H
#define ALICE_ADAMW_MATH_H

#include <math.h>

#include "core/hostdev.h"

/* The scalars of one AdamW step (the backend op adamw takes them as one argument). */
typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    long step;         /* 1-based, for the bias corrections */
    float grad_scale;  /* every gradient is used as fl(g * grad_scale): global-norm clipping's
                        * factor (train/optim.h clip_grad_scale), 1 when not clipping */
} AdamwHyper;

typedef struct {
    float beta1, beta2, eps;
    float step_size;     /* lr / bc1 */
    float inv_sqrt_bc2;  /* 1 / sqrt(bc2) */
    float decay;         /* 1 - lr weight_decay: the factor of the elements that decay */
    float grad_scale;    /* AdamwHyper.grad_scale */
} AdamwCoeffs;

/* Host side: the coefficients of the step h. */
static inline AdamwCoeffs adamw_coeffs(const AdamwHyper h)
{
    const double bc1 = 1.0 - pow(h.beta1, (double)h.step);
    const double bc2 = 1.0 - pow(h.beta2, (double)h.step);
    AdamwCoeffs c;
    c.beta1 = h.beta1;
    c.beta2 = h.beta2;
    c.eps = h.eps;
    c.step_size = (float)(h.lr / bc1);
    c.inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
    c.decay = 1.0f - h.lr * h.weight_decay;
    c.grad_scale = h.grad_scale;
    return c;
}

/* One element: updates the moments *m, *v from gradient grad, used as g = fl(grad *
 * c.grad_scale), and returns the new parameter. factor is c.decay for an element that decays,
 * else 1.
 *
 * On the GPU every rounding is spelled out with intrinsics (__fmaf_rn etc. are never fused or
 * split by nvcc or ptxas), so the bits do not depend on how the compiler contracts the
 * expression at each call site: they are those of the former scale kernel (g = grad * s, one
 * multiplication) followed by the former per-tensor AdamW kernel as nvcc 13.0 compiled it for
 * sm_90 (read from its SASS): m = fma(1-b1, g, b1 m), v = fma(g, (1-b2) g, b2 v),
 * den = fma(sqrt v, inv_sqrt_bc2, eps), p = fma(p, factor, -(step_size m / den)). (Left to the
 * compiler, the same source contracted differently in the vectorised and the scalar loop of the
 * one-launch kernel.) tests/cuda_emu/test_adamw_emulated.sh runs this branch on the host
 * (ALICE_EMULATE_CUDA_ROUNDING) against that formula; tests/gpu/test_adamw_ptx.sh checks that
 * the kernel's PTX leaves ptxas nothing to fuse. The CPU build (x86-64-v2, no FMA) rounds each
 * operation of the plain expression, as it always did. */
static inline ALICE_HOSTDEV float adamw_element(float p, float grad, float *m, float *v,
                                                float factor, const AdamwCoeffs c)
{
#if defined(__CUDA_ARCH__) || defined(ALICE_EMULATE_CUDA_ROUNDING)
    const float g = __fmul_rn(grad, c.grad_scale);
    const float mi = __fmaf_rn(__fsub_rn(1.0f, c.beta1), g, __fmul_rn(c.beta1, *m));
    const float vi = __fmaf_rn(g, __fmul_rn(__fsub_rn(1.0f, c.beta2), g), __fmul_rn(c.beta2, *v));
    const float den = __fmaf_rn(__fsqrt_rn(vi), c.inv_sqrt_bc2, c.eps);
    const float step = __fdiv_rn(__fmul_rn(c.step_size, mi), den);
    *m = mi;
    *v = vi;
    return __fmaf_rn(p, factor, -step);
#else
    const float g = grad * c.grad_scale;
    const float mi = c.beta1 * *m + (1.0f - c.beta1) * g;
    const float vi = c.beta2 * *v + (1.0f - c.beta2) * g * g;
    *m = mi;
    *v = vi;
    return p * factor - c.step_size * mi / (sqrtf(vi) * c.inv_sqrt_bc2 + c.eps);
#endif
}

#endif
