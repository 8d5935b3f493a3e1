/* The loader's volumes in GPU memory (data_device = gpu): each case used by a batch is uploaded
 * once (int16 HU, plus uint8 labels when asked) and stays until the budget forces the least
 * recently used out. Volumes a batch already fetched are never evicted during that batch, so
 * a batch's crops can all be rendered by one kernel launch. Used by one thread only (the one
 * that renders batches on the backend stream). */
#ifndef ALICE_GPU_VOLUME_CACHE_H
#define ALICE_GPU_VOLUME_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "volume.h"

typedef struct GpuVolumeCache GpuVolumeCache;

typedef struct {
    long uploads;      /* volumes copied to the GPU so far */
    long hits;         /* fetches served from GPU memory */
    size_t bytes;      /* held now */
} GpuVolumeCacheStats;

GpuVolumeCache *gpu_volume_cache_create(int num_cases, size_t budget_bytes);
/* Lowers the budget (never raises it); returns the budget in force. */
size_t gpu_volume_cache_limit(GpuVolumeCache *c, size_t budget_bytes);
void gpu_volume_cache_destroy(GpuVolumeCache *c);

/* Device bytes case v takes (HU, plus labels when with_label and v has them). */
size_t gpu_volume_bytes(const Volume *v, int with_label);

/* Starts a batch: what it fetches is pinned until the next call. */
void gpu_volume_cache_begin_batch(GpuVolumeCache *c);

/* Device copies of case i, whose host copy is v (uploaded when absent). *label is NULL without
 * labels. Returns 0 (and uploads nothing) when the case cannot fit within the budget beside
 * the volumes of the current batch: the caller crops that one on the host. */
int gpu_volume_cache_fetch(GpuVolumeCache *c, int i, const Volume *v, int with_label,
                           const int16_t **image, const uint8_t **label);

GpuVolumeCacheStats gpu_volume_cache_stats(const GpuVolumeCache *c);

#endif
