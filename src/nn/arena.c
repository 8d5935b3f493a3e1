#include "nn/arena.h"

#include <string.h>

#include "core/check.h"
#include "core/sysmem.h"

#define ARENA_ALIGN 256   /* bytes: keeps every buffer aligned for vector loads and cuBLAS */

void arena_plan(Arena *a, const AliceBackend *be, DType act_type)
{
    memset(a, 0, sizeof *a);
    a->be = be;
    a->act_type = act_type;
    a->planning = 1;
}

void arena_commit(Arena *a)
{
    ALICE_ASSERT(a->planning, "arena_commit without a planning pass");
    a->cap = a->used;
    /* Fail before allocating (and before any compute) when host memory cannot hold the plan. */
    if (!strcmp(a->be->name, "cpu")) {
        double avail = host_available_bytes();
        if ((double)a->cap > 0.95 * avail)
            alice_die("the activations of this model and batch need %.2f GiB, but %.2f GiB of memory "
                      "are available: lower batch or crop, or the model size (embed_dim, depth, "
                      "mlp_dim)", a->cap / 1073741824.0, avail / 1073741824.0);
    }
    a->base = a->be->alloc(a->cap ? a->cap : ARENA_ALIGN);
    a->used = 0;
    a->planning = 0;
}

static void *arena_bytes(Arena *a, size_t bytes)
{
    size_t at = a->used;
    a->used += (bytes + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (a->planning) return (void *)(ARENA_ALIGN + at);   /* placeholder, never dereferenced */
    ALICE_ASSERT(a->used <= a->cap, "activation arena overflow: layout differs from the plan "
                 "(%zu > %zu bytes)", a->used, a->cap);
    return a->base + at;
}

float *arena_floats(Arena *a, size_t n) { return arena_bytes(a, n * sizeof(float)); }
int *arena_ints(Arena *a, size_t n) { return arena_bytes(a, n * sizeof(int)); }

void arena_free(Arena *a)
{
    if (a->base) a->be->release(a->base);
    memset(a, 0, sizeof *a);
}
