#include "gpu_volume_cache.h"

#include <stdlib.h>

#include "core/check.h"
#include "ops/gpu_data.h"

typedef struct {
    int16_t *image;            /* device */
    uint8_t *label;            /* device, NULL without */
    size_t bytes;
    unsigned long last_use;
    unsigned long batch;       /* batch that last fetched it */
} GpuVolume;

struct GpuVolumeCache {
    GpuVolume *entries;
    int num_cases;
    size_t budget, bytes;
    unsigned long clock, batch;
    long uploads, hits;
};

GpuVolumeCache *gpu_volume_cache_create(int num_cases, size_t budget_bytes)
{
    GpuVolumeCache *c = xcalloc(1, sizeof *c);
    c->entries = xcalloc((size_t)(num_cases > 0 ? num_cases : 1), sizeof *c->entries);
    c->num_cases = num_cases;
    c->budget = budget_bytes;
    return c;
}

static void entry_drop(GpuVolumeCache *c, GpuVolume *e)
{
    gpu_data_free(e->image);
    gpu_data_free(e->label);
    c->bytes -= e->bytes;
    e->image = NULL;
    e->label = NULL;
    e->bytes = 0;
}

void gpu_volume_cache_destroy(GpuVolumeCache *c)
{
    if (!c) return;
    for (int i = 0; i < c->num_cases; i++)
        if (c->entries[i].image) entry_drop(c, &c->entries[i]);
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

/* Frees least recently used volumes of earlier batches until `need` more bytes fit. Returns 0
 * when they cannot. */
static int make_room(GpuVolumeCache *c, size_t need)
{
    if (need > c->budget) return 0;
    while (c->bytes + need > c->budget) {
        GpuVolume *victim = NULL;
        for (int i = 0; i < c->num_cases; i++) {
            GpuVolume *e = &c->entries[i];
            if (e->image && e->batch < c->batch && (!victim || e->last_use < victim->last_use))
                victim = e;
        }
        if (!victim) return 0;
        entry_drop(c, victim);   /* cudaFree waits for kernels still reading it */
    }
    return 1;
}

/* Makes case i resident (uploading it when absent and it fits); 1 when it is. */
static int ensure_resident(GpuVolumeCache *c, GpuVolume *e, const Volume *v, int want_label)
{
    if (e->image && want_label && !e->label) entry_drop(c, e);   /* re-upload with labels */
    if (e->image) return 1;
    size_t bytes = gpu_volume_bytes(v, want_label);
    if (!make_room(c, bytes)) return 0;
    size_t n = volume_voxels(v);
    e->image = gpu_data_alloc(n * sizeof(int16_t));
    gpu_data_upload(e->image, v->image, n * sizeof(int16_t));
    if (want_label) {
        e->label = gpu_data_alloc(n);
        gpu_data_upload(e->label, v->label, n);
    }
    e->bytes = bytes;
    c->bytes += bytes;
    c->uploads++;
    return 1;
}

int gpu_volume_cache_fetch(GpuVolumeCache *c, int i, const Volume *v, int with_label,
                           const int16_t **image, const uint8_t **label)
{
    ALICE_ASSERT(i >= 0 && i < c->num_cases, "GPU volume cache: case %d of %d", i, c->num_cases);
    GpuVolume *e = &c->entries[i];
    const int resident = e->image && (!(with_label && v->label) || e->label);
    if (!ensure_resident(c, e, v, with_label && v->label)) return 0;
    c->hits += resident;
    e->last_use = ++c->clock;
    e->batch = c->batch;
    *image = e->image;
    *label = e->label;
    return 1;
}


GpuVolumeCacheStats gpu_volume_cache_stats(const GpuVolumeCache *c)
{
    GpuVolumeCacheStats s = {c->uploads, c->hits, c->bytes};
    return s;
}
