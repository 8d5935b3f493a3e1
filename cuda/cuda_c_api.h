/* The C headers of the core, made includable from C++ (.cu) translation units: C linkage for
 * every declaration, and C11's _Noreturn spelled the C++ way while they are read. */
#ifndef ALICE_CUDA_C_API_H
#define ALICE_CUDA_C_API_H

#ifdef __cplusplus
#define _Noreturn [[noreturn]]
extern "C" {
#endif

#include "core/check.h"
#include "core/log.h"
#include "ops/backend.h"
#include "ops/dist_gpu.h"
#include "ops/gpu_device.h"

#ifdef __cplusplus
}
#undef _Noreturn
#endif

#endif
