#include "ops/backend.h"

#include <stdint.h>
#include <string.h>

#include "core/check.h"

static int ranges_overlap(const void *a, size_t a_bytes, const void *b, size_t b_bytes)
{
    const uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return a_bytes && b_bytes && x < y + b_bytes && y < x + a_bytes;
}

void backend_check_residual(const char *op, const void *out, DType out_type,
                            const float *residual, size_t n)
{
    if (!residual) return;
    ALICE_ASSERT(out_type == DTYPE_F32, "%s: a residual is added to an fp32 output only (this "
                 "one is bf16: it would round the residual stream)", op);
    const size_t bytes = n * sizeof(float);
    ALICE_ASSERT(!ranges_overlap(out, bytes, residual, bytes), "%s: the output overlaps the "
                 "residual it adds (pass distinct buffers)", op);
}

void backend_check_add_layernorm(const char *op, const float *sum, const float *x,
                                 const bf16_t *branch, size_t n)
{
    const size_t bytes = n * sizeof(float);
    ALICE_ASSERT(!ranges_overlap(sum, bytes, x, bytes) &&
                 !ranges_overlap(sum, bytes, branch, n * sizeof(bf16_t)),
                 "%s: the sum overlaps the residual stream or the branch it adds (pass distinct "
                 "buffers)", op);
}

#ifndef ALICE_CUDA
const AliceBackend *backend_cuda(void) { return NULL; }
#endif

const AliceBackend *backend_by_name(const char *name)
{
    if (strcmp(name, "cpu") == 0) return backend_cpu();
    if (strcmp(name, "cuda") == 0) {
        const AliceBackend *be = backend_cuda();
        if (!be)
            alice_die("device = cuda, but this alice was built without CUDA (nvcc was not "
                      "found at build time); rebuild with USE_CUDA=1 or use device = cpu");
        return be;
    }
    alice_die("unknown device '%s' (valid: cpu, cuda)", name);
}
