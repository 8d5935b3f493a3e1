/* The timing half of the cuBLASLt algorithm autotune (config key gemm_autotune, gpu_device.h):
 * the setting, the statistics and their report, and the timing of one plan's candidates. The
 * plans themselves, and what a candidate's trial launch reads and writes, are cuda_blas.cu's. */
#ifndef ALICE_CUDA_GEMM_AUTOTUNE_H
#define ALICE_CUDA_GEMM_AUTOTUNE_H

#include "cuda/cuda_check.h"

/* Candidates asked of cublasLtMatmulAlgoGetHeuristic per plan when autotune is on; launches per
 * candidate: untimed ones first (clocks, caches, lazily loaded kernel modules), then timed. */
enum {
    kGemmAutotuneMaxCandidates = 8,
    kGemmAutotuneWarmupLaunches = 1,
    kGemmAutotuneTimedLaunches = 3
};

/* 1 when gpu_set_gemm_autotune(1) is in force: new plans are built for tuning. */
int cuda_gemm_autotune_enabled(void);

/* One launch of candidate `candidate` on trial operands (writing scratch memory only), enqueued
 * on the backend stream; its status (anything but success skips the candidate). */
typedef cublasStatus_t (*GemmTrialLaunch)(int candidate, void *arg);

/* Times the candidates 0 .. count-1 with eligible[i] != 0 (the caller makes 0, the heuristic's
 * first, always eligible: the fallback), kGemmAutotuneWarmupLaunches + kGemmAutotuneTimedLaunches
 * launches each between cudaEvents on the backend stream, and returns the one to keep by
 * gemm_autotune_account (src/ops/gemm_autotune_rule.h: the fastest that ran without error, 0
 * when none did), which also adds the plan to the statistics (ineligible and failed candidates
 * count as skipped). Eager only: the caller never calls it while a CUDA graph records.
 * *chosen_ms, *first_ms: one launch of the kept candidate and of the heuristic's first
 * (negative when the first was not timed). */
int cuda_gemm_autotune_choose(int count, const int *eligible, GemmTrialLaunch launch, void *arg,
                              float *chosen_ms, float *first_ms);

/* A tuned plan for the run's shape table (gpu_gemm_autotune_report): its shape in words, the
 * matmul FLOPs of one launch, the times cuda_gemm_autotune_choose measured, and its host call
 * counter (read at the report: calls made eagerly; a graph's replays do not count). */
void cuda_gemm_autotune_note_plan(const char *shape, double flop, float chosen_ms,
                                  float first_ms, const long *calls);

/* A plan first used while a CUDA graph recorded: it keeps the heuristic's first for good. */
void cuda_gemm_autotune_note_untuned(void);

#endif
