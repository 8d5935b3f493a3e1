/* Vectorisable float exp, erf and the erf GELU of the CPU backend's hot loops (softmax, GELU),
 * shared with the CUDA backend's GELU kernels (ALICE_HOSTDEV), so both backends run one
 * formula with the same roundings and agree bit for bit. glibc's expf/erff are scalar calls
 * that GCC cannot vectorise without -ffast-math; these are plain branch-free arithmetic, so a
 * loop under `#pragma omp simd` runs 4 (SSE) or 8 (AVX) lanes.
 *
 * cpu_expf: Cephes' expf (range reduction by ln 2, degree-6 polynomial), about 1 ulp; inputs
 *   below -87.3 (where float exp is denormal) and -inf give 0, above 88.4 FLT_MAX-ish, NaN
 *   stays NaN.
 * cpu_erff: Abramowitz & Stegun 7.1.26, absolute error below 1.5e-7 -- the same formula as
 *   ATen's vectorised erf, which PyTorch's CPU GELU uses. (CUDA's erff differs from it by up
 *   to ~5e-7, which is why the GPU calls this one instead.)
 * gelu_erf / gelu_erf_slope: x Phi(x) and its derivative Phi(x) + x phi(x).
 * leaky_relu_value / leaky_relu_grad: UNETR's LeakyReLU and its backward (the slope branch at
 *   x == 0, as in PyTorch), one definition for both backends' plain and fused kernels.
 *
 * Every product and sum goes through MATH_MUL / MATH_ADD / MATH_SUB: nvcc contracts a * b + c
 * into one FMA (one rounding instead of two) by default, gcc does not (ISO C mode,
 * -ffp-contract=off; x86-64-v2 has no FMA either). On the device they are __fmul_rn & co.,
 * which nvcc never contracts; on the host plain operators, so the CPU code is unchanged.
 *
 * GCC if-converts the clamps (and so vectorises the loop) only without -ftrapping-math: a file
 * that uses these starts with  #pragma GCC optimize("no-trapping-math")  (no result changes;
 * the backend never inspects floating-point exception flags). */
#ifndef ALICE_CPU_MATH_H
#define ALICE_CPU_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/hostdev.h"

#ifdef __CUDA_ARCH__
#define MATH_MUL(a, b) __fmul_rn((a), (b))
#define MATH_ADD(a, b) __fadd_rn((a), (b))
#define MATH_SUB(a, b) __fsub_rn((a), (b))
#else
#define MATH_MUL(a, b) ((a) * (b))
#define MATH_ADD(a, b) ((a) + (b))
#define MATH_SUB(a, b) ((a) - (b))
#endif

/* The divisor of normalize_rows' variance: dim - 1, the unbiased variance MAE's norm_pix_loss
 * takes (torch's var() default); 1 for a single value, whose variance torch leaves NaN. */
static inline ALICE_HOSTDEV double norm_pix_var_divisor(int dim)
{
    return dim > 1 ? (double)(dim - 1) : 1.0;
}

/* base + s y with the product rounded before the sum (add_group_scaled: drop-path's branch
 * scaling added to the residual stream), the same bits on both backends. */
static inline ALICE_HOSTDEV float scaled_add_value(float base, float s, float y)
{
    return MATH_ADD(base, MATH_MUL(s, y));
}

static inline ALICE_HOSTDEV float cpu_expf(float x)
{
    const float hi = 88.3762626647949f, lo = -87.3365447505531f;
    float xc = x > hi ? hi : x;
    xc = xc < lo ? lo : xc; /* NaN fails both comparisons and propagates */
    float n = floorf(MATH_ADD(MATH_MUL(xc, 1.44269504088896341f), 0.5f));
    /* NaN's exponent: any (p is NaN); converting NaN to int below would be undefined */
    n = n == n ? n : 0.0f;
    /* r = x - n ln2 in two parts so that r keeps full precision */
    float r = MATH_SUB(xc, MATH_MUL(n, 0.693359375f));
    r = MATH_SUB(r, MATH_MUL(n, -2.12194440e-4f));
    float p = 1.9875691500e-4f;
    p = MATH_ADD(MATH_MUL(p, r), 1.3981999507e-3f);
    p = MATH_ADD(MATH_MUL(p, r), 8.3334519073e-3f);
    p = MATH_ADD(MATH_MUL(p, r), 4.1665795894e-2f);
    p = MATH_ADD(MATH_MUL(p, r), 1.6666665459e-1f);
    p = MATH_ADD(MATH_MUL(p, r), 5.0000001201e-1f);
    p = MATH_ADD(MATH_ADD(MATH_MUL(MATH_MUL(p, r), r), r), 1.0f);
    /* times 2^n: build the float with exponent n + 127 */
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < lo ? 0.0f : MATH_MUL(p, scale); /* underflow (and -inf) to exactly 0 */
}

static inline ALICE_HOSTDEV float cpu_erff(float x)
{
    const float p = 0.3275911f, a1 = 0.254829592f, a2 = -0.284496736f, a3 = 1.421413741f,
                a4 = -1.453152027f, a5 = 1.061405429f;
    float ax = fabsf(x);
    float t = 1.0f / MATH_ADD(1.0f, MATH_MUL(p, ax));
    float poly = MATH_MUL(MATH_ADD(MATH_MUL(MATH_ADD(MATH_MUL(MATH_ADD(MATH_MUL(
                     MATH_ADD(MATH_MUL(a5, t), a4), t), a3), t), a2), t), a1), t);
    float y = MATH_SUB(1.0f, MATH_MUL(poly, cpu_expf(MATH_MUL(-ax, ax))));
    return copysignf(y, x);
}

/* GELU, exact erf form (PyTorch's default nn.GELU()): x Phi(x), Phi(x) = (1 + erf(x/sqrt2))/2. */
static inline ALICE_HOSTDEV float gelu_erf(float x)
{
    const float inv_sqrt2 = 0.70710678118654752440f;
    return MATH_MUL(MATH_MUL(0.5f, x), MATH_ADD(1.0f, cpu_erff(MATH_MUL(x, inv_sqrt2))));
}

/* d/dx [x Phi(x)] = Phi(x) + x phi(x), phi(x) = exp(-x^2/2) / sqrt(2 pi). */
static inline ALICE_HOSTDEV float gelu_erf_slope(float x)
{
    const float inv_sqrt2 = 0.70710678118654752440f, inv_sqrt_2pi = 0.39894228040143267794f;
    float cdf = MATH_MUL(0.5f, MATH_ADD(1.0f, cpu_erff(MATH_MUL(x, inv_sqrt2))));
    float pdf = MATH_MUL(inv_sqrt_2pi, cpu_expf(MATH_MUL(MATH_MUL(-0.5f, x), x)));
    return MATH_ADD(cdf, MATH_MUL(x, pdf));
}

static inline ALICE_HOSTDEV float leaky_relu_value(float x, float slope)
{
    return x > 0.0f ? x : MATH_MUL(slope, x);
}

/* dy times the slope at x; x may be the LeakyReLU's output instead of its input (for slope >= 0
 * both are > 0 at the same elements). */
static inline ALICE_HOSTDEV float leaky_relu_grad(float x, float dy, float slope)
{
    return x > 0.0f ? dy : MATH_MUL(slope, dy);
}

/* Softmax of one voxel's K logits into probs (max subtracted first, so no overflow) and the
 * index of the first largest probability: sliding-window inference's last step, one formula for
 * both backends (expf is each compiler's own; the bits may differ between them). */
static inline ALICE_HOSTDEV int voxel_softmax_argmax(const float *logits, int K, float *probs)
{
    float mx = logits[0];
    for (int c = 1; c < K; c++) mx = fmaxf(mx, logits[c]);
    float sum = 0.0f;
    for (int c = 0; c < K; c++) {
        probs[c] = expf(logits[c] - mx);
        sum += probs[c];
    }
    int best = 0;
    for (int c = 0; c < K; c++) {
        probs[c] /= sum;
        if (probs[c] > probs[best]) best = c;
    }
    return best;
}

#endif
