#include "volume.h"

#include <stdlib.h>

#include "core/check.h"

void *volume_alloc_with(VolumeAllocFn alloc, size_t bytes)
{
    return alloc ? alloc(bytes) : xmalloc(bytes);
}

void volume_free(Volume *v)
{
    free(v->image);
    free(v->label);
    v->image = NULL;
    v->label = NULL;
}
