/* What both host emulations of CUDA kernels share: emu_cuda.h (a std::thread per CUDA thread,
 * barriers, shuffles) and emu_serial.h (one CUDA thread after another, for kernels without
 * barriers). The CUDA keywords as no-ops, dim3 and the index type of threadIdx/blockIdx (each
 * emulation declares those variables itself: thread-local in one, plain in the other), bf16 with
 * the conversions of src/ops/bf16.h (the CPU backend's, which round to nearest even as CUDA's
 * __float2bfloat16_rn does, NaN included), and the stream / launch-check stand-ins of
 * cuda/cuda_context.h and cuda/cuda_check.h. */
#ifndef ALICE_EMU_CUDA_TYPES_H
#define ALICE_EMU_CUDA_TYPES_H

#include <algorithm>
#include <cstdint>

extern "C" {
#include "ops/bf16.h"
}

/* Kernels call min/max unqualified, as device code may. */
using std::max;
using std::min;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(x) alignas(x)

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct EmuIndex { unsigned x, y, z; };

/* ---- bf16: the same 16 bits as bf16_t ---- */
struct __nv_bfloat16 { uint16_t bits; };
inline __nv_bfloat16 __float2bfloat16_rn(float f)
{
    __nv_bfloat16 h;
    h.bits = bf16_from_float(f);
    return h;
}
/* CUDA's __float2bfloat16 rounds to nearest even too. */
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
inline float __bfloat162float(__nv_bfloat16 h) { return bf16_to_float(h.bits); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.bits; }

/* ---- the stream and the launch check: one in-order host "stream", nothing to check ---- */
inline int cuda_stream() { return 0; }
#define CUDA_CHECK_LAUNCH() (void)0

#endif
