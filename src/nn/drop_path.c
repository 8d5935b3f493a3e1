#include "nn/drop_path.h"

void drop_path_rates(float *rates, int depth, float max_rate)
{
    for (int i = 0; i < depth; i++)
        rates[i] = depth > 1 ? (float)((double)max_rate * i / (depth - 1)) : 0.0f;
}

int drop_path_any(const float *rates, int depth)
{
    for (int i = 0; i < depth; i++)
        if (rates[i] > 0.0f) return 1;
    return 0;
}

void drop_path_keep_flags(int *keep, const float *scales, int depth, int samples, int first,
                          int count)
{
    for (int k = 0; k < count; k++)
        for (int i = 0; i < depth; i++)
            for (int br = 0; br < DROP_BRANCH_COUNT; br++)
                keep[((long)k * depth + i) * DROP_BRANCH_COUNT + br] =
                    scales[drop_path_index(i, (DropBranch)br, samples, first + k)] != 0.0f;
}

void drop_path_draw_sample(float *scales, const float *rates, int depth, int samples, int sample,
                           RngStream *rng)
{
    for (int i = 0; i < depth; i++) {
        /* the scale of a kept branch: timm divides by keep_prob, here one product by its
         * float reciprocal (within an ulp of the division) */
        const float keep_scale = 1.0f / (1.0f - rates[i]);
        for (int br = 0; br < DROP_BRANCH_COUNT; br++) {
            const float u = rng_uniform(rng);
            scales[drop_path_index(i, (DropBranch)br, samples, sample)] =
                u >= rates[i] ? keep_scale : 0.0f;
        }
    }
}
