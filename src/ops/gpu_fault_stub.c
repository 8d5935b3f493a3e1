/* gpu_fault.h in a build without CUDA (USE_CUDA=0); cuda/cuda_fault.cu provides the real one. */
#ifndef ALICE_CUDA
#include "core/check.h"
#include "ops/gpu_fault.h"

void gpu_inject_stream_stall(double seconds)
{
    (void)seconds;
    alice_die("gpu_inject_stream_stall needs the CUDA backend; rebuild with USE_CUDA=1");
}
#endif
