/* Fault injection for the checks of the watched host waits (src/ops/gpu_fault.h). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "cuda/cuda_context.h"

extern "C" {
#include "ops/gpu_fault.h"
}

/* Runs on the CUDA runtime's callback thread: may not call CUDA, may block. Sleeps in short
 * steps so the stream resumes soon after the stall's end. */
static void CUDART_CB stall_host_func(void *arg)
{
    double *seconds = (double *)arg;
    const struct timespec step = {0, 10 * 1000 * 1000};
    for (double slept = 0.0; slept < *seconds; slept += 0.01) nanosleep(&step, NULL);
    fprintf(stderr, "gpu_fault: stall of %g s ended\n", *seconds);
    free(seconds);
}

void gpu_inject_stream_stall(double seconds)
{
    cuda_context_init();
    double *arg = (double *)xmalloc(sizeof(double));
    *arg = seconds;
    CUDA_CHECK(cudaLaunchHostFunc(cuda_stream(), stall_host_func, arg));
}
