/* Training data on the GPU (src/ops/gpu_data.h): pinned host buffers, device buffers for the
 * loader's volume cache and batches, and the kernel that renders crop recipes. One thread per
 * output voxel runs sv_render_linear from data/sample_voxel.h, which crop_recipe_render_cpu
 * runs in a loop and which the CPU tests hold bit for bit to the CPU loader's crops, so a GPU
 * crop is the CPU crop (noise words included; gamma goes through the device powf, within
 * 2 ulp of the host's). */
#include <math.h>
#include <stdint.h>

#include "cuda/cuda_context.h"
#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_ops.h"
#include "data/sample_voxel.h"
#include "ops/gpu_data.h"

/* Recipes of one render call live here on the device; grows on demand. Only the render
 * path touches it, in stream order, so one buffer serves consecutive batches. */
static CropRecipe *g_recipes;
static int g_recipe_capacity;

void *gpu_pinned_alloc(size_t bytes)
{
    void *p = NULL;
    /* The rank's own device first, so no stray context is made on device 0. Portable: pinned
     * for every device context anyway. */
    cuda_context_init();
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
    if (ptr) CUDA_CHECK(cudaFreeHost(ptr));
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
    if (count > g_recipe_capacity) {
        /* Freed after the stream has passed every earlier render that reads it. */
        CUDA_CHECK(cudaStreamSynchronize(cuda_stream()));
        cuda_release(g_recipes);
        g_recipes = (CropRecipe *)cuda_alloc((size_t)count * sizeof *g_recipes);
        g_recipe_capacity = count;
    }
    /* From pageable memory: returns once the host array is staged, so it may be reused. */
    CUDA_CHECK(cudaMemcpyAsync(g_recipes, recipes, (size_t)count * sizeof *g_recipes,
                               cudaMemcpyHostToDevice, cuda_stream()));
    size_t largest = 0;
    for (int i = 0; i < count; i++) {
        size_t n = (size_t)recipes[i].size[0] * recipes[i].size[1] * recipes[i].size[2];
        largest = n > largest ? n : largest;
    }
    dim3 grid(grid_for(largest) < 4096 ? grid_for(largest) : 4096, (unsigned)count);
    render_crops_kernel<<<grid, kThreads, 0, cuda_stream()>>>(g_recipes);
    CUDA_CHECK_LAUNCH();
}
