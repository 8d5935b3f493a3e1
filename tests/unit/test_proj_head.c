/* The projection head (phi / psi, models/proj_head.c) with both activation types, on the CPU
 * backend:
 *  - fp32 activations: outputs, every intermediate and every gradient BIT-IDENTICAL to the
 *    head's previous formulation, the fp32 op sequence written out here (linear_fwd, gelu_fwd,
 *    ..., gelu_bwd, linear_bwd into buffers of their own), both laid out for training and
 *    forward only (where h2 and h2g share h1's and h1g's memory), and row slices of a
 *    forward-only head (proj_head_rows) equal to the reference's rows;
 *  - bf16 activations: exactly the roundings the mixed-precision contract (ops/backend.h)
 *    names, checked against a double-precision host reference that applies them (x, every
 *    GEMM's weight and dy operand, the bf16 outputs h1 .. h2g and the bias of a bf16 output,
 *    rounded to bf16; b, bn, z, norms and all gradients unrounded), and against the fp32 head
 *    within the tolerances of the bf16 model tests (test_bf16_model: a bf16 value is off by at
 *    most 2^-9 relative, a handful of roundings along each path);
 *  - the arena: the bf16 layout saves exactly the hand-computed bytes;
 *  - norm_last (DINO's weight-normalised last layer): z against a double-precision
 *    reference of bn W_k^T / ||W_k||, and last's weight gradient against central finite
 *    differences of <dz, z> in double; up to bn the plain head, bit for bit. */
#include <string.h>

#include "core/check.h"
#include "models/proj_head.h"
#include "nn/layers.h"
#include "bf16_ref.h"
#include "gelu_ref.h"
#include "test.h"

enum { ROWS = 37, IN = 20, HIDDEN = 48, BOTTLENECK = 12, OUT = 16, SLICE_FIRST = 11,
       SLICE_ROWS = 17, ARENA_ALIGN_BYTES = 256 };

typedef struct {
    const AliceBackend *be;
    ProjHead head;
    ParamSet ps;
    float *x, *dz;   /* backend memory: the head's input and the gradient w.r.t. z */
} Fixture;

static void fixture_init_head(Fixture *f, int norm_last)
{
    f->be = backend_cpu();
    params_init_registry(&f->ps);
    proj_head_register(&f->head, &f->ps, "head", IN, HIDDEN, BOTTLENECK, OUT, norm_last, 0);
    params_allocate(&f->ps, f->be, 1);
    params_initialize(&f->ps, 7);
    /* Biases at zero would leave their rounding (bf16 outputs) untested: small random ones. */
    const int biases[3] = {f->head.fc1_b, f->head.fc2_b, f->head.fc3_b};
    for (int i = 0; i < 3; i++) {
        const ParamInfo *info = &f->ps.info[biases[i]];
        float *b = test_randn(31, (uint32_t)i, info->numel, 0.1f);
        f->be->upload(param(&f->ps, biases[i]), b, info->numel * sizeof(float));
        free(b);
    }
    float *x = test_randn(32, 0, (size_t)ROWS * IN, 1.0f);
    float *dz = test_randn(32, 1, (size_t)ROWS * OUT, 0.1f);
    f->x = f->be->alloc((size_t)ROWS * IN * sizeof(float));
    f->dz = f->be->alloc((size_t)ROWS * OUT * sizeof(float));
    f->be->upload(f->x, x, (size_t)ROWS * IN * sizeof(float));
    f->be->upload(f->dz, dz, (size_t)ROWS * OUT * sizeof(float));
    free(x);
    free(dz);
}

/* The plain last layer (head_norm_last = 0), which the fp32 and bf16 tests below pin. */
static void fixture_init(Fixture *f) { fixture_init_head(f, 0); }

static void fixture_free(Fixture *f)
{
    f->be->release(f->x);
    f->be->release(f->dz);
    params_free(&f->ps);
}

static float *download(const AliceBackend *be, const void *src, size_t floats)
{
    float *h = xmalloc(floats * sizeof(float));
    be->download(h, src, floats * sizeof(float));
    return h;
}

static float *grads(const Fixture *f) { return download(f->be, f->ps.grad, f->ps.total); }

/* The head's activations in an arena of their own (act type t). */
static void head_layout(const Fixture *f, Arena *ar, ProjHeadActs *a, DType t, int train)
{
    arena_plan(ar, f->be, t);
    proj_head_layout(&f->head, a, ar, ROWS, train);
    arena_commit(ar);
    proj_head_layout(&f->head, a, ar, ROWS, train);
}

/* ------------------------------------------------------------------ fp32: the old sequence */

typedef struct {
    float *h1, *h1g, *h2, *h2g, *b, *bn, *norms, *z;
    float *dbn, *db, *dh2g, *dh2, *dh1g, *dh1, *dx;
} OldActs;

/* The head as it was before bf16 activations, fp32 ops into separate buffers; grads
 * accumulate into f->ps.grad. */
static void old_head(const Fixture *f, OldActs *o, int backward)
{
    const AliceBackend *be = f->be;
    const ProjHead *h = &f->head;
    ParamSet *ps = (ParamSet *)&f->ps;
    const size_t R = ROWS;
    float **bufs[] = {&o->h1, &o->h1g, &o->h2, &o->h2g, &o->dh2g, &o->dh2, &o->dh1g, &o->dh1};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        *bufs[i] = be->alloc(R * HIDDEN * sizeof(float));
    o->b = be->alloc(R * BOTTLENECK * sizeof(float));
    o->bn = be->alloc(R * BOTTLENECK * sizeof(float));
    o->dbn = be->alloc(R * BOTTLENECK * sizeof(float));
    o->db = be->alloc(R * BOTTLENECK * sizeof(float));
    o->norms = be->alloc(R * sizeof(float));
    o->z = be->alloc(R * OUT * sizeof(float));
    o->dx = be->alloc(R * IN * sizeof(float));
    linear_forward(ps, h->fc1_w, h->fc1_b, o->h1, f->x, ROWS, IN, HIDDEN);
    be->gelu_fwd(o->h1g, o->h1, R * HIDDEN);
    linear_forward(ps, h->fc2_w, h->fc2_b, o->h2, o->h1g, ROWS, HIDDEN, HIDDEN);
    be->gelu_fwd(o->h2g, o->h2, R * HIDDEN);
    linear_forward(ps, h->fc3_w, h->fc3_b, o->b, o->h2g, ROWS, HIDDEN, BOTTLENECK);
    be->l2norm_fwd(o->bn, o->norms, o->b, ROWS, BOTTLENECK, HEAD_L2_EPS);
    linear_forward(ps, h->last_w, NO_PARAM, o->z, o->bn, ROWS, BOTTLENECK, OUT);
    if (!backward) return;
    linear_backward(ps, h->last_w, NO_PARAM, o->dbn, f->dz, o->bn, ROWS, BOTTLENECK, OUT);
    be->l2norm_bwd(o->db, o->dbn, o->b, o->norms, ROWS, BOTTLENECK, HEAD_L2_EPS);
    linear_backward(ps, h->fc3_w, h->fc3_b, o->dh2g, o->db, o->h2g, ROWS, HIDDEN, BOTTLENECK);
    be->gelu_bwd(o->dh2, o->dh2g, o->h2, R * HIDDEN);
    linear_backward(ps, h->fc2_w, h->fc2_b, o->dh1g, o->dh2, o->h1g, ROWS, HIDDEN, HIDDEN);
    be->gelu_bwd(o->dh1, o->dh1g, o->h1, R * HIDDEN);
    linear_backward(ps, h->fc1_w, h->fc1_b, o->dx, o->dh1, f->x, ROWS, IN, HIDDEN);
}

static void old_free(const Fixture *f, OldActs *o)
{
    float *all[] = {o->h1, o->h1g, o->h2, o->h2g, o->b, o->bn, o->norms, o->z,
                    o->dbn, o->db, o->dh2g, o->dh2, o->dh1g, o->dh1, o->dx};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) f->be->release(all[i]);
}

static void same_bits(const AliceBackend *be, const void *got, const void *ref, size_t n,
                      const char *what)
{
    float *g = download(be, got, n), *r = download(be, ref, n);
    const size_t bad = differing_bits(g, r, n);
    TEST_CHECK(bad == 0, "%s: %zu of %zu values differ in their bits from the fp32 op sequence",
               what, bad, n);
    free(g);
    free(r);
}

static int test_fp32_bit_identical(void)
{
    Fixture f;
    fixture_init(&f);
    const AliceBackend *be = f.be;
    const size_t RH = (size_t)ROWS * HIDDEN;
    OldActs o;
    old_head(&f, &o, 1);
    float *ref_grad = grads(&f);
    be->fill(f.ps.grad, 0.0f, f.ps.total);

    Arena ar;
    ProjHeadActs a;
    head_layout(&f, &ar, &a, DTYPE_F32, 1);
    TEST_CHECK(a.x16.p == NULL && a.h1.type == DTYPE_F32, "fp32 layout: no bf16 input copy");
    proj_head_forward(&f.head, &a, &f.ps, f.x);
    be->copy(a.dz, f.dz, (size_t)ROWS * OUT * sizeof(float));
    proj_head_backward(&f.head, &a, &f.ps, f.x);
    same_bits(be, a.h1.p, o.h1, RH, "h1");
    same_bits(be, a.h1g.p, o.h1g, RH, "h1g");
    same_bits(be, a.h2.p, o.h2, RH, "h2");
    same_bits(be, a.h2g.p, o.h2g, RH, "h2g");
    same_bits(be, a.b, o.b, (size_t)ROWS * BOTTLENECK, "b");
    same_bits(be, a.bn, o.bn, (size_t)ROWS * BOTTLENECK, "bn");
    same_bits(be, a.norms, o.norms, ROWS, "norms");
    same_bits(be, a.z, o.z, (size_t)ROWS * OUT, "z");
    same_bits(be, a.dh1g, o.dh1g, RH, "dh1g");
    same_bits(be, a.dx, o.dx, (size_t)ROWS * IN, "dx");
    float *got_grad = grads(&f);
    TEST_CHECK(differing_bits(got_grad, ref_grad, f.ps.total) == 0,
               "parameter gradients differ in their bits from the fp32 op sequence");
    free(got_grad);
    arena_free(&ar);

    /* Forward only (psi): z and its slices. */
    head_layout(&f, &ar, &a, DTYPE_F32, 0);
    TEST_CHECK(a.h2.p == a.h1.p && a.h2g.p == a.h1g.p, "forward only: h2, h2g reuse h1, h1g");
    proj_head_forward(&f.head, &a, &f.ps, f.x);
    same_bits(be, a.z, o.z, (size_t)ROWS * OUT, "forward-only z");
    same_bits(be, a.h2g.p, o.h2g, RH, "forward-only h2g");
    same_bits(be, a.bn, o.bn, (size_t)ROWS * BOTTLENECK, "forward-only bn");
    ProjHeadActs s = proj_head_rows(&f.head, &a, SLICE_FIRST, SLICE_ROWS);
    TEST_CHECK(s.rows == SLICE_ROWS && !s.train, "slice: %d rows, train %d", s.rows, s.train);
    same_bits(be, s.z, o.z + (size_t)SLICE_FIRST * OUT, (size_t)SLICE_ROWS * OUT, "slice z");
    same_bits(be, s.h2g.p, o.h2g + (size_t)SLICE_FIRST * HIDDEN, (size_t)SLICE_ROWS * HIDDEN,
              "slice h2g");
    same_bits(be, s.bn, o.bn + (size_t)SLICE_FIRST * BOTTLENECK,
              (size_t)SLICE_ROWS * BOTTLENECK, "slice bn");
    same_bits(be, s.norms, o.norms + SLICE_FIRST, SLICE_ROWS, "slice norms");
    arena_free(&ar);
    free(ref_grad);
    old_free(&f, &o);
    fixture_free(&f);
    return 0;
}

/* ------------------------------------------------------------------ bf16: host reference */

static double rb(double v) { return bf16_value(bf16_reference_round((float)v)); }

static double *rounded_copy(const float *v, size_t n)
{
    double *r = xmalloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) r[i] = rb(v[i]);
    return r;
}

/* y[r, o] = sum_i x[r, i] W[o, i] + b[o] (b may be NULL) */
static void ref_linear(double *y, const double *x, const double *W, const double *b, int rows,
                       int in, int out)
{
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < out; o++) {
            double s = b ? b[o] : 0.0;
            for (int i = 0; i < in; i++) s += x[(size_t)r * in + i] * W[(size_t)o * in + i];
            y[(size_t)r * out + o] = s;
        }
}

/* dx = dy W; dW = dy^T x; db = column sums of dy_sum (the unrounded dy). */
static void ref_linear_bwd(double *dx, double *dW, double *db, const double *dy,
                           const double *dy_sum, const double *x, const double *W, int rows,
                           int in, int out)
{
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < in; i++) {
            double s = 0;
            for (int o = 0; o < out; o++) s += dy[(size_t)r * out + o] * W[(size_t)o * in + i];
            dx[(size_t)r * in + i] = s;
        }
    for (int o = 0; o < out; o++) {
        for (int i = 0; i < in; i++) {
            double s = 0;
            for (int r = 0; r < rows; r++) s += dy[(size_t)r * out + o] * x[(size_t)r * in + i];
            dW[(size_t)o * in + i] = s;
        }
        if (db) {
            double s = 0;
            for (int r = 0; r < rows; r++) s += dy_sum[(size_t)r * out + o];
            db[o] = s;
        }
    }
}

typedef struct {
    double *h1, *h1g, *h2, *h2g, *b, *bn, *z, *dx;
    double *grad[7];   /* fc1_w, fc1_b, fc2_w, fc2_b, fc3_w, fc3_b, last_w */
} RefBf16;

enum { G_FC1_W, G_FC1_B, G_FC2_W, G_FC2_B, G_FC3_W, G_FC3_B, G_LAST_W, G_COUNT };

static double *dalloc(size_t n) { return xcalloc(n, sizeof(double)); }

static double *rounded_vec(const double *v, size_t n)
{
    double *r = dalloc(n);
    for (size_t i = 0; i < n; i++) r[i] = rb(v[i]);
    return r;
}

/* The bf16-activation head by the contract: GEMM operands (x, weights, dy) in bf16, bf16
 * outputs (with their bias rounded first) rounded once, everything else exact. */
static void ref_bf16(const Fixture *f, RefBf16 *r)
{
    const ProjHead *h = &f->head;
    const ParamSet *ps = &f->ps;
    const size_t R = ROWS, RH = R * HIDDEN, RB = R * BOTTLENECK;
    float *x = download(f->be, f->x, R * IN), *dzf = download(f->be, f->dz, R * OUT);
    float *pw = download(f->be, ps->data, ps->total);
#define P(idx) (pw + ps->info[idx].offset)
    double *x16 = rounded_copy(x, R * IN);
    double *W1 = rounded_copy(P(h->fc1_w), (size_t)HIDDEN * IN);
    double *W2 = rounded_copy(P(h->fc2_w), (size_t)HIDDEN * HIDDEN);
    double *W3 = rounded_copy(P(h->fc3_w), (size_t)BOTTLENECK * HIDDEN);
    double *b1 = rounded_copy(P(h->fc1_b), HIDDEN), *b2 = rounded_copy(P(h->fc2_b), HIDDEN);
    double *b3 = dalloc(BOTTLENECK), *Wl = dalloc((size_t)OUT * BOTTLENECK), *dz = dalloc(R * OUT);
    for (int o = 0; o < BOTTLENECK; o++) b3[o] = P(h->fc3_b)[o];     /* fp32 output: exact */
    for (size_t i = 0; i < (size_t)OUT * BOTTLENECK; i++) Wl[i] = P(h->last_w)[i];  /* fp32 op */
    for (size_t i = 0; i < R * OUT; i++) dz[i] = dzf[i];
#undef P
    r->h1 = dalloc(RH); r->h1g = dalloc(RH); r->h2 = dalloc(RH); r->h2g = dalloc(RH);
    r->b = dalloc(RB); r->bn = dalloc(RB); r->z = dalloc(R * OUT); r->dx = dalloc(R * IN);
    ref_linear(r->h1, x16, W1, b1, ROWS, IN, HIDDEN);
    for (size_t i = 0; i < RH; i++) r->h1[i] = rb(r->h1[i]);
    for (size_t i = 0; i < RH; i++) r->h1g[i] = rb(gelu_exact(r->h1[i]));
    ref_linear(r->h2, r->h1g, W2, b2, ROWS, HIDDEN, HIDDEN);
    for (size_t i = 0; i < RH; i++) r->h2[i] = rb(r->h2[i]);
    for (size_t i = 0; i < RH; i++) r->h2g[i] = rb(gelu_exact(r->h2[i]));
    ref_linear(r->b, r->h2g, W3, b3, ROWS, HIDDEN, BOTTLENECK);
    double *norms = dalloc(R);
    for (size_t i = 0; i < R; i++) {
        double s = 0;
        for (int c = 0; c < BOTTLENECK; c++) s += r->b[i * BOTTLENECK + c] * r->b[i * BOTTLENECK + c];
        norms[i] = fmax(sqrt(s), HEAD_L2_EPS);
        for (int c = 0; c < BOTTLENECK; c++) r->bn[i * BOTTLENECK + c] = r->b[i * BOTTLENECK + c] / norms[i];
    }
    ref_linear(r->z, r->bn, Wl, NULL, ROWS, BOTTLENECK, OUT);

    const int sizes[G_COUNT] = {HIDDEN * IN, HIDDEN, HIDDEN * HIDDEN, HIDDEN, BOTTLENECK * HIDDEN,
                                BOTTLENECK, OUT * BOTTLENECK};
    for (int g = 0; g < G_COUNT; g++) r->grad[g] = dalloc((size_t)sizes[g]);
    /* last: the fp32 op, nothing rounded */
    double *dbn = dalloc(RB), *db = dalloc(RB);
    ref_linear_bwd(dbn, r->grad[G_LAST_W], NULL, dz, dz, r->bn, Wl, ROWS, BOTTLENECK, OUT);
    for (size_t i = 0; i < R; i++) {  /* l2norm backward: (dy - y (y . dy)) / norm */
        double dot = 0;
        for (int c = 0; c < BOTTLENECK; c++) dot += r->bn[i * BOTTLENECK + c] * dbn[i * BOTTLENECK + c];
        for (int c = 0; c < BOTTLENECK; c++)
            db[i * BOTTLENECK + c] = (dbn[i * BOTTLENECK + c] - r->bn[i * BOTTLENECK + c] * dot) / norms[i];
    }
    /* fc3 on bf16 h2g: dy rounded for the GEMMs, the bias gradient from the unrounded dy */
    double *dh2g = dalloc(RH), *dh1g = dalloc(RH), *dh = dalloc(RH);
    double *db16 = rounded_vec(db, RB);
    ref_linear_bwd(dh2g, r->grad[G_FC3_W], r->grad[G_FC3_B], db16, db, r->h2g, W3, ROWS, HIDDEN,
                   BOTTLENECK);
    /* fc2 and fc1 through their GELU: dh = dy_act gelu'(h), then as above */
    for (size_t i = 0; i < RH; i++) dh[i] = dh2g[i] * gelu_slope_exact(r->h2[i]);
    double *dh16 = rounded_vec(dh, RH);
    ref_linear_bwd(dh1g, r->grad[G_FC2_W], r->grad[G_FC2_B], dh16, dh, r->h1g, W2, ROWS, HIDDEN,
                   HIDDEN);
    for (size_t i = 0; i < RH; i++) dh[i] = dh1g[i] * gelu_slope_exact(r->h1[i]);
    free(dh16);
    dh16 = rounded_vec(dh, RH);
    ref_linear_bwd(r->dx, r->grad[G_FC1_W], r->grad[G_FC1_B], dh16, dh, x16, W1, ROWS, IN, HIDDEN);
    double *tmp[] = {x16, W1, W2, W3, b1, b2, b3, Wl, dz, norms, dbn, db, dh2g, dh1g, dh, db16, dh16};
    for (size_t i = 0; i < sizeof tmp / sizeof tmp[0]; i++) free(tmp[i]);
    free(x); free(dzf); free(pw);
}

static void ref_free(RefBf16 *r)
{
    double *all[] = {r->h1, r->h1g, r->h2, r->h2g, r->b, r->bn, r->z, r->dx};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
    for (int g = 0; g < G_COUNT; g++) free(r->grad[g]);
}

/* Relative L2 distance of got (fp32 values) to ref. */
static double rel_l2(const float *got, const double *ref, size_t n)
{
    double d = 0, nr = 0;
    for (size_t i = 0; i < n; i++) {
        d += (got[i] - ref[i]) * (got[i] - ref[i]);
        nr += ref[i] * ref[i];
    }
    return nr > 0 ? sqrt(d / nr) : sqrt(d);
}

static double *widened_bf16(const AliceBackend *be, Act a, size_t n)
{
    bf16_t *h = xmalloc(n * sizeof(bf16_t));
    be->download(h, a.p, n * sizeof(bf16_t));
    double *d = dalloc(n);
    for (size_t i = 0; i < n; i++) d[i] = bf16_value(h[i]);
    free(h);
    return d;
}

/* The contract's roundings, up to the order of fp32 sums: a bf16 value that lands within an
 * fp32 sum's error of a rounding midpoint may round the other way (one step of 2^-8 relative in
 * one element), so tensors agree to REF_TOL in L2, far below the error one missing rounding
 * leaves everywhere. Measured: the head agrees to under 4e-6; a reference that leaves only x
 * unrounded is 3e-3 to 6e-3 away in every tensor, the fp32 head about 5e-3. */
#define REF_TOL 5e-4

static void check_bf16_tensor(const AliceBackend *be, Act got, const double *ref, size_t n,
                              const char *what)
{
    TEST_CHECK(got.type == DTYPE_BF16, "%s: expected a bf16 tensor", what);
    double *g = widened_bf16(be, got, n);
    double d = 0, nr = 0;
    for (size_t i = 0; i < n; i++) {
        d += (g[i] - ref[i]) * (g[i] - ref[i]);
        nr += ref[i] * ref[i];
    }
    const double rel = sqrt(d / nr);
    TEST_CHECK(rel <= REF_TOL, "%s: %.3g relative L2 from the bf16 reference (allowed %g)", what,
               rel, REF_TOL);
    free(g);
}

static void check_f32_tensor(const AliceBackend *be, const float *got, const double *ref,
                             size_t n, const char *what)
{
    float *g = download(be, got, n);
    const double rel = rel_l2(g, ref, n);
    TEST_CHECK(rel <= REF_TOL, "%s: %.3g relative L2 from the bf16 reference (allowed %g)", what,
               rel, REF_TOL);
    printf("    %-8s %.2e from the bf16 reference\n", what, rel);
    free(g);
}

static int test_bf16_contract(void)
{
    Fixture f;
    fixture_init(&f);
    const AliceBackend *be = f.be;
    const size_t RH = (size_t)ROWS * HIDDEN;
    RefBf16 r;
    ref_bf16(&f, &r);
    Arena ar;
    ProjHeadActs a;
    head_layout(&f, &ar, &a, DTYPE_BF16, 1);
    proj_head_forward(&f.head, &a, &f.ps, f.x);
    be->copy(a.dz, f.dz, (size_t)ROWS * OUT * sizeof(float));
    proj_head_backward(&f.head, &a, &f.ps, f.x);
    check_bf16_tensor(be, a.h1, r.h1, RH, "h1");
    check_bf16_tensor(be, a.h1g, r.h1g, RH, "h1g");
    check_bf16_tensor(be, a.h2, r.h2, RH, "h2");
    check_bf16_tensor(be, a.h2g, r.h2g, RH, "h2g");
    check_f32_tensor(be, a.b, r.b, (size_t)ROWS * BOTTLENECK, "b");
    check_f32_tensor(be, a.z, r.z, (size_t)ROWS * OUT, "z");
    check_f32_tensor(be, a.dx, r.dx, (size_t)ROWS * IN, "dx");
    const struct { int idx; int g; const char *name; } tensors[G_COUNT] = {
        {f.head.fc1_w, G_FC1_W, "dfc1.w"}, {f.head.fc1_b, G_FC1_B, "dfc1.b"},
        {f.head.fc2_w, G_FC2_W, "dfc2.w"}, {f.head.fc2_b, G_FC2_B, "dfc2.b"},
        {f.head.fc3_w, G_FC3_W, "dfc3.w"}, {f.head.fc3_b, G_FC3_B, "dfc3.b"},
        {f.head.last_w, G_LAST_W, "dlast.w"}};
    for (int t = 0; t < G_COUNT; t++)
        check_f32_tensor(be, param_grad(&f.ps, tensors[t].idx), r.grad[tensors[t].g],
                         f.ps.info[tensors[t].idx].numel, tensors[t].name);
    arena_free(&ar);

    /* Forward only (psi) with bf16 activations, and its row slices. */
    head_layout(&f, &ar, &a, DTYPE_BF16, 0);
    proj_head_forward(&f.head, &a, &f.ps, f.x);
    check_f32_tensor(be, a.z, r.z, (size_t)ROWS * OUT, "fwd z");
    check_bf16_tensor(be, a.h2g, r.h2g, RH, "fwd h2g");
    ProjHeadActs s = proj_head_rows(&f.head, &a, SLICE_FIRST, SLICE_ROWS);
    TEST_CHECK((char *)s.h2g.p == (char *)a.h2g.p + (size_t)SLICE_FIRST * HIDDEN * sizeof(bf16_t) &&
               s.h2g.type == DTYPE_BF16, "slice of bf16 h2g: offset in bf16 elements");
    check_bf16_tensor(be, s.h2g, r.h2g + (size_t)SLICE_FIRST * HIDDEN, (size_t)SLICE_ROWS * HIDDEN,
                      "slice h2g");
    TEST_CHECK(s.x16.type == DTYPE_BF16 &&
               (char *)s.x16.p == (char *)a.x16.p + (size_t)SLICE_FIRST * IN * sizeof(bf16_t),
               "slice of the bf16 input copy: offset in bf16 elements");
    check_f32_tensor(be, s.z, r.z + (size_t)SLICE_FIRST * OUT, (size_t)SLICE_ROWS * OUT, "slice z");
    arena_free(&ar);
    ref_free(&r);
    fixture_free(&f);
    return 0;
}

/* ------------------------------------------------------------------ bf16 against fp32 */

/* Relative L2 and cosine of got against ref (both fp32). */
static void compare_f32(const float *got, const float *ref, size_t n, double max_rel,
                        double min_cos, const char *what)
{
    double d = 0, nr = 0, ng = 0, dot = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]);
        nr += (double)ref[i] * ref[i];
        ng += (double)got[i] * got[i];
        dot += (double)got[i] * ref[i];
    }
    const double rel = sqrt(d / nr), cosv = dot / sqrt(nr * ng);
    printf("    %-8s bf16 vs fp32: %.2e relative, cosine %.6f\n", what, rel, cosv);
    TEST_CHECK(rel <= max_rel && cosv >= min_cos, "%s: bf16 %.3g relative from fp32 (allowed "
               "%g), cosine %.5f (at least %g)", what, rel, max_rel, cosv, min_cos);
}

static int test_bf16_vs_fp32(void)
{
    Fixture f;
    fixture_init(&f);
    const AliceBackend *be = f.be;
    float *out[2][2];   /* [type][z, dx] */
    float *g[2];
    const DType types[2] = {DTYPE_F32, DTYPE_BF16};
    for (int t = 0; t < 2; t++) {
        Arena ar;
        ProjHeadActs a;
        be->fill(f.ps.grad, 0.0f, f.ps.total);
        head_layout(&f, &ar, &a, types[t], 1);
        proj_head_forward(&f.head, &a, &f.ps, f.x);
        be->copy(a.dz, f.dz, (size_t)ROWS * OUT * sizeof(float));
        proj_head_backward(&f.head, &a, &f.ps, f.x);
        out[t][0] = download(be, a.z, (size_t)ROWS * OUT);
        out[t][1] = download(be, a.dx, (size_t)ROWS * IN);
        g[t] = grads(&f);
        arena_free(&ar);
    }
    /* test_bf16_model's bounds: outputs within 2%, gradients within 5% with cosine 0.995 */
    compare_f32(out[1][0], out[0][0], (size_t)ROWS * OUT, 2e-2, 0.9998, "z");
    compare_f32(out[1][1], out[0][1], (size_t)ROWS * IN, 5e-2, 0.995, "dx");
    for (int t = 0; t < f.ps.count; t++) {
        const ParamInfo *info = &f.ps.info[t];
        compare_f32(g[1] + info->offset, g[0] + info->offset, info->numel, 5e-2, 0.995,
                    info->name);
    }
    for (int t = 0; t < 2; t++) { free(out[t][0]); free(out[t][1]); free(g[t]); }
    fixture_free(&f);
    return 0;
}

/* ------------------------------------------------------------------ arena */

static size_t aligned(size_t bytes)
{
    return (bytes + ARENA_ALIGN_BYTES - 1) / ARENA_ALIGN_BYTES * ARENA_ALIGN_BYTES;
}

static size_t head_bytes(const Fixture *f, DType t, int train)
{
    Arena ar;
    ProjHeadActs a;
    arena_plan(&ar, f->be, t);
    proj_head_layout(&f->head, &a, &ar, ROWS, train);
    return ar.used;
}

static int test_arena_sizes(void)
{
    Fixture f;
    fixture_init(&f);
    const size_t RH = (size_t)ROWS * HIDDEN;
    /* bf16: the hidden tensors (four in training, two forward only) at 2 bytes instead of 4,
     * plus the input's bf16 copy */
    const size_t per_hidden = aligned(RH * 4) - aligned(RH * 2), x16 = aligned((size_t)ROWS * IN * 2);
    for (int train = 0; train <= 1; train++) {
        const size_t f32 = head_bytes(&f, DTYPE_F32, train), b16 = head_bytes(&f, DTYPE_BF16, train);
        const size_t expect = (train ? 4 : 2) * per_hidden - x16;
        TEST_CHECK(f32 - b16 == expect, "train %d: bf16 layout saves %zu bytes, expected %zu",
                   train, f32 - b16, expect);
    }
    /* fp32 forward only: four hidden tensors fewer than training's eight, which have the
     * training scratch on top */
    const size_t fwd = head_bytes(&f, DTYPE_F32, 0);
    const size_t expect_fwd = 2 * aligned(RH * 4) + 2 * aligned((size_t)ROWS * BOTTLENECK * 4) +
                              aligned((size_t)ROWS * 4) + aligned((size_t)ROWS * OUT * 4);
    TEST_CHECK(fwd == expect_fwd, "fp32 forward-only head: %zu bytes, expected %zu", fwd,
               expect_fwd);
    fixture_free(&f);
    return 0;
}

/* ------------------------------------------------------------------ norm_last */

/* <dz, z> with z = bn Wn^T, Wn the rows of W over their l2 norms; all in double. */
static double weight_normed_dot(const float *bn, const double *W, const float *dz)
{
    double total = 0;
    for (int o = 0; o < OUT; o++) {
        double nrm = 0;
        for (int c = 0; c < BOTTLENECK; c++) nrm += W[o * BOTTLENECK + c] * W[o * BOTTLENECK + c];
        nrm = sqrt(nrm);
        for (int r = 0; r < ROWS; r++) {
            double zr = 0;
            for (int c = 0; c < BOTTLENECK; c++)
                zr += (double)bn[(size_t)r * BOTTLENECK + c] * W[o * BOTTLENECK + c] / nrm;
            total += zr * dz[(size_t)r * OUT + o];
        }
    }
    return total;
}

static int test_norm_last(void)
{
    Fixture f, plain;
    fixture_init_head(&f, 1);
    fixture_init(&plain);   /* the same seed: the same initial weights */
    const AliceBackend *be = f.be;
    const size_t last_n = (size_t)OUT * BOTTLENECK;
    Arena ar, ar_plain;
    ProjHeadActs a, p;
    head_layout(&f, &ar, &a, DTYPE_F32, 1);
    head_layout(&plain, &ar_plain, &p, DTYPE_F32, 1);
    TEST_CHECK(a.w_unit && a.dw_unit && !p.w_unit, "norm_last lays out the normalised weight");
    proj_head_forward(&f.head, &a, &f.ps, f.x);
    be->copy(a.dz, f.dz, (size_t)ROWS * OUT * sizeof(float));
    proj_head_backward(&f.head, &a, &f.ps, f.x);
    proj_head_forward(&plain.head, &p, &plain.ps, plain.x);
    be->copy(p.dz, plain.dz, (size_t)ROWS * OUT * sizeof(float));
    proj_head_backward(&plain.head, &p, &plain.ps, plain.x);

    float *bn = download(be, a.bn, (size_t)ROWS * BOTTLENECK);
    float *z = download(be, a.z, (size_t)ROWS * OUT);
    float *dz = download(be, f.dz, (size_t)ROWS * OUT);
    float *w = download(be, param(&f.ps, f.head.last_w), last_n);
    float *gw = download(be, param_grad(&f.ps, f.head.last_w), last_n);
    double *W = dalloc(last_n);
    for (size_t i = 0; i < last_n; i++) W[i] = w[i];
    /* z: every logit of a unit row against a unit bn lies in [-1, 1] */
    double zmax = 0, zerr = 0;
    for (int r = 0; r < ROWS; r++)
        for (int o = 0; o < OUT; o++) {
            double nrm = 0, s = 0;
            for (int c = 0; c < BOTTLENECK; c++) {
                nrm += W[o * BOTTLENECK + c] * W[o * BOTTLENECK + c];
                s += (double)bn[(size_t)r * BOTTLENECK + c] * W[o * BOTTLENECK + c];
            }
            const double ref = s / sqrt(nrm);
            zerr = fmax(zerr, fabs(z[(size_t)r * OUT + o] - ref));
            zmax = fmax(zmax, fabs(z[(size_t)r * OUT + o]));
        }
    TEST_CHECK(zerr < 1e-6, "norm_last z: %.3g from the double reference", zerr);
    TEST_CHECK(zmax <= 1.0 + 1e-6, "norm_last z: |z| up to %.6f, bounded by 1", zmax);
    /* d<dz, z>/dW by central differences in double, against the backend's gradient */
    double gerr = 0, gscale = 0;
    for (size_t i = 0; i < last_n; i++) {
        const double h = 1e-6 * fmax(fabs(W[i]), 1e-3), keep = W[i];
        W[i] = keep + h;
        const double up = weight_normed_dot(bn, W, dz);
        W[i] = keep - h;
        const double down = weight_normed_dot(bn, W, dz);
        W[i] = keep;
        const double fd = (up - down) / (2 * h);
        gerr = fmax(gerr, fabs(gw[i] - fd));
        gscale = fmax(gscale, fabs(fd));
    }
    printf("    norm_last: z %.2e from double, dW %.2e of max %.3g from finite differences\n",
           zerr, gerr, gscale);
    TEST_CHECK(gerr <= 1e-4 * gscale, "norm_last dW: %.3g from finite differences (max %.3g)",
               gerr, gscale);
    /* Upstream of last the head is the plain one: the same forward up to bn, bit for bit */
    same_bits(be, a.bn, p.bn, (size_t)ROWS * BOTTLENECK, "norm_last bn");
    /* the forward-only head (psi) normalises the same way */
    Arena ar_fwd;
    ProjHeadActs q;
    head_layout(&f, &ar_fwd, &q, DTYPE_F32, 0);
    proj_head_forward(&f.head, &q, &f.ps, f.x);
    same_bits(be, q.z, a.z, (size_t)ROWS * OUT, "norm_last forward-only z");
    ProjHeadActs s = proj_head_rows(&f.head, &q, SLICE_FIRST, SLICE_ROWS);
    TEST_CHECK(s.w_unit == q.w_unit, "a slice shares the normalised weight");
    arena_free(&ar_fwd);
    free(W);
    free(bn); free(z); free(dz); free(w); free(gw);
    arena_free(&ar);
    arena_free(&ar_plain);
    fixture_free(&plain);
    fixture_free(&f);
    return 0;
}

int main(void)
{
    TEST_RUN(test_fp32_bit_identical);
    TEST_RUN(test_bf16_contract);
    TEST_RUN(test_bf16_vs_fp32);
    TEST_RUN(test_arena_sizes);
    TEST_RUN(test_norm_last);
    return test_finish();
}
