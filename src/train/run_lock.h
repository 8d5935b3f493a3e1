/* One job per run directory. Two jobs writing one run_dir (a resubmitted job while the first
 * still runs, a requeued job beside a stale one) prune and overwrite each other's checkpoints,
 * remove each other's half-written ones as "stale", and rewrite metrics.csv under each other:
 * both end with status 0 and the first run's result is gone. */
#ifndef ALICE_RUN_LOCK_H
#define ALICE_RUN_LOCK_H

/* The file in run_dir that rank 0 holds an exclusive flock on while the command runs (released
 * by the kernel when the process ends, however it ends); it names the holder (pid, host,
 * Slurm job, start time). */
#define RUN_LOCK_FILE ".alice.lock"

/* Creates run_dir when missing and takes the lock for the rest of the process, or ends the job
 * (status 2) naming the job that holds it. A file system without flock support (some Lustre
 * mounts) gives a warning and no lock. Call on rank 0, before anything in run_dir is read. */
void run_dir_lock(const char *run_dir);

#endif
