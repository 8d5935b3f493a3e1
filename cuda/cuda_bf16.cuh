/* Element-type conversions for kernels templated on their storage type (fp32 or bf16
 * activations, precision = bf16): kernels read through widen() and write through
 * narrow_to<T>(), so one kernel body serves both types and the bf16 instantiation rounds each
 * stored value exactly once (nearest even, the rounding of src/ops/bf16.h's bf16_from_float).
 * The backend's C interface passes bf16 tensors as bf16_t (uint16_t, src/ops/bf16.h), the same
 * bits as __nv_bfloat16; as_nv() reinterprets them. Also compiled by the host emulation of
 * tests/cuda_emu, which supplies __nv_bfloat16 and its conversions. */
#ifndef ALICE_CUDA_BF16_CUH
#define ALICE_CUDA_BF16_CUH

#include <cuda_bf16.h>
#include <stdint.h>

static_assert(sizeof(__nv_bfloat16) == sizeof(uint16_t), "bf16_t and __nv_bfloat16 share bits");

__device__ __forceinline__ float widen(float x) { return x; }
__device__ __forceinline__ float widen(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> struct NarrowTo;
template <> struct NarrowTo<float> {
    static __device__ __forceinline__ float from(float x) { return x; }
};
template <> struct NarrowTo<__nv_bfloat16> {
    static __device__ __forceinline__ __nv_bfloat16 from(float x) { return __float2bfloat16_rn(x); }
};
template <typename T> __device__ __forceinline__ T narrow_to(float x)
{
    return NarrowTo<T>::from(x);
}

/* bf16_t (uint16_t storage) <-> __nv_bfloat16 pointers: same bits, no conversion. */
static inline __nv_bfloat16 *as_nv(uint16_t *p) { return reinterpret_cast<__nv_bfloat16 *>(p); }
static inline const __nv_bfloat16 *as_nv(const uint16_t *p)
{
    return reinterpret_cast<const __nv_bfloat16 *>(p);
}

#endif
