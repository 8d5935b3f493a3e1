/* Philox4x32-10 (Salmon et al., SC'11) as one inline function that gcc and nvcc both compile,
 * so the CPU stream of core/rng.h and the CUDA kernels that draw per-voxel noise compute the
 * very same words from the very same code. Random access: word w of a stream whose counter
 * words 0..2 are c[0..2] is philox(c0, c1, c2, w / 4)[w % 4], which is how rng_u32 walks it. */
#ifndef ALICE_PHILOX_H
#define ALICE_PHILOX_H

#include <stdint.h>

#include "core/hostdev.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

ALICE_HOSTDEV static inline void philox4x32_10_block(const uint32_t ctr[4], const uint32_t key[2],
                                                      uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * (uint64_t)c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * (uint64_t)c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/* Word `index` of the stream (key, counter words 0..2), without walking the words before it. */
ALICE_HOSTDEV static inline uint32_t philox_word_at(const uint32_t key[2], const uint32_t ctr[3],
                                                     uint32_t index)
{
    uint32_t c[4] = {ctr[0], ctr[1], ctr[2], index >> 2}, out[4];
    philox4x32_10_block(c, key, out);
    return out[index & 3u];
}

#endif
