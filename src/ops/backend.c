#include "ops/backend.h"

#include <stdint.h>
#include <string.h>

#include "core/check.h"

void backend_check_residual(const char *op, const void *out, DType out_type,
                            const float *residual, size_t n)
{
    if (!residual) return;
    ALICE_ASSERT(out_type == DTYPE_F32, "%s: a residual is added to an fp32 output only (this "
                 "one is bf16: it would round the residual stream)", op);
    const uintptr_t o = (uintptr_t)out, r = (uintptr_t)residual, bytes = n * sizeof(float);
    ALICE_ASSERT(n == 0 || o + bytes <= r || r + bytes <= o, "%s: the output overlaps the "
                 "residual it adds (pass distinct buffers)", op);
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
