/* Second stages of the deterministic reductions of cuda_kernels.cuh. */
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

static __global__ void colsum_finish_kernel(float *target, const float *partial, int chunks,
                                            int cols)
{
    GRID_STRIDE(c, cols) {
        float t = 0.0f;
        for (int k = 0; k < chunks; k++) t += partial[(size_t)k * cols + c];
        target[c] += t;
    }
}

void cuda_colsum_finish(float *target, const float *partial, int chunks, int cols)
{
    colsum_finish_kernel<<<grid_for(cols), kThreads, 0, cuda_stream()>>>(target, partial,
                                                                          chunks, cols);
    CUDA_CHECK_LAUNCH();
}
