/* The learning-rate schedule (src/train/optim.h schedule_lr, peak_lr) against hand-computed
 * values: lr 1e-3, min_lr 1e-5, warmup 2, steps 6:
 *  - lr as given (lr_reference_batch = 0, the default), whatever the global batch: 5e-4, 1e-3
 *    during the warm-up, then the cosine 1e-5 + (1e-3 - 1e-5)(1 + cos(pi k / 4)) / 2 for
 *    k = 0..4 (1e-3, 8.5501786e-4, 5.05e-4, 1.5498214e-4, 1e-5);
 *  - the linear scaling rule, lr_reference_batch = 256 and a global batch of 64 (8 x 8
 *    ranks): peak 2.5e-4, so 1.25e-4, 2.5e-4, then 1e-5 + (2.5e-4 - 1e-5)(1 + cos(pi k / 4)) / 2
 *    (min_lr is not scaled); a global batch of 512 doubles the peak to 2e-3. */
#include <math.h>

#include "train/optim.h"
#include "test.h"
#include "test_config.h"

static const char *const keys[][2] = {
    {"lr", "1e-3"}, {"min_lr", "1e-5"}, {"warmup", "2"}, {"steps", "6"},
};

static void expect(const Config *cfg, long global_batch, const double *want, const char *what)
{
    for (long s = 0; s < 7; s++) {
        char label[96];
        snprintf(label, sizeof label, "%s, step %ld", what, s);
        TEST_CLOSE(schedule_lr(cfg, s, global_batch), want[s], 1e-6, 0, label);
    }
}

static double cosine(double peak, double min_lr, int k)
{
    return min_lr + (peak - min_lr) * 0.5 * (1.0 + cos(M_PI * k / 4.0));
}

static int test_schedule(void)
{
    Config cfg;
    TEST_CONFIG(&cfg, keys);
    double want[7] = {5e-4, 1e-3};
    for (int k = 0; k <= 4; k++) want[2 + k] = cosine(1e-3, 1e-5, k);
    TEST_CLOSE(want[3], 8.5501786e-4, 1e-7, 0, "hand value of the cosine at k = 1");
    expect(&cfg, 64, want, "lr as given, global batch 64");
    expect(&cfg, 512, want, "lr as given, global batch 512");
    TEST_CHECK(schedule_lr(&cfg, 1, 7) == cfg.lr, "the warm-up's last step is lr itself");

    config_set(&cfg, "lr_reference_batch", "256", "test", 0);
    config_validate(&cfg);
    TEST_CLOSE(peak_lr(&cfg, 64), 2.5e-4, 1e-7, 0, "peak for 64 of 256");
    double scaled[7] = {1.25e-4, 2.5e-4};
    for (int k = 0; k <= 4; k++) scaled[2 + k] = cosine(2.5e-4, 1e-5, k);
    expect(&cfg, 64, scaled, "lr for a global batch of 256, run at 64");
    TEST_CLOSE(schedule_lr(&cfg, 1, 512), 2e-3, 1e-6, 0, "a global batch of 512: peak 2e-3");
    TEST_CLOSE(schedule_lr(&cfg, 6, 512), 1e-5, 1e-6, 0, "min_lr is not scaled");
    return 0;
}

int main(void)
{
    TEST_RUN(test_schedule);
    return test_finish();
}
