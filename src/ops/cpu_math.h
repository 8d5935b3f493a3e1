/* Vectorisable float exp and erf for the CPU backend's hot loops (softmax, GELU). glibc's
 * expf/erff are scalar calls that GCC cannot vectorise without -ffast-math; these are plain
 * branch-free arithmetic, so a loop under `#pragma omp simd` runs 4 (SSE) or 8 (AVX) lanes.
 *
 * cpu_expf: Cephes' expf (range reduction by ln 2, degree-6 polynomial), about 1 ulp; inputs
 *   below -87.3 (where float exp is denormal) and -inf give 0, above 88.4 FLT_MAX-ish, NaN
 *   stays NaN.
 * cpu_erff: Abramowitz & Stegun 7.1.26, absolute error below 1.5e-7 -- the same formula as
 *   ATen's vectorised erf, which PyTorch's CPU GELU uses.
 *
 * GCC if-converts the clamps (and so vectorises the loop) only without -ftrapping-math: a file
 * that uses these starts with  #pragma GCC optimize("no-trapping-math")  (no result changes;
 * the backend never inspects floating-point exception flags). */
#ifndef ALICE_CPU_MATH_H
#define ALICE_CPU_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float cpu_expf(float x)
{
    const float hi = 88.3762626647949f, lo = -87.3365447505531f;
    float xc = x > hi ? hi : x;
    xc = xc < lo ? lo : xc; /* NaN fails both comparisons and propagates */
    float n = floorf(xc * 1.44269504088896341f + 0.5f);
    /* r = x - n ln2 in two parts so that r keeps full precision */
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    /* times 2^n: build the float with exponent n + 127 */
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < lo ? 0.0f : p * scale; /* underflow (and -inf) to exactly 0 */
}

static inline float cpu_erff(float x)
{
    const float p = 0.3275911f, a1 = 0.254829592f, a2 = -0.284496736f, a3 = 1.421413741f,
                a4 = -1.453152027f, a5 = 1.061405429f;
    float ax = fabsf(x);
    float t = 1.0f / (1.0f + p * ax);
    float poly = ((((a5 * t + a4) * t + a3) * t + a2) * t + a1) * t;
    float y = 1.0f - poly * cpu_expf(-ax * ax);
    return copysignf(y, x);
}

#endif
