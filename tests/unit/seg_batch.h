/* A segmentation batch for UNETR tests: per sample a bright box of class 1 (shifted one voxel
 * along x per sample, so samples differ) and a dim slab of class 2 at the top quarter of z,
 * over noise of amplitude 0.1, so every class has voxels. img [B, X, Y, Z], lab [B, X, Y, Z]. */
#ifndef ALICE_TEST_SEG_BATCH_H
#define ALICE_TEST_SEG_BATCH_H

#include <stdint.h>

#include "core/rng.h"

static inline void test_box_slab_batch(float *img, int32_t *lab, int B, int X, int Y, int Z,
                                       uint64_t seed)
{
    RngStream rng;
    rng_init(&rng, seed, 0, 0, RNG_TEST);
    const size_t V = (size_t)X * Y * Z;
    for (int b = 0; b < B; b++)
        for (int x = 0; x < X; x++)
            for (int y = 0; y < Y; y++)
                for (int z = 0; z < Z; z++) {
                    const size_t i = (size_t)b * V + ((size_t)x * Y + y) * Z + z;
                    const int box = x >= X / 4 + b && x < 3 * X / 4 && y >= Y / 4 &&
                                    y < 3 * Y / 4 && z >= Z / 4 && z < 3 * Z / 4;
                    const int slab = !box && z >= 3 * Z / 4;
                    lab[i] = box ? 1 : (slab ? 2 : 0);
                    img[i] = (box ? 0.8f : (slab ? 0.4f : 0.1f)) + 0.1f * rng_uniform(&rng);
                }
}

#endif
