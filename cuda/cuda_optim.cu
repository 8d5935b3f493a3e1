/* AdamW and the EMA target update of the CUDA backend: one pass over a flat buffer each, or
 * both in one pass (AdamW with an EMA target). Both rewrite weights, so where a bf16 copy of
 * them is current (cuda/cuda_weight_copy.h) the same pass writes the rounded new value there
 * too and the copy stays current. And per-tensor gradient clipping (clip_segments). */
#include <math.h>

#include "cuda/cuda_kernels.cuh"  /* and, through cuda/cuda_c_api.h, core/check.h */
#include "cuda/cuda_ops.h"
#include "cuda/cuda_weight_copy.h"
#include "ops/adamw_math.h"
#include "ops/clip_math.h"
#include "ops/decay_mask.h"
#include "ops/ema_math.h"

/* ---- EMA target update: target = momentum target + rest online (ops/ema_math.h) ----
 * One element or one chunk of W, given the online values (from memory, or from the registers
 * of the AdamW pass that just computed them); the bf16 copy of the target, when current, gets
 * the rounded new value. */
struct EmaCoeffs {
    float momentum, rest;  /* rest = 1 - momentum, formed once on the host */
};

static __device__ __forceinline__ void ema_one(float *target, __nv_bfloat16 *target_bf16,
                                               size_t i, float online, EmaCoeffs e)
{
    const float t = ema_element(target[i], online, e.momentum, e.rest);
    target[i] = t;
    if (target_bf16) target_bf16[i] = __float2bfloat16_rn(t);
}

template <int W>
static __device__ __forceinline__ void ema_chunk(float *target, __nv_bfloat16 *target_bf16,
                                                 size_t i, const Pack<float, W> &online,
                                                 EmaCoeffs e)
{
    Pack<float, W> vt = load_pack<float, W>(target + i);
    Pack<__nv_bfloat16, W> vb;
#pragma unroll
    for (int k = 0; k < W; k++) {
        vt.v[k] = ema_element(vt.v[k], online.v[k], e.momentum, e.rest);
        vb.v[k] = __float2bfloat16_rn(vt.v[k]);
    }
    store_pack(target + i, vt);
    if (target_bf16) store_pack(target_bf16 + i, vb);
}

/* 4 floats per 16-byte access; their bf16 copy is one 8-byte store, so a copy takes the
 * vector path only when 8-byte aligned. */
constexpr int kOptimPerVec = kVecBytes / (int)sizeof(float);

static bool bf16_copy_vector_aligned(const __nv_bfloat16 *copy)
{
    return !copy || (uintptr_t)copy % (kOptimPerVec * sizeof(*copy)) == 0;
}

/* The buffers of one AdamW pass (device memory); target and target_bf16 only with the EMA. */
struct AdamwBuffers {
    float *param;
    __nv_bfloat16 *param_bf16;  /* the current bf16 copy of param, or NULL */
    const float *grad;
    float *m, *v;
    const uint32_t *decay_mask;
    float *target;              /* the EMA target, updated from the new parameters */
    __nv_bfloat16 *target_bf16; /* its current bf16 copy, or NULL */
};

/* AdamW over a whole ParamSet in one launch (ops/adamw_math.h for the arithmetic, shared with
 * the CPU backend, the clipping factor c.grad_scale included; ops/decay_mask.h for which
 * elements decay). Each element gets the roundings of the former scale kernel followed by the
 * former per-tensor AdamW kernel (adamw_math.h spells them out with intrinsics, so the
 * vectorised and the scalar loop cannot be contracted differently), with the decay factor
 * c.decay or 1 picked by its mask bit (a weight_decay 0 tensor had the factor 1 too): the
 * results are the bits of the former clip pass and one launch per tensor.
 * kEma: the EMA target is updated from the new parameter while it is in a register
 * (ops/ema_math.h, the rounding of ema_kernel below), the bits of ema_update after AdamW
 * without reading the parameters a second time.
 * Vectorised path: 4 floats per 16-byte access of param, grad, m, v (and target), an 8-byte
 * store of their bf16 copies, and one mask word load for the 4 bits (i is a multiple of 4, so
 * they share a word); the scalar path takes the tail and misaligned buffers. */
template <bool kEma>
static __global__ void adamw_kernel(AdamwBuffers b, size_t n, AdamwCoeffs c, EmaCoeffs e,
                                    bool vectorised)
{
    constexpr int W = kOptimPerVec;
    grid_stride_split<W>(
        n, vectorised,
        [=](size_t i) {
            const Pack<float, W> vg = load_pack<float, W>(b.grad + i);
            Pack<float, W> vp = load_pack<float, W>(b.param + i);
            Pack<float, W> vm = load_pack<float, W>(b.m + i), vv = load_pack<float, W>(b.v + i);
            const uint32_t bits = decay_bits(b.decay_mask, i, W);
            Pack<__nv_bfloat16, W> vb;
#pragma unroll
            for (int k = 0; k < W; k++) {
                const float factor = (bits >> k) & 1u ? c.decay : 1.0f;
                vp.v[k] = adamw_element(vp.v[k], vg.v[k], &vm.v[k], &vv.v[k], factor, c);
                vb.v[k] = __float2bfloat16_rn(vp.v[k]);
            }
            store_pack(b.m + i, vm);
            store_pack(b.v + i, vv);
            store_pack(b.param + i, vp);
            if (b.param_bf16) store_pack(b.param_bf16 + i, vb);
            if constexpr (kEma) ema_chunk<W>(b.target, b.target_bf16, i, vp, e);
        },
        [=](size_t i) {
            float mi = b.m[i], vi = b.v[i];
            const float factor = decay_bit(b.decay_mask, i) ? c.decay : 1.0f;
            const float p = adamw_element(b.param[i], b.grad[i], &mi, &vi, factor, c);
            b.m[i] = mi;
            b.v[i] = vi;
            b.param[i] = p;
            if (b.param_bf16) b.param_bf16[i] = __float2bfloat16_rn(p);
            if constexpr (kEma) ema_one(b.target, b.target_bf16, i, p, e);
        });
}

void cuda_adamw(float *param, const float *grad, float *m, float *v, const uint32_t *decay_mask,
                size_t n, AdamwHyper h, float *ema_target, float ema_momentum)
{
    if (n == 0) return;
    /* The EMA reads each new parameter from the register the AdamW update left it in: a
     * target overlapping param would be updated from values that are not the online ones. */
    ALICE_ASSERT(!ema_target || ema_target + n <= param || param + n <= ema_target,
                 "adamw: the EMA target overlaps the parameters");
    const AdamwCoeffs c = adamw_coeffs(h);
    const EmaCoeffs e = {ema_momentum, 1.0f - ema_momentum};
    /* A ParamSet's buffer is one registered weight buffer, so the whole range has one copy;
     * the same holds for the target's. */
    const AdamwBuffers b = {param, cuda_weight_bf16_for_update(param, n), grad, m, v,
                            decay_mask, ema_target,
                            ema_target ? cuda_weight_bf16_for_update(ema_target, n) : NULL};
    const bool vec = aligned16(param, grad, (const float *)m, (const float *)v,
                               (const float *)ema_target) &&
                     bf16_copy_vector_aligned(b.param_bf16) &&
                     bf16_copy_vector_aligned(b.target_bf16);
    const unsigned grid = grid_for_split(n, vec, kOptimPerVec);
    if (ema_target) adamw_kernel<true><<<grid, kThreads, 0, cuda_stream()>>>(b, n, c, e, vec);
    else adamw_kernel<false><<<grid, kThreads, 0, cuda_stream()>>>(b, n, c, e, vec);
    CUDA_CHECK_LAUNCH();
}

/* The EMA update alone (ema_update): the same per-element arithmetic as the fused pass, 4
 * elements per 16-byte access where target, online and the copy allow. */
static __global__ void ema_kernel(float *target, __nv_bfloat16 *target_bf16, const float *online,
                                  size_t n, EmaCoeffs e, bool vectorised)
{
    constexpr int W = kOptimPerVec;
    grid_stride_split<W>(
        n, vectorised,
        [=](size_t i) { ema_chunk<W>(target, target_bf16, i, load_pack<float, W>(online + i), e); },
        [=](size_t i) { ema_one(target, target_bf16, i, online[i], e); });
}

void cuda_ema_update(float *target, const float *online, size_t n, float momentum)
{
    if (n == 0) return;
    __nv_bfloat16 *copy = cuda_weight_bf16_for_update(target, n);
    const EmaCoeffs e = {momentum, 1.0f - momentum};
    const bool vec = aligned16((const float *)target, online) && bf16_copy_vector_aligned(copy);
    ema_kernel<<<grid_for_split(n, vec, kOptimPerVec), kThreads, 0, cuda_stream()>>>(
        target, copy, online, n, e, vec);
    CUDA_CHECK_LAUNCH();
}

/* ---- per-segment clipping (clip_segments: ops/segment_pieces.h) ----
 * Two launches, no host synchronisation: one block per piece sums its squares in double; then
 * one block per piece adds its segment's piece sums in piece order (every block of a segment
 * the same additions, so the same factor) and scales its piece when the factor is below 1. */
static __global__ void piece_sum_squares_kernel(const float *x, const size_t *piece_start,
                                                double *piece_sums)
{
    const int k = (int)blockIdx.x;
    const size_t end = piece_start[k + 1];
    double sum = 0.0;
    for (size_t i = piece_start[k] + threadIdx.x; i < end; i += blockDim.x) {
        const double v = x[i];
        sum += v * v;
    }
    sum = block_sum(sum);
    if (threadIdx.x == 0) piece_sums[k] = sum;
}

static __global__ void clip_pieces_kernel(float *x, const size_t *piece_start,
                                          const int *piece_segment,
                                          const int *segment_first_piece,
                                          const double *piece_sums, double max_norm)
{
    __shared__ float factor;
    const int k = (int)blockIdx.x;
    if (threadIdx.x == 0) {
        const int s = piece_segment[k];
        double sum = 0.0;
        for (int j = segment_first_piece[s]; j < segment_first_piece[s + 1]; j++)
            sum += piece_sums[j];
        factor = clip_factor(sqrt(sum), max_norm);
    }
    __syncthreads();
    const float f = factor;
    if (f >= 1.0f) return;
    const size_t end = piece_start[k + 1];
    for (size_t i = piece_start[k] + threadIdx.x; i < end; i += blockDim.x)
        x[i] *= f;   /* a lone product: nothing to contract, one rounding as on the CPU */
}

void cuda_clip_segments(float *x, const SegmentPieces *sp, double max_norm)
{
    if (sp->pieces == 0) return;
    piece_sum_squares_kernel<<<sp->pieces, kThreads, 0, cuda_stream()>>>(x, sp->piece_start,
                                                                        sp->piece_sums);
    CUDA_CHECK_LAUNCH();
    clip_pieces_kernel<<<sp->pieces, kThreads, 0, cuda_stream()>>>(
        x, sp->piece_start, sp->piece_segment, sp->segment_first_piece, sp->piece_sums, max_norm);
    CUDA_CHECK_LAUNCH();
}
