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

/* Width of the float4 path: 4 floats = 16 bytes per load/store. */
constexpr int kFloatsPerVec = kVecBytes / (int)sizeof(float);

static __global__ void add_kernel(float *out, const float *a, const float *b, size_t n,
                                  bool vectorised)
{
    constexpr int W = kFloatsPerVec;
    /* out may alias a or b (in-place add): each chunk is read whole before it is written. */
    grid_stride_split<W>(
        n, vectorised,
        [=](size_t i) {
            const Pack<float, W> va = load_pack<float, W>(a + i), vb = load_pack<float, W>(b + i);
            Pack<float, W> vo;
#pragma unroll
            for (int k = 0; k < W; k++) vo.v[k] = va.v[k] + vb.v[k];
            store_pack(out + i, vo);
        },
        [=](size_t i) { out[i] = a[i] + b[i]; });
}

void cuda_add(float *out, const float *a, const float *b, size_t n)
{
    if (n == 0) return;
    const bool vec = aligned16(out, a, b);
    add_kernel<<<grid_for_split(n, vec, kFloatsPerVec), kThreads, 0, cuda_stream()>>>(out, a, b,
                                                                                     n, vec);
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

/* GELU, exact erf form, as PyTorch's default nn.GELU(): the CPU backend's formula
 * (ops/cpu_math.h, Abramowitz & Stegun erf rather than CUDA's erff) with the same roundings,
 * so the two backends agree bit for bit. T: float, or __nv_bfloat16 for bf16 activations
 * (x widened exactly, y rounded once, so bf16 results match the CPU's bit for bit too). */
template <typename T>
static __global__ void gelu_fwd_kernel(T *y, const T *x, size_t n, bool vectorised)
{
    constexpr int W = kVecBytes / (int)sizeof(T); /* 4 floats or 8 bf16 per 16 bytes */
    grid_stride_split<W>(
        n, vectorised,
        [=](size_t i) {
            const Pack<T, W> vx = load_pack<T, W>(x + i);
            Pack<T, W> vy;
#pragma unroll
            for (int k = 0; k < W; k++) vy.v[k] = narrow_to<T>(gelu_erf(widen(vx.v[k])));
            store_pack(y + i, vy);
        },
        [=](size_t i) { y[i] = narrow_to<T>(gelu_erf(widen(x[i]))); });
}

template <typename T> static void launch_gelu_fwd(T *y, const T *x, size_t n)
{
    if (n == 0) return;
    const bool vec = aligned16(y, x);
    constexpr int W = kVecBytes / (int)sizeof(T);
    gelu_fwd_kernel<T><<<grid_for_split(n, vec, W), kThreads, 0, cuda_stream()>>>(y, x, n, vec);
    CUDA_CHECK_LAUNCH();
}

void cuda_gelu_fwd(float *y, const float *x, size_t n) { launch_gelu_fwd(y, x, n); }

void cuda_gelu_fwd_bf16(bf16_t *y, const bf16_t *x, size_t n)
{
    launch_gelu_fwd(as_nv(y), as_nv(x), n);
}

/* dx, dy are fp32 whatever T is; W follows x (8 bf16 = one 16-byte load, the fp32 sides then
 * take two). */
template <typename T>
static __global__ void gelu_bwd_kernel(float *dx, const float *dy, const T *x, size_t n,
                                       bool vectorised)
{
    constexpr int W = kVecBytes / (int)sizeof(T);
    grid_stride_split<W>(
        n, vectorised,
        [=](size_t i) {
            const Pack<T, W> vx = load_pack<T, W>(x + i);
            const Pack<float, W> vdy = load_pack<float, W>(dy + i);
            Pack<float, W> vdx;
#pragma unroll
            for (int k = 0; k < W; k++) vdx.v[k] = vdy.v[k] * gelu_erf_slope(widen(vx.v[k]));
            store_pack(dx + i, vdx);
        },
        [=](size_t i) { dx[i] = dy[i] * gelu_erf_slope(widen(x[i])); });
}

template <typename T> static void launch_gelu_bwd(float *dx, const float *dy, const T *x, size_t n)
{
    if (n == 0 || !dx) return;
    const bool vec = aligned16(dx, dy, x);
    constexpr int W = kVecBytes / (int)sizeof(T);
    gelu_bwd_kernel<T><<<grid_for_split(n, vec, W), kThreads, 0, cuda_stream()>>>(dx, dy, x, n,
                                                                                  vec);
    CUDA_CHECK_LAUNCH();
}

void cuda_gelu_bwd(float *dx, const float *dy, const float *x, size_t n)
{
    launch_gelu_bwd(dx, dy, x, n);
}

void cuda_gelu_bwd_bf16(float *dx, const float *dy, const bf16_t *x, size_t n)
{
    launch_gelu_bwd(dx, dy, as_nv(x), n);
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
