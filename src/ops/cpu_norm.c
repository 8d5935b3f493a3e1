/* CPU backend: LayerNorm (over the last dim of token rows) and InstanceNorm (over each
 * (b, c) volume). Statistics are accumulated in double; the variance is the biased one, as in
 * PyTorch. Parameter gradients are summed per thread and then in thread order, so results do
 * not depend on timing. */
#include "ops/cpu_ops.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>

#include "core/check.h"
#include "ops/cpu_math.h"

/* Mean and 1/sqrt(var + eps) of n values, two passes in double. */
static void row_statistics(const float *x, long n, float eps, float *mean_out, float *rstd_out)
{
    double sum = 0.0;
    #pragma omp simd reduction(+ : sum)
    for (long i = 0; i < n; i++) sum += x[i];
    double mean = sum / (double)n;
    double sq = 0.0;
    #pragma omp simd reduction(+ : sq)
    for (long i = 0; i < n; i++) {
        double d = x[i] - mean;
        sq += d * d;
    }
    *mean_out = (float)mean;
    *rstd_out = (float)(1.0 / sqrt(sq / (double)n + eps));
}

void cpu_layernorm_fwd(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                       const float *beta, int rows, int dim, float eps)
{
    #pragma omp parallel for schedule(static) if ((long)rows * dim > CPU_OMP_MIN_ELEMENTS)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (long)r * dim;
        float *yr = y + (long)r * dim;
        float mu, rs;
        row_statistics(xr, dim, eps, &mu, &rs);
        mean[r] = mu;
        rstd[r] = rs;
        if (gamma && beta) {
            #pragma omp simd
            for (int d = 0; d < dim; d++) yr[d] = (xr[d] - mu) * rs * gamma[d] + beta[d];
        } else {
            for (int d = 0; d < dim; d++) {
                float v = (xr[d] - mu) * rs;
                if (gamma) v *= gamma[d];
                if (beta) v += beta[d];
                yr[d] = v;
            }
        }
    }
}

void cpu_layernorm_bwd(float *dx, const float *dx_residual, float *dgamma, float *dbeta,
                       const float *dy, const float *x, const float *mean, const float *rstd,
                       const float *gamma, int rows, int dim)
{
    if (dx)
        backend_check_residual("layernorm_bwd", dx, DTYPE_F32, dx_residual, (size_t)rows * dim);
    int parallel = (long)rows * dim > CPU_OMP_MIN_ELEMENTS;
    int nthreads = parallel ? omp_get_max_threads() : 1;
    int want_params = dgamma || dbeta;
    /* Per-thread partial sums of dgamma (first dim) and dbeta (next dim). */
    double *partial = want_params ? xcalloc((size_t)nthreads * 2 * dim, sizeof(double)) : NULL;

    #pragma omp parallel if (parallel) num_threads(nthreads)
    {
        double *pg = want_params ? partial + (size_t)omp_get_thread_num() * 2 * dim : NULL;
        double *pb = want_params ? pg + dim : NULL;
        #pragma omp for schedule(static)
        for (int r = 0; r < rows; r++) {
            const float *xr = x + (long)r * dim, *dyr = dy + (long)r * dim;
            float mu = mean[r], rs = rstd[r];
            if (want_params)
                #pragma omp simd
                for (int d = 0; d < dim; d++) {
                    float xhat = (xr[d] - mu) * rs;
                    pg[d] += dyr[d] * xhat;
                    pb[d] += dyr[d];
                }
            if (!dx) continue;
            /* dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy * gamma */
            double sum_g = 0.0, sum_gx = 0.0;
            #pragma omp simd reduction(+ : sum_g, sum_gx)
            for (int d = 0; d < dim; d++) {
                float g = gamma ? dyr[d] * gamma[d] : dyr[d];
                sum_g += g;
                sum_gx += g * ((xr[d] - mu) * rs);
            }
            float mean_g = (float)(sum_g / dim), mean_gx = (float)(sum_gx / dim);
            float *dxr = dx + (long)r * dim;
            #pragma omp simd
            for (int d = 0; d < dim; d++) {
                float g = gamma ? dyr[d] * gamma[d] : dyr[d];
                float xhat = (xr[d] - mu) * rs;
                dxr[d] = rs * (g - mean_g - xhat * mean_gx);
            }
            /* The residual after the store, in its own loop: the same two roundings as
             * layernorm_bwd followed by the add op, so fusing changes no bit. */
            if (dx_residual) {
                const float *resr = dx_residual + (long)r * dim;
                #pragma omp simd
                for (int d = 0; d < dim; d++) dxr[d] = resr[d] + dxr[d];
            }
        }
    }
    if (!want_params) return;
    for (int d = 0; d < dim; d++) {
        double g = 0.0, b = 0.0;
        for (int t = 0; t < nthreads; t++) {
            g += partial[(size_t)t * 2 * dim + d];
            b += partial[(size_t)t * 2 * dim + dim + d];
        }
        if (dgamma) dgamma[d] += (float)g;
        if (dbeta) dbeta[d] += (float)b;
    }
    free(partial);
}

/* The reference: dx exactly as cpu_layernorm_bwd forms it, then its bf16 copy and its column
 * sums by the very functions cpu_linear_bwd_bf16 applies to an fp32 dy (cpu_to_bf16's
 * rounding, cpu_add_column_sums' per-column double sums in row order), so the CPU backend's
 * bf16 step has the same bits through this op as through linear_bwd_bf16 on dx. */
void cpu_layernorm_bwd_dx16(float *dx, const float *dx_residual, float *dgamma, float *dbeta,
                            bf16_t *dx_bf16, float *dx_colsum, const float *dy, const float *x,
                            const float *mean, const float *rstd, const float *gamma, int rows,
                            int dim)
{
    ALICE_ASSERT(dx || (!dx_bf16 && !dx_colsum), "layernorm_bwd_dx16: dx_bf16 and dx_colsum "
                 "are made from dx, which was not asked for (pass dx too)");
    cpu_layernorm_bwd(dx, dx_residual, dgamma, dbeta, dy, x, mean, rstd, gamma, rows, dim);
    if (rows <= 0) return;
    if (dx_bf16) cpu_to_bf16(dx_bf16, dx, (size_t)rows * dim);
    if (dx_colsum) cpu_add_column_sums(dx_colsum, dx, rows, dim, dim);
}

/* Instance norm forward, then (fused) an addend and LeakyReLU: every variant runs through this
 * one function, so the fused op's bits are those of instnorm_fwd, add and leaky_relu_fwd in
 * turn. addend may alias y: each element is read before it is written. */
static void instnorm_fwd_fused(float *y, float *mean, float *rstd, const float *x,
                               const float *gamma, const float *beta, const float *addend,
                               int lrelu, float slope, int B, int C, long V, float eps)
{
    int planes = B * C;
    #pragma omp parallel for schedule(static) if ((long)planes * V > CPU_OMP_MIN_ELEMENTS)
    for (int bc = 0; bc < planes; bc++) {
        const float *xp = x + (long)bc * V;
        float *yp = y + (long)bc * V;
        int c = bc % C;
        float mu, rs;
        row_statistics(xp, V, eps, &mu, &rs);
        mean[bc] = mu;
        rstd[bc] = rs;
        /* y = x * a + shift with the affine folded in */
        float a = rs * (gamma ? gamma[c] : 1.0f);
        float shift = (beta ? beta[c] : 0.0f) - mu * a;
        if (!addend && !lrelu) {
            #pragma omp simd
            for (long i = 0; i < V; i++) yp[i] = xp[i] * a + shift;
            continue;
        }
        const float *ap = addend ? addend + (long)bc * V : NULL;
        #pragma omp simd
        for (long i = 0; i < V; i++) {
            float v = xp[i] * a + shift;
            if (ap) v = v + ap[i];
            yp[i] = lrelu ? leaky_relu_value(v, slope) : v;
        }
    }
}

void cpu_instnorm_fwd(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                      const float *beta, int B, int C, long V, float eps)
{
    instnorm_fwd_fused(y, mean, rstd, x, gamma, beta, NULL, 0, 0.0f, B, C, V, eps);
}

void cpu_instnorm_lrelu_fwd(float *y, float *mean, float *rstd, const float *x,
                            const float *gamma, const float *beta, const float *addend, int B,
                            int C, long V, float eps, float slope)
{
    instnorm_fwd_fused(y, mean, rstd, x, gamma, beta, addend, 1, slope, B, C, V, eps);
}

/* One plane of the instance norm backward: its sums of dy and dy xhat, and dx (dxp non-NULL).
 * Plain and gated backward both run this one function on their dy, so the reductions add in
 * the same order whatever the compiler makes of the callers' loops. */
static void instnorm_bwd_plane(float *dxp, const float *dyp, const float *xp, float mu, float rs,
                               float gam, long V, double *sum_dy, double *sum_dyx)
{
    double s = 0.0, sx = 0.0;
    #pragma omp simd reduction(+ : s, sx)
    for (long i = 0; i < V; i++) {
        s += dyp[i];
        sx += dyp[i] * ((xp[i] - mu) * rs);
    }
    *sum_dy = s;
    *sum_dyx = sx;
    if (!dxp) return;
    float mean_dy = (float)(s / V), mean_dyx = (float)(sx / V);
    #pragma omp simd
    for (long i = 0; i < V; i++) {
        float xhat = (xp[i] - mu) * rs;
        dxp[i] = gam * rs * (dyp[i] - mean_dy - xhat * mean_dyx);
    }
}

/* Instance norm backward of dy, gated first by LeakyReLU's slope at act when act is given:
 * leaky_relu_bwd's values, then the plain backward on them. The gated plane is staged in dx's
 * own plane, which the plain backward then overwrites element by element (each dx[i] is written
 * after its dy[i] is read, so dx may alias dy too); only without dx does a thread need a
 * plane-sized buffer. */
static void instnorm_bwd_gated(float *dx, float *dgamma, float *dbeta, const float *dy,
                               const float *act, float slope, const float *x, const float *mean,
                               const float *rstd, const float *gamma, int B, int C, long V)
{
    int planes = B * C;
    /* Per-plane sums of dy and dy * xhat: they give dx and, summed over b, dbeta and dgamma. */
    double *sum_dy = xmalloc((size_t)planes * sizeof(double));
    double *sum_dyx = xmalloc((size_t)planes * sizeof(double));
    #pragma omp parallel if ((long)planes * V > CPU_OMP_MIN_ELEMENTS)
    {
        float *buffer = act && !dx ? xmalloc((size_t)V * sizeof(float)) : NULL;
        #pragma omp for schedule(static)
        for (int bc = 0; bc < planes; bc++) {
            const float *dyp = dy + (long)bc * V;
            if (act) {
                const float *ap = act + (long)bc * V;
                float *gated = dx ? dx + (long)bc * V : buffer;
                #pragma omp simd
                for (long i = 0; i < V; i++) gated[i] = leaky_relu_grad(ap[i], dyp[i], slope);
                dyp = gated;
            }
            instnorm_bwd_plane(dx ? dx + (long)bc * V : NULL, dyp, x + (long)bc * V, mean[bc],
                               rstd[bc], gamma ? gamma[bc % C] : 1.0f, V, &sum_dy[bc],
                               &sum_dyx[bc]);
        }
        free(buffer);
    }
    for (int c = 0; c < C; c++) {
        double g = 0.0, b = 0.0;
        for (int bi = 0; bi < B; bi++) {
            g += sum_dyx[bi * C + c];
            b += sum_dy[bi * C + c];
        }
        if (dgamma) dgamma[c] += (float)g;
        if (dbeta) dbeta[c] += (float)b;
    }
    free(sum_dy);
    free(sum_dyx);
}

void cpu_instnorm_bwd(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                      const float *mean, const float *rstd, const float *gamma, int B, int C,
                      long V)
{
    instnorm_bwd_gated(dx, dgamma, dbeta, dy, NULL, 0.0f, x, mean, rstd, gamma, B, C, V);
}

void cpu_instnorm_lrelu_bwd(float *dx, float *dgamma, float *dbeta, const float *dy,
                            const float *act, float slope, const float *x, const float *mean,
                            const float *rstd, const float *gamma, int B, int C, long V)
{
    instnorm_bwd_gated(dx, dgamma, dbeta, dy, act, slope, x, mean, rstd, gamma, B, C, V);
}
