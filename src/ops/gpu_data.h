/* Training data on the GPU, callable from C code that also builds without CUDA: pinned host
 * buffers (so a batch's host-to-device copy is a true asynchronous DMA), device buffers for
 * volumes and batches, and the crop kernel that renders crop recipes (data/crop_recipe.h)
 * straight into device batch buffers. Without CUDA compiled in (gpu_stub.c) pinned memory is
 * plain malloc, and the device functions are a clear error naming the fix. All device work
 * runs on the CUDA backend's one stream, so it is ordered with the model's kernels. */
#ifndef ALICE_GPU_DATA_H
#define ALICE_GPU_DATA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct CropRecipe;

/* Page-locked host memory (cudaHostAlloc, portable to every device context); free with
 * gpu_pinned_free. Without CUDA: malloc / free. NULL when out of memory. */
void *gpu_pinned_alloc(size_t bytes);
void gpu_pinned_free(void *ptr);

/* Device memory of the CUDA backend (counted in its peak-memory figure). */
void *gpu_data_alloc(size_t bytes);
void gpu_data_free(void *ptr);
/* Device memory still free (cudaMemGetInfo), for budgets planned after the model's buffers. */
size_t gpu_data_free_bytes(void);
/* Host to device on the backend stream. upload returns when src may be reused (any host
 * memory); upload_async returns at once, so src must be pinned and stay untouched until the
 * stream has passed the copy (e.g. until the caller's next synchronize). */
void gpu_data_upload(void *dst, const void *src, size_t bytes);
void gpu_data_upload_async(void *dst, const void *pinned_src, size_t bytes);
/* Waits until the backend stream has done everything queued so far (timings). */
void gpu_data_synchronize(void);
/* Device to host; returns when the bytes are there (tests, diagnostics). */
void gpu_data_download(void *host_dst, const void *src, size_t bytes);

/* ---- the loader's upload stream and events ----
 * Volume and batch uploads run on an upload stream of their own, so they overlap the model's
 * kernels on the backend (compute) stream; events order the two: a crop kernel or batch copy
 * waits for the "ready" event of the upload it reads, and a buffer is reused or freed only
 * after the "last use" event recorded behind its readers has completed. Every function of this
 * block is called by one thread (the one that asks the loader for batches), like the backend. */
typedef enum { GPU_STREAM_COMPUTE, GPU_STREAM_UPLOAD } GpuStream;
typedef struct GpuEvent GpuEvent;

GpuEvent *gpu_event_create(void);
void gpu_event_destroy(GpuEvent *e);
/* Marks the work queued on stream s so far; a re-record replaces the earlier mark. */
void gpu_event_record(GpuEvent *e, GpuStream s);
/* 1 when everything the event marks has run (an event never recorded counts as done). */
int gpu_event_done(GpuEvent *e);
/* The host waits until the event is done. */
void gpu_event_synchronize(GpuEvent *e);
/* Work queued on s after this call starts only once the event is done (the host goes on). */
void gpu_stream_wait(GpuStream s, GpuEvent *e);
/* Host to device on stream s, returning at once: src must be pinned and stay untouched until
 * an event recorded on s after this copy is done. */
void gpu_data_upload_on(GpuStream s, void *dst, const void *pinned_src, size_t bytes);
/* Device memory for the volume cache, allocated and freed in the order of the upload stream
 * (stream-ordered, so freeing never stalls the host or the compute stream); free only buffers
 * whose readers are done (their last-use event) or that the upload stream waited for. NULL
 * when the device is out of memory (the cache then makes room or crops on the host). */
void *gpu_volume_alloc(size_t bytes);
void gpu_volume_free(void *ptr, size_t bytes);

/* Renders `count` recipes (host array; their image, label, out and out_label pointers are
 * device memory) on the backend stream: every voxel by sv_render_voxel, as the CPU does.
 * Returns without waiting; the recipes array may be reused at once. */
void gpu_crops_render(const struct CropRecipe *recipes, int count);

#ifdef __cplusplus
}
#endif

#endif
