/* gpu_data.h in a build without CUDA (USE_CUDA=0): pinned memory is ordinary memory, and
 * device data is a clear error naming the fix. With CUDA, cuda/cuda_crops.cu provides them.
 * (Its own file, so a test can stand in for the device by defining these functions.) */
#ifndef ALICE_CUDA
#include <stdlib.h>

#include "core/check.h"
#include "ops/gpu_data.h"

void *gpu_pinned_alloc(size_t bytes) { return malloc(bytes ? bytes : 1); }
void gpu_pinned_free(void *ptr) { free(ptr); }

static _Noreturn void gpu_data_not_built(void)
{
    alice_die("data_device = gpu needs the CUDA backend, but this alice was built without CUDA; "
              "rebuild with USE_CUDA=1 (nvcc) or set data_device = cpu");
}
void *gpu_data_alloc(size_t bytes) { (void)bytes; gpu_data_not_built(); }
void gpu_data_free(void *ptr) { if (ptr) gpu_data_not_built(); }
size_t gpu_data_free_bytes(void) { gpu_data_not_built(); }
void gpu_data_upload(void *dst, const void *src, size_t bytes)
{
    (void)dst; (void)src; (void)bytes;
    gpu_data_not_built();
}
void gpu_data_upload_async(void *dst, const void *pinned_src, size_t bytes)
{
    (void)dst; (void)pinned_src; (void)bytes;
    gpu_data_not_built();
}
void gpu_data_synchronize(void) { gpu_data_not_built(); }
void gpu_data_download(void *host_dst, const void *src, size_t bytes)
{
    (void)host_dst; (void)src; (void)bytes;
    gpu_data_not_built();
}
void gpu_crops_render(const struct CropRecipe *recipes, int count)
{
    (void)recipes; (void)count;
    gpu_data_not_built();
}
GpuEvent *gpu_event_create(void) { gpu_data_not_built(); }
void gpu_event_destroy(GpuEvent *e) { if (e) gpu_data_not_built(); }
void gpu_event_record(GpuEvent *e, GpuStream s)
{
    (void)e; (void)s;
    gpu_data_not_built();
}
int gpu_event_done(GpuEvent *e) { (void)e; gpu_data_not_built(); }
void gpu_event_synchronize(GpuEvent *e) { (void)e; gpu_data_not_built(); }
void gpu_stream_wait(GpuStream s, GpuEvent *e)
{
    (void)s; (void)e;
    gpu_data_not_built();
}
void gpu_data_upload_on(GpuStream s, void *dst, const void *pinned_src, size_t bytes)
{
    (void)s; (void)dst; (void)pinned_src; (void)bytes;
    gpu_data_not_built();
}
void *gpu_volume_alloc(size_t bytes) { (void)bytes; gpu_data_not_built(); }
void gpu_volume_free(void *ptr, size_t bytes)
{
    (void)bytes;
    if (ptr) gpu_data_not_built();
}
#else
/* ISO C wants a translation unit to declare something. */
typedef int gpu_data_stub_unused;
#endif
