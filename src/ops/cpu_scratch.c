#include "ops/cpu_scratch.h"

#include <stdlib.h>

#include "core/check.h"

static _Thread_local float *scratch_ptr[CPU_SCRATCH_SLOTS];
static _Thread_local size_t scratch_len[CPU_SCRATCH_SLOTS];

float *cpu_scratch(CpuScratchSlot slot, size_t n)
{
    if (n > scratch_len[slot]) {
        free(scratch_ptr[slot]);
        scratch_ptr[slot] = xmalloc(n * sizeof(float));
        scratch_len[slot] = n;
    }
    return scratch_ptr[slot];
}
