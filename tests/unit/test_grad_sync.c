/* Bucket bookkeeping of the overlapped gradient all-reduce (src/train/grad_sync.c), with a fake
 * transport so it runs without MPI ranks:
 *  - buckets tile the flat buffer (every float exactly once), start and end on tensor
 *    boundaries, are built from the last tensor backwards and close at the first tensor that
 *    reaches the target size (hand-computed layout);
 *  - a bucket launches exactly when its last tensor is reported, once, whatever the order and
 *    however often tensors are reported; unreported tensors are reduced at grad_sync_finish;
 *  - the result is the mean over two simulated ranks (exact: (a + b) / 2 in fp32 either way);
 *  - overlap off (asked for, or a transport whose launches block): one reduction of the whole
 *    buffer after backward, no hook; one rank: nothing;
 *  - the models' reports are never premature: the fake transport snapshots each bucket when it
 *    is launched and checks at the wait that backward did not change it afterwards (bit-exact),
 *    for MAE, Alice (two masked views: only the last one's reports count), Alice without CASA
 *    and UNETR; and most buckets launch during backward. */
#include <string.h>

#include "core/check.h"
#include "core/rng.h"
#include "models/pretrain_model.h"
#include "models/unetr.h"
#include "train/grad_sync.h"
#include "test.h"
#include "test_config.h"

enum { MAX_LAUNCHES = 4096 };

/* Two simulated ranks: this one's gradients are the ParamSet's, the other's are `other`. */
typedef struct {
    const float *base;           /* ps->grad */
    const float *other;          /* the other rank's gradients (NULL: no averaging) */
    size_t total;
    int launches;
    size_t offset[MAX_LAUNCHES], count[MAX_LAUNCHES];
    float *snapshot;             /* [total]: each launched range as it was at launch */
    int *covered;                /* [total]: launches that included each float */
    int waits;
    long changed_after_launch;   /* floats that backward wrote after their bucket launched */
} FakeTransport;

static void fake_launch(void *ctx, float *buf, size_t n)
{
    FakeTransport *f = ctx;
    size_t off = (size_t)(buf - f->base);
    TEST_CHECK(off + n <= f->total, "launch of [%zu, %zu) beyond %zu floats", off, off + n, f->total);
    if (f->launches < MAX_LAUNCHES) {
        f->offset[f->launches] = off;
        f->count[f->launches] = n;
    }
    f->launches++;
    memcpy(f->snapshot + off, buf, n * sizeof(float));
    for (size_t i = 0; i < n; i++) f->covered[off + i]++;
}

static void fake_wait_all(void *ctx)
{
    FakeTransport *f = ctx;
    float *buf = (float *)f->base;
    f->waits++;
    int n = f->launches < MAX_LAUNCHES ? f->launches : MAX_LAUNCHES;
    for (int l = 0; l < n; l++)
        for (size_t i = f->offset[l]; i < f->offset[l] + f->count[l]; i++) {
            if (memcmp(&buf[i], &f->snapshot[i], sizeof(float)) != 0) f->changed_after_launch++;
            if (f->other) buf[i] = (f->snapshot[i] + f->other[i]) / 2.0f;
        }
}

static FakeTransport *fake_new(const ParamSet *ps, const float *other)
{
    FakeTransport *f = xcalloc(1, sizeof *f);
    f->base = ps->grad;
    f->other = other;
    f->total = ps->total;
    f->snapshot = xcalloc(ps->total, sizeof(float));
    f->covered = xcalloc(ps->total, sizeof(int));
    return f;
}

static void fake_destroy(void *ctx)
{
    FakeTransport *f = ctx;
    free(f->snapshot);
    free(f->covered);
    free(f);
}

static GradTransport fake_transport(FakeTransport *f)
{
    return (GradTransport){fake_launch, fake_wait_all, fake_destroy, f, 1};
}

static int count_not_once(const FakeTransport *f)
{
    int bad = 0;
    for (size_t i = 0; i < f->total; i++) bad += f->covered[i] != 1;
    return bad;
}

/* Seven tensors; with 32-float alignment (PARAM_ALIGN_FLOATS) their extents are 32, 128, 32,
 * 64, 32, 64, 32. */
static const int sizes[] = {5, 100, 3, 40, 17, 64, 1};
enum { NT = sizeof sizes / sizeof sizes[0] };

static void small_set(ParamSet *ps)
{
    params_init_registry(ps);
    char name[32];
    for (int i = 0; i < NT; i++) {
        snprintf(name, sizeof name, "t%d", i);
        params_add1(ps, name, sizes[i], 0, INIT_ZEROS);
    }
    params_allocate(ps, backend_cpu(), 1);
}

static int test_layout(void)
{
    ParamSet ps;
    small_set(&ps);
    TEST_CHECK(ps.total == 384, "total %zu floats, expected 384", ps.total);
    FakeTransport *f = fake_new(&ps, NULL);
    GradSync gs;
    grad_sync_init(&gs, &ps, 100, 1, fake_transport(f));
    /* Offsets 0, 32, 160, 192, 256, 288, 352; total 384. From the back: t6+t5 = 32+64 = 96 <
     * 100, +t4 = 128 >= 100 -> [4,7) at 256; t3+t2 = 64+32 = 96, +t1 = 224 -> [1,4) at 32; t0 is
     * left -> [0,1). */
    static const int expect[][2] = {{4, 7}, {1, 4}, {0, 1}};
    static const size_t expect_off[] = {256, 32, 0}, expect_count[] = {128, 224, 32};
    TEST_CHECK(gs.nbuckets == 3, "%d buckets, expected 3", gs.nbuckets);
    for (int k = 0; k < gs.nbuckets && k < 3; k++) {
        const GradBucket *b = &gs.buckets[k];
        TEST_CHECK(b->tensors.first == expect[k][0] && b->tensors.end == expect[k][1],
                   "bucket %d tensors [%d, %d), expected [%d, %d)", k, b->tensors.first,
                   b->tensors.end, expect[k][0], expect[k][1]);
        TEST_CHECK(b->offset == expect_off[k] && b->count == expect_count[k],
                   "bucket %d floats [%zu, +%zu), expected [%zu, +%zu)", k, b->offset, b->count,
                   expect_off[k], expect_count[k]);
    }
    grad_sync_free(&gs);
    /* Any target: the buckets tile the buffer on tensor boundaries. */
    static const size_t targets[] = {0, 1, 50, 100, 200, 384, 100000};
    for (size_t t = 0; t < sizeof targets / sizeof targets[0]; t++) {
        f = fake_new(&ps, NULL);
        grad_sync_init(&gs, &ps, targets[t], 1, fake_transport(f));
        size_t next = ps.total;
        int next_tensor = ps.count;
        for (int k = 0; k < gs.nbuckets; k++) {
            const GradBucket *b = &gs.buckets[k];
            TEST_CHECK(b->tensors.end == next_tensor && b->offset + b->count == next,
                       "target %zu: bucket %d does not continue the previous one", targets[t], k);
            TEST_CHECK(b->offset == ps.info[b->tensors.first].offset,
                       "target %zu: bucket %d starts inside a tensor", targets[t], k);
            /* Minimal: without its first tensor the bucket would be below the target. */
            size_t without_first = b->count - (b->tensors.first + 1 < ps.count
                                                   ? ps.info[b->tensors.first + 1].offset - b->offset
                                                   : b->count);
            const int single = b->tensors.end - b->tensors.first == 1;
            TEST_CHECK(b->tensors.first == 0 || (b->count >= targets[t] && (single || without_first < targets[t])),
                       "target %zu: bucket %d holds %zu floats", targets[t], k, b->count);
            next = b->offset;
            next_tensor = b->tensors.first;
        }
        TEST_CHECK(next == 0 && next_tensor == 0, "target %zu: buckets stop at float %zu", targets[t], next);
        if (targets[t] == 0) TEST_CHECK(gs.nbuckets == NT, "target 0: %d buckets", gs.nbuckets);
        if (targets[t] >= ps.total) TEST_CHECK(gs.nbuckets == 1, "target %zu: %d buckets", targets[t], gs.nbuckets);
        grad_sync_free(&gs);
    }
    params_free(&ps);
    return 0;
}

/* Reports in a shuffled order, with repeats and some tensors never reported. */
static int test_launch_timing(void)
{
    ParamSet ps;
    small_set(&ps);
    float *other = test_randn(3, 1, ps.total, 1.0f);
    RngStream rng;
    rng_init(&rng, 11, 0, 0, RNG_TEST);
    for (int trial = 0; trial < 20; trial++) {
        float *mine = test_randn(3, 2 + (uint32_t)trial, ps.total, 1.0f);
        memcpy(ps.grad, mine, ps.total * sizeof(float));
        FakeTransport *f = fake_new(&ps, other);
        GradSync gs;
        grad_sync_init(&gs, &ps, (size_t)(trial % 4) * 40, 1, fake_transport(f));
        grad_sync_begin(&gs);
        TEST_CHECK(ps.grad_ready == grad_sync_report && ps.grad_ready_ctx == &gs, "hook not attached");
        ps.grads_final = 1;
        int order[3 * NT], n = 0;
        for (int i = 0; i < NT; i++) {
            if (rng_below(&rng, 4) == 0) continue;    /* never reported */
            order[n++] = i;
            if (rng_below(&rng, 3) == 0) order[n++] = i;   /* reported twice */
        }
        for (int i = n - 1; i > 0; i--) {
            int j = (int)rng_below(&rng, (uint32_t)(i + 1)), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        unsigned char done[NT] = {0};
        for (int r = 0; r < n; r++) {
            params_grads_ready(&ps, (ParamRange){order[r], order[r] + 1});
            done[order[r]] = 1;
            int complete = 0;
            for (int k = 0; k < gs.nbuckets; k++) {
                int all = 1;
                for (int t = gs.buckets[k].tensors.first; t < gs.buckets[k].tensors.end; t++) all &= done[t];
                complete += all;
            }
            TEST_CHECK(f->launches == complete, "trial %d: %d launches after %d reports, %d buckets complete",
                       trial, f->launches, r + 1, complete);
        }
        const int early = f->launches;
        grad_sync_finish(&gs);
        TEST_CHECK(gs.launched_early == early && gs.launches == gs.nbuckets,
                   "trial %d: %d early of %d launches, expected %d of %d", trial, gs.launched_early,
                   gs.launches, early, gs.nbuckets);
        TEST_CHECK(f->waits == 1, "trial %d: %d waits", trial, f->waits);
        TEST_CHECK(count_not_once(f) == 0, "trial %d: %d floats not reduced exactly once", trial,
                   count_not_once(f));
        TEST_CHECK(ps.grad_ready == NULL, "hook still attached after finish");
        int wrong = 0;
        for (size_t i = 0; i < ps.total; i++) wrong += ps.grad[i] != (mine[i] + other[i]) / 2.0f;
        TEST_CHECK(wrong == 0, "trial %d: %d floats are not the mean of the two ranks", trial, wrong);
        ps.grads_final = 0;
        grad_sync_free(&gs);
        free(mine);
    }
    free(other);
    params_free(&ps);
    return 0;
}

/* Reports outside grads_final (an earlier masked view) launch nothing. */
static int test_not_final_ignored(void)
{
    ParamSet ps;
    small_set(&ps);
    FakeTransport *f = fake_new(&ps, NULL);
    GradSync gs;
    grad_sync_init(&gs, &ps, 0, 1, fake_transport(f));
    grad_sync_begin(&gs);
    params_grads_ready(&ps, (ParamRange){0, NT});
    TEST_CHECK(f->launches == 0, "%d launches from reports outside the final pass", f->launches);
    grad_sync_finish(&gs);
    TEST_CHECK(f->launches == NT && count_not_once(f) == 0, "%d launches at finish", f->launches);
    grad_sync_free(&gs);
    params_free(&ps);
    return 0;
}

static int test_overlap_off_and_one_rank(void)
{
    ParamSet ps;
    small_set(&ps);
    float *other = test_randn(5, 1, ps.total, 1.0f), *mine = test_randn(5, 2, ps.total, 1.0f);
    memcpy(ps.grad, mine, ps.total * sizeof(float));
    FakeTransport *f = fake_new(&ps, other);
    GradSync gs;
    grad_sync_init(&gs, &ps, 0, 0, fake_transport(f));
    grad_sync_begin(&gs);
    TEST_CHECK(ps.grad_ready == NULL, "overlap off attached the hook");
    ps.grads_final = 1;
    params_grads_ready(&ps, (ParamRange){0, NT});
    TEST_CHECK(f->launches == 0, "overlap off launched during backward");
    grad_sync_finish(&gs);
    TEST_CHECK(f->launches == 1 && f->offset[0] == 0 && f->count[0] == ps.total,
               "overlap off: %d launches, first [%zu, +%zu)", f->launches, f->offset[0], f->count[0]);
    int wrong = 0;
    for (size_t i = 0; i < ps.total; i++) wrong += ps.grad[i] != (mine[i] + other[i]) / 2.0f;
    TEST_CHECK(wrong == 0, "overlap off: %d floats are not the mean", wrong);
    grad_sync_free(&gs);
    /* A transport whose launches block (ranks sharing a GPU): overlap asked for, but off. */
    memcpy(ps.grad, mine, ps.total * sizeof(float));
    f = fake_new(&ps, other);
    GradTransport blocking = fake_transport(f);
    blocking.can_overlap = 0;
    grad_sync_init(&gs, &ps, 0, 1, blocking);
    grad_sync_begin(&gs);
    TEST_CHECK(ps.grad_ready == NULL, "a blocking transport attached the hook");
    grad_sync_finish(&gs);
    TEST_CHECK(f->launches == 1 && f->count[0] == ps.total, "blocking transport: %d launches", f->launches);
    grad_sync_free(&gs);
    /* One rank: no transport, gradients untouched. */
    memcpy(ps.grad, mine, ps.total * sizeof(float));
    grad_sync_init(&gs, &ps, 0, 1, (GradTransport){NULL, NULL, NULL, NULL, 0});
    grad_sync_begin(&gs);
    TEST_CHECK(ps.grad_ready == NULL, "one rank attached the hook");
    params_grads_ready(&ps, (ParamRange){0, NT});
    grad_sync_finish(&gs);
    TEST_CHECK(memcmp(ps.grad, mine, ps.total * sizeof(float)) == 0, "one rank changed the gradients");
    grad_sync_free(&gs);
    ps.grads_final = 0;
    free(other);
    free(mine);
    params_free(&ps);
    return 0;
}

/* A model's backward with the real reports: no bucket changes after its launch. */
static void check_model_reports(const char *what, ParamSet *ps, size_t bucket_floats,
                                void (*step)(void *), void *model)
{
    FakeTransport *f = fake_new(ps, NULL);
    GradSync gs;
    grad_sync_init(&gs, ps, bucket_floats, 1, fake_transport(f));
    grad_sync_begin(&gs);
    step(model);
    grad_sync_finish(&gs);
    printf("  %s: %d tensors, %d buckets, %d launched during backward, %ld floats changed after "
           "their launch\n", what, ps->count, gs.nbuckets, gs.launched_early, f->changed_after_launch);
    TEST_CHECK(f->changed_after_launch == 0, "%s: a bucket was launched before its gradients were final", what);
    TEST_CHECK(count_not_once(f) == 0, "%s: floats not reduced exactly once", what);
    /* Every module reports: only the buckets are left to finish that backward did not touch. */
    TEST_CHECK(gs.launched_early == gs.nbuckets, "%s: %d of %d buckets launched during backward",
               what, gs.launched_early, gs.nbuckets);
    TEST_CHECK(ps->grads_final == 0, "%s: grads_final left set", what);
    grad_sync_free(&gs);
}

static const char *const tiny_pretrain[][2] = {
    {"crop", "8,8,8"}, {"patch", "4"}, {"embed_dim", "12"}, {"depth", "3"}, {"heads", "2"},
    {"mlp_dim", "16"}, {"dec_dim", "12"}, {"dec_depth", "2"}, {"dec_heads", "2"},
    {"dec_mlp_dim", "16"}, {"head_hidden", "10"}, {"head_bottleneck", "6"}, {"head_out", "8"},
    {"casa_dim", "6"}, {"batch", "2"}, {"mask_ratio", "0.5"},
};

static void pretrain_step(void *m) { pretrain_model_forward_backward(m); }

static int check_pretrain(const char *method, int use_casa)
{
    Config cfg;
    TEST_CONFIG(&cfg, tiny_pretrain);
    config_set(&cfg, "method", method, "test", 0);
    config_set(&cfg, "use_casa", use_casa ? "1" : "0", "test", 0);
    PretrainModel m;
    pretrain_model_init(&m, &cfg, backend_cpu(), cfg.batch);
    size_t vox = (size_t)m.B * 8 * 8 * 8;
    float *vol = test_randn(9, 1, vox * VIEW_COUNT, 1.0f);
    const float *views[VIEW_COUNT] = {vol, vol + vox, vol + 2 * vox, vol + 3 * vox};
    pretrain_model_set_views(&m, views);
    pretrain_model_draw_masks(&m, 1, 0);
    char what[64];
    /* Per tensor (the finest reports matter) and a few floats' worth (buckets spanning modules). */
    static const size_t buckets[] = {0, 300, 2000};
    for (size_t k = 0; k < sizeof buckets / sizeof buckets[0]; k++) {
        snprintf(what, sizeof what, "%s%s, buckets of %zu floats", method, use_casa ? "" : " (no CASA)",
                 buckets[k]);
        check_model_reports(what, &m.online, buckets[k], pretrain_step, &m);
    }
    free(vol);
    pretrain_model_free(&m);
    return 0;
}

static int test_reports_mae(void) { return check_pretrain("mae", 1); }
static int test_reports_alice(void) { return check_pretrain("alice", 1); }
static int test_reports_alice_no_casa(void) { return check_pretrain("alice", 0); }

static void unetr_step(void *m) { unetr_forward_backward(m); }

static int test_reports_unetr(void)
{
    static const char *const tiny[][2] = {
        {"crop", "32,16,16"}, {"patch", "16"}, {"embed_dim", "12"}, {"depth", "4"}, {"heads", "2"},
        {"mlp_dim", "16"}, {"feature_size", "2"}, {"num_classes", "3"}, {"batch", "1"},
    };
    Config cfg;
    TEST_CONFIG(&cfg, tiny);
    UnetrModel m;
    unetr_init(&m, &cfg, backend_cpu(), cfg.batch, 1);
    const size_t vox = (size_t)m.B * unetr_crop_voxels(&m);
    float *img = test_randn(13, 1, vox, 1.0f);
    int32_t *lab = xmalloc(vox * sizeof(int32_t));
    for (size_t i = 0; i < vox; i++) lab[i] = (int32_t)(i % 3);
    unetr_set_batch(&m, img, lab);
    static const size_t buckets[] = {0, 500};
    char what[64];
    for (size_t k = 0; k < sizeof buckets / sizeof buckets[0]; k++) {
        snprintf(what, sizeof what, "unetr, buckets of %zu floats", buckets[k]);
        check_model_reports(what, &m.ps, buckets[k], unetr_step, &m);
    }
    free(img);
    free(lab);
    unetr_free(&m);
    return 0;
}

int main(void)
{
    TEST_RUN(test_layout);
    TEST_RUN(test_launch_timing);
    TEST_RUN(test_not_final_ignored);
    TEST_RUN(test_overlap_off_and_one_rank);
    TEST_RUN(test_reports_mae);
    TEST_RUN(test_reports_alice);
    TEST_RUN(test_reports_alice_no_casa);
    TEST_RUN(test_reports_unetr);
    return test_finish();
}
