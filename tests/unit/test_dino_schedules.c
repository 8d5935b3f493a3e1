/* The schedules of DINO's recipe against hand-computed values.
 *
 * DINO's teacher temperature warm-up (src/models/pretrain_model.h pretrain_teacher_temp,
 * pretrain_model_begin_step) against hand-computed values of DINO's schedule,
 * np.linspace(warmup_teacher_temp, teacher_temp, warmup_teacher_temp_steps) then teacher_temp:
 *  - 5 warm-up steps from 0.02 to 0.04: 0.02, 0.025, 0.03, 0.035, 0.04, then 0.04;
 *  - 1 warm-up step: warmup_teacher_temp at step 0 only (linspace of one value);
 *  - none (the default): teacher_temp from step 0;
 * and the model's step scalars: begin_step sets the temperature the loss reads and says when
 * the steps are replayable (from the first step after the warm-up; always for cosine).
 *
 * The cosine weight decay (src/train/optim.h schedule_weight_decay; DINO's cosine_scheduler
 * without warm-up): weight_decay 0.04 to weight_decay_end 0.4 over 4 steps gives
 * 0.04, 0.4 - 0.18 (1 + cos(pi/4)) = 0.0927208, 0.22, 0.4 - 0.18 (1 - cos(pi/4)) = 0.3472792,
 * and 0.4 at step 4; the constant schedule (the default) 0.04 everywhere. */
#include <math.h>

#include "models/pretrain_model.h"
#include "train/optim.h"
#include "test.h"
#include "test_config.h"

static const char *const tiny[][2] = {
    {"method", "alice"}, {"crop", "16,16,8"}, {"patch", "4"}, {"embed_dim", "24"},
    {"depth", "1"}, {"heads", "2"}, {"mlp_dim", "48"}, {"dec_dim", "12"}, {"dec_depth", "1"},
    {"dec_heads", "2"}, {"dec_mlp_dim", "24"}, {"head_hidden", "16"}, {"head_bottleneck", "8"},
    {"head_out", "16"}, {"casa_dim", "12"}, {"batch", "1"}, {"align_loss", "dino"},
    {"teacher_temp", "0.04"}, {"warmup_teacher_temp", "0.02"},
};

static void set_warmup(Config *cfg, const char *steps)
{
    config_set(cfg, "warmup_teacher_temp_steps", steps, "test", 0);
    config_validate(cfg);
}

static int test_schedule(void)
{
    Config cfg;
    TEST_CONFIG(&cfg, tiny);
    set_warmup(&cfg, "5");
    const double expect[7] = {0.02, 0.025, 0.03, 0.035, 0.04, 0.04, 0.04};
    for (long s = 0; s < 7; s++) {
        const float got = pretrain_teacher_temp(&cfg, s);
        TEST_CHECK(fabs(got - expect[s]) <= 1e-7, "5 warm-up steps: step %ld %.9g, expected %g",
                   s, got, expect[s]);
    }
    set_warmup(&cfg, "1");
    TEST_CHECK(pretrain_teacher_temp(&cfg, 0) == cfg.warmup_teacher_temp &&
               pretrain_teacher_temp(&cfg, 1) == cfg.teacher_temp,
               "1 warm-up step: %g then %g", pretrain_teacher_temp(&cfg, 0),
               pretrain_teacher_temp(&cfg, 1));
    set_warmup(&cfg, "0");
    TEST_CHECK(pretrain_teacher_temp(&cfg, 0) == cfg.teacher_temp,
               "no warm-up: step 0 at %g", pretrain_teacher_temp(&cfg, 0));
    return 0;
}

static int test_begin_step(void)
{
    Config cfg;
    TEST_CONFIG(&cfg, tiny);
    set_warmup(&cfg, "3");
    PretrainModel m;
    pretrain_model_init(&m, &cfg, backend_cpu(), cfg.batch);
    TEST_CHECK(fabsf(m.teacher_temp - 0.02f) <= 1e-7f, "a new model reads step 0's %g",
               m.teacher_temp);
    const int replayable[4] = {0, 0, 0, 1};
    const double temp[4] = {0.02, 0.03, 0.04, 0.04};
    for (long s = 0; s < 4; s++) {
        const int r = pretrain_model_begin_step(&m, s);
        TEST_CHECK(r == replayable[s] && fabs(m.teacher_temp - temp[s]) <= 1e-7,
                   "step %ld: replayable %d, temperature %.9g; expected %d, %g", s, r,
                   m.teacher_temp, replayable[s], temp[s]);
    }
    pretrain_model_free(&m);
    config_set(&cfg, "align_loss", "cosine", "test", 0);
    config_validate(&cfg);
    pretrain_model_init(&m, &cfg, backend_cpu(), cfg.batch);
    TEST_CHECK(pretrain_model_begin_step(&m, 0) == 1, "cosine: no per-step scalars");
    pretrain_model_free(&m);
    return 0;
}

static int test_weight_decay(void)
{
    Config cfg;
    config_defaults(&cfg);
    config_set(&cfg, "weight_decay", "0.04", "test", 0);
    config_set(&cfg, "weight_decay_end", "0.4", "test", 0);
    config_set(&cfg, "steps", "4", "test", 0);
    config_validate(&cfg);
    for (long s = 0; s <= 4; s++)
        TEST_CHECK(schedule_weight_decay(&cfg, s) == cfg.weight_decay,
                   "constant: step %ld %g", s, schedule_weight_decay(&cfg, s));
    config_set(&cfg, "weight_decay_schedule", "cosine", "test", 0);
    config_validate(&cfg);
    const double expect[5] = {0.04, 0.0927208, 0.22, 0.3472792, 0.4};
    for (long s = 0; s <= 4; s++) {
        const float got = schedule_weight_decay(&cfg, s);
        TEST_CHECK(fabs(got - expect[s]) <= 1e-6, "cosine: step %ld %.9g, expected %.7g", s,
                   got, expect[s]);
    }
    return 0;
}

int main(void)
{
    TEST_RUN(test_schedule);
    TEST_RUN(test_begin_step);
    TEST_RUN(test_weight_decay);
    return test_finish();
}
