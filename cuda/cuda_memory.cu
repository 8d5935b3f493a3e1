/* Device memory of the CUDA backend. Transfers run on the backend's stream; upload and
 * download return only when the host buffer may be reused (the caller's buffer is pageable). */
#include <map>
#include <mutex>
#include <string.h>

#include "cuda/cuda_context.h"
#include "cuda/cuda_graph.h"
#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_ops.h"

/* Sizes of live allocations, for the peak-memory figure of benchmarks. */
static std::map<void *, size_t> g_sizes;

void *cuda_alloc(size_t bytes)
{
    if (bytes == 0) return NULL;
    void *p = NULL;
    if (cuda_graph_capturing()) {
        /* Recording a graph (cuda/cuda_graph.h): an allocation inside the recorded work would
         * not be repeated by a replay. Spoil the recording, but hand out valid memory. */
        cuda_graph_spoil("a device allocation of %zu bytes while recording", bytes);
        p = cuda_graph_malloc_relaxed(bytes);
    }
    cudaError_t e = p ? cudaSuccess : cudaMalloc(&p, bytes);
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
        alice_die("out of GPU memory: %.2f GiB requested, %.2f GiB free of %.2f GiB; reduce "
                  "batch or crop, or use a larger GPU", (double)bytes / (1u << 30),
                  (double)free_b / (1u << 30), (double)total_b / (1u << 30));
    }
    CUDA_CHECK(e);
    CudaContext *ctx = cuda_context();
    g_sizes[p] = bytes;
    ctx->live_bytes += bytes;
    if (ctx->live_bytes > ctx->peak_bytes) ctx->peak_bytes = ctx->live_bytes;
    return p;
}

void cuda_release(void *p)
{
    if (!p) return;
    CudaContext *ctx = cuda_context();
    std::map<void *, size_t>::iterator it = g_sizes.find(p);
    if (it != g_sizes.end()) {
        ctx->live_bytes -= it->second;
        g_sizes.erase(it);
    }
    if (cuda_graph_capturing()) {
        /* Recording a graph: cudaFree is illegal now, and recorded work may name p. */
        cuda_graph_spoil("a device buffer freed while recording");
        cuda_graph_free_after_capture(p);
        return;
    }
    CUDA_WAIT_BEFORE_DEVICE_SYNC();  /* cudaFree's implicit wait, made a watched one */
    CUDA_CHECK(cudaFree(p));  /* implicitly waits for kernels that may still use p */
}

void cuda_upload(void *dst, const void *host_src, size_t bytes)
{
    if (bytes == 0) return;
    if (cuda_graph_capturing()) {
        /* A pageable copy cannot be recorded, and a replay would not repeat the host's part:
         * spoil the recording (the step then runs eagerly, this upload included). */
        cuda_graph_spoil("an upload of %zu bytes from host memory while recording", bytes);
        return;
    }
    CUDA_WAIT_BEFORE_PAGEABLE_COPY(cuda_stream());
    CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, cuda_stream()));
    CUDA_WAIT_STREAM(cuda_stream());
}

/* Downloads up to kDownloadBounceBytes (the step's loss values, metrics) go through the
 * context's pinned buffer and a plain stream wait: into pageable memory the driver stages the
 * copy itself, and the paper step's 16-byte loss read-back was followed by 75-90 us of idle GPU
 * before the next launch (runs 9 and 10, H200; the gradient norm's read-back through pinned
 * memory was not among the longest gaps). The lock keeps the buffer to one download at a
 * time. */
static std::mutex g_bounce_lock;

void cuda_download(void *host_dst, const void *src, size_t bytes)
{
    if (bytes == 0) return;
    if (cuda_graph_capturing()) {
        /* Nothing recorded has run, so there is nothing to read: spoil the recording (host_dst
         * is left as it was; the step then runs eagerly and reads the real values). */
        cuda_graph_spoil("a download of %zu bytes to host memory while recording", bytes);
        return;
    }
    if (bytes <= kDownloadBounceBytes) {
        std::lock_guard<std::mutex> hold(g_bounce_lock);
        void *bounce = cuda_context()->download_bounce;
        CUDA_CHECK(cudaMemcpyAsync(bounce, src, bytes, cudaMemcpyDeviceToHost, cuda_stream()));
        CUDA_WAIT_STREAM(cuda_stream());
        memcpy(host_dst, bounce, bytes);
        return;
    }
    CUDA_WAIT_BEFORE_PAGEABLE_COPY(cuda_stream());
    CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, cuda_stream()));
    CUDA_WAIT_STREAM(cuda_stream());
}

void cuda_copy(void *dst, const void *src, size_t bytes)
{
    if (bytes == 0 || dst == src) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cuda_stream()));
}

static __global__ void fill_kernel(float *x, float value, size_t n)
{
    GRID_STRIDE(i, n) x[i] = value;
}

void cuda_fill(float *x, float value, size_t n)
{
    if (n == 0) return;
    fill_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(x, value, n);
    CUDA_CHECK_LAUNCH();
}

void cuda_synchronize(void) { CUDA_WAIT_STREAM(cuda_stream()); }
