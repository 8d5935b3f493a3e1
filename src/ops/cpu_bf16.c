/* CPU backend: the mixed-precision (bf16 activation) ops, the reference the CUDA backend's
 * tensor-core path is compared with. Each op widens its bf16 inputs exactly, rounds the fp32
 * GEMM operands (weights, dy) to bf16 values kept in fp32 storage, runs the existing fp32 CPU
 * op on those temporaries and rounds a bf16 output once. No math is repeated here, so the
 * mixed-precision path differs from the fp32 path only by the roundings the contract in
 * ops/backend.h names. Temporaries live in per-thread scratch buffers that only grow (see
 * scratch_floats). */
/* Lets GCC vectorise the clamps of cpu_expf/cpu_erff in the GELU loops (see ops/cpu_math.h). */
#pragma GCC optimize("no-trapping-math")
#include "ops/cpu_ops.h"

#include <stdint.h>
#include <stdlib.h>

#include "core/check.h"
#include "ops/cpu_math.h"

/* ------------------------------------------------------------------ conversions */

static void widen(float *dst, const bf16_t *src, size_t n)
{
    #pragma omp parallel for simd schedule(static) if (n > CPU_OMP_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++) dst[i] = bf16_to_float(src[i]);
}

static void narrow(bf16_t *dst, const float *src, size_t n)
{
    #pragma omp parallel for simd schedule(static) if (n > CPU_OMP_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++) dst[i] = bf16_from_float(src[i]);
}

void cpu_to_bf16(bf16_t *y, const float *x, size_t n) { narrow(y, x, n); }

/* ------------------------------------------------------------------ scratch */

/* Attention passes up to this many strided views (q, k, v, and out in backward). */
enum { MAX_VIEWS = 4 };

/* What each scratch buffer holds during one op (several are live at once). */
enum ScratchRole {
    SCRATCH_INPUT,              /* x widened */
    SCRATCH_WEIGHT,             /* W rounded */
    SCRATCH_BIAS,               /* b rounded */
    SCRATCH_DY,                 /* dy rounded */
    SCRATCH_OUTPUT,             /* fp32 result before rounding */
    SCRATCH_VIEW,               /* widened attention views, one per merged range */
    /* fp32 attention gradients before rounding (attention_bwd_bf16_grad16), one per range */
    SCRATCH_GRAD_VIEW = SCRATCH_VIEW + MAX_VIEWS,
    SCRATCH_ROLES = SCRATCH_GRAD_VIEW + MAX_VIEWS
};

/* Per-thread buffers that only grow, one per role. A fresh multi-megabyte malloc is mmap'd and
 * page-faulted on every call: for a ViT-B MLP layer (576 x 768 -> 3072, 2 threads) that made
 * linear_fwd_bf16 about 1.5x the fp32 op's time, against about 1.1x with reused buffers.
 * Thread-local so that two threads calling the backend never share one; held for the life of
 * the thread, sized to the largest layer seen (tens of MB for ViT-B). */
static _Thread_local struct {
    float *data;
    size_t capacity;
} scratch[SCRATCH_ROLES];

static float *scratch_floats(int role, size_t n)
{
    if (n == 0) n = 1; /* a valid pointer even for empty tensors */
    if (n > scratch[role].capacity) {
        free(scratch[role].data); /* contents are not kept: every caller overwrites */
        scratch[role].data = xmalloc(n * sizeof(float));
        scratch[role].capacity = n;
    }
    return scratch[role].data;
}

/* src widened into the role's scratch. */
static float *widened(int role, const bf16_t *src, size_t n)
{
    float *dst = scratch_floats(role, n);
    widen(dst, src, n);
    return dst;
}

/* The bf16 values of src (what a bf16 GEMM operand holds) in the role's scratch. */
static float *rounded(int role, const float *src, size_t n)
{
    float *dst = scratch_floats(role, n);
    #pragma omp parallel for simd schedule(static) if (n > CPU_OMP_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++) dst[i] = bf16_round(src[i]);
    return dst;
}

/* ------------------------------------------------------------------ strided attention views */

/* Up to four strided bf16 views (q, k, v and, in backward, out) widened into fp32 copies with
 * the same strides. Views whose element ranges overlap or touch (a packed qkv buffer: q = qkv,
 * k = qkv + C, v = qkv + 2C) share one copy, so a packed buffer is widened once, not three
 * times; views in separate buffers get their own copy, so nothing outside a view's own span
 * (first to last element, gaps between rows included, all in the caller's buffer) is read. */
typedef struct {
    const bf16_t *src[MAX_VIEWS];
    size_t len[MAX_VIEWS];          /* elements from the first to the last of the view */
    float *wide[MAX_VIEWS];         /* fp32 counterpart of src[i] */
    int count;
} WideViews;

/* Elements spanned by rows rows of width elements, row stride ld. */
static size_t view_span(long rows, int ld, int width)
{
    return rows > 0 && width > 0 ? (size_t)(rows - 1) * (size_t)ld + (size_t)width : 0;
}

static void views_add(WideViews *w, const bf16_t *src, size_t len)
{
    if (w->count == MAX_VIEWS) ALICE_FATAL("cpu_bf16: more than %d attention views", MAX_VIEWS);
    w->src[w->count] = src;
    w->len[w->count] = len;
    w->wide[w->count] = NULL;
    w->count++;
}

/* Merges overlapping or touching views (compared as addresses: they may lie in one buffer or
 * in several) and gives each merged range one fp32 copy from the scratch roles base_role,
 * base_role + 1, ...; widens the bf16 range into it when widen_now (inputs), else leaves it
 * for the caller to fill (gradients). */
static void views_place(WideViews *w, int base_role, int widen_now)
{
    int order[MAX_VIEWS];
    for (int i = 0; i < w->count; i++) order[i] = i;
    /* insertion sort by start address: at most four views */
    for (int i = 1; i < w->count; i++)
        for (int j = i; j > 0 && (uintptr_t)w->src[order[j]] < (uintptr_t)w->src[order[j - 1]];
             j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    int first = 0, ranges = 0;
    while (first < w->count) {
        const uintptr_t start = (uintptr_t)w->src[order[first]];
        uintptr_t end = start + w->len[order[first]] * sizeof(bf16_t);
        int last = first + 1;
        while (last < w->count && (uintptr_t)w->src[order[last]] <= end) {
            uintptr_t e = (uintptr_t)w->src[order[last]] + w->len[order[last]] * sizeof(bf16_t);
            end = e > end ? e : end;
            last++;
        }
        const size_t n = (size_t)(end - start) / sizeof(bf16_t);
        float *copy = widen_now ? widened(base_role + ranges, w->src[order[first]], n)
                                : scratch_floats(base_role + ranges, n);
        ranges++;
        for (int m = first; m < last; m++)
            w->wide[order[m]] = copy + ((uintptr_t)w->src[order[m]] - start) / sizeof(bf16_t);
        first = last;
    }
}

static void views_widen(WideViews *w) { views_place(w, SCRATCH_VIEW, 1); }

/* dst[r ld + c] = src[r ld + c] rounded to bf16 for r < rows, c < cols: only the view's own
 * elements, so what lies between its rows in the caller's buffer is left as it was. */
static void narrow_rows(bf16_t *dst, const float *src, long rows, int ld, int cols)
{
    #pragma omp parallel for schedule(static) if ((size_t)rows * cols > CPU_OMP_MIN_ELEMENTS)
    for (long r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            dst[(size_t)r * ld + c] = bf16_from_float(src[(size_t)r * ld + c]);
}

/* q, k, v of an attention call as views (indices VIEW_Q, VIEW_K, VIEW_V). */
enum { VIEW_Q = 0, VIEW_K = 1, VIEW_V = 2, VIEW_OUT = 3 };

static void views_add_qkv(WideViews *w, const bf16_t *q, const bf16_t *k, const bf16_t *v,
                          int B, int H, int Tq, int Tk, int Dh, int ldq, int ldkv)
{
    w->count = 0;
    views_add(w, q, view_span((long)B * Tq, ldq, H * Dh));
    views_add(w, k, view_span((long)B * Tk, ldkv, H * Dh));
    views_add(w, v, view_span((long)B * Tk, ldkv, H * Dh));
}

/* ------------------------------------------------------------------ ops */

void cpu_linear_fwd_bf16(void *y, DType y_type, const bf16_t *x, const float *W, const float *b,
                         const float *residual, int rows, int in, int out)
{
    if (y_type != DTYPE_F32 && y_type != DTYPE_BF16)
        ALICE_FATAL("linear_fwd_bf16: unknown output type %d", (int)y_type);
    backend_check_residual("linear_fwd_bf16", y, y_type, residual, (size_t)rows * out);
    const float *xw = widened(SCRATCH_INPUT, x, (size_t)rows * in);
    const float *Wr = rounded(SCRATCH_WEIGHT, W, (size_t)out * in);
    if (y_type == DTYPE_F32) {
        cpu_linear_fwd((float *)y, xw, Wr, b, rows, in, out);
        /* The add op itself on the stored result: bit for bit the unfused sequence. */
        if (residual) cpu_add((float *)y, (const float *)y, residual, (size_t)rows * out);
        return;
    }
    /* cuBLASLt's epilogue adds the bias in the output type: round it first. */
    const float *br = b ? rounded(SCRATCH_BIAS, b, (size_t)out) : NULL;
    const size_t ny = (size_t)rows * out;
    float *yf = scratch_floats(SCRATCH_OUTPUT, ny);
    cpu_linear_fwd(yf, xw, Wr, br, rows, in, out);
    narrow((bf16_t *)y, yf, ny);
}

void cpu_linear_bwd_bf16(float *dx, float *dW, float *db, const float *dy, const bf16_t *x,
                         const float *W, int rows, int in, int out)
{
    /* db from the unrounded dy (the contract): the bias gradient is not a GEMM operand. */
    if (db) cpu_linear_bwd(NULL, NULL, db, dy, NULL, NULL, rows, in, out);
    if (!dx && !dW) return;
    const float *dyr = rounded(SCRATCH_DY, dy, (size_t)rows * out);
    const float *Wr = dx ? rounded(SCRATCH_WEIGHT, W, (size_t)out * in) : NULL;
    const float *xw = dW ? widened(SCRATCH_INPUT, x, (size_t)rows * in) : NULL;
    cpu_linear_bwd(dx, dW, NULL, dyr, xw, Wr, rows, in, out);
}

/* linear_bwd_bf16 with db NULL, whose dy rounding leaves a bf16 dy as it is: dy widened
 * exactly instead, the same fp32 operand values, so the same bits. */
void cpu_linear_bwd_bf16_dy16(float *dx, float *dW, const bf16_t *dy, const bf16_t *x,
                              const float *W, int rows, int in, int out)
{
    if (!dx && !dW) return;
    const float *dyw = widened(SCRATCH_DY, dy, (size_t)rows * out);
    const float *Wr = dx ? rounded(SCRATCH_WEIGHT, W, (size_t)out * in) : NULL;
    const float *xw = dW ? widened(SCRATCH_INPUT, x, (size_t)rows * in) : NULL;
    cpu_linear_bwd(dx, dW, NULL, dyw, xw, Wr, rows, in, out);
}

/* The bf16-dx entries: the fp32-dx op into SCRATCH_OUTPUT (no role those ops use), then dx
 * rounded once, so the same bits as that op followed by to_bf16. */
static float *fp32_dx(const bf16_t *dx, int rows, int in)
{
    return dx ? scratch_floats(SCRATCH_OUTPUT, (size_t)rows * in) : NULL;
}

void cpu_linear_bwd_bf16_dx16(bf16_t *dx, float *dW, float *db, const float *dy, const bf16_t *x,
                              const float *W, int rows, int in, int out)
{
    float *dxf = fp32_dx(dx, rows, in);
    cpu_linear_bwd_bf16(dxf, dW, db, dy, x, W, rows, in, out);
    if (dx) narrow(dx, dxf, (size_t)rows * in);
}

void cpu_linear_bwd_bf16_dy16_dx16(bf16_t *dx, float *dW, const bf16_t *dy, const bf16_t *x,
                                   const float *W, int rows, int in, int out)
{
    float *dxf = fp32_dx(dx, rows, in);
    cpu_linear_bwd_bf16_dy16(dxf, dW, dy, x, W, rows, in, out);
    if (dx) narrow(dx, dxf, (size_t)rows * in);
}

void cpu_layernorm_fwd_bf16(bf16_t *y, float *mean, float *rstd, const float *x,
                            const float *gamma, const float *beta, int rows, int dim, float eps)
{
    const size_t n = (size_t)rows * dim;
    float *yf = scratch_floats(SCRATCH_OUTPUT, n);
    cpu_layernorm_fwd(yf, mean, rstd, x, gamma, beta, rows, dim, eps);
    narrow(y, yf, n);
}

/* The contract's sequence itself: the add, then the LayerNorm of the fp32 sum. */
void cpu_add_layernorm_fwd(float *sum, void *y, DType y_type, float *mean, float *rstd,
                           const float *x, const bf16_t *branch, const float *gamma,
                           const float *beta, int rows, int dim, float eps)
{
    const size_t n = (size_t)rows * dim;
    backend_check_add_layernorm("add_layernorm_fwd", sum, x, branch, n);
    #pragma omp parallel for simd schedule(static) if (n > CPU_OMP_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++) sum[i] = x[i] + bf16_to_float(branch[i]);
    if (y_type == DTYPE_BF16)
        cpu_layernorm_fwd_bf16(y, mean, rstd, sum, gamma, beta, rows, dim, eps);
    else
        cpu_layernorm_fwd(y, mean, rstd, sum, gamma, beta, rows, dim, eps);
}

/* The GELU formula is ops/cpu_math.h's (the fp32 op's and the CUDA kernels'), applied to the
 * widened input element by element: no temporary needed. */
void cpu_gelu_fwd_bf16(bf16_t *y, const bf16_t *x, size_t n)
{
    #pragma omp parallel for simd schedule(static) if (n > CPU_OMP_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++) y[i] = bf16_from_float(gelu_erf(bf16_to_float(x[i])));
}

void cpu_gelu_bwd_bf16(float *dx, const float *dy, const bf16_t *x, size_t n)
{
    #pragma omp parallel for simd schedule(static) if (n > CPU_OMP_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++) dx[i] = dy[i] * gelu_erf_slope(bf16_to_float(x[i]));
}

/* The reference of the fused op is the unfused sequence itself (its contract): dh materialised
 * in the caller's scratch, then the linear backward. */
void cpu_linear_gelu_bwd_bf16(float *dx, float *dW, float *db, const float *dy_act,
                              const bf16_t *h, float *dh_scratch, const bf16_t *x,
                              const float *W, int rows, int in, int out)
{
    cpu_gelu_bwd_bf16(dh_scratch, dy_act, h, (size_t)rows * out);
    cpu_linear_bwd_bf16(dx, dW, db, dh_scratch, x, W, rows, in, out);
}

/* The same with a bf16 dy_act: widened exactly in the product (gelu_bwd_bf16's formula on the
 * widened value), so the same bits as linear_gelu_bwd_bf16 on dy_act widened. */
void cpu_linear_gelu_bwd_bf16_dy16(float *dx, float *dW, float *db, const bf16_t *dy_act,
                                   const bf16_t *h, float *dh_scratch, const bf16_t *x,
                                   const float *W, int rows, int in, int out)
{
    const size_t n = (size_t)rows * out;
    #pragma omp parallel for simd schedule(static) if (n > CPU_OMP_MIN_ELEMENTS)
    for (size_t i = 0; i < n; i++)
        dh_scratch[i] = bf16_to_float(dy_act[i]) * gelu_erf_slope(bf16_to_float(h[i]));
    cpu_linear_bwd_bf16(dx, dW, db, dh_scratch, x, W, rows, in, out);
}

void cpu_attention_fwd_bf16(bf16_t *out, float *saved, const bf16_t *q, const bf16_t *k,
                            const bf16_t *v, int B, int H, int Tq, int Tk, int Dh, int ldq,
                            int ldkv)
{
    WideViews w;
    views_add_qkv(&w, q, k, v, B, H, Tq, Tk, Dh, ldq, ldkv);
    views_widen(&w);
    const size_t n_out = (size_t)B * Tq * H * Dh;
    float *of = scratch_floats(SCRATCH_OUTPUT, n_out);
    cpu_attention_fwd(of, saved, w.wide[VIEW_Q], w.wide[VIEW_K], w.wide[VIEW_V], B, H, Tq, Tk,
                      Dh, ldq, ldkv);
    narrow(out, of, n_out);
}

void cpu_attention_bwd_bf16(float *dq, float *dk, float *dv, const float *dout, const bf16_t *q,
                            const bf16_t *k, const bf16_t *v, const bf16_t *out,
                            const float *saved, int B, int H, int Tq, int Tk, int Dh, int ldq,
                            int ldkv)
{
    WideViews w;
    views_add_qkv(&w, q, k, v, B, H, Tq, Tk, Dh, ldq, ldkv);
    /* The fp32 op's contract includes out (the CPU kernel happens not to read it today). */
    views_add(&w, out, (size_t)B * Tq * H * Dh);
    views_widen(&w);
    cpu_attention_bwd(dq, dk, dv, dout, w.wide[VIEW_Q], w.wide[VIEW_K], w.wide[VIEW_V],
                      w.wide[VIEW_OUT], saved, B, H, Tq, Tk, Dh, ldq, ldkv);
}

/* The composition the op stands for: attention_bwd_bf16 into fp32 gradients laid out like the
 * bf16 ones (views in one packed buffer, dqkv, share one scratch copy with the same element
 * offsets and strides), then each gradient rounded once into its view. */
void cpu_attention_bwd_bf16_grad16(bf16_t *dq, bf16_t *dk, bf16_t *dv, const float *dout,
                                   const bf16_t *q, const bf16_t *k, const bf16_t *v,
                                   const bf16_t *out, const float *saved, int B, int H, int Tq,
                                   int Tk, int Dh, int ldq, int ldkv)
{
    enum { GRAD_Q, GRAD_K, GRAD_V, GRADS };
    bf16_t *const grad[GRADS] = {dq, dk, dv};
    const long rows[GRADS] = {(long)B * Tq, (long)B * Tk, (long)B * Tk};
    const int ld[GRADS] = {ldq, ldkv, ldkv};
    const int C = H * Dh;
    WideViews g = {.count = 0};
    int view_of[GRADS];
    for (int i = 0; i < GRADS; i++) {
        view_of[i] = grad[i] ? g.count : -1;
        if (grad[i]) views_add(&g, grad[i], view_span(rows[i], ld[i], C));
    }
    if (g.count == 0) return;
    views_place(&g, SCRATCH_GRAD_VIEW, 0);
    float *f32[GRADS];
    for (int i = 0; i < GRADS; i++) f32[i] = grad[i] ? g.wide[view_of[i]] : NULL;
    cpu_attention_bwd_bf16(f32[GRAD_Q], f32[GRAD_K], f32[GRAD_V], dout, q, k, v, out, saved, B,
                           H, Tq, Tk, Dh, ldq, ldkv);
    for (int i = 0; i < GRADS; i++)
        if (grad[i]) narrow_rows(grad[i], f32[i], rows[i], ld[i], C);
}
