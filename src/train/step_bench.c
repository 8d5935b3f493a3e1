#include "train/step_bench.h"

#include <stdlib.h>

#include "core/check.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/timer.h"
#include "ops/gpu_device.h"
#include "train/train_common.h"

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double step_bench_median_seconds(const AliceBackend *be, long steps, const BenchStep *step)
{
    long count = steps < 1 ? 1 : steps > STEP_BENCH_MAX_STEPS ? STEP_BENCH_MAX_STEPS : steps;
    double *times = xmalloc((size_t)count * sizeof(double));
    for (long s = 0; s <= count; s++) {   /* step 0 is the warm-up: plans, workspaces, graph warm-up */
        if (step->prepare) step->prepare(step->ctx, s);
        double t0 = wall_seconds();
        step->run(step->ctx, s);
        be->synchronize();
        if (s) times[s - 1] = wall_seconds() - t0;
    }
    qsort(times, (size_t)count, sizeof(double), compare_doubles);
    double median = times[count / 2];
    free(times);
    return median;
}

void step_bench_uniform(float *x, size_t n, uint64_t seed)
{
    RngStream rng;
    rng_init(&rng, seed, 0, 0, RNG_TEST);
    for (size_t i = 0; i < n; i++) x[i] = rng_uniform(&rng);
}

void step_bench_report(const char *method, const Config *cfg, int micro_batch,
                       double s_per_step, double micro_batch_flop, const StepGraph *graph)
{
    /* a step is accum_steps micro-batches, each of micro_batch crops and micro_batch_flop */
    const int batch = micro_batch * cfg->accum_steps;
    const double flop_per_step = micro_batch_flop * cfg->accum_steps;
    log_info("alice_step method=%s device=%s precision=%s crop=%d,%d,%d batch=%d accum_steps=%d "
             "s_per_step=%.4f peak_rss_mb=%.0f gpu_peak_mb=%.0f gflop_per_step=%.2f gflops=%.1f "
             "flop_per_step=%.0f cuda_graph=%d graph_replays=%ld",
             method, cfg->device, cfg->precision, cfg->crop[0], cfg->crop[1], cfg->crop[2], batch,
             cfg->accum_steps,
             s_per_step, train_peak_rss_mib(), gpu_peak_bytes() / 1048576.0, flop_per_step / 1e9,
             flop_per_step / s_per_step / 1e9,
             flop_per_step,   /* exact, for the reference counts (tests/reference) */
             step_graph_enabled(graph), graph->replayed_steps);
}
