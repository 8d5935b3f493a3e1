/* The instance norm kernel choice of gpu_device.h (config key instnorm_kernel), one copy for
 * both builds: the CUDA backend reads it per call (cuda/cuda_instnorm_cudnn.cu); without CUDA
 * it is recorded, so configuration code and its tests behave the same in both builds. */
#include "core/check.h"
#include "ops/gpu_device.h"

static int g_instnorm_kernel = INSTNORM_KERNEL_OWN;

void gpu_set_instnorm(int kernel)
{
    if (kernel != INSTNORM_KERNEL_OWN && kernel != INSTNORM_KERNEL_CUDNN)
        ALICE_FATAL("gpu_set_instnorm: unknown instance norm kernel %d", kernel);
    g_instnorm_kernel = kernel;
}

int gpu_instnorm_kernel(void) { return g_instnorm_kernel; }
