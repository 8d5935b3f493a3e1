/* bfloat16 storage for mixed-precision activations (precision = bf16): the upper 16 bits of
 * an IEEE fp32 (8-bit exponent, 7-bit mantissa). Widening is exact; narrowing rounds to
 * nearest, ties to even -- the rounding of CUDA's __float2bfloat16_rn and of every bf16 GEMM
 * operand -- so the CPU backend, the reference, stores the same bits the GPU stores.
 * Shared by gcc and nvcc (ALICE_HOSTDEV). */
#ifndef ALICE_BF16_H
#define ALICE_BF16_H

#include <stdint.h>
#include <string.h>

#include "core/hostdev.h"

typedef uint16_t bf16_t;

static inline ALICE_HOSTDEV float bf16_to_float(bf16_t h)
{
    const uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline ALICE_HOSTDEV bf16_t bf16_from_float(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((bits >> 16) | 0x0040u); /* quiet NaN */
    /* Round to nearest even: add 0x7fff plus the lowest kept bit, then truncate. Overflow to
     * infinity is what rounding to nearest gives for values past the largest bf16. */
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (bf16_t)(bits >> 16);
}

/* x rounded to bf16 and widened back: the value a bf16 tensor holds for fp32 x. */
static inline ALICE_HOSTDEV float bf16_round(float x) { return bf16_to_float(bf16_from_float(x)); }

#endif
