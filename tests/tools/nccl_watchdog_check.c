/* Checks the CUDA backend's watched host waits (cuda/cuda_wait.cu) on a GPU with a live NCCL
 * communicator (one rank: a 1-rank communicator, so a one-GPU machine runs it). The compute
 * stream is stalled by a host function (src/ops/gpu_fault.h) behind an overlapped all-reduce,
 * as a collective with a dead peer would stall it.
 *   slow: nccl_timeout_s 20, stall 0.5 s: the download must wait it out (through the polling
 *         path's sleeps) and return the reduced values; exit 0 with "ok".
 *   hang: nccl_timeout_s 1, stall 8 s: the download must give up after about 1 s with the
 *         timeout error (rank, nccl_timeout_s, communicator aborted) and a non-zero exit; the
 *         script (tests/gpu/test_nccl_watchdog.sh) checks the message came before the stall
 *         ended. Reaching the end of this mode is a failure.
 *   setup: nccl_timeout_s 2: the communicator's set-up for 2 ranks, of which this single
 *         process is one (nccl_init_alone_for_check), cannot complete; it must end the process
 *         after about 2 s with the set-up error (rank, ranks, nccl_timeout_s). Reaching the end
 *         of this mode is a failure.
 * Exit 77 (message "skip") without a GPU.
 * Usage: mpirun -np 1 nccl_watchdog_check slow|hang|setup */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/timer.h"
#include "ops/backend.h"
#include "ops/dist_gpu.h"
#include "ops/gpu_device.h"
#include "ops/gpu_fault.h"
#include "gpu_mpi_tool.h"

typedef struct {
    const char *name;
    double timeout_s;
    double stall_s;
    int expect_return;   /* 1: the wait must return; 0: it must end the process */
} WatchdogMode;

static const WatchdogMode kModes[] = {
    {"slow", 20.0, 0.5, 1},
    {"hang", 1.0, 8.0, 0},
};

/* The set-up mode: a communicator of 2 ranks that only this process joins. */
static int check_setup_timeout(int *argc, char ***argv)
{
    CHECK_MPI(MPI_Init(argc, argv));
    if (gpu_device_count() == 0) {
        printf("skip: no GPU (built without CUDA or no device visible)\n");
        CHECK_MPI(MPI_Finalize());
        return 77;
    }
    (void)backend_cuda();
    const double timeout_s = 2.0;
    gpu_set_collective_timeout(timeout_s);
    const double start = wall_seconds();
    nccl_init_alone_for_check(2);
    fprintf(stderr, "FAIL: the set-up of a 2-rank NCCL communicator with one process returned "
            "after %.2f s (nccl_timeout_s = %g): it must end the process\n",
            wall_seconds() - start, timeout_s);
    return 1;
}

int main(int argc, char **argv)
{
    const WatchdogMode *mode = NULL;
    for (size_t i = 0; argc == 2 && i < sizeof kModes / sizeof kModes[0]; i++)
        if (!strcmp(argv[1], kModes[i].name)) mode = &kModes[i];
    if (argc == 2 && !strcmp(argv[1], "setup")) return check_setup_timeout(&argc, &argv);
    if (!mode) {
        fprintf(stderr, "usage: mpirun -np 1 %s slow|hang|setup\n", argv[0]);
        return 2;
    }
    int rank = 0, size = 1;
    const AliceBackend *gpu = gpu_tool_start(&argc, &argv, &rank, &size);
    if (!gpu) return 77;
    gpu_set_collective_timeout(mode->timeout_s);
    const size_t n = 1000003;
    float *d = gpu->alloc(n * sizeof(float));
    float *h = malloc(n * sizeof(float));
    gpu->fill(d, (float)(rank + 1), n);
    /* Loads scale's kernel now: CUDA loads kernels lazily, at their first launch, and a load
     * waits for the device to go idle, so a first launch behind the stall below would block in
     * the launch itself (seen on an H200: the stall was over before the download began). */
    gpu->scale(d, 1.0f, n);
    nccl_allreduce_mean_async(d, n);
    nccl_allreduce_wait();
    gpu_inject_stream_stall(mode->stall_s);
    gpu->scale(d, 2.0f, n);
    const double start = wall_seconds();
    gpu->download(h, d, n * sizeof(float));   /* the watched wait under test */
    const double waited = wall_seconds() - start;
    if (!mode->expect_return) {
        fprintf(stderr, "FAIL: the download returned after %.2f s although the stream was stalled "
                "for %g s with nccl_timeout_s = %g\n", waited, mode->stall_s, mode->timeout_s);
        return 1;
    }
    const double want = 2.0 * (size + 1) / 2.0;
    int bad = 0;
    for (size_t i = 0; i < n; i++)
        if (!(fabs(h[i] - want) <= 1e-6 * want)) {
            if (bad < 5) fprintf(stderr, "rank %d: [%zu] = %.9g, expected %.9g\n", rank, i, h[i], want);
            bad++;
        }
    if (waited < 0.9 * mode->stall_s) {
        fprintf(stderr, "rank %d: the download returned after %.3f s, before the %g s stall "
                "ended: it did not wait\n", rank, waited, mode->stall_s);
        bad++;
    }
    const int any_bad = gpu_tool_any_bad(bad);
    if (rank == 0)
        printf("%s: watched wait over a %g s stall with a live NCCL communicator (%d rank(s)): "
               "returned after %.3f s with the reduced values\n", any_bad ? "FAIL" : "ok",
               mode->stall_s, size, waited);
    gpu->release(d);
    free(h);
    return gpu_tool_finish(any_bad);
}
