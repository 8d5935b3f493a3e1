/* The convolution weight-gradient layout of gpu_device.h (config key conv_wgrad_layout), one
 * copy for both builds: the CUDA backend reads it when it builds a convolution plan
 * (cuda/cuda_conv.cu); without CUDA it is recorded, so configuration code and its tests behave
 * the same in both builds. */
#include "core/check.h"
#include "ops/gpu_device.h"

static int g_conv_wgrad_layout = CONV_WGRAD_NCDHW;

void gpu_set_conv_wgrad_layout(int layout)
{
    if (layout != CONV_WGRAD_NCDHW && layout != CONV_WGRAD_NDHWC)
        ALICE_FATAL("gpu_set_conv_wgrad_layout: unknown layout %d", layout);
    g_conv_wgrad_layout = layout;
}

int gpu_conv_wgrad_layout(void) { return g_conv_wgrad_layout; }
