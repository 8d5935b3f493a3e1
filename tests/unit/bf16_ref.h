/* Bit-level helpers of the mixed-precision unit tests (test_ops_bf16, test_residual_fusion,
 * test_linear_gelu_bwd): bf16 inputs drawn from the counter RNG, the value and the
 * round-to-nearest-even of bf16 patterns written out here (not through ops/bf16.h, so the
 * references do not lean on the code under test), and a bit-for-bit comparison of fp32
 * results. */
#ifndef ALICE_TEST_BF16_REF_H
#define ALICE_TEST_BF16_REF_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ops/bf16.h"
#include "test.h"

/* test_randn(seed, stream, n, scale) rounded to bf16 by bf16_from_float (the bf16 tensors the
 * ops read); malloc'd. */
static inline bf16_t *test_randn_bf16(uint64_t seed, uint32_t stream, size_t n, float scale)
{
    float *f = test_randn(seed, stream, n, scale);
    bf16_t *h = malloc((n ? n : 1) * sizeof(bf16_t));
    for (size_t i = 0; i < n; i++) h[i] = bf16_from_float(f[i]);
    free(f);
    return h;
}

static inline uint32_t float_bits(float f)
{
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

static inline float bits_float(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

/* The value of a bf16 bit pattern: the upper half of an fp32 pattern. */
static inline double bf16_value(bf16_t h) { return bits_float((uint32_t)h << 16); }

/* Round to nearest even written out independently: the two bf16 neighbours of x (truncation
 * towards zero and the next pattern away from zero), the nearer one, ties to the even
 * pattern; past the largest finite value the upper neighbour is 2^128, i.e. infinity. */
static inline bf16_t bf16_reference_round(float x)
{
    uint32_t bits = float_bits(x);
    uint16_t lo = (uint16_t)(bits >> 16), hi = (uint16_t)(lo + 1);
    double vlo = fabs(bf16_value(lo));
    double vhi = (hi & 0x7fffu) == 0x7f80u ? ldexp(1.0, 128) : fabs(bf16_value(hi));
    double ax = fabs((double)x), dlo = ax - vlo, dhi = vhi - ax;
    if (dlo < dhi) return lo;
    if (dhi < dlo) return hi;
    return (lo & 1u) ? hi : lo;
}

/* Number of entries whose bits differ (NaN payloads included: poison left unwritten counts). */
static inline size_t differing_bits(const float *a, const float *b, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += memcmp(a + i, b + i, sizeof(float)) != 0;
    return bad;
}

#endif
