/* The augmentation recipes (src/data/augment.c) against their published definitions, field by
 * field and by the rates augment_draw fires at:
 *  - fine-tuning = MONAI's UNETR BTCV tutorial (research-contributions UNETR/BTCV main.py):
 *    RandFlipd prob 0.1 on each of the 3 axes, RandRotate90d prob 0.1 with max_k 3 (k uniform
 *    in 1..3: MONAI's randint(max_k) + 1), RandScaleIntensityd(factors 0.1, prob 0.1),
 *    RandShiftIntensityd(offsets 0.1, prob 0.5), no noise, no gamma;
 *  - Alice's intact views (augment.h, docs/MODEL.md): flips and turns 0.5, scale and shift 0.1
 *    at 0.5, noise (std up to 0.05) and gamma (0.7..1.5) at 0.2;
 *  - none: nothing fires.
 * Rates over 40000 draws on a cube (no turn rounded away) must lie within 5 binomial standard
 * deviations of the probability (a wrong probability of these sizes is 10 or more away); each
 * turn count 1..3 a third of the turns; every value drawn within its range. test_crop_recipe's
 * scale case checks the draw order itself. */
#include <math.h>
#include <stdio.h>

#include "core/rng.h"
#include "data/augment.h"
#include "test.h"

enum { kDraws = 40000 };

typedef struct {
    const char *name;
    AugmentParams want;
} Recipe;

static int fields_equal(const char *name, const AugmentParams *got, const AugmentParams *want)
{
    const float g[] = {got->p_flip, got->p_rot90, got->p_scale, got->scale_range, got->p_shift,
                       got->shift_range, got->p_noise, got->noise_std_max, got->p_gamma,
                       got->gamma_lo, got->gamma_hi};
    const float w[] = {want->p_flip, want->p_rot90, want->p_scale, want->scale_range,
                       want->p_shift, want->shift_range, want->p_noise, want->noise_std_max,
                       want->p_gamma, want->gamma_lo, want->gamma_hi};
    static const char *const field[] = {"p_flip", "p_rot90", "p_scale", "scale_range", "p_shift",
                                        "shift_range", "p_noise", "noise_std_max", "p_gamma",
                                        "gamma_lo", "gamma_hi"};
    for (int i = 0; i < (int)(sizeof g / sizeof g[0]); i++)
        TEST_CHECK(g[i] == w[i], "%s recipe: %s = %g, the published value is %g", name, field[i],
                   g[i], w[i]);
    return 0;
}

static void check_rate(const char *name, const char *what, long fired, long n, double p)
{
    const double sd = sqrt(n * p * (1.0 - p)), dev = fabs((double)fired - n * p);
    TEST_CHECK(dev <= 5.0 * sd + 1e-9, "%s recipe: %s fired %ld of %ld times, expected %.0f "
               "(p %g, 5 sd = %.0f)", name, what, fired, n, n * p, p, 5.0 * sd);
}

static int rates(const char *name, const AugmentParams *p)
{
    const int cube[3] = {16, 16, 16};
    long flips[3] = {0, 0, 0}, turns = 0, k_count[4] = {0, 0, 0, 0}, scaled = 0, shifted = 0;
    long noisy = 0, gamma = 0, out_of_range = 0;
    for (int i = 0; i < kDraws; i++) {
        RngStream r;
        rng_init(&r, 20261128, (uint32_t)i, 0, RNG_TEST);
        AugmentDraw d;
        augment_draw(p, cube, &r, &d);
        for (int a = 0; a < 3; a++) flips[a] += d.flip[a] != 0;
        turns += d.rot90 != 0;
        if (d.rot90 >= 0 && d.rot90 <= 3) k_count[d.rot90]++;
        else out_of_range++;
        scaled += d.scale != 1.0f;
        shifted += d.shift != 0.0f;
        noisy += d.noise_std != 0.0f;
        gamma += d.gamma != 1.0f;
        out_of_range += fabsf(d.scale - 1.0f) > p->scale_range + 1e-6f ||
                        fabsf(d.shift) > p->shift_range + 1e-6f || d.noise_std < 0.0f ||
                        d.noise_std > p->noise_std_max ||
                        (d.gamma != 1.0f && (d.gamma < p->gamma_lo || d.gamma > p->gamma_hi));
    }
    static const char *const axis[] = {"flip x", "flip y", "flip z"};
    for (int a = 0; a < 3; a++) check_rate(name, axis[a], flips[a], kDraws, p->p_flip);
    check_rate(name, "quarter turns", turns, kDraws, p->p_rot90);
    for (int k = 1; k <= 3 && turns > 0; k++) {
        char what[32];
        snprintf(what, sizeof what, "turn count %d", k);
        check_rate(name, what, k_count[k], turns, 1.0 / 3.0);
    }
    check_rate(name, "intensity scale", scaled, kDraws, p->p_scale);
    check_rate(name, "intensity shift", shifted, kDraws, p->p_shift);
    check_rate(name, "noise", noisy, kDraws, p->p_noise);
    check_rate(name, "gamma", gamma, kDraws, p->p_gamma);
    TEST_CHECK(out_of_range == 0, "%s recipe: %ld draws outside their ranges", name, out_of_range);
    return 0;
}

/* An AugmentParams from its published numbers, in the struct's field order. */
static AugmentParams published(float p_flip, float p_rot90, float p_scale, float scale_range,
                               float p_shift, float shift_range, float p_noise,
                               float noise_std_max, float p_gamma, float gamma_lo,
                               float gamma_hi)
{
    return (AugmentParams){p_flip, p_rot90, p_scale, scale_range, p_shift, shift_range, p_noise,
                           noise_std_max, p_gamma, gamma_lo, gamma_hi};
}

static int test_recipes(void)
{
    const Recipe recipes[3] = {
        /* MONAI UNETR BTCV: RandFlipd 0.1, RandRotate90d 0.1, RandScaleIntensityd(0.1, 0.1),
         * RandShiftIntensityd(0.1, 0.5); no noise, no gamma */
        {"fine-tuning", published(0.1f, 0.1f, 0.1f, 0.1f, 0.5f, 0.1f, 0, 0, 0, 1, 1)},
        {"intact", published(0.5f, 0.5f, 0.5f, 0.1f, 0.5f, 0.1f, 0.2f, 0.05f, 0.2f, 0.7f, 1.5f)},
        {"none", published(0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1)},
    };
    const AugmentParams got[3] = {augment_params_finetune(), augment_params_intact(),
                                  augment_params_none()};
    for (int i = 0; i < 3; i++) {
        fields_equal(recipes[i].name, &got[i], &recipes[i].want);
        rates(recipes[i].name, &got[i]);
    }
    return 0;
}

int main(void)
{
    TEST_RUN(test_recipes);
    return test_finish();
}
