/* LayerNorm, softmax and instance norm of the CUDA backend (own kernels).
 * Rows of LayerNorm/softmax are short (the model width, the token count), so one warp owns a
 * row: no block barriers, except where LayerNorm's backward adds its warps' column sums in
 * shared memory. Instance norm planes are long (up to 96^3 voxels), so their statistics are
 * reduced in two deterministic stages over chunks of each plane. */
#include <type_traits>

#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_ops.h"
#include "cuda/cuda_weight_copy.h" /* cuda_round_to_bf16 */
#include "ops/cpu_math.h"          /* leaky_relu_value / _grad, MATH_ADD */

constexpr int kRowsPerBlock = kThreads / 32;

static unsigned row_blocks(int rows) { return (unsigned)((rows + kRowsPerBlock - 1) / kRowsPerBlock); }

/* Widths 128 * kVec up to this take the forward's vector kernel: 32 floats of a row per lane in
 * registers at most (the backward holds two rows' worth: kLnBwdVecMax below). */
constexpr int kLnVecMax = 8;

/* The vector kernels' kVec for a row width: width / 128 where the width is a multiple of 128 up
 * to 128 kMax and every row pointer is 16-byte aligned (a NULL one is), else 0 (the scalar
 * kernels). */
template <typename... P> static int layernorm_vec_width(int dim, int kMax, const P *...rows)
{
    return dim % 128 == 0 && dim / 128 <= kMax && aligned16(rows...) ? dim / 128 : 0;
}

/* Calls launch(std::integral_constant<int, kVec>()) for kVec = vec in 0..kMax, so a launcher
 * names each kernel instance once. */
template <int kMax, class Launch> static void with_vec_width(int vec, Launch launch)
{
    if constexpr (kMax > 0) {
        if (vec == kMax) return launch(std::integral_constant<int, kMax>());
        with_vec_width<kMax - 1>(vec, launch);
    } else {
        launch(std::integral_constant<int, 0>());
    }
}

/* ---- LayerNorm ---- */

/* TOut: float, or __nv_bfloat16 for bf16 activations (statistics stay fp32; y rounded once).
 * A warp owns a row. Lane L owns the row's 4-element chunks L, L + 32, L + 64, ... (and, past
 * the last whole chunk, elements 4 * (dim / 4) + L, ...) and adds its elements in that order,
 * chunk by chunk: the one order both kernels below use, so they give the same bits.
 *
 * layernorm_fwd_kernel takes any width, with scalar loads, and reads the row three times
 * (mean, variance, output). layernorm_fwd_vec_kernel takes widths 128 * kVec (384 and 768 in
 * the models) with 16-byte-aligned rows: each lane loads its kVec chunks at once as 16-byte
 * loads, keeps them in registers (4 * kVec floats) for the three passes and writes 16 (fp32)
 * or 8 (bf16) bytes at a time. Run 9's profile (H200) had the scalar kernel at 0.88 ms for the
 * paper step's 60 calls, about 1.7 TB/s: with one row per warp the encoder's 2304-row calls
 * leave 17 warps per SM, each with a few scalar loads in flight. (Run 3 measured an earlier
 * register-resident variant, 32 scalar floats per lane and 79 registers, slower than the
 * scalar kernel: 13.5 against 10.7 us.) */
template <typename TOut, bool kAdd>
static __global__ void layernorm_fwd_kernel(TOut *y, float *mean, float *rstd, const float *x,
                                            const __nv_bfloat16 *branch, float *sum,
                                            const float *gamma, const float *beta, int rows,
                                            int dim, float eps)
{
    const int row = blockIdx.x * kRowsPerBlock + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float *xr = x + (size_t)row * dim;
    const __nv_bfloat16 *br = kAdd ? branch + (size_t)row * dim : nullptr;
    /* the row's value at d: x, or (add_layernorm_fwd) x plus the widened branch, the same
     * fp32 add in every pass */
    auto value = [&](int d) {
        if constexpr (kAdd) return xr[d] + widen(br[d]);
        else return xr[d];
    };
    const int chunks = dim / 4, tail = chunks * 4;
    float s = 0.0f;
    for (int c = lane; c < chunks; c += 32)
        for (int k = 0; k < 4; k++) s += value(4 * c + k);
    for (int d = tail + lane; d < dim; d += 32) s += value(d);
    const float mu = warp_sum(s) / dim;
    float sq = 0.0f;
    for (int c = lane; c < chunks; c += 32)
        for (int k = 0; k < 4; k++) { const float t = value(4 * c + k) - mu; sq += t * t; }
    for (int d = tail + lane; d < dim; d += 32) { const float t = value(d) - mu; sq += t * t; }
    const float rs = rsqrtf(warp_sum(sq) / dim + eps);  /* biased variance, as PyTorch */
    TOut *yr = y + (size_t)row * dim;
    for (int d = lane; d < dim; d += 32) {
        const float g = gamma ? gamma[d] : 1.0f, b = beta ? beta[d] : 0.0f, v = value(d);
        if constexpr (kAdd) sum[(size_t)row * dim + d] = v;
        yr[d] = narrow_to<TOut>((v - mu) * rs * g + b);
    }
    if (lane == 0) {
        if (mean) mean[row] = mu;
        if (rstd) rstd[row] = rs;
    }
}

template <typename TOut, int kVec, bool kAdd>
static __global__ void __launch_bounds__(kThreads)
    layernorm_fwd_vec_kernel(TOut *y, float *mean, float *rstd, const float *x,
                             const __nv_bfloat16 *branch, float *sum, const float *gamma,
                             const float *beta, int rows, float eps)
{
    constexpr int dim = 128 * kVec;
    const int row = blockIdx.x * kRowsPerBlock + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float *xr = x + (size_t)row * dim;
    Pack<float, 4> v[kVec];
#pragma unroll
    for (int k = 0; k < kVec; k++) v[k] = load_pack<float, 4>(xr + 4 * (lane + 32 * k));
    if constexpr (kAdd) {
        /* every load in flight before the adds; the sum stored once, 16 bytes at a time */
        Pack<__nv_bfloat16, 4> bv[kVec];
#pragma unroll
        for (int k = 0; k < kVec; k++)
            bv[k] = load_pack<__nv_bfloat16, 4>(branch + (size_t)row * dim + 4 * (lane + 32 * k));
#pragma unroll
        for (int k = 0; k < kVec; k++) {
#pragma unroll
            for (int e = 0; e < 4; e++) v[k].v[e] = v[k].v[e] + widen(bv[k].v[e]);
            store_pack(sum + (size_t)row * dim + 4 * (lane + 32 * k), v[k]);
        }
    }
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < kVec; k++)
#pragma unroll
        for (int e = 0; e < 4; e++) s += v[k].v[e];
    const float mu = warp_sum(s) / dim;
    float sq = 0.0f;
#pragma unroll
    for (int k = 0; k < kVec; k++)
#pragma unroll
        for (int e = 0; e < 4; e++) { const float t = v[k].v[e] - mu; sq += t * t; }
    const float rs = rsqrtf(warp_sum(sq) / dim + eps);  /* biased variance, as PyTorch */
    TOut *yr = y + (size_t)row * dim;
#pragma unroll
    for (int k = 0; k < kVec; k++) {
        const int d = 4 * (lane + 32 * k);
        Pack<float, 4> g = {{1.0f, 1.0f, 1.0f, 1.0f}}, b = {{0.0f, 0.0f, 0.0f, 0.0f}};
        if (gamma) g = load_pack<float, 4>(gamma + d);
        if (beta) b = load_pack<float, 4>(beta + d);
        Pack<TOut, 4> out;
#pragma unroll
        for (int e = 0; e < 4; e++)
            out.v[e] = narrow_to<TOut>((v[k].v[e] - mu) * rs * g.v[e] + b.v[e]);
        store_pack(yr + d, out);
    }
    if (lane == 0) {
        if (mean) mean[row] = mu;
        if (rstd) rstd[row] = rs;
    }
}

/* The vector kernel where the width and the pointers allow it (a NULL gamma or beta is
 * aligned), else the scalar one: the same bits either way. branch (bf16) and sum: the add of
 * add_layernorm_fwd (both NULL: a plain LayerNorm of x). */
template <typename TOut>
static void launch_layernorm_fwd(TOut *y, float *mean, float *rstd, const float *x,
                                 const float *gamma, const float *beta, int rows, int dim,
                                 float eps, const __nv_bfloat16 *branch = nullptr,
                                 float *sum = nullptr)
{
    if (rows <= 0) return;
    const unsigned grid = row_blocks(rows);
    /* a row of branch is 2 * dim bytes: 16-byte aligned rows where dim % 128 == 0 */
    const int vec = layernorm_vec_width(dim, kLnVecMax, y, x, gamma, beta, sum, branch);
    with_vec_width<kLnVecMax>(vec, [&](auto k) {
        constexpr int kVec = decltype(k)::value;
        auto go = [&](auto add) {
            constexpr bool kAdd = decltype(add)::value;
            if constexpr (kVec > 0)
                layernorm_fwd_vec_kernel<TOut, kVec, kAdd><<<grid, kThreads, 0, cuda_stream()>>>(
                    y, mean, rstd, x, branch, sum, gamma, beta, rows, eps);
            else
                layernorm_fwd_kernel<TOut, kAdd><<<grid, kThreads, 0, cuda_stream()>>>(
                    y, mean, rstd, x, branch, sum, gamma, beta, rows, dim, eps);
        };
        if (branch) go(std::true_type());
        else go(std::false_type());
    });
    CUDA_CHECK_LAUNCH();
}

void cuda_layernorm_fwd(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                        const float *beta, int rows, int dim, float eps)
{
    launch_layernorm_fwd(y, mean, rstd, x, gamma, beta, rows, dim, eps);
}

void cuda_layernorm_fwd_bf16(bf16_t *y, float *mean, float *rstd, const float *x,
                             const float *gamma, const float *beta, int rows, int dim, float eps)
{
    launch_layernorm_fwd(as_nv(y), mean, rstd, x, gamma, beta, rows, dim, eps);
}

void cuda_add_layernorm_fwd(float *sum, void *y, DType y_type, float *mean, float *rstd,
                            const float *x, const bf16_t *branch, const float *gamma,
                            const float *beta, int rows, int dim, float eps)
{
    backend_check_add_layernorm("add_layernorm_fwd", sum, x, branch, (size_t)rows * dim);
    if (y_type == DTYPE_BF16)
        launch_layernorm_fwd(as_nv((bf16_t *)y), mean, rstd, x, gamma, beta, rows, dim, eps,
                             as_nv(branch), sum);
    else
        launch_layernorm_fwd((float *)y, mean, rstd, x, gamma, beta, rows, dim, eps,
                             as_nv(branch), sum);
}

/* ---- LayerNorm backward ----
 * dx = dx_residual + rstd (g - mean(g) - xhat mean(g xhat)), g = dy * gamma (dx_residual may
 * be NULL: nothing added); dgamma += sum_r dy xhat, dbeta += sum_r dy.
 * With dx and a parameter gradient (every LayerNorm of the model) at widths up to
 * kLnBwdFusedMaxDim, ONE kernel reads dy and x once for all three: a warp per row forms dx as
 * below, and each block also writes its rows' column sums of dy xhat and dy (partials); a
 * column sum over those partials (colsum's fixed tree, one launch) finishes dgamma and dbeta.
 * layernorm_bwd_dx16 (bf16 activations: dx is the next linear layer's dy) also stores dx in
 * bf16 from the same registers and adds dx's column sums as a third partial (the linear
 * layer's bias gradient, finished in the same column-sum launch), so that layer's rounding
 * column sum over an fp32 dy (a launch and a read of rows x dim floats) is not needed.
 * Alone, dx keeps its own kernel and the parameter gradients the two-output column sum over dy
 * and x. Every owner and order is fixed, so the bits do not depend on scheduling. Widths of
 * 128 kVec (kVec up to kLnBwdVecMax) with 16-byte-aligned rows take the fused kernel's vector
 * path: dy and x loaded once as 16-byte loads and held in registers (run 9, H200: the scalar
 * kernel moved about 1.5 TB/s, latency-bound with one row per warp). Run on the host by
 * tests/cuda_emu/test_layernorm_dx_emulated.sh. */

/* mean(g) and mean(g xhat) of one row. */
struct LayerNormDxMeans {
    float g, gx;
};

/* Each lane sums its share of the row in the forward's order (its 4-element chunks lane,
 * lane + 32, ..., then its elements past the last whole chunk), then the warp adds the lanes.
 * Both dx kernels call this (or, in the fused kernel's vector path, the same sums over the
 * same chunks held in registers) and layernorm_dx_value, so their dx have the same bits. */
static __device__ __forceinline__ void layernorm_dx_accumulate(float &sg, float &sgx, float dy,
                                                               float x, float gamma, float mu,
                                                               float rs)
{
    const float g = dy * gamma;
    sg += g;
    sgx += g * (x - mu) * rs;
}

static __device__ __forceinline__ LayerNormDxMeans layernorm_dx_means(const float *dyr,
                                                                      const float *xr, float mu,
                                                                      float rs,
                                                                      const float *gamma,
                                                                      int dim, int lane)
{
    float sg = 0.0f, sgx = 0.0f;
    const int chunks = dim / 4, tail = chunks * 4;
    for (int c = lane; c < chunks; c += 32)
        for (int k = 0; k < 4; k++) {
            const int d = 4 * c + k;
            layernorm_dx_accumulate(sg, sgx, dyr[d], xr[d], gamma ? gamma[d] : 1.0f, mu, rs);
        }
    for (int d = tail + lane; d < dim; d += 32)
        layernorm_dx_accumulate(sg, sgx, dyr[d], xr[d], gamma ? gamma[d] : 1.0f, mu, rs);
    return LayerNormDxMeans{warp_sum(sg) / dim, warp_sum(sgx) / dim};
}

/* dx's value from g = dy gamma and x; with a residual r, the sum r + that value. */
/* Every operation rounded on its own (MATH_*: __fmul_rn, __fsub_rn): a plain mul.f32 followed
 * by sub.f32 may be contracted into one FMA by ptxas, and not necessarily alike in every kernel
 * that inlines this, which would break the bit-identical dx of the fused and the dx kernels. */
static __device__ __forceinline__ float layernorm_dx_value(float g, float x, float mu, float rs,
                                                           LayerNormDxMeans m)
{
    const float xhat_gx = MATH_MUL(MATH_MUL(MATH_SUB(x, mu), rs), m.gx);
    return MATH_MUL(rs, MATH_SUB(MATH_SUB(g, m.g), xhat_gx));
}

/* __fadd_rn is never contracted into an FMA with the product in layernorm_dx_value: v is
 * rounded as the unfused kernel stored it, and the sum as the add op forms it, so the fused
 * dx equals layernorm_bwd followed by add bit for bit. */
static __device__ __forceinline__ float layernorm_dx_plus_residual(float residual, float v)
{
    return __fadd_rn(residual, v);
}

/* dx's element d of a row: g = dy[d] gamma[d], x = x[d]; resr the row of dx_residual or NULL. */
static __device__ __forceinline__ float layernorm_dx_element(const float *resr, int d, float g,
                                                             float x, float mu, float rs,
                                                             LayerNormDxMeans m)
{
    const float v = layernorm_dx_value(g, x, mu, rs, m);
    return resr ? layernorm_dx_plus_residual(resr[d], v) : v;
}

/* dx alone: a warp per row. */
static __global__ void layernorm_dx_kernel(float *dx, const float *dx_residual, const float *dy,
                                           const float *x, const float *mean, const float *rstd,
                                           const float *gamma, int rows, int dim)
{
    const int row = blockIdx.x * kRowsPerBlock + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float *xr = x + (size_t)row * dim, *dyr = dy + (size_t)row * dim;
    const float mu = mean[row], rs = rstd[row];
    const LayerNormDxMeans m = layernorm_dx_means(dyr, xr, mu, rs, gamma, dim, lane);
    float *dxr = dx + (size_t)row * dim;
    const float *resr = dx_residual ? dx_residual + (size_t)row * dim : NULL;
    for (int d = lane; d < dim; d += 32)
        dxr[d] = layernorm_dx_element(resr, d, dyr[d] * (gamma ? gamma[d] : 1.0f), xr[d], mu, rs,
                                      m);
}

static void launch_layernorm_dx(float *dx, const float *dx_residual, const float *dy,
                                const float *x, const float *mean, const float *rstd,
                                const float *gamma, int rows, int dim)
{
    layernorm_dx_kernel<<<row_blocks(rows), kThreads, 0, cuda_stream()>>>(
        dx, dx_residual, dy, x, mean, rstd, gamma, rows, dim);
    CUDA_CHECK_LAUNCH();
}

/* The column sums the fused kernel writes per block, partial[term][block][c]: the parameter
 * gradients' two, and with dx_colsum asked the third, the column sums of the final dx (the
 * next linear layer's bias gradient). */
enum LayerNormBwdTerm { LN_TERM_DGAMMA, LN_TERM_DBETA, LN_TERM_DX, LN_TERM_COUNT };
/* The fused kernel's two term sets (its template argument: the number of terms). */
constexpr int kLnTermsParams = LN_TERM_DX, kLnTermsWithDx = LN_TERM_COUNT;

/* dx (and its bf16 copy dx16 unless NULL), and per block the column sums of dy xhat and dy
 * over its rows (with kTerms = kLnTermsWithDx also of dx). Block b owns rows
 * [b R, (b + 1) R), R = rows_per_block (kRowsPerBlock warps, rows_per_block / kRowsPerBlock
 * rows each); warp w the rows b R + w, b R + w + kRowsPerBlock, ... Each lane sums its own
 * columns over its warp's rows in its warp's slice of shared memory, which no other thread
 * touches before the barrier; then the block adds the warps' slices in warp order into its
 * partials. kVec = 0: any width, scalar loads, a lane's columns d = lane + 32 j. kVec > 0: width
 * 128 kVec with 16-byte-aligned rows (the launcher checks), a lane's columns its 4-element
 * chunks lane, lane + 32, ... loaded once as 16-byte loads and held in registers for the means
 * and for dx (the forward's vector kernel, layernorm_fwd_vec_kernel, does the same): the same
 * sums in the same order, the same per-element arithmetic, so the same bits. */
template <int kTerms>
static __device__ __forceinline__ void layernorm_bwd_accumulate_columns(float *sum_dgamma,
                                                                        float *sum_dbeta,
                                                                        float *sum_dx, int d,
                                                                        float dyv, float xv,
                                                                        float dxv, float mu,
                                                                        float rs, bool first_row)
{
    /* the terms as the column sum over dy and x forms them (DyTimesXhat, MatrixElement) */
    const float term_dgamma = dyv * (xv - mu) * rs;
    sum_dgamma[d] = first_row ? term_dgamma : sum_dgamma[d] + term_dgamma;
    sum_dbeta[d] = first_row ? dyv : sum_dbeta[d] + dyv;
    /* __fadd_rn: never contracted with dx's last product (no residual), so the sum is of the
     * dx values stored */
    if constexpr (kTerms == kLnTermsWithDx) sum_dx[d] = first_row ? dxv : __fadd_rn(sum_dx[d], dxv);
}

/* Blocks per SM the vector kernel is compiled for: the shared memory at width 768 (72 KiB with
 * dx's column sums) allows 3, and its registers must too (80 then; uncapped it took 96, 2
 * blocks per SM, and the encoder's 288 blocks would not fit one wave of an H100/H200). Widths
 * up to 128 kLnBwdVecMax take it: at 896 and 1024 that cap spills. */
constexpr int kLnBwdMinBlocksPerSm = 3, kLnBwdVecMax = 6;
/* The scalar kernel's: 5 keeps the 48 registers it had with no minimum (a minimum of 1 let
 * ptxas take 72-80). */
constexpr int kLnBwdScalarMinBlocksPerSm = 5;

/* The same for the 4 columns d..d+3 of a vector-path chunk, through 16-byte shared-memory
 * accesses: a warp's 32 chunks are 512 contiguous bytes, where 4-byte accesses at a stride of
 * 4 floats would meet 4-way bank conflicts. The per-column arithmetic is the function above's. */
template <int kTerms>
static __device__ __forceinline__ void layernorm_bwd_accumulate_chunk(
    float *sum_dgamma, float *sum_dbeta, float *sum_dx, int d, const Pack<float, 4> &vdy,
    const Pack<float, 4> &vx, const Pack<float, 4> &vdx, float mu, float rs, bool first_row)
{
    Pack<float, 4> sg = {}, sb = {}, sd = {};
    if (!first_row) {
        sg = load_pack<float, 4>(sum_dgamma + d);
        sb = load_pack<float, 4>(sum_dbeta + d);
        if constexpr (kTerms == kLnTermsWithDx) sd = load_pack<float, 4>(sum_dx + d);
    }
#pragma unroll
    for (int e = 0; e < 4; e++) {
        const float term_dgamma = vdy.v[e] * (vx.v[e] - mu) * rs;
        sg.v[e] = first_row ? term_dgamma : sg.v[e] + term_dgamma;
        sb.v[e] = first_row ? vdy.v[e] : sb.v[e] + vdy.v[e];
        if constexpr (kTerms == kLnTermsWithDx)
            sd.v[e] = first_row ? vdx.v[e] : __fadd_rn(sd.v[e], vdx.v[e]);
    }
    store_pack(sum_dgamma + d, sg);
    store_pack(sum_dbeta + d, sb);
    if constexpr (kTerms == kLnTermsWithDx) store_pack(sum_dx + d, sd);
}

template <int kTerms, int kVec>
static __global__ void __launch_bounds__(kThreads, kVec > 0 ? kLnBwdMinBlocksPerSm
                                                            : kLnBwdScalarMinBlocksPerSm)
    layernorm_bwd_fused_kernel(float *dx, const float *dx_residual, __nv_bfloat16 *dx16,
                               float *partial, const float *dy, const float *x,
                               const float *mean, const float *rstd, const float *gamma,
                               int rows, int dim, int rows_per_block)
{
    static_assert(kTerms == kLnTermsParams || kTerms == kLnTermsWithDx, "a term set");
    extern __shared__ float ln_bwd_warp_sums[]; /* [kRowsPerBlock][kTerms][dim] */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float *const warp_slice = ln_bwd_warp_sums + (size_t)warp * kTerms * dim;
    float *const sum_dgamma = warp_slice + (size_t)LN_TERM_DGAMMA * dim;
    float *const sum_dbeta = warp_slice + (size_t)LN_TERM_DBETA * dim;
    float *const sum_dx = warp_slice + (size_t)LN_TERM_DX * dim; /* kLnTermsWithDx only */
    const int block = (int)blockIdx.x;
    const int first = block * rows_per_block + warp;
    const int end = min(rows, (block + 1) * rows_per_block);
    if (first >= end)  /* a warp without rows (the ragged end of the last block) */
        for (int d = lane; d < dim; d += 32) {
            sum_dgamma[d] = sum_dbeta[d] = 0.0f;
            if constexpr (kTerms == kLnTermsWithDx) sum_dx[d] = 0.0f;
        }
    for (int row = first; row < end; row += kRowsPerBlock) {
        const float *xr = x + (size_t)row * dim, *dyr = dy + (size_t)row * dim;
        const float mu = mean[row], rs = rstd[row];
        float *dxr = dx + (size_t)row * dim;
        __nv_bfloat16 *dx16r = dx16 ? dx16 + (size_t)row * dim : NULL;
        const float *resr = dx_residual ? dx_residual + (size_t)row * dim : NULL;
        const bool first_row = row == first;
        if constexpr (kVec == 0) {
            const LayerNormDxMeans m = layernorm_dx_means(dyr, xr, mu, rs, gamma, dim, lane);
            for (int d = lane; d < dim; d += 32) {
                const float dyv = dyr[d], xv = xr[d];  /* read before dx is stored */
                const float dxv =
                    layernorm_dx_element(resr, d, dyv * (gamma ? gamma[d] : 1.0f), xv, mu, rs, m);
                dxr[d] = dxv;
                /* the bf16 copy the next linear layer's GEMMs take: to_bf16's rounding of dx */
                if (dx16r) dx16r[d] = __float2bfloat16_rn(dxv);
                layernorm_bwd_accumulate_columns<kTerms>(sum_dgamma, sum_dbeta, sum_dx, d, dyv, xv,
                                                         dxv, mu, rs, first_row);
            }
        } else {
            Pack<float, 4> vdy[kVec], vx[kVec];  /* read before dx is stored */
#pragma unroll
            for (int k = 0; k < kVec; k++) {
                vdy[k] = load_pack<float, 4>(dyr + 4 * (lane + 32 * k));
                vx[k] = load_pack<float, 4>(xr + 4 * (lane + 32 * k));
            }
            float sg = 0.0f, sgx = 0.0f;
#pragma unroll
            for (int k = 0; k < kVec; k++) {
                const Pack<float, 4> vg =
                    gamma ? load_pack<float, 4>(gamma + 4 * (lane + 32 * k))
                          : Pack<float, 4>{{1.0f, 1.0f, 1.0f, 1.0f}};
#pragma unroll
                for (int e = 0; e < 4; e++)
                    layernorm_dx_accumulate(sg, sgx, vdy[k].v[e], vx[k].v[e], vg.v[e], mu, rs);
            }
            const LayerNormDxMeans m{warp_sum(sg) / dim, warp_sum(sgx) / dim};
#pragma unroll
            for (int k = 0; k < kVec; k++) {
                const int d = 4 * (lane + 32 * k);
                const Pack<float, 4> vg = gamma ? load_pack<float, 4>(gamma + d)
                                                : Pack<float, 4>{{1.0f, 1.0f, 1.0f, 1.0f}};
                Pack<float, 4> vres = {{0.0f, 0.0f, 0.0f, 0.0f}};
                if (resr) vres = load_pack<float, 4>(resr + d);
                Pack<float, 4> vdx;
                Pack<__nv_bfloat16, 4> vdx16;
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const float v =
                        layernorm_dx_value(vdy[k].v[e] * vg.v[e], vx[k].v[e], mu, rs, m);
                    vdx.v[e] = resr ? layernorm_dx_plus_residual(vres.v[e], v) : v;
                    vdx16.v[e] = __float2bfloat16_rn(vdx.v[e]);
                }
                store_pack(dxr + d, vdx);
                if (dx16r) store_pack(dx16r + d, vdx16);
                layernorm_bwd_accumulate_chunk<kTerms>(sum_dgamma, sum_dbeta, sum_dx, d, vdy[k],
                                                       vx[k], vdx, mu, rs, first_row);
            }
        }
    }
    __syncthreads();
    const size_t per_term = (size_t)gridDim.x * dim;
    for (int term = 0; term < kTerms; term++)
        for (int d = (int)threadIdx.x; d < dim; d += (int)blockDim.x) {
            float t = 0.0f;
            for (int w = 0; w < kRowsPerBlock; w++)
                t += ln_bwd_warp_sums[((size_t)w * kTerms + term) * dim + d];
            partial[term * per_term + (size_t)block * dim + d] = t;
        }
}

/* Blocks of the fused kernel at most: one row per warp up to kRowsPerBlock x this many rows
 * (16384: every LayerNorm of the paper configuration), more per warp beyond, so the partials
 * (and the column sum that finishes them) stay bounded. */
constexpr int kLnBwdMaxBlocks = 2048;
/* Widths the fused kernel takes: its shared memory is kRowsPerBlock x terms x dim floats, at
 * most 96 KiB (within an H100's 227 KiB per block, two blocks per SM): up to 1536 wide with
 * the parameter gradients' two terms (48 KiB at 768), up to 1024 with dx's column sums as a
 * third (72 KiB at 768). Wider rows take the dx kernel and column sums over dy, x and dx. */
constexpr int kLnBwdFusedMaxDim = 1536;
constexpr int kLnBwdFusedMaxDimWithDx = kLnBwdFusedMaxDim * kLnTermsParams / kLnTermsWithDx;

/* Kernels above 48 KiB of dynamic shared memory must opt in, before their first launch at that
 * size (the eager step before a graph recording makes the call, never the recording); each
 * term set is a kernel of its own. */
template <int kTerms, int kVec> static void allow_fused_smem(size_t bytes)
{
    static size_t allowed = 48 * 1024;
    if (bytes <= allowed) return;
    CUDA_CHECK(cudaFuncSetAttribute(layernorm_bwd_fused_kernel<kTerms, kVec>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    allowed = bytes;
}

template <int kTerms, int kVec>
static void launch_fused_kernel(unsigned blocks, size_t smem, float *dx, const float *dx_residual,
                                __nv_bfloat16 *dx16, float *partial, const float *dy,
                                const float *x, const float *mean, const float *rstd,
                                const float *gamma, int rows, int dim, int rows_per_block)
{
    allow_fused_smem<kTerms, kVec>(smem);
    layernorm_bwd_fused_kernel<kTerms, kVec><<<blocks, kThreads, smem, cuda_stream()>>>(
        dx, dx_residual, dx16, partial, dy, x, mean, rstd, gamma, rows, dim, rows_per_block);
    CUDA_CHECK_LAUNCH();
}

/* The fused kernel's partials: kTerms matrices [blocks][dim] in slot SCRATCH_STATS (the
 * column sums that finish them use SCRATCH_COLSUM). */
struct LayerNormPartials {
    const float *partial;
    int blocks;
};

template <int kTerms>
static LayerNormPartials launch_layernorm_bwd_fused(float *dx, const float *dx_residual,
                                                    __nv_bfloat16 *dx16, const float *dy,
                                                    const float *x, const float *mean,
                                                    const float *rstd, const float *gamma,
                                                    int rows, int dim)
{
    const int rows_per_launch = kRowsPerBlock * kLnBwdMaxBlocks;
    const int rows_per_warp = (rows + rows_per_launch - 1) / rows_per_launch;
    const int rows_per_block = kRowsPerBlock * rows_per_warp;
    const int blocks = (rows + rows_per_block - 1) / rows_per_block;
    const size_t smem = (size_t)kRowsPerBlock * kTerms * dim * sizeof(float);
    float *partial = (float *)cuda_scratch(SCRATCH_STATS,
                                           (size_t)kTerms * blocks * dim * sizeof(float));
    /* the vector path where the width and every row pointer allow it (as the forward's) */
    const int vec = layernorm_vec_width(dim, kLnBwdVecMax, dx, dx_residual, dx16, dy, x, gamma);
    with_vec_width<kLnBwdVecMax>(vec, [&](auto k) {
        launch_fused_kernel<kTerms, decltype(k)::value>((unsigned)blocks, smem, dx, dx_residual,
                                                       dx16, partial, dy, x, mean, rstd, gamma,
                                                       rows, dim, rows_per_block);
    });
    return LayerNormPartials{partial, blocks};
}

/* LayerNorm's parameter-gradient terms: dgamma sums dy xhat, dbeta sums dy. */
struct DyTimesXhat {
    const float *dy, *x, *mean, *rstd;
    int dim;
    __device__ float operator()(long r, int c) const
    {
        const size_t i = (size_t)r * dim + c;
        return dy[i] * (x[i] - mean[r]) * rstd[r];
    }
};

/* Both terms from one pass: (dy xhat, dy), through the one-output functors themselves, so
 * each sum keeps the bits of its one-output column sum (the compiler loads dy once). */
struct DyTimesXhatAndDy {
    DyTimesXhat dgamma_term;
    MatrixElement dbeta_term;
    __device__ ColsumTerms<2> operator()(long r, int c) const
    {
        return ColsumTerms<2>{{dgamma_term(r, c), dbeta_term(r, c)}};
    }
};

/* N matrices' elements as the N terms of one column sum (the fused kernel's partials).
 * (tests/cuda_emu/test_colsum_emulated.sh cuts the two functors above, up to this template.) */
template <int N> struct MatrixElements {
    MatrixElement term[N];
    __device__ ColsumTerms<N> operator()(long r, int c) const
    {
        ColsumTerms<N> t;
#pragma unroll
        for (int o = 0; o < N; o++) t.v[o] = term[o](r, c);
        return t;
    }
};

template <int N>
static void colsum_partials(float *const *targets, const MatrixElement *terms, long rows, int dim)
{
    ColsumTargets<N> t;
    MatrixElements<N> f;
    for (int o = 0; o < N; o++) t.t[o] = targets[o], f.term[o] = terms[o];
    colsum_launch(t, rows, dim, f);
}

/* The wanted targets (dgamma, dbeta, dx_colsum; NULL: not wanted, its partial left unread) +=
 * the column sums of their partials, in ONE launch whichever are wanted; each target gets the
 * same bits whichever others come along (colsum_kernel adds every output alike). */
static void finish_partials(LayerNormPartials p, int dim, float *dgamma, float *dbeta,
                            float *dx_colsum)
{
    float *const wanted[LN_TERM_COUNT] = {dgamma, dbeta, dx_colsum}; /* LayerNormBwdTerm order */
    float *targets[LN_TERM_COUNT];
    MatrixElement terms[LN_TERM_COUNT];
    const size_t per_term = (size_t)p.blocks * dim;
    int n = 0;
    for (int term = 0; term < LN_TERM_COUNT; term++) {
        if (!wanted[term]) continue;
        targets[n] = wanted[term];
        terms[n] = MatrixElement{p.partial + term * per_term, dim};
        n++;
    }
    if (n == 1) colsum_partials<1>(targets, terms, p.blocks, dim);
    else if (n == 2) colsum_partials<2>(targets, terms, p.blocks, dim);
    else if (n == 3) colsum_partials<3>(targets, terms, p.blocks, dim);
}

/* target[c] += sum over rows of terms(r, c): both targets in one launch, or the one given. */
template <class F1, class F2, class FBoth>
static void accumulate_param_grads(float *dgamma, float *dbeta, long rows, int dim,
                                   F1 dgamma_term, F2 dbeta_term, FBoth both)
{
    if (dgamma && dbeta)  /* one launch, one pass */
        colsum2_accumulate(dgamma, dbeta, rows, dim, both);
    else if (dgamma)
        colsum_accumulate(dgamma, rows, dim, dgamma_term);
    else if (dbeta)
        colsum_accumulate(dbeta, rows, dim, dbeta_term);
}

/* Where the fused kernel does not apply: dx's bf16 copy and column sums from the stored dx,
 * as linear_bwd_bf16 makes them from its fp32 dy (the same bits as that path). */
static void dx_outputs_from_stored(__nv_bfloat16 *dx16, float *dx_colsum, const float *dx,
                                   int rows, int dim)
{
    if (dx_colsum && dx16)
        colsum_accumulate(dx_colsum, rows, dim, MatrixElementRoundedCopy{dx, dim, dx16});
    else if (dx_colsum)
        colsum_accumulate(dx_colsum, rows, dim, MatrixElement{dx, dim});
    else if (dx16)
        cuda_round_to_bf16(dx16, dx, (size_t)rows * dim);
}

void cuda_layernorm_bwd_dx16(float *dx, const float *dx_residual, float *dgamma, float *dbeta,
                             bf16_t *dx_bf16, float *dx_colsum, const float *dy, const float *x,
                             const float *mean, const float *rstd, const float *gamma, int rows,
                             int dim)
{
    if (!dx && (dx_bf16 || dx_colsum))
        alice_fatal_at(__FILE__, __LINE__, "layernorm_bwd_dx16: dx_bf16 and dx_colsum are made "
                       "from dx, which was not asked for (pass dx too)");
    if (rows <= 0) return;
    if (dx)
        backend_check_residual("layernorm_bwd", dx, DTYPE_F32, dx_residual, (size_t)rows * dim);
    __nv_bfloat16 *const dx16 = dx_bf16 ? as_nv(dx_bf16) : NULL;
    /* one pass when dx and some column sum are asked (every LayerNorm of the model) */
    const int fused_max_dim = dx_colsum ? kLnBwdFusedMaxDimWithDx : kLnBwdFusedMaxDim;
    if (dx && (dgamma || dbeta || dx_colsum) && dim <= fused_max_dim) {
        const LayerNormPartials p =
            dx_colsum ? launch_layernorm_bwd_fused<kLnTermsWithDx>(dx, dx_residual, dx16, dy, x,
                                                                   mean, rstd, gamma, rows, dim)
                      : launch_layernorm_bwd_fused<kLnTermsParams>(dx, dx_residual, dx16, dy, x,
                                                                   mean, rstd, gamma, rows, dim);
        finish_partials(p, dim, dgamma, dbeta, dx_colsum);
        return;
    }
    if (dx) launch_layernorm_dx(dx, dx_residual, dy, x, mean, rstd, gamma, rows, dim);
    const DyTimesXhat dgamma_term{dy, x, mean, rstd, dim};
    const MatrixElement dbeta_term{dy, dim};
    accumulate_param_grads(dgamma, dbeta, rows, dim, dgamma_term, dbeta_term,
                           DyTimesXhatAndDy{dgamma_term, dbeta_term});
    dx_outputs_from_stored(dx16, dx_colsum, dx, rows, dim);
}

void cuda_layernorm_bwd(float *dx, const float *dx_residual, float *dgamma, float *dbeta,
                        const float *dy, const float *x, const float *mean, const float *rstd,
                        const float *gamma, int rows, int dim)
{
    cuda_layernorm_bwd_dx16(dx, dx_residual, dgamma, dbeta, NULL, NULL, dy, x, mean, rstd, gamma,
                            rows, dim);
}

/* ---- softmax over rows ---- */

static __global__ void softmax_fwd_kernel(float *y, const float *x, int rows, int cols)
{
    const int row = blockIdx.x * kRowsPerBlock + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float *xr = x + (size_t)row * cols;
    float mx = -INFINITY;
    for (int c = lane; c < cols; c += 32) mx = fmaxf(mx, xr[c]);
    mx = warp_max(mx);
    float s = 0.0f;
    for (int c = lane; c < cols; c += 32) s += expf(xr[c] - mx);
    const float inv = 1.0f / warp_sum(s);
    float *yr = y + (size_t)row * cols;
    for (int c = lane; c < cols; c += 32) yr[c] = expf(xr[c] - mx) * inv;
}

void cuda_softmax_fwd(float *y, const float *x, int rows, int cols)
{
    if (rows <= 0) return;
    softmax_fwd_kernel<<<row_blocks(rows), kThreads, 0, cuda_stream()>>>(y, x, rows, cols);
    CUDA_CHECK_LAUNCH();
}

/* dx = y (dy - sum(dy y)) */
static __global__ void softmax_bwd_kernel(float *dx, const float *dy, const float *y, int rows,
                                          int cols)
{
    const int row = blockIdx.x * kRowsPerBlock + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float *yr = y + (size_t)row * cols, *dyr = dy + (size_t)row * cols;
    float s = 0.0f;
    for (int c = lane; c < cols; c += 32) s += dyr[c] * yr[c];
    const float dot = warp_sum(s);
    float *dxr = dx + (size_t)row * cols;
    for (int c = lane; c < cols; c += 32) dxr[c] = yr[c] * (dyr[c] - dot);
}

void cuda_softmax_bwd(float *dx, const float *dy, const float *y, int rows, int cols)
{
    if (rows <= 0 || !dx) return;
    softmax_bwd_kernel<<<row_blocks(rows), kThreads, 0, cuda_stream()>>>(dx, dy, y, rows, cols);
    CUDA_CHECK_LAUNCH();
}

/* ---- per-plane sums (instance norm, convolution bias gradients) ----
 * A plane p = b * C + c of an NC(spatial) tensor is V contiguous floats. Stage 1: block
 * (chunk, plane) sums two terms f(plane, v) over its chunk in double; stage 2 adds each
 * plane's chunks in order, and per-channel results add the planes of the batch in order: a
 * fixed tree, no atomics, so the sums are deterministic. */
constexpr long kPlaneChunk = 16384;

static int plane_chunks(long V)
{
    long c = (V + kPlaneChunk - 1) / kPlaneChunk;
    return (int)(c < 1 ? 1 : c);
}

struct PlaneTerms {
    double a, b;
};

/* Elements a thread evaluates before adding them (in order, so the sums keep their bits): their
 * loads are in flight together, as in the device-wide reduction (kReduceUnroll) and the column
 * sums (kColsumUnroll); one load at a time left these passes latency-bound. */
constexpr int kPlaneUnroll = 4;

/* partial[(plane * chunks + chunk) * 2 + {0,1}] = chunk sums of f(plane, v).a and .b; the
 * planes over y, striding past the grid's limit (B C can exceed 65535: batch 128 x 768
 * channels). */
template <class F>
__global__ void plane_chunk_sums_kernel(double *partial, int planes, long V, F f)
{
    const int chunk = blockIdx.x, chunks = gridDim.x;
    const long v0 = (long)chunk * kPlaneChunk, v1 = min(V, v0 + kPlaneChunk);
    const long stride = blockDim.x;
    for (int plane = blockIdx.y; plane < planes; plane += gridDim.y) {
        double s1 = 0.0, s2 = 0.0;
        long v = v0 + threadIdx.x;
        for (; v + (kPlaneUnroll - 1) * stride < v1; v += kPlaneUnroll * stride) {
            PlaneTerms t[kPlaneUnroll];
#pragma unroll
            for (int k = 0; k < kPlaneUnroll; k++) t[k] = f(plane, v + k * stride);
#pragma unroll
            for (int k = 0; k < kPlaneUnroll; k++) {
                s1 += t[k].a;
                s2 += t[k].b;
            }
        }
        for (; v < v1; v += stride) {
            const PlaneTerms t = f(plane, v);
            s1 += t.a;
            s2 += t.b;
        }
        s1 = block_sum(s1);
        s2 = block_sum(s2);
        if (threadIdx.x == 0) {
            partial[((size_t)plane * chunks + chunk) * 2] = s1;
            partial[((size_t)plane * chunks + chunk) * 2 + 1] = s2;
        }
    }
}

template <class F> static void launch_plane_chunk_sums(double *partial, int planes, int chunks,
                                                       long V, F f)
{
    const unsigned ys = (unsigned)planes < kMaxPlaneBlocksY ? (unsigned)planes : kMaxPlaneBlocksY;
    plane_chunk_sums_kernel<<<dim3(chunks, ys), kThreads, 0, cuda_stream()>>>(partial, planes, V,
                                                                                f);
    CUDA_CHECK_LAUNCH();
}

/* sums[plane * 2 + {0,1}] = plane totals of the two terms */
static __global__ void plane_totals_kernel(double *sums, const double *partial, int planes,
                                           int chunks)
{
    GRID_STRIDE(p, planes) {
        double s1 = 0.0, s2 = 0.0;
        for (int c = 0; c < chunks; c++) {
            s1 += partial[((size_t)p * chunks + c) * 2];
            s2 += partial[((size_t)p * chunks + c) * 2 + 1];
        }
        sums[p * 2] = s1;
        sums[p * 2 + 1] = s2;
    }
}

/* first[c] += sum_b sums[(b C + c) 2], second[c] += sum_b sums[(b C + c) 2 + 1] (either may
 * be NULL): parameter gradients accumulate. */
static __global__ void channel_totals_accumulate_kernel(float *first, float *second,
                                                        const double *sums, int B, int C)
{
    GRID_STRIDE(c, C) {
        double s1 = 0.0, s2 = 0.0;
        for (int b = 0; b < B; b++) {
            s1 += sums[((size_t)b * C + c) * 2];
            s2 += sums[((size_t)b * C + c) * 2 + 1];
        }
        if (first) first[c] += (float)s1;
        if (second) second[c] += (float)s2;
    }
}

/* Stage 2 from the partials of stage 1: the plane totals (returned, in the scratch after the
 * partials) and, where a target is given, their per-channel sums added to it. */
static const double *plane_totals(double *partial, int B, int C, int chunks, float *first,
                                  float *second)
{
    const int planes = B * C;
    double *sums = partial + (size_t)planes * chunks * 2;
    plane_totals_kernel<<<grid_for(planes), kThreads, 0, cuda_stream()>>>(sums, partial, planes,
                                                                           chunks);
    CUDA_CHECK_LAUNCH();
    if (first || second) {
        channel_totals_accumulate_kernel<<<grid_for(C), kThreads, 0, cuda_stream()>>>(
            first, second, sums, B, C);
        CUDA_CHECK_LAUNCH();
    }
    return sums;
}

/* Room for stage 1's partials and stage 2's plane totals. */
static double *plane_sums_scratch(int planes, int chunks)
{
    return (double *)cuda_scratch(SCRATCH_STATS, ((size_t)planes * chunks * 2 +
                                                  (size_t)planes * 2) * sizeof(double));
}

struct PlaneValues {
    const float *x;
    long V;
    __device__ PlaneTerms operator()(int plane, long v) const
    {
        return PlaneTerms{x[(size_t)plane * V + v], 0.0};
    }
};

void cuda_channel_sums_accumulate(float *target, const float *x, int B, int C, long V)
{
    const int planes = B * C, chunks = plane_chunks(V);
    if (planes <= 0 || V <= 0) return;
    double *partial = plane_sums_scratch(planes, chunks);
    launch_plane_chunk_sums(partial, planes, chunks, V, PlaneValues{x, V});
    plane_totals(partial, B, C, chunks, target, NULL);
}

/* ---- instance norm ---- */

/* the terms x and x^2 */
struct PlaneMoments {
    const float *x;
    long V;
    __device__ PlaneTerms operator()(int plane, long v) const
    {
        const double t = x[(size_t)plane * V + v];
        return PlaneTerms{t, t * t};
    }
};

static __global__ void instnorm_stats_kernel(float *mean, float *rstd, const double *partial,
                                             int planes, int chunks, long V, float eps)
{
    GRID_STRIDE(p, planes) {
        double s1 = 0.0, s2 = 0.0;
        for (int c = 0; c < chunks; c++) {
            s1 += partial[((size_t)p * chunks + c) * 2];
            s2 += partial[((size_t)p * chunks + c) * 2 + 1];
        }
        const double mu = s1 / V;
        double var = s2 / V - mu * mu;
        if (var < 0.0) var = 0.0;
        mean[p] = (float)mu;
        rstd[p] = (float)(1.0 / sqrt(var + eps));
    }
}

/* The elementwise passes of the instance norm run over plane_grid (cuda/cuda_kernels.cuh): each
 * thread reads its plane's statistics once instead of dividing its flat index by V for every
 * element. The per-element arithmetic is the former flat kernels', so the bits are too. */
constexpr int kInstnormPerVec = kPlanePerVec;

static __global__ void instnorm_apply_kernel(float *y, const float *x, const float *mean,
                                             const float *rstd, const float *gamma,
                                             const float *beta, const float *addend, bool lrelu,
                                             float slope, int C, int planes, long V,
                                             bool vectorised)
{
    constexpr int W = kInstnormPerVec;
    for (int plane = (int)blockIdx.y; plane < planes; plane += (int)gridDim.y) {
        const int c = plane % C;
        const float mu = mean[plane], rs = rstd[plane];
        const float g = gamma ? gamma[c] : 1.0f, b = beta ? beta[c] : 0.0f;
        const float *xp = x + (size_t)plane * V;
        const float *ap = addend ? addend + (size_t)plane * V : nullptr;
        float *yp = y + (size_t)plane * V;
        auto value = [=](float t, float add) {
            float r = (t - mu) * rs * g + b;
            if (ap) r = MATH_ADD(r, add);
            return lrelu ? leaky_relu_value(r, slope) : r;
        };
        grid_stride_split<W>(
            (size_t)V, vectorised,
            [=](size_t v) {
                Pack<float, W> t = load_pack<float, W>(xp + v), a = {};
                if (ap) a = load_pack<float, W>(ap + v);
#pragma unroll
                for (int k = 0; k < W; k++) t.v[k] = value(t.v[k], a.v[k]);
                store_pack(yp + v, t);
            },
            [=](size_t v) { yp[v] = value(xp[v], ap ? ap[v] : 0.0f); });
    }
}

static void instnorm_fwd_fused(float *y, float *mean, float *rstd, const float *x,
                               const float *gamma, const float *beta, const float *addend,
                               bool lrelu, float slope, int B, int C, long V, float eps)
{
    const int planes = B * C, chunks = plane_chunks(V);
    if (planes <= 0 || V <= 0) return;
    double *partial = plane_sums_scratch(planes, chunks);
    launch_plane_chunk_sums(partial, planes, chunks, V, PlaneMoments{x, V});
    instnorm_stats_kernel<<<grid_for(planes), kThreads, 0, cuda_stream()>>>(
        mean, rstd, partial, planes, chunks, V, eps);
    CUDA_CHECK_LAUNCH();
    const bool vec = V % kInstnormPerVec == 0 && aligned16(y, x, addend);
    instnorm_apply_kernel<<<plane_grid(planes, V, vec), kThreads, 0, cuda_stream()>>>(
        y, x, mean, rstd, gamma, beta, addend, lrelu, slope, C, planes, V, vec);
    CUDA_CHECK_LAUNCH();
}

void cuda_instnorm_fwd(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                       const float *beta, int B, int C, long V, float eps)
{
    instnorm_fwd_fused(y, mean, rstd, x, gamma, beta, nullptr, false, 0.0f, B, C, V, eps);
}

void cuda_instnorm_lrelu_fwd(float *y, float *mean, float *rstd, const float *x,
                             const float *gamma, const float *beta, const float *addend, int B,
                             int C, long V, float eps, float slope)
{
    instnorm_fwd_fused(y, mean, rstd, x, gamma, beta, addend, true, slope, B, C, V, eps);
}

/* dy, or (fused, gate non-NULL) dy gated by LeakyReLU's slope at gate: leaky_relu_bwd's value,
 * so the gated backward has the bits of leaky_relu_bwd followed by the plain one. */
__device__ __forceinline__ float gated_dy(const float *dy, const float *gate, float slope,
                                          size_t i)
{
    return gate ? leaky_relu_grad(gate[i], dy[i], slope) : dy[i];
}

/* the terms dy and dy * xhat (dy gated where gate is given) */
struct PlaneGradMoments {
    const float *dy, *gate, *x, *mean, *rstd;
    float slope;
    long V;
    __device__ PlaneTerms operator()(int plane, long v) const
    {
        const size_t i = (size_t)plane * V + v;
        const float g = gated_dy(dy, gate, slope, i);
        return PlaneTerms{g, (double)g * ((x[i] - mean[plane]) * rstd[plane])};
    }
};

/* dx = rstd gamma (dy - mean(dy) - xhat mean(dy xhat)) */
static __global__ void instnorm_dx_kernel(float *dx, const float *dy, const float *gate,
                                          float slope, const float *x, const float *mean,
                                          const float *rstd, const float *gamma,
                                          const double *sums, int C, int planes, long V,
                                          bool vectorised)
{
    constexpr int W = kInstnormPerVec;
    for (int plane = (int)blockIdx.y; plane < planes; plane += (int)gridDim.y) {
        const int c = plane % C;
        const float mu = mean[plane], rs = rstd[plane], g = gamma ? gamma[c] : 1.0f;
        const float mean_dy = (float)(sums[plane * 2] / V);
        const float mean_dyx = (float)(sums[plane * 2 + 1] / V);
        const float *xp = x + (size_t)plane * V, *dyp = dy + (size_t)plane * V;
        const float *gp = gate ? gate + (size_t)plane * V : nullptr;
        float *dxp = dx + (size_t)plane * V;
        auto value = [=](float xv, float d) {
            const float xhat = (xv - mu) * rs;
            return rs * g * (d - mean_dy - xhat * mean_dyx);
        };
        grid_stride_split<W>(
            (size_t)V, vectorised,
            [=](size_t v) {
                const Pack<float, W> vx = load_pack<float, W>(xp + v);
                Pack<float, W> vd = load_pack<float, W>(dyp + v);
                if (gp) {
                    const Pack<float, W> vg = load_pack<float, W>(gp + v);
#pragma unroll
                    for (int k = 0; k < W; k++) vd.v[k] = leaky_relu_grad(vg.v[k], vd.v[k], slope);
                }
#pragma unroll
                for (int k = 0; k < W; k++) vd.v[k] = value(vx.v[k], vd.v[k]);
                store_pack(dxp + v, vd);
            },
            [=](size_t v) { dxp[v] = value(xp[v], gated_dy(dyp, gp, slope, v)); });
    }
}

static void instnorm_bwd_gated(float *dx, float *dgamma, float *dbeta, const float *dy,
                               const float *gate, float slope, const float *x, const float *mean,
                               const float *rstd, const float *gamma, int B, int C, long V)
{
    const int planes = B * C, chunks = plane_chunks(V);
    if (planes <= 0 || V <= 0) return;
    double *partial = plane_sums_scratch(planes, chunks);
    launch_plane_chunk_sums(partial, planes, chunks, V,
                            PlaneGradMoments{dy, gate, x, mean, rstd, slope, V});
    const double *sums = plane_totals(partial, B, C, chunks, dbeta, dgamma);
    if (dx) {
        const bool vec = V % kInstnormPerVec == 0 && aligned16(dx, dy, x, gate);
        instnorm_dx_kernel<<<plane_grid(planes, V, vec), kThreads, 0, cuda_stream()>>>(
            dx, dy, gate, slope, x, mean, rstd, gamma, sums, C, planes, V, vec);
        CUDA_CHECK_LAUNCH();
    }
}

void cuda_instnorm_bwd(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                       const float *mean, const float *rstd, const float *gamma, int B, int C,
                       long V)
{
    instnorm_bwd_gated(dx, dgamma, dbeta, dy, nullptr, 0.0f, x, mean, rstd, gamma, B, C, V);
}

void cuda_instnorm_lrelu_bwd(float *dx, float *dgamma, float *dbeta, const float *dy,
                             const float *act, float slope, const float *x, const float *mean,
                             const float *rstd, const float *gamma, int B, int C, long V)
{
    instnorm_bwd_gated(dx, dgamma, dbeta, dy, act, slope, x, mean, rstd, gamma, B, C, V);
}
