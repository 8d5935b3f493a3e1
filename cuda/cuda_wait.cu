/* Host waits of the CUDA backend that end the job instead of hanging when an NCCL collective
 * cannot complete (see cuda/cuda_wait.h). The decisions (poll, back off, give up) are
 * src/core/watched_wait.c, unit-tested on the CPU; this file only plugs CUDA and NCCL into its
 * hooks and words the errors. */
#include <time.h>

#include "cuda/cuda_context.h"
#include "cuda/cuda_graph.h"
#include "cuda/cuda_wait.h"
#include "cuda/nccl_watch.h"

extern "C" {
#include "core/timer.h"
#include "core/watched_wait.h"
}

/* The config default (nccl_timeout_s), for programs that never apply a configuration (tools). */
static double g_collective_timeout_s = 600.0;

void gpu_set_collective_timeout(double seconds)
{
    g_collective_timeout_s = seconds > 0.0 ? seconds : 0.0;
}

double cuda_collective_timeout_s(void) { return g_collective_timeout_s; }

enum WaitTargetKind { WAIT_ON_STREAM, WAIT_ON_EVENT };

struct WaitTarget {
    WaitTargetKind kind;
    cudaStream_t stream;
    cudaEvent_t event;
    const char *file;       /* the caller: errors are reported at its line */
    int line;
    char nccl_detail[512];  /* filled when the communicator reports an error */
};

static void check_at(cudaError_t e, const char *what, const WaitTarget *t)
{
    if (e != cudaSuccess)
        alice_fatal_at(t->file, t->line, "CUDA call failed: %s: %s (%s)", what,
                       cudaGetErrorString(e), cudaGetErrorName(e));
}

static int target_done(void *ctx)
{
    WaitTarget *t = (WaitTarget *)ctx;
    const cudaError_t e = t->kind == WAIT_ON_STREAM ? cudaStreamQuery(t->stream)
                                                    : cudaEventQuery(t->event);
    if (e == cudaErrorNotReady) return 0;
    check_at(e, t->kind == WAIT_ON_STREAM ? "cudaStreamQuery" : "cudaEventQuery", t);
    return 1;
}

static int communicator_error(void *ctx)
{
    WaitTarget *t = (WaitTarget *)ctx;
    return nccl_watch_async_error(t->nccl_detail, sizeof t->nccl_detail);
}

static double monotonic_now(void *ctx)
{
    (void)ctx;
    return wall_seconds();
}

static void host_sleep(void *ctx, double seconds)
{
    (void)ctx;
    struct timespec ts;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    nanosleep(&ts, NULL);   /* an early wake-up (signal) only means an earlier poll */
}

static void abort_communicator(void *ctx, WatchedWaitOutcome why)
{
    const WaitTarget *t = (const WaitTarget *)ctx;
    /* Said before the abort: ncclCommAbort may itself take a while to tear down. */
    log_warn("giving up on the GPU wait at %s:%d (%s); aborting the NCCL communicator",
             t->file, t->line,
             why == WATCHED_WAIT_ASYNC_ERROR ? "NCCL reported an asynchronous error"
                                             : "no progress within nccl_timeout_s");
    nccl_watch_abort();
}

static void wait_for(WaitTarget *t)
{
    if (cuda_graph_capturing()) {
        /* This thread is recording a graph (cuda/cuda_graph.h): nothing recorded has run, so
         * there is nothing to wait for, and a synchronising call would break the capture.
         * Spoil the recording instead: the step then runs eagerly, this wait included. */
        cuda_graph_spoil("a host wait for the GPU at %s:%d while recording", t->file, t->line);
        return;
    }
    if (!nccl_watch_active()) {
        /* Nothing another rank could keep from completing: the driver's own wait. */
        if (t->kind == WAIT_ON_STREAM)
            check_at(cudaStreamSynchronize(t->stream), "cudaStreamSynchronize", t);
        else
            check_at(cudaEventSynchronize(t->event), "cudaEventSynchronize", t);
        return;
    }
    const WatchedWaitHooks hooks = {t, target_done, communicator_error, monotonic_now, host_sleep,
                                    abort_communicator};
    const WatchedWaitPolicy policy = watched_wait_policy(g_collective_timeout_s);
    const int rank = nccl_watch_rank();
    const WatchedWaitResult r = watched_wait(&hooks, &policy);
    switch (r.outcome) {
    case WATCHED_WAIT_DONE:
        return;
    case WATCHED_WAIT_ASYNC_ERROR:
        alice_fatal_at(t->file, t->line,
                       "rank %d: NCCL reported an asynchronous error after this rank had waited "
                       "%.1f s for the GPU: %s. A peer rank failed or the network between the "
                       "ranks broke; the NCCL communicator was aborted. Fix: check the other "
                       "ranks' logs for the first error, then resubmit the job (the same "
                       "command): the run resumes from its last checkpoint in run_dir",
                       rank, r.waited_s, t->nccl_detail);
    case WATCHED_WAIT_TIMEOUT:
        alice_fatal_at(t->file, t->line,
                       "rank %d: the GPU work this rank waited for did not finish within %.0f s "
                       "(nccl_timeout_s = %g) while an NCCL communicator was active: a peer rank "
                       "is hung or the network stalled, so a collective cannot complete; the "
                       "NCCL communicator was aborted. Fix: check the other ranks' logs, then "
                       "resubmit the job (the same command): the run resumes from its last "
                       "checkpoint in run_dir. If a wait can legitimately take that long (a "
                       "peer writing a very large checkpoint), raise nccl_timeout_s "
                       "(0 = wait forever)",
                       rank, r.waited_s, g_collective_timeout_s);
    }
    ALICE_FATAL("watched wait returned an unknown outcome %d", (int)r.outcome);
}

void cuda_wait_stream_at(cudaStream_t stream, const char *file, int line)
{
    WaitTarget t = {WAIT_ON_STREAM, stream, NULL, file, line, {0}};
    wait_for(&t);
}

void cuda_wait_event_at(cudaEvent_t event, const char *file, int line)
{
    WaitTarget t = {WAIT_ON_EVENT, NULL, event, file, line, {0}};
    wait_for(&t);
}

void cuda_wait_before_pageable_copy_at(cudaStream_t stream, const char *file, int line)
{
    if (nccl_watch_active()) cuda_wait_stream_at(stream, file, line);
}

void cuda_wait_before_device_sync_at(const char *file, int line)
{
    if (!nccl_watch_active()) return;
    cuda_wait_stream_at(cuda_stream(), file, line);
    const cudaStream_t comm = nccl_watch_comm_stream();
    if (comm) cuda_wait_stream_at(comm, file, line);
}

static int host_flag_set(void *ctx) { return __atomic_load_n((const int *)ctx, __ATOMIC_ACQUIRE); }

int cuda_wait_host_flag(const int *flag, double *waited_s)
{
    /* No asynchronous error to ask and nothing to abort: only done or out of time. */
    const WatchedWaitHooks hooks = {(void *)flag, host_flag_set, NULL, monotonic_now, host_sleep,
                                    NULL};
    const WatchedWaitPolicy policy = watched_wait_policy(g_collective_timeout_s);
    const WatchedWaitResult r = watched_wait(&hooks, &policy);
    *waited_s = r.waited_s;
    return r.outcome == WATCHED_WAIT_DONE;
}
