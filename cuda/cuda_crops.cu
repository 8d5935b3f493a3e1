/* Training data on the GPU (src/ops/gpu_data.h): pinned host buffers, device buffers for the
 * loader's volume cache and batches, and the kernel that renders crop recipes. One thread per
 * output voxel runs sv_render_linear from data/sample_voxel.h, which crop_recipe_render_cpu
 * runs in a loop and which the CPU tests hold bit for bit to the CPU loader's crops, so a GPU
 * crop is the CPU crop (noise words included; gamma goes through the device powf, within
 * 2 ulp of the host's). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_context.h"
#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_ops.h"
#include "data/sample_voxel.h"
#include "ops/gpu_data.h"

/* Recipes of one render call live here on the device; grows on demand. Only the render
 * path touches it, in stream order, so one buffer serves consecutive batches. */
static CropRecipe *g_recipes;
static int g_recipe_capacity;
/* The recipes' pinned staging buffer: the copy from it is a true asynchronous DMA (a pageable
 * source would make the driver stage it, and possibly wait for the stream, outside the watched
 * waits of cuda_wait.h). g_recipes_copied is recorded after each copy; the host waits for it
 * before overwriting the buffer, which by then (a step later) is long done. */
static CropRecipe *g_recipes_host;
static cudaEvent_t g_recipes_copied;

/* The rank's device made current in the calling thread. The current device is per thread and
 * starts at 0, and a pinned allocation or free needs a context: from a loader thread that never
 * chose a device (pin_volume, the pinned-volume graveyard) it would create a second context on
 * device 0, costing every rank but local rank 0 hundreds of MiB of GPU 0. The backend's context
 * is initialised by the main thread before the loader starts its threads. */
static void bind_rank_device(void)
{
    cuda_context_init();
    CUDA_CHECK(cudaSetDevice(cuda_context()->device));
}

void *gpu_pinned_alloc(size_t bytes)
{
    void *p = NULL;
    /* The rank's own device first, so no stray context is made on device 0. Portable: pinned
     * for every device context anyway. */
    bind_rank_device();
    cudaError_t e = cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocPortable);
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        return NULL;
    }
    CUDA_CHECK(e);
    return p;
}

void gpu_pinned_free(void *ptr)
{
    if (!ptr) return;
    bind_rank_device();
    CUDA_CHECK(cudaFreeHost(ptr));
}

void *gpu_data_alloc(size_t bytes)
{
    cuda_context_init();
    return cuda_alloc(bytes);
}

void gpu_data_free(void *ptr) { cuda_release(ptr); }

size_t gpu_data_free_bytes(void)
{
    cuda_context_init();
    size_t free_b = 0, total_b = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    return free_b;
}

void gpu_data_upload(void *dst, const void *src, size_t bytes)
{
    cuda_context_init();
    cuda_upload(dst, src, bytes);
}

void gpu_data_upload_async(void *dst, const void *pinned_src, size_t bytes)
{
    if (bytes == 0) return;
    cuda_context_init();
    CUDA_CHECK(cudaMemcpyAsync(dst, pinned_src, bytes, cudaMemcpyHostToDevice, cuda_stream()));
}

void gpu_data_synchronize(void)
{
    cuda_context_init();
    cuda_synchronize();
}

void gpu_data_download(void *host_dst, const void *src, size_t bytes)
{
    cuda_context_init();
    cuda_download(host_dst, src, bytes);
}

/* ---- upload stream and events ---------------------------------------------------------- */

/* The loader's upload stream: non-blocking (no implicit order with the compute stream, whose
 * work it overlaps), so every dependency between the two is an explicit event. */
static cudaStream_t g_upload_stream;

static cudaStream_t stream_of(GpuStream s)
{
    cuda_context_init();
    if (s == GPU_STREAM_COMPUTE) return cuda_stream();
    if (!g_upload_stream) CUDA_CHECK(cudaStreamCreateWithFlags(&g_upload_stream, cudaStreamNonBlocking));
    return g_upload_stream;
}

struct GpuEvent {
    cudaEvent_t event;
};

GpuEvent *gpu_event_create(void)
{
    cuda_context_init();
    GpuEvent *e = (GpuEvent *)xmalloc(sizeof *e);
    CUDA_CHECK(cudaEventCreateWithFlags(&e->event, cudaEventDisableTiming));
    return e;
}

void gpu_event_destroy(GpuEvent *e)
{
    if (!e) return;
    CUDA_CHECK(cudaEventDestroy(e->event));
    free(e);
}

void gpu_event_record(GpuEvent *e, GpuStream s) { CUDA_CHECK(cudaEventRecord(e->event, stream_of(s))); }

int gpu_event_done(GpuEvent *e)
{
    cudaError_t r = cudaEventQuery(e->event);
    if (r == cudaErrorNotReady) return 0;
    CUDA_CHECK(r);
    return 1;
}

/* Events recorded on the compute stream may sit behind an all-reduce: a watched wait. */
void gpu_event_synchronize(GpuEvent *e) { CUDA_WAIT_EVENT(e->event); }

void gpu_stream_wait(GpuStream s, GpuEvent *e) { CUDA_CHECK(cudaStreamWaitEvent(stream_of(s), e->event, 0)); }

void gpu_data_upload_on(GpuStream s, void *dst, const void *pinned_src, size_t bytes)
{
    if (bytes == 0) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, pinned_src, bytes, cudaMemcpyHostToDevice, stream_of(s)));
}

/* Stream-ordered allocations on the upload stream: a volume's memory comes and goes in the
 * order of the uploads, and freeing it never waits for the device the way cudaFree does
 * (which would stall the host behind the step being computed). Counted in the backend's
 * peak-memory figure. */
void *gpu_volume_alloc(size_t bytes)
{
    if (bytes == 0) return NULL;
    cudaStream_t up = stream_of(GPU_STREAM_UPLOAD);
    void *p = NULL;
    cudaError_t e = cudaMallocAsync(&p, bytes, up);
    if (e == cudaErrorMemoryAllocation) {
        /* the budget was set before the step's and validation's buffers grew: the cache makes
         * room or crops this case on the host (io/gpu_volume_cache.c). Clearing the error
         * clears this thread's only (the runtime keeps one last error per host thread), and
         * the allocation's error had replaced any earlier one there. */
        (void)cudaGetLastError();
        return NULL;
    }
    CUDA_CHECK(e);
    CudaContext *ctx = cuda_context();
    ctx->live_bytes += bytes;
    if (ctx->live_bytes > ctx->peak_bytes) ctx->peak_bytes = ctx->live_bytes;
    return p;
}

void gpu_volume_free(void *ptr, size_t bytes)
{
    if (!ptr) return;
    CUDA_CHECK(cudaFreeAsync(ptr, stream_of(GPU_STREAM_UPLOAD)));
    cuda_context()->live_bytes -= bytes;
}

/* blockIdx.y picks the recipe; the x blocks stride over its voxels, Z fastest, so neighbouring
 * threads read neighbouring (or, Z-flipped, mirrored) voxels of one volume row. */
static __global__ void render_crops_kernel(const CropRecipe *recipes)
{
    const CropRecipe r = recipes[blockIdx.y];
    const size_t n = (size_t)r.size[0] * (size_t)r.size[1] * (size_t)r.size[2];
    GRID_STRIDE(i, n) sv_render_linear(&r, i);
}

void gpu_crops_render(const CropRecipe *recipes, int count)
{
    if (count <= 0) return;
    cuda_context_init();
    ALICE_ASSERT(count <= 65535, "%d crop recipes in one render call (at most 65535)", count);
    const size_t bytes = (size_t)count * sizeof *g_recipes;
    if (g_recipes_copied)
        CUDA_WAIT_EVENT(g_recipes_copied);  /* the previous copy has read the staging buffer */
    else
        CUDA_CHECK(cudaEventCreateWithFlags(&g_recipes_copied, cudaEventDisableTiming));
    if (count > g_recipe_capacity) {
        /* Freed after the stream has passed every earlier render that reads it. */
        CUDA_WAIT_STREAM(cuda_stream());
        cuda_release(g_recipes);
        if (g_recipes_host) CUDA_CHECK(cudaFreeHost(g_recipes_host));
        g_recipes = (CropRecipe *)cuda_alloc(bytes);
        CUDA_CHECK(cudaMallocHost((void **)&g_recipes_host, bytes));
        g_recipe_capacity = count;
    }
    memcpy(g_recipes_host, recipes, bytes);
    CUDA_CHECK(cudaMemcpyAsync(g_recipes, g_recipes_host, bytes, cudaMemcpyHostToDevice,
                               cuda_stream()));
    CUDA_CHECK(cudaEventRecord(g_recipes_copied, cuda_stream()));
    size_t largest = 0;
    for (int i = 0; i < count; i++) {
        size_t n = (size_t)recipes[i].size[0] * recipes[i].size[1] * recipes[i].size[2];
        largest = n > largest ? n : largest;
    }
    dim3 grid(grid_for(largest) < 4096 ? grid_for(largest) : 4096, (unsigned)count);
    render_crops_kernel<<<grid, kThreads, 0, cuda_stream()>>>(g_recipes);
    CUDA_CHECK_LAUNCH();
}
