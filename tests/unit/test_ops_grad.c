/* Finite-difference gradient check of every differentiable op of the CPU backend.
 *
 * Method: a scalar L = sum(out * R) with a fixed random R (the product summed in double; for
 * ops that return a loss, L is that loss times LOSS_GAIN). The analytic gradient is the op's
 * backward with dy = R (or scale = LOSS_GAIN); each input entry x_i (all of them, or an evenly
 * spaced sample of MAX_PROBES when the tensor is larger) is compared with the central
 * difference (L(x_i + h) - L(x_i - h)) / (2h), forward passes in float.
 *
 * Tolerance, per entry: |analytic - fd| <= FD_ATOL + FD_RTOL * |fd|, FD_RTOL = 2e-2,
 * FD_ATOL = 1e-3, with h = FD_EPS = 1e-2 (leaky ReLU: 1e-3 with inputs kept 0.1 away from the
 * kink). Ops with parameters are also checked for the backend.h contract: running backward a
 * second time doubles parameter gradients (accumulate) and reproduces input gradients
 * (overwrite) even when the input-gradient buffer held garbage. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/rng.h"
#include "ops/backend.h"
#include "test.h"

#define FD_RTOL 2e-2
#define FD_ATOL 1e-3
#define FD_EPS 1e-2f
#define MAX_PROBES 80
#define LOSS_GAIN 10.0f
/* What an overwritten input-gradient buffer holds before backward: must not survive. */
#define GARBAGE 1e30f

static const AliceBackend *be;
static uint32_t next_stream = 1;

static float *randn(size_t n, float scale) { return test_randn(20230601, next_stream++, n, scale); }

static float *filled(size_t n, float v) { return test_filled(n, v); }

static double dot_r(const float *y, const float *r, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)y[i] * r[i];
    return s;
}

typedef double (*LossFn)(void);

/* Compares analytic[i] with the central difference of loss() in x[i]. */
static void check_grad_eps(const char *what, LossFn loss, float *x, size_t n,
                           const float *analytic, float eps)
{
    size_t stride = n > MAX_PROBES ? (n + MAX_PROBES - 1) / MAX_PROBES : 1;
    double worst = 0.0, worst_a = 0.0, worst_fd = 0.0;
    size_t worst_i = 0;
    for (size_t i = 0; i < n; i += stride) {
        float saved = x[i];
        float up = saved + eps, down = saved - eps;
        x[i] = up;
        double lp = loss();
        x[i] = down;
        double lm = loss();
        x[i] = saved;
        double fd = (lp - lm) / ((double)up - (double)down);
        double ratio = fabs(analytic[i] - fd) / (FD_ATOL + FD_RTOL * fabs(fd));
        if (!(ratio <= worst)) {
            worst = ratio;
            worst_i = i;
            worst_a = analytic[i];
            worst_fd = fd;
        }
    }
    TEST_CHECK(worst <= 1.0, "%s: entry %zu analytic %.7g vs finite difference %.7g", what,
               worst_i, worst_a, worst_fd);
}

static void check_grad(const char *what, LossFn loss, float *x, size_t n, const float *analytic)
{
    check_grad_eps(what, loss, x, n, analytic, FD_EPS);
}

/* After a second backward: parameter gradients doubled, input gradients unchanged. */
static void check_doubled(const char *what, const float *twice, const float *once, size_t n)
{
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs(twice[i] - 2.0 * once[i]) / (1e-6 + 1e-5 * fabs(2.0 * once[i]));
        if (!(err <= worst)) worst = err;
    }
    TEST_CHECK(worst <= 1.0, "%s: a second backward did not add to the parameter gradient", what);
}

static void check_same(const char *what, const float *a, const float *b, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += !(fabsf(a[i] - b[i]) <= 1e-6f + 1e-5f * fabsf(b[i]));
    TEST_CHECK(bad == 0, "%s: %zu of %zu input-gradient entries depend on the buffer's previous "
               "content (backward must overwrite)", what, bad, n);
}

/* ------------------------------------------------------------------ linear and gemm */

static struct { int rows, in, out; float *x, *W, *b, *y, *R; } lin;

static double loss_linear(void)
{
    be->linear_fwd(lin.y, lin.x, lin.W, lin.b, lin.rows, lin.in, lin.out);
    return dot_r(lin.y, lin.R, (size_t)lin.rows * lin.out);
}

static int test_linear(void)
{
    lin.rows = 5, lin.in = 7, lin.out = 4;
    size_t nx = (size_t)lin.rows * lin.in, nw = (size_t)lin.out * lin.in, ny = (size_t)lin.rows * lin.out;
    lin.x = randn(nx, 1), lin.W = randn(nw, 0.5f), lin.b = randn(lin.out, 1);
    lin.y = filled(ny, 0), lin.R = randn(ny, 1);
    float *dx = filled(nx, GARBAGE), *dW = filled(nw, 0), *db = filled(lin.out, 0);
    be->linear_bwd(dx, dW, db, lin.R, lin.x, lin.W, lin.rows, lin.in, lin.out);
    check_grad("linear dx", loss_linear, lin.x, nx, dx);
    check_grad("linear dW", loss_linear, lin.W, nw, dW);
    check_grad("linear db", loss_linear, lin.b, lin.out, db);
    float *dx2 = filled(nx, GARBAGE), *dW1 = test_copy(dW, nw), *db1 = test_copy(db, lin.out);
    be->linear_bwd(dx2, dW, db, lin.R, lin.x, lin.W, lin.rows, lin.in, lin.out);
    check_same("linear dx", dx2, dx, nx);
    check_doubled("linear dW", dW, dW1, nw);
    check_doubled("linear db", db, db1, lin.out);
    /* NULL gradients are skipped */
    be->linear_bwd(NULL, NULL, db, lin.R, lin.x, lin.W, lin.rows, lin.in, lin.out);
    /* without bias */
    lin.b = NULL;
    float *dx3 = filled(nx, GARBAGE);
    be->linear_bwd(dx3, NULL, NULL, lin.R, lin.x, lin.W, lin.rows, lin.in, lin.out);
    check_grad("linear (no bias) dx", loss_linear, lin.x, nx, dx3);
    free(lin.x), free(lin.W), free(lin.y), free(lin.R), free(dx), free(dW), free(db), free(dx2);
    free(dW1), free(db1), free(dx3);
    return 0;
}

static struct { int tA, tB, M, N, K, batch, lda, ldb; long sA, sB; float alpha; float *A, *B, *C, *R; } gm;

static double loss_gemm(void)
{
    be->gemm(gm.tA, gm.tB, gm.M, gm.N, gm.K, gm.alpha, gm.A, gm.lda, gm.sA, gm.B, gm.ldb, gm.sB,
             0.0f, gm.C, gm.N, (long)gm.M * gm.N, gm.batch);
    return dot_r(gm.C, gm.R, (size_t)gm.batch * gm.M * gm.N);
}

/* The gradients of a GEMM are GEMMs: this checks that every transpose combination of the op
 * computes the product it claims, through the backward formulas model code uses. */
static int test_gemm_transposes(void)
{
    gm.M = 3, gm.N = 4, gm.K = 5, gm.batch = 2, gm.alpha = 0.7f;
    for (gm.tA = 0; gm.tA < 2; gm.tA++)
        for (gm.tB = 0; gm.tB < 2; gm.tB++) {
            int M = gm.M, N = gm.N, K = gm.K;
            gm.lda = gm.tA ? M : K;   /* A stored K x M when transposed */
            gm.ldb = gm.tB ? K : N;   /* B stored N x K when transposed */
            gm.sA = (long)M * K, gm.sB = (long)K * N;
            size_t nA = (size_t)gm.batch * M * K, nB = (size_t)gm.batch * K * N, nC = (size_t)gm.batch * M * N;
            gm.A = randn(nA, 1), gm.B = randn(nB, 1), gm.C = filled(nC, 0), gm.R = randn(nC, 1);
            float *dA = filled(nA, GARBAGE), *dB = filled(nB, GARBAGE);
            long sR = (long)M * N;
            if (!gm.tA) /* dA [M,K] = alpha R op(B)^T */
                be->gemm(0, !gm.tB, M, K, N, gm.alpha, gm.R, N, sR, gm.B, gm.ldb, gm.sB, 0.0f, dA, K, gm.sA, gm.batch);
            else        /* dA [K,M] = alpha op(B) R^T */
                be->gemm(gm.tB, 1, K, M, N, gm.alpha, gm.B, gm.ldb, gm.sB, gm.R, N, sR, 0.0f, dA, M, gm.sA, gm.batch);
            if (!gm.tB) /* dB [K,N] = alpha op(A)^T R */
                be->gemm(!gm.tA, 0, K, N, M, gm.alpha, gm.A, gm.lda, gm.sA, gm.R, N, sR, 0.0f, dB, N, gm.sB, gm.batch);
            else        /* dB [N,K] = alpha R^T op(A) */
                be->gemm(1, gm.tA, N, K, M, gm.alpha, gm.R, N, sR, gm.A, gm.lda, gm.sA, 0.0f, dB, K, gm.sB, gm.batch);
            char what[64];
            snprintf(what, sizeof what, "gemm tA=%d tB=%d dA", gm.tA, gm.tB);
            check_grad(what, loss_gemm, gm.A, nA, dA);
            snprintf(what, sizeof what, "gemm tA=%d tB=%d dB", gm.tA, gm.tB);
            check_grad(what, loss_gemm, gm.B, nB, dB);
            free(gm.A), free(gm.B), free(gm.C), free(gm.R), free(dA), free(dB);
        }
    return 0;
}

/* ------------------------------------------------------------------ norms and activations */

static struct { int rows, dim; float *x, *g, *b, *y, *mean, *rstd, *R; } ln;

static double loss_layernorm(void)
{
    be->layernorm_fwd(ln.y, ln.mean, ln.rstd, ln.x, ln.g, ln.b, ln.rows, ln.dim, 1e-5f);
    return dot_r(ln.y, ln.R, (size_t)ln.rows * ln.dim);
}

static int test_layernorm(void)
{
    ln.rows = 4, ln.dim = 6;
    size_t n = (size_t)ln.rows * ln.dim;
    ln.x = randn(n, 1), ln.g = randn(ln.dim, 1), ln.b = randn(ln.dim, 1), ln.y = filled(n, 0);
    ln.mean = filled(ln.rows, 0), ln.rstd = filled(ln.rows, 0), ln.R = randn(n, 1);
    loss_layernorm();
    float *dx = filled(n, GARBAGE), *dg = filled(ln.dim, 0), *db = filled(ln.dim, 0);
    be->layernorm_bwd(dx, NULL, dg, db, ln.R, ln.x, ln.mean, ln.rstd, ln.g, ln.rows, ln.dim);
    check_grad("layernorm dx", loss_layernorm, ln.x, n, dx);
    check_grad("layernorm dgamma", loss_layernorm, ln.g, ln.dim, dg);
    check_grad("layernorm dbeta", loss_layernorm, ln.b, ln.dim, db);
    float *dx2 = filled(n, GARBAGE), *dg1 = test_copy(dg, ln.dim), *db1 = test_copy(db, ln.dim);
    be->layernorm_bwd(dx2, NULL, dg, db, ln.R, ln.x, ln.mean, ln.rstd, ln.g, ln.rows, ln.dim);
    check_same("layernorm dx", dx2, dx, n);
    check_doubled("layernorm dgamma", dg, dg1, ln.dim);
    check_doubled("layernorm dbeta", db, db1, ln.dim);
    free(ln.x), free(ln.g), free(ln.b), free(ln.y), free(ln.mean), free(ln.rstd), free(ln.R);
    free(dx), free(dg), free(db), free(dx2), free(dg1), free(db1);
    return 0;
}

static struct { size_t n; int rows, cols; float slope; float *x, *y, *R; } act;

static double loss_gelu(void)
{
    be->gelu_fwd(act.y, act.x, act.n);
    return dot_r(act.y, act.R, act.n);
}

static double loss_softmax(void)
{
    be->softmax_fwd(act.y, act.x, act.rows, act.cols);
    return dot_r(act.y, act.R, act.n);
}

static double loss_leaky(void)
{
    be->leaky_relu_fwd(act.y, act.x, act.n, act.slope);
    return dot_r(act.y, act.R, act.n);
}

static int test_gelu(void)
{
    act.n = 50;
    act.x = randn(act.n, 2), act.y = filled(act.n, 0), act.R = randn(act.n, 1);
    float *dx = filled(act.n, GARBAGE);
    be->gelu_bwd(dx, act.R, act.x, act.n);
    check_grad("gelu dx", loss_gelu, act.x, act.n, dx);
    free(act.x), free(act.y), free(act.R), free(dx);
    return 0;
}

static int test_softmax(void)
{
    act.rows = 3, act.cols = 7, act.n = 21;
    act.x = randn(act.n, 2), act.y = filled(act.n, 0), act.R = randn(act.n, 1);
    loss_softmax();
    float *dx = filled(act.n, GARBAGE);
    be->softmax_bwd(dx, act.R, act.y, act.rows, act.cols);
    check_grad("softmax dx", loss_softmax, act.x, act.n, dx);
    free(act.x), free(act.y), free(act.R), free(dx);
    return 0;
}

static int test_leaky_relu(void)
{
    act.n = 40, act.slope = 0.01f;
    act.x = randn(act.n, 1), act.y = filled(act.n, 0), act.R = randn(act.n, 1);
    /* keep every input 0.1 away from the kink so the central difference never straddles it */
    for (size_t i = 0; i < act.n; i++) act.x[i] += act.x[i] >= 0 ? 0.1f : -0.1f;
    float *dx = filled(act.n, GARBAGE);
    be->leaky_relu_bwd(dx, act.R, act.x, act.n, act.slope);
    check_grad_eps("leaky_relu dx", loss_leaky, act.x, act.n, dx, 1e-3f);
    free(act.x), free(act.y), free(act.R), free(dx);
    return 0;
}

static struct { int B, C; long V; float *x, *g, *b, *y, *mean, *rstd, *R; } in_;

static double loss_instnorm(void)
{
    be->instnorm_fwd(in_.y, in_.mean, in_.rstd, in_.x, in_.g, in_.b, in_.B, in_.C, in_.V, 1e-5f);
    return dot_r(in_.y, in_.R, (size_t)in_.B * in_.C * in_.V);
}

static int test_instnorm(void)
{
    for (int affine = 0; affine < 2; affine++) {
        in_.B = 2, in_.C = 3, in_.V = 10;
        size_t n = (size_t)in_.B * in_.C * in_.V;
        in_.x = randn(n, 1.5f), in_.y = filled(n, 0), in_.R = randn(n, 1);
        in_.g = affine ? randn(in_.C, 1) : NULL, in_.b = affine ? randn(in_.C, 1) : NULL;
        in_.mean = filled(in_.B * in_.C, 0), in_.rstd = filled(in_.B * in_.C, 0);
        loss_instnorm();
        float *dx = filled(n, GARBAGE), *dg = filled(in_.C, 0), *db = filled(in_.C, 0);
        be->instnorm_bwd(dx, affine ? dg : NULL, affine ? db : NULL, in_.R, in_.x, in_.mean,
                         in_.rstd, in_.g, in_.B, in_.C, in_.V);
        check_grad(affine ? "instnorm (affine) dx" : "instnorm dx", loss_instnorm, in_.x, n, dx);
        if (affine) {
            check_grad("instnorm dgamma", loss_instnorm, in_.g, in_.C, dg);
            check_grad("instnorm dbeta", loss_instnorm, in_.b, in_.C, db);
            float *dx2 = filled(n, GARBAGE), *dg1 = test_copy(dg, in_.C), *db1 = test_copy(db, in_.C);
            be->instnorm_bwd(dx2, dg, db, in_.R, in_.x, in_.mean, in_.rstd, in_.g, in_.B, in_.C, in_.V);
            check_same("instnorm dx", dx2, dx, n);
            check_doubled("instnorm dgamma", dg, dg1, in_.C);
            check_doubled("instnorm dbeta", db, db1, in_.C);
            free(dx2), free(dg1), free(db1);
        }
        free(in_.x), free(in_.y), free(in_.R), free(in_.g), free(in_.b), free(in_.mean);
        free(in_.rstd), free(dx), free(dg), free(db);
    }
    return 0;
}

/* ------------------------------------------------------------------ attention */

static struct { int B, H, Tq, Tk, Dh, ldq, ldkv; float *q, *k, *v, *out, *probs, *R; } at;

static double loss_attention(void)
{
    be->attention_fwd(at.out, at.probs, at.q, at.k, at.v, at.B, at.H, at.Tq, at.Tk, at.Dh, at.ldq,
                      at.ldkv);
    return dot_r(at.out, at.R, (size_t)at.B * at.Tq * at.H * at.Dh);
}

/* Queries from one buffer (rows padded beyond H*Dh), keys and values side by side in another
 * (CASA: query from the masked view, keys/values from the decoder output), Tq != Tk. */
static int test_attention_cross(void)
{
    at.B = 2, at.H = 2, at.Dh = 3, at.Tq = 3, at.Tk = 5;
    int C = at.H * at.Dh;
    at.ldq = C + 2, at.ldkv = 2 * C;
    size_t nq = (size_t)at.B * at.Tq * at.ldq, nkv = (size_t)at.B * at.Tk * at.ldkv;
    size_t nout = (size_t)at.B * at.Tq * C;
    float *qbuf = randn(nq, 1), *kvbuf = randn(nkv, 1);
    at.q = qbuf, at.k = kvbuf, at.v = kvbuf + C;
    at.out = filled(nout, 0), at.R = randn(nout, 1);
    at.probs = filled((size_t)at.B * at.H * at.Tq * at.Tk, 0);
    loss_attention();
    /* pads are no gradient: start them at zero, backward must leave them alone */
    float *dq = filled(nq, 0), *dkv = filled(nkv, 0);
    for (int r = 0; r < at.B * at.Tq; r++)
        for (int c = 0; c < C; c++) dq[(size_t)r * at.ldq + c] = GARBAGE;
    for (size_t i = 0; i < nkv; i++) dkv[i] = GARBAGE;
    be->attention_bwd(dq, dkv, dkv + C, at.R, at.q, at.k, at.v, at.out, at.probs, at.B, at.H,
                      at.Tq, at.Tk, at.Dh, at.ldq, at.ldkv);
    check_grad("attention (cross, Tq != Tk) dq", loss_attention, qbuf, nq, dq);
    check_grad("attention (cross, Tq != Tk) dk and dv", loss_attention, kvbuf, nkv, dkv);
    free(qbuf), free(kvbuf), free(at.out), free(at.R), free(at.probs), free(dq), free(dkv);
    return 0;
}

/* Self-attention on a packed qkv buffer [B, T, 3C]: q = qkv, k = qkv + C, v = qkv + 2C. */
static int test_attention_packed_qkv(void)
{
    at.B = 2, at.H = 2, at.Dh = 4, at.Tq = at.Tk = 5;
    int C = at.H * at.Dh;
    at.ldq = at.ldkv = 3 * C;
    size_t nqkv = (size_t)at.B * at.Tq * 3 * C, nout = (size_t)at.B * at.Tq * C;
    float *qkv = randn(nqkv, 1);
    at.q = qkv, at.k = qkv + C, at.v = qkv + 2 * C;
    at.out = filled(nout, 0), at.R = randn(nout, 1);
    at.probs = filled((size_t)at.B * at.H * at.Tq * at.Tk, 0);
    loss_attention();
    float *dqkv = filled(nqkv, GARBAGE);
    be->attention_bwd(dqkv, dqkv + C, dqkv + 2 * C, at.R, at.q, at.k, at.v, at.out, at.probs,
                      at.B, at.H, at.Tq, at.Tk, at.Dh, at.ldq, at.ldkv);
    check_grad("attention (packed qkv) dqkv", loss_attention, qkv, nqkv, dqkv);
    free(qkv), free(at.out), free(at.R), free(at.probs), free(dqkv);
    return 0;
}

/* ------------------------------------------------------------------ patches and tokens */

/* patchify is a permutation: its backward is unpatchify. Adjoint: <patchify(v), P> equals
 * <v, unpatchify(P)>, and unpatchify(patchify(v)) == v. */
static int test_patchify_adjoint(void)
{
    int B = 2, X = 4, Y = 6, Z = 2, p = 2;
    size_t n = (size_t)B * X * Y * Z;
    float *v = randn(n, 1), *P = randn(n, 1), *pv = filled(n, 0), *uP = filled(n, 0);
    be->patchify(pv, v, B, X, Y, Z, p);
    be->unpatchify(uP, P, B, X, Y, Z, p);
    TEST_CLOSE(dot_r(pv, P, n), dot_r(v, uP, n), 1e-6, 1e-9, "<patchify v, P> vs <v, unpatchify P>");
    float *back = filled(n, 0);
    be->unpatchify(back, pv, B, X, Y, Z, p);
    TEST_CHECK(memcmp(back, v, n * sizeof(float)) == 0, "unpatchify(patchify(v)) != v");
    free(v), free(P), free(pv), free(uP), free(back);
    return 0;
}

static struct { int B, N, nsel, C, idx_ld; int *idx; float *in, *out, *R; } gt;

static double loss_gather(void)
{
    be->gather_rows(gt.out, gt.in, gt.idx, gt.idx_ld, gt.B, gt.N, gt.nsel, gt.C);
    return dot_r(gt.out, gt.R, (size_t)gt.B * gt.nsel * gt.C);
}

static int test_gather_scatter(void)
{
    gt.B = 2, gt.N = 6, gt.nsel = 4, gt.C = 3, gt.idx_ld = 5;
    /* repeated indices (1 twice in b = 0) must add up in the backward */
    int idx[] = {1, 4, 1, 0, -99, 5, 2, 3, 0, -99};
    gt.idx = idx;
    size_t nin = (size_t)gt.B * gt.N * gt.C, nout = (size_t)gt.B * gt.nsel * gt.C;
    gt.in = randn(nin, 1), gt.out = filled(nout, 0), gt.R = randn(nout, 1);
    float *din = filled(nin, 0);
    be->scatter_add_rows(din, gt.R, gt.idx, gt.idx_ld, gt.B, gt.N, gt.nsel, gt.C);
    check_grad("gather_rows / scatter_add_rows", loss_gather, gt.in, nin, din);
    float *din1 = test_copy(din, nin);
    be->scatter_add_rows(din, gt.R, gt.idx, gt.idx_ld, gt.B, gt.N, gt.nsel, gt.C);
    check_doubled("scatter_add_rows", din, din1, nin);
    free(gt.in), free(gt.out), free(gt.R), free(din), free(din1);
    return 0;
}

static struct { int B, N, nvis, C; int *perm; float *vis, *tok, *out, *R; } mt;

static double loss_mask_tokens(void)
{
    be->insert_mask_tokens(mt.out, mt.vis, mt.tok, mt.perm, mt.B, mt.N, mt.nvis, mt.C);
    return dot_r(mt.out, mt.R, (size_t)mt.B * mt.N * mt.C);
}

static int test_insert_mask_tokens(void)
{
    mt.B = 2, mt.N = 5, mt.nvis = 2, mt.C = 3;
    int perm[] = {3, 0, 4, 1, 2, 1, 4, 0, 2, 3};
    mt.perm = perm;
    size_t nvis = (size_t)mt.B * mt.nvis * mt.C, nout = (size_t)mt.B * mt.N * mt.C;
    mt.vis = randn(nvis, 1), mt.tok = randn(mt.C, 1), mt.out = filled(nout, 0), mt.R = randn(nout, 1);
    float *dvis = filled(nvis, GARBAGE), *dtok = filled(mt.C, 0);
    be->insert_mask_tokens_bwd(dvis, dtok, mt.R, mt.perm, mt.B, mt.N, mt.nvis, mt.C);
    check_grad("insert_mask_tokens dvisible", loss_mask_tokens, mt.vis, nvis, dvis);
    check_grad("insert_mask_tokens dmask_token", loss_mask_tokens, mt.tok, mt.C, dtok);
    float *dvis2 = filled(nvis, GARBAGE), *dtok1 = test_copy(dtok, mt.C);
    be->insert_mask_tokens_bwd(dvis2, dtok, mt.R, mt.perm, mt.B, mt.N, mt.nvis, mt.C);
    check_same("insert_mask_tokens dvisible", dvis2, dvis, nvis);
    check_doubled("insert_mask_tokens dmask_token", dtok, dtok1, mt.C);
    free(mt.vis), free(mt.tok), free(mt.out), free(mt.R), free(dvis), free(dtok), free(dvis2);
    free(dtok1);
    return 0;
}

static struct { int B, T, C; float *in, *out, *R; } mr;

static double loss_mean_rows(void)
{
    be->mean_rows_fwd(mr.out, mr.in, mr.B, mr.T, mr.C);
    return dot_r(mr.out, mr.R, (size_t)mr.B * mr.C);
}

static int test_mean_rows(void)
{
    mr.B = 2, mr.T = 4, mr.C = 3;
    size_t nin = (size_t)mr.B * mr.T * mr.C, nout = (size_t)mr.B * mr.C;
    mr.in = randn(nin, 1), mr.out = filled(nout, 0), mr.R = randn(nout, 1);
    float *din = filled(nin, GARBAGE);
    be->mean_rows_bwd(din, mr.R, mr.B, mr.T, mr.C);
    check_grad("mean_rows din", loss_mean_rows, mr.in, nin, din);
    free(mr.in), free(mr.out), free(mr.R), free(din);
    return 0;
}

static struct { int B, C1, C2; long V; float *a, *b, *out, *R; } cc;

static double loss_concat(void)
{
    be->concat_channels(cc.out, cc.a, cc.b, cc.B, cc.C1, cc.C2, cc.V);
    return dot_r(cc.out, cc.R, (size_t)cc.B * (cc.C1 + cc.C2) * cc.V);
}

static int test_concat_split(void)
{
    cc.B = 2, cc.C1 = 2, cc.C2 = 3, cc.V = 4;
    size_t na = (size_t)cc.B * cc.C1 * cc.V, nb = (size_t)cc.B * cc.C2 * cc.V;
    cc.a = randn(na, 1), cc.b = randn(nb, 1), cc.out = filled(na + nb, 0), cc.R = randn(na + nb, 1);
    float *da = filled(na, GARBAGE), *db = filled(nb, GARBAGE);
    be->split_channels(da, db, cc.R, cc.B, cc.C1, cc.C2, cc.V);
    check_grad("concat_channels / split_channels da", loss_concat, cc.a, na, da);
    check_grad("concat_channels / split_channels db", loss_concat, cc.b, nb, db);
    free(cc.a), free(cc.b), free(cc.out), free(cc.R), free(da), free(db);
    return 0;
}

static struct { int B, rows, cols; float *in, *out, *R; } tt;

static double loss_transpose(void)
{
    be->transpose_tokens(tt.out, tt.in, tt.B, tt.rows, tt.cols);
    return dot_r(tt.out, tt.R, (size_t)tt.B * tt.rows * tt.cols);
}

static int test_transpose_tokens(void)
{
    tt.B = 2, tt.rows = 3, tt.cols = 37; /* cols crosses a transpose tile edge */
    size_t n = (size_t)tt.B * tt.rows * tt.cols;
    tt.in = randn(n, 1), tt.out = filled(n, 0), tt.R = randn(n, 1);
    float *din = filled(n, GARBAGE);
    be->transpose_tokens(din, tt.R, tt.B, tt.cols, tt.rows); /* its own backward */
    check_grad("transpose_tokens din", loss_transpose, tt.in, n, din);
    free(tt.in), free(tt.out), free(tt.R), free(din);
    return 0;
}

/* ------------------------------------------------------------------ vectors and losses */

static struct { int rows, dim; float eps; float *x, *y, *norms, *R, *a, *b, *mask, *target; } vl;

static double loss_l2norm(void)
{
    be->l2norm_fwd(vl.y, vl.norms, vl.x, vl.rows, vl.dim, vl.eps);
    return dot_r(vl.y, vl.R, (size_t)vl.rows * vl.dim);
}

static int test_l2norm(void)
{
    vl.rows = 3, vl.dim = 5, vl.eps = 1e-6f;
    size_t n = (size_t)vl.rows * vl.dim;
    vl.x = randn(n, 1), vl.y = filled(n, 0), vl.norms = filled(vl.rows, 0), vl.R = randn(n, 1);
    loss_l2norm();
    float *dx = filled(n, GARBAGE);
    be->l2norm_bwd(dx, vl.R, vl.x, vl.norms, vl.rows, vl.dim, vl.eps);
    check_grad("l2norm dx", loss_l2norm, vl.x, n, dx);
    free(vl.x), free(vl.y), free(vl.norms), free(vl.R), free(dx);
    return 0;
}

static double loss_cosine(void)
{
    float loss;   /* the CPU backend's memory is host memory */
    be->cosine_loss_fwd(&loss, vl.a, vl.b, vl.rows, vl.dim);
    return LOSS_GAIN * (double)loss;
}

static int test_cosine_loss(void)
{
    vl.rows = 3, vl.dim = 5;
    size_t n = (size_t)vl.rows * vl.dim;
    vl.a = randn(n, 1), vl.b = randn(n, 1);
    float *da = filled(n, GARBAGE), *db = filled(n, GARBAGE);
    be->cosine_loss_bwd(da, db, vl.a, vl.b, vl.rows, vl.dim, LOSS_GAIN);
    check_grad("cosine_loss da", loss_cosine, vl.a, n, da);
    check_grad("cosine_loss db", loss_cosine, vl.b, n, db);
    /* one side only, and the scale is linear */
    float *db2 = filled(n, GARBAGE);
    be->cosine_loss_bwd(NULL, db2, vl.a, vl.b, vl.rows, vl.dim, 2.0f * LOSS_GAIN);
    for (size_t i = 0; i < n; i++) TEST_CLOSE(db2[i], 2.0 * db[i], 1e-5, 1e-7, "cosine db, scale doubled");
    free(vl.a), free(vl.b), free(da), free(db), free(db2);
    return 0;
}

/* DINO soft cross-entropy: gradient of the student side (the teacher is a constant), at
 * moderate temperatures so that the central difference with h = FD_EPS resolves the curvature;
 * plus hand-computed values: a zero student gives log(dim) whatever the teacher, and a teacher
 * equal to the center gives the uniform target, H = lse(s / T_s) - mean(s) / T_s. */
static struct { int rows, dim; float inv_ts, inv_tt; float *s, *t, *c; } sce;

/* The loss ops write their value to backend memory: host memory on the CPU backend. */
static double soft_ce_value(const float *s, const float *t, float inv_ts, float inv_tt)
{
    float loss;
    be->soft_ce_fwd(&loss, s, t, sce.c, sce.rows, sce.dim, inv_ts, inv_tt);
    return loss;
}

static double loss_soft_ce(void)
{
    return LOSS_GAIN * soft_ce_value(sce.s, sce.t, sce.inv_ts, sce.inv_tt);
}

static int test_soft_ce(void)
{
    sce.rows = 3, sce.dim = 6, sce.inv_ts = 1.0f / 0.5f, sce.inv_tt = 1.0f / 0.25f;
    size_t n = (size_t)sce.rows * sce.dim;
    sce.s = randn(n, 1), sce.t = randn(n, 1), sce.c = randn((size_t)sce.dim, 0.5f);
    float *ds = filled(n, GARBAGE);
    be->soft_ce_bwd(ds, sce.s, sce.t, sce.c, sce.rows, sce.dim, sce.inv_ts, sce.inv_tt, LOSS_GAIN);
    check_grad("soft_ce ds", loss_soft_ce, sce.s, n, ds);
    /* every row of the gradient sums to 0 (difference of two distributions) */
    for (int r = 0; r < sce.rows; r++) {
        double sum = 0;
        for (int d = 0; d < sce.dim; d++) sum += ds[r * sce.dim + d];
        TEST_CLOSE(sum, 0.0, 0, 1e-6, "soft_ce ds row sum");
    }
    float *zero = filled(n, 0.0f);
    TEST_CLOSE(soft_ce_value(zero, sce.t, 10.0f, 25.0f), log(6.0), 1e-6, 0,
               "soft_ce, zero student: log(dim)");
    float *tc = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) tc[i] = sce.c[i % sce.dim];
    double want = 0;
    for (int r = 0; r < sce.rows; r++) {
        double mx = -INFINITY, sum = 0, mean = 0;
        for (int d = 0; d < sce.dim; d++) mx = fmax(mx, sce.s[r * sce.dim + d] * 10.0);
        for (int d = 0; d < sce.dim; d++) sum += exp(sce.s[r * sce.dim + d] * 10.0 - mx);
        for (int d = 0; d < sce.dim; d++) mean += sce.s[r * sce.dim + d] * 10.0 / sce.dim;
        want += (mx + log(sum) - mean) / sce.rows;
    }
    TEST_CLOSE(soft_ce_value(sce.s, tc, 10.0f, 25.0f), want, 1e-5, 0,
               "soft_ce, teacher at the center: uniform target");
    free(sce.s), free(sce.t), free(sce.c), free(ds), free(zero), free(tc);
    return 0;
}

static double loss_masked_mse(void)
{
    float loss;
    be->masked_mse_fwd(&loss, vl.x, vl.target, vl.mask, vl.rows, vl.dim);
    return LOSS_GAIN * (double)loss;
}

/* l_r with MAE's per-patch normalised targets (normalize_rows has no gradient). */
static int test_masked_mse(void)
{
    vl.rows = 6, vl.dim = 8;
    size_t n = (size_t)vl.rows * vl.dim;
    float mask[] = {1, 0, 1, 1, 0, 1};
    float *raw = randn(n, 3);
    vl.mask = mask, vl.x = randn(n, 1), vl.target = filled(n, 0);
    be->normalize_rows(vl.target, raw, vl.rows, vl.dim, 1e-6f);
    float *dp = filled(n, GARBAGE);
    be->masked_mse_bwd(dp, vl.x, vl.target, vl.mask, vl.rows, vl.dim, LOSS_GAIN);
    check_grad("masked_mse dpred", loss_masked_mse, vl.x, n, dp);
    /* The loss does not depend on a visible row (mask 0): non-finite predictions there leave
     * the loss as it was, their gradient exactly 0 (not 0 * NaN) and the others unchanged. */
    const double before = loss_masked_mse();
    float *dp_finite = malloc(n * sizeof(float));
    memcpy(dp_finite, dp, n * sizeof(float));
    for (int d = 0; d < vl.dim; d++) vl.x[1 * vl.dim + d] = NAN, vl.x[4 * vl.dim + d] = INFINITY;
    TEST_CLOSE(loss_masked_mse(), before, 0, 0, "masked_mse: NaN/inf on visible rows");
    be->masked_mse_bwd(dp, vl.x, vl.target, vl.mask, vl.rows, vl.dim, LOSS_GAIN);
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const int visible = mask[i / vl.dim] == 0.0f;
        off += visible ? !(dp[i] == 0.0f && !signbit(dp[i])) : dp[i] != dp_finite[i];
    }
    TEST_CHECK(off == 0, "masked_mse dpred with NaN/inf on visible rows: %zu of %zu elements "
               "not +0 there or changed elsewhere", off, n);
    free(dp_finite);
    free(raw), free(vl.x), free(vl.target), free(dp);
    return 0;
}

/* ------------------------------------------------------------------ convolutions */

static struct { int B, Cin, Cout, X, Y, Z, k, s, pad; float *x, *W, *b, *y, *R; size_t ny; } cv;

static double loss_conv(void)
{
    be->conv3d_fwd(cv.y, cv.x, cv.W, cv.b, cv.B, cv.Cin, cv.Cout, cv.X, cv.Y, cv.Z, cv.k, cv.s, cv.pad);
    return dot_r(cv.y, cv.R, cv.ny);
}

static int test_conv3d(void)
{
    /* {k, s, pad}: UNETR's 3x3x3 same conv, strided variants, a 2x2x2 stride-2 and a 1x1x1 */
    static const int configs[][3] = {{3, 1, 1}, {3, 2, 1}, {3, 1, 0}, {3, 2, 0}, {2, 2, 0}, {1, 1, 0}};
    for (size_t c = 0; c < sizeof configs / sizeof configs[0]; c++) {
        cv.B = 2, cv.Cin = 2, cv.Cout = 3, cv.X = 5, cv.Y = 4, cv.Z = 6;
        cv.k = configs[c][0], cv.s = configs[c][1], cv.pad = configs[c][2];
        int Ox = (cv.X + 2 * cv.pad - cv.k) / cv.s + 1, Oy = (cv.Y + 2 * cv.pad - cv.k) / cv.s + 1;
        int Oz = (cv.Z + 2 * cv.pad - cv.k) / cv.s + 1;
        size_t nx = (size_t)cv.B * cv.Cin * cv.X * cv.Y * cv.Z;
        size_t nw = (size_t)cv.Cout * cv.Cin * cv.k * cv.k * cv.k;
        cv.ny = (size_t)cv.B * cv.Cout * Ox * Oy * Oz;
        cv.x = randn(nx, 1), cv.W = randn(nw, 0.5f), cv.b = randn(cv.Cout, 1);
        cv.y = filled(cv.ny, 0), cv.R = randn(cv.ny, 1);
        float *dx = filled(nx, GARBAGE), *dW = filled(nw, 0), *db = filled(cv.Cout, 0);
        be->conv3d_bwd(dx, dW, db, cv.R, cv.x, cv.W, cv.B, cv.Cin, cv.Cout, cv.X, cv.Y, cv.Z,
                       cv.k, cv.s, cv.pad);
        char what[80];
        snprintf(what, sizeof what, "conv3d k=%d s=%d pad=%d dx", cv.k, cv.s, cv.pad);
        check_grad(what, loss_conv, cv.x, nx, dx);
        snprintf(what, sizeof what, "conv3d k=%d s=%d pad=%d dW", cv.k, cv.s, cv.pad);
        check_grad(what, loss_conv, cv.W, nw, dW);
        snprintf(what, sizeof what, "conv3d k=%d s=%d pad=%d db", cv.k, cv.s, cv.pad);
        check_grad(what, loss_conv, cv.b, cv.Cout, db);
        float *dx2 = filled(nx, GARBAGE), *dW1 = test_copy(dW, nw), *db1 = test_copy(db, cv.Cout);
        be->conv3d_bwd(dx2, dW, db, cv.R, cv.x, cv.W, cv.B, cv.Cin, cv.Cout, cv.X, cv.Y, cv.Z,
                       cv.k, cv.s, cv.pad);
        check_same(what, dx2, dx, nx);
        check_doubled(what, dW, dW1, nw);
        check_doubled(what, db, db1, cv.Cout);
        free(cv.x), free(cv.W), free(cv.b), free(cv.y), free(cv.R), free(dx), free(dW), free(db);
        free(dx2), free(dW1), free(db1);
    }
    return 0;
}

static double loss_convT(void)
{
    be->conv_transpose3d_fwd(cv.y, cv.x, cv.W, cv.b, cv.B, cv.Cin, cv.Cout, cv.X, cv.Y, cv.Z, cv.k);
    return dot_r(cv.y, cv.R, cv.ny);
}

static int test_conv_transpose3d(void)
{
    cv.B = 2, cv.Cin = 3, cv.Cout = 2, cv.X = 2, cv.Y = 3, cv.Z = 2, cv.k = 2;
    size_t nx = (size_t)cv.B * cv.Cin * cv.X * cv.Y * cv.Z;
    size_t nw = (size_t)cv.Cin * cv.Cout * 8;
    cv.ny = nx / cv.Cin * cv.Cout * 8;
    cv.x = randn(nx, 1), cv.W = randn(nw, 0.5f), cv.b = randn(cv.Cout, 1);
    cv.y = filled(cv.ny, 0), cv.R = randn(cv.ny, 1);
    float *dx = filled(nx, GARBAGE), *dW = filled(nw, 0), *db = filled(cv.Cout, 0);
    be->conv_transpose3d_bwd(dx, dW, db, cv.R, cv.x, cv.W, cv.B, cv.Cin, cv.Cout, cv.X, cv.Y,
                             cv.Z, cv.k);
    check_grad("conv_transpose3d dx", loss_convT, cv.x, nx, dx);
    check_grad("conv_transpose3d dW", loss_convT, cv.W, nw, dW);
    check_grad("conv_transpose3d db", loss_convT, cv.b, cv.Cout, db);
    float *dx2 = filled(nx, GARBAGE), *dW1 = test_copy(dW, nw), *db1 = test_copy(db, cv.Cout);
    be->conv_transpose3d_bwd(dx2, dW, db, cv.R, cv.x, cv.W, cv.B, cv.Cin, cv.Cout, cv.X, cv.Y,
                             cv.Z, cv.k);
    check_same("conv_transpose3d dx", dx2, dx, nx);
    check_doubled("conv_transpose3d dW", dW, dW1, nw);
    check_doubled("conv_transpose3d db", db, db1, cv.Cout);
    free(cv.x), free(cv.W), free(cv.b), free(cv.y), free(cv.R), free(dx), free(dW), free(db);
    free(dx2), free(dW1), free(db1);
    return 0;
}

/* ------------------------------------------------------------------ DiceCE */

static struct { int B, K; long V; int *labels; float *logits, *probs; float w_ce, w_dice; } dc;

static double loss_dicece(void)
{
    float v[SEG_LOSS_VALUE_COUNT];   /* the CPU backend's memory is host memory */
    be->dicece_fwd(dc.probs, v, dc.logits, dc.labels, dc.B, dc.K, dc.V);
    return (double)dc.w_ce * v[SEG_LOSS_CE] + (double)dc.w_dice * v[SEG_LOSS_DICE];
}

static int test_dicece(void)
{
    dc.B = 2, dc.K = 3, dc.V = 7;
    /* class 2 absent from the second volume: its Dice term is smooth / (sum p + smooth) */
    /* static: dc outlives this call (gcc 13 -Wdangling-pointer) */
    static int labels[] = {0, 1, 2, 2, 1, 0, 0, 1, 1, 0, 0, 1, 0, 1};
    dc.labels = labels;
    size_t n = (size_t)dc.B * dc.K * dc.V;
    static const float weights[][2] = {{LOSS_GAIN, 0}, {0, LOSS_GAIN}, {3, 7}};
    for (size_t w = 0; w < 3; w++) {
        dc.w_ce = weights[w][0], dc.w_dice = weights[w][1];
        dc.logits = randn(n, 1.5f), dc.probs = filled(n, 0);
        loss_dicece();
        float *dl = filled(n, GARBAGE);
        be->dicece_bwd(dl, dc.probs, dc.labels, dc.B, dc.K, dc.V, dc.w_ce, dc.w_dice);
        char what[64];
        snprintf(what, sizeof what, "dicece (w_ce %g, w_dice %g) dlogits", dc.w_ce, dc.w_dice);
        check_grad(what, loss_dicece, dc.logits, n, dl);
        free(dc.logits), free(dc.probs), free(dl);
    }
    return 0;
}

int main(void)
{
    be = backend_cpu();
    TEST_RUN(test_linear);
    TEST_RUN(test_gemm_transposes);
    TEST_RUN(test_layernorm);
    TEST_RUN(test_gelu);
    TEST_RUN(test_softmax);
    TEST_RUN(test_leaky_relu);
    TEST_RUN(test_instnorm);
    TEST_RUN(test_attention_cross);
    TEST_RUN(test_attention_packed_qkv);
    TEST_RUN(test_patchify_adjoint);
    TEST_RUN(test_gather_scatter);
    TEST_RUN(test_insert_mask_tokens);
    TEST_RUN(test_mean_rows);
    TEST_RUN(test_concat_split);
    TEST_RUN(test_transpose_tokens);
    TEST_RUN(test_l2norm);
    TEST_RUN(test_cosine_loss);
    TEST_RUN(test_soft_ce);
    TEST_RUN(test_masked_mse);
    TEST_RUN(test_conv3d);
    TEST_RUN(test_conv_transpose3d);
    TEST_RUN(test_dicece);
    return test_finish();
}
