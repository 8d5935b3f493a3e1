/* The EMA target update's arithmetic, target <- momentum * target + (1 - momentum) * online,
 * one inline shared by gcc and nvcc (ALICE_HOSTDEV) so that every pass that updates a target
 * (the backend op ema_update, and the AdamW pass that updates the target from the new
 * parameters in the same sweep) rounds an element the same way on its backend.
 *
 * rest = 1 - momentum is formed once per call on the host, in float.
 *
 * On the GPU the roundings are spelled out with intrinsics: they are those nvcc 13.0 gave the
 * former ema_update kernel's `momentum * target + rest * online` for sm_90 (its PTX: mul.f32
 * online*rest, then fma.rn.f32 target*momentum + that product; the lone product has no add
 * for ptxas to fuse it with), now fixed whatever the call site, so a fused kernel cannot
 * contract it differently. tests/gpu/test_adamw_ptx.sh checks the kernels' PTX,
 * tests/cuda_emu/test_adamw_emulated.sh the values. The CPU build (no FMA) rounds each
 * operation, as cpu_ema_update always did. */
#ifndef ALICE_EMA_MATH_H
#define ALICE_EMA_MATH_H

#include "core/hostdev.h"

static inline ALICE_HOSTDEV float ema_element(float target, float online, float momentum,
                                              float rest)
{
#if defined(__CUDA_ARCH__) || defined(ALICE_EMULATE_CUDA_ROUNDING)
    return __fmaf_rn(target, momentum, __fmul_rn(online, rest));
#else
    return momentum * target + rest * online;
#endif
}

#endif
