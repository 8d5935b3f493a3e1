/* The bookkeeping half of the cuDNN convolution autotune (config key conv_autotune,
 * gpu_device.h): the setting, the statistics and their report. The Find calls, on scratch
 * buffers of a plan's shapes, are cuda_conv.cu's (they need the plan's descriptors); the choice
 * of one direction is src/ops/conv_autotune_rule.h's. */
#ifndef ALICE_CUDA_CONV_AUTOTUNE_H
#define ALICE_CUDA_CONV_AUTOTUNE_H

#include "cuda/cuda_check.h"  /* and, through cuda_c_api.h, ops/gpu_device.h */

/* 1 when gpu_set_conv_autotune(1) is in force: new plans are built for tuning. */
int cuda_conv_autotune_enabled(void);

/* The run's statistics, which conv_autotune_choose adds each direction to. */
GpuConvAutotuneStats *cuda_conv_autotune_stats(void);

/* A plan whose three directions were searched; `changed`: some direction left the heuristic. */
void cuda_conv_autotune_note_tuned(int changed);

/* A plan built while a CUDA graph recorded (or whose Find failed, or whose trial buffers did
 * not fit the free device memory): the heuristic's choices for good, so no recorded graph's
 * algorithm moves. */
void cuda_conv_autotune_note_untuned(void);

#endif
