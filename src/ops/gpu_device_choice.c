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

/* The rank in taken[0 .. n) holding the device named (id, len), or -1. */
static int holder_of(const VisibleSet *sets, const int *taken, int n, const char *id, size_t len)
{
    for (int r = 0; r < n; r++)
        if (taken[r] >= 0 && same_id(sets[r].id[taken[r]], sets[r].len[taken[r]], id, len))
            return r;
    return -1;
}

/* Kuhn's augmenting path for rank r: a device of r's set that is free, or whose holder can
 * move to another device along such a path (visited[] marks the ranks already asked). On
 * success taken[] is updated along the path. */
static int augment(const VisibleSet *sets, int *taken, int n, int r, char *visited)
{
    visited[r] = 1;
    for (int d = 0; d < sets[r].count; d++) {
        const int h = holder_of(sets, taken, n, sets[r].id[d], sets[r].len[d]);
        if (h >= 0 && (visited[h] || !augment(sets, taken, n, h, visited))) continue;
        taken[r] = d;
        return 1;
    }
    return 0;
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

/* One device per rank for as many ranks as the sets allow (a maximum matching): in choosing
 * order each rank takes its first free device, else frees one along an augmenting path. Ranks
 * left over (more ranks than devices they reach) then take their least used device (ties: the
 * first they see), so sharing is as even as the sets allow. */
static void assign(const VisibleSet *sets, int n, const int *order, int *taken)
{
    char *visited = xmalloc((size_t)n);
    for (int k = 0; k < n; k++) {
        const int r = order[k];
        for (int d = 0; d < sets[r].count && taken[r] < 0; d++)
            if (holder_of(sets, taken, n, sets[r].id[d], sets[r].len[d]) < 0) taken[r] = d;
        if (taken[r] >= 0) continue;
        memset(visited, 0, (size_t)n);
        augment(sets, taken, n, r, visited);
    }
    free(visited);
    for (int k = 0; k < n; k++) {
        const int r = order[k];
        if (taken[r] >= 0 || sets[r].count == 0) continue;
        int best = 0, best_load = -1;
        for (int d = 0; d < sets[r].count; d++) {
            const int load = load_of(sets, taken, n, sets[r].id[d], sets[r].len[d]);
            if (best_load < 0 || load < best_load) best = d, best_load = load;
        }
        taken[r] = best;
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
    assign(sets, n, order, taken);
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
