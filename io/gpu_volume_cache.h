/* The loader's volumes in GPU memory (data_device = gpu): each case used by a batch is uploaded
 * once (int16 HU, plus uint8 labels when asked) and stays until the budget forces the least
 * recently used out.
 *
 * Asynchronous. Uploads run on the upload stream (ops/gpu_data.h) from the caller's pinned
 * host copy and end with the volume's "ready" event; a batch that fetches the volume makes the
 * compute stream wait for that event, so the crop kernel never reads a volume before its bytes
 * are there, while uploads for the next steps (gpu_volume_cache_prefetch) overlap the current
 * step's compute. After a batch's crop kernel is queued, gpu_volume_cache_end_batch records a
 * "last use" event behind it on every volume the batch read. A volume is evicted only when its
 * last use and its own upload are done: a prefetch never waits for that (it skips the upload
 * instead), a batch fetch waits for the oldest such volume when nothing else can make room.
 * Its memory is freed in upload-stream order after a wait for the last use, so even a freed
 * buffer is never overwritten under a running kernel.
 *
 * Volumes a batch (or the prefetch window that follows it) already took are never evicted until
 * the next gpu_volume_cache_begin_batch, so a batch's crops can all be rendered by one kernel
 * launch. Used by one thread only (the one that renders batches). */
#ifndef ALICE_GPU_VOLUME_CACHE_H
#define ALICE_GPU_VOLUME_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "volume.h"

typedef struct GpuVolumeCache GpuVolumeCache;

typedef struct {
    long uploads;      /* volumes copied to the GPU so far */
    long hits;         /* batch fetches served by a volume already resident (or uploading) */
    size_t bytes;      /* held now */
    long prefetched;   /* uploads started ahead of the batch that needs them */
    long evict_waits;  /* evictions for a batch that had to wait for a pending use or upload */
} GpuVolumeCacheStats;

GpuVolumeCache *gpu_volume_cache_create(int num_cases, size_t budget_bytes);
/* Lowers the budget (never raises it); returns the budget in force. */
size_t gpu_volume_cache_limit(GpuVolumeCache *c, size_t budget_bytes);
/* Waits for every upload and use, then frees the device memory and events. */
void gpu_volume_cache_destroy(GpuVolumeCache *c);

/* Device bytes case v takes (HU, plus labels when with_label and v has them). */
size_t gpu_volume_bytes(const Volume *v, int with_label);

/* Starts a batch: what it (and the prefetches after it) fetches is kept until the next call. */
void gpu_volume_cache_begin_batch(GpuVolumeCache *c);

/* Marks case i as used by the current batch when it is resident (1) with the wanted label, so
 * uploads for the batch's other volumes do not evict it; 0 when it is not resident. */
int gpu_volume_cache_reserve(GpuVolumeCache *c, int i, const Volume *v, int with_label);

/* Device copies of case i for the current batch, whose host copy v is pinned (uploaded when
 * absent; the compute stream is made to wait for the upload). *label is NULL without labels.
 * Returns 0 (and uploads nothing) when the case cannot fit within the budget beside the
 * volumes of the current batch: the caller crops that one on the host. */
int gpu_volume_cache_fetch(GpuVolumeCache *c, int i, const Volume *v, int with_label,
                           const int16_t **image, const uint8_t **label);

/* Starts the upload of case i (pinned host copy v) for a later batch when it is absent and fits
 * without evicting anything still in use or uploading; never waits. Returns 1 when the case is
 * resident or uploading afterwards. */
int gpu_volume_cache_prefetch(GpuVolumeCache *c, int i, const Volume *v, int with_label);

/* Records the last-use event of every volume fetched since begin_batch, on the compute stream:
 * call right after queueing the kernel that reads them. */
void gpu_volume_cache_end_batch(GpuVolumeCache *c);

/* 1 while an upload of case i may still read its host copy (which must stay allocated). */
int gpu_volume_cache_upload_pending(GpuVolumeCache *c, int i);

GpuVolumeCacheStats gpu_volume_cache_stats(const GpuVolumeCache *c);

#endif
