/* Preemption flag: SIGUSR1 and SIGTERM set it, nothing else does, and preempt_agreed() makes
 * every rank see a signal that reached only one of them. Runs as one rank (singleton MPI) in
 * the unit suite; tests/slurm/test_preempt_agree.sh runs it under `mpirun -np 2`, where only
 * the last rank raises the signal and every rank must agree to stop. */
#include <mpi.h>
#include <signal.h>

#include "core/preempt.h"
#include "test.h"

static int rank = 0, size = 1;

static int test_no_signal_no_flag(void)
{
    preempt_reset();
    TEST_CHECK(!preempt_requested(), "flag set before any signal");
    TEST_CHECK(preempt_signal() == 0, "signal number %d before any signal", preempt_signal());
    TEST_CHECK(!preempt_agreed(), "ranks agreed to stop without any signal");
    return 0;
}

static int test_sigusr1_sets_flag(void)
{
    preempt_reset();
    TEST_CHECK(raise(SIGUSR1) == 0, "raise(SIGUSR1) failed");
    TEST_CHECK(preempt_requested(), "SIGUSR1 did not set the flag");
    TEST_CHECK(preempt_signal() == SIGUSR1, "recorded signal %d, expected SIGUSR1 (%d)",
               preempt_signal(), SIGUSR1);
    return 0;
}

static int test_sigterm_sets_flag_and_first_signal_wins(void)
{
    preempt_reset();
    TEST_CHECK(raise(SIGTERM) == 0, "raise(SIGTERM) failed");
    TEST_CHECK(preempt_requested(), "SIGTERM did not set the flag (the process survived it "
               "only because the handler is installed)");
    TEST_CHECK(raise(SIGUSR1) == 0, "raise(SIGUSR1) failed");
    TEST_CHECK(preempt_signal() == SIGTERM, "recorded signal %d, expected the first (SIGTERM %d)",
               preempt_signal(), SIGTERM);
    preempt_reset();
    TEST_CHECK(!preempt_requested(), "preempt_reset left the flag set");
    return 0;
}

/* Only the last rank is signalled; every rank must return 1 from the collective. */
static int test_agreement_across_ranks(void)
{
    preempt_reset();
    if (rank == size - 1) raise(SIGUSR1);
    TEST_CHECK(preempt_requested() == (rank == size - 1), "rank %d local flag %d", rank,
               preempt_requested());
    int agreed = preempt_agreed();
    TEST_CHECK(agreed == 1, "rank %d of %d did not agree to stop (got %d)", rank, size, agreed);
    /* A second call after reset on all ranks agrees to continue. */
    preempt_reset();
    TEST_CHECK(preempt_agreed() == 0, "rank %d agreed to stop after reset", rank);
    return 0;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    /* After MPI_Init, as alice does, so the MPI library cannot replace the handlers. */
    preempt_install();
    preempt_install(); /* idempotent */
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    TEST_RUN(test_no_signal_no_flag);
    TEST_RUN(test_sigusr1_sets_flag);
    TEST_RUN(test_sigterm_sets_flag_and_first_signal_wins);
    TEST_RUN(test_agreement_across_ranks);
    int failures = test_failures, any_failed = 0;
    MPI_Allreduce(&failures, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    if (any_failed && !test_failures) test_failures = 1;
    return test_finish();
}
