#include "gpu_volume_cache.h"

#include <stdlib.h>

#include "core/check.h"
#include "core/log.h"
#include "ops/gpu_data.h"

typedef struct {
    int16_t *image;            /* device */
    uint8_t *label;            /* device, NULL without */
    size_t voxels, bytes;
    unsigned long last_use;    /* LRU clock */
    unsigned long batch;       /* batch (or prefetch window) that last took it */
    int in_batch;              /* fetched since begin_batch: gets a last-use record */
    GpuEvent *ready;           /* upload done (upload stream) */
    GpuEvent *used;            /* last crop kernel that read it done (compute stream) */
} GpuVolume;

struct GpuVolumeCache {
    GpuVolume *entries;
    int num_cases;
    size_t budget, bytes;
    unsigned long clock, batch;
    long uploads, hits, prefetched, evict_waits;
};

GpuVolumeCache *gpu_volume_cache_create(int num_cases, size_t budget_bytes)
{
    GpuVolumeCache *c = xcalloc(1, sizeof *c);
    c->entries = xcalloc((size_t)(num_cases > 0 ? num_cases : 1), sizeof *c->entries);
    c->num_cases = num_cases;
    c->budget = budget_bytes;
    return c;
}

/* Both events of an entry done: no upload writes it, no kernel reads it. */
static int entry_idle(GpuVolume *e)
{
    return (!e->ready || gpu_event_done(e->ready)) && (!e->used || gpu_event_done(e->used));
}

static void entry_wait_idle(GpuVolumeCache *c, GpuVolume *e)
{
    if (entry_idle(e)) return;
    c->evict_waits++;
    if (e->ready) gpu_event_synchronize(e->ready);
    if (e->used) gpu_event_synchronize(e->used);
}

/* Frees an idle entry's device memory. The upload stream still waits for the last use first:
 * the free is stream-ordered there, and that wait is what makes it safe on the device. */
static void entry_drop(GpuVolumeCache *c, GpuVolume *e)
{
    if (e->used) gpu_stream_wait(GPU_STREAM_UPLOAD, e->used);
    gpu_volume_free(e->image, e->voxels * sizeof(int16_t));
    gpu_volume_free(e->label, e->voxels);
    c->bytes -= e->bytes;
    e->image = NULL;
    e->label = NULL;
    e->bytes = 0;
}

void gpu_volume_cache_destroy(GpuVolumeCache *c)
{
    if (!c) return;
    for (int i = 0; i < c->num_cases; i++) {
        GpuVolume *e = &c->entries[i];
        if (e->ready) gpu_event_synchronize(e->ready);
        if (e->used) gpu_event_synchronize(e->used);
        if (e->image) entry_drop(c, e);
        gpu_event_destroy(e->ready);
        gpu_event_destroy(e->used);
    }
    free(c->entries);
    free(c);
}

size_t gpu_volume_bytes(const Volume *v, int with_label)
{
    size_t n = volume_voxels(v);
    return n * sizeof(int16_t) + (with_label && v->label ? n : 0);
}

size_t gpu_volume_cache_limit(GpuVolumeCache *c, size_t budget_bytes)
{
    if (budget_bytes < c->budget) c->budget = budget_bytes;
    return c->budget;
}

void gpu_volume_cache_begin_batch(GpuVolumeCache *c) { c->batch++; }

/* Least recently used volume of an earlier batch, idle ones only unless any_state. */
static GpuVolume *lru_victim(GpuVolumeCache *c, int any_state)
{
    GpuVolume *victim = NULL;
    for (int i = 0; i < c->num_cases; i++) {
        GpuVolume *e = &c->entries[i];
        if (e->image && e->batch < c->batch && (!victim || e->last_use < victim->last_use) &&
            (any_state || entry_idle(e)))
            victim = e;
    }
    return victim;
}

/* Frees least recently used volumes of earlier batches until `need` more bytes fit: idle ones
 * first; busy ones (last use or upload pending) only when may_wait, after waiting for them.
 * Returns 0 when they cannot. */
static int make_room(GpuVolumeCache *c, size_t need, int may_wait)
{
    if (need > c->budget) return 0;
    while (c->bytes + need > c->budget) {
        GpuVolume *victim = lru_victim(c, 0);
        if (!victim && may_wait) victim = lru_victim(c, 1);
        if (!victim) return 0;
        entry_wait_idle(c, victim);
        entry_drop(c, victim);
    }
    return 1;
}

/* Device memory for a volume within the budget; when the device itself has no room left
 * (the budget was set before the step's scratch buffers and validation's accumulators grew),
 * least recently used volumes of earlier batches go first, and with none left the budget
 * shrinks to what the cache holds now, so later volumes are cropped on the host instead of
 * ending the run. NULL when it cannot. */
static void *alloc_volume_memory(GpuVolumeCache *c, size_t bytes, int may_wait)
{
    for (;;) {
        void *p = gpu_volume_alloc(bytes);
        if (p) return p;
        GpuVolume *victim = lru_victim(c, 0);
        if (!victim && may_wait) victim = lru_victim(c, 1);
        if (!victim) {
            if (c->bytes < c->budget) {
                log_warn("GPU volume cache: the device is out of memory at %.0f MiB of volumes; "
                         "the cache keeps to that from now on (the rest is cropped on the host)",
                         c->bytes / 1048576.0);
                c->budget = c->bytes;
            }
            return NULL;
        }
        entry_wait_idle(c, victim);
        entry_drop(c, victim);
    }
}

/* Queues the upload of v into entry e on the upload stream, ending with its ready event. */
static int upload(GpuVolumeCache *c, GpuVolume *e, const Volume *v, int want_label, int may_wait)
{
    size_t bytes = gpu_volume_bytes(v, want_label);
    if (!make_room(c, bytes, may_wait)) return 0;
    size_t n = volume_voxels(v);
    /* into locals first: making room must not see e holding memory yet */
    void *image = alloc_volume_memory(c, n * sizeof(int16_t), may_wait);
    if (!image) return 0;
    void *label = want_label ? alloc_volume_memory(c, n, may_wait) : NULL;
    if (want_label && !label) {
        gpu_volume_free(image, n * sizeof(int16_t));
        return 0;
    }
    e->image = image;
    e->label = label;
    gpu_data_upload_on(GPU_STREAM_UPLOAD, e->image, v->image, n * sizeof(int16_t));
    if (want_label) gpu_data_upload_on(GPU_STREAM_UPLOAD, e->label, v->label, n);
    if (!e->ready) e->ready = gpu_event_create();
    gpu_event_record(e->ready, GPU_STREAM_UPLOAD);
    e->voxels = n;
    e->bytes = bytes;
    c->bytes += bytes;
    c->uploads++;
    return 1;
}

static GpuVolume *entry_of(GpuVolumeCache *c, int i)
{
    ALICE_ASSERT(i >= 0 && i < c->num_cases, "GPU volume cache: case %d of %d", i, c->num_cases);
    return &c->entries[i];
}

static void take(GpuVolumeCache *c, GpuVolume *e)
{
    e->last_use = ++c->clock;
    e->batch = c->batch;
}

int gpu_volume_cache_reserve(GpuVolumeCache *c, int i, const Volume *v, int with_label)
{
    GpuVolume *e = entry_of(c, i);
    if (!e->image || (with_label && v->label && !e->label)) return 0;
    take(c, e);
    return 1;
}

int gpu_volume_cache_fetch(GpuVolumeCache *c, int i, const Volume *v, int with_label,
                           const int16_t **image, const uint8_t **label)
{
    GpuVolume *e = entry_of(c, i);
    const int want_label = with_label && v->label;
    if (e->image && want_label && !e->label) {   /* re-upload with labels */
        /* Not within a batch that already took it: its earlier render entries name the
         * buffers the drop frees, and the compute stream would not wait for the new upload.
         * A loader asks for labels for every volume or none, so this cannot happen. */
        ALICE_ASSERT(!e->in_batch, "GPU volume cache: volume %d asked for with its labels after "
                     "this batch took it without them", i);
        entry_wait_idle(c, e);
        entry_drop(c, e);
    }
    if (e->image) c->hits++;
    else if (!upload(c, e, v, want_label, 1)) return 0;
    take(c, e);
    if (!e->in_batch) {
        e->in_batch = 1;
        /* The kernel reads the volume only after its upload (a no-op once it is done). */
        if (!gpu_event_done(e->ready)) gpu_stream_wait(GPU_STREAM_COMPUTE, e->ready);
    }
    *image = e->image;
    *label = e->label;
    return 1;
}

int gpu_volume_cache_prefetch(GpuVolumeCache *c, int i, const Volume *v, int with_label)
{
    GpuVolume *e = entry_of(c, i);
    const int want_label = with_label && v->label;
    if (e->image && want_label && !e->label) return 0;   /* the batch re-uploads it */
    if (!e->image) {
        if (!upload(c, e, v, want_label, 0)) return 0;
        c->prefetched++;
    }
    take(c, e);
    return 1;
}

void gpu_volume_cache_end_batch(GpuVolumeCache *c)
{
    for (int i = 0; i < c->num_cases; i++) {
        GpuVolume *e = &c->entries[i];
        if (!e->in_batch) continue;
        if (!e->used) e->used = gpu_event_create();
        gpu_event_record(e->used, GPU_STREAM_COMPUTE);
        e->in_batch = 0;
    }
}

int gpu_volume_cache_upload_pending(GpuVolumeCache *c, int i)
{
    GpuVolume *e = entry_of(c, i);
    return e->image && e->ready && !gpu_event_done(e->ready);
}

GpuVolumeCacheStats gpu_volume_cache_stats(const GpuVolumeCache *c)
{
    GpuVolumeCacheStats s = {c->uploads, c->hits, c->bytes, c->prefetched, c->evict_waits};
    return s;
}
