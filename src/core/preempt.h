/* Preemption: a batch system asks a job to stop (Slurm sends SIGTERM at the time limit or on
 * preemption, and SIGUSR1 ahead of it with `--signal=B:USR1@120`, forwarded to the ranks by
 * the sbatch scripts). The handler only sets a flag; the training loop polls it at each step
 * boundary, writes a checkpoint and exits with ALICE_EXIT_REQUEUE, which the slurm/ sbatch scripts turn
 * into `scontrol requeue`. The requeued job resumes from that checkpoint without any flag.
 *
 * How a training loop uses it (every rank executes the same sequence of calls):
 *
 *     preempt_install_handlers();                   // before MPI_Init (main)
 *     preempt_install();                            // the loop's start: again, unblocked
 *     for (step = start; step < steps; step++) {
 *         ... one optimisation step ...
 *         if (preempt_agreed()) {                   // collective: all ranks, every step
 *             write_checkpoint(step + 1);           // the step just finished is complete
 *             return ALICE_EXIT_REQUEUE;
 *         }
 *     }
 */
#ifndef ALICE_PREEMPT_H
#define ALICE_PREEMPT_H

/* Exit status of a run that stopped early on a preemption signal after writing a checkpoint:
 * "not finished, requeue me". Distinct from 0 (done), 1 (internal error, ALICE_FATAL) and
 * 2 (user error, alice_die). */
#define ALICE_EXIT_REQUEUE 3
/* Exit status of a training run that stopped on a non-finite loss or gradient (on_nonfinite =
 * stop): the run diverged; resubmitting the same command would diverge again (lower lr, or
 * on_nonfinite = skip). Not 1: nothing in alice failed. */
#define ALICE_EXIT_DIVERGED 4

/* Installs the SIGTERM and SIGUSR1 handlers (again on each call), leaving the signal mask as
 * it is: main, before MPI_Init, so that no part of a training command's start-up is left to
 * the default action (a launcher that blocked them keeps them pending). */
void preempt_install_handlers(void);

/* The handlers (preempt_install_handlers), and the two signals unblocked: a training loop's
 * start. SA_RESTART keeps blocking reads and writes going; the flag is acted on at the next
 * step boundary, never inside the handler. */
void preempt_install(void);

/* Puts back the actions, and the mask, the process had before the handlers went in (a
 * training command's benchmark, which never checks the flag); a signal that arrived meanwhile
 * is raised again under them, so it does what it would have done without the handlers. */
void preempt_uninstall(void);

/* 1 once this rank has received SIGTERM or SIGUSR1 (a plain read of the flag; no MPI). */
int preempt_requested(void);

/* The signal number that set the flag (SIGTERM or SIGUSR1), 0 when none has arrived. */
int preempt_signal(void);

/* Collective over MPI_COMM_WORLD: 1 on every rank when any rank has been signalled.
 * Ranks may receive the signal at different times (srun and mpirun forward it one by one),
 * so the decision to stop is agreed by an MPI_Allreduce(MAX) and every rank stops at the same
 * step. Without MPI initialised (or after MPI_Finalize) it returns the local flag. Logs once,
 * on rank 0, which signal stopped the run. */
int preempt_agreed(void);

/* Clears the flag (tests, and a loop that chooses to continue). */
void preempt_reset(void);

#endif
