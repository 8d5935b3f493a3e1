#include "core/rng.h"

#include <math.h>

#include "core/philox.h"

/* The bijection lives in core/philox.h, shared with the CUDA kernels. */
void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    philox4x32_10_block(ctr, key, out);
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
