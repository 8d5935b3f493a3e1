/* Counter-based random numbers (Philox4x32-10, Salmon et al. SC'11).
 *
 * Every random decision is a pure function of (seed, step, sample, purpose, draw index), so
 * masks, crops and augmentations are identical whatever the rank count, thread timing or
 * backend. "sample" is the global sample index of the step (not the rank-local one), which is
 * what makes an N-rank run draw the same numbers as a 1-rank run with N times the batch. */
#ifndef ALICE_RNG_H
#define ALICE_RNG_H

#include <stdint.h>

/* Registry of purposes: one stream family per kind of decision. Append only (the values are
 * part of the reproducibility contract of checkpoints). */
typedef enum {
    RNG_PARAM_INIT = 1,   /* sample = tensor index in the registry */
    RNG_MASK = 2,         /* MAE patch masks */
    RNG_CROP = 3,         /* crop positions */
    RNG_AUGMENT = 4,      /* flips, rotations, intensity */
    RNG_PHANTOM = 5,      /* synthetic volumes; sample = case index */
    RNG_SHUFFLE = 6,      /* epoch order of cases */
    RNG_PAIR = 7,         /* choice of the key volume for a query */
    RNG_TEST = 8,         /* tests */
    RNG_NOISE = 9,        /* phantom noise */
    RNG_FOLD = 10,        /* fold assignment */
    RNG_AUG_NOISE = 11,   /* loader: per-voxel noise of augmented views */
    RNG_CROP_KEY = 12,    /* loader: key-crop decisions of a pre-training pair */
    RNG_DROP_PATH = 13,   /* stochastic depth: which residual branches a sample drops */
} RngPurpose;

typedef struct {
    uint32_t key[2];
    uint32_t ctr[4];
    uint32_t buf[4];
    int left;              /* unused words in buf */
} RngStream;

/* The Philox4x32-10 bijection. Pure; the CUDA backend uses the same constants. */
void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

void rng_init(RngStream *s, uint64_t seed, uint32_t step, uint32_t sample, RngPurpose purpose);
uint32_t rng_u32(RngStream *s);
/* Uniform in [0, 1) with 24 bits. */
float rng_uniform(RngStream *s);
/* Uniform integer in [0, n). */
uint32_t rng_below(RngStream *s, uint32_t n);
/* Standard normal (Box-Muller). */
float rng_normal(RngStream *s);
/* Fisher-Yates permutation of 0..n-1 into perm. */
void rng_permutation(RngStream *s, int *perm, int n);

#endif
