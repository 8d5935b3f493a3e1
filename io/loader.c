#include "loader.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/sysmem.h"
#include "data/crop_recipe.h"
#include "gpu_volume_cache.h"
#include "ops/gpu_data.h"

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

static void memory_read(void *ctx, int i, Volume *out, VolumeAllocFn alloc)
{
    const Volume *v = &((MemorySource *)ctx)->volumes[i];
    size_t n = volume_voxels(v);
    *out = *v;
    out->image = volume_alloc_with(alloc, n * sizeof *out->image);
    memcpy(out->image, v->image, n * sizeof *out->image);
    out->label = NULL;
    if (v->label) {
        out->label = volume_alloc_with(alloc, n);
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

long loader_cache_budget(int cache_mb, int local_size)
{
    if (cache_mb >= 0) return (long)cache_mb << 20;
    const double share = LOADER_AUTO_CACHE_SHARE * host_available_bytes() /
                         (local_size > 0 ? local_size : 1);
    return share < 1048576.0 ? 1048576L : (long)share;
}

LoaderOptions loader_options_from_config(const Config *cfg, LoaderMode mode, int rank, int size,
                                         int local_size)
{
    LoaderOptions o;
    memset(&o, 0, sizeof o);
    o.mode = mode;
    o.seed = (uint64_t)cfg->seed;
    o.rank = rank;
    o.size = size;
    o.batch = cfg->batch;
    o.accum = cfg->accum_steps;
    memcpy(o.crop, cfg->crop, sizeof o.crop);
    o.window.lo = cfg->window_lo;
    o.window.hi = cfg->window_hi;
    o.prefetch = cfg->prefetch;
    o.cache_bytes = loader_cache_budget(cfg->cache_mb, local_size);
    if (cfg->cache_mb < 0)
        log_info("loader: volume cache up to %.0f MiB per rank (cache_mb = -1: %.0f%% of the "
                 "host memory available, shared by %d rank(s) on this node)",
                 o.cache_bytes / 1048576.0, LOADER_AUTO_CACHE_SHARE * 100.0,
                 local_size > 0 ? local_size : 1);
    o.inter_volume = cfg->inter_volume;
    o.key_jitter = cfg->key_jitter;
    o.key_crop_pad = !strcmp(cfg->key_crop, "pad");
    /* MAE reads no key crop: redrawing for it would only bias the query crops */
    o.pair_redraws = strcmp(cfg->method, "mae") ? cfg->pair_redraws : 0;
    o.matcher = matcher_find(cfg->matcher);
    if (!o.matcher) alice_die("matcher '%s' is unknown; use one of %s", cfg->matcher, MATCHER_NAMES);
    o.aug_masked = augment_params_none();
    o.aug_intact = strcmp(cfg->intact_aug, "none") ? augment_params_intact()
                                                   : augment_params_none();
    if (!cfg->use_casa) {
        /* Without CASA, l_st pairs the masked view's tokens with the intact view's tokens at the
         * same grid positions (docs/MODEL.md): a flipped or turned intact view would pair each
         * token with another place of the crop. Intensity augmentation stays. */
        o.aug_intact.p_flip = 0.0f;
        o.aug_intact.p_rot90 = 0.0f;
    }
    o.validation_fold = cfg->fold;
    crop_sampler_init(&o.sampler, cfg->crop_sampler, cfg->pos_fraction, cfg->class_ratios, cfg->num_classes);
    o.crops_per_case = mode == LOADER_FINETUNE ? cfg->crops_per_case : 1;
    o.aug_finetune = augment_params_finetune();
    o.num_classes = mode == LOADER_FINETUNE ? cfg->num_classes : 0;
    if (!strcmp(cfg->data_device, "gpu")) {
        if (strcmp(cfg->device, "cuda") != 0)
            alice_die("data_device = gpu makes crops with a CUDA kernel, but device = %s: set "
                      "device = cuda (on a GPU build and machine), or data_device = cpu",
                      cfg->device);
        o.data_on_gpu = 1;
        o.gpu_cache_bytes = (long)cfg->gpu_cache_mb << 20;
    }
    if (!strcmp(cfg->device, "cuda")) {
        /* Pinned batch buffers: the host-to-device copy of a batch is then a DMA. */
        o.host_alloc = gpu_pinned_alloc;
        o.host_free = gpu_pinned_free;
        /* ... and, with crops made on the host, double-buffered in GPU memory. */
        o.upload_batches = !o.data_on_gpu;
    }
    return o;
}

/* ---- cache ------------------------------------------------------------------------------ */

typedef enum { ENTRY_EMPTY, ENTRY_LOADING, ENTRY_READY } EntryState;

typedef struct CacheEntry {
    EntryState state;
    int refs;
    unsigned long last_use;
    size_t bytes;
    Volume volume;
    LabelIndex labels;   /* fine-tuning */
    void *summary;       /* matcher description (pre-training) */
    int pinned;          /* volume image/label in pinned memory (data_on_gpu) */
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
    /* data_on_gpu: one recipe per view and sample (order below), the cache entry whose
     * volume it cuts (referenced until the batch is rendered), and whether the thread already
     * cut it on the host (a volume beyond the GPU budget). */
    CropRecipe *recipes;
    struct CacheEntry **recipe_entry;
    unsigned char *on_host;
    int num_recipes;
} Slot;

/* The buffers of a batch, in recipe order: sample j's buffer v is recipe j * PRE_VIEW_SLOTS + v
 * (pre-training) or j * FINE_VIEW_SLOTS + v (fine-tuning; its label rides with FINE_IMAGE). */
enum { PRE_QUERY, PRE_KEY, PRE_QUERY_INTACT, PRE_KEY_INTACT, PRE_VIEW_SLOTS };
enum { FINE_IMAGE, FINE_VIEW_SLOTS };

/* upload_batches: one of the two device batch buffers. */
typedef struct {
    float *view[PRE_VIEW_SLOTS];   /* pre-training views, or view[FINE_IMAGE] */
    int32_t *label;
    GpuEvent *ready;               /* upload stream: the batch's bytes are there */
    GpuEvent *consumed;            /* compute stream: the step that read it is done with it */
    const Slot *slot;              /* host slot uploaded from (NULL: none) ... */
    long step;                     /* ... holding this step of this ring generation */
    unsigned long generation;
} DeviceBatch;

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

    /* data_on_gpu: used only by the thread that asks for batches */
    GpuVolumeCache *gpu_cache;
    float *dev_view[PRE_VIEW_SLOTS];   /* pre-training views, or dev_view[FINE_IMAGE] */
    int32_t *dev_label;
    CropRecipe *render_list;
    long host_crops;
    unsigned char *upload_ref;   /* case holds a host reference while its upload may run */

    /* Pinned host volumes dropped from the cache, freed by fill_slot outside the lock:
     * cudaFreeHost may wait for the device, which the rendering thread must never do. */
    void **graveyard;
    int graveyard_count, graveyard_cap;

    /* upload_batches: used only by the thread that asks for batches */
    DeviceBatch dev_batch[2];
    int dev_current;             /* buffer handed out last, -1 */
    long batches_ahead;
};

#define LOCK(m) ALICE_ASSERT(pthread_mutex_lock(m) == 0, "pthread_mutex_lock failed")
#define UNLOCK(m) ALICE_ASSERT(pthread_mutex_unlock(m) == 0, "pthread_mutex_unlock failed")
#define WAIT(c, m) ALICE_ASSERT(pthread_cond_wait(c, m) == 0, "pthread_cond_wait failed")
#define BROADCAST(c) ALICE_ASSERT(pthread_cond_broadcast(c) == 0, "pthread_cond_broadcast failed")

/* Caller holds cache_lock (or is the only thread left). */
static void graveyard_add(Loader *L, void *pinned)
{
    if (!pinned) return;
    if (L->graveyard_count == L->graveyard_cap) {
        L->graveyard_cap = L->graveyard_cap ? 2 * L->graveyard_cap : 16;
        void **grown = realloc(L->graveyard, (size_t)L->graveyard_cap * sizeof *grown);
        ALICE_ASSERT(grown, "out of memory growing the loader's list of %d pinned buffers",
                     L->graveyard_cap);
        L->graveyard = grown;
    }
    L->graveyard[L->graveyard_count++] = pinned;
}

/* Frees the pinned volumes dropped so far; called outside every lock. */
static void graveyard_flush(Loader *L)
{
    for (;;) {
        LOCK(&L->cache_lock);
        void *p = L->graveyard_count ? L->graveyard[--L->graveyard_count] : NULL;
        UNLOCK(&L->cache_lock);
        if (!p) return;
        gpu_pinned_free(p);
    }
}

static void entry_release_memory(Loader *L, CacheEntry *e)
{
    const Matcher *m = L->opt.matcher;
    if (e->pinned) {
        graveyard_add(L, e->volume.image);
        graveyard_add(L, e->volume.label);
        e->volume.image = NULL;
        e->volume.label = NULL;
        e->pinned = 0;
    }
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
        entry_release_memory(L, &L->entries[victim]);
    }
}

/* Labels index the classes of the loss: one out of range would be a silent wrong gradient on
 * the CPU and an out-of-bounds read on the GPU, so each case is checked once, when read. */
static void check_label_range(const Loader *L, int i, const Volume *v)
{
    if (!v->label || L->opt.num_classes <= 0) return;
    uint8_t top = 0;
    size_t n = volume_voxels(v);
    for (size_t k = 0; k < n; k++) top = v->label[k] > top ? v->label[k] : top;
    if (top >= L->opt.num_classes)
        alice_die("case '%s': label %d is outside 0..%d; set num_classes to the data set's label "
                  "count (14 for FLARE/BTCV with background)", L->src.case_name(L->src.ctx, i),
                  top, L->opt.num_classes - 1);
}

/* data_on_gpu: cases are read straight into pinned memory (in the thread that reads them), so
 * a volume's upload to the GPU is a DMA the rendering thread only queues, with no copy. */
static void *pinned_volume_alloc(size_t bytes)
{
    void *p = gpu_pinned_alloc(bytes);
    if (!p)
        alice_die("no pinned host memory for a %.0f MiB volume buffer; lower cache_mb (the host "
                  "volume cache is pinned with data_device = gpu)", bytes / 1048576.0);
    return p;
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
    L->src.read_case(L->src.ctx, i, &v, L->opt.data_on_gpu ? pinned_volume_alloc : NULL);
    UNLOCK(&L->io_lock);
    ALICE_ASSERT(v.image && v.dim[0] > 0 && v.dim[1] > 0 && v.dim[2] > 0,
                 "case %d (%s) came back empty from the data source", i,
                 L->src.case_name(L->src.ctx, i));
    if (L->opt.mode == LOADER_FINETUNE) check_label_range(L, i, &v);
    /* Per-case summaries are computed once, outside every lock. */
    LabelIndex labels = {0};
    void *summary = NULL;
    if (L->opt.mode == LOADER_FINETUNE) crop_sampler_index_build(&L->opt.sampler, &v, L->opt.window, &labels);
    else summary = L->opt.matcher->describe(&v);
    size_t n = volume_voxels(&v);
    size_t bytes = n * sizeof(int16_t) + (v.label ? n : 0) + labels.count * sizeof(uint32_t);

    LOCK(&L->cache_lock);
    e->volume = v;
    e->labels = labels;
    e->summary = summary;
    e->bytes = bytes;
    e->pinned = L->opt.data_on_gpu;
    e->refs = 1;
    e->last_use = ++L->use_clock;
    e->state = ENTRY_READY;
    L->cache_bytes += bytes;
    cache_trim(L);
    BROADCAST(&L->cache_cond);
    UNLOCK(&L->cache_lock);
    return e;
}

/* One more reference on an entry the caller already holds. */
static void cache_ref(Loader *L, CacheEntry *e)
{
    LOCK(&L->cache_lock);
    e->refs++;
    UNLOCK(&L->cache_lock);
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

/* Micro-batches per optimiser step (a zeroed option, as tests build them: 1). */
static int loader_accum(const Loader *L) { return L->opt.accum > 1 ? L->opt.accum : 1; }

/* The optimiser step of micro-step u: what the sample streams are keyed by. */
static long optimiser_step(const Loader *L, long u) { return u / loader_accum(L); }

long loader_global_sample(const Loader *L, long u, int j)
{
    const int accum = loader_accum(L);
    const long s = u / accum, m = u % accum;
    const long global_batch = (long)L->opt.batch * L->opt.size * accum;
    return s * global_batch + (m * L->opt.size + L->opt.rank) * L->opt.batch + j;
}

/* Recipe r of slot s: view of entry e at start with draw d. Keeps a reference to e for the
 * renderer; cuts on the host now when the volume can never fit the GPU budget. Returns the
 * noise words the view uses. */
static uint32_t add_recipe(Loader *L, Slot *s, int r, CacheEntry *e, const int start[3],
                           const AugmentDraw *d, const RngStream *noise, uint32_t offset,
                           float *host_out, int32_t *host_label)
{
    CropRecipe *rc = &s->recipes[r];
    crop_recipe_make(rc, &e->volume, L->opt.window, start, L->opt.crop, d, noise, offset,
                     host_out, host_label);
    cache_ref(L, e);   /* one reference per recipe: slot_release_recipes drops one per recipe */
    s->recipe_entry[r] = e;
    s->on_host[r] = gpu_volume_bytes(&e->volume, host_label != NULL) > (size_t)L->opt.gpu_cache_bytes;
    if (s->on_host[r]) crop_recipe_render_cpu(rc);
    return crop_recipe_noise_words(rc);
}

static void fill_pretrain_sample(Loader *L, Slot *s, long step, int j)
{
    PretrainBatch *b = &s->pre;
    const size_t n = L->crop_voxels;
    const int *crop = L->opt.crop;
    long g = loader_global_sample(L, step, j);
    const uint32_t key_step = (uint32_t)optimiser_step(L, step);
    int qpos;
    int qcase = case_for_sample(L, g, &qpos);
    int kcase = qcase;
    if (L->opt.inter_volume && L->num_train > 1) {
        RngStream pair;
        rng_init(&pair, L->opt.seed, key_step, (uint32_t)g, RNG_PAIR);
        int other = (int)rng_below(&pair, (uint32_t)(L->num_train - 1));
        kcase = L->train[other >= qpos ? other + 1 : other];
    }
    CacheEntry *qe = cache_acquire(L, qcase);
    CacheEntry *ke = cache_acquire(L, kcase);

    RngStream r;
    rng_init(&r, L->opt.seed, key_step, (uint32_t)g, RNG_CROP);
    int qc[3], qs[3], kc[3], ks[3];
    double pk[1][3];
    int redrawn = 0, outside;
    /* pair_redraws: a query centre whose anatomy the key volume does not show is drawn again
     * from the same stream (the released code redraws poorly matched pairs) */
    for (;;) {
        crop_random_body_center(&qe->volume, crop, &r, qc);
        double pq[1][3] = {{qc[0], qc[1], qc[2]}};
        if (kcase == qcase && !L->opt.inter_volume)
            memcpy(pk[0], pq[0], sizeof pk[0]);
        else
            L->opt.matcher->map_points(qe->summary, ke->summary, 1, (const double(*)[3])pq, pk);
        outside = 0;
        for (int a = 0; a < 3; a++)
            outside |= pk[0][a] < 0.0 || pk[0][a] > ke->volume.dim[a] - 1;
        if (!outside || redrawn == L->opt.pair_redraws) break;
        redrawn++;
    }
    RngStream rk;
    rng_init(&rk, L->opt.seed, key_step, (uint32_t)g, RNG_CROP_KEY);
    for (int a = 0; a < 3; a++) {
        double jitter = (2.0 * rng_uniform(&rk) - 1.0) * L->opt.key_jitter * crop[a];
        double c = pk[0][a] + jitter;
        /* Outside K (the anatomy is not there): the nearest voxel that is. */
        if (c < 0) c = 0;
        if (c > ke->volume.dim[a] - 1) c = ke->volume.dim[a] - 1;
        kc[a] = (int)(c + 0.5);
    }
    crop_start_for_center(qe->volume.dim, crop, qc, qs);
    /* pad: the matched point where Q's centre lies in Q's crop (crop / 2, unless Q's crop was
     * moved to fit its volume or padded around a smaller one), so K shows the matched anatomy
     * where Q shows its own: with inter_volume = 0 and no jitter K is Q's crop, voxel for voxel */
    if (L->opt.key_crop_pad)
        for (int a = 0; a < 3; a++) ks[a] = kc[a] - (qc[a] - qs[a]);
    else
        crop_start_for_center(ke->volume.dim, crop, kc, ks);

    float *q = b->query + (size_t)j * n, *k = b->key + (size_t)j * n;
    float *qi = b->query_intact + (size_t)j * n, *ki = b->key_intact + (size_t)j * n;
    RngStream aug, noise;
    rng_init(&aug, L->opt.seed, key_step, (uint32_t)g, RNG_AUGMENT);
    rng_init(&noise, L->opt.seed, key_step, (uint32_t)g, RNG_AUG_NOISE);
    AugmentDraw masked_q, masked_k;
    augment_draw(&L->opt.aug_masked, crop, &aug, &masked_q);
    augment_draw(&L->opt.aug_masked, crop, &aug, &masked_k);
    augment_draw(&L->opt.aug_intact, crop, &aug, &b->query_aug[j]);
    augment_draw(&L->opt.aug_intact, crop, &aug, &b->key_aug[j]);

    /* Q: cut into scratch, the masked view is its copy as cut (aug_masked draws nothing by
     * default), the intact view its strongly augmented copy; then the same for K. */
    const struct { CacheEntry *e; int *start; AugmentDraw *masked, *intact; float *view, *strong; } v[2] = {
        {qe, qs, &masked_q, &b->query_aug[j], q, qi},
        {ke, ks, &masked_k, &b->key_aug[j], k, ki},
    };
    if (L->opt.data_on_gpu) {
        /* The same crops as recipes, noise words in the order the CPU path draws them. */
        const int slot_of[2][2] = {{PRE_QUERY, PRE_QUERY_INTACT}, {PRE_KEY, PRE_KEY_INTACT}};
        uint32_t offset = 0;
        for (int i = 0; i < 2; i++) {
            const AugmentDraw *draw[2] = {v[i].masked, v[i].intact};
            float *host_out[2] = {v[i].view, v[i].strong};
            for (int w = 0; w < 2; w++) {
                int r = j * PRE_VIEW_SLOTS + slot_of[i][w];
                offset += add_recipe(L, s, r, v[i].e, v[i].start, draw[w], &noise, offset, host_out[w], NULL);
            }
        }
    } else for (int i = 0; i < 2; i++) {
        crop_extract(&v[i].e->volume, L->opt.window, v[i].start, crop, s->scratch_image, NULL);
        augment_geometric(v[i].masked, crop, s->scratch_image, v[i].view, NULL, NULL);
        augment_intensity(v[i].masked, n, v[i].view, &noise);
        augment_geometric(v[i].intact, crop, s->scratch_image, v[i].strong, NULL, NULL);
        augment_intensity(v[i].intact, n, v[i].strong, &noise);
    }
    b->query_case[j] = qcase;
    b->key_case[j] = kcase;
    b->pair_redrawn[j] = redrawn;
    b->key_outside[j] = outside;
    memcpy(b->query_center[j], qc, sizeof qc);
    memcpy(b->key_center[j], kc, sizeof kc);
    cache_release(L, qe);   /* recipes hold their own references until rendered */
    cache_release(L, ke);
}

static void fill_finetune_sample(Loader *L, Slot *s, long step, int j)
{
    FinetuneBatch *b = &s->fine;
    const size_t n = L->crop_voxels;
    const int *crop = L->opt.crop;
    long g = loader_global_sample(L, step, j);
    const uint32_t key_step = (uint32_t)optimiser_step(L, step);
    int c = case_for_sample(L, g / L->opt.crops_per_case, NULL);
    CacheEntry *e = cache_acquire(L, c);
    RngStream r, aug, noise;
    rng_init(&r, L->opt.seed, key_step, (uint32_t)g, RNG_CROP);
    int center[3], start[3];
    b->positive[j] = crop_sampler_center(&L->opt.sampler, &e->volume, &e->labels, L->opt.window, &r, center);
    crop_start_for_center(e->volume.dim, crop, center, start);
    rng_init(&aug, L->opt.seed, key_step, (uint32_t)g, RNG_AUGMENT);
    rng_init(&noise, L->opt.seed, key_step, (uint32_t)g, RNG_AUG_NOISE);
    AugmentDraw d;
    augment_draw(&L->opt.aug_finetune, crop, &aug, &d);
    float *img = b->image + (size_t)j * n;
    int32_t *lab = b->label + (size_t)j * n;
    b->case_index[j] = c;
    if (L->opt.data_on_gpu) {   /* the recipe holds its own reference until rendered */
        add_recipe(L, s, j * FINE_VIEW_SLOTS + FINE_IMAGE, e, start, &d, &noise, 0, img, lab);
        cache_release(L, e);
        return;
    }
    crop_extract(&e->volume, L->opt.window, start, crop, s->scratch_image, s->scratch_label);
    cache_release(L, e);
    augment_geometric(&d, crop, s->scratch_image, img, s->scratch_label, lab);
    augment_intensity(&d, n, img, &noise);
}

/* Drops the volume references of a slot's recipes (rendered, or abandoned by a jump). */
static void slot_release_recipes(Loader *L, Slot *s)
{
    for (int r = 0; r < s->num_recipes; r++)
        if (s->recipe_entry[r]) {
            cache_release(L, s->recipe_entry[r]);
            s->recipe_entry[r] = NULL;
        }
}

static void fill_slot(Loader *L, Slot *s, long step)
{
    slot_release_recipes(L, s);
    for (int j = 0; j < L->opt.batch; j++) {
        if (L->opt.mode == LOADER_PRETRAIN) fill_pretrain_sample(L, s, step, j);
        else fill_finetune_sample(L, s, step, j);
    }
    graveyard_flush(L);
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

/* ---- rendering on the GPU (data_on_gpu) ------------------------------------------------- */

/* GPU memory the volume cache leaves to everything else (cuDNN/cuBLAS workspaces that grow
 * later, fragmentation): a budget beyond what is free minus this is lowered, not an OOM. */
#define GPU_CACHE_RESERVE_BYTES ((size_t)1 << 30)

/* Batch buffers, then the volume budget against the memory still free: the first batch comes
 * after the model has allocated its parameters and activation arena. */
static void gpu_buffers_alloc(Loader *L)
{
    const size_t bytes = (size_t)L->opt.batch * L->crop_voxels * sizeof(float);
    const int views = L->opt.mode == LOADER_PRETRAIN ? PRE_VIEW_SLOTS : FINE_VIEW_SLOTS;
    for (int v = 0; v < views; v++) L->dev_view[v] = gpu_data_alloc(bytes);
    if (L->opt.mode == LOADER_FINETUNE)
        L->dev_label = gpu_data_alloc((size_t)L->opt.batch * L->crop_voxels * sizeof(int32_t));
    size_t free_b = gpu_data_free_bytes();
    size_t room = free_b > GPU_CACHE_RESERVE_BYTES ? free_b - GPU_CACHE_RESERVE_BYTES : 0;
    if (room < (size_t)L->opt.gpu_cache_bytes)
        log_warn("gpu_cache_mb = %ld, but %.0f MiB of GPU memory are free beside the model: the GPU "
                 "volume cache gets %.0f MiB (cases beyond it are cropped on the host)",
                 L->opt.gpu_cache_bytes >> 20, free_b / 1048576.0,
                 gpu_volume_cache_limit(L->gpu_cache, room) / 1048576.0);
}

/* The prepared slot of `step` in the current ring generation, or NULL when the threads have
 * not finished it. A READY slot turns FREE only in next_slot, i.e. in the calling thread, so
 * its contents stay valid after the lock is dropped. */
static Slot *ready_slot(Loader *L, long step)
{
    Slot *found = NULL;
    LOCK(&L->ring_lock);
    for (int i = 0; i < L->num_slots; i++)
        if (L->slots[i].state == SLOT_READY && L->slots[i].generation == L->generation &&
            L->slots[i].step == step)
            found = &L->slots[i];
    UNLOCK(&L->ring_lock);
    return found;
}

static int recipe_case(const Loader *L, const Slot *s, int r) { return (int)(s->recipe_entry[r] - L->entries); }

/* While an upload may still read case i's pinned host copy, the loader holds a reference on it,
 * so the host cache cannot free that memory under the DMA; dropped once the upload is done. */
static void upload_ref_take(Loader *L, int i)
{
    if (L->upload_ref[i] || !gpu_volume_cache_upload_pending(L->gpu_cache, i)) return;
    cache_ref(L, &L->entries[i]);
    L->upload_ref[i] = 1;
}

static void upload_refs_release_done(Loader *L)
{
    for (int i = 0; i < L->src.num_cases; i++)
        if (L->upload_ref[i] && !gpu_volume_cache_upload_pending(L->gpu_cache, i)) {
            L->upload_ref[i] = 0;
            cache_release(L, &L->entries[i]);
        }
}

/* Uploads the volumes of the steps after `step` that the threads have prepared, in step order,
 * without waiting and without evicting anything in use, so they overlap the compute of `step`.
 * The rendering thread issues them, not the prefetch threads: it owns the GPU volume cache and
 * the backend allocator (neither is thread-safe, and a mutex-guarded second path would need its
 * own eviction protocol), and queuing a DMA from a volume already in pinned memory costs it
 * microseconds -- the read into pinned memory, the part that takes time, was made by the
 * thread that read the case. It runs before the model launches step `step`, whose loss
 * download later blocks the host: issued after that, the uploads could not overlap it. */
static void gpu_prefetch_volumes(Loader *L, long step)
{
    const int with_label = L->opt.mode == LOADER_FINETUNE;
    for (long ahead = step + 1; ahead <= step + L->num_threads; ahead++) {
        Slot *s = ready_slot(L, ahead);
        if (!s) continue;
        for (int r = 0; r < s->num_recipes; r++) {
            if (s->on_host[r]) continue;
            int i = recipe_case(L, s, r);
            if (gpu_volume_cache_prefetch(L->gpu_cache, i, &s->recipe_entry[r]->volume, with_label))
                upload_ref_take(L, i);
        }
    }
}

/* Renders the recipes of slot s into the device batch buffers, on the compute stream: volumes
 * the GPU cache holds (or takes now) go to the kernel, which waits for their uploads; the rest
 * were or are cut on the host and uploaded into their place. Then queues the uploads of the
 * next prepared steps' volumes. */
static void gpu_render_slot(Loader *L, Slot *s)
{
    if (!L->dev_view[0]) gpu_buffers_alloc(L);
    const int views = L->opt.mode == LOADER_PRETRAIN ? PRE_VIEW_SLOTS : FINE_VIEW_SLOTS;
    const size_t n = L->crop_voxels;
    const int with_label = L->opt.mode == LOADER_FINETUNE;
    upload_refs_release_done(L);
    gpu_volume_cache_begin_batch(L->gpu_cache);
    /* Volumes already there (prefetched) are claimed first, so uploading the batch's other
     * volumes cannot evict them. */
    for (int r = 0; r < s->num_recipes; r++)
        if (!s->on_host[r])
            gpu_volume_cache_reserve(L->gpu_cache, recipe_case(L, s, r), &s->recipe_entry[r]->volume,
                                     with_label);
    int count = 0;
    for (int r = 0; r < s->num_recipes; r++) {
        const CropRecipe *host = &s->recipes[r];
        float *dev_out = L->dev_view[r % views] + (size_t)(r / views) * n;
        int32_t *dev_label = with_label ? L->dev_label + (size_t)(r / views) * n : NULL;
        if (!s->on_host[r]) {
            CropRecipe dev = *host;
            const int i = recipe_case(L, s, r);
            if (gpu_volume_cache_fetch(L->gpu_cache, i, &s->recipe_entry[r]->volume, with_label,
                                       &dev.image, &dev.label)) {
                upload_ref_take(L, i);
                dev.out = dev_out;
                dev.out_label = dev_label;
                L->render_list[count++] = dev;
                continue;
            }
            /* Does not fit beside this batch's other volumes: cut on the host. */
            crop_recipe_render_cpu(host);
        }
        L->host_crops++;
        gpu_data_upload(dev_out, host->out, n * sizeof(float));
        if (dev_label) gpu_data_upload(dev_label, host->out_label, n * sizeof(int32_t));
    }
    gpu_crops_render(L->render_list, count);
    gpu_volume_cache_end_batch(L->gpu_cache);   /* last use of each volume: behind the kernel */
    slot_release_recipes(L, s);
    gpu_prefetch_volumes(L, s->step);
}

/* ---- double-buffered batch uploads (upload_batches) ------------------------------------- */

static size_t image_batch_bytes(const Loader *L) { return (size_t)L->opt.batch * L->crop_voxels * sizeof(float); }

/* Queues the upload of slot s (step) into buffer k on the upload stream, after the step that
 * last read buffer k is done with it. */
static void batch_upload(Loader *L, int k, const Slot *s, long step)
{
    DeviceBatch *d = &L->dev_batch[k];
    const size_t bytes = image_batch_bytes(L);
    const size_t label_bytes = (size_t)L->opt.batch * L->crop_voxels * sizeof(int32_t);
    if (!d->ready) {
        const int views = L->opt.mode == LOADER_PRETRAIN ? PRE_VIEW_SLOTS : FINE_VIEW_SLOTS;
        for (int v = 0; v < views; v++) d->view[v] = gpu_data_alloc(bytes);
        if (L->opt.mode == LOADER_FINETUNE) d->label = gpu_data_alloc(label_bytes);
        d->ready = gpu_event_create();
        d->consumed = gpu_event_create();
    }
    gpu_stream_wait(GPU_STREAM_UPLOAD, d->consumed);
    if (L->opt.mode == LOADER_PRETRAIN) {
        const float *src[PRE_VIEW_SLOTS] = {s->pre.query, s->pre.key, s->pre.query_intact, s->pre.key_intact};
        for (int v = 0; v < PRE_VIEW_SLOTS; v++) gpu_data_upload_on(GPU_STREAM_UPLOAD, d->view[v], src[v], bytes);
    } else {
        gpu_data_upload_on(GPU_STREAM_UPLOAD, d->view[FINE_IMAGE], s->fine.image, bytes);
        gpu_data_upload_on(GPU_STREAM_UPLOAD, d->label, s->fine.label, label_bytes);
    }
    gpu_event_record(d->ready, GPU_STREAM_UPLOAD);
    d->slot = s;
    d->step = step;
    d->generation = s->generation;
}

/* Before next_slot hands host slots back to the prefetch threads (the one held since the last
 * call; on a jump every prepared one), the uploads reading them must be done: only the buffer
 * prepared for exactly this step keeps its slot, which next_slot hands out again. The step
 * that read the last buffer has been queued on the compute stream by now: that is its
 * consumer, which the next upload into that buffer waits for. */
static void batch_buffers_release(Loader *L, long step)
{
    if (L->dev_current >= 0) gpu_event_record(L->dev_batch[L->dev_current].consumed, GPU_STREAM_COMPUTE);
    for (int k = 0; k < 2; k++) {
        DeviceBatch *d = &L->dev_batch[k];
        if (!d->slot) continue;
        if (L->num_threads > 0 && k != L->dev_current && d->step == step &&
            d->generation == L->generation)
            continue;
        gpu_event_synchronize(d->ready);
        d->slot = NULL;
    }
}

/* The device buffer of slot s (uploading it now unless that was done ahead), made the compute
 * stream's input; then the upload of the next prepared step into the other buffer. */
static const DeviceBatch *batch_buffers_take(Loader *L, const Slot *s, long step)
{
    int k = -1;
    for (int i = 0; i < 2; i++)
        if (L->dev_batch[i].slot == s && L->dev_batch[i].step == step &&
            L->dev_batch[i].generation == s->generation)
            k = i;
    if (k < 0) {
        k = L->dev_current >= 0 ? 1 - L->dev_current : 0;
        batch_upload(L, k, s, step);
    }
    gpu_stream_wait(GPU_STREAM_COMPUTE, L->dev_batch[k].ready);
    L->dev_current = k;
    const Slot *next = L->num_threads > 0 ? ready_slot(L, step + 1) : NULL;
    if (next) {
        batch_upload(L, 1 - k, next, step + 1);
        L->batches_ahead++;
    }
    return &L->dev_batch[k];
}

void loader_next_pretrain_batch(Loader *L, long step, PretrainBatch *out)
{
    if (L->opt.upload_batches) batch_buffers_release(L, step);
    Slot *s = next_slot(L, step, LOADER_PRETRAIN);
    *out = s->pre;
    float *const *view;
    if (L->opt.upload_batches) {
        view = batch_buffers_take(L, s, step)->view;
    } else if (L->opt.data_on_gpu) {
        gpu_render_slot(L, s);
        view = L->dev_view;
    } else {
        return;
    }
    out->on_device = 1;
    out->query = view[PRE_QUERY];
    out->key = view[PRE_KEY];
    out->query_intact = view[PRE_QUERY_INTACT];
    out->key_intact = view[PRE_KEY_INTACT];
}

void loader_next_finetune_batch(Loader *L, long step, FinetuneBatch *out)
{
    if (L->opt.upload_batches) batch_buffers_release(L, step);
    Slot *s = next_slot(L, step, LOADER_FINETUNE);
    *out = s->fine;
    if (L->opt.upload_batches) {
        const DeviceBatch *d = batch_buffers_take(L, s, step);
        out->image = d->view[FINE_IMAGE];
        out->label = d->label;
    } else if (L->opt.data_on_gpu) {
        gpu_render_slot(L, s);
        out->image = L->dev_view[FINE_IMAGE];
        out->label = L->dev_label;
    } else {
        return;
    }
    out->on_device = 1;
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
    if (L->opt.data_on_gpu) {
        s->num_recipes = B * (L->opt.mode == LOADER_PRETRAIN ? PRE_VIEW_SLOTS : FINE_VIEW_SLOTS);
        s->recipes = xcalloc((size_t)s->num_recipes, sizeof *s->recipes);
        s->recipe_entry = xcalloc((size_t)s->num_recipes, sizeof *s->recipe_entry);
        s->on_host = xcalloc((size_t)s->num_recipes, sizeof *s->on_host);
    }
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
        b->pair_redrawn = xcalloc((size_t)B, sizeof(int));
        b->key_outside = xcalloc((size_t)B, sizeof(int));
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
    free(s->recipes);
    free(s->recipe_entry);
    free(s->on_host);
    PretrainBatch *p = &s->pre;
    host_free(L, p->query); host_free(L, p->key);
    host_free(L, p->query_intact); host_free(L, p->key_intact);
    free(p->query_case); free(p->key_case); free(p->query_center); free(p->key_center);
    free(p->pair_redrawn); free(p->key_outside);
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
    if (L->opt.crops_per_case < 1) L->opt.crops_per_case = 1;
    if (opt->batch % L->opt.crops_per_case != 0)
        alice_die("batch = %d is not a multiple of crops_per_case = %d: each case drawn gives "
                  "crops_per_case crops of one rank's batch; set batch to a multiple (e.g. %d)",
                  opt->batch, L->opt.crops_per_case,
                  (opt->batch / L->opt.crops_per_case + 1) * L->opt.crops_per_case);
    L->crop_voxels = (size_t)opt->crop[0] * (size_t)opt->crop[1] * (size_t)opt->crop[2];
    if (opt->data_on_gpu) {
        if (opt->gpu_cache_bytes <= 0)
            alice_die("data_device = gpu needs GPU memory for volumes: set gpu_cache_mb > 0");
        if (!L->opt.host_alloc) {   /* host-cut crops are uploaded from pinned memory */
            L->opt.host_alloc = gpu_pinned_alloc;
            L->opt.host_free = gpu_pinned_free;
        }
        L->gpu_cache = gpu_volume_cache_create(source.num_cases, (size_t)opt->gpu_cache_bytes);
        L->render_list = xcalloc((size_t)opt->batch * PRE_VIEW_SLOTS, sizeof *L->render_list);
        L->upload_ref = xcalloc((size_t)source.num_cases, 1);
        L->opt.upload_batches = 0;   /* batches are rendered in GPU memory already */
    }
    if (L->opt.upload_batches && !L->opt.host_alloc) {   /* batch uploads are DMAs */
        L->opt.host_alloc = gpu_pinned_alloc;
        L->opt.host_free = gpu_pinned_free;
    }
    L->dev_current = -1;

    int n = source.num_cases;
    L->train = xmalloc((size_t)n * sizeof(int));
    L->validation = xmalloc((size_t)n * sizeof(int));
    for (int i = 0; i < n; i++) {
        if (opt->mode == LOADER_PRETRAIN) { L->train[L->num_train++] = i; continue; }
        if (!source.case_has_label(source.ctx, i)) continue;
        if (source.case_fold(source.ctx, i) == opt->validation_fold) L->validation[L->num_validation++] = i;
        else L->train[L->num_train++] = i;
    }
    if (L->num_train == 0 && L->num_validation > 0)
        alice_die("fine-tuning needs labelled cases outside validation fold %d, and all %d of the "
                  "data set's are in it: choose another fold, set fold=-1 to train on them "
                  "without validation, or pack more labelled cases", opt->validation_fold,
                  L->num_validation);
    if (L->num_train == 0)
        alice_die("fine-tuning needs labelled cases, and the data set has none: pack labels "
                  "with the images");

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
    L->next_step = opt->first_step;
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
    /* Device work first: no upload may still read pinned host memory freed below. */
    for (int k = 0; k < 2; k++) {
        DeviceBatch *d = &L->dev_batch[k];
        if (!d->ready) continue;
        gpu_event_synchronize(d->ready);
        for (int v = 0; v < PRE_VIEW_SLOTS; v++) if (d->view[v]) gpu_data_free(d->view[v]);
        if (d->label) gpu_data_free(d->label);
        gpu_event_destroy(d->ready);
        gpu_event_destroy(d->consumed);
    }
    gpu_volume_cache_destroy(L->gpu_cache);
    for (int i = 0; i < L->num_slots; i++) slot_free(L, &L->slots[i]);
    for (int v = 0; v < PRE_VIEW_SLOTS; v++) if (L->dev_view[v]) gpu_data_free(L->dev_view[v]);
    if (L->dev_label) gpu_data_free(L->dev_label);
    free(L->render_list);
    for (int i = 0; i < L->src.num_cases; i++)
        if (L->entries[i].state == ENTRY_READY) entry_release_memory(L, &L->entries[i]);
    graveyard_flush(L);
    free(L->graveyard);
    free(L->upload_ref);
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
    /* The formula of training crops and the GPU kernel (data/crop.h). */
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
    LoaderCacheStats s = {L->reads, L->hits, L->cache_bytes, 0, 0, L->host_crops, 0, 0, L->batches_ahead};
    UNLOCK(&L->cache_lock);
    if (L->gpu_cache) {
        GpuVolumeCacheStats g = gpu_volume_cache_stats(L->gpu_cache);
        s.gpu_uploads = g.uploads;
        s.gpu_hits = g.hits;
        s.gpu_prefetched = g.prefetched;
        s.gpu_evict_waits = g.evict_waits;
    }
    return s;
}
