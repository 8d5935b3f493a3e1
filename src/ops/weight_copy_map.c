#include "ops/weight_copy_map.h"

#include <string.h>

#include "core/check.h"

static uintptr_t end_of(const WeightCopy *e) { return e->base + e->floats * sizeof(float); }

void weight_copy_map_add(WeightCopyMap *m, const float *base, size_t floats)
{
    const uintptr_t b = (uintptr_t)base, end = b + floats * sizeof(float);
    for (int i = 0; i < m->count; i++) {
        WeightCopy *e = &m->entry[i];
        if (e->base == b) {
            ALICE_ASSERT(floats <= e->floats || e->copy == NULL,
                         "weight buffer at %p grew from %zu to %zu floats after its copy was made",
                         (const void *)base, e->floats, floats);
            e->floats = floats;
            e->current = 0;
            return;
        }
        ALICE_ASSERT(end <= e->base || b >= end_of(e),
                     "weight buffer at %p (%zu floats) overlaps one registered at %p",
                     (const void *)base, floats, (const void *)e->base);
    }
    ALICE_ASSERT(m->count < WEIGHT_COPY_MAX_BUFFERS,
                 "more than %d weight buffers registered; raise WEIGHT_COPY_MAX_BUFFERS",
                 WEIGHT_COPY_MAX_BUFFERS);
    m->entry[m->count++] = (WeightCopy){b, floats, NULL, 0};
}

WeightCopy weight_copy_map_remove(WeightCopyMap *m, const float *base)
{
    for (int i = 0; i < m->count; i++)
        if (m->entry[i].base == (uintptr_t)base) {
            WeightCopy out = m->entry[i];
            m->entry[i] = m->entry[--m->count];
            return out;
        }
    WeightCopy none;
    memset(&none, 0, sizeof none);
    return none;
}

WeightCopy *weight_copy_map_find(WeightCopyMap *m, const float *p, size_t span_floats)
{
    const uintptr_t a = (uintptr_t)p, end = a + span_floats * sizeof(float);
    for (int i = 0; i < m->count; i++) {
        WeightCopy *e = &m->entry[i];
        /* Whole elements only: an operand at an odd byte offset is no weight tensor. */
        if (a >= e->base && end <= end_of(e) && (a - e->base) % sizeof(float) == 0) return e;
    }
    return NULL;
}

void weight_copy_map_written(WeightCopyMap *m, const void *dst, size_t bytes)
{
    if (bytes == 0) return;
    const uintptr_t a = (uintptr_t)dst, end = a + bytes;
    for (int i = 0; i < m->count; i++) {
        WeightCopy *e = &m->entry[i];
        if (a < end_of(e) && end > e->base) e->current = 0;
    }
}
