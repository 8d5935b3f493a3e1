/* CPU backend: vector normalisation and the pre-training losses (cosine loss or DINO soft
 * cross-entropy of l_dv / l_st, masked MSE of l_r with normalised-patch targets). Loss sums are taken in double. */
#include "ops/cpu_ops.h"

#include <math.h>

#include "ops/cpu_math.h" /* norm_pix_var_divisor, shared with the CUDA backend */

/* PyTorch's cosine_similarity clamps the product of the norms at eps^2 (eps = 1e-8). */
#define COSINE_EPS 1e-8

void cpu_l2norm_fwd(float *y, float *norms, const float *x, int rows, int dim, float eps)
{
    #pragma omp parallel for schedule(static) if ((long)rows * dim > CPU_OMP_MIN_ELEMENTS)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (long)r * dim;
        float *yr = y + (long)r * dim;
        double sq = 0.0;
        for (int d = 0; d < dim; d++) sq += (double)xr[d] * xr[d];
        float norm = (float)sqrt(sq);
        norms[r] = norm;
        float inv = 1.0f / (norm > eps ? norm : eps);
        for (int d = 0; d < dim; d++) yr[d] = xr[d] * inv;
    }
}

void cpu_l2norm_bwd(float *dx, const float *dy, const float *x, const float *norms, int rows,
                    int dim, float eps)
{
    #pragma omp parallel for schedule(static) if ((long)rows * dim > CPU_OMP_MIN_ELEMENTS)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (long)r * dim, *dyr = dy + (long)r * dim;
        float *dxr = dx + (long)r * dim;
        float norm = norms[r];
        if (!(norm > eps)) {
            /* The clamped denominator is a constant. */
            for (int d = 0; d < dim; d++) dxr[d] = dyr[d] / eps;
            continue;
        }
        /* dx = (dy - x <x, dy> / n^2) / n */
        double dot = 0.0;
        for (int d = 0; d < dim; d++) dot += (double)xr[d] * dyr[d];
        float inv = 1.0f / norm;
        float c = (float)(dot / ((double)norm * norm));
        for (int d = 0; d < dim; d++) dxr[d] = (dyr[d] - xr[d] * c) * inv;
    }
}

typedef struct {
    double dot, aa, bb;
} RowProducts;

static RowProducts row_products(const float *a, const float *b, int dim)
{
    RowProducts p = {0.0, 0.0, 0.0};
    for (int d = 0; d < dim; d++) {
        p.dot += (double)a[d] * b[d];
        p.aa += (double)a[d] * a[d];
        p.bb += (double)b[d] * b[d];
    }
    return p;
}

static double clamped_norm_product(RowProducts p)
{
    double prod = p.aa * p.bb;
    return prod > COSINE_EPS * COSINE_EPS ? sqrt(prod) : COSINE_EPS;
}

void cpu_cosine_loss_fwd(float *loss, const float *a, const float *b, int rows, int dim)
{
    double total = 0.0;
    #pragma omp parallel for schedule(static) reduction(+ : total) if ((long)rows * dim > CPU_OMP_MIN_ELEMENTS)
    for (int r = 0; r < rows; r++) {
        RowProducts p = row_products(a + (long)r * dim, b + (long)r * dim, dim);
        total += 1.0 - p.dot / clamped_norm_product(p);
    }
    *loss = rows > 0 ? (float)(total / rows) : 0.0f;
}

void cpu_cosine_loss_bwd(float *da, float *db, const float *a, const float *b, int rows,
                         int dim, float scale)
{
    #pragma omp parallel for schedule(static) if ((long)rows * dim > CPU_OMP_MIN_ELEMENTS)
    for (int r = 0; r < rows; r++) {
        const float *ar = a + (long)r * dim, *br = b + (long)r * dim;
        RowProducts p = row_products(ar, br, dim);
        double denom = clamped_norm_product(p);
        int clamped = !(p.aa * p.bb > COSINE_EPS * COSINE_EPS);
        double cosv = p.dot / denom;
        /* d(1 - cos)/da = -(b / denom - cos a / |a|^2), the last term absent when clamped */
        float g = (float)(-(double)scale / rows);
        float inv_den = (float)(1.0 / denom);
        float ca = clamped ? 0.0f : (float)(cosv / p.aa);
        float cb = clamped ? 0.0f : (float)(cosv / p.bb);
        if (da)
            for (int d = 0; d < dim; d++)
                da[(long)r * dim + d] = g * (br[d] * inv_den - ar[d] * ca);
        if (db)
            for (int d = 0; d < dim; d++)
                db[(long)r * dim + d] = g * (ar[d] * inv_den - br[d] * cb);
    }
}

/* log sum_k exp(x_k * inv_temp - shift_k * inv_temp) in double, max-shifted for stability;
 * shift may be NULL (no centering). */
static double row_logsumexp(const float *x, const float *shift, int dim, double inv_temp)
{
    double mx = -INFINITY;
    for (int d = 0; d < dim; d++) {
        double v = ((double)x[d] - (shift ? shift[d] : 0.0)) * inv_temp;
        if (v > mx) mx = v;
    }
    double sum = 0.0;
    for (int d = 0; d < dim; d++) sum += exp(((double)x[d] - (shift ? shift[d] : 0.0)) * inv_temp - mx);
    return mx + log(sum);
}

void cpu_soft_ce_fwd(float *loss, const float *s, const float *t, const float *center, int rows,
                     int dim, float inv_ts, float inv_tt)
{
    double total = 0.0;
    #pragma omp parallel for schedule(static) reduction(+ : total) if ((long)rows * dim > CPU_OMP_MIN_ELEMENTS)
    for (int r = 0; r < rows; r++) {
        const float *sr = s + (long)r * dim, *tr = t + (long)r * dim;
        double lse_t = row_logsumexp(tr, center, dim, inv_tt);
        double lse_s = row_logsumexp(sr, NULL, dim, inv_ts);
        /* H = -sum_k p_k (s_k inv_ts - lse_s) = lse_s - sum_k p_k s_k inv_ts, as sum_k p_k = 1 */
        double dot = 0.0;
        for (int d = 0; d < dim; d++)
            dot += exp(((double)tr[d] - center[d]) * inv_tt - lse_t) * ((double)sr[d] * inv_ts);
        total += lse_s - dot;
    }
    *loss = rows > 0 ? (float)(total / rows) : 0.0f;
}

void cpu_soft_ce_bwd(float *ds, const float *s, const float *t, const float *center, int rows,
                     int dim, float inv_ts, float inv_tt, float scale)
{
    const double g = (double)scale * inv_ts / (rows > 0 ? rows : 1);
    #pragma omp parallel for schedule(static) if ((long)rows * dim > CPU_OMP_MIN_ELEMENTS)
    for (int r = 0; r < rows; r++) {
        const float *sr = s + (long)r * dim, *tr = t + (long)r * dim;
        double lse_t = row_logsumexp(tr, center, dim, inv_tt);
        double lse_s = row_logsumexp(sr, NULL, dim, inv_ts);
        float *dr = ds + (long)r * dim;
        for (int d = 0; d < dim; d++) {
            double q = exp((double)sr[d] * inv_ts - lse_s);
            double p = exp(((double)tr[d] - center[d]) * inv_tt - lse_t);
            dr[d] = (float)(g * (q - p));
        }
    }
}

void cpu_normalize_rows(float *out, const float *x, int rows, int dim, float eps)
{
    #pragma omp parallel for schedule(static) if ((long)rows * dim > CPU_OMP_MIN_ELEMENTS)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (long)r * dim;
        float *or_ = out + (long)r * dim;
        double sum = 0.0;
        for (int d = 0; d < dim; d++) sum += xr[d];
        double mean = sum / dim, sq = 0.0;
        for (int d = 0; d < dim; d++) sq += (xr[d] - mean) * (xr[d] - mean);
        float inv_std = (float)(1.0 / sqrt(sq / norm_pix_var_divisor(dim) + eps));
        float mu = (float)mean;
        for (int d = 0; d < dim; d++) or_[d] = (xr[d] - mu) * inv_std;
    }
}

static double mask_sum(const float *mask, int rows)
{
    double s = 0.0;
    for (int r = 0; r < rows; r++) s += mask[r];
    return s;
}

void cpu_masked_mse_fwd(float *loss, const float *pred, const float *target, const float *mask,
                        int rows, int dim)
{
    double msum = mask_sum(mask, rows);
    *loss = 0.0f;
    if (msum == 0.0) return; /* nothing masked: no reconstruction term */
    double total = 0.0;
    #pragma omp parallel for schedule(static) reduction(+ : total) if ((long)rows * dim > CPU_OMP_MIN_ELEMENTS)
    for (int r = 0; r < rows; r++) {
        if (mask[r] == 0.0f) continue;
        const float *pr = pred + (long)r * dim, *tr = target + (long)r * dim;
        double sq = 0.0;
        for (int d = 0; d < dim; d++) sq += (double)(pr[d] - tr[d]) * (pr[d] - tr[d]);
        total += mask[r] * sq / dim;
    }
    *loss = (float)(total / msum);
}

void cpu_masked_mse_bwd(float *dpred, const float *pred, const float *target, const float *mask,
                        int rows, int dim, float scale)
{
    double msum = mask_sum(mask, rows);
    float coef = msum == 0.0 ? 0.0f : (float)(2.0 * scale / (dim * msum));
    #pragma omp parallel for schedule(static) if ((long)rows * dim > CPU_OMP_MIN_ELEMENTS)
    for (int r = 0; r < rows; r++) {
        const float *pr = pred + (long)r * dim, *tr = target + (long)r * dim;
        float *dr = dpred + (long)r * dim;
        /* A visible row (mask 0) does not enter the loss (the forward skips it), so its
         * gradient is exactly 0 whatever pred holds: not 0 * (pred - target), which is NaN for
         * a non-finite pred. The CUDA backend writes the same zeros without reading the row. */
        if (mask[r] == 0.0f) {
            for (int d = 0; d < dim; d++) dr[d] = 0.0f;
            continue;
        }
        float c = coef * mask[r];
        for (int d = 0; d < dim; d++) dr[d] = c * (pr[d] - tr[d]);
    }
}
