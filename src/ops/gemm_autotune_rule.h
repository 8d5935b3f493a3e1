/* The choice and the bookkeeping of the cuBLASLt autotune (config key gemm_autotune), as pure
 * functions of one plan's measured candidate times: cuda/cuda_gemm_autotune.cu times the
 * candidates on the GPU and decides by this, tests/unit/test_gemm_autotune_setting.c checks the
 * rule without one. Plain C, so gcc and nvcc compile the same rule. */
#ifndef ALICE_GEMM_AUTOTUNE_RULE_H
#define ALICE_GEMM_AUTOTUNE_RULE_H

#include "ops/gpu_device.h"

/* ms[i]: mean milliseconds of one launch of candidate i (the heuristic's order: 0 is its first,
 * the fallback), negative when the candidate was not timed (ruled out, or a launch failed).
 * Returns the candidate to keep: the fastest timed one, a tie going to the earlier (the
 * heuristic's order), 0 when none was timed. Adds the plan to *stats: tuned, kept the first
 * (also when nothing was timed), candidates timed and skipped (the negative entries), and,
 * where the first was timed, the chosen and the first time (the gain expected from the choice;
 * a first that failed its trial has no time to compare with). */
static inline int gemm_autotune_account(GpuGemmAutotuneStats *stats, const float *ms, int count)
{
    int best = -1;
    for (int c = 0; c < count; c++) {
        if (ms[c] < 0.0f) {
            stats->candidates_skipped++;
            continue;
        }
        stats->candidates_timed++;
        if (best < 0 || ms[c] < ms[best]) best = c;
    }
    stats->plans_tuned++;
    if (best <= 0) stats->kept_first++;
    if (count > 0 && ms[0] >= 0.0f) {
        stats->first_ms += ms[0];
        stats->chosen_ms += ms[best];  /* best >= 0: the first itself was timed */
    }
    return best < 0 ? 0 : best;
}

#endif
