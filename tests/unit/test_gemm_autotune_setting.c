/* Config key gemm_autotune (cuBLASLt algorithm autotune, cuda/cuda_gemm_autotune.h) and its
 * setter, in any build:
 *  - the default is 0 (the heuristic's first algorithm: today's bits); 1 and 0 parse, and the
 *    value survives config_to_text -> config_from_text (the run directory's config.txt);
 *  - the registry's help names the benchmarks that measure it;
 *  - train_apply_device_math hands it to gpu_set_gemm_autotune: without any GEMM run nothing is
 *    tuned, so the statistics stay 0 (in a build without CUDA, src/ops/gpu_stub.c, always), and
 *    the end-of-run report prints nothing then.
 *  - the choice rule (src/ops/gemm_autotune_rule.h, what cuda/cuda_gemm_autotune.cu decides
 *    by) on hand-made timings: the fastest wins, a tie keeps the heuristic's order, untimed
 *    candidates are skipped, nothing timed keeps the first; the statistics it keeps.
 * The tuning itself runs in test_gemm_autotune_gpu (GPU). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "ops/gemm_autotune_rule.h"
#include "ops/gpu_device.h"
#include "stdout_bytes.h"
#include "test.h"
#include "test_config.h"
#include "train/train_common.h"

static int test_default_and_round_trip(void)
{
    Config cfg;
    config_defaults(&cfg);
    TEST_CHECK(cfg.gemm_autotune == 0, "default gemm_autotune is %d, expected 0 (the heuristic's "
               "first algorithm, results as without the key)", cfg.gemm_autotune);
    config_set(&cfg, "gemm_autotune", "1", "test", 0);
    TEST_CHECK(cfg.gemm_autotune == 1, "gemm_autotune = 1 parsed as %d", cfg.gemm_autotune);
    char *text = config_to_text(&cfg);
    TEST_CHECK(text && strstr(text, "gemm_autotune"), "config_to_text does not write gemm_autotune");
    Config back;
    config_defaults(&back);
    config_from_text(&back, text ? text : "", "round trip");
    TEST_CHECK(back.gemm_autotune == 1, "gemm_autotune = 1 read back as %d", back.gemm_autotune);
    free(text);
    config_set(&cfg, "gemm_autotune", "0", "test", 0);
    TEST_CHECK(cfg.gemm_autotune == 0, "gemm_autotune = 0 parsed as %d", cfg.gemm_autotune);
    const ConfigKey *k = config_find_key("gemm_autotune");
    TEST_CHECK(k && k->help && strstr(k->help, "bench_cuda_ops") && strstr(k->help, "run.sh"),
               "gemm_autotune is not in the key registry with a help text naming its benchmarks");
    return 0;
}

static int all_zero(const GpuGemmAutotuneStats *s)
{
    return s->plans_tuned == 0 && s->kept_first == 0 && s->left_untuned == 0 &&
           s->candidates_timed == 0 && s->candidates_skipped == 0 && s->chosen_ms == 0.0 &&
           s->first_ms == 0.0;
}

static int test_applied_without_gemms(void)
{
    static const char *const on[][2] = {{"gemm_autotune", "1"}};
    static const char *const off[][2] = {{"gemm_autotune", "0"}};
    Config cfg;
    TEST_CONFIG(&cfg, on);
    train_apply_device_math(&cfg);
    GpuGemmAutotuneStats s;
    memset(&s, 0xff, sizeof s);  /* every field must be written */
    gpu_gemm_autotune_stats(&s);
    TEST_CHECK(all_zero(&s), "no GEMM ran, yet the statistics say %d plans tuned, %d kept first, "
               "%d untuned, %d timed, %d skipped, %g / %g ms", s.plans_tuned, s.kept_first,
               s.left_untuned, s.candidates_timed, s.candidates_skipped, s.chosen_ms, s.first_ms);
    const long bytes = stdout_bytes_of(gpu_gemm_autotune_report);
    TEST_CHECK(bytes == 0, "the report of a run that tuned nothing wrote %ld bytes (expected "
               "none)", bytes);
    TEST_CONFIG(&cfg, off);
    train_apply_device_math(&cfg);
    gpu_gemm_autotune_stats(&s);
    TEST_CHECK(all_zero(&s), "statistics not zero after gemm_autotune = 0");
    return 0;
}

static int test_choice_rule(void)
{
    GpuGemmAutotuneStats s;
    memset(&s, 0, sizeof s);
    const float faster_third[] = {0.50f, 0.60f, 0.40f, 0.45f};
    TEST_CHECK(gemm_autotune_account(&s, faster_third, 4) == 2, "the fastest (0.40 ms) not chosen");
    TEST_CHECK(s.plans_tuned == 1 && s.kept_first == 0 && s.candidates_timed == 4 &&
               s.candidates_skipped == 0, "after one plan: %d tuned, %d kept, %d timed, %d skipped",
               s.plans_tuned, s.kept_first, s.candidates_timed, s.candidates_skipped);
    TEST_CLOSE(s.chosen_ms, 0.40, 1e-6, 0, "chosen ms");
    TEST_CLOSE(s.first_ms, 0.50, 1e-6, 0, "first ms");
    const float tie[] = {0.30f, 0.30f, -1.0f};  /* a tie keeps the first; one ruled out */
    TEST_CHECK(gemm_autotune_account(&s, tie, 3) == 0, "a tie did not keep the heuristic's first");
    const float first_failed[] = {-1.0f, 0.70f, 0.20f};  /* no time of the first: no sums */
    TEST_CHECK(gemm_autotune_account(&s, first_failed, 3) == 2, "first failed: fastest not chosen");
    const float none[] = {-1.0f, -1.0f};
    TEST_CHECK(gemm_autotune_account(&s, none, 2) == 0, "nothing timed: the first not kept");
    const float only[] = {0.25f};
    TEST_CHECK(gemm_autotune_account(&s, only, 1) == 0, "a single candidate not kept");
    TEST_CHECK(s.plans_tuned == 5 && s.kept_first == 3, "5 plans: %d tuned, %d kept the first "
               "(expected 5, 3: the tie, nothing timed, the single one)", s.plans_tuned,
               s.kept_first);
    TEST_CHECK(s.candidates_timed == 4 + 2 + 2 + 0 + 1 && s.candidates_skipped == 0 + 1 + 1 + 2 + 0,
               "timed %d (expected 9), skipped %d (expected 4)", s.candidates_timed,
               s.candidates_skipped);
    /* sums over the plans whose first was timed: 0.40 + 0.30 + 0.25 vs 0.50 + 0.30 + 0.25 */
    TEST_CLOSE(s.chosen_ms, 0.95, 1e-6, 0, "summed chosen ms");
    TEST_CLOSE(s.first_ms, 1.05, 1e-6, 0, "summed first ms");
    TEST_CHECK(s.left_untuned == 0, "the rule counted an untuned plan");
    return 0;
}

int main(void)
{
    TEST_RUN(test_choice_rule);
    TEST_RUN(test_default_and_round_trip);
    TEST_RUN(test_applied_without_gemms);
    return test_finish();
}
