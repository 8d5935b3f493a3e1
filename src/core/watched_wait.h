/* A blocking wait that cannot hang forever: the polling state machine behind the CUDA
 * backend's host waits while an NCCL communicator exists (cuda/cuda_wait.cu).
 *
 * Why: a collective whose peer rank died or whose network failed never completes, and a plain
 * cudaStreamSynchronize then blocks the job until Slurm kills it at the end of its allocation.
 * Polling instead lets the wait notice NCCL's asynchronous error, or a time limit, abort the
 * communicator (so NCCL's kernels stop spinning) and end the job with a clear message; the
 * job is resubmitted and the run resumes from its checkpoint.
 *
 * The machine is host-only and talks to the world through hooks, so a unit test drives it with
 * a fake clock and fake completions (tests/unit/test_watched_wait.c) and the GPU build runs the
 * very same code with cudaStreamQuery / ncclCommGetAsyncError / a monotonic clock / nanosleep. */
#ifndef ALICE_WATCHED_WAIT_H
#define ALICE_WATCHED_WAIT_H

typedef enum {
    WATCHED_WAIT_DONE,          /* the awaited work finished */
    WATCHED_WAIT_ASYNC_ERROR,   /* the communicator reported an error; abort hook was called */
    WATCHED_WAIT_TIMEOUT        /* timeout_s passed without completion; abort hook was called */
} WatchedWaitOutcome;

typedef struct {
    void *ctx;                          /* passed to every hook */
    /* 1 when the awaited work is finished, 0 while it is pending (cudaStreamQuery). */
    int (*done)(void *ctx);
    /* 0 while the communicator is healthy, else its error code (ncclCommGetAsyncError);
     * NULL when there is nothing to watch. Asked on every poll that found the work pending. */
    int (*async_error)(void *ctx);
    double (*now)(void *ctx);           /* monotonic seconds */
    void (*sleep)(void *ctx, double seconds);
    /* Called exactly once, with the outcome, before an error or timeout outcome is returned
     * (ncclCommAbort); may be NULL. Never called when the work finishes. */
    void (*abort)(void *ctx, WatchedWaitOutcome why);
} WatchedWaitHooks;

typedef struct {
    double timeout_s;       /* give up after this long; 0 = wait forever */
    /* The first spin_polls polls do not sleep, so a wait that ends within microseconds keeps
     * the latency of a spinning cudaStreamSynchronize. */
    int spin_polls;
    /* Then sleeps start at first_sleep_s and double up to max_sleep_s: a long wait costs
     * next to no CPU and overshoots its end by at most max_sleep_s. A sleep never reaches
     * past the deadline. */
    double first_sleep_s;
    double max_sleep_s;
} WatchedWaitPolicy;

typedef struct {
    WatchedWaitOutcome outcome;
    int error;              /* async_error's code for WATCHED_WAIT_ASYNC_ERROR, else 0 */
    double waited_s;        /* from the first poll to the decision */
    long polls;             /* how often done() was asked */
} WatchedWaitResult;

/* The policy of the CUDA backend's waits with the given timeout (0 = none). */
WatchedWaitPolicy watched_wait_policy(double timeout_s);

/* Polls until done, an async error or the timeout; see WatchedWaitHooks for the order. */
WatchedWaitResult watched_wait(const WatchedWaitHooks *hooks, const WatchedWaitPolicy *policy);

#endif
