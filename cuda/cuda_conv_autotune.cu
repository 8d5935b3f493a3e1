/* cuDNN convolution autotune: the setting and the run's statistics (cuda/cuda_conv_autotune.h;
 * the plans and their Find calls are cuda_conv.cu's). */
#include <string.h>

#include "cuda/cuda_context.h"
#include "cuda/cuda_conv_autotune.h"

static int g_enabled;
static GpuConvAutotuneStats g_stats;

void gpu_set_conv_autotune(int enabled) { g_enabled = enabled != 0; }

int cuda_conv_autotune_enabled(void) { return g_enabled; }

GpuConvAutotuneStats *cuda_conv_autotune_stats(void) { return &g_stats; }

void gpu_conv_autotune_stats(GpuConvAutotuneStats *out) { *out = g_stats; }

void cuda_conv_autotune_note_tuned(int changed)
{
    g_stats.plans_tuned++;
    if (changed) g_stats.plans_changed++;
}

void cuda_conv_autotune_note_untuned(void) { g_stats.left_untuned++; }

void gpu_conv_autotune_report(void)
{
    const GpuConvAutotuneStats s = g_stats;
    if (s.plans_tuned == 0 && s.left_untuned == 0) return;
    /* The sums cover all three directions of every tuned plan, also a direction the model never
     * runs (a first layer's data gradient): Find's times, not the step's. */
    log_info("conv autotune: %d plans tuned, %d changed an algorithm (%d of %d directions), %d "
             "left untuned (built while a CUDA graph recorded, Find failed or no room); Find's "
             "time of the directions it timed both ways: chosen %.3f ms vs heuristic %.3f ms "
             "(%.3fx); "
             "plans_tuned=%d plans_changed=%d searches_changed=%d searches_kept=%d "
             "left_untuned=%d chosen_ms=%.4f heuristic_ms=%.4f",
             s.plans_tuned, s.plans_changed, s.searches_changed,
             s.searches_changed + s.searches_kept, s.left_untuned, s.chosen_ms, s.heuristic_ms,
             s.chosen_ms > 0.0 ? s.heuristic_ms / s.chosen_ms : 1.0, s.plans_tuned,
             s.plans_changed, s.searches_changed, s.searches_kept, s.left_untuned, s.chosen_ms,
             s.heuristic_ms);
    memset(&g_stats, 0, sizeof g_stats);
}
