/* CPU backend: activations (GELU, leaky ReLU) and row softmax. */
/* Lets GCC vectorise the clamps of cpu_expf/cpu_erff (see ops/cpu_math.h). */
#pragma GCC optimize("no-trapping-math")
#include "ops/cpu_ops.h"

#include <math.h>

#include "ops/cpu_math.h"

/* GELU's formula lives in ops/cpu_math.h, shared with the CUDA kernels (bit-identical). */
void cpu_gelu_fwd(float *y, const float *x, size_t n)
{
    #pragma omp parallel for simd schedule(static) if (n > CPU_OMP_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++) y[i] = gelu_erf(x[i]);
}

void cpu_gelu_bwd(float *dx, const float *dy, const float *x, size_t n)
{
    #pragma omp parallel for simd schedule(static) if (n > CPU_OMP_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++) dx[i] = dy[i] * gelu_erf_slope(x[i]);
}

void cpu_softmax_row(float *row, int cols)
{
    float max = -INFINITY;
    #pragma omp simd reduction(max : max)
    for (int c = 0; c < cols; c++) max = row[c] > max ? row[c] : max;
    float sum = 0.0f;
    #pragma omp simd reduction(+ : sum)
    for (int c = 0; c < cols; c++) {
        row[c] = cpu_expf(row[c] - max);
        sum += row[c];
    }
    float inv = 1.0f / sum;
    #pragma omp simd
    for (int c = 0; c < cols; c++) row[c] *= inv;
}

void cpu_softmax_fwd(float *y, const float *x, int rows, int cols)
{
    #pragma omp parallel for schedule(static) if ((long)rows * cols > CPU_OMP_MIN_ELEMENTS)
    for (int r = 0; r < rows; r++) {
        float *yr = y + (long)r * cols;
        const float *xr = x + (long)r * cols;
        if (yr != xr)
            for (int c = 0; c < cols; c++) yr[c] = xr[c];
        cpu_softmax_row(yr, cols);
    }
}

void cpu_softmax_bwd(float *dx, const float *dy, const float *y, int rows, int cols)
{
    /* dx = y * (dy - <dy, y>) */
    #pragma omp parallel for schedule(static) if ((long)rows * cols > CPU_OMP_MIN_ELEMENTS)
    for (int r = 0; r < rows; r++) {
        const float *dyr = dy + (long)r * cols, *yr = y + (long)r * cols;
        float *dxr = dx + (long)r * cols;
        float dot = 0.0f;
        #pragma omp simd reduction(+ : dot)
        for (int c = 0; c < cols; c++) dot += dyr[c] * yr[c];
        for (int c = 0; c < cols; c++) dxr[c] = yr[c] * (dyr[c] - dot);
    }
}

void cpu_leaky_relu_fwd(float *y, const float *x, size_t n, float slope)
{
    #pragma omp parallel for simd schedule(static) if (n > CPU_OMP_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++) y[i] = leaky_relu_value(x[i], slope);
}

void cpu_leaky_relu_bwd(float *dx, const float *dy, const float *x, size_t n, float slope)
{
    #pragma omp parallel for simd schedule(static) if (n > CPU_OMP_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++) dx[i] = leaky_relu_grad(x[i], dy[i], slope);
}
