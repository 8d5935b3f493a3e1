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

void cuda_reduce_finish_on_device(double *partials, int count)
{
    reduce_finish_kernel<<<1, kThreads, 0, cuda_stream()>>>(partials + count, partials, count);
    CUDA_CHECK_LAUNCH();
}

double cuda_reduce_finish(double *partials, int count)
{
    CudaContext *ctx = cuda_context();
    cuda_reduce_finish_on_device(partials, count);
    CUDA_CHECK(cudaMemcpyAsync(ctx->host_result, partials + count, sizeof(double),
                               cudaMemcpyDeviceToHost, ctx->stream));
    CUDA_WAIT_STREAM(ctx->stream);
    return ctx->host_result[0];
}

/* The same fixed-order sum, divided on the device (the host did this division before the
 * losses stopped reading their values back: the same double operations, the same bits). */
static __global__ void reduce_finish_ratio_kernel(float *ratio, const double *partials, int count,
                                                  const double *den, double den_const)
{
    double acc = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) {
        const double d = den ? den[0] : den_const;
        ratio[0] = d == 0.0 ? 0.0f : (float)(acc / d);
    }
}

void cuda_reduce_finish_ratio(float *ratio, const double *partials, int count, const double *den,
                              double den_const)
{
    reduce_finish_ratio_kernel<<<1, kThreads, 0, cuda_stream()>>>(ratio, partials, count, den,
                                                                   den_const);
    CUDA_CHECK_LAUNCH();
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
