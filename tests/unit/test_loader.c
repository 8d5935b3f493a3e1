/* The loader: same seed gives the same bytes with or without prefetch threads; one rank with
 * batch 2 equals two ranks with batch 1 sample by sample; a jump to another step gives what a
 * fresh loader gives there; the cache reads each case once; labels move with images through
 * the whole fine-tuning pipeline; pre-training key crops come from the other volume; the
 * class-balanced crop sampler keeps the rank contract; crops_per_case = k takes k consecutive
 * samples from one case draw (MONAI's num_samples); pair_redraws draws a query crop again
 * while its matched point lies outside the key volume; with accum micro-batches per step
 * (gradient accumulation) micro-step 2s + m of batch 1 is sample m of step s of batch 2. */
#include <stdlib.h>
#include <string.h>

#include "core/sysmem.h"
#include "loader.h"
#include "synthetic_body.h"
#include "test.h"

enum { NUM_CASES = 4 };
static Volume cases[NUM_CASES];
static const int folds[NUM_CASES] = {0, 1, 0, 1};

static void make_cases(void)
{
    for (int i = 0; i < NUM_CASES; i++) {
        BodyCase bc = {1.0 + 0.05 * i, 1.0 - 0.04 * i, 40.0 * i, 420.0 - 20.0 * i, {8, 8, 8}, 44};
        body_make(&bc, &cases[i]);
    }
}

static LoaderOptions options(LoaderMode mode, int rank, int size, int batch, int prefetch)
{
    Config cfg;
    config_defaults(&cfg);
    LoaderOptions o = loader_options_from_config(&cfg, mode, rank, size, 1);
    o.seed = 42;
    o.batch = batch;
    o.prefetch = prefetch;
    o.crop[0] = 16; o.crop[1] = 16; o.crop[2] = 8;
    o.key_jitter = 0.1f;
    o.validation_fold = 1;
    /* Every augmentation on often, so the comparisons below cover them. */
    o.aug_intact.p_noise = 0.5f;
    o.aug_intact.p_gamma = 0.5f;
    o.aug_finetune = augment_params_intact();
    return o;
}

static size_t crop_n(const LoaderOptions *o) { return (size_t)o->crop[0] * o->crop[1] * o->crop[2]; }

/* Sample j of a pre-training batch equals sample k of another, every view. */
static int same_pretrain_sample(const PretrainBatch *a, int j, const PretrainBatch *b, int k, size_t n)
{
    return !memcmp(a->query + j * n, b->query + k * n, n * sizeof(float)) &&
           !memcmp(a->key + j * n, b->key + k * n, n * sizeof(float)) &&
           !memcmp(a->query_intact + j * n, b->query_intact + k * n, n * sizeof(float)) &&
           !memcmp(a->key_intact + j * n, b->key_intact + k * n, n * sizeof(float)) &&
           a->query_case[j] == b->query_case[k] && a->key_case[j] == b->key_case[k];
}

/* cache_mb = N: N MiB; -1: 40% of the host memory room (measured around the call: it moves)
 * over the node's ranks, 4 ranks a quarter of one's. */
static int test_cache_budget(void)
{
    TEST_CHECK(loader_cache_budget(0, 8) == 0 && loader_cache_budget(5, 8) == 5L << 20,
               "cache_mb = 0 / 5: %ld / %ld bytes", loader_cache_budget(0, 8),
               loader_cache_budget(5, 8));
    double before = host_available_bytes();
    double one = (double)loader_cache_budget(-1, 1), four = (double)loader_cache_budget(-1, 4);
    double after = host_available_bytes();
    double lo = before < after ? before : after, hi = before < after ? after : before;
    TEST_CHECK(one >= 0.4 * lo * 0.95 && one <= 0.4 * hi * 1.05,
               "cache_mb = -1, one rank: %.0f bytes, 40%% of %.0f..%.0f expected", one, lo, hi);
    TEST_CLOSE(four, one / 4.0, 0.05, 0, "cache_mb = -1: four ranks' share");
    return 0;
}

static int test_pretrain_deterministic_and_rank_independent(void)
{
    LoaderOptions o1 = options(LOADER_PRETRAIN, 0, 1, 2, 2);
    LoaderOptions o0 = options(LOADER_PRETRAIN, 0, 1, 2, 0);
    LoaderOptions r0 = options(LOADER_PRETRAIN, 0, 2, 1, 1);
    LoaderOptions r1 = options(LOADER_PRETRAIN, 1, 2, 1, 3);
    Loader *threaded = loader_create(&o1, loader_source_memory(cases, NUM_CASES, folds));
    Loader *inline_ = loader_create(&o0, loader_source_memory(cases, NUM_CASES, folds));
    Loader *rank0 = loader_create(&r0, loader_source_memory(cases, NUM_CASES, folds));
    Loader *rank1 = loader_create(&r1, loader_source_memory(cases, NUM_CASES, folds));
    size_t n = crop_n(&o1);
    int differ_q_k = 0, augmented = 0;
    for (long step = 0; step < 6; step++) {
        PretrainBatch a, b, c, d;
        loader_next_pretrain_batch(threaded, step, &a);
        loader_next_pretrain_batch(inline_, step, &b);
        loader_next_pretrain_batch(rank0, step, &c);
        loader_next_pretrain_batch(rank1, step, &d);
        for (int j = 0; j < 2; j++)
            TEST_CHECK(same_pretrain_sample(&a, j, &b, j, n), "step %ld sample %d: prefetch changed the bytes", step, j);
        TEST_CHECK(same_pretrain_sample(&a, 0, &c, 0, n), "step %ld: rank 0 of 2 differs from sample 0", step);
        TEST_CHECK(same_pretrain_sample(&a, 1, &d, 0, n), "step %ld: rank 1 of 2 differs from sample 1", step);
        for (int j = 0; j < 2; j++) {
            differ_q_k += a.query_case[j] != a.key_case[j];
            augmented += memcmp(a.query + j * n, a.query_intact + j * n, n * sizeof(float)) != 0;
        }
    }
    TEST_CHECK(differ_q_k == 12, "inter_volume: %d of 12 pairs from two volumes", differ_q_k);
    TEST_CHECK(augmented > 0, "intact views never differ from the masked views");
    /* Same seed, fresh loader: same bytes; another seed: other bytes. */
    LoaderOptions other = o1;
    other.seed = 43;
    Loader *again = loader_create(&o1, loader_source_memory(cases, NUM_CASES, folds));
    Loader *reseeded = loader_create(&other, loader_source_memory(cases, NUM_CASES, folds));
    PretrainBatch a, b, c;
    loader_next_pretrain_batch(threaded, 2, &a);   /* a jump back: the ring restarts */
    loader_next_pretrain_batch(again, 2, &b);      /* a jump ahead on a fresh loader */
    for (int j = 0; j < 2; j++)
        TEST_CHECK(same_pretrain_sample(&a, j, &b, j, n), "step 2 after a jump differs, sample %d", j);
    loader_next_pretrain_batch(reseeded, 2, &c);
    TEST_CHECK(!same_pretrain_sample(&b, 0, &c, 0, n), "another seed gave the same sample");
    LoaderCacheStats s = loader_cache_stats(threaded);
    TEST_CHECK(s.reads == NUM_CASES, "unlimited cache read %ld times for %d cases", s.reads, NUM_CASES);
    loader_destroy(threaded);
    loader_destroy(inline_);
    loader_destroy(rank0);
    loader_destroy(rank1);
    loader_destroy(again);
    loader_destroy(reseeded);
    return 0;
}

/* Without jitter and augmentation, with the query volume also the key (one case), the key
 * crop must be the query crop exactly, with either key_crop; also for a crop wider than an
 * odd-sized volume by an odd count (43 voxels in a crop of 48: Q padded 2 before and 3 after,
 * where pad once put K's start at -3). */
static int key_equals_query(int key_crop_pad, int narrow)
{
    LoaderOptions o = options(LOADER_PRETRAIN, 0, 1, 2, 0);
    o.key_jitter = 0;
    o.inter_volume = 0;
    o.key_crop_pad = key_crop_pad;
    Volume odd;
    const Volume *vol = &cases[0];
    if (narrow) {
        BodyCase bc = {1.0, 1.0, 0.0, 420.0, {8, 8, 8}, 43};
        body_make(&bc, &odd);
        vol = &odd;
        o.crop[0] = odd.dim[0] + 5;
    }
    Loader *L = loader_create(&o, loader_source_memory(vol, 1, folds));
    size_t n = crop_n(&o);
    PretrainBatch b;
    for (long step = 0; step < 3; step++) {
        loader_next_pretrain_batch(L, step, &b);
        for (int j = 0; j < 2; j++) {
            TEST_CHECK(!memcmp(b.query + j * n, b.key + j * n, n * sizeof(float)),
                       "intra-volume pair without jitter (key_crop_pad %d, crop x %d over %d "
                       "voxels): K differs from Q", key_crop_pad, o.crop[0], vol->dim[0]);
            TEST_CHECK(!memcmp(b.query_center[j], b.key_center[j], sizeof b.key_center[j]),
                       "centres differ");
        }
    }
    loader_destroy(L);
    if (narrow) volume_free(&odd);
    return 0;
}

static int test_pretrain_key_crop_shows_the_same_anatomy(void)
{
    return key_equals_query(0, 0) | key_equals_query(1, 0) | key_equals_query(0, 1) |
           key_equals_query(1, 1);
}

/* The config key key_jitter (here with inter_volume = 0, where it makes K a neighbouring crop
 * of Q's volume instead of Q's own crop): every key centre within j x crop of the query centre
 * per axis (plus the rounding to a voxel, and the clamp into the volume, which only pulls it
 * back towards Q's), and some moved; 0 leaves them on it (the test above). */
static int test_pretrain_key_jitter_from_config(void)
{
    Config cfg;
    config_defaults(&cfg);
    config_set(&cfg, "key_jitter", "0.25", "test", 0);
    config_set(&cfg, "inter_volume", "0", "test", 0);
    LoaderOptions o = loader_options_from_config(&cfg, LOADER_PRETRAIN, 0, 1, 1);
    TEST_CHECK(o.key_jitter == 0.25f && !o.inter_volume, "key_jitter %g from the config",
               o.key_jitter);
    o.seed = 42;
    o.batch = 2;
    o.prefetch = 0;
    o.crop[0] = 16; o.crop[1] = 16; o.crop[2] = 8;
    Loader *L = loader_create(&o, loader_source_memory(cases, 1, folds));
    PretrainBatch b;
    int moved = 0;
    for (long step = 0; step < 6; step++) {
        loader_next_pretrain_batch(L, step, &b);
        for (int j = 0; j < 2; j++)
            for (int a = 0; a < 3; a++) {
                const int d = abs(b.key_center[j][a] - b.query_center[j][a]);
                TEST_CHECK(d <= (int)(0.25f * o.crop[a] + 0.5f), "step %ld sample %d axis %d: "
                           "key centre %d voxels from the query's (crop %d)", step, j, a, d,
                           o.crop[a]);
                moved += d > 0;
            }
    }
    TEST_CHECK(moved >= 12, "only %d of 36 key centre coordinates moved by the jitter", moved);
    loader_destroy(L);
    return 0;
}

/* key_crop = pad: the matched point is the key crop's centre voxel in every sample (its
 * windowed value, with zeros where the crop leaves the volume), also where the default (shift)
 * moves the crop inside the volume, which the same draws must show at least once near an edge;
 * the query crops are the same bits either way. */
static int test_pretrain_key_crop_pad(void)
{
    LoaderOptions shift = options(LOADER_PRETRAIN, 0, 1, 2, 0);
    LoaderOptions pad = shift;
    pad.key_crop_pad = 1;
    shift.key_jitter = pad.key_jitter = 0.45f;   /* pushes matched points towards the edges */
    Loader *ls = loader_create(&shift, loader_source_memory(cases, NUM_CASES, folds));
    Loader *lp = loader_create(&pad, loader_source_memory(cases, NUM_CASES, folds));
    const size_t n = crop_n(&pad);
    const int *c = pad.crop;
    const size_t mid = ((size_t)(c[0] / 2) * c[1] + c[1] / 2) * c[2] + c[2] / 2;
    int off_centre_shift = 0, off_centre_pad = 0, samples = 0;
    for (long step = 0; step < 12; step++) {
        PretrainBatch s, p;
        loader_next_pretrain_batch(ls, step, &s);
        loader_next_pretrain_batch(lp, step, &p);
        TEST_CHECK(!memcmp(s.query, p.query, 2 * n * sizeof(float)),
                   "step %ld: key_crop changed the query crops", step);
        for (int j = 0; j < 2; j++, samples++) {
            const Volume *v = &cases[p.key_case[j]];
            const int *kc = p.key_center[j];
            TEST_CHECK(!memcmp(kc, s.key_center[j], sizeof s.key_center[j]),
                       "step %ld: key_crop moved the matched point", step);
            const float want = window_apply(pad.window,
                                            v->image[volume_index(v->dim, kc[0], kc[1], kc[2])]);
            off_centre_pad += p.key[j * n + mid] != want;
            off_centre_shift += s.key[j * n + mid] != want;
        }
    }
    TEST_CHECK(off_centre_pad == 0, "key_crop = pad: %d of %d key crops not centred on their "
               "matched point", off_centre_pad, samples);
    TEST_CHECK(off_centre_shift > 0, "no draw near an edge in %d samples: the comparison shows "
               "nothing", samples);
    loader_destroy(ls);
    loader_destroy(lp);
    return 0;
}

static int test_accum_micro_steps(void)
{
    LoaderOptions whole = options(LOADER_PRETRAIN, 0, 1, 2, 2), micro = options(LOADER_PRETRAIN,
                                                                                 0, 1, 1, 2);
    micro.accum = 2;
    Loader *lw = loader_create(&whole, loader_source_memory(cases, NUM_CASES, folds));
    Loader *lm = loader_create(&micro, loader_source_memory(cases, NUM_CASES, folds));
    const size_t n = crop_n(&whole);
    for (long step = 0; step < 4; step++) {
        PretrainBatch w, m;
        loader_next_pretrain_batch(lw, step, &w);
        for (int k = 0; k < 2; k++) {
            loader_next_pretrain_batch(lm, 2 * step + k, &m);
            TEST_CHECK(same_pretrain_sample(&w, k, &m, 0, n), "step %ld: micro-batch %d differs "
                       "from sample %d of the whole batch", step, k, k);
            TEST_CHECK(loader_global_sample(lm, 2 * step + k, 0) ==
                           loader_global_sample(lw, step, k),
                       "step %ld micro %d: global sample index differs", step, k);
        }
    }
    loader_destroy(lw);
    loader_destroy(lm);
    return 0;
}

/* Whether the matcher maps query centre qc of case q outside case k's volume (independent of
 * the loader: the profile matcher run here on the two volumes). */
static int matched_outside(int q, int k, const int qc[3])
{
    void *dq = matcher_profile.describe(&cases[q]), *dk = matcher_profile.describe(&cases[k]);
    double pq[1][3] = {{qc[0], qc[1], qc[2]}}, pk[1][3];
    matcher_profile.map_points(dq, dk, 1, (const double(*)[3])pq, pk);
    matcher_profile.free_description(dq);
    matcher_profile.free_description(dk);
    int outside = 0;
    for (int a = 0; a < 3; a++) outside |= pk[0][a] < 0.0 || pk[0][a] > cases[k].dim[a] - 1;
    return outside;
}

/* pair_redraws: the synthetic bodies' fields of view differ, so some first draws map outside
 * the key volume (flagged exactly where the matcher, run here, says so). With redraws allowed
 * every kept pair maps inside, the draws that were inside are unchanged (the same stream's
 * first draw), and those that were outside were drawn again. */
static int test_pair_redraws(void)
{
    LoaderOptions keep = options(LOADER_PRETRAIN, 0, 1, 2, 0), redraw = keep;
    keep.matcher = redraw.matcher = &matcher_profile;
    redraw.pair_redraws = 100;
    Loader *lk = loader_create(&keep, loader_source_memory(cases, NUM_CASES, folds));
    Loader *lr = loader_create(&redraw, loader_source_memory(cases, NUM_CASES, folds));
    int samples = 0, outside = 0, flag_wrong = 0, redrawn = 0, kept_outside = 0, moved = 0;
    for (long step = 0; step < 40; step++) {
        PretrainBatch a, b;
        loader_next_pretrain_batch(lk, step, &a);
        loader_next_pretrain_batch(lr, step, &b);
        for (int j = 0; j < 2; j++, samples++) {
            outside += a.key_outside[j];
            flag_wrong += a.key_outside[j] !=
                          matched_outside(a.query_case[j], a.key_case[j], a.query_center[j]);
            TEST_CHECK(a.pair_redrawn[j] == 0, "pair_redraws = 0 redrew a query crop");
            kept_outside += b.key_outside[j];
            redrawn += b.pair_redrawn[j] > 0;
            const int same =
                !memcmp(a.query_center[j], b.query_center[j], sizeof a.query_center[j]);
            TEST_CHECK(a.key_case[j] == b.key_case[j], "pair_redraws changed the key volume");
            /* inside at the first draw: kept as is; outside: drawn again */
            if (!a.key_outside[j]) TEST_CHECK(same && b.pair_redrawn[j] == 0, "step %ld: a "
                                              "pair inside K was drawn again", step);
            else moved += !same && b.pair_redrawn[j] > 0;
        }
    }
    printf("  %d samples: %d first draws matched outside the key volume, %d redrawn\n", samples,
           outside, redrawn);
    TEST_CHECK(outside > 0 && outside < samples, "%d of %d first draws outside: the test sees "
               "nothing", outside, samples);
    TEST_CHECK(flag_wrong == 0, "key_outside disagrees with the matcher in %d samples", flag_wrong);
    TEST_CHECK(kept_outside == 0, "pair_redraws = 100 kept %d pairs outside", kept_outside);
    TEST_CHECK(redrawn == outside && moved == outside, "%d outside, %d redrawn, %d moved", outside,
               redrawn, moved);
    loader_destroy(lk);
    loader_destroy(lr);
    return 0;
}

/* A pre-training loader with cfg's options (loader_options_from_config: what the configuration
 * decides), seed 42, batch 2, 16x16x8 crops, no threads; *crop_voxels the crop's size. */
static Loader *pretrain_loader_from(const Config *cfg, size_t *crop_voxels)
{
    LoaderOptions o = loader_options_from_config(cfg, LOADER_PRETRAIN, 0, 1, 1);
    o.seed = 42;
    o.batch = 2;
    o.prefetch = 0;
    o.crop[0] = 16; o.crop[1] = 16; o.crop[2] = 8;
    if (crop_voxels) *crop_voxels = crop_n(&o);
    return loader_create(&o, loader_source_memory(cases, NUM_CASES, folds));
}

/* intact_aug = none (through loader_options_from_config): the intact views are the crops as
 * cut, bit for bit the masked views (which have no augmentation); the default (strong) changes
 * some of them. */
static int intact_equal_masked(const char *intact_aug)
{
    Config cfg;
    config_defaults(&cfg);
    config_set(&cfg, "intact_aug", intact_aug, "test", 0);
    size_t n;
    Loader *L = pretrain_loader_from(&cfg, &n);
    int equal = 0;
    for (long step = 0; step < 6; step++) {
        PretrainBatch b;
        loader_next_pretrain_batch(L, step, &b);
        for (int j = 0; j < 2; j++) {
            equal += !memcmp(b.query + j * n, b.query_intact + j * n, n * sizeof(float));
            equal += !memcmp(b.key + j * n, b.key_intact + j * n, n * sizeof(float));
        }
    }
    loader_destroy(L);
    return equal;
}

static int test_intact_aug_none(void)
{
    const int none = intact_equal_masked("none"), strong = intact_equal_masked("strong");
    TEST_CHECK(none == 24, "intact_aug = none: %d of 24 intact views equal their masked view",
               none);
    TEST_CHECK(strong < 24, "intact_aug = strong: every intact view equals its masked view");
    return 0;
}

/* Flips and quarter turns of the intact views drawn over 8 steps of batch 2: none when the
 * configuration has use_casa = 0 (token-wise l_st), some with CASA. */
static int geometric_draws(int use_casa)
{
    Config cfg;
    config_defaults(&cfg);
    cfg.use_casa = use_casa;
    Loader *L = pretrain_loader_from(&cfg, NULL);
    PretrainBatch b;
    int turned = 0;
    for (long step = 0; step < 8; step++) {
        loader_next_pretrain_batch(L, step, &b);
        for (int j = 0; j < 2; j++)
            for (int v = 0; v < 2; v++) {
                const AugmentDraw *d = v ? &b.key_aug[j] : &b.query_aug[j];
                turned += d->flip[0] || d->flip[1] || d->flip[2] || d->rot90;
            }
    }
    loader_destroy(L);
    return turned;
}

static int test_no_casa_intact_views_keep_their_geometry(void)
{
    const int without = geometric_draws(0), with = geometric_draws(1);
    TEST_CHECK(without == 0, "use_casa = 0: %d of 32 intact views flipped or turned", without);
    TEST_CHECK(with > 0, "use_casa = 1: no intact view flipped or turned in 32 (p = 0.5 each)");
    return 0;
}

static int test_finetune_labels_and_rank_independence(void)
{
    LoaderOptions o1 = options(LOADER_FINETUNE, 0, 1, 2, 2);
    LoaderOptions r0 = options(LOADER_FINETUNE, 0, 2, 1, 0);
    LoaderOptions r1 = options(LOADER_FINETUNE, 1, 2, 1, 1);
    o1.cache_bytes = 0; /* no cache: every sample reads its case again */
    Loader *a = loader_create(&o1, loader_source_memory(cases, NUM_CASES, folds));
    Loader *b0 = loader_create(&r0, loader_source_memory(cases, NUM_CASES, folds));
    Loader *b1 = loader_create(&r1, loader_source_memory(cases, NUM_CASES, folds));
    const int *train, *val;
    TEST_CHECK(loader_training_cases(a, &train) == 2 && train[0] == 0 && train[1] == 2, "training cases");
    TEST_CHECK(loader_validation_cases(a, &val) == 2 && val[0] == 1 && val[1] == 3, "validation cases");
    size_t n = crop_n(&o1);
    int positives = 0, labelled_voxels = 0;
    for (long step = 0; step < 8; step++) {
        FinetuneBatch x, y, z;
        loader_next_finetune_batch(a, step, &x);
        loader_next_finetune_batch(b0, step, &y);
        loader_next_finetune_batch(b1, step, &z);
        TEST_CHECK(!memcmp(x.image, y.image, n * sizeof(float)) && !memcmp(x.label, y.label, n * sizeof(int32_t)),
                   "step %ld: rank 0 of 2 differs", step);
        TEST_CHECK(!memcmp(x.image + n, z.image, n * sizeof(float)) && !memcmp(x.label + n, z.label, n * sizeof(int32_t)),
                   "step %ld: rank 1 of 2 differs", step);
        for (int j = 0; j < 2; j++) {
            TEST_CHECK(x.case_index[j] == 0 || x.case_index[j] == 2, "validation case %d trained on", x.case_index[j]);
            positives += x.positive[j];
            const int32_t *lab = x.label + j * n;
            /* Positive crops are centred on an organ; the crop's centre voxel region holds it
             * unless augmentation moved it (it stays inside the crop either way). */
            int has = 0;
            for (size_t i = 0; i < n; i++) has |= lab[i] != 0;
            if (x.positive[j]) TEST_CHECK(has, "positive crop without foreground");
            labelled_voxels += has;
        }
    }
    TEST_CHECK(positives > 0 && positives < 16, "positives %d of 16 (pos_fraction 0.5)", positives);
    LoaderCacheStats s = loader_cache_stats(a);
    /* 16 samples acquired their case (plus whatever the threads prepared for steps 8 and 9).
     * Without a cache a case is read again once no sample holds it; two prefetch threads may
     * hold the same case at the same moment and share one read, so count acquisitions, and
     * require re-reading (more reads than the 2 training cases). */
    TEST_CHECK(s.reads + s.hits >= 16 && s.reads > 2, "no-cache loader: %ld reads, %ld hits",
               s.reads, s.hits);
    /* Whole case: windowed values and labels as stored. */
    WindowedCase wc;
    loader_read_full_case(a, 1, &wc);
    size_t vn = volume_voxels(&cases[1]), bad = 0;
    for (size_t i = 0; i < vn; i++)
        bad += wc.image[i] != window_apply(o1.window, cases[1].image[i]) || wc.label[i] != cases[1].label[i];
    TEST_CHECK(bad == 0 && wc.dim[2] == cases[1].dim[2], "full case: %zu voxels differ", bad);
    windowed_case_free(&wc);
    loader_destroy(a);
    loader_destroy(b0);
    loader_destroy(b1);
    return 0;
}

/* crop_sampler = classes keeps the contract: 1 rank x batch 2 (prefetching) equals 2 ranks x
 * batch 1, sample by sample; sample g's crop holds the class that the sampler draws from the
 * documented stream (seed, step, g, RNG_CROP) of its case; and the centres differ from posneg's. */
static int test_finetune_class_sampler_rank_independence(void)
{
    LoaderOptions o1 = options(LOADER_FINETUNE, 0, 1, 2, 2);
    LoaderOptions r0 = options(LOADER_FINETUNE, 0, 2, 1, 0);
    LoaderOptions r1 = options(LOADER_FINETUNE, 1, 2, 1, 1);
    LoaderOptions pn = options(LOADER_FINETUNE, 0, 1, 2, 0);
    crop_sampler_init(&o1.sampler, "classes", 0.5f, "", 14);
    r0.sampler = r1.sampler = o1.sampler;
    Loader *a = loader_create(&o1, loader_source_memory(cases, NUM_CASES, folds));
    Loader *b0 = loader_create(&r0, loader_source_memory(cases, NUM_CASES, folds));
    Loader *b1 = loader_create(&r1, loader_source_memory(cases, NUM_CASES, folds));
    Loader *posneg = loader_create(&pn, loader_source_memory(cases, NUM_CASES, folds));
    size_t n = crop_n(&o1);
    int classes_seen[LABEL_CLASS_COUNT] = {0}, differ_from_posneg = 0, missing = 0;
    for (long step = 0; step < 8; step++) {
        FinetuneBatch x, y, z, p;
        loader_next_finetune_batch(a, step, &x);
        loader_next_finetune_batch(b0, step, &y);
        loader_next_finetune_batch(b1, step, &z);
        loader_next_finetune_batch(posneg, step, &p);
        TEST_CHECK(!memcmp(x.image, y.image, n * sizeof(float)) && !memcmp(x.label, y.label, n * sizeof(int32_t)),
                   "classes, step %ld: rank 0 of 2 differs", step);
        TEST_CHECK(!memcmp(x.image + n, z.image, n * sizeof(float)) && !memcmp(x.label + n, z.label, n * sizeof(int32_t)),
                   "classes, step %ld: rank 1 of 2 differs", step);
        differ_from_posneg += memcmp(x.image, p.image, 2 * n * sizeof(float)) != 0;
        for (int j = 0; j < 2; j++) {
            const Volume *v = &cases[x.case_index[j]];
            LabelIndex idx;
            label_index_build_by_class(v, o1.window, &idx);
            RngStream r;
            rng_init(&r, o1.seed, (uint32_t)step, (uint32_t)(step * 2 + j), RNG_CROP);
            int c[3];
            int cls = crop_classes_center(v, &idx, o1.window, o1.sampler.class_ratios, 14, &r, c);
            label_index_free(&idx);
            classes_seen[cls]++;
            TEST_CHECK(x.positive[j] == (cls > 0), "step %ld sample %d: positive %d for class %d",
                       step, j, x.positive[j], cls);
            int has = 0;
            for (size_t i = 0; i < n; i++) has |= x.label[j * n + i] == cls;
            missing += !has;
        }
    }
    TEST_CHECK(missing == 0, "%d crops lack the class their centre was drawn from", missing);
    TEST_CHECK(differ_from_posneg > 0, "the class sampler gave posneg's crops at every step");
    int distinct = 0;
    for (int c = 0; c < LABEL_CLASS_COUNT; c++) distinct += classes_seen[c] > 0;
    /* 16 draws over the 6 classes present (background, 1, 2, 3, 5, 13) with equal weights. */
    TEST_CHECK(distinct >= 4, "only %d distinct classes in 16 class-balanced draws", distinct);
    loader_destroy(a);
    loader_destroy(b0);
    loader_destroy(b1);
    loader_destroy(posneg);
    return 0;
}

/* crops_per_case = 2, batch 4: samples 2i and 2i+1 of step s share the case that a
 * crops_per_case = 1 loader with batch 2 gives as its sample i of step s (the same draw of the
 * epoch's shuffle), but not their crops (each has its own centre and augmentation); two ranks
 * with batch 2 equal it sample by sample, so a case's crops never straddle ranks. */
static int test_finetune_crops_per_case(void)
{
    LoaderOptions one = options(LOADER_FINETUNE, 0, 1, 2, 0);
    LoaderOptions two = options(LOADER_FINETUNE, 0, 1, 4, 2);
    LoaderOptions r0 = options(LOADER_FINETUNE, 0, 2, 2, 0);
    LoaderOptions r1 = options(LOADER_FINETUNE, 1, 2, 2, 1);
    two.crops_per_case = r0.crops_per_case = r1.crops_per_case = 2;
    Loader *a = loader_create(&one, loader_source_memory(cases, NUM_CASES, folds));
    Loader *b = loader_create(&two, loader_source_memory(cases, NUM_CASES, folds));
    Loader *b0 = loader_create(&r0, loader_source_memory(cases, NUM_CASES, folds));
    Loader *b1 = loader_create(&r1, loader_source_memory(cases, NUM_CASES, folds));
    const size_t n = crop_n(&one);
    int pairs_alike = 0, cases_seen[NUM_CASES] = {0};
    for (long step = 0; step < 6; step++) {
        FinetuneBatch x, y, z0, z1;
        loader_next_finetune_batch(a, step, &x);
        loader_next_finetune_batch(b, step, &y);
        loader_next_finetune_batch(b0, step, &z0);
        loader_next_finetune_batch(b1, step, &z1);
        for (int j = 0; j < 4; j++) {
            TEST_CHECK(y.case_index[j] == x.case_index[j / 2], "step %ld sample %d: case %d, "
                       "the draw gives %d", step, j, y.case_index[j], x.case_index[j / 2]);
            cases_seen[y.case_index[j]]++;
        }
        for (int i = 0; i < 2; i++)
            pairs_alike += !memcmp(y.image + 2 * i * n, y.image + (2 * i + 1) * n,
                                   n * sizeof(float));
        const FinetuneBatch *rk[2] = {&z0, &z1};
        for (int r = 0; r < 2; r++)
            TEST_CHECK(!memcmp(y.image + 2 * r * n, rk[r]->image, 2 * n * sizeof(float)) &&
                       !memcmp(y.label + 2 * r * n, rk[r]->label, 2 * n * sizeof(int32_t)),
                       "step %ld: rank %d of 2 differs", step, r);
    }
    TEST_CHECK(pairs_alike == 0, "%d pairs of crops from one draw are identical", pairs_alike);
    TEST_CHECK(cases_seen[0] == 12 && cases_seen[2] == 12, "training cases seen %d and %d times "
               "in 24 crops (12 draws of an epoch-wise shuffle of 2)", cases_seen[0],
               cases_seen[2]);
    loader_destroy(a);
    loader_destroy(b);
    loader_destroy(b0);
    loader_destroy(b1);
    return 0;
}

int main(void)
{
    make_cases();
    TEST_RUN(test_cache_budget);
    TEST_RUN(test_pretrain_deterministic_and_rank_independent);
    TEST_RUN(test_pretrain_key_crop_shows_the_same_anatomy);
    TEST_RUN(test_pretrain_key_jitter_from_config);
    TEST_RUN(test_pretrain_key_crop_pad);
    TEST_RUN(test_pair_redraws);
    TEST_RUN(test_accum_micro_steps);
    TEST_RUN(test_intact_aug_none);
    TEST_RUN(test_no_casa_intact_views_keep_their_geometry);
    TEST_RUN(test_finetune_labels_and_rank_independence);
    TEST_RUN(test_finetune_class_sampler_rank_independence);
    TEST_RUN(test_finetune_crops_per_case);
    for (int i = 0; i < NUM_CASES; i++) volume_free(&cases[i]);
    return test_finish();
}
