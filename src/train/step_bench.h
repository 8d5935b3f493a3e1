/* The benchmark mode of the training commands (`alice pretrain|finetune ... --bench-steps N`):
 * one untimed warm-up step, N timed steps through the step function the training loop uses,
 * the median seconds per step, and one machine-readable line that tests/gpu/run.sh and
 * `make bench` parse:
 *
 *   alice_step method=M device=D precision=P crop=X,Y,Z batch=B accum_steps=K s_per_step=S
 *              peak_rss_mb=R gpu_peak_mb=G gflop_per_step=F gflops=F/S flop_per_step=F
 *              cuda_graph=0|1 graph_replays=N
 *
 * A step is the optimiser's: K micro-batches of B/K crops each (gradient accumulation), B the
 * rank's batch per step. The FLOP count is the model's own analytic count of its micro-batches
 * (matmul and convolution FLOPs, 2 per multiply-add; pretrain_model_step_flops,
 * unetr_step_flops, times K). */
#ifndef ALICE_STEP_BENCH_H
#define ALICE_STEP_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "ops/backend.h"
#include "train/step_graph.h"

/* At most this many timed steps are kept for the median. */
enum { STEP_BENCH_MAX_STEPS = 1024 };

typedef struct {
    /* Untimed work before step s (per-step inputs such as masks); NULL when none. */
    void (*prepare)(void *ctx, long s);
    /* The timed step s: forward, backward and optimiser as the training loop runs them. */
    void (*run)(void *ctx, long s);
    void *ctx;
} BenchStep;

/* Runs step s = 0 (warm-up, untimed) and s = 1..steps (timed; the clock stops after
 * be->synchronize(), so queued device work counts). Returns the median seconds per step.
 * steps is clamped to 1..STEP_BENCH_MAX_STEPS. */
double step_bench_median_seconds(const AliceBackend *be, long steps, const BenchStep *step);

/* Fills x[0..n) with uniform [0, 1) values from the Philox stream of (seed, RNG_TEST): the
 * synthetic crops of a benchmark (no data file needed). */
void step_bench_uniform(float *x, size_t n, uint64_t seed);

/* Prints the alice_step line (log_info, rank 0) for an optimiser step of cfg->accum_steps
 * micro-batches, each of micro_batch crops of cfg->crop and micro_batch_flop FLOPs, that took
 * s_per_step seconds (median); graph: the loop's step graph (cuda_graph = whether steps may
 * replay, graph_replays = steps, or micro-batches with accumulation, that did). */
void step_bench_report(const char *method, const Config *cfg, int micro_batch,
                       double s_per_step, double micro_batch_flop, const StepGraph *graph);

#endif
