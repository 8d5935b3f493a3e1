/* The choice and the bookkeeping of the cuDNN convolution autotune (config key conv_autotune),
 * as pure functions of one direction's Find results: cuda/cuda_conv.cu runs
 * cudnnFind*AlgorithmEx on the GPU and decides by this, tests/unit/test_conv_autotune_setting.c
 * checks the rule without one. Plain C, so gcc and nvcc compile the same rule. */
#ifndef ALICE_CONV_AUTOTUNE_RULE_H
#define ALICE_CONV_AUTOTUNE_RULE_H

#include "ops/gpu_device.h"

/* One entry of a Find result, reduced to what the choice needs. `usable`: status success,
 * CUDNN_DETERMINISTIC, workspace within the limit and a math type the run allows (the caller
 * decides; a non-deterministic algorithm would make the default-off promise of reproducible
 * runs a lie even with the same choice). */
typedef struct ConvAutotuneResult {
    int algo;
    int usable;
    float ms;
} ConvAutotuneResult;

/* Index of the result to run, or -1 to keep the heuristic's algorithm `heuristic_algo`: the
 * fastest usable result, unless the heuristic's own algorithm is usable and no slower (a tie
 * keeps the heuristic's choice: no change without a measured gain). Adds the direction to
 * *stats (searches_changed or searches_kept) and, where Find timed the heuristic's algorithm
 * (its first usable entry: Find may list an algorithm once per math type), the chosen and the
 * heuristic's time. The caller counts the plan itself (plans_tuned, plans_changed). */
static inline int conv_autotune_choose(GpuConvAutotuneStats *stats, const ConvAutotuneResult *r,
                                       int count, int heuristic_algo)
{
    int best = -1, heuristic = -1;
    for (int i = 0; i < count; i++) {
        if (!r[i].usable || r[i].ms < 0.0f) continue;
        if (best < 0 || r[i].ms < r[best].ms) best = i;
        if (heuristic < 0 && r[i].algo == heuristic_algo) heuristic = i;
    }
    if (best >= 0 && heuristic >= 0 && r[heuristic].ms <= r[best].ms) best = heuristic;
    const int keep = best < 0 || r[best].algo == heuristic_algo;
    if (keep) stats->searches_kept++;
    else stats->searches_changed++;
    if (heuristic >= 0) {  /* best >= 0 then: the heuristic's entry itself was usable */
        stats->heuristic_ms += r[heuristic].ms;
        stats->chosen_ms += keep ? r[heuristic].ms : r[best].ms;
    }
    return keep ? -1 : best;
}

#endif
