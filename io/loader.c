#include "loader.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "core/rng.h"

/* ---- memory source ---------------------------------------------------------------------- */

typedef struct {
    const Volume *volumes;
    int count;
    int *folds;
    char (*names)[32];
} MemorySource;

static const char *memory_name(void *ctx, int i) { return ((MemorySource *)ctx)->names[i]; }
static int memory_fold(void *ctx, int i) { return ((MemorySource *)ctx)->folds[i]; }
static int memory_has_label(void *ctx, int i) { return ((MemorySource *)ctx)->volumes[i].label != NULL; }

static void memory_read(void *ctx, int i, Volume *out)
{
    const Volume *v = &((MemorySource *)ctx)->volumes[i];
    size_t n = volume_voxels(v);
    *out = *v;
    out->image = xmalloc(n * sizeof *out->image);
    memcpy(out->image, v->image, n * sizeof *out->image);
    out->label = NULL;
    if (v->label) {
        out->label = xmalloc(n);
        memcpy(out->label, v->label, n);
    }
}

static void memory_close(void *ctx)
{
    MemorySource *m = ctx;
    free(m->folds);
    free(m->names);
    free(m);
}

LoaderSource loader_source_memory(const Volume *volumes, int count, const int *folds)
{
    MemorySource *m = xcalloc(1, sizeof *m);
    m->volumes = volumes;
    m->count = count;
    m->folds = xcalloc((size_t)(count > 0 ? count : 1), sizeof(int));
    m->names = xcalloc((size_t)(count > 0 ? count : 1), sizeof *m->names);
    for (int i = 0; i < count; i++) {
        m->folds[i] = folds ? folds[i] : 0;
        snprintf(m->names[i], sizeof m->names[i], "memory_%03d", i);
    }
    LoaderSource s = {m, count, memory_name, memory_fold, memory_has_label, memory_read, memory_close};
    return s;
}

/* ---- options ---------------------------------------------------------------------------- */

LoaderOptions loader_options_from_config(const Config *cfg, LoaderMode mode, int rank, int size)
{
    LoaderOptions o;
    memset(&o, 0, sizeof o);
    o.mode = mode;
    o.seed = (uint64_t)cfg->seed;
    o.rank = rank;
    o.size = size;
    o.batch = cfg->batch;
    memcpy(o.crop, cfg->crop, sizeof o.crop);
    o.window.lo = cfg->window_lo;
    o.window.hi = cfg->window_hi;
    o.prefetch = cfg->prefetch;
    o.cache_bytes = cfg->cache_mb < 0 ? -1 : (long)cfg->cache_mb << 20;
    o.inter_volume = cfg->inter_volume;
    o.key_jitter = 0.0f;
    o.matcher = matcher_find(cfg->matcher);
    if (!o.matcher) alice_die("matcher '%s' is unknown; use one of %s", cfg->matcher, MATCHER_NAMES);
    o.aug_masked = augment_params_none();
    o.aug_intact = augment_params_intact();
    o.validation_fold = cfg->fold;
    o.pos_fraction = cfg->pos_fraction;
    o.aug_finetune = augment_params_finetune();
    return o;
}

/* ---- cache ------------------------------------------------------------------------------ */

typedef enum { ENTRY_EMPTY, ENTRY_LOADING, ENTRY_READY } EntryState;

typedef struct {
    EntryState state;
    int refs;
    unsigned long last_use;
    size_t bytes;
    Volume volume;
    LabelIndex labels;   /* fine-tuning */
    void *summary;       /* matcher description (pre-training) */
} CacheEntry;

/* ---- batch ring ------------------------------------------------------------------------- */

typedef enum { SLOT_FREE, SLOT_FILLING, SLOT_READY, SLOT_HELD } SlotState;

typedef struct {
    SlotState state;
    long step;
    unsigned long generation;
    PretrainBatch pre;
    FinetuneBatch fine;
    float *scratch_image;     /* one crop, before augmentation */
    int32_t *scratch_label;
} Slot;

struct Loader {
    LoaderOptions opt;
    LoaderSource src;
    int *train, num_train;
    int *validation, num_validation;
    size_t crop_voxels;

    CacheEntry *entries;
    pthread_mutex_t cache_lock;
    pthread_cond_t cache_cond;
    size_t cache_bytes;
    unsigned long use_clock;
    long reads, hits;
    pthread_mutex_t io_lock;

    Slot *slots;
    int num_slots;
    pthread_t *threads;
    int num_threads;
    pthread_mutex_t ring_lock;
    pthread_cond_t ring_cond;
    long next_step;           /* next step a worker claims */
    unsigned long generation; /* bumped when the ring restarts at another step */
    int stop;
    int held;                 /* slot handed to the caller, -1 */
};

#define LOCK(m) ALICE_ASSERT(pthread_mutex_lock(m) == 0, "pthread_mutex_lock failed")
#define UNLOCK(m) ALICE_ASSERT(pthread_mutex_unlock(m) == 0, "pthread_mutex_unlock failed")
#define WAIT(c, m) ALICE_ASSERT(pthread_cond_wait(c, m) == 0, "pthread_cond_wait failed")
#define BROADCAST(c) ALICE_ASSERT(pthread_cond_broadcast(c) == 0, "pthread_cond_broadcast failed")

static void entry_release_memory(CacheEntry *e, const Matcher *m)
{
    volume_free(&e->volume);
    label_index_free(&e->labels);
    if (e->summary && m) m->free_description(e->summary);
    e->summary = NULL;
    e->state = ENTRY_EMPTY;
    e->bytes = 0;
}

/* Drops least recently used unreferenced cases until the cache fits. Caller holds cache_lock. */
static void cache_trim(Loader *L)
{
    if (L->opt.cache_bytes < 0) return;
    while (L->cache_bytes > (size_t)L->opt.cache_bytes) {
        int victim = -1;
        for (int i = 0; i < L->src.num_cases; i++) {
            CacheEntry *e = &L->entries[i];
            if (e->state == ENTRY_READY && e->refs == 0 &&
                (victim < 0 || e->last_use < L->entries[victim].last_use))
                victim = i;
        }
        if (victim < 0) return;
        L->cache_bytes -= L->entries[victim].bytes;
        entry_release_memory(&L->entries[victim], L->opt.matcher);
    }
}

static CacheEntry *cache_acquire(Loader *L, int i)
{
    CacheEntry *e = &L->entries[i];
    LOCK(&L->cache_lock);
    while (e->state == ENTRY_LOADING) WAIT(&L->cache_cond, &L->cache_lock);
    if (e->state == ENTRY_READY) {
        e->refs++;
        e->last_use = ++L->use_clock;
        L->hits++;
        UNLOCK(&L->cache_lock);
        return e;
    }
    e->state = ENTRY_LOADING;
    L->reads++;
    UNLOCK(&L->cache_lock);

    Volume v;
    memset(&v, 0, sizeof v);
    LOCK(&L->io_lock);
    L->src.read_case(L->src.ctx, i, &v);
    UNLOCK(&L->io_lock);
    ALICE_ASSERT(v.image && v.dim[0] > 0 && v.dim[1] > 0 && v.dim[2] > 0,
                 "case %d (%s) came back empty from the data source", i,
                 L->src.case_name(L->src.ctx, i));
    /* Per-case summaries are computed once, outside every lock. */
    LabelIndex labels = {NULL, 0};
    void *summary = NULL;
    if (L->opt.mode == LOADER_FINETUNE) label_index_build(&v, &labels);
    else summary = L->opt.matcher->describe(&v);
    size_t n = volume_voxels(&v);
    size_t bytes = n * sizeof(int16_t) + (v.label ? n : 0) + labels.count * sizeof(uint32_t);

    LOCK(&L->cache_lock);
    e->volume = v;
    e->labels = labels;
    e->summary = summary;
    e->bytes = bytes;
    e->refs = 1;
    e->last_use = ++L->use_clock;
    e->state = ENTRY_READY;
    L->cache_bytes += bytes;
    cache_trim(L);
    BROADCAST(&L->cache_cond);
    UNLOCK(&L->cache_lock);
    return e;
}

static void cache_release(Loader *L, CacheEntry *e)
{
    LOCK(&L->cache_lock);
    e->refs--;
    cache_trim(L);
    UNLOCK(&L->cache_lock);
}

/* ---- sampling --------------------------------------------------------------------------- */

/* Global sample g of an epoch-wise permutation of the training cases. */
static int case_for_sample(const Loader *L, long g, int *position)
{
    int n = L->num_train;
    long epoch = g / n;
    int *perm = xmalloc((size_t)n * sizeof *perm);
    RngStream r;
    rng_init(&r, L->opt.seed, (uint32_t)epoch, 0, RNG_SHUFFLE);
    rng_permutation(&r, perm, n);
    int pos = perm[g % n];
    free(perm);
    if (position) *position = pos;
    return L->train[pos];
}

static long global_sample(const Loader *L, long step, int j)
{
    long global_batch = (long)L->opt.batch * L->opt.size;
    return step * global_batch + (long)L->opt.rank * L->opt.batch + j;
}

static void fill_pretrain_sample(Loader *L, Slot *s, long step, int j)
{
    PretrainBatch *b = &s->pre;
    const size_t n = L->crop_voxels;
    const int *crop = L->opt.crop;
    long g = global_sample(L, step, j);
    int qpos;
    int qcase = case_for_sample(L, g, &qpos);
    int kcase = qcase;
    if (L->opt.inter_volume && L->num_train > 1) {
        RngStream pair;
        rng_init(&pair, L->opt.seed, (uint32_t)step, (uint32_t)g, RNG_PAIR);
        int other = (int)rng_below(&pair, (uint32_t)(L->num_train - 1));
        kcase = L->train[other >= qpos ? other + 1 : other];
    }
    CacheEntry *qe = cache_acquire(L, qcase);
    CacheEntry *ke = cache_acquire(L, kcase);

    RngStream r;
    rng_init(&r, L->opt.seed, (uint32_t)step, (uint32_t)g, RNG_CROP);
    int qc[3], qs[3], kc[3], ks[3];
    crop_random_body_center(&qe->volume, crop, &r, qc);
    double pq[1][3] = {{qc[0], qc[1], qc[2]}}, pk[1][3];
    if (kcase == qcase && !L->opt.inter_volume)
        memcpy(pk[0], pq[0], sizeof pk[0]);
    else
        L->opt.matcher->map_points(qe->summary, ke->summary, 1, (const double(*)[3])pq, pk);
    RngStream rk;
    rng_init(&rk, L->opt.seed, (uint32_t)step, (uint32_t)g, RNG_CROP_KEY);
    for (int a = 0; a < 3; a++) {
        double jitter = (2.0 * rng_uniform(&rk) - 1.0) * L->opt.key_jitter * crop[a];
        double c = pk[0][a] + jitter;
        /* Outside K (the anatomy is not there): the nearest voxel that is. */
        if (c < 0) c = 0;
        if (c > ke->volume.dim[a] - 1) c = ke->volume.dim[a] - 1;
        kc[a] = (int)(c + 0.5);
    }
    crop_start_for_center(qe->volume.dim, crop, qc, qs);
    crop_start_for_center(ke->volume.dim, crop, kc, ks);

    float *q = b->query + (size_t)j * n, *k = b->key + (size_t)j * n;
    float *qi = b->query_intact + (size_t)j * n, *ki = b->key_intact + (size_t)j * n;
    RngStream aug, noise;
    rng_init(&aug, L->opt.seed, (uint32_t)step, (uint32_t)g, RNG_AUGMENT);
    rng_init(&noise, L->opt.seed, (uint32_t)step, (uint32_t)g, RNG_AUG_NOISE);
    AugmentDraw masked_q, masked_k;
    augment_draw(&L->opt.aug_masked, crop, &aug, &masked_q);
    augment_draw(&L->opt.aug_masked, crop, &aug, &masked_k);
    augment_draw(&L->opt.aug_intact, crop, &aug, &b->query_aug[j]);
    augment_draw(&L->opt.aug_intact, crop, &aug, &b->key_aug[j]);

    /* Q: cut into scratch, the masked view is its (lightly) augmented copy, the intact view
     * its strongly augmented copy; then the same for K. */
    const struct { CacheEntry *e; int *start; AugmentDraw *masked, *intact; float *view, *strong; } v[2] = {
        {qe, qs, &masked_q, &b->query_aug[j], q, qi},
        {ke, ks, &masked_k, &b->key_aug[j], k, ki},
    };
    for (int i = 0; i < 2; i++) {
        crop_extract(&v[i].e->volume, L->opt.window, v[i].start, crop, s->scratch_image, NULL);
        augment_geometric(v[i].masked, crop, s->scratch_image, v[i].view, NULL, NULL);
        augment_intensity(v[i].masked, n, v[i].view, &noise);
        augment_geometric(v[i].intact, crop, s->scratch_image, v[i].strong, NULL, NULL);
        augment_intensity(v[i].intact, n, v[i].strong, &noise);
    }
    b->query_case[j] = qcase;
    b->key_case[j] = kcase;
    memcpy(b->query_center[j], qc, sizeof qc);
    memcpy(b->key_center[j], kc, sizeof kc);
    cache_release(L, qe);
    cache_release(L, ke);
}

static void fill_finetune_sample(Loader *L, Slot *s, long step, int j)
{
    FinetuneBatch *b = &s->fine;
    const size_t n = L->crop_voxels;
    const int *crop = L->opt.crop;
    long g = global_sample(L, step, j);
    int c = case_for_sample(L, g, NULL);
    CacheEntry *e = cache_acquire(L, c);
    RngStream r, aug, noise;
    rng_init(&r, L->opt.seed, (uint32_t)step, (uint32_t)g, RNG_CROP);
    int center[3], start[3];
    b->positive[j] = crop_posneg_center(&e->volume, &e->labels, L->opt.window, L->opt.pos_fraction, &r, center);
    crop_start_for_center(e->volume.dim, crop, center, start);
    crop_extract(&e->volume, L->opt.window, start, crop, s->scratch_image, s->scratch_label);
    cache_release(L, e);
    rng_init(&aug, L->opt.seed, (uint32_t)step, (uint32_t)g, RNG_AUGMENT);
    rng_init(&noise, L->opt.seed, (uint32_t)step, (uint32_t)g, RNG_AUG_NOISE);
    AugmentDraw d;
    augment_draw(&L->opt.aug_finetune, crop, &aug, &d);
    float *img = b->image + (size_t)j * n;
    augment_geometric(&d, crop, s->scratch_image, img, s->scratch_label, b->label + (size_t)j * n);
    augment_intensity(&d, n, img, &noise);
    b->case_index[j] = c;
}

static void fill_slot(Loader *L, Slot *s, long step)
{
    for (int j = 0; j < L->opt.batch; j++) {
        if (L->opt.mode == LOADER_PRETRAIN) fill_pretrain_sample(L, s, step, j);
        else fill_finetune_sample(L, s, step, j);
    }
}

/* ---- prefetch threads ------------------------------------------------------------------- */

static void *prefetch_main(void *arg)
{
    Loader *L = arg;
    LOCK(&L->ring_lock);
    for (;;) {
        int free_slot = -1;
        while (!L->stop) {
            for (int i = 0; i < L->num_slots && free_slot < 0; i++)
                if (L->slots[i].state == SLOT_FREE) free_slot = i;
            if (free_slot >= 0) break;
            WAIT(&L->ring_cond, &L->ring_lock);
        }
        if (L->stop) break;
        Slot *s = &L->slots[free_slot];
        long step = L->next_step++;
        unsigned long generation = L->generation;
        s->state = SLOT_FILLING;
        s->step = step;
        s->generation = generation;
        UNLOCK(&L->ring_lock);
        fill_slot(L, s, step);
        LOCK(&L->ring_lock);
        /* A batch of an abandoned sequence (the caller jumped) is not wanted. */
        s->state = s->generation == L->generation ? SLOT_READY : SLOT_FREE;
        BROADCAST(&L->ring_cond);
    }
    UNLOCK(&L->ring_lock);
    return NULL;
}

static Slot *next_slot(Loader *L, long step, LoaderMode mode)
{
    ALICE_ASSERT(L->opt.mode == mode, "loader made for %s asked for a %s batch",
                 L->opt.mode == LOADER_PRETRAIN ? "pre-training" : "fine-tuning",
                 mode == LOADER_PRETRAIN ? "pre-training" : "fine-tuning");
    ALICE_ASSERT(step >= 0, "negative step %ld", step);
    if (L->num_threads == 0) {
        fill_slot(L, &L->slots[0], step);
        return &L->slots[0];
    }
    LOCK(&L->ring_lock);
    if (L->held >= 0) L->slots[L->held].state = SLOT_FREE;
    L->held = -1;
    int found = -1;
    for (int i = 0; i < L->num_slots; i++)
        if (L->slots[i].state != SLOT_FREE && L->slots[i].generation == L->generation &&
            L->slots[i].step == step)
            found = i;
    if (found < 0 && step != L->next_step) {
        /* Not the sequence the threads were preparing: restart it at `step`. */
        L->generation++;
        for (int i = 0; i < L->num_slots; i++)
            if (L->slots[i].state == SLOT_READY) L->slots[i].state = SLOT_FREE;
        L->next_step = step;
    }
    BROADCAST(&L->ring_cond);
    for (;;) {
        found = -1;
        for (int i = 0; i < L->num_slots; i++)
            if (L->slots[i].state == SLOT_READY && L->slots[i].generation == L->generation &&
                L->slots[i].step == step)
                found = i;
        if (found >= 0) break;
        WAIT(&L->ring_cond, &L->ring_lock);
    }
    L->slots[found].state = SLOT_HELD;
    L->held = found;
    UNLOCK(&L->ring_lock);
    return &L->slots[found];
}

void loader_next_pretrain_batch(Loader *L, long step, PretrainBatch *out)
{
    *out = next_slot(L, step, LOADER_PRETRAIN)->pre;
}

void loader_next_finetune_batch(Loader *L, long step, FinetuneBatch *out)
{
    *out = next_slot(L, step, LOADER_FINETUNE)->fine;
}

/* ---- create / destroy ------------------------------------------------------------------- */

static void *host_alloc(const Loader *L, size_t bytes)
{
    void *p = L->opt.host_alloc ? L->opt.host_alloc(bytes) : malloc(bytes);
    ALICE_ASSERT(p, "could not allocate %zu bytes of batch buffer", bytes);
    return p;
}

static void host_free(const Loader *L, void *p)
{
    if (!p) return;
    if (L->opt.host_free) L->opt.host_free(p);
    else free(p);
}

static void slot_alloc(Loader *L, Slot *s)
{
    const int B = L->opt.batch;
    const size_t floats = (size_t)B * L->crop_voxels * sizeof(float);
    memset(s, 0, sizeof *s);
    s->state = SLOT_FREE;
    s->step = -1;
    s->scratch_image = xmalloc(L->crop_voxels * sizeof(float));
    s->scratch_label = xmalloc(L->crop_voxels * sizeof(int32_t));
    if (L->opt.mode == LOADER_PRETRAIN) {
        PretrainBatch *b = &s->pre;
        b->batch = B;
        memcpy(b->crop, L->opt.crop, sizeof b->crop);
        b->query = host_alloc(L, floats);
        b->key = host_alloc(L, floats);
        b->query_intact = host_alloc(L, floats);
        b->key_intact = host_alloc(L, floats);
        b->query_case = xcalloc((size_t)B, sizeof(int));
        b->key_case = xcalloc((size_t)B, sizeof(int));
        b->query_center = xcalloc((size_t)B, sizeof *b->query_center);
        b->key_center = xcalloc((size_t)B, sizeof *b->key_center);
        b->query_aug = xcalloc((size_t)B, sizeof(AugmentDraw));
        b->key_aug = xcalloc((size_t)B, sizeof(AugmentDraw));
    } else {
        FinetuneBatch *b = &s->fine;
        b->batch = B;
        memcpy(b->crop, L->opt.crop, sizeof b->crop);
        b->image = host_alloc(L, floats);
        b->label = host_alloc(L, (size_t)B * L->crop_voxels * sizeof(int32_t));
        b->case_index = xcalloc((size_t)B, sizeof(int));
        b->positive = xcalloc((size_t)B, sizeof(int));
    }
}

static void slot_free(Loader *L, Slot *s)
{
    free(s->scratch_image);
    free(s->scratch_label);
    PretrainBatch *p = &s->pre;
    host_free(L, p->query); host_free(L, p->key);
    host_free(L, p->query_intact); host_free(L, p->key_intact);
    free(p->query_case); free(p->key_case); free(p->query_center); free(p->key_center);
    free(p->query_aug); free(p->key_aug);
    FinetuneBatch *f = &s->fine;
    host_free(L, f->image); host_free(L, f->label);
    free(f->case_index); free(f->positive);
}

Loader *loader_create(const LoaderOptions *opt, LoaderSource source)
{
    Loader *L = xcalloc(1, sizeof *L);
    L->opt = *opt;
    L->src = source;
    ALICE_ASSERT(opt->batch > 0 && opt->size > 0 && opt->rank >= 0 && opt->rank < opt->size,
                 "loader: batch %d, rank %d of %d", opt->batch, opt->rank, opt->size);
    for (int a = 0; a < 3; a++)
        if (opt->crop[a] <= 0) alice_die("crop size %d,%d,%d: every side must be positive",
                                         opt->crop[0], opt->crop[1], opt->crop[2]);
    if (!(opt->window.hi > opt->window.lo))
        alice_die("intensity window [%g, %g] is empty: window_hi must exceed window_lo",
                  (double)opt->window.lo, (double)opt->window.hi);
    if (opt->mode == LOADER_PRETRAIN && !opt->matcher)
        alice_die("pre-training loader needs a matcher (config key matcher = %s)", MATCHER_NAMES);
    if (source.num_cases <= 0)
        alice_die("the data source has no cases: pack some volumes with `alice pack` first");
    L->crop_voxels = (size_t)opt->crop[0] * (size_t)opt->crop[1] * (size_t)opt->crop[2];

    int n = source.num_cases;
    L->train = xmalloc((size_t)n * sizeof(int));
    L->validation = xmalloc((size_t)n * sizeof(int));
    for (int i = 0; i < n; i++) {
        if (opt->mode == LOADER_PRETRAIN) { L->train[L->num_train++] = i; continue; }
        if (!source.case_has_label(source.ctx, i)) continue;
        if (source.case_fold(source.ctx, i) == opt->validation_fold) L->validation[L->num_validation++] = i;
        else L->train[L->num_train++] = i;
    }
    if (L->num_train == 0)
        alice_die("fine-tuning needs labelled cases outside validation fold %d, and the data set "
                  "has none: pack labels with the images, or set fold=-1", opt->validation_fold);

    L->entries = xcalloc((size_t)n, sizeof *L->entries);
    ALICE_ASSERT(pthread_mutex_init(&L->cache_lock, NULL) == 0, "pthread_mutex_init failed");
    ALICE_ASSERT(pthread_mutex_init(&L->io_lock, NULL) == 0, "pthread_mutex_init failed");
    ALICE_ASSERT(pthread_mutex_init(&L->ring_lock, NULL) == 0, "pthread_mutex_init failed");
    ALICE_ASSERT(pthread_cond_init(&L->cache_cond, NULL) == 0, "pthread_cond_init failed");
    ALICE_ASSERT(pthread_cond_init(&L->ring_cond, NULL) == 0, "pthread_cond_init failed");

    L->num_threads = opt->prefetch > 0 ? opt->prefetch : 0;
    L->num_slots = L->num_threads + 1;
    L->slots = xcalloc((size_t)L->num_slots, sizeof *L->slots);
    for (int i = 0; i < L->num_slots; i++) slot_alloc(L, &L->slots[i]);
    L->held = -1;
    L->next_step = 0;
    L->threads = xcalloc((size_t)(L->num_threads > 0 ? L->num_threads : 1), sizeof(pthread_t));
    for (int i = 0; i < L->num_threads; i++)
        ALICE_ASSERT(pthread_create(&L->threads[i], NULL, prefetch_main, L) == 0,
                     "could not start loader prefetch thread %d", i);
    return L;
}

void loader_destroy(Loader *L)
{
    if (!L) return;
    LOCK(&L->ring_lock);
    L->stop = 1;
    BROADCAST(&L->ring_cond);
    UNLOCK(&L->ring_lock);
    for (int i = 0; i < L->num_threads; i++)
        ALICE_ASSERT(pthread_join(L->threads[i], NULL) == 0, "pthread_join failed");
    for (int i = 0; i < L->num_slots; i++) slot_free(L, &L->slots[i]);
    for (int i = 0; i < L->src.num_cases; i++)
        if (L->entries[i].state == ENTRY_READY) entry_release_memory(&L->entries[i], L->opt.matcher);
    pthread_mutex_destroy(&L->cache_lock);
    pthread_mutex_destroy(&L->io_lock);
    pthread_mutex_destroy(&L->ring_lock);
    pthread_cond_destroy(&L->cache_cond);
    pthread_cond_destroy(&L->ring_cond);
    if (L->src.close) L->src.close(L->src.ctx);
    free(L->slots);
    free(L->threads);
    free(L->entries);
    free(L->train);
    free(L->validation);
    free(L);
}

/* ---- whole cases and bookkeeping -------------------------------------------------------- */

void loader_read_full_case(Loader *L, int case_index, WindowedCase *out)
{
    ALICE_ASSERT(case_index >= 0 && case_index < L->src.num_cases, "case %d of %d", case_index,
                 L->src.num_cases);
    CacheEntry *e = cache_acquire(L, case_index);
    const Volume *v = &e->volume;
    size_t n = volume_voxels(v);
    memset(out, 0, sizeof *out);
    memcpy(out->dim, v->dim, sizeof out->dim);
    memcpy(out->spacing, v->spacing, sizeof out->spacing);
    memcpy(out->affine, v->affine, sizeof out->affine);
    out->image = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) out->image[i] = window_apply(L->opt.window, v->image[i]);
    if (v->label) {
        out->label = xmalloc(n * sizeof(int32_t));
        for (size_t i = 0; i < n; i++) out->label[i] = v->label[i];
    }
    cache_release(L, e);
}

void windowed_case_free(WindowedCase *c)
{
    free(c->image);
    free(c->label);
    c->image = NULL;
    c->label = NULL;
}

int loader_num_cases(const Loader *L) { return L->src.num_cases; }
const char *loader_case_name(const Loader *L, int i) { return L->src.case_name(L->src.ctx, i); }

int loader_training_cases(const Loader *L, const int **cases)
{
    *cases = L->train;
    return L->num_train;
}

int loader_validation_cases(const Loader *L, const int **cases)
{
    *cases = L->validation;
    return L->num_validation;
}

LoaderCacheStats loader_cache_stats(Loader *L)
{
    LOCK(&L->cache_lock);
    LoaderCacheStats s = {L->reads, L->hits, L->cache_bytes};
    UNLOCK(&L->cache_lock);
    return s;
}
