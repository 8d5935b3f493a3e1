#include "ops/backend.h"

#include <string.h>

#include "core/check.h"

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
