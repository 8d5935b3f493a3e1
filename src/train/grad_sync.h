/* Gradient averaging over the ranks, overlapped with backward (PyTorch DDP's bucketing).
 *
 * The flat gradient buffer of a ParamSet is cut into buckets: contiguous float ranges aligned to
 * tensor boundaries, about bucket_floats each, built from the LAST registered tensor backwards
 * because backward produces gradients roughly in reverse registration order. While backward
 * runs, the model reports tensor ranges whose gradients are final (ParamSet.grad_ready); a
 * bucket whose every tensor has been reported is handed to the transport at once, a non-blocking
 * averaging all-reduce, so the reduction of late layers runs while earlier layers still compute.
 * grad_sync_finish launches whatever was not reported (a missed report costs overlap, never
 * correctness) and waits for everything before the optimiser reads the gradients.
 *
 * Every rank runs the same backward, so buckets complete, and are launched, in the same order
 * on every rank, as collectives require. The bookkeeping knows nothing of MPI or NCCL: the
 * transport (train/dist.h: MPI_Iallreduce on host memory, NCCL on a communication stream) is a
 * table of functions, and tests substitute a fake one. */
#ifndef ALICE_GRAD_SYNC_H
#define ALICE_GRAD_SYNC_H

#include <stddef.h>

#include "nn/params.h"

typedef struct {
    /* Starts buf[0..n) <- its mean over the ranks, without waiting for the result. */
    void (*launch)(void *ctx, float *buf, size_t n);
    /* Returns once every launched reduction is complete as far as later work is concerned
     * (host memory: finished and averaged; device memory: ordered before later kernels). */
    void (*wait_all)(void *ctx);
    /* Frees ctx (may be NULL). */
    void (*destroy)(void *ctx);
    void *ctx;
    /* 0 when a launch blocks anyway (ranks sharing a GPU reduce through host memory): then
     * buckets would only add synchronisations, and grad_sync reduces once after backward. */
    int can_overlap;
} GradTransport;

typedef struct {
    ParamRange tensors;       /* [first, end) tensor indices */
    size_t offset, count;     /* floats of the flat buffer, the tensors' alignment padding included */
    int unreported;           /* tensors still waiting for their final-gradient report this step */
    int launched;
} GradBucket;

typedef struct {
    ParamSet *ps;
    GradTransport transport;  /* launch NULL: one rank, nothing to reduce */
    int overlap;              /* 0: one all-reduce of the whole buffer after backward (asked
                               * for, or the transport cannot overlap) */
    GradBucket *buckets;      /* buckets[0] holds the last registered tensors */
    int nbuckets;
    int *bucket_of;           /* [ps->count] */
    unsigned char *reported;  /* [ps->count] this step */
    int in_step;              /* between grad_sync_begin and grad_sync_finish */
    /* Counters of the last step (tests, logs): reductions launched, and how many of them
     * were launched during backward rather than by grad_sync_finish. */
    int launches, launched_early;
} GradSync;

/* Buckets for the tensors of ps (allocated, trainable). bucket_floats 0 puts every tensor in a
 * bucket of its own. Takes ownership of transport.ctx (freed by grad_sync_free). */
void grad_sync_init(GradSync *gs, ParamSet *ps, size_t bucket_floats, int overlap,
                    GradTransport transport);
void grad_sync_free(GradSync *gs);
/* Before the step's backward: clears the reports and (overlap on, several ranks) attaches
 * grad_sync_report to the ParamSet. */
void grad_sync_begin(GradSync *gs);
/* The ParamSet's grad_ready hook: gradients of tensors [first, end) are final. Launches every
 * bucket this completes. Reports of tensors already reported are ignored. */
void grad_sync_report(void *gs, int first, int end);
/* After backward: launches the buckets not launched yet (in bucket order), waits for all,
 * detaches the hook. The gradients are then the means over the ranks. */
void grad_sync_finish(GradSync *gs);

#endif
