#include "core/preempt.h"

#include <mpi.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>

#include "core/check.h"
#include "core/log.h"

/* Written by the handler, read by the loop: sig_atomic_t is the only type the C standard
 * lets a signal handler store to; volatile stops the compiler caching it across a step. */
static volatile sig_atomic_t g_signal_seen = 0;
static int g_installed = 0;   /* the handlers are in */
static int g_unblocked = 0;   /* and preempt_install unblocked the signals */
static int g_announced = 0;
/* What the process had before the handlers went in (preempt_uninstall puts it back). */
static struct sigaction g_old_term, g_old_usr1;
static sigset_t g_old_mask;

static void on_preempt_signal(int signo)
{
    /* Async-signal-safe: one store, nothing else. Keep the first signal's number. */
    if (!g_signal_seen) g_signal_seen = signo;
}

static void install_one(int signo, struct sigaction *old)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_preempt_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(signo, &sa, old) != 0)
        ALICE_FATAL("sigaction(%s) failed: cannot handle preemption signals",
                    signo == SIGTERM ? "SIGTERM" : "SIGUSR1");
}

void preempt_install_handlers(void)
{
    /* Each call installs them again: main installs them before MPI_Init, the training loops
     * after it, in case the MPI library put its own in meanwhile. */
    install_one(SIGTERM, g_installed ? NULL : &g_old_term);
    install_one(SIGUSR1, g_installed ? NULL : &g_old_usr1);
    g_installed = 1;
}

void preempt_install(void)
{
    preempt_install_handlers();
    /* A launcher may start the process with them blocked (the mask survives exec), which would
     * leave a preemption signal pending forever: unblock them here. One that arrived before
     * this point is delivered now. Threads started earlier (MPI's, OpenMP's) keep their masks;
     * a process-directed signal goes to a thread that accepts it. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    int rc = pthread_sigmask(SIG_UNBLOCK, &set, g_unblocked ? NULL : &g_old_mask);
    if (rc != 0) ALICE_FATAL("pthread_sigmask failed (%s): cannot receive preemption signals",
                             strerror(rc));
    g_unblocked = 1;
}

void preempt_uninstall(void)
{
    if (g_unblocked) {
        /* blocked again first where the launcher had blocked them (only these two: MPI may
         * have changed the thread's mask of others since), then the actions */
        sigset_t blocked;
        sigemptyset(&blocked);
        if (sigismember(&g_old_mask, SIGTERM) == 1) sigaddset(&blocked, SIGTERM);
        if (sigismember(&g_old_mask, SIGUSR1) == 1) sigaddset(&blocked, SIGUSR1);
        int rc = pthread_sigmask(SIG_BLOCK, &blocked, NULL);
        if (rc != 0) ALICE_FATAL("pthread_sigmask failed (%s)", strerror(rc));
        g_unblocked = 0;
    }
    if (!g_installed) return;
    if (sigaction(SIGTERM, &g_old_term, NULL) != 0 || sigaction(SIGUSR1, &g_old_usr1, NULL) != 0)
        ALICE_FATAL("sigaction failed: cannot restore the actions of SIGTERM and SIGUSR1");
    g_installed = 0;
    /* One that arrived meanwhile is sent again under what the process had: its action (the
     * default: the process ends). */
    if (g_signal_seen) raise(g_signal_seen);
    g_signal_seen = 0;
}

int preempt_requested(void) { return g_signal_seen != 0; }

int preempt_signal(void) { return (int)g_signal_seen; }

void preempt_reset(void)
{
    g_signal_seen = 0;
    g_announced = 0;
}

int preempt_agreed(void)
{
    int local = preempt_requested(), any = local;
    int up = 0, down = 0;
    CHECK_MPI(MPI_Initialized(&up));
    CHECK_MPI(MPI_Finalized(&down));
    if (up && !down)
        CHECK_MPI(MPI_Allreduce(&local, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    if (any && !g_announced) {
        g_announced = 1;
        log_info("stop requested (%s): checkpointing at this step boundary, then exiting "
                 "with status %d (slurm/*.sbatch requeue the job after SIGUSR1)",
                 preempt_signal() == SIGTERM ? "SIGTERM"
                 : preempt_signal() == SIGUSR1 ? "SIGUSR1" : "signal on another rank",
                 ALICE_EXIT_REQUEUE);
    }
    return any;
}
