/* cuBLASLt algorithm autotune: the setting, the timing of a plan's candidates and the run's
 * statistics (cuda/cuda_gemm_autotune.h; the plans are cuda_blas.cu's).
 *
 * Timing: cudaEvents on the backend stream around kGemmAutotuneTimedLaunches back-to-back
 * launches, after kGemmAutotuneWarmupLaunches untimed ones, then a (watched) host wait for the
 * second event. The events measure the GPU's time between them; for GEMMs shorter than the
 * host's cost of enqueueing one cublasLtMatmul the GPU idles between launches and every
 * candidate reads alike, so small shapes mostly keep the heuristic's first, as they should
 * (nothing measurable to gain; the training step replays them from a CUDA graph anyway). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_context.h"
#include "cuda/cuda_gemm_autotune.h"

extern "C" {
#include "ops/gemm_autotune_rule.h"
}

static int g_enabled;
static GpuGemmAutotuneStats g_stats;
static cudaEvent_t g_start, g_stop;

void gpu_set_gemm_autotune(int enabled) { g_enabled = enabled != 0; }

int cuda_gemm_autotune_enabled(void) { return g_enabled; }

void gpu_gemm_autotune_stats(GpuGemmAutotuneStats *out) { *out = g_stats; }

void cuda_gemm_autotune_note_untuned(void) { g_stats.left_untuned++; }

/* Mean milliseconds of one launch of the candidate, or a negative value when a launch of it
 * returned an error (nothing more of it is then enqueued). */
static float time_candidate(int candidate, GemmTrialLaunch launch, void *arg)
{
    cudaStream_t stream = cuda_stream();
    for (int i = 0; i < kGemmAutotuneWarmupLaunches; i++)
        if (launch(candidate, arg) != CUBLAS_STATUS_SUCCESS) return -1.0f;
    CUDA_CHECK(cudaEventRecord(g_start, stream));
    int failed = 0;
    for (int i = 0; i < kGemmAutotuneTimedLaunches && !failed; i++)
        failed = launch(candidate, arg) != CUBLAS_STATUS_SUCCESS;
    CUDA_CHECK(cudaEventRecord(g_stop, stream));
    CUDA_WAIT_EVENT(g_stop);
    if (failed) return -1.0f;
    float ms = 0.0f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, g_start, g_stop));
    return ms / (float)kGemmAutotuneTimedLaunches;
}

int cuda_gemm_autotune_choose(int count, const int *eligible, GemmTrialLaunch launch, void *arg,
                              float *chosen_ms, float *first_ms)
{
    if (!g_start) {
        CUDA_CHECK(cudaEventCreate(&g_start));
        CUDA_CHECK(cudaEventCreate(&g_stop));
    }
    float ms[kGemmAutotuneMaxCandidates];
    if (count > kGemmAutotuneMaxCandidates) count = kGemmAutotuneMaxCandidates;
    for (int c = 0; c < count; c++) ms[c] = eligible[c] ? time_candidate(c, launch, arg) : -1.0f;
    const int best = gemm_autotune_account(&g_stats, ms, count);
    *chosen_ms = count > 0 ? ms[best] : -1.0f;
    *first_ms = count > 0 ? ms[0] : -1.0f;
    return best;
}

/* The shape table: where a tuned step's GEMM time goes, shape by shape, with each shape's
 * share of the dense peak (the figures issue 6's MFU gap is made of). */
struct TunedPlan {
    char shape[96];
    double flop;
    float chosen_ms, first_ms;
    const long *calls;
};
enum { kShapeTableMax = 256, kShapeTableShown = 24 };
static TunedPlan g_tuned[kShapeTableMax];
static int g_tuned_count;

void cuda_gemm_autotune_note_plan(const char *shape, double flop, float chosen_ms,
                                  float first_ms, const long *calls)
{
    /* a plan none of whose candidates ran has no time to show; the table (256 rows, the plan
     * cache's size) would count an evicted plan's row with its successor's calls */
    if (g_tuned_count == kShapeTableMax || chosen_ms < 0.0f) return;
    TunedPlan *t = &g_tuned[g_tuned_count++];
    snprintf(t->shape, sizeof t->shape, "%s", shape);
    t->flop = flop;
    t->chosen_ms = chosen_ms;
    t->first_ms = first_ms;
    t->calls = calls;
}

static double plan_total_ms(const TunedPlan *t) { return (double)*t->calls * t->chosen_ms; }

static int by_total_time(const void *a, const void *b)
{
    const double x = plan_total_ms((const TunedPlan *)a), y = plan_total_ms((const TunedPlan *)b);
    return (x < y) - (x > y);   /* largest first */
}

/* The plans by their eager calls x one launch's time, largest first: calls count every eager
 * step (warm-up, and all steps with cuda_graph = 0), so divide by those steps for per step. */
static void report_shapes(void)
{
    if (g_tuned_count == 0) return;
    qsort(g_tuned, (size_t)g_tuned_count, sizeof g_tuned[0], by_total_time);
    double total_ms = 0, total_flop = 0;
    for (int i = 0; i < g_tuned_count; i++) {
        total_ms += plan_total_ms(&g_tuned[i]);
        total_flop += (double)*g_tuned[i].calls * g_tuned[i].flop;
    }
    log_info("gemm shapes: %d tuned plans, %.3f ms over their eager calls at %.1f TFLOP/s "
             "(one launch of each in isolation); the %d largest:", g_tuned_count, total_ms,
             total_ms > 0 ? total_flop / total_ms / 1e9 : 0.0,
             g_tuned_count < kShapeTableShown ? g_tuned_count : kShapeTableShown);
    for (int i = 0; i < g_tuned_count && i < kShapeTableShown; i++) {
        const TunedPlan *t = &g_tuned[i];
        log_info("gemm shape %-44s calls=%ld ms=%.4f tflops=%.1f first_ms=%.4f share=%.1f%%",
                 t->shape, *t->calls, t->chosen_ms,
                 t->chosen_ms > 0 ? t->flop / t->chosen_ms / 1e9 : 0.0, t->first_ms,
                 total_ms > 0 ? 100.0 * plan_total_ms(t) / total_ms : 0.0);
    }
    g_tuned_count = 0;
}

void gpu_gemm_autotune_report(void)
{
    report_shapes();
    const GpuGemmAutotuneStats s = g_stats;
    if (s.plans_tuned == 0 && s.left_untuned == 0) return;
    log_info("gemm autotune: %d plans tuned, %d kept the heuristic's first, %d left untuned "
             "(first used while a CUDA graph recorded); one launch of every tuned plan: chosen "
             "%.3f ms vs first %.3f ms (%.3fx); plans_tuned=%d kept_first=%d left_untuned=%d "
             "candidates_timed=%d candidates_skipped=%d chosen_ms=%.4f first_ms=%.4f",
             s.plans_tuned, s.kept_first, s.left_untuned, s.chosen_ms, s.first_ms,
             s.chosen_ms > 0.0 ? s.first_ms / s.chosen_ms : 1.0, s.plans_tuned, s.kept_first,
             s.left_untuned, s.candidates_timed, s.candidates_skipped, s.chosen_ms, s.first_ms);
    memset(&g_stats, 0, sizeof g_stats);
}
