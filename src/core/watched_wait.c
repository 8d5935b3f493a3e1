#include "core/watched_wait.h"

#include <stddef.h>

/* cudaStreamQuery plus ncclCommGetAsyncError cost about a microsecond or two per poll, so 256
 * tight polls cover the first few hundred microseconds of a wait (short readbacks end there).
 * After that, sleeping 10 us doubling to 1 ms keeps a long wait (a step's all-reduce) cheap on
 * the CPU while adding at most 1 ms to it. */
enum { kSpinPolls = 256 };
static const double kFirstSleepS = 10e-6;
static const double kMaxSleepS = 1e-3;

WatchedWaitPolicy watched_wait_policy(double timeout_s)
{
    WatchedWaitPolicy p;
    p.timeout_s = timeout_s > 0.0 ? timeout_s : 0.0;
    p.spin_polls = kSpinPolls;
    p.first_sleep_s = kFirstSleepS;
    p.max_sleep_s = kMaxSleepS;
    return p;
}

static WatchedWaitResult give_up(const WatchedWaitHooks *h, WatchedWaitOutcome outcome, int error,
                                 double waited_s, long polls)
{
    /* Abort before reporting: NCCL's kernels keep spinning on the device until the
     * communicator is aborted, and the caller's report ends the process. */
    if (h->abort) h->abort(h->ctx, outcome);
    WatchedWaitResult r = {outcome, error, waited_s, polls};
    return r;
}

WatchedWaitResult watched_wait(const WatchedWaitHooks *h, const WatchedWaitPolicy *p)
{
    const double start = h->now(h->ctx);
    const double timeout = p->timeout_s > 0.0 ? p->timeout_s : 0.0;
    double next_sleep = p->first_sleep_s;
    long polls = 0;
    for (;;) {
        polls++;
        if (h->done(h->ctx)) {
            WatchedWaitResult r = {WATCHED_WAIT_DONE, 0, h->now(h->ctx) - start, polls};
            return r;
        }
        const int error = h->async_error ? h->async_error(h->ctx) : 0;
        const double waited = h->now(h->ctx) - start;
        if (error != 0) return give_up(h, WATCHED_WAIT_ASYNC_ERROR, error, waited, polls);
        if (timeout > 0.0 && waited >= timeout)
            return give_up(h, WATCHED_WAIT_TIMEOUT, 0, waited, polls);
        if (polls <= p->spin_polls) continue;
        double nap = next_sleep;
        if (timeout > 0.0 && nap > timeout - waited) nap = timeout - waited;
        h->sleep(h->ctx, nap);
        next_sleep = next_sleep * 2.0 < p->max_sleep_s ? next_sleep * 2.0 : p->max_sleep_s;
    }
}
