/* A stand-in training loop for the batch-side tests (tests/slurm/test_slurm_requeue.sh): it
 * runs on any rank count, uses preempt_agreed() exactly as the real loops must, checkpoints
 * atomically, resumes from its checkpoint without any flag, and logs one metrics row per step.
 * Its "loss" is a deterministic function of the step and the rank count, so an interrupted and
 * requeued run must log exactly the rows an uninterrupted one does.
 *
 * It takes the alice command-line shape, so the real slurm/pretrain.sbatch can launch it in
 * place of alice (ALICE_BIN=.../preempt_probe):
 *
 *   preempt_probe [COMMAND] [--config FILE] run_dir=DIR steps=N [step_ms=MS] [ckpt_every=K]
 *
 * (the command word, --config and any other key=value are accepted and ignored).
 *
 * Exit status: 0 finished, ALICE_EXIT_REQUEUE (3) stopped on a preemption signal after writing
 * its checkpoint. */
#include <errno.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/check.h"
#include "core/preempt.h"

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static long read_checkpoint(const char *run_dir, double *state)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/probe_ckpt.txt", run_dir);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    long step = 0;
    if (fscanf(f, "%ld %lf", &step, state) != 2)
        alice_die("%s: not a probe checkpoint (expected 'step state'); delete it to restart", path);
    fclose(f);
    return step;
}

static void write_checkpoint(const char *run_dir, long step, double state)
{
    char path[1024], tmp[1100];
    snprintf(path, sizeof path, "%s/probe_ckpt.txt", run_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) ALICE_FATAL("cannot write %s: %s", tmp, strerror(errno));
    fprintf(f, "%ld %.17g\n", step, state);
    if (fclose(f) != 0 || rename(tmp, path) != 0)
        ALICE_FATAL("cannot finish checkpoint %s: %s", path, strerror(errno));
}

/* Drops metrics rows at or past the resume step (written after the checkpoint by a run that
 * then died), so a resumed run never logs a step twice. */
static void truncate_metrics(const char *path, long resume_step)
{
    FILE *f = fopen(path, "r");
    if (!f) return;
    char tmp[1100], line[256];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *out = fopen(tmp, "w");
    if (!out) ALICE_FATAL("cannot write %s: %s", tmp, strerror(errno));
    while (fgets(line, sizeof line, f)) {
        long step = -1;
        if (sscanf(line, "%ld,", &step) == 1 && step >= resume_step) continue;
        fputs(line, out);
    }
    fclose(f);
    if (fclose(out) != 0 || rename(tmp, path) != 0) ALICE_FATAL("cannot rewrite %s", path);
}

int main(int argc, char **argv)
{
    const char *run_dir = NULL;
    long steps = 0, step_ms = 100, ckpt_every = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config")) i++;
        else if (!strncmp(argv[i], "run_dir=", 8)) run_dir = argv[i] + 8;
        else if (!strncmp(argv[i], "steps=", 6)) steps = atol(argv[i] + 6);
        else if (!strncmp(argv[i], "step_ms=", 8)) step_ms = atol(argv[i] + 8);
        else if (!strncmp(argv[i], "ckpt_every=", 11)) ckpt_every = atol(argv[i] + 11);
    }
    if (!run_dir || steps <= 0 || ckpt_every <= 0) {
        fprintf(stderr, "usage: preempt_probe [COMMAND] [--config FILE] run_dir=DIR steps=N "
                        "[step_ms=MS] [ckpt_every=K]\n");
        return 2;
    }
    CHECK_MPI(MPI_Init(&argc, &argv));
    preempt_install();
    int rank = 0, size = 1;
    CHECK_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    CHECK_MPI(MPI_Comm_size(MPI_COMM_WORLD, &size));
    if (rank == 0 && mkdir(run_dir, 0755) != 0 && errno != EEXIST)
        alice_die("cannot create run directory %s: %s", run_dir, strerror(errno));
    CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD));

    double state = 1.0;
    long start = read_checkpoint(run_dir, &state);
    char metrics[1024];
    snprintf(metrics, sizeof metrics, "%s/metrics.csv", run_dir);
    if (rank == 0) {
        const char *restarts = getenv("SLURM_RESTART_COUNT");
        printf("probe: %d ranks, resuming at step %ld of %ld (restart count %s)\n", size, start,
               steps, restarts ? restarts : "-");
        fflush(stdout);
        truncate_metrics(metrics, start);
    }
    int status = 0;
    for (long step = start; step < steps; step++) {
        /* Every rank contributes; the sum depends only on the step and the rank count. */
        double mine = 1.0 / (double)(step + rank + 2), total = 0;
        CHECK_MPI(MPI_Allreduce(&mine, &total, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
        state = 0.9 * state + 0.1 * total;
        sleep_ms(step_ms);
        if (rank == 0) {
            FILE *f = fopen(metrics, "a");
            if (!f) ALICE_FATAL("cannot append to %s: %s", metrics, strerror(errno));
            fprintf(f, "%ld,%.17g\n", step, state);
            fclose(f);
        }
        int stop = preempt_agreed();
        if (stop || (step + 1) % ckpt_every == 0 || step + 1 == steps) {
            if (rank == 0) write_checkpoint(run_dir, step + 1, state);
            /* No rank may exit before the checkpoint is on disk: the launcher kills the
             * whole step when the first rank exits. */
            CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD));
        }
        if (stop) {
            if (rank == 0) printf("probe: checkpoint at step %ld, exiting for requeue\n", step + 1);
            status = ALICE_EXIT_REQUEUE;
            break;
        }
    }
    if (rank == 0 && status == 0) printf("probe: finished %ld steps\n", steps);
    CHECK_MPI(MPI_Finalize());
    return status;
}
