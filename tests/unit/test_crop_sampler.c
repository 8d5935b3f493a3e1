/* The class-balanced crop-centre sampler (MONAI RandCropByLabelClassesd semantics, see
 * data/crop_sampler.h): the per-class index of a hand-made volume against hand-computed
 * offsets; renormalised class probabilities with absent classes and zero ratios against hand
 * values; empirical class frequencies against the requested ratios (chi-square); absent
 * classes never drawn; every centre on a voxel of the drawn class; uniform voxels within a
 * class (chi-square); the exact background fallback; and the posneg sampler unchanged. */
#include <string.h>

#include "data/crop.h"
#include "data/crop_sampler.h"
#include "test.h"

/* Chi-square critical values at p = 0.001 (scipy.stats.chi2.ppf(0.999, df)). The draws are
 * deterministic (fixed Philox keys), so each test has one fixed outcome; the bound says that
 * a correct sampler would exceed it for only 1 seed in 1000. */
static double chi2_critical_p001(int df)
{
    static const struct { int df; double x; } table[] = {
        {1, 10.828}, {2, 13.816}, {3, 16.266}, {4, 18.467}, {26, 54.052},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (table[i].df == df) return table[i].x;
    return -1.0;
}

static double chi_square(const long *observed, const double *expected_prob, int k, long total, int *df)
{
    double x = 0.0;
    *df = -1;
    for (int c = 0; c < k; c++) {
        if (expected_prob[c] <= 0.0) continue;
        double e = expected_prob[c] * (double)total;
        x += (observed[c] - e) * (observed[c] - e) / e;
        (*df)++;
    }
    return x;
}

static const HuWindow finetune_window = {WINDOW_FINETUNE_LO, WINDOW_FINETUNE_HI};

/* 2x3x4 = 24 voxels, HU 0 except voxels 1 and 2 (air, -1000). Labels: class 1 at 4, 9, 17;
 * class 2 at 22; class 3 at 2, 6, 11, where voxel 2 is air and, as in MONAI's
 * map_classes_to_indices given the image, not a class-3 centre. Background centres qualify at
 * label 0 and HU above -175: the 17 label-0 voxels less voxel 1. */
static void tiny_volume(Volume *v, int16_t img[24], uint8_t lab[24])
{
    memset(v, 0, sizeof *v);
    v->dim[0] = 2; v->dim[1] = 3; v->dim[2] = 4;
    for (int i = 0; i < 24; i++) { img[i] = 0; lab[i] = 0; }
    img[1] = img[2] = -1000;
    lab[4] = lab[9] = lab[17] = 1;
    lab[22] = 2;
    lab[2] = lab[6] = lab[11] = 3;
    v->image = img;
    v->label = lab;
}

static int test_hand_computed_tiny_volume(void)
{
    Volume v;
    int16_t img[24];
    uint8_t lab[24];
    tiny_volume(&v, img, lab);
    LabelIndex idx;
    label_index_build_by_class(&v, finetune_window, &idx);
    const uint32_t expect[6] = {4, 9, 17, 22, 6, 11};
    TEST_CHECK(idx.by_class && idx.count == 6, "count %zu (by_class %d), expected 6", idx.count, idx.by_class);
    for (int k = 0; k < 6 && idx.count == 6; k++)
        TEST_CHECK(idx.foreground[k] == expect[k], "foreground[%d] = %u, expected %u", k, idx.foreground[k], expect[k]);
    TEST_CHECK(idx.class_start[1] == 0 && idx.class_start[2] == 3 && idx.class_start[3] == 4 &&
               idx.class_start[4] == 6 && idx.class_start[LABEL_CLASS_COUNT] == 6,
               "class_start %zu %zu %zu %zu", idx.class_start[1], idx.class_start[2],
               idx.class_start[3], idx.class_start[4]);
    TEST_CHECK(idx.background_count == 16, "background_count %zu, expected 16", idx.background_count);
    TEST_CHECK(label_index_class_count(&idx, 1) == 3 && label_index_class_count(&idx, 2) == 1 &&
               label_index_class_count(&idx, 3) == 2 && label_index_class_count(&idx, 4) == 0 &&
               label_index_class_count(&idx, 0) == 0, "per-class counts");

    /* Ratios 2, 1, 3, 5, 4 over classes 0..4; class 4 is absent: 2/11, 1/11, 3/11, 5/11, 0. */
    const float ratios[5] = {2, 1, 3, 5, 4};
    double p[5];
    TEST_CLOSE(crop_class_probabilities(&idx, ratios, 5, p), 11.0, 0, 1e-12, "sum of present ratios");
    const double hand[5] = {2.0 / 11, 1.0 / 11, 3.0 / 11, 5.0 / 11, 0.0};
    for (int c = 0; c < 5; c++) TEST_CLOSE(p[c], hand[c], 0, 1e-12, "renormalised probability");
    /* A present class with ratio 0 is never drawn either: 2, 0, 3, 5 -> 2/10, 0, 3/10, 5/10. */
    const float ratios_zero[4] = {2, 0, 3, 5};
    crop_class_probabilities(&idx, ratios_zero, 4, p);
    TEST_CLOSE(p[0], 0.2, 0, 1e-12, "class 0");
    TEST_CLOSE(p[1], 0.0, 0, 0, "class 1 (ratio 0)");
    TEST_CLOSE(p[3], 0.5, 0, 1e-12, "class 3");

    /* Draws: frequencies, and each centre on a voxel of the drawn class. */
    enum { DRAWS = 11000 };
    long seen[5] = {0};
    int wrong = 0, on_air = 0;
    for (int k = 0; k < DRAWS; k++) {
        RngStream r;
        rng_init(&r, 11, 0, (uint32_t)k, RNG_TEST);
        int c[3];
        int cls = crop_classes_center(&v, &idx, finetune_window, ratios, 5, &r, c);
        size_t i = volume_index(v.dim, c[0], c[1], c[2]);
        if (cls < 0 || cls >= 5) { wrong++; continue; }
        seen[cls]++;
        wrong += lab[i] != cls;
        on_air += cls == 0 && img[i] <= WINDOW_FINETUNE_LO;
    }
    TEST_CHECK(wrong == 0, "%d centres not on a voxel of the drawn class", wrong);
    TEST_CHECK(on_air == 0, "%d background centres outside the window (air)", on_air);
    TEST_CHECK(seen[4] == 0, "absent class 4 drawn %ld times", seen[4]);
    int df;
    double x = chi_square(seen, hand, 5, DRAWS, &df);
    TEST_CHECK(df == 3 && x < chi2_critical_p001(df), "chi-square %.2f (df %d) >= %.3f: class "
               "frequencies %ld %ld %ld %ld do not match 2:1:3:5", x, df, chi2_critical_p001(3),
               seen[0], seen[1], seen[2], seen[3]);
    label_index_free(&idx);
    return 0;
}

/* 20^3 voxels: air for x < 4 (not background), soft tissue elsewhere. Class 1: a big block
 * (10x10x10 = 1000 voxels), class 2: 3x3x3 = 27 voxels, class 3: one voxel, class 5: a
 * 5x5x4 = 100 voxel slab; class 4 absent. Organ sizes span three orders of magnitude, which is
 * what the class-balanced sampler must not care about. */
static void unequal_volume(Volume *v)
{
    memset(v, 0, sizeof *v);
    v->dim[0] = v->dim[1] = v->dim[2] = 20;
    size_t n = volume_voxels(v);
    v->image = malloc(n * sizeof *v->image);
    v->label = calloc(n, 1);
    for (int x = 0; x < 20; x++)
        for (int y = 0; y < 20; y++)
            for (int z = 0; z < 20; z++) {
                size_t i = volume_index(v->dim, x, y, z);
                v->image[i] = x < 4 ? -1000 : 40;
                if (x >= 8 && x < 18 && y < 10 && z < 10) v->label[i] = 1;
                if (x >= 4 && x < 7 && y >= 15 && y < 18 && z >= 15 && z < 18) v->label[i] = 2;
                if (x == 19 && y == 19 && z == 19) v->label[i] = 3;
                if (x >= 10 && x < 15 && y >= 12 && y < 17 && z >= 12 && z < 16) v->label[i] = 5;
            }
}

static int test_frequencies_match_ratios_and_voxels_are_uniform(void)
{
    Volume v;
    unequal_volume(&v);
    LabelIndex idx;
    label_index_build_by_class(&v, finetune_window, &idx);
    TEST_CHECK(label_index_class_count(&idx, 1) == 1000 && label_index_class_count(&idx, 2) == 27 &&
               label_index_class_count(&idx, 3) == 1 && label_index_class_count(&idx, 5) == 100,
               "class sizes");
    /* Two ratio sets: MONAI's default (class_ratios = "": all 1) and an uneven one. */
    CropSampler equal, uneven;
    crop_sampler_init(&equal, "classes", 0.5f, "", 6);
    crop_sampler_init(&uneven, "classes", 0.5f, " 4, 1,2 ,3,  7,0.5", 6);
    TEST_CHECK(uneven.class_ratios[0] == 4.0f && uneven.class_ratios[4] == 7.0f &&
               uneven.class_ratios[5] == 0.5f, "class_ratios parsed as %g %g %g",
               (double)uneven.class_ratios[0], (double)uneven.class_ratios[4], (double)uneven.class_ratios[5]);
    const double expect[2][6] = {
        {0.2, 0.2, 0.2, 0.2, 0.0, 0.2},                              /* 5 present classes */
        {4 / 10.5, 1 / 10.5, 2 / 10.5, 3 / 10.5, 0.0, 0.5 / 10.5},   /* class 4 (7) absent */
    };
    const CropSampler *samplers[2] = {&equal, &uneven};
    enum { DRAWS = 20000 };
    for (int s = 0; s < 2; s++) {
        long seen[6] = {0};
        long class2_voxel[27] = {0};
        int wrong = 0, positives = 0;
        for (int k = 0; k < DRAWS; k++) {
            RngStream r, again;
            rng_init(&r, 5, (uint32_t)s, (uint32_t)k, RNG_CROP);
            rng_init(&again, 5, (uint32_t)s, (uint32_t)k, RNG_CROP);
            int c[3], c2[3];
            int cls = crop_classes_center(&v, &idx, finetune_window, samplers[s]->class_ratios, 6, &r, c);
            positives += crop_sampler_center(samplers[s], &v, &idx, finetune_window, &again, c2);
            TEST_CHECK(!memcmp(c, c2, sizeof c), "crop_sampler_center differs from crop_classes_center");
            size_t i = volume_index(v.dim, c[0], c[1], c[2]);
            if (cls < 0 || cls > 5) { wrong++; continue; }
            seen[cls]++;
            wrong += v.label[i] != cls || (cls == 0 && v.image[i] <= WINDOW_FINETUNE_LO);
            if (cls == 2) class2_voxel[(c[0] - 4) * 9 + (c[1] - 15) * 3 + (c[2] - 15)]++;
        }
        TEST_CHECK(wrong == 0, "sampler %d: %d centres not on a voxel of the drawn class", s, wrong);
        TEST_CHECK(seen[4] == 0, "sampler %d: absent class 4 drawn %ld times", s, seen[4]);
        TEST_CHECK(positives == DRAWS - seen[0], "sampler %d: %d positives for %ld foreground draws",
                   s, positives, DRAWS - seen[0]);
        int df;
        double x = chi_square(seen, expect[s], 6, DRAWS, &df);
        TEST_CHECK(df == 4 && x < chi2_critical_p001(df), "sampler %d: chi-square %.2f (df %d) >= %.3f; "
                   "frequencies %ld %ld %ld %ld %ld %ld", s, x, df, chi2_critical_p001(4),
                   seen[0], seen[1], seen[2], seen[3], seen[4], seen[5]);
        /* Within class 2, every one of its 27 voxels equally likely. */
        double uniform27[27];
        for (int k = 0; k < 27; k++) uniform27[k] = 1.0 / 27;
        double xv = chi_square(class2_voxel, uniform27, 27, seen[2], &df);
        TEST_CHECK(df == 26 && xv < chi2_critical_p001(df), "sampler %d: class-2 voxels not uniform: "
                   "chi-square %.2f (df %d) over %ld draws", s, xv, df, seen[2]);
    }
    label_index_free(&idx);
    free(v.image);
    free(v.label);
    return 0;
}

/* One qualifying background voxel in 8000 (the rest air): rejection misses it almost always,
 * and the exact fallback must still find it. A case where no class of positive ratio is
 * present falls back to equal weights over the classes present. */
static int test_background_fallbacks(void)
{
    Volume v;
    unequal_volume(&v);
    size_t n = volume_voxels(&v), only = volume_index(v.dim, 19, 0, 19);
    /* organs are tissue; the background is air but for one voxel */
    for (size_t i = 0; i < n; i++) v.image[i] = v.label[i] ? 40 : -1000;
    v.image[only] = 40;
    LabelIndex idx;
    label_index_build_by_class(&v, finetune_window, &idx);
    TEST_CHECK(idx.background_count == 1, "background_count %zu, expected 1", idx.background_count);
    const float background_only[6] = {1, 0, 0, 0, 0, 0};
    for (int k = 0; k < 50; k++) {
        RngStream r;
        rng_init(&r, 3, 0, (uint32_t)k, RNG_TEST);
        int c[3];
        int cls = crop_classes_center(&v, &idx, finetune_window, background_only, 6, &r, c);
        TEST_CHECK(cls == 0 && volume_index(v.dim, c[0], c[1], c[2]) == only,
                   "draw %d: class %d at %d,%d,%d, expected the one background voxel", k, cls, c[0], c[1], c[2]);
    }
    /* The posneg sampler's negative centres too: the one background voxel every time (it had
     * fallen back to a foreground centre whenever the 256 tries missed, against MONAI and
     * its own header), and with no qualifying background at all, a foreground one. */
    LabelIndex plain;
    label_index_build(&v, &plain);
    for (int k = 0; k < 50; k++) {
        RngStream r;
        rng_init(&r, 3, 2, (uint32_t)k, RNG_TEST);
        int c[3];
        const int positive = crop_posneg_center(&v, &plain, finetune_window, 0.0f, &r, c);
        TEST_CHECK(!positive && volume_index(v.dim, c[0], c[1], c[2]) == only,
                   "posneg draw %d: %s centre at %d,%d,%d, expected the one background voxel", k,
                   positive ? "positive" : "negative", c[0], c[1], c[2]);
    }
    v.image[only] = -1000;   /* now none qualifies */
    RngStream rn;
    rng_init(&rn, 3, 3, 0, RNG_TEST);
    int cn[3];
    TEST_CHECK(crop_posneg_center(&v, &plain, finetune_window, 0.0f, &rn, cn) == 1 &&
               v.label[volume_index(v.dim, cn[0], cn[1], cn[2])] > 0,
               "no qualifying background: a foreground centre, as MONAI");
    v.image[only] = 40;
    label_index_free(&plain);
    /* Ratio only on the absent class 4: nothing with a positive ratio is present. */
    const float absent_only[6] = {0, 0, 0, 0, 1, 0};
    double p[6];
    TEST_CLOSE(crop_class_probabilities(&idx, absent_only, 6, p), 0.0, 0, 0, "no present class has weight");
    long seen[6] = {0};
    int wrong = 0;
    for (int k = 0; k < 5000; k++) {
        RngStream r;
        rng_init(&r, 3, 1, (uint32_t)k, RNG_TEST);
        int c[3];
        int cls = crop_classes_center(&v, &idx, finetune_window, absent_only, 6, &r, c);
        if (cls < 0 || cls > 5) { wrong++; continue; }
        seen[cls]++;
        wrong += v.label[volume_index(v.dim, c[0], c[1], c[2])] != cls;
    }
    const double equal5[6] = {0.2, 0.2, 0.2, 0.2, 0.0, 0.2};
    int df;
    double x = chi_square(seen, equal5, 6, 5000, &df);
    TEST_CHECK(wrong == 0 && seen[4] == 0, "fallback: %d centres off their class, class 4 %ld times", wrong, seen[4]);
    TEST_CHECK(df == 4 && x < chi2_critical_p001(df), "fallback frequencies %ld %ld %ld %ld %ld: "
               "chi-square %.2f against equal weights", seen[0], seen[1], seen[2], seen[3], seen[5], x);
    label_index_free(&idx);
    free(v.image);
    free(v.label);
    return 0;
}

/* crop_sampler = posneg (the default) is today's behaviour: the ascending index and the very
 * centres of crop_posneg_center. */
static int test_posneg_unchanged(void)
{
    Volume v;
    unequal_volume(&v);
    CropSampler s;
    crop_sampler_init(&s, "posneg", 0.5f, "", 14);
    LabelIndex a, b;
    crop_sampler_index_build(&s, &v, finetune_window, &a);
    label_index_build(&v, &b);
    TEST_CHECK(!a.by_class && a.count == b.count && a.count == 1128 &&
               !memcmp(a.foreground, b.foreground, a.count * sizeof *a.foreground), "posneg index differs");
    for (uint32_t i = 1; i < a.count; i++)
        if (a.foreground[i] <= a.foreground[i - 1]) { TEST_CHECK(0, "posneg index not ascending"); break; }
    int differ = 0;
    for (int k = 0; k < 2000; k++) {
        RngStream r1, r2;
        rng_init(&r1, 9, 0, (uint32_t)k, RNG_CROP);
        rng_init(&r2, 9, 0, (uint32_t)k, RNG_CROP);
        int c1[3], c2[3];
        int p1 = crop_sampler_center(&s, &v, &a, finetune_window, &r1, c1);
        int p2 = crop_posneg_center(&v, &b, finetune_window, 0.5f, &r2, c2);
        differ += p1 != p2 || memcmp(c1, c2, sizeof c1) != 0;
    }
    TEST_CHECK(differ == 0, "%d of 2000 posneg centres differ", differ);
    label_index_free(&a);
    label_index_free(&b);
    free(v.image);
    free(v.label);
    return 0;
}

int main(void)
{
    TEST_RUN(test_hand_computed_tiny_volume);
    TEST_RUN(test_frequencies_match_ratios_and_voxels_are_uniform);
    TEST_RUN(test_background_fallbacks);
    TEST_RUN(test_posneg_unchanged);
    return test_finish();
}
