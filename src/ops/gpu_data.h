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

/* Renders `count` recipes (host array; their image, label, out and out_label pointers are
 * device memory) on the backend stream: every voxel by sv_render_voxel, as the CPU does.
 * Returns without waiting; the recipes array may be reused at once. */
void gpu_crops_render(const struct CropRecipe *recipes, int count);

#ifdef __cplusplus
}
#endif

#endif
