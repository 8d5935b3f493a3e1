/* Vector normalisation and the losses of the CUDA backend: l2norm, cosine loss or DINO soft
 * cross-entropy (l_dv, l_st), per-patch target normalisation and masked MSE (l_r), and DiceCE (fine-tuning). Row-wise
 * quantities use one warp per row (normalize_rows and masked_mse_bwd: one block per row, the
 * paper's rows being 4096 voxels long); the loss values (written to device memory) go through the
 * deterministic device_sum (double), matching the CPU backend's double accumulation. */
#include <math.h>

#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_normalize_rows.h"
#include "cuda/cuda_ops.h"
#include "ops/cpu_math.h" /* norm_pix_var_divisor: the CPU backend's variance */

constexpr int kRowsPerBlock = kThreads / 32;
/* PyTorch's cosine_similarity clamps the product of the norms at eps^2 (eps = 1e-8). */
constexpr double kCosineEps = 1e-8;
constexpr double kDiceSmooth = 1e-5;

static unsigned row_blocks(int rows) { return (unsigned)((rows + kRowsPerBlock - 1) / kRowsPerBlock); }

#define WARP_ROW(rows) \
    const int row = blockIdx.x * kRowsPerBlock + (threadIdx.x >> 5), lane = threadIdx.x & 31; \
    if (row >= (rows)) return

/* ---- l2 normalisation ---- */

static __global__ void l2norm_fwd_kernel(float *y, float *norms, const float *x, int rows, int dim,
                                         float eps)
{
    WARP_ROW(rows);
    const float *xr = x + (size_t)row * dim;
    double sq = 0.0;
    for (int d = lane; d < dim; d += 32) sq += (double)xr[d] * xr[d];
    const float norm = (float)sqrt(warp_sum(sq));
    if (lane == 0) norms[row] = norm;
    const float inv = 1.0f / (norm > eps ? norm : eps);
    float *yr = y + (size_t)row * dim;
    for (int d = lane; d < dim; d += 32) yr[d] = xr[d] * inv;
}

void cuda_l2norm_fwd(float *y, float *norms, const float *x, int rows, int dim, float eps)
{
    if (rows <= 0) return;
    l2norm_fwd_kernel<<<row_blocks(rows), kThreads, 0, cuda_stream()>>>(y, norms, x, rows, dim, eps);
    CUDA_CHECK_LAUNCH();
}

/* dx = (dy - x <x, dy> / n^2) / n, or dy / eps where the norm was clamped */
static __global__ void l2norm_bwd_kernel(float *dx, const float *dy, const float *x,
                                         const float *norms, int rows, int dim, float eps)
{
    WARP_ROW(rows);
    const float *xr = x + (size_t)row * dim, *dyr = dy + (size_t)row * dim;
    float *dxr = dx + (size_t)row * dim;
    const float norm = norms[row];
    if (!(norm > eps)) {
        for (int d = lane; d < dim; d += 32) dxr[d] = dyr[d] / eps;
        return;
    }
    double dot = 0.0;
    for (int d = lane; d < dim; d += 32) dot += (double)xr[d] * dyr[d];
    dot = warp_sum(dot);
    const float inv = 1.0f / norm, c = (float)(dot / ((double)norm * norm));
    for (int d = lane; d < dim; d += 32) dxr[d] = (dyr[d] - xr[d] * c) * inv;
}

void cuda_l2norm_bwd(float *dx, const float *dy, const float *x, const float *norms, int rows,
                     int dim, float eps)
{
    if (rows <= 0 || !dx) return;
    l2norm_bwd_kernel<<<row_blocks(rows), kThreads, 0, cuda_stream()>>>(dx, dy, x, norms, rows, dim,
                                                                         eps);
    CUDA_CHECK_LAUNCH();
}

/* ---- cosine loss ---- */

struct RowProducts { double dot, aa, bb; };

__device__ RowProducts warp_row_products(const float *a, const float *b, int dim, int lane)
{
    RowProducts p = {0.0, 0.0, 0.0};
    for (int d = lane; d < dim; d += 32) {
        p.dot += (double)a[d] * b[d];
        p.aa += (double)a[d] * a[d];
        p.bb += (double)b[d] * b[d];
    }
    p.dot = warp_sum(p.dot);
    p.aa = warp_sum(p.aa);
    p.bb = warp_sum(p.bb);
    return p;
}

__device__ double clamped_norm_product(RowProducts p)
{
    const double prod = p.aa * p.bb;
    return prod > kCosineEps * kCosineEps ? sqrt(prod) : kCosineEps;
}

static __global__ void cosine_rows_kernel(double *row_loss, const float *a, const float *b,
                                          int rows, int dim)
{
    WARP_ROW(rows);
    const RowProducts p = warp_row_products(a + (size_t)row * dim, b + (size_t)row * dim, dim, lane);
    if (lane == 0) row_loss[row] = 1.0 - p.dot / clamped_norm_product(p);
}

struct DoubleElement {
    const double *x;
    __device__ double operator()(size_t i) const { return x[i]; }
};

/* No rows: the loss is 0 (as on the CPU), written where the step reads it. */
static bool zero_loss_without_rows(float *loss, int rows)
{
    if (rows > 0) return false;
    cuda_fill(loss, 0.0f, 1);
    return true;
}

/* loss[0] = the mean of the per-row losses, in the fixed-order double sum (as the CPU). */
static void mean_of_row_losses(float *loss, const double *row_loss, int rows)
{
    cuda_reduce_finish_ratio(loss, device_sum_partials((size_t)rows, DoubleElement{row_loss}),
                             kReduceBlocks, NULL, (double)rows);
}

void cuda_cosine_loss_fwd(float *loss, const float *a, const float *b, int rows, int dim)
{
    if (zero_loss_without_rows(loss, rows)) return;
    double *row_loss = (double *)cuda_scratch(SCRATCH_STATS, (size_t)rows * sizeof(double));
    cosine_rows_kernel<<<row_blocks(rows), kThreads, 0, cuda_stream()>>>(row_loss, a, b, rows, dim);
    CUDA_CHECK_LAUNCH();
    mean_of_row_losses(loss, row_loss, rows);
}

/* d(1 - cos)/da = -(b / denom - cos a / |a|^2), the last term absent when clamped */
static __global__ void cosine_bwd_kernel(float *da, float *db, const float *a, const float *b,
                                         int rows, int dim, float scale)
{
    WARP_ROW(rows);
    const float *ar = a + (size_t)row * dim, *br = b + (size_t)row * dim;
    const RowProducts p = warp_row_products(ar, br, dim, lane);
    const double denom = clamped_norm_product(p);
    const bool clamped = !(p.aa * p.bb > kCosineEps * kCosineEps);
    const double cosv = p.dot / denom;
    const float g = (float)(-(double)scale / rows);
    const float inv_den = (float)(1.0 / denom);
    const float ca = clamped ? 0.0f : (float)(cosv / p.aa);
    const float cb = clamped ? 0.0f : (float)(cosv / p.bb);
    for (int d = lane; d < dim; d += 32) {
        if (da) da[(size_t)row * dim + d] = g * (br[d] * inv_den - ar[d] * ca);
        if (db) db[(size_t)row * dim + d] = g * (ar[d] * inv_den - br[d] * cb);
    }
}

void cuda_cosine_loss_bwd(float *da, float *db, const float *a, const float *b, int rows, int dim,
                          float scale)
{
    if (rows <= 0 || (!da && !db)) return;
    cosine_bwd_kernel<<<row_blocks(rows), kThreads, 0, cuda_stream()>>>(da, db, a, b, rows, dim,
                                                                         scale);
    CUDA_CHECK_LAUNCH();
}

/* ---- DINO soft cross-entropy (align_loss = dino) ---- */

static __device__ double warp_max_double(double v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* log sum_k exp((x_k - shift_k) inv_temp) over one row, max-shifted; shift may be NULL. */
static __device__ double warp_row_logsumexp(const float *x, const float *shift, int dim,
                                            double inv_temp, int lane)
{
    double mx = -INFINITY;
    for (int d = lane; d < dim; d += 32)
        mx = fmax(mx, ((double)x[d] - (shift ? shift[d] : 0.0)) * inv_temp);
    mx = warp_max_double(mx);
    double sum = 0.0;
    for (int d = lane; d < dim; d += 32)
        sum += exp(((double)x[d] - (shift ? shift[d] : 0.0)) * inv_temp - mx);
    return mx + log(warp_sum(sum));
}

/* row_loss[r] = lse_s - sum_k p_k s_k inv_ts (sum_k p_k = 1) */
static __global__ void soft_ce_rows_kernel(double *row_loss, const float *s, const float *t,
                                           const float *center, int rows, int dim, double inv_ts,
                                           double inv_tt)
{
    WARP_ROW(rows);
    const float *sr = s + (size_t)row * dim, *tr = t + (size_t)row * dim;
    const double lse_t = warp_row_logsumexp(tr, center, dim, inv_tt, lane);
    const double lse_s = warp_row_logsumexp(sr, NULL, dim, inv_ts, lane);
    double dot = 0.0;
    for (int d = lane; d < dim; d += 32)
        dot += exp(((double)tr[d] - center[d]) * inv_tt - lse_t) * ((double)sr[d] * inv_ts);
    dot = warp_sum(dot);
    if (lane == 0) row_loss[row] = lse_s - dot;
}

void cuda_soft_ce_fwd(float *loss, const float *s, const float *t, const float *center, int rows,
                      int dim, float inv_ts, float inv_tt)
{
    if (zero_loss_without_rows(loss, rows)) return;
    double *row_loss = (double *)cuda_scratch(SCRATCH_STATS, (size_t)rows * sizeof(double));
    soft_ce_rows_kernel<<<row_blocks(rows), kThreads, 0, cuda_stream()>>>(row_loss, s, t, center,
                                                                           rows, dim, inv_ts, inv_tt);
    CUDA_CHECK_LAUNCH();
    mean_of_row_losses(loss, row_loss, rows);
}

/* ds = g (softmax(s inv_ts) - softmax((t - center) inv_tt)), g = scale inv_ts / rows */
static __global__ void soft_ce_bwd_kernel(float *ds, const float *s, const float *t,
                                          const float *center, int rows, int dim, double inv_ts,
                                          double inv_tt, double g)
{
    WARP_ROW(rows);
    const float *sr = s + (size_t)row * dim, *tr = t + (size_t)row * dim;
    const double lse_t = warp_row_logsumexp(tr, center, dim, inv_tt, lane);
    const double lse_s = warp_row_logsumexp(sr, NULL, dim, inv_ts, lane);
    for (int d = lane; d < dim; d += 32) {
        const double q = exp((double)sr[d] * inv_ts - lse_s);
        const double p = exp(((double)tr[d] - center[d]) * inv_tt - lse_t);
        ds[(size_t)row * dim + d] = (float)(g * (q - p));
    }
}

void cuda_soft_ce_bwd(float *ds, const float *s, const float *t, const float *center, int rows,
                      int dim, float inv_ts, float inv_tt, float scale)
{
    if (rows <= 0 || !ds) return;
    soft_ce_bwd_kernel<<<row_blocks(rows), kThreads, 0, cuda_stream()>>>(
        ds, s, t, center, rows, dim, inv_ts, inv_tt, (double)scale * inv_ts / rows);
    CUDA_CHECK_LAUNCH();
}

/* ---- reconstruction targets and masked MSE ---- */

/* normalize_rows (MAE's norm_pix target: 9216 rows of 4096 voxels per paper step) reads its
 * input once: one block per row holds the row in registers, kNormHeldPerThread values per
 * thread, and takes the mean and the variance from those held values (the three-pass kernel
 * read every row three times). Rows longer than kNormHeldPerThread * kNormMaxThreads values
 * take the streamed kernel below, which re-reads the row from global memory per pass.
 * Both accumulate in double, as the CPU backend does (cpu_normalize_rows): each thread sums
 * its values in a fixed order, then block_sum's fixed tree, so a run is bitwise repeatable. */
constexpr int kNormHeldPerThread = 16;
constexpr int kNormMaxThreads = 1024;

/* The held path's block: enough whole warps to hold dim values, at least one warp. */
static int normalize_rows_held_threads(int dim)
{
    const int per_thread_warps = (dim + 32 * kNormHeldPerThread - 1) / (32 * kNormHeldPerThread);
    return 32 * (per_thread_warps < 1 ? 1 : per_thread_warps);
}

/* The index in the row of held value k of this thread. 16-byte packs (kVec: dim % 4 == 0, the
 * rows 16-byte aligned): pack p = threadIdx.x + (k / W) blockDim.x holds values p W .. p W + W - 1,
 * so a warp loads 512 contiguous bytes at once; scalar: threadIdx.x + k blockDim.x (128 bytes). */
template <bool kVec> __device__ __forceinline__ int held_index(int k)
{
    constexpr int W = kVecBytes / (int)sizeof(float);
    return kVec ? ((int)threadIdx.x + (k / W) * (int)blockDim.x) * W + k % W
                : (int)threadIdx.x + k * (int)blockDim.x;
}

/* One block per row (grid = rows). The variance is the double sum of the squares of
 * v - (float)mean, the very differences the output scales: it differs from the CPU's
 * sum (v - mean)^2 by dim (mean - (float)mean)^2 (relative to it (2^-24 mean / std)^2, 4e-9
 * for a mean 1000 standard deviations from 0) and by one float rounding per difference
 * (relative 6e-8, the output's own rounding). The differences taken in double instead held 16
 * converted doubles across the first block_sum: 74 registers against 48 (ptxas -v, sm_90),
 * fewer rows in flight. */
template <bool kVec>
static __global__ void __launch_bounds__(kNormMaxThreads)
normalize_rows_held_kernel(float *out, const float *x, int dim, float eps)
{
    constexpr int W = kVecBytes / (int)sizeof(float);
    const float *xr = x + (size_t)blockIdx.x * dim;
    float *orow = out + (size_t)blockIdx.x * dim;
    float v[kNormHeldPerThread];
    if (kVec) {
#pragma unroll
        for (int k = 0; k < kNormHeldPerThread; k += W) {
            const int i = held_index<kVec>(k);
            Pack<float, W> p = {};
            if (i < dim) p = load_pack<float, W>(xr + i);
#pragma unroll
            for (int j = 0; j < W; j++) v[k + j] = p.v[j];
        }
    } else {
#pragma unroll
        for (int k = 0; k < kNormHeldPerThread; k++) {
            const int i = held_index<kVec>(k);
            v[k] = i < dim ? xr[i] : 0.0f;
        }
    }
    /* slots past the row hold 0: they add nothing to the sum */
    double s = 0.0;
#pragma unroll
    for (int k = 0; k < kNormHeldPerThread; k++) s += v[k];
    const float mu = (float)(block_sum(s) / dim);
    double sq = 0.0;
#pragma unroll
    for (int k = 0; k < kNormHeldPerThread; k++)
        if (held_index<kVec>(k) < dim) {
            const double d = v[k] - mu;
            sq += d * d;
        }
    const float inv_std = (float)(1.0 / sqrt(block_sum(sq) / norm_pix_var_divisor(dim) + eps));
    if (kVec) {
#pragma unroll
        for (int k = 0; k < kNormHeldPerThread; k += W) {
            const int i = held_index<kVec>(k);
            if (i >= dim) continue;
            Pack<float, W> p;
#pragma unroll
            for (int j = 0; j < W; j++) p.v[j] = (v[k + j] - mu) * inv_std;
            store_pack(orow + i, p);
        }
    } else {
#pragma unroll
        for (int k = 0; k < kNormHeldPerThread; k++) {
            const int i = held_index<kVec>(k);
            if (i < dim) orow[i] = (v[k] - mu) * inv_std;
        }
    }
}

/* Rows too long to hold: one block per row, three passes over the row in global memory. */
static __global__ void normalize_rows_streamed_kernel(float *out, const float *x, int rows,
                                                      int dim, float eps)
{
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const float *xr = x + (size_t)row * dim;
        float *orow = out + (size_t)row * dim;
        double s = 0.0;
        for (int d = threadIdx.x; d < dim; d += blockDim.x) s += xr[d];
        const double mean = block_sum(s) / dim;
        double sq = 0.0;
        for (int d = threadIdx.x; d < dim; d += blockDim.x) sq += (xr[d] - mean) * (xr[d] - mean);
        const float inv_std = (float)(1.0 / sqrt(block_sum(sq) / norm_pix_var_divisor(dim) + eps));
        const float mu = (float)mean;
        for (int d = threadIdx.x; d < dim; d += blockDim.x) orow[d] = (xr[d] - mu) * inv_std;
    }
}

void cuda_normalize_rows_streamed(float *out, const float *x, int rows, int dim, float eps)
{
    if (rows <= 0 || dim <= 0) return;
    normalize_rows_streamed_kernel<<<grid_for_rows((size_t)rows), kThreads, 0, cuda_stream()>>>(
        out, x, rows, dim, eps);
    CUDA_CHECK_LAUNCH();
}

void cuda_normalize_rows(float *out, const float *x, int rows, int dim, float eps)
{
    if (rows <= 0 || dim <= 0) return;
    if (dim > kNormHeldPerThread * kNormMaxThreads) {
        cuda_normalize_rows_streamed(out, x, rows, dim, eps);
        return;
    }
    constexpr int W = kVecBytes / (int)sizeof(float);
    const int threads = normalize_rows_held_threads(dim);
    /* one block per row: rows <= INT_MAX fits the grid's x limit (2^31 - 1) */
    if (dim % W == 0 && aligned16(out, x))
        normalize_rows_held_kernel<true><<<(unsigned)rows, threads, 0, cuda_stream()>>>(out, x,
                                                                                      dim, eps);
    else
        normalize_rows_held_kernel<false><<<(unsigned)rows, threads, 0, cuda_stream()>>>(out, x,
                                                                                       dim, eps);
    CUDA_CHECK_LAUNCH();
}

/* row_loss[r] = mask[r] * mean_d (pred - target)^2 */
static __global__ void masked_mse_rows_kernel(double *row_loss, const float *pred,
                                              const float *target, const float *mask, int rows,
                                              int dim)
{
    WARP_ROW(rows);
    if (mask[row] == 0.0f) {
        if (lane == 0) row_loss[row] = 0.0;
        return;
    }
    const float *pr = pred + (size_t)row * dim, *tr = target + (size_t)row * dim;
    double sq = 0.0;
    for (int d = lane; d < dim; d += 32) {
        const float t = pr[d] - tr[d];
        sq += (double)t * t;
    }
    sq = warp_sum(sq);
    if (lane == 0) row_loss[row] = mask[row] * sq / dim;
}

struct FloatElement {
    const float *x;
    __device__ double operator()(size_t i) const { return x[i]; }
};

void cuda_masked_mse_fwd(float *loss, const float *pred, const float *target, const float *mask,
                         int rows, int dim)
{
    if (zero_loss_without_rows(loss, rows)) return;
    /* sum(mask) stays in the reduce buffer's total slot (partials[kReduceBlocks]): the second
     * sum below overwrites only the partials before it. Nothing masked gives 0 (no term). */
    double *partials = device_sum_partials((size_t)rows, FloatElement{mask});
    cuda_reduce_finish_on_device(partials, kReduceBlocks);
    const double *msum = partials + kReduceBlocks;
    double *row_loss = (double *)cuda_scratch(SCRATCH_STATS, (size_t)rows * sizeof(double));
    masked_mse_rows_kernel<<<row_blocks(rows), kThreads, 0, cuda_stream()>>>(row_loss, pred,
                                                                              target, mask, rows,
                                                                              dim);
    CUDA_CHECK_LAUNCH();
    cuda_reduce_finish_ratio(loss, device_sum_partials((size_t)rows, DoubleElement{row_loss}),
                             kReduceBlocks, msum, 0.0);
}

/* coef[0] = 2 scale / (dim * sum(mask)), or 0 when nothing is masked (one block, no host trip). */
static __global__ void mse_coef_kernel(float *coef, const float *mask, int rows, int dim,
                                       float scale)
{
    double s = 0.0;
    for (int r = threadIdx.x; r < rows; r += blockDim.x) s += mask[r];
    s = block_sum(s);
    if (threadIdx.x == 0) coef[0] = s == 0.0 ? 0.0f : (float)(2.0 * scale / (dim * s));
}

/* One block per row (grid-stride over rows): coef * mask[row] is formed once per row (the
 * same product, in the same order, as coef[0] * mask[i / dim] * diff per element was), then
 * the row's dim elements stream through (float4 when dim % 4 == 0 and aligned).
 * A row with mask 0 (a visible patch, a quarter of the paper's rows) gets dpred = 0 without
 * its pred and target being read: the loss does not depend on that row (the forward skips it,
 * as PyTorch's loss over the masked rows selected by index does), so its gradient is exactly 0
 * whatever pred holds, NaN or inf included; cpu_masked_mse_bwd writes the same zeros. */
static __global__ void masked_mse_bwd_kernel(float *dpred, const float *pred, const float *target,
                                             const float *mask, const float *coef, int dim,
                                             size_t rows, bool vectorised)
{
    constexpr int W = kVecBytes / (int)sizeof(float);
    for (size_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const size_t base = r * dim;
        float *dp = dpred + base;
        if (mask[r] == 0.0f) {
            const Pack<float, W> zeros = {};
            block_stride_split<W>(
                dim, vectorised, [&](int c) { store_pack(dp + c, zeros); },
                [&](int c) { dp[c] = 0.0f; });
            continue;
        }
        const float row_coef = coef[0] * mask[r];
        const float *pr = pred + base, *tg = target + base;
        block_stride_split<W>(
            dim, vectorised,
            [&](int c) {
                const Pack<float, W> vp = load_pack<float, W>(pr + c),
                                     vt = load_pack<float, W>(tg + c);
                Pack<float, W> vd;
#pragma unroll
                for (int k = 0; k < W; k++) vd.v[k] = row_coef * (vp.v[k] - vt.v[k]);
                store_pack(dp + c, vd);
            },
            [&](int c) { dp[c] = row_coef * (pr[c] - tg[c]); });
    }
}

void cuda_masked_mse_bwd(float *dpred, const float *pred, const float *target, const float *mask,
                         int rows, int dim, float scale)
{
    if (rows <= 0 || dim <= 0 || !dpred) return;
    float *coef = (float *)cuda_scratch(SCRATCH_STATS, sizeof(float));
    mse_coef_kernel<<<1, kThreads, 0, cuda_stream()>>>(coef, mask, rows, dim, scale);
    CUDA_CHECK_LAUNCH();
    constexpr int W = kVecBytes / (int)sizeof(float);
    const bool vec = dim % W == 0 && aligned16(dpred, pred, target);
    masked_mse_bwd_kernel<<<grid_for_rows((size_t)rows), threads_for_row(dim, vec, W), 0,
                            cuda_stream()>>>(dpred, pred, target, mask, coef, dim, (size_t)rows,
                                             vec);
    CUDA_CHECK_LAUNCH();
}

/* ---- DiceCE ---- */

/* Per voxel (b, v): softmax over K classes (stride V) into probs; ce[b*V + v] = -log p_label
 * (from the logits, without forming log p), or NaN for a label outside 0..K-1. */
static __global__ void dicece_softmax_kernel(float *probs, float *ce, const float *logits,
                                             const int *labels, int K, long V, size_t n)
{
    GRID_STRIDE(i, n) {
        const size_t b = i / V, v = i % V;
        const float *lg = logits + b * K * V + v;
        float *pr = probs + b * K * V + v;
        float mx = -INFINITY;
        for (int k = 0; k < K; k++) mx = fmaxf(mx, lg[(size_t)k * V]);
        float sum = 0.0f;
        for (int k = 0; k < K; k++) {
            const float e = expf(lg[(size_t)k * V] - mx);
            pr[(size_t)k * V] = e;
            sum += e;
        }
        const int y = labels[i];
        ce[i] = (y < 0 || y >= K) ? NAN : logf(sum) - (lg[(size_t)y * V] - mx);
        const float inv = 1.0f / sum;
        for (int k = 0; k < K; k++) pr[(size_t)k * V] *= inv;
    }
}

struct BadLabel {
    const int *labels;
    int K;
    __device__ double operator()(size_t i) const { return (labels[i] < 0 || labels[i] >= K) ? 1.0 : 0.0; }
};

/* The CE term of a voxel whose label is in 0..K-1, 0 for the others (counted by BadLabel):
 * chosen by the label, not by the term's value, so a NaN from NaN or infinite logits reaches
 * the mean as on the CPU backend (cpu_dicece_fwd) and shows the divergence in the logged ce. */
struct CeOfValidLabel {
    const float *ce;
    const int *labels;
    int K;
    __device__ double operator()(size_t i) const
    {
        return (labels[i] < 0 || labels[i] >= K) ? 0.0 : (double)ce[i];
    }
};

constexpr long kDiceChunk = 16384;

/* partial[(seg * chunks + chunk) * 3 + {0,1,2}] = chunk sums of p*y, p, y for seg = b*K + k */
/* x: the chunk of kDiceChunk voxels; y: the segment (b, k), striding past the grid's y limit
 * (B*K above 65535: a fine-tuning batch above 256 with 256 classes). */
static __global__ void dice_moments_kernel(double *partial, const float *probs, const int *labels,
                                           int segs, int K, long V)
{
    const int chunk = blockIdx.x, chunks = gridDim.x;
    for (int seg = blockIdx.y; seg < segs; seg += gridDim.y) {
        const int b = seg / K, k = seg % K;
        const float *p = probs + (size_t)seg * V;
        const int *lab = labels + (size_t)b * V;
        const long v0 = (long)chunk * kDiceChunk, v1 = min(V, v0 + kDiceChunk);
        double si = 0.0, sp = 0.0, sy = 0.0;
        for (long v = v0 + threadIdx.x; v < v1; v += blockDim.x) {
            const bool hit = lab[v] == k;
            sp += p[v];
            si += hit ? p[v] : 0.0f;
            sy += hit ? 1.0 : 0.0;
        }
        /* block_sum synchronises: every thread of the block runs the same seg iterations */
        si = block_sum(si);
        sp = block_sum(sp);
        sy = block_sum(sy);
        if (threadIdx.x == 0) {
            double *out = partial + ((size_t)seg * chunks + chunk) * 3;
            out[0] = si;
            out[1] = sp;
            out[2] = sy;
        }
    }
}

static __global__ void dice_totals_kernel(double *stats, const double *partial, int segs,
                                          int chunks)
{
    GRID_STRIDE(s, segs) {
        double t[3] = {0.0, 0.0, 0.0};
        for (int c = 0; c < chunks; c++)
            for (int q = 0; q < 3; q++) t[q] += partial[((size_t)s * chunks + c) * 3 + q];
        for (int q = 0; q < 3; q++) stats[s * 3 + q] = t[q];
    }
}

/* stats [B*K*3] (intersection, prediction sum, label count) in device memory. */
static double *dice_statistics(const float *probs, const int *labels, int B, int K, long V)
{
    const int segs = B * K;
    long chunks = (V + kDiceChunk - 1) / kDiceChunk;
    if (chunks < 1) chunks = 1;
    double *partial = (double *)cuda_scratch(
        SCRATCH_STATS, ((size_t)segs * chunks * 3 + (size_t)segs * 3) * sizeof(double));
    double *stats = partial + (size_t)segs * chunks * 3;
    const unsigned seg_blocks = (unsigned)segs < kMaxPlaneBlocksY ? (unsigned)segs
                                                                  : kMaxPlaneBlocksY;
    dice_moments_kernel<<<dim3((unsigned)chunks, seg_blocks), kThreads, 0, cuda_stream()>>>(
        partial, probs, labels, segs, K, V);
    CUDA_CHECK_LAUNCH();
    dice_totals_kernel<<<grid_for(segs), kThreads, 0, cuda_stream()>>>(stats, partial, segs,
                                                                       (int)chunks);
    CUDA_CHECK_LAUNCH();
    return stats;
}

/* values[0] = 1 - mean over the segs of (2 I + s) / (P + Y + s), in one thread: the loop the
 * host ran on the downloaded statistics before the op stopped reading them back (the same
 * double operations in the same order, the same bits; 2.0 * I is exact, so a contraction into
 * an FMA rounds the same). */
static __global__ void dice_loss_kernel(float *values, const double *stats, int segs)
{
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double dice_mean = 0.0;
    for (int i = 0; i < segs; i++)
        dice_mean += (2.0 * stats[i * 3] + kDiceSmooth) /
                     (stats[i * 3 + 1] + stats[i * 3 + 2] + kDiceSmooth);
    values[0] = (float)(1.0 - dice_mean / segs);
}

void cuda_dicece_fwd(float *probs, float *values, const float *logits, const int *labels, int B,
                     int K, long V)
{
    const size_t n = (size_t)B * V;
    if (n == 0 || K <= 0) return;
    /* per-voxel CE terms in the colsum scratch (not used by the dice statistics below) */
    float *ce_voxel = (float *)cuda_scratch(SCRATCH_COLSUM, n * sizeof(float));
    dicece_softmax_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(probs, ce_voxel, logits,
                                                                        labels, K, V, n);
    CUDA_CHECK_LAUNCH();
    /* Every value is finished on the device (backend.h: nothing waits mid-step). The two sums
     * share the reduce buffer: each finish kernel reads its partials, in stream order, before
     * the next partials kernel writes them. Labels outside 0..K-1 are counted (the reader of
     * the values stops the run) and their CE terms left out. */
    cuda_reduce_finish_ratio(values + SEG_LOSS_BAD_LABELS,
                             device_sum_partials(n, BadLabel{labels, K}), kReduceBlocks, NULL, 1.0);
    cuda_reduce_finish_ratio(values + SEG_LOSS_CE,
                             device_sum_partials(n, CeOfValidLabel{ce_voxel, labels, K}),
                             kReduceBlocks, NULL, (double)B * V);
    const int segs = B * K;
    const double *stats = dice_statistics(probs, labels, B, K, V);
    dice_loss_kernel<<<1, 32, 0, cuda_stream()>>>(values + SEG_LOSS_DICE, stats, segs);
    CUDA_CHECK_LAUNCH();
}

/* coefs[seg * 2 + {0,1}]: d dice / d p = a y + c, a = -(2/den)/(BK), c = (num/den^2)/(BK),
 * both scaled by w_dice. */
static __global__ void dice_coef_kernel(float *coefs, const double *stats, int segs, float w_dice)
{
    GRID_STRIDE(s, segs) {
        const double num = 2.0 * stats[s * 3] + kDiceSmooth;
        const double den = stats[s * 3 + 1] + stats[s * 3 + 2] + kDiceSmooth;
        coefs[s * 2] = (float)(-(double)w_dice * 2.0 / den / segs);
        coefs[s * 2 + 1] = (float)((double)w_dice * num / (den * den) / segs);
    }
}

/* dz_k = ce_scale (p_k - y_k) + p_k (g_k - sum_j p_j g_j), g_k = a_k [y == k] + c_k */
static __global__ void dicece_bwd_kernel(float *dlogits, const float *probs, const int *labels,
                                         const float *coefs, int K, long V, float ce_scale,
                                         size_t n)
{
    GRID_STRIDE(i, n) {
        const size_t b = i / V, v = i % V;
        const float *pr = probs + b * K * V + v;
        float *dl = dlogits + b * K * V + v;
        const float *cb = coefs + b * K * 2;
        const int y = labels[i];
        const bool valid = y >= 0 && y < K;
        float dot = valid ? cb[y * 2] * pr[(size_t)y * V] : 0.0f;
        for (int k = 0; k < K; k++) dot += cb[k * 2 + 1] * pr[(size_t)k * V];
        for (int k = 0; k < K; k++) {
            const float p = pr[(size_t)k * V];
            const bool hit = k == y;
            const float g = (hit ? cb[k * 2] : 0.0f) + cb[k * 2 + 1];
            dl[(size_t)k * V] = ce_scale * (p - (hit ? 1.0f : 0.0f)) + p * (g - dot);
        }
    }
}

void cuda_dicece_bwd(float *dlogits, const float *probs, const int *labels, int B, int K, long V,
                     float w_ce, float w_dice)
{
    const size_t n = (size_t)B * V;
    if (n == 0 || K <= 0 || !dlogits) return;
    const int segs = B * K;
    double *stats = dice_statistics(probs, labels, B, K, V);
    float *coefs = (float *)cuda_scratch(SCRATCH_COLSUM, (size_t)segs * 2 * sizeof(float));
    dice_coef_kernel<<<grid_for(segs), kThreads, 0, cuda_stream()>>>(coefs, stats, segs, w_dice);
    CUDA_CHECK_LAUNCH();
    const float ce_scale = (float)(w_ce / ((double)B * V));
    dicece_bwd_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(dlogits, probs, labels, coefs,
                                                                    K, V, ce_scale, n);
    CUDA_CHECK_LAUNCH();
}
