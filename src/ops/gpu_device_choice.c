#include "ops/gpu_device_choice.h"

#include <string.h>

#include "core/check.h"

GpuDeviceChoice gpu_device_choice(const char *keys, size_t stride, int n, int me, int count)
{
    ALICE_ASSERT(n > 0 && me >= 0 && me < n && count > 0,
                 "gpu_device_choice: node rank %d of %d ranks, %d devices", me, n, count);
    const char *mine = keys + (size_t)me * stride;
    GpuDeviceChoice c = {0, 0, 0};
    for (int r = 0; r < n; r++) {
        if (memcmp(keys + (size_t)r * stride, mine, stride) != 0) continue;
        c.peers++;
        if (r < me) c.order++;
    }
    c.index = c.order % count;
    return c;
}
