/* Fault injection for the GPU checks of the CUDA backend's watched host waits
 * (tests/tools/nccl_watchdog_check.c): the compute stream stalls the way it does behind a
 * collective whose peer rank died, without needing a second GPU or a broken network. Never
 * used by the application itself. Without CUDA compiled in it is a clear error. */
#ifndef ALICE_GPU_FAULT_H
#define ALICE_GPU_FAULT_H

/* Enqueues on the compute stream a host function that blocks it for `seconds` (then returns,
 * writing "gpu_fault: stall of S s ended" to stderr, so a check can tell whether a wait gave
 * up before the stall ended). */
void gpu_inject_stream_stall(double seconds);

#endif
