/* Stochastic depth ("drop-path"; Huang et al. 2016, timm's DropPath as DINO, MAE fine-tuning
 * and the released Alice code use it): during training each residual branch of a pre-norm
 * block -- attention and MLP -- is, per sample, either dropped (its output multiplied by 0) or
 * kept and multiplied by 1 / (1 - rate), so its expectation is unchanged. The rate grows
 * linearly with depth: block i of depth uses max_rate * i / (depth - 1) (timm's
 * linspace(0, drop_path_rate, depth)), so block 0 never drops.
 *
 * The draws are a pure function of (seed, step, sample word) through RNG_DROP_PATH, like the
 * masks, so N ranks draw what one rank with N times the batch draws, and a resumed run draws
 * what the uninterrupted one did. The model draws on the host and uploads the scales; the
 * stack (nn/transformer.h) multiplies each branch's output rows by its sample's scale. */
#ifndef ALICE_DROP_PATH_H
#define ALICE_DROP_PATH_H

#include "core/rng.h"

/* The residual branches of a block, in the order a sample's draws are made. */
typedef enum { DROP_BRANCH_ATTN, DROP_BRANCH_MLP, DROP_BRANCH_COUNT } DropBranch;

/* rates[i] = max_rate * i / (depth - 1) for i < depth (all 0 for depth 1). */
void drop_path_rates(float *rates, int depth, float max_rate);
/* Whether some block of these rates ever drops. */
int drop_path_any(const float *rates, int depth);
/* Index of (block, branch, sample) in the scales buffer [depth][DROP_BRANCH_COUNT][samples]:
 * each branch's scales are one contiguous vector over the samples, what the stack hands the
 * backend's add_group_scaled. */
static inline long drop_path_index(int block, DropBranch branch, int samples, int sample)
{
    return ((long)block * DROP_BRANCH_COUNT + branch) * samples + sample;
}
/* Draws one sample's scales from rng: for every block i, then branch (DropBranch order), one
 * uniform u in [0, 1) (drawn whatever the rate, so the stream does not depend on the rates);
 * the branch is kept when u >= rates[i] (timm: floor(keep_prob + u) = 1), its scale then
 * 1 / (1 - rates[i]), else 0. Writes scales[drop_path_index(i, branch, samples, sample)]. */
void drop_path_draw_sample(float *scales, const float *rates, int depth, int samples, int sample,
                           RngStream *rng);
/* The draws of samples first .. first + count - 1 as keep flags, keep[(k depth + i)
 * DROP_BRANCH_COUNT + branch] = 1 where sample first + k keeps block i's branch (its scale is not
 * 0): what the PyTorch parity dumps hand the reference. */
void drop_path_keep_flags(int *keep, const float *scales, int depth, int samples, int first,
                          int count);

#endif
