/* The polling state machine of the CUDA backend's NCCL-aware waits (src/core/watched_wait.c),
 * driven by fakes: a fake clock that only moves when the machine sleeps (or by a fixed cost per
 * poll), work that completes after N polls, a communicator that fails after N polls. Expected
 * values are counted by hand from the documented order: poll done(), then the async error,
 * then the timeout, then (after the spin polls) a sleep of the doubling backoff clamped to the
 * deadline. */
#include <string.h>

#include "core/watched_wait.h"
#include "test.h"

enum { kMaxNaps = 200000 };

typedef struct {
    double clock;           /* fake monotonic seconds */
    double poll_cost_s;     /* clock advance per done() call (time spent querying) */
    long done_after;        /* done() returns 1 on call done_after + 1; -1 = never */
    double done_at_s;       /* ... or once the clock reaches this; < 0 = unused */
    long error_after;       /* async_error() fails from its call error_after on; -1 = never */
    int error_code;
    long done_calls, error_calls, aborts, sleeps;
    long done_calls_at_abort;
    WatchedWaitOutcome abort_reason;
    double *naps;           /* every sleep requested, in order */
    int negative_nap;
} Fake;

static int fake_done(void *ctx)
{
    Fake *f = ctx;
    f->done_calls++;
    f->clock += f->poll_cost_s;
    if (f->done_after >= 0 && f->done_calls > f->done_after) return 1;
    if (f->done_at_s >= 0.0 && f->clock >= f->done_at_s) return 1;
    return 0;
}

static int fake_async_error(void *ctx)
{
    Fake *f = ctx;
    f->error_calls++;
    return f->error_after >= 0 && f->error_calls >= f->error_after ? f->error_code : 0;
}

static double fake_now(void *ctx) { return ((Fake *)ctx)->clock; }

static void fake_sleep(void *ctx, double s)
{
    Fake *f = ctx;
    if (s < 0.0) f->negative_nap = 1;
    if (f->sleeps < kMaxNaps) f->naps[f->sleeps] = s;
    f->sleeps++;
    /* A real sleep lasts at least about a nanosecond: without that floor a nap clamped to a
     * deadline rounding errors keep a hair away could leave the fake clock standing still. */
    f->clock += s > 1e-9 ? s : 1e-9;
}

static void fake_abort(void *ctx, WatchedWaitOutcome why)
{
    Fake *f = ctx;
    f->aborts++;
    f->abort_reason = why;
    f->done_calls_at_abort = f->done_calls;
}

static Fake fake_new(void)
{
    Fake f;
    memset(&f, 0, sizeof f);
    f.clock = 1000.0;   /* not zero: the machine must measure from its own start */
    f.done_after = -1;
    f.done_at_s = -1.0;
    f.error_after = -1;
    f.naps = calloc(kMaxNaps, sizeof(double));
    return f;
}

static WatchedWaitHooks hooks_for(Fake *f, int watch_errors)
{
    WatchedWaitHooks h = {f, fake_done, watch_errors ? fake_async_error : NULL, fake_now,
                          fake_sleep, fake_abort};
    return h;
}

/* The n-th sleep (0-based) of a wait that never hits its deadline: first * 2^n, capped. */
static double expected_nap(const WatchedWaitPolicy *p, long n)
{
    double s = p->first_sleep_s;
    for (long i = 0; i < n && s < p->max_sleep_s; i++) s *= 2.0;
    return s < p->max_sleep_s ? s : p->max_sleep_s;
}

static int completes_immediately(void)
{
    Fake f = fake_new();
    f.done_after = 0;
    WatchedWaitHooks h = hooks_for(&f, 1);
    WatchedWaitPolicy p = watched_wait_policy(600.0);
    WatchedWaitResult r = watched_wait(&h, &p);
    TEST_CHECK(r.outcome == WATCHED_WAIT_DONE, "outcome %d, expected done", (int)r.outcome);
    TEST_CHECK(r.polls == 1, "%ld polls, expected 1", r.polls);
    TEST_CHECK(f.sleeps == 0, "%ld sleeps, expected none", f.sleeps);
    TEST_CHECK(f.error_calls == 0, "async error asked %ld times for finished work", f.error_calls);
    TEST_CHECK(f.aborts == 0, "abort called %ld times", f.aborts);
    TEST_CLOSE(r.waited_s, 0.0, 0, 0, "waited");
    free(f.naps);
    return 0;
}

static int completes_after_n_polls(void)
{
    WatchedWaitPolicy p = watched_wait_policy(600.0);
    TEST_CHECK(p.spin_polls > 0, "the default policy must spin first (%d)", p.spin_polls);
    /* Within the spin phase, and well past it (sleeps reach the cap). */
    const long cases[] = {3, (long)p.spin_polls, (long)p.spin_polls + 40};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const long n = cases[c];
        Fake f = fake_new();
        f.done_after = n;
        WatchedWaitHooks h = hooks_for(&f, 1);
        WatchedWaitResult r = watched_wait(&h, &p);
        TEST_CHECK(r.outcome == WATCHED_WAIT_DONE, "n=%ld: outcome %d", n, (int)r.outcome);
        TEST_CHECK(r.polls == n + 1, "n=%ld: %ld polls, expected %ld", n, r.polls, n + 1);
        TEST_CHECK(f.error_calls == n, "n=%ld: async error asked %ld times, expected every "
                   "pending poll (%ld)", n, f.error_calls, n);
        const long want_sleeps = n > p.spin_polls ? n - p.spin_polls : 0;
        TEST_CHECK(f.sleeps == want_sleeps, "n=%ld: %ld sleeps, expected %ld (spin %d polls)", n,
                   f.sleeps, want_sleeps, p.spin_polls);
        double slept = 0.0;
        for (long i = 0; i < f.sleeps; i++) {
            TEST_CLOSE(f.naps[i], expected_nap(&p, i), 1e-12, 0, "backoff sleep");
            slept += f.naps[i];
        }
        if (f.sleeps > 8) TEST_CLOSE(f.naps[f.sleeps - 1], p.max_sleep_s, 0, 0, "capped sleep");
        TEST_CLOSE(r.waited_s, slept, 1e-12, 1e-12, "waited = sum of sleeps");
        TEST_CHECK(f.aborts == 0, "n=%ld: abort called %ld times", n, f.aborts);
        free(f.naps);
    }
    return 0;
}

static int async_error_aborts_once(void)
{
    /* During the spin phase and after it. */
    const long cases[] = {1, 7, 300};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const long n = cases[c];
        Fake f = fake_new();
        f.error_after = n;
        f.error_code = 6;   /* any nonzero code: ncclRemoteError is 6 */
        WatchedWaitHooks h = hooks_for(&f, 1);
        WatchedWaitPolicy p = watched_wait_policy(600.0);
        WatchedWaitResult r = watched_wait(&h, &p);
        TEST_CHECK(r.outcome == WATCHED_WAIT_ASYNC_ERROR, "n=%ld: outcome %d, expected the "
                   "async error", n, (int)r.outcome);
        TEST_CHECK(r.error == 6, "n=%ld: error code %d, expected 6", n, r.error);
        TEST_CHECK(f.aborts == 1, "n=%ld: abort called %ld times, expected once", n, f.aborts);
        TEST_CHECK(f.abort_reason == WATCHED_WAIT_ASYNC_ERROR, "n=%ld: abort told %d", n,
                   (int)f.abort_reason);
        TEST_CHECK(f.error_calls == n, "n=%ld: async error asked %ld times, expected %ld", n,
                   f.error_calls, n);
        TEST_CHECK(r.polls == n && f.done_calls == n && f.done_calls_at_abort == n,
                   "n=%ld: %ld polls (%ld at abort), expected polling to stop at the error", n,
                   f.done_calls, f.done_calls_at_abort);
    }
    return 0;
}

static int timeout_aborts_once(void)
{
    /* Clock moved only by sleeps, then also by a cost per poll (time spent querying). */
    const double costs[] = {0.0, 3e-4};
    for (size_t c = 0; c < sizeof costs / sizeof costs[0]; c++) {
        Fake f = fake_new();
        f.poll_cost_s = costs[c];
        const double start = f.clock, timeout = 2.0;
        WatchedWaitHooks h = hooks_for(&f, 1);
        WatchedWaitPolicy p = watched_wait_policy(timeout);
        WatchedWaitResult r = watched_wait(&h, &p);
        TEST_CHECK(r.outcome == WATCHED_WAIT_TIMEOUT, "cost %g: outcome %d, expected timeout",
                   costs[c], (int)r.outcome);
        TEST_CHECK(f.aborts == 1, "cost %g: abort called %ld times, expected once", costs[c],
                   f.aborts);
        TEST_CHECK(r.error == 0, "timeout carries no error code (%d)", r.error);
        TEST_CHECK(f.abort_reason == WATCHED_WAIT_TIMEOUT, "abort told %d, expected the timeout",
                   (int)f.abort_reason);
        TEST_CHECK(r.waited_s >= timeout, "gave up after %g s, before the %g s timeout",
                   r.waited_s, timeout);
        /* Never sleeps past the deadline by more than one backoff step (here: not at all; the
         * only overshoot left is the time one poll takes). */
        TEST_CHECK(f.clock - start <= timeout + p.max_sleep_s,
                   "cost %g: clock %g s after start, deadline %g s + one step %g s", costs[c],
                   f.clock - start, timeout, p.max_sleep_s);
        TEST_CHECK(f.clock - start <= timeout + f.poll_cost_s + 2e-9,
                   "cost %g: slept past the deadline: %g s after start", costs[c],
                   f.clock - start);
        TEST_CHECK(!f.negative_nap, "a negative sleep was requested");
        for (long i = 0; i < f.sleeps && i < kMaxNaps; i++)
            TEST_CHECK(f.naps[i] <= p.max_sleep_s && f.naps[i] > 0.0,
                       "sleep %ld of %g s outside (0, %g]", i, f.naps[i], p.max_sleep_s);
        free(f.naps);
    }
    return 0;
}

static int timeout_zero_waits_forever(void)
{
    WatchedWaitPolicy def = watched_wait_policy(0.0);
    TEST_CHECK(def.timeout_s == 0.0, "timeout 0 kept as %g", def.timeout_s);
    def = watched_wait_policy(-5.0);
    TEST_CHECK(def.timeout_s == 0.0, "a negative timeout means none, got %g", def.timeout_s);
    /* 30 days of fake time with long naps, so the loop stays short. */
    Fake f = fake_new();
    const double month = 30.0 * 86400.0;
    f.done_at_s = f.clock + month;
    WatchedWaitHooks h = hooks_for(&f, 1);
    WatchedWaitPolicy p = watched_wait_policy(0.0);
    p.max_sleep_s = 120.0;
    WatchedWaitResult r = watched_wait(&h, &p);
    TEST_CHECK(r.outcome == WATCHED_WAIT_DONE, "outcome %d after 30 fake days, expected done",
               (int)r.outcome);
    TEST_CHECK(r.waited_s >= month, "waited %g s, the work finished after %g s", r.waited_s,
               month);
    TEST_CHECK(f.aborts == 0, "abort called %ld times", f.aborts);
    free(f.naps);
    return 0;
}

static int no_communicator_no_abort_hook(void)
{
    /* A single rank: nothing to watch, no abort hook; a timeout still ends the wait. */
    Fake f = fake_new();
    f.done_after = 500;
    WatchedWaitHooks h = hooks_for(&f, 0);
    h.abort = NULL;
    WatchedWaitPolicy p = watched_wait_policy(0.0);
    WatchedWaitResult r = watched_wait(&h, &p);
    TEST_CHECK(r.outcome == WATCHED_WAIT_DONE && r.polls == 501, "outcome %d, %ld polls",
               (int)r.outcome, r.polls);
    TEST_CHECK(f.error_calls == 0, "no communicator, yet async error asked %ld times",
               f.error_calls);
    Fake g = fake_new();
    WatchedWaitHooks hg = hooks_for(&g, 0);
    hg.abort = NULL;
    WatchedWaitPolicy pg = watched_wait_policy(0.5);
    r = watched_wait(&hg, &pg);
    TEST_CHECK(r.outcome == WATCHED_WAIT_TIMEOUT, "outcome %d, expected timeout", (int)r.outcome);
    free(f.naps);
    free(g.naps);
    return 0;
}

static int error_wins_over_timeout(void)
{
    /* Both hold on the same poll: the error is the more useful report (it names the cause). */
    Fake f = fake_new();
    f.poll_cost_s = 1.0;
    f.error_after = 3;
    f.error_code = 5;
    WatchedWaitHooks h = hooks_for(&f, 1);
    WatchedWaitPolicy p = watched_wait_policy(3.0);
    WatchedWaitResult r = watched_wait(&h, &p);
    TEST_CHECK(r.outcome == WATCHED_WAIT_ASYNC_ERROR && r.error == 5,
               "outcome %d code %d, expected the async error 5", (int)r.outcome, r.error);
    TEST_CHECK(f.aborts == 1, "abort called %ld times", f.aborts);
    free(f.naps);
    return 0;
}

int main(void)
{
    TEST_RUN(completes_immediately);
    TEST_RUN(completes_after_n_polls);
    TEST_RUN(async_error_aborts_once);
    TEST_RUN(timeout_aborts_once);
    TEST_RUN(timeout_zero_waits_forever);
    TEST_RUN(no_communicator_no_abort_hook);
    TEST_RUN(error_wins_over_timeout);
    return test_finish();
}
