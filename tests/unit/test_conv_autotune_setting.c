/* Config key conv_autotune (cuDNN convolution algorithm autotune, cuda/cuda_conv.cu) and its
 * setter, in any build:
 *  - the default is 0 (the heuristic's first deterministic algorithm: today's bits); 1 and 0
 *    parse, and the value survives config_to_text -> config_from_text (config.txt);
 *  - the registry's help says the trade (deterministic algorithms, not bit-reproducible runs)
 *    and names the benchmark that measures it;
 *  - train_apply_device_math hands it to gpu_set_conv_autotune: without any convolution run
 *    nothing is tuned, so the statistics stay 0 (in a build without CUDA, src/ops/gpu_stub.c,
 *    always: the CPU backend has no algorithms to choose and ignores the key silently, as it
 *    does gemm_autotune), and the end-of-run report prints nothing then;
 *  - the choice rule (src/ops/conv_autotune_rule.h, what cuda/cuda_conv.cu decides by) on
 *    hand-made Find results: the fastest usable wins, a tie or a faster twin of the heuristic's
 *    algorithm keeps the heuristic's choice, unusable entries (non-deterministic, failed, over
 *    the workspace) never win, nothing usable keeps the heuristic; the statistics it keeps.
 * The tuning itself runs in test_conv_autotune_gpu (GPU). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "ops/conv_autotune_rule.h"
#include "ops/gpu_device.h"
#include "stdout_bytes.h"
#include "test.h"
#include "test_config.h"
#include "train/train_common.h"

static int test_default_and_round_trip(void)
{
    Config cfg;
    config_defaults(&cfg);
    TEST_CHECK(cfg.conv_autotune == 0, "default conv_autotune is %d, expected 0 (the heuristic's "
               "first deterministic algorithm, results as without the key)", cfg.conv_autotune);
    config_set(&cfg, "conv_autotune", "1", "test", 0);
    TEST_CHECK(cfg.conv_autotune == 1, "conv_autotune = 1 parsed as %d", cfg.conv_autotune);
    char *text = config_to_text(&cfg);
    TEST_CHECK(text && strstr(text, "conv_autotune"),
               "config_to_text does not write conv_autotune");
    Config back;
    config_defaults(&back);
    config_from_text(&back, text ? text : "", "round trip");
    TEST_CHECK(back.conv_autotune == 1, "conv_autotune = 1 read back as %d", back.conv_autotune);
    free(text);
    config_set(&cfg, "conv_autotune", "0", "test", 0);
    TEST_CHECK(cfg.conv_autotune == 0, "conv_autotune = 0 parsed as %d", cfg.conv_autotune);
    const ConfigKey *k = config_find_key("conv_autotune");
    TEST_CHECK(k && k->help && strstr(k->help, "DETERMINISTIC") &&
               strstr(k->help, "not bit-reproducible") && strstr(k->help, "run.sh"),
               "conv_autotune is not in the key registry with a help text saying the trade and "
               "naming its benchmark");
    return 0;
}

static int all_zero(const GpuConvAutotuneStats *s)
{
    return s->plans_tuned == 0 && s->plans_changed == 0 && s->searches_changed == 0 &&
           s->searches_kept == 0 && s->left_untuned == 0 && s->chosen_ms == 0.0 &&
           s->heuristic_ms == 0.0;
}

static int test_applied_without_convolutions(void)
{
    static const char *const on[][2] = {{"conv_autotune", "1"}};
    static const char *const off[][2] = {{"conv_autotune", "0"}};
    Config cfg;
    TEST_CONFIG(&cfg, on);
    train_apply_device_math(&cfg);
    GpuConvAutotuneStats s;
    memset(&s, 0xff, sizeof s);  /* every field must be written */
    gpu_conv_autotune_stats(&s);
    TEST_CHECK(all_zero(&s), "no convolution ran, yet the statistics say %d plans tuned, %d "
               "changed, %d/%d directions changed/kept, %d untuned, %g / %g ms", s.plans_tuned,
               s.plans_changed, s.searches_changed, s.searches_kept, s.left_untuned, s.chosen_ms,
               s.heuristic_ms);
    const long bytes = stdout_bytes_of(gpu_conv_autotune_report);
    TEST_CHECK(bytes == 0, "the report of a run that tuned nothing wrote %ld bytes (expected "
               "none)", bytes);
    TEST_CONFIG(&cfg, off);
    train_apply_device_math(&cfg);
    gpu_conv_autotune_stats(&s);
    TEST_CHECK(all_zero(&s), "statistics not zero after conv_autotune = 0");
    return 0;
}

/* Find results as cuDNN lists them (fastest first; an algorithm may appear once per math). */
static int test_choice_rule(void)
{
    GpuConvAutotuneStats s;
    memset(&s, 0, sizeof s);
    /* heuristic algo 1; algo 4 faster, algo 6 fastest but non-deterministic (unusable) */
    const ConvAutotuneResult faster[] = {{6, 0, 0.10f}, {4, 1, 0.20f}, {1, 1, 0.50f}};
    TEST_CHECK(conv_autotune_choose(&s, faster, 3, 1) == 1,
               "the fastest usable (algo 4, 0.20 ms) not chosen over the heuristic (0.50 ms)");
    TEST_CHECK(s.searches_changed == 1 && s.searches_kept == 0, "after one search: %d changed, "
               "%d kept", s.searches_changed, s.searches_kept);
    TEST_CLOSE(s.chosen_ms, 0.20, 1e-6, 0, "chosen ms");
    TEST_CLOSE(s.heuristic_ms, 0.50, 1e-6, 0, "heuristic ms");
    /* a tie keeps the heuristic's algorithm (2), whichever comes first in the list */
    const ConvAutotuneResult tie[] = {{5, 1, 0.30f}, {2, 1, 0.30f}};
    TEST_CHECK(conv_autotune_choose(&s, tie, 2, 2) == -1, "a tie did not keep the heuristic");
    /* the heuristic's algorithm listed twice (two math types): no change, and its first
     * usable entry (0.10 ms) is the time of both sides */
    const ConvAutotuneResult twin[] = {{3, 1, 0.10f}, {3, 1, 0.40f}, {0, 1, 0.50f}};
    TEST_CHECK(conv_autotune_choose(&s, twin, 3, 3) == -1,
               "the heuristic's algorithm under another math type counted as a change");
    /* the heuristic's algorithm not usable (failed in Find): the fastest usable, no sums */
    const ConvAutotuneResult heuristic_failed[] = {{7, 1, 0.60f}, {1, 0, 0.05f}, {0, 1, 0.70f}};
    TEST_CHECK(conv_autotune_choose(&s, heuristic_failed, 3, 1) == 0,
               "the heuristic failed: the fastest usable (algo 7) not chosen");
    /* nothing usable: keep the heuristic */
    const ConvAutotuneResult none[] = {{2, 0, 0.10f}, {5, 0, 0.20f}};
    TEST_CHECK(conv_autotune_choose(&s, none, 2, 5) == -1, "nothing usable: heuristic not kept");
    TEST_CHECK(conv_autotune_choose(&s, none, 0, 5) == -1, "no results: heuristic not kept");
    TEST_CHECK(s.searches_changed == 2 && s.searches_kept == 4, "6 searches: %d changed, %d kept "
               "(expected 2, 4)", s.searches_changed, s.searches_kept);
    /* sums over the searches that timed the heuristic: 0.20 + 0.30 + 0.10 vs 0.50 + 0.30 + 0.10 */
    TEST_CLOSE(s.chosen_ms, 0.60, 1e-6, 0, "summed chosen ms");
    TEST_CLOSE(s.heuristic_ms, 0.90, 1e-6, 0, "summed heuristic ms");
    TEST_CHECK(s.plans_tuned == 0 && s.plans_changed == 0 && s.left_untuned == 0,
               "the rule counted plans (the caller's part)");
    return 0;
}

int main(void)
{
    TEST_RUN(test_choice_rule);
    TEST_RUN(test_default_and_round_trip);
    TEST_RUN(test_applied_without_convolutions);
    return test_finish();
}
