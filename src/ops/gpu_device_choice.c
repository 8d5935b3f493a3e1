#include "ops/gpu_device_choice.h"

#include <stdlib.h>
#include <string.h>

#include "core/check.h"

/* One rank's visible devices: its key split at the commas (tokens point into the key). */
typedef struct {
    const char **id;
    size_t *len;
    int count;
} VisibleSet;

static VisibleSet parse_key(const char *key, size_t stride, int max_count)
{
    VisibleSet s = {xmalloc((size_t)(max_count ? max_count : 1) * sizeof(char *)),
                    xmalloc((size_t)(max_count ? max_count : 1) * sizeof(size_t)), 0};
    const size_t used = strnlen(key, stride);
    for (size_t at = 0; at < used && s.count < max_count;) {
        const char *comma = memchr(key + at, ',', used - at);
        const size_t len = comma ? (size_t)(comma - (key + at)) : used - at;
        s.id[s.count] = key + at;
        s.len[s.count++] = len;
        at += len + 1;
    }
    return s;
}

static int same_id(const char *a, size_t la, const char *b, size_t lb)
{
    return la == lb && memcmp(a, b, la) == 0;
}

/* How many ranks in taken[0 .. n) took the device named (id, len); taken[r] < 0: not yet. */
static int load_of(const VisibleSet *sets, const int *taken, int n, const char *id, size_t len)
{
    int load = 0;
    for (int r = 0; r < n; r++)
        if (taken[r] >= 0) load += same_id(sets[r].id[taken[r]], sets[r].len[taken[r]], id, len);
    return load;
}

/* Node ranks in the order they choose: fewest visible devices first (the most constrained),
 * then node rank. */
static void choosing_order(const VisibleSet *sets, int n, int *order)
{
    for (int r = 0; r < n; r++) order[r] = r;
    for (int i = 1; i < n; i++)   /* insertion sort: a node's ranks, a handful */
        for (int j = i; j > 0 && sets[order[j]].count < sets[order[j - 1]].count; j--) {
            const int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
}

GpuDeviceChoice gpu_device_choice(const char *keys, size_t stride, int n, int me, int count)
{
    ALICE_ASSERT(n > 0 && me >= 0 && me < n && count > 0,
                 "gpu_device_choice: node rank %d of %d ranks, %d devices", me, n, count);
    /* stride bytes hold at most stride / 2 ids (one character and a comma each) */
    const int max_ids = (int)(stride / 2 + 1);
    VisibleSet *sets = xmalloc((size_t)n * sizeof *sets);
    int *taken = xmalloc((size_t)n * sizeof(int)), *order = xmalloc((size_t)n * sizeof(int));
    for (int r = 0; r < n; r++) {
        sets[r] = parse_key(keys + (size_t)r * stride, stride, max_ids);
        taken[r] = -1;
    }
    /* every rank parses every key alike, so all compute the same assignment */
    ALICE_ASSERT(sets[me].count <= count, "gpu_device_choice: the key of node rank %d names %d "
                 "devices, it sees %d", me, sets[me].count, count);
    choosing_order(sets, n, order);
    for (int k = 0; k < n; k++) {
        const VisibleSet *s = &sets[order[k]];
        int best = 0, best_load = -1;
        for (int d = 0; d < s->count; d++) {   /* the least used; ties: the first visible */
            const int load = load_of(sets, taken, n, s->id[d], s->len[d]);
            if (best_load < 0 || load < best_load) best = d, best_load = load;
        }
        taken[order[k]] = s->count ? best : -1;
    }
    GpuDeviceChoice c = {taken[me] >= 0 ? taken[me] : 0, 1, 1};
    if (taken[me] >= 0) {
        const char *id = sets[me].id[taken[me]];
        const size_t len = sets[me].len[taken[me]];
        c.sharing = load_of(sets, taken, n, id, len);
        for (int r = 0; r < me; r++)
            if (taken[r] >= 0 && same_id(sets[r].id[taken[r]], sets[r].len[taken[r]], id, len))
                c.first_on_device = 0;
    }
    for (int r = 0; r < n; r++) free(sets[r].id), free(sets[r].len);
    free(sets);
    free(taken);
    free(order);
    return c;
}
