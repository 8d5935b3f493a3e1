/* The kernel-path choices of gpu_device.h (config keys instnorm_kernel, conv_wgrad_layout,
 * conv_wgrad_kernel and pointwise_conv), one copy for both builds: the CUDA backend reads them
 * per call or when it builds a convolution plan; without CUDA they are recorded, so
 * configuration code and its tests behave the same in both builds. Each choice is one of two
 * enum values; anything else is a programming error (the config registry admits only the two
 * names). */
#include "core/check.h"
#include "ops/gpu_device.h"

static int g_instnorm_kernel = INSTNORM_KERNEL_OWN;
static int g_conv_wgrad_layout = CONV_WGRAD_NCDHW;
static int g_conv_wgrad_kernel = CONV_WGRAD_KERNEL_OWN;
static int g_pointwise_conv = POINTWISE_CONV_CUDNN;

/* *slot = value when it is one of the two allowed, else a fatal error naming the setter. */
static void set_choice(int *slot, int value, int first, int second, const char *setter)
{
    if (value != first && value != second)
        ALICE_FATAL("%s: unknown value %d (expected %d or %d)", setter, value, first, second);
    *slot = value;
}

void gpu_set_instnorm(int kernel)
{
    set_choice(&g_instnorm_kernel, kernel, INSTNORM_KERNEL_OWN, INSTNORM_KERNEL_CUDNN,
               "gpu_set_instnorm");
}

int gpu_instnorm_kernel(void) { return g_instnorm_kernel; }

void gpu_set_conv_wgrad_layout(int layout)
{
    set_choice(&g_conv_wgrad_layout, layout, CONV_WGRAD_NCDHW, CONV_WGRAD_NDHWC,
               "gpu_set_conv_wgrad_layout");
}

int gpu_conv_wgrad_layout(void) { return g_conv_wgrad_layout; }

void gpu_set_conv_wgrad_kernel(int kernel)
{
    set_choice(&g_conv_wgrad_kernel, kernel, CONV_WGRAD_KERNEL_OWN, CONV_WGRAD_KERNEL_CUDNN,
               "gpu_set_conv_wgrad_kernel");
}

int gpu_conv_wgrad_kernel(void) { return g_conv_wgrad_kernel; }

void gpu_set_pointwise_conv(int kernel)
{
    set_choice(&g_pointwise_conv, kernel, POINTWISE_CONV_CUDNN, POINTWISE_CONV_OWN,
               "gpu_set_pointwise_conv");
}

int gpu_pointwise_conv(void) { return g_pointwise_conv; }
