/* LayerNorm, softmax and instance norm of the CUDA backend (own kernels).
 * Rows of LayerNorm/softmax are short (the model width, the token count), so one warp owns a
 * row: no shared memory, no block barriers. Instance norm planes are long (up to 96^3 voxels),
 * so their statistics are reduced in two deterministic stages over chunks of each plane. */
#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_ops.h"

constexpr int kRowsPerBlock = kThreads / 32;

static unsigned row_blocks(int rows) { return (unsigned)((rows + kRowsPerBlock - 1) / kRowsPerBlock); }

/* ---- LayerNorm ---- */

/* TOut: float, or __nv_bfloat16 for bf16 activations (statistics stay fp32; y rounded once).
 * The row is read three times. Keeping it in registers instead
 * (32 floats per lane, loops unrolled) was measured slower on an H200: 13.5 against 10.7 us
 * per call at the paper shapes (docs/PERFORMANCE.md, run 3), with 79 instead of 32 registers
 * and so fewer warps per SM to hide the loads. */
template <typename TOut>
static __global__ void layernorm_fwd_kernel(TOut *y, float *mean, float *rstd, const float *x,
                                            const float *gamma, const float *beta, int rows,
                                            int dim, float eps)
{
    const int row = blockIdx.x * kRowsPerBlock + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float *xr = x + (size_t)row * dim;
    float s = 0.0f;
    for (int d = lane; d < dim; d += 32) s += xr[d];
    const float mu = warp_sum(s) / dim;
    float sq = 0.0f;
    for (int d = lane; d < dim; d += 32) { const float t = xr[d] - mu; sq += t * t; }
    const float rs = rsqrtf(warp_sum(sq) / dim + eps);  /* biased variance, as PyTorch */
    TOut *yr = y + (size_t)row * dim;
    for (int d = lane; d < dim; d += 32) {
        const float g = gamma ? gamma[d] : 1.0f, b = beta ? beta[d] : 0.0f;
        yr[d] = narrow_to<TOut>((xr[d] - mu) * rs * g + b);
    }
    if (lane == 0) {
        if (mean) mean[row] = mu;
        if (rstd) rstd[row] = rs;
    }
}

void cuda_layernorm_fwd(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                        const float *beta, int rows, int dim, float eps)
{
    if (rows <= 0) return;
    layernorm_fwd_kernel<float><<<row_blocks(rows), kThreads, 0, cuda_stream()>>>(
        y, mean, rstd, x, gamma, beta, rows, dim, eps);
    CUDA_CHECK_LAUNCH();
}

void cuda_layernorm_fwd_bf16(bf16_t *y, float *mean, float *rstd, const float *x,
                             const float *gamma, const float *beta, int rows, int dim, float eps)
{
    if (rows <= 0) return;
    layernorm_fwd_kernel<__nv_bfloat16><<<row_blocks(rows), kThreads, 0, cuda_stream()>>>(
        as_nv(y), mean, rstd, x, gamma, beta, rows, dim, eps);
    CUDA_CHECK_LAUNCH();
}

/* dx = dx_residual + rstd (g - mean(g) - xhat mean(g xhat)), g = dy * gamma; dx_residual may
 * be NULL (nothing added). Run on the host by tests/cuda_emu/test_layernorm_dx_emulated.sh. */
static __global__ void layernorm_dx_kernel(float *dx, const float *dx_residual, const float *dy,
                                           const float *x, const float *mean, const float *rstd,
                                           const float *gamma, int rows, int dim)
{
    const int row = blockIdx.x * kRowsPerBlock + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float *xr = x + (size_t)row * dim, *dyr = dy + (size_t)row * dim;
    const float mu = mean[row], rs = rstd[row];
    float sg = 0.0f, sgx = 0.0f;
    for (int d = lane; d < dim; d += 32) {
        const float g = dyr[d] * (gamma ? gamma[d] : 1.0f);
        sg += g;
        sgx += g * (xr[d] - mu) * rs;
    }
    const float mean_g = warp_sum(sg) / dim, mean_gx = warp_sum(sgx) / dim;
    float *dxr = dx + (size_t)row * dim;
    const float *resr = dx_residual ? dx_residual + (size_t)row * dim : NULL;
    for (int d = lane; d < dim; d += 32) {
        const float g = dyr[d] * (gamma ? gamma[d] : 1.0f);
        const float v = rs * (g - mean_g - (xr[d] - mu) * rs * mean_gx);
        /* __fadd_rn is never contracted into an FMA with the product above: v is rounded as
         * the unfused kernel stored it, and the sum as the add op forms it, so the fused dx
         * equals layernorm_bwd followed by add bit for bit. */
        dxr[d] = resr ? __fadd_rn(resr[d], v) : v;
    }
}

static void launch_layernorm_dx(float *dx, const float *dx_residual, const float *dy,
                                const float *x, const float *mean, const float *rstd,
                                const float *gamma, int rows, int dim)
{
    layernorm_dx_kernel<<<row_blocks(rows), kThreads, 0, cuda_stream()>>>(
        dx, dx_residual, dy, x, mean, rstd, gamma, rows, dim);
    CUDA_CHECK_LAUNCH();
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

void cuda_layernorm_bwd(float *dx, const float *dx_residual, float *dgamma, float *dbeta,
                        const float *dy, const float *x, const float *mean, const float *rstd,
                        const float *gamma, int rows, int dim)
{
    if (rows <= 0) return;
    if (dx) {
        backend_check_residual("layernorm_bwd", dx, DTYPE_F32, dx_residual, (size_t)rows * dim);
        launch_layernorm_dx(dx, dx_residual, dy, x, mean, rstd, gamma, rows, dim);
    }
    const DyTimesXhat dgamma_term{dy, x, mean, rstd, dim};
    const MatrixElement dbeta_term{dy, dim};
    if (dgamma && dbeta)  /* one launch, one pass over dy */
        colsum2_accumulate(dgamma, dbeta, rows, dim, DyTimesXhatAndDy{dgamma_term, dbeta_term});
    else if (dgamma)
        colsum_accumulate(dgamma, rows, dim, dgamma_term);
    else if (dbeta)
        colsum_accumulate(dbeta, rows, dim, dbeta_term);
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

/* ---- instance norm ----
 * Stage 1: block (chunk, plane) sums two quantities over its chunk in double; stage 2 (one
 * thread per plane) adds the chunks in order. */
constexpr long kPlaneChunk = 16384;

static int plane_chunks(long V)
{
    long c = (V + kPlaneChunk - 1) / kPlaneChunk;
    return (int)(c < 1 ? 1 : c);
}

/* partial[(plane * chunks + chunk) * 2 + {0,1}] = chunk sums of x and x^2 */
static __global__ void instnorm_moments_kernel(double *partial, const float *x, long V)
{
    const int chunk = blockIdx.x, chunks = gridDim.x, plane = blockIdx.y;
    const float *xp = x + (size_t)plane * V;
    const long v0 = (long)chunk * kPlaneChunk, v1 = min(V, v0 + kPlaneChunk);
    double s1 = 0.0, s2 = 0.0;
    for (long v = v0 + threadIdx.x; v < v1; v += blockDim.x) {
        const double t = xp[v];
        s1 += t;
        s2 += t * t;
    }
    s1 = block_sum(s1);
    s2 = block_sum(s2);
    if (threadIdx.x == 0) {
        partial[((size_t)plane * chunks + chunk) * 2] = s1;
        partial[((size_t)plane * chunks + chunk) * 2 + 1] = s2;
    }
}

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

static __global__ void instnorm_apply_kernel(float *y, const float *x, const float *mean,
                                             const float *rstd, const float *gamma,
                                             const float *beta, int C, long V, size_t n)
{
    GRID_STRIDE(i, n) {
        const size_t plane = i / (size_t)V;
        const int c = (int)(plane % C);
        const float g = gamma ? gamma[c] : 1.0f, b = beta ? beta[c] : 0.0f;
        y[i] = (x[i] - mean[plane]) * rstd[plane] * g + b;
    }
}

void cuda_instnorm_fwd(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                       const float *beta, int B, int C, long V, float eps)
{
    const int planes = B * C, chunks = plane_chunks(V);
    if (planes <= 0 || V <= 0) return;
    double *partial = (double *)cuda_scratch(SCRATCH_STATS, (size_t)planes * chunks * 2 *
                                                               sizeof(double));
    instnorm_moments_kernel<<<dim3(chunks, planes), kThreads, 0, cuda_stream()>>>(partial, x, V);
    CUDA_CHECK_LAUNCH();
    instnorm_stats_kernel<<<grid_for(planes), kThreads, 0, cuda_stream()>>>(
        mean, rstd, partial, planes, chunks, V, eps);
    CUDA_CHECK_LAUNCH();
    const size_t n = (size_t)planes * V;
    instnorm_apply_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(y, x, mean, rstd, gamma,
                                                                        beta, C, V, n);
    CUDA_CHECK_LAUNCH();
}

/* partial[(plane * chunks + chunk) * 2 + {0,1}] = chunk sums of dy and dy * xhat */
static __global__ void instnorm_grad_moments_kernel(double *partial, const float *dy,
                                                    const float *x, const float *mean,
                                                    const float *rstd, long V)
{
    const int chunk = blockIdx.x, chunks = gridDim.x, plane = blockIdx.y;
    const float *xp = x + (size_t)plane * V, *dyp = dy + (size_t)plane * V;
    const float mu = mean[plane], rs = rstd[plane];
    const long v0 = (long)chunk * kPlaneChunk, v1 = min(V, v0 + kPlaneChunk);
    double s1 = 0.0, s2 = 0.0;
    for (long v = v0 + threadIdx.x; v < v1; v += blockDim.x) {
        const float g = dyp[v];
        s1 += g;
        s2 += (double)g * ((xp[v] - mu) * rs);
    }
    s1 = block_sum(s1);
    s2 = block_sum(s2);
    if (threadIdx.x == 0) {
        partial[((size_t)plane * chunks + chunk) * 2] = s1;
        partial[((size_t)plane * chunks + chunk) * 2 + 1] = s2;
    }
}

/* sums[plane * 2 + {0,1}] = plane totals of dy and dy * xhat */
static __global__ void instnorm_grad_totals_kernel(double *sums, const double *partial,
                                                   int planes, int chunks)
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

/* dgamma[c] += sum_b S(dy xhat), dbeta[c] += sum_b S(dy) */
static __global__ void instnorm_param_grad_kernel(float *dgamma, float *dbeta, const double *sums,
                                                  int B, int C)
{
    GRID_STRIDE(c, C) {
        double sb = 0.0, sg = 0.0;
        for (int b = 0; b < B; b++) {
            sb += sums[((size_t)b * C + c) * 2];
            sg += sums[((size_t)b * C + c) * 2 + 1];
        }
        if (dgamma) dgamma[c] += (float)sg;
        if (dbeta) dbeta[c] += (float)sb;
    }
}

/* dx = rstd gamma (dy - mean(dy) - xhat mean(dy xhat)) */
static __global__ void instnorm_dx_kernel(float *dx, const float *dy, const float *x,
                                          const float *mean, const float *rstd,
                                          const float *gamma, const double *sums, int C, long V,
                                          size_t n)
{
    GRID_STRIDE(i, n) {
        const size_t plane = i / (size_t)V;
        const int c = (int)(plane % C);
        const float rs = rstd[plane], g = gamma ? gamma[c] : 1.0f;
        const float mean_dy = (float)(sums[plane * 2] / V);
        const float mean_dyx = (float)(sums[plane * 2 + 1] / V);
        const float xhat = (x[i] - mean[plane]) * rs;
        dx[i] = rs * g * (dy[i] - mean_dy - xhat * mean_dyx);
    }
}

void cuda_instnorm_bwd(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                       const float *mean, const float *rstd, const float *gamma, int B, int C,
                       long V)
{
    const int planes = B * C, chunks = plane_chunks(V);
    if (planes <= 0 || V <= 0) return;
    double *partial = (double *)cuda_scratch(
        SCRATCH_STATS, ((size_t)planes * chunks * 2 + (size_t)planes * 2) * sizeof(double));
    double *sums = partial + (size_t)planes * chunks * 2;
    instnorm_grad_moments_kernel<<<dim3(chunks, planes), kThreads, 0, cuda_stream()>>>(
        partial, dy, x, mean, rstd, V);
    CUDA_CHECK_LAUNCH();
    instnorm_grad_totals_kernel<<<grid_for(planes), kThreads, 0, cuda_stream()>>>(
        sums, partial, planes, chunks);
    CUDA_CHECK_LAUNCH();
    if (dgamma || dbeta) {
        instnorm_param_grad_kernel<<<grid_for(C), kThreads, 0, cuda_stream()>>>(dgamma, dbeta,
                                                                                sums, B, C);
        CUDA_CHECK_LAUNCH();
    }
    if (dx) {
        const size_t n = (size_t)planes * V;
        instnorm_dx_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(
            dx, dy, x, mean, rstd, gamma, sums, C, V, n);
        CUDA_CHECK_LAUNCH();
    }
}
