/* Elementwise ops and whole-buffer reductions of the CUDA backend. */
#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_ops.h"
#include "ops/cpu_math.h"

static __global__ void axpby_kernel(float *y, const float *x, float a, float b, size_t n)
{
    GRID_STRIDE(i, n) y[i] = a * x[i] + b * y[i];
}

/* b == 0 ignores y (the BLAS convention the CPU backend follows): 0 * NaN garbage in a fresh
 * buffer would otherwise come out as NaN. */
static __global__ void ax_kernel(float *y, const float *x, float a, size_t n)
{
    GRID_STRIDE(i, n) y[i] = a * x[i];
}

void cuda_axpby(float *y, const float *x, float a, float b, size_t n)
{
    if (n == 0) return;
    if (b == 0.0f)
        ax_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(y, x, a, n);
    else
        axpby_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(y, x, a, b, n);
    CUDA_CHECK_LAUNCH();
}

static __global__ void scale_kernel(float *x, float a, size_t n)
{
    GRID_STRIDE(i, n) x[i] *= a;
}

void cuda_scale(float *x, float a, size_t n)
{
    if (n == 0) return;
    scale_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(x, a, n);
    CUDA_CHECK_LAUNCH();
}

static __global__ void add_kernel(float *out, const float *a, const float *b, size_t n)
{
    GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}

void cuda_add(float *out, const float *a, const float *b, size_t n)
{
    if (n == 0) return;
    add_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(out, a, b, n);
    CUDA_CHECK_LAUNCH();
}

struct SquareOf {
    const float *x;
    __device__ double operator()(size_t i) const { double v = x[i]; return v * v; }
};

double cuda_sum_squares(const float *x, size_t n)
{
    if (n == 0) return 0.0;
    return device_sum(n, SquareOf{x});
}

struct NonFinite {
    const float *x;
    __device__ double operator()(size_t i) const { return isfinite(x[i]) ? 0.0 : 1.0; }
};

int cuda_all_finite(const float *x, size_t n)
{
    if (n == 0) return 1;
    return device_sum(n, NonFinite{x}) == 0.0;
}

/* GELU, exact erf form, as PyTorch's default nn.GELU(): the CPU backend's formula
 * (ops/cpu_math.h, Abramowitz & Stegun erf rather than CUDA's erff) with the same roundings,
 * so the two backends agree bit for bit. T: float, or __nv_bfloat16 for bf16 activations
 * (x widened exactly, y rounded once, so bf16 results match the CPU's bit for bit too). */
template <typename T> static __global__ void gelu_fwd_kernel(T *y, const T *x, size_t n)
{
    GRID_STRIDE(i, n) y[i] = narrow_to<T>(gelu_erf(widen(x[i])));
}

void cuda_gelu_fwd(float *y, const float *x, size_t n)
{
    if (n == 0) return;
    gelu_fwd_kernel<float><<<grid_for(n), kThreads, 0, cuda_stream()>>>(y, x, n);
    CUDA_CHECK_LAUNCH();
}

void cuda_gelu_fwd_bf16(bf16_t *y, const bf16_t *x, size_t n)
{
    if (n == 0) return;
    gelu_fwd_kernel<__nv_bfloat16><<<grid_for(n), kThreads, 0, cuda_stream()>>>(as_nv(y),
                                                                                 as_nv(x), n);
    CUDA_CHECK_LAUNCH();
}

template <typename T>
static __global__ void gelu_bwd_kernel(float *dx, const float *dy, const T *x, size_t n)
{
    GRID_STRIDE(i, n) dx[i] = dy[i] * gelu_erf_slope(widen(x[i]));
}

void cuda_gelu_bwd(float *dx, const float *dy, const float *x, size_t n)
{
    if (n == 0 || !dx) return;
    gelu_bwd_kernel<float><<<grid_for(n), kThreads, 0, cuda_stream()>>>(dx, dy, x, n);
    CUDA_CHECK_LAUNCH();
}

void cuda_gelu_bwd_bf16(float *dx, const float *dy, const bf16_t *x, size_t n)
{
    if (n == 0 || !dx) return;
    gelu_bwd_kernel<__nv_bfloat16><<<grid_for(n), kThreads, 0, cuda_stream()>>>(dx, dy,
                                                                                 as_nv(x), n);
    CUDA_CHECK_LAUNCH();
}

static __global__ void leaky_relu_fwd_kernel(float *y, const float *x, size_t n, float slope)
{
    GRID_STRIDE(i, n) { const float v = x[i]; y[i] = v > 0.0f ? v : slope * v; }
}

void cuda_leaky_relu_fwd(float *y, const float *x, size_t n, float slope)
{
    if (n == 0) return;
    leaky_relu_fwd_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(y, x, n, slope);
    CUDA_CHECK_LAUNCH();
}

static __global__ void leaky_relu_bwd_kernel(float *dx, const float *dy, const float *x,
                                             size_t n, float slope)
{
    GRID_STRIDE(i, n) dx[i] = x[i] > 0.0f ? dy[i] : slope * dy[i];
}

void cuda_leaky_relu_bwd(float *dx, const float *dy, const float *x, size_t n, float slope)
{
    if (n == 0 || !dx) return;
    leaky_relu_bwd_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(dx, dy, x, n, slope);
    CUDA_CHECK_LAUNCH();
}
