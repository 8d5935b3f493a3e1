/* Crop recipes (data/crop_recipe.h) render exactly what the CPU loader's pipeline gives
 * (crop_extract, augment_geometric, augment_intensity with a shared noise stream), bit for bit,
 * for random volumes, crop positions (inside, partly and wholly outside) and augmentation
 * draws with every augmentation on often -- the CUDA kernel runs the same per-voxel code, so
 * this is the CPU half of the GPU-crop parity. Also: the fine-tuning recipe's random intensity
 * scale (MONAI RandScaleIntensityd(factors=0.1, prob=0.1)) against draws computed by hand. */
#include <string.h>

#include "data/augment.h"
#include "data/crop.h"
#include "data/crop_recipe.h"
#include "test.h"

enum { DX = 20, DY = 18, DZ = 11 };

static void random_volume(Volume *v, RngStream *r)
{
    memset(v, 0, sizeof *v);
    v->dim[0] = DX; v->dim[1] = DY; v->dim[2] = DZ;
    size_t n = volume_voxels(v);
    v->image = malloc(n * sizeof *v->image);
    v->label = malloc(n);
    for (size_t i = 0; i < n; i++) {
        v->image[i] = (int16_t)((int)rng_below(r, 2500) - 1000);
        v->label[i] = (uint8_t)rng_below(r, 14);
    }
}

/* One sample of `views` views sharing one noise stream, the CPU pipeline against recipes. */
static int compare_sample(const Volume *v, const int size[3], const AugmentParams *p, RngStream *r,
                          uint32_t sample, int views)
{
    const size_t n = (size_t)size[0] * size[1] * size[2];
    float *cut = malloc(n * sizeof(float)), *cpu = malloc(n * sizeof(float)), *rec = malloc(n * sizeof(float));
    int32_t *cut_l = malloc(n * sizeof(int32_t)), *cpu_l = malloc(n * sizeof(int32_t)),
            *rec_l = malloc(n * sizeof(int32_t));
    HuWindow w = {-175.0f, 250.0f};
    RngStream noise_walk, noise_origin;
    rng_init(&noise_walk, 99, 3, sample, RNG_AUG_NOISE);
    noise_origin = noise_walk;
    uint32_t offset = 0;
    int mismatches = 0;
    for (int view = 0; view < views; view++) {
        int start[3];
        for (int a = 0; a < 3; a++) start[a] = (int)rng_below(r, (uint32_t)(v->dim[a] + size[a])) - size[a] / 2 - 2;
        AugmentDraw d;
        augment_draw(p, size, r, &d);
        crop_extract(v, w, start, size, cut, cut_l);
        augment_geometric(&d, size, cut, cpu, cut_l, cpu_l);
        augment_intensity(&d, n, cpu, &noise_walk);
        CropRecipe rc;
        for (size_t i = 0; i < n; i++) { rec[i] = NAN; rec_l[i] = -1; }
        crop_recipe_make(&rc, v, w, start, size, &d, &noise_origin, offset, rec, rec_l);
        crop_recipe_render_cpu(&rc);
        offset += crop_recipe_noise_words(&rc);
        size_t bad = n;
        for (size_t i = 0; i < n && bad == n; i++)
            if (memcmp(&cpu[i], &rec[i], sizeof(float)) != 0 || cpu_l[i] != rec_l[i]) bad = i;
        TEST_CHECK(bad == n, "sample %u view %d (start %d,%d,%d flips %d%d%d rot %d scale %g shift %g "
                   "gamma %g noise %g): voxel %zu is %.9g/%d on the CPU path, %.9g/%d from the recipe",
                   sample, view, start[0], start[1], start[2], d.flip[0], d.flip[1], d.flip[2], d.rot90,
                   d.scale, d.shift, d.gamma, d.noise_std, bad, bad < n ? cpu[bad] : 0.0,
                   bad < n ? cpu_l[bad] : 0, bad < n ? rec[bad] : 0.0, bad < n ? rec_l[bad] : 0);
        mismatches += bad != n;
    }
    free(cut); free(cpu); free(rec); free(cut_l); free(cpu_l); free(rec_l);
    return mismatches;
}

static int test_recipe_equals_cpu_pipeline(void)
{
    RngStream r;
    rng_init(&r, 7, 0, 0, RNG_TEST);
    Volume v;
    random_volume(&v, &r);
    AugmentParams strong = augment_params_intact();
    strong.p_noise = 0.5f;
    strong.p_gamma = 0.5f;
    const int square[3] = {12, 12, 8}, oblong[3] = {10, 14, 6}, larger[3] = {24, 20, 13};
    const int *sizes[3] = {square, oblong, larger};
    for (uint32_t s = 0; s < 60; s++)
        if (compare_sample(&v, sizes[s % 3], &strong, &r, s, 4)) break;
    AugmentParams fine = augment_params_finetune();
    for (uint32_t s = 0; s < 20; s++)
        if (compare_sample(&v, square, &fine, &r, 100 + s, 1)) break;
    volume_free(&v);
    return 0;
}

/* The fine-tuning draw reads, in order: 3 flip uniforms, the turn uniform, the turn count,
 * the scale uniform and the scale value (then shift, noise, gamma). */
static int test_finetune_intensity_scale(void)
{
    AugmentParams p = augment_params_finetune();
    TEST_CLOSE(p.p_scale, 0.1, 0, 1e-7, "RandScaleIntensityd prob");
    TEST_CLOSE(p.scale_range, 0.1, 0, 1e-7, "RandScaleIntensityd factors");
    const int size[3] = {8, 8, 8};
    int fired = 0, total = 20000, checked_fire = 0, checked_quiet = 0;
    for (int i = 0; i < total; i++) {
        RngStream r, hand;
        rng_init(&r, 5, 0, (uint32_t)i, RNG_AUGMENT);
        hand = r;
        uint32_t w[7];
        for (int k = 0; k < 7; k++) w[k] = rng_u32(&hand);
        double u_fire = (w[5] >> 8) / 16777216.0, u_val = (w[6] >> 8) / 16777216.0;
        double want = u_fire < 0.1 ? 1.0 + (2.0 * u_val - 1.0) * 0.1 : 1.0;
        AugmentDraw d;
        augment_draw(&p, size, &r, &d);
        TEST_CLOSE(d.scale, want, 0, 1e-6, "drawn scale against the hand computation");
        fired += d.scale != 1.0f;
        checked_fire += u_fire < 0.1;
        checked_quiet += u_fire >= 0.1;
        TEST_CHECK(d.scale >= 0.9f && d.scale <= 1.1f, "scale %g outside 1 +- 0.1", d.scale);
    }
    /* Binomial(20000, 0.1): sd 42; 6 sd. */
    TEST_CHECK(fired > 2000 - 255 && fired < 2000 + 255, "scale fired %d of %d times, expected ~2000",
               fired, total);
    TEST_CHECK(checked_fire > 0 && checked_quiet > 0, "hand cases cover both branches");
    /* Applying it: v = 0.4 with scale 1.05 and no shift -> 0.42. */
    AugmentDraw d = {{0, 0, 0}, 0, 1.05f, 0.0f, 0.0f, 1.0f};
    float x = 0.4f;
    augment_intensity(&d, 1, &x, NULL);
    TEST_CLOSE(x, 0.42, 0, 1e-7, "scale 1.05 applied to 0.4");
    return 0;
}

int main(void)
{
    TEST_RUN(test_recipe_equals_cpu_pipeline);
    TEST_RUN(test_finetune_intensity_scale);
    return test_finish();
}
