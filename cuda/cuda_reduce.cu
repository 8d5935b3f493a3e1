/* Second stage of the deterministic device-wide sums and the column sums' arrival counters
 * (cuda_kernels.cuh). */
#include "cuda/cuda_kernels.cuh"

/* One block sums every partial in a fixed order (strided lanes, then the block tree). */
static __global__ void reduce_finish_kernel(double *out, const double *partials, int count)
{
    double acc = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) out[0] = acc;
}

double cuda_reduce_finish(double *partials, int count)
{
    CudaContext *ctx = cuda_context();
    double *total = partials + count;
    reduce_finish_kernel<<<1, kThreads, 0, ctx->stream>>>(total, partials, count);
    CUDA_CHECK_LAUNCH();
    CUDA_CHECK(cudaMemcpyAsync(ctx->host_result, total, sizeof(double), cudaMemcpyDeviceToHost,
                               ctx->stream));
    CUDA_WAIT_STREAM(ctx->stream);
    return ctx->host_result[0];
}

/* The column sums' arrival counters (colsum_kernel in cuda_kernels.cuh). Every column sum's
 * last block per tile leaves its counter at zero, so the array is all zero between column
 * sums; a fresh (grown) array is zeroed here, in stream order before the kernel that uses it.
 * A failed kernel cannot leave a counter behind either: CUDA errors are sticky and fatal. */
unsigned *cuda_colsum_arrivals(unsigned tiles)
{
    CudaContext *ctx = cuda_context();
    const size_t had = ctx->scratch_bytes[SCRATCH_COLSUM_ARRIVALS];
    unsigned *arrivals =
        (unsigned *)cuda_scratch(SCRATCH_COLSUM_ARRIVALS, (size_t)tiles * sizeof(unsigned));
    const size_t has = ctx->scratch_bytes[SCRATCH_COLSUM_ARRIVALS];
    if (has != had) CUDA_CHECK(cudaMemsetAsync(arrivals, 0, has, ctx->stream));
    return arrivals;
}
