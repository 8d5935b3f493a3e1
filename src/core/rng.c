#include "core/rng.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline void mulhilo(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo)
{
    uint64_t p = (uint64_t)a * (uint64_t)b;
    *hi = (uint32_t)(p >> 32);
    *lo = (uint32_t)p;
}

void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint32_t hi0, lo0, hi1, lo1;
        mulhilo(PHILOX_M0, c0, &hi0, &lo0);
        mulhilo(PHILOX_M1, c2, &hi1, &lo1);
        uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

void rng_init(RngStream *s, uint64_t seed, uint32_t step, uint32_t sample, RngPurpose purpose)
{
    s->key[0] = (uint32_t)seed;
    s->key[1] = (uint32_t)(seed >> 32);
    s->ctr[0] = step;
    s->ctr[1] = sample;
    s->ctr[2] = (uint32_t)purpose;
    s->ctr[3] = 0;
    s->left = 0;
}

uint32_t rng_u32(RngStream *s)
{
    if (s->left == 0) {
        philox4x32_10(s->ctr, s->key, s->buf);
        s->ctr[3]++;
        s->left = 4;
    }
    return s->buf[4 - s->left--];
}

float rng_uniform(RngStream *s) { return (float)(rng_u32(s) >> 8) * (1.0f / 16777216.0f); }

uint32_t rng_below(RngStream *s, uint32_t n)
{
    /* Multiply-shift: bias below 2^-32 * n, irrelevant at our sizes. */
    return (uint32_t)(((uint64_t)rng_u32(s) * n) >> 32);
}

float rng_normal(RngStream *s)
{
    float u1 = rng_uniform(s), u2 = rng_uniform(s);
    if (u1 < 1e-12f) u1 = 1e-12f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530717958647692f * u2);
}

void rng_permutation(RngStream *s, int *perm, int n)
{
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)rng_below(s, (uint32_t)(i + 1));
        int t = perm[i]; perm[i] = perm[j]; perm[j] = t;
    }
}
