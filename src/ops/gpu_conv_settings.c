/* The convolution choices of gpu_device.h (config keys conv_wgrad_layout and pointwise_conv),
 * one copy for both builds: the CUDA backend reads them when it builds a convolution plan or
 * runs a convolution (cuda/cuda_conv.cu); without CUDA they are recorded, so configuration code
 * and its tests behave the same in both builds. */
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

static int g_pointwise_conv = POINTWISE_CONV_CUDNN;

void gpu_set_pointwise_conv(int kernel)
{
    if (kernel != POINTWISE_CONV_CUDNN && kernel != POINTWISE_CONV_OWN)
        ALICE_FATAL("gpu_set_pointwise_conv: unknown pointwise convolution kernel %d", kernel);
    g_pointwise_conv = kernel;
}

int gpu_pointwise_conv(void) { return g_pointwise_conv; }
