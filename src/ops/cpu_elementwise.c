/* CPU backend: elementwise updates and whole-buffer reductions (gradient clipping, overflow
 * checks). Reductions accumulate in double with a static schedule, so the result depends only
 * on the data and the thread count. */
#include "ops/cpu_ops.h"

#include <math.h>

#include "ops/cpu_math.h" /* scaled_add_value, MATH_MUL: the CUDA backend's formula */

void cpu_axpby(float *y, const float *x, float a, float b, size_t n)
{
    if (b == 0.0f) {
        /* beta = 0 means "ignore y" (BLAS convention), even when y holds NaN garbage. */
        #pragma omp parallel for simd schedule(static) if (n > CPU_OMP_MIN_ELEMENTS)
        for (size_t i = 0; i < n; i++) y[i] = a * x[i];
        return;
    }
    #pragma omp parallel for simd schedule(static) if (n > CPU_OMP_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++) y[i] = a * x[i] + b * y[i];
}

void cpu_scale(float *x, float a, size_t n)
{
    #pragma omp parallel for simd schedule(static) if (n > CPU_OMP_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++) x[i] *= a;
}

void cpu_add(float *out, const float *a, const float *b, size_t n)
{
    #pragma omp parallel for simd schedule(static) if (n > CPU_OMP_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void cpu_add_group_scaled(float *out, const float *base, const float *y, const float *scale,
                          int groups, size_t n)
{
    /* (size_t)groups * n elements in all: threads split the groups, each group one pass */
    #pragma omp parallel for schedule(static) if ((size_t)groups * n > CPU_OMP_MIN_ELEMENTS)
    for (int g = 0; g < groups; g++) {
        const float s = scale[g];
        const size_t at = (size_t)g * n;
        if (base) {
            for (size_t i = 0; i < n; i++)
                out[at + i] = scaled_add_value(base[at + i], s, y[at + i]);
        } else {
            for (size_t i = 0; i < n; i++) out[at + i] = MATH_MUL(s, y[at + i]);
        }
    }
}

double cpu_sum_squares(const float *x, size_t n)
{
    double total = 0.0;
    #pragma omp parallel for simd schedule(static) reduction(+ : total) if (n > CPU_OMP_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++) total += (double)x[i] * (double)x[i];
    return total;
}

