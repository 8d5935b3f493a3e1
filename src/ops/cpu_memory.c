/* CPU backend: memory. "Backend memory" is plain host memory, 64-byte aligned so that the
 * vector loops and OpenBLAS see cache-line aligned rows. */
#include "ops/cpu_ops.h"

#include <stdlib.h>
#include <string.h>

#include "core/check.h"

enum { CPU_ALIGNMENT = 64 };

void *cpu_alloc(size_t bytes)
{
    /* aligned_alloc wants a size that is a multiple of the alignment. */
    size_t rounded = (bytes + CPU_ALIGNMENT - 1) / CPU_ALIGNMENT * CPU_ALIGNMENT;
    if (rounded == 0) rounded = CPU_ALIGNMENT;
    void *p = aligned_alloc(CPU_ALIGNMENT, rounded);
    if (!p) ALICE_FATAL("out of host memory allocating %zu bytes for the CPU backend", bytes);
    return p;
}

void cpu_release(void *p) { free(p); }

void cpu_upload(void *dst, const void *host_src, size_t bytes)
{
    if (bytes) memcpy(dst, host_src, bytes);
}

void cpu_download(void *host_dst, const void *src, size_t bytes)
{
    if (bytes) memcpy(host_dst, src, bytes);
}

void cpu_copy(void *dst, const void *src, size_t bytes)
{
    if (bytes && dst != src) memmove(dst, src, bytes);
}

void cpu_fill(float *x, float value, size_t n)
{
    #pragma omp parallel for simd schedule(static) if (n > CPU_OMP_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++) x[i] = value;
}

/* Every CPU op completes before it returns. */
void cpu_synchronize(void) {}

void cpu_weights_hint(const float *data, size_t n) { (void)data; (void)n; }

void cpu_weights_forget(const float *data) { (void)data; }
