/* cuBLASLt algorithm autotune: the setting, the timing of a plan's candidates and the run's
 * statistics (cuda/cuda_gemm_autotune.h; the plans are cuda_blas.cu's).
 *
 * Timing: cudaEvents on the backend stream around kGemmAutotuneTimedLaunches back-to-back
 * launches, after kGemmAutotuneWarmupLaunches untimed ones, then a (watched) host wait for the
 * second event. The events measure the GPU's time between them; for GEMMs shorter than the
 * host's cost of enqueueing one cublasLtMatmul the GPU idles between launches and every
 * candidate reads alike, so small shapes mostly keep the heuristic's first, as they should
 * (nothing measurable to gain; the training step replays them from a CUDA graph anyway). */
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

int cuda_gemm_autotune_choose(int count, const int *eligible, GemmTrialLaunch launch, void *arg)
{
    if (!g_start) {
        CUDA_CHECK(cudaEventCreate(&g_start));
        CUDA_CHECK(cudaEventCreate(&g_stop));
    }
    float ms[kGemmAutotuneMaxCandidates];
    if (count > kGemmAutotuneMaxCandidates) count = kGemmAutotuneMaxCandidates;
    for (int c = 0; c < count; c++) ms[c] = eligible[c] ? time_candidate(c, launch, arg) : -1.0f;
    return gemm_autotune_account(&g_stats, ms, count);
}

void gpu_gemm_autotune_report(void)
{
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
