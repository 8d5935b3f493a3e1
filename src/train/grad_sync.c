#include "train/grad_sync.h"

#include <stdlib.h>
#include <string.h>

#include "core/check.h"

/* Floats tensor i occupies in the flat buffers, up to the next tensor (alignment padding
 * included, so the buckets tile the whole buffer). */
static size_t tensor_extent(const ParamSet *ps, int i)
{
    size_t next = i + 1 < ps->count ? ps->info[i + 1].offset : ps->total;
    return next - ps->info[i].offset;
}

static void build_buckets(GradSync *gs, size_t bucket_floats)
{
    const ParamSet *ps = gs->ps;
    gs->buckets = xcalloc(ps->count > 0 ? (size_t)ps->count : 1, sizeof *gs->buckets);
    gs->bucket_of = xcalloc(ps->count > 0 ? (size_t)ps->count : 1, sizeof *gs->bucket_of);
    gs->reported = xcalloc(ps->count > 0 ? (size_t)ps->count : 1, 1);
    gs->nbuckets = 0;
    int end = ps->count;
    size_t floats = 0;
    /* From the last tensor backwards: backward finishes the late tensors first. */
    for (int i = ps->count - 1; i >= 0; i--) {
        floats += tensor_extent(ps, i);
        gs->bucket_of[i] = gs->nbuckets;
        if (floats >= bucket_floats || i == 0) {
            GradBucket *b = &gs->buckets[gs->nbuckets++];
            b->tensors = (ParamRange){i, end};
            b->offset = ps->info[i].offset;
            b->count = floats;
            end = i;
            floats = 0;
        }
    }
}

void grad_sync_init(GradSync *gs, ParamSet *ps, size_t bucket_floats, int overlap,
                    GradTransport transport)
{
    memset(gs, 0, sizeof *gs);
    ALICE_ASSERT(ps->grad, "grad_sync_init on a ParamSet without gradients");
    gs->ps = ps;
    gs->transport = transport;
    gs->overlap = overlap && transport.can_overlap;
    build_buckets(gs, bucket_floats);
}

void grad_sync_free(GradSync *gs)
{
    if (gs->transport.destroy) gs->transport.destroy(gs->transport.ctx);
    free(gs->buckets);
    free(gs->bucket_of);
    free(gs->reported);
    memset(gs, 0, sizeof *gs);
}

static void launch_bucket(GradSync *gs, GradBucket *b)
{
    gs->transport.launch(gs->transport.ctx, gs->ps->grad + b->offset, b->count);
    b->launched = 1;
    gs->launches++;
}

void grad_sync_begin(GradSync *gs)
{
    ALICE_ASSERT(!gs->in_step, "grad_sync_begin twice without grad_sync_finish");
    gs->in_step = 1;
    gs->launches = gs->launched_early = 0;
    memset(gs->reported, 0, gs->ps->count > 0 ? (size_t)gs->ps->count : 1);
    for (int k = 0; k < gs->nbuckets; k++) {
        GradBucket *b = &gs->buckets[k];
        b->unreported = b->tensors.end - b->tensors.first;
        b->launched = 0;
    }
    if (gs->overlap && gs->transport.launch) {
        gs->ps->grad_ready = grad_sync_report;
        gs->ps->grad_ready_ctx = gs;
    }
}

void grad_sync_report(void *ctx, int first, int end)
{
    GradSync *gs = ctx;
    ALICE_ASSERT(gs->in_step, "gradient report outside grad_sync_begin .. grad_sync_finish");
    ALICE_ASSERT(first >= 0 && end <= gs->ps->count && first <= end,
                 "gradient report of tensors [%d, %d) outside the %d registered", first, end,
                 gs->ps->count);
    for (int i = first; i < end; i++) {
        if (gs->reported[i]) continue;
        gs->reported[i] = 1;
        GradBucket *b = &gs->buckets[gs->bucket_of[i]];
        if (--b->unreported == 0) {
            launch_bucket(gs, b);
            gs->launched_early++;
        }
    }
}

void grad_sync_finish(GradSync *gs)
{
    ALICE_ASSERT(gs->in_step, "grad_sync_finish without grad_sync_begin");
    gs->ps->grad_ready = NULL;
    gs->ps->grad_ready_ctx = NULL;
    gs->in_step = 0;
    if (!gs->transport.launch) return;
    if (!gs->overlap) {
        /* The plain path: one reduction of the whole buffer once backward is done. */
        gs->transport.launch(gs->transport.ctx, gs->ps->grad, gs->ps->total);
        gs->launches = 1;
    } else {
        for (int k = 0; k < gs->nbuckets; k++)
            if (!gs->buckets[k].launched) launch_bucket(gs, &gs->buckets[k]);
    }
    gs->transport.wait_all(gs->transport.ctx);
}
