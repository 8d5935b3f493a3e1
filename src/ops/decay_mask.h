/* Which elements of a flat parameter buffer take AdamW's weight decay, as one bit per element,
 * so the optimiser updates a whole ParamSet (every tensor and the zero padding between them) in
 * one pass instead of one pass per tensor with its own decay flag.
 *
 * Layout: uint32 words; element i decays <=> bit (i & 31) of word (i >> 5) is set. Padding
 * elements have their bit clear. The mask is indexed from the first element of the buffer the
 * AdamW call receives. A NULL mask means every element decays (one plain tensor).
 *
 * Shared by gcc and nvcc (ALICE_HOSTDEV): the CPU backend and the CUDA kernel read the same
 * definition, so the CPU tests exercise the bit addressing the GPU runs. */
#ifndef ALICE_DECAY_MASK_H
#define ALICE_DECAY_MASK_H

#include <stddef.h>
#include <stdint.h>

#include "core/hostdev.h"

enum { DECAY_MASK_WORD_BITS = 32 };

/* Words of a mask covering n elements. */
static inline ALICE_HOSTDEV size_t decay_mask_words(size_t n)
{
    return (n + DECAY_MASK_WORD_BITS - 1) / DECAY_MASK_WORD_BITS;
}

/* The decay bits of elements i .. i + count - 1 as bits 0 .. count - 1 (bit k: element i + k),
 * read with ONE word load: count must divide 32 and i be a multiple of count, so the elements
 * share a word (the vectorised kernel reads 4 at a time from 4-aligned i). All set when mask
 * is NULL. */
static inline ALICE_HOSTDEV uint32_t decay_bits(const uint32_t *mask, size_t i, int count)
{
    const uint32_t all = count >= DECAY_MASK_WORD_BITS ? 0xffffffffu : (1u << count) - 1u;
    if (!mask) return all;
    return (mask[i / DECAY_MASK_WORD_BITS] >> (i % DECAY_MASK_WORD_BITS)) & all;
}

/* 1 when element i decays. */
static inline ALICE_HOSTDEV int decay_bit(const uint32_t *mask, size_t i)
{
    return (int)decay_bits(mask, i, 1);
}

/* Host side: sets the bits of elements [first, first + count) (mask zeroed beforehand). */
static inline void decay_mask_set_range(uint32_t *mask, size_t first, size_t count)
{
    for (size_t i = first; i < first + count; i++)
        mask[i / DECAY_MASK_WORD_BITS] |= 1u << (i % DECAY_MASK_WORD_BITS);
}

#endif
