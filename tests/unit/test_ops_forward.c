/* Forward values (and, at sizes that take the multi-threaded and tiled code paths, backward
 * values) of the CPU backend against naive double-precision loops written here, plus small
 * hand-computed cases.
 *
 * Tolerance for float results against a double reference: |got - ref| <= 1e-5 * scale + 1e-6,
 * where scale is the sum of the magnitudes of the terms that make up the value (so a GEMM
 * entry of K products is judged against K float roundings, not against its possibly tiny
 * sum). Hand cases: 1e-6 relative. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/rng.h"
#include "ops/backend.h"
#include "test.h"

#define REL 1e-5
#define ABS 1e-6

static const AliceBackend *be;
static uint32_t next_stream = 1;

static float *randn(size_t n, float scale) { return test_randn(777, next_stream++, n, scale); }

static float *filled(size_t n, float v) { return test_filled(n, v); }

static double *dzeros(size_t n) { return calloc(n ? n : 1, sizeof(double)); }

/* Counts entries outside tolerance and reports the worst one. */
static void compare(const char *what, const float *got, const double *ref, const double *scale,
                    size_t n)
{
    test_compare_ref(what, got, ref, scale, n, REL, ABS);
}

/* ------------------------------------------------------------------ table, memory, elementwise */

static int test_table_complete(void)
{
    /* Every entry after the name up to the graph entries is a function pointer; none may be
     * missing. The graph entries are a capability the CPU backend does not have: all NULL. */
    const size_t first = offsetof(AliceBackend, alloc);
    const size_t graphs = offsetof(AliceBackend, graph_capture_begin);
    size_t count = (graphs - first) / sizeof(void (*)(void)), missing = 0;
    for (size_t i = 0; i < count; i++) {
        void (*fn)(void);
        memcpy(&fn, (const char *)be + first + i * sizeof fn, sizeof fn);
        missing += fn == NULL;
    }
    TEST_CHECK(missing == 0, "%zu of %zu backend entries are NULL", missing, count);
    TEST_CHECK(!be->graph_capture_begin && !be->graph_capture_end && !be->graph_launch &&
               !be->graph_free, "the cpu backend has graph entries");
    TEST_CHECK(strcmp(be->name, "cpu") == 0, "name '%s'", be->name);
    return 0;
}

static int test_memory_and_elementwise(void)
{
    size_t n = 100003; /* large enough for the threaded loops, odd to catch tail handling */
    float *x = be->alloc(n * sizeof(float)), *y = be->alloc(n * sizeof(float));
    TEST_CHECK(((uintptr_t)x & 63) == 0, "alloc not 64-byte aligned");
    float *hx = randn(n, 1), *hy = randn(n, 1), *back = filled(n, 0);
    be->upload(x, hx, n * sizeof(float));
    be->copy(y, x, n * sizeof(float));
    be->download(back, y, n * sizeof(float));
    TEST_CHECK(memcmp(back, hx, n * sizeof(float)) == 0, "upload/copy/download round trip");
    be->upload(y, hy, n * sizeof(float));
    be->axpby(y, x, 0.5f, -2.0f, n);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += fabsf(y[i] - (0.5f * hx[i] - 2.0f * hy[i])) > 1e-6f * (1 + fabsf(y[i]));
    TEST_CHECK(bad == 0, "axpby: %zu entries off", bad);
    be->fill(y, NAN, n);
    be->axpby(y, x, 3.0f, 0.0f, n); /* b = 0 ignores y, NaN included */
    bad = 0;
    for (size_t i = 0; i < n; i++) bad += y[i] != 3.0f * hx[i];
    TEST_CHECK(bad == 0, "axpby with b = 0 kept %zu NaNs of y", bad);
    be->scale(y, 0.5f, n);
    be->add(y, y, x, n); /* aliasing out == a */
    bad = 0;
    for (size_t i = 0; i < n; i++) bad += fabsf(y[i] - 2.5f * hx[i]) > 1e-6f * (1 + fabsf(y[i]));
    TEST_CHECK(bad == 0, "scale/add: %zu entries off", bad);
    be->fill(y, 1.5f, n);
    double ss_ref = 0.0;
    for (size_t i = 0; i < n; i++) ss_ref += (double)hx[i] * hx[i];
    TEST_CLOSE(be->sum_squares(x, n), ss_ref, 1e-12, 0, "sum_squares");
    TEST_CLOSE(be->sum_squares(y, n), 2.25 * n, 1e-12, 0, "sum_squares of a filled buffer");
    /* non-finite exactly when an element is: the training loop's gradient check */
    y[n - 1] = INFINITY;
    TEST_CHECK(isinf(be->sum_squares(y, n)), "sum_squares hid an Inf in the last entry");
    y[n - 1] = -INFINITY;
    TEST_CHECK(isinf(be->sum_squares(y, n)), "sum_squares hid a -Inf");
    y[n - 1] = 0, y[17] = NAN;
    TEST_CHECK(isnan(be->sum_squares(y, n)), "sum_squares hid a NaN");
    y[17] = 3.0e38f;  /* the largest squares still sum finitely in double */
    TEST_CHECK(isfinite(be->sum_squares(y, n)), "sum_squares overflowed on finite data");
    be->release(x), be->release(y), free(hx), free(hy), free(back);
    return 0;
}

/* ------------------------------------------------------------------ GEMM and linear */

static void gemm_case(int tA, int tB, int M, int N, int K, int batch, int pad)
{
    float alpha = 0.7f, beta = 0.3f;
    int lda = (tA ? M : K) + pad, ldb = (tB ? K : N) + pad, ldc = N + pad;
    long sA = (long)(tA ? K : M) * lda + pad, sB = (long)(tB ? N : K) * ldb + pad;
    long sC = (long)M * ldc + pad;
    float *A = randn((size_t)sA * batch, 1), *B = randn((size_t)sB * batch, 1);
    float *C = randn((size_t)sC * batch, 1);
    double *ref = dzeros((size_t)sC * batch), *scale = dzeros((size_t)sC * batch);
    for (int i = 0; i < batch; i++)
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) {
                double s = 0.0, mag = 0.0;
                for (int k = 0; k < K; k++) {
                    double a = tA ? A[i * sA + (long)k * lda + m] : A[i * sA + (long)m * lda + k];
                    double b = tB ? B[i * sB + (long)n * ldb + k] : B[i * sB + (long)k * ldb + n];
                    s += a * b, mag += fabs(a * b);
                }
                long c = i * sC + (long)m * ldc + n;
                ref[c] = alpha * s + beta * C[c];
                scale[c] = alpha * mag + fabs(beta * C[c]);
            }
    /* entries outside the matrices (padding) must be untouched */
    for (long c = 0; c < sC * batch; c++)
        if (scale[c] == 0.0) ref[c] = C[c];
    be->gemm(tA, tB, M, N, K, alpha, A, lda, sA, B, ldb, sB, beta, C, ldc, sC, batch);
    char what[96];
    snprintf(what, sizeof what, "gemm tA=%d tB=%d %dx%dx%d batch %d", tA, tB, M, N, K, batch);
    compare(what, C, ref, scale, (size_t)sC * batch);
    free(A), free(B), free(C), free(ref), free(scale);
}

static int test_gemm(void)
{
    for (int tA = 0; tA < 2; tA++)
        for (int tB = 0; tB < 2; tB++) {
            gemm_case(tA, tB, 5, 6, 7, 3, 3);       /* small: whole GEMMs per thread */
            gemm_case(tA, tB, 150, 170, 160, 2, 1); /* large batch of 2: one per thread */
            gemm_case(tA, tB, 300, 40, 100, 1, 2);  /* one GEMM split by rows of C */
            gemm_case(tA, tB, 40, 300, 100, 1, 2);  /* one GEMM split by columns of C */
            gemm_case(tA, tB, 90, 100, 130, 3, 1);  /* uneven batch: each GEMM split */
        }
    return 0;
}

static void linear_case(int rows, int in, int out)
{
    float *x = randn((size_t)rows * in, 1), *W = randn((size_t)out * in, 1), *b = randn(out, 1);
    float *y = filled((size_t)rows * out, NAN);
    double *ref = dzeros((size_t)rows * out), *scale = dzeros((size_t)rows * out);
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < out; o++) {
            double s = b[o], mag = fabs(b[o]);
            for (int i = 0; i < in; i++) {
                s += (double)x[r * in + i] * W[o * in + i];
                mag += fabs((double)x[r * in + i] * W[o * in + i]);
            }
            ref[r * out + o] = s, scale[r * out + o] = mag;
        }
    char what[64];
    snprintf(what, sizeof what, "linear %dx%d->%d with bias", rows, in, out);
    be->linear_fwd(y, x, W, b, rows, in, out);
    compare(what, y, ref, scale, (size_t)rows * out);
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < out; o++) ref[r * out + o] -= b[o];
    snprintf(what, sizeof what, "linear %dx%d->%d without bias", rows, in, out);
    be->linear_fwd(y, x, W, NULL, rows, in, out);
    compare(what, y, ref, scale, (size_t)rows * out);
    free(x), free(W), free(b), free(y), free(ref), free(scale);
}

/* Small (one thread) and large enough to be split by rows or by columns, where each thread
 * fills the bias of its own block. */
static int test_linear(void)
{
    static const int shapes[][3] = {{37, 29, 23}, {200, 64, 96}, {64, 96, 200}};
    for (int i = 0; i < 3; i++) linear_case(shapes[i][0], shapes[i][1], shapes[i][2]);
    return 0;
}

/* ------------------------------------------------------------------ attention */

static void attention_case(int B, int H, int Tq, int Tk, int Dh, int packed)
{
    int C = H * Dh;
    int ldq = packed ? 3 * C : C, ldkv = packed ? 3 * C : 2 * C;
    float *qbuf = randn((size_t)B * Tq * ldq, 1);
    float *kvbuf = packed ? qbuf : randn((size_t)B * Tk * ldkv, 1);
    const float *q = qbuf, *k = packed ? qbuf + C : kvbuf, *v = packed ? qbuf + 2 * C : kvbuf + C;
    size_t nout = (size_t)B * Tq * C, np = (size_t)B * H * Tq * Tk;
    float *out = filled(nout, NAN), *probs = filled(np, NAN);
    double *ref = dzeros(nout), *scale = dzeros(nout), *pref = dzeros(np);
    double *s = dzeros((size_t)Tk);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < Tq; i++) {
                double sum = 0.0;
                const double mx = test_attention_scores(s, q, k, b, h, i, Tq, Tk, Dh, ldq, ldkv);
                for (int j = 0; j < Tk; j++) sum += s[j] = exp(s[j] - mx);
                for (int j = 0; j < Tk; j++) pref[(((long)b * H + h) * Tq + i) * Tk + j] = s[j] / sum;
                for (int e = 0; e < Dh; e++) {
                    double o = 0.0, mag = 0.0;
                    for (int j = 0; j < Tk; j++) {
                        double t = s[j] / sum * v[((long)b * Tk + j) * ldkv + h * Dh + e];
                        o += t, mag += fabs(t);
                    }
                    ref[((long)b * Tq + i) * C + h * Dh + e] = o;
                    scale[((long)b * Tq + i) * C + h * Dh + e] = 10 * mag; /* softmax adds roundings */
                }
            }
    be->attention_fwd(out, probs, q, k, v, B, H, Tq, Tk, Dh, ldq, ldkv);
    char what[96];
    snprintf(what, sizeof what, "attention %s B%d H%d Tq%d Tk%d Dh%d out", packed ? "packed" : "cross", B, H, Tq, Tk, Dh);
    compare(what, out, ref, scale, nout);
    snprintf(what, sizeof what, "attention %s B%d H%d Tq%d Tk%d Dh%d probs", packed ? "packed" : "cross", B, H, Tq, Tk, Dh);
    compare(what, probs, pref, NULL, np);
    free(qbuf), free(out), free(probs), free(ref), free(scale), free(pref), free(s);
    if (!packed) free(kvbuf);
}

static int test_attention(void)
{
    attention_case(2, 3, 17, 17, 8, 1);
    attention_case(2, 3, 7, 19, 8, 0);
    attention_case(1, 12, 40, 40, 64, 1); /* ViT-B head width */
    return 0;
}

/* saved == NULL (forward only): out must be bit-identical to the saving call's. Shapes: Tq !=
 * Tk, odd sizes, head widths 8/32/64, and more (batch, head) tasks than threads, so each
 * thread's scratch tile is reused across tasks. */
static void attention_unsaved_case(int B, int H, int Tq, int Tk, int Dh, int packed)
{
    int C = H * Dh;
    int ldq = packed ? 3 * C : C, ldkv = packed ? 3 * C : 2 * C;
    float *qbuf = randn((size_t)B * Tq * ldq, 1.5f);
    float *kvbuf = packed ? qbuf : randn((size_t)B * Tk * ldkv, 1.5f);
    const float *q = qbuf, *k = packed ? qbuf + C : kvbuf, *v = packed ? qbuf + 2 * C : kvbuf + C;
    size_t nout = (size_t)B * Tq * C;
    float *out_saved = filled(nout, NAN), *out_unsaved = filled(nout, NAN);
    float *saved = filled(be->attention_saved_floats(B, H, Tq, Tk, Dh), NAN);
    be->attention_fwd(out_saved, saved, q, k, v, B, H, Tq, Tk, Dh, ldq, ldkv);
    be->attention_fwd(out_unsaved, NULL, q, k, v, B, H, Tq, Tk, Dh, ldq, ldkv);
    size_t differ = 0, nonfinite = 0;
    for (size_t i = 0; i < nout; i++) {
        differ += memcmp(&out_saved[i], &out_unsaved[i], sizeof(float)) != 0;
        nonfinite += !isfinite(out_unsaved[i]);
    }
    TEST_CHECK(differ == 0 && nonfinite == 0,
               "attention saved=NULL %s B%d H%d Tq%d Tk%d Dh%d: %zu of %zu outputs differ in bits "
               "from the saving call, %zu not finite", packed ? "packed" : "cross", B, H, Tq, Tk,
               Dh, differ, nout, nonfinite);
    free(qbuf), free(out_saved), free(out_unsaved), free(saved);
    if (!packed) free(kvbuf);
}

static int test_attention_unsaved(void)
{
    attention_unsaved_case(3, 5, 13, 13, 8, 1);
    attention_unsaved_case(2, 3, 11, 29, 8, 0);
    attention_unsaved_case(3, 3, 37, 21, 32, 0);
    attention_unsaved_case(2, 4, 45, 45, 32, 1);
    attention_unsaved_case(1, 7, 33, 19, 64, 0);
    attention_unsaved_case(2, 3, 41, 41, 64, 1);
    return 0;
}

/* ------------------------------------------------------------------ convolutions */

static void conv_case(int B, int Cin, int Cout, int X, int Y, int Z, int k, int s, int pad,
                      int check_backward)
{
    int Ox = (X + 2 * pad - k) / s + 1, Oy = (Y + 2 * pad - k) / s + 1, Oz = (Z + 2 * pad - k) / s + 1;
    size_t nx = (size_t)B * Cin * X * Y * Z, nw = (size_t)Cout * Cin * k * k * k;
    size_t ny = (size_t)B * Cout * Ox * Oy * Oz;
    float *x = randn(nx, 1), *W = randn(nw, 0.3f), *b = randn(Cout, 1), *y = filled(ny, NAN);
    double *ref = dzeros(ny), *scale = dzeros(ny);
    double *dxr = check_backward ? dzeros(nx) : NULL, *dxs = check_backward ? dzeros(nx) : NULL;
    double *dWr = check_backward ? dzeros(nw) : NULL, *dWs = check_backward ? dzeros(nw) : NULL;
    float *dy = check_backward ? randn(ny, 1) : NULL;
#define XI(bi, ci, ix, iy, iz) ((((long)(bi) * Cin + (ci)) * X + (ix)) * Y + (iy)) * Z + (iz)
#define WI(co, ci, a, c, e) ((((long)(co) * Cin + (ci)) * k + (a)) * k + (c)) * k + (e)
    for (int bi = 0; bi < B; bi++)
        for (int co = 0; co < Cout; co++)
            for (int ox = 0; ox < Ox; ox++)
                for (int oy = 0; oy < Oy; oy++)
                    for (int oz = 0; oz < Oz; oz++) {
                        long yi = ((((long)bi * Cout + co) * Ox + ox) * Oy + oy) * Oz + oz;
                        double acc = b[co], mag = fabs(b[co]);
                        for (int ci = 0; ci < Cin; ci++)
                            for (int a = 0; a < k; a++)
                                for (int c = 0; c < k; c++)
                                    for (int e = 0; e < k; e++) {
                                        int ix = ox * s - pad + a, iy = oy * s - pad + c, iz = oz * s - pad + e;
                                        if (ix < 0 || ix >= X || iy < 0 || iy >= Y || iz < 0 || iz >= Z) continue;
                                        double t = (double)x[XI(bi, ci, ix, iy, iz)] * W[WI(co, ci, a, c, e)];
                                        acc += t, mag += fabs(t);
                                        if (check_backward) {
                                            double g = dy[yi];
                                            dxr[XI(bi, ci, ix, iy, iz)] += g * W[WI(co, ci, a, c, e)];
                                            dxs[XI(bi, ci, ix, iy, iz)] += fabs(g * W[WI(co, ci, a, c, e)]);
                                            dWr[WI(co, ci, a, c, e)] += g * x[XI(bi, ci, ix, iy, iz)];
                                            dWs[WI(co, ci, a, c, e)] += fabs(g * x[XI(bi, ci, ix, iy, iz)]);
                                        }
                                    }
                        ref[yi] = acc, scale[yi] = mag;
                    }
#undef XI
#undef WI
    be->conv3d_fwd(y, x, W, b, B, Cin, Cout, X, Y, Z, k, s, pad);
    char what[128];
    snprintf(what, sizeof what, "conv3d B%d Cin%d Cout%d %dx%dx%d k%d s%d pad%d", B, Cin, Cout, X, Y, Z, k, s, pad);
    compare(what, y, ref, scale, ny);
    if (check_backward) {
        float *dx = filled(nx, NAN), *dW = filled(nw, 0), *db = filled(Cout, 0);
        be->conv3d_bwd(dx, dW, db, dy, x, W, B, Cin, Cout, X, Y, Z, k, s, pad);
        char w2[160];
        snprintf(w2, sizeof w2, "%s backward dx", what);
        compare(w2, dx, dxr, dxs, nx);
        snprintf(w2, sizeof w2, "%s backward dW", what);
        compare(w2, dW, dWr, dWs, nw);
        free(dx), free(dW), free(db);
    }
    free(x), free(W), free(b), free(y), free(ref), free(scale), free(dxr), free(dxs), free(dWr);
    free(dWs), free(dy);
}

static int test_conv3d(void)
{
    conv_case(2, 3, 4, 7, 6, 9, 3, 1, 1, 1);
    conv_case(2, 3, 4, 7, 6, 9, 3, 2, 1, 1);
    conv_case(1, 2, 3, 8, 5, 6, 2, 2, 0, 0);
    conv_case(2, 5, 3, 4, 4, 4, 1, 1, 0, 1);
    /* Column matrix of 16*27 rows x 48*48 per plane: several x-plane slabs per volume. */
    conv_case(1, 16, 4, 10, 48, 48, 3, 1, 1, 1);
    /* Direct kernels: channel blocks with a partial last one (9 = 4 + 4 + 1), z rows of two
     * full vector tiles plus a partial vector (37), a 2x2x2 stride-1 kernel, pad 0 with k 3. */
    conv_case(2, 6, 9, 5, 3, 37, 3, 1, 1, 1);
    conv_case(1, 3, 5, 4, 5, 19, 2, 1, 1, 1);
    conv_case(1, 3, 5, 6, 5, 20, 3, 1, 0, 1);
    return 0;
}

static int test_conv_transpose3d(void)
{
    int B = 2, Cin = 3, Cout = 4, X = 3, Y = 2, Z = 5, k = 2;
    size_t nx = (size_t)B * Cin * X * Y * Z, nw = (size_t)Cin * Cout * k * k * k;
    size_t ny = (size_t)B * Cout * k * X * k * Y * k * Z;
    float *x = randn(nx, 1), *W = randn(nw, 1), *b = randn(Cout, 1), *y = filled(ny, NAN);
    double *ref = dzeros(ny), *scale = dzeros(ny);
    /* PyTorch ConvTranspose3d with stride == kernel: each input voxel paints a k^3 block */
    for (int bi = 0; bi < B; bi++)
        for (int co = 0; co < Cout; co++)
            for (int ox = 0; ox < k * X; ox++)
                for (int oy = 0; oy < k * Y; oy++)
                    for (int oz = 0; oz < k * Z; oz++) {
                        long yi = ((((long)bi * Cout + co) * k * X + ox) * k * Y + oy) * k * Z + oz;
                        double acc = b[co], mag = fabs(b[co]);
                        for (int ci = 0; ci < Cin; ci++) {
                            double t = (double)x[((((long)bi * Cin + ci) * X + ox / k) * Y + oy / k) * Z + oz / k] *
                                       W[((((long)ci * Cout + co) * k + ox % k) * k + oy % k) * k + oz % k];
                            acc += t, mag += fabs(t);
                        }
                        ref[yi] = acc, scale[yi] = mag;
                    }
    be->conv_transpose3d_fwd(y, x, W, b, B, Cin, Cout, X, Y, Z, k);
    compare("conv_transpose3d", y, ref, scale, ny);
    free(x), free(W), free(b), free(y), free(ref), free(scale);
    return 0;
}

/* ------------------------------------------------------------------ norms (threaded sizes) */

static int test_layernorm(void)
{
    int rows = 300, dim = 200;
    size_t n = (size_t)rows * dim;
    float *x = randn(n, 2), *g = randn(dim, 1), *bt = randn(dim, 1), *dy = randn(n, 1);
    for (size_t i = 0; i < n; i++) x[i] += 3.0f; /* an offset the two-pass variance must handle */
    float *y = filled(n, NAN), *mean = filled(rows, 0), *rstd = filled(rows, 0);
    float *dx = filled(n, NAN), *dg = filled(dim, 0), *db = filled(dim, 0);
    double *yr = dzeros(n), *dxr = dzeros(n), *dgr = dzeros(dim), *dbr = dzeros(dim);
    double *ys = dzeros(n), *dxs = dzeros(n), *dgs = dzeros(dim), *dbs = dzeros(dim);
    for (int r = 0; r < rows; r++) {
        double mu = 0, var = 0, sg = 0, sgx = 0;
        for (int d = 0; d < dim; d++) mu += x[r * dim + d];
        mu /= dim;
        for (int d = 0; d < dim; d++) var += (x[r * dim + d] - mu) * (x[r * dim + d] - mu);
        double rs = 1.0 / sqrt(var / dim + 1e-5);
        for (int d = 0; d < dim; d++) {
            double xh = (x[r * dim + d] - mu) * rs, gg = (double)dy[r * dim + d] * g[d];
            yr[r * dim + d] = xh * g[d] + bt[d];
            ys[r * dim + d] = fabs(xh * g[d]) + fabs(bt[d]);
            dgr[d] += dy[r * dim + d] * xh, dgs[d] += fabs(dy[r * dim + d] * xh);
            dbr[d] += dy[r * dim + d], dbs[d] += fabs(dy[r * dim + d]);
            sg += gg, sgx += gg * xh;
        }
        for (int d = 0; d < dim; d++) {
            double xh = (x[r * dim + d] - mu) * rs, gg = (double)dy[r * dim + d] * g[d];
            dxr[r * dim + d] = rs * (gg - sg / dim - xh * sgx / dim);
            dxs[r * dim + d] = rs * (fabs(gg) + 3 * fabs(xh) * (fabs(sg) + fabs(sgx)) / dim + 3);
        }
    }
    be->layernorm_fwd(y, mean, rstd, x, g, bt, rows, dim, 1e-5f);
    be->layernorm_bwd(dx, NULL, dg, db, dy, x, mean, rstd, g, rows, dim);
    compare("layernorm forward", y, yr, ys, n);
    compare("layernorm dx", dx, dxr, dxs, n);
    compare("layernorm dgamma", dg, dgr, dgs, dim);
    compare("layernorm dbeta", db, dbr, dbs, dim);
    free(x), free(g), free(bt), free(dy), free(y), free(mean), free(rstd), free(dx), free(dg);
    free(db), free(yr), free(dxr), free(dgr), free(dbr), free(ys), free(dxs), free(dgs), free(dbs);
    return 0;
}

static int test_instnorm(void)
{
    int B = 2, C = 3;
    long V = 20000;
    size_t n = (size_t)B * C * V;
    float *x = randn(n, 1), *g = randn(C, 1), *bt = randn(C, 1);
    float *y = filled(n, NAN), *mean = filled(B * C, 0), *rstd = filled(B * C, 0);
    double *yr = dzeros(n), *ys = dzeros(n);
    for (int bc = 0; bc < B * C; bc++) {
        double mu = 0, var = 0;
        for (long i = 0; i < V; i++) mu += x[bc * V + i];
        mu /= V;
        for (long i = 0; i < V; i++) var += (x[bc * V + i] - mu) * (x[bc * V + i] - mu);
        double rs = 1.0 / sqrt(var / V + 1e-5);
        for (long i = 0; i < V; i++) {
            double t = (x[bc * V + i] - mu) * rs * g[bc % C];
            yr[bc * V + i] = t + bt[bc % C], ys[bc * V + i] = 3 * fabs(t) + fabs(bt[bc % C]);
        }
    }
    be->instnorm_fwd(y, mean, rstd, x, g, bt, B, C, V, 1e-5f);
    compare("instnorm forward (affine)", y, yr, ys, n);
    free(x), free(g), free(bt), free(y), free(mean), free(rstd), free(yr), free(ys);
    return 0;
}

/* ------------------------------------------------------------------ hand-computed cases */

static int test_hand_cases(void)
{
    float x[2] = {0.0f, logf(2.0f)}, y[2];
    be->softmax_fwd(y, x, 1, 2);
    TEST_CLOSE(y[0], 1.0 / 3.0, 1e-6, 0, "softmax([0, ln 2])[0]");
    TEST_CLOSE(y[1], 2.0 / 3.0, 1e-6, 0, "softmax([0, ln 2])[1]");

    float gx[3] = {1.0f, 0.0f, -1.0f}, gy[3];
    be->gelu_fwd(gy, gx, 3);
    TEST_CLOSE(gy[0], 0.8413447460685429, 1e-6, 0, "GELU(1)");
    TEST_CLOSE(gy[1], 0.0, 0, 1e-12, "GELU(0)");
    TEST_CLOSE(gy[2], -0.15865525393145707, 1e-6, 0, "GELU(-1)");

    /* rows: orthogonal (loss 1), parallel with different lengths (0), opposite (2) */
    float a[6] = {1, 0, 2, 3, 1, 1}, b[6] = {0, 5, 4, 6, -2, -2}, cl[4];
    be->cosine_loss_fwd(&cl[0], a, b, 1, 2);
    be->cosine_loss_fwd(&cl[1], a + 2, b + 2, 1, 2);
    be->cosine_loss_fwd(&cl[2], a + 4, b + 4, 1, 2);
    be->cosine_loss_fwd(&cl[3], a, b, 3, 2);
    TEST_CLOSE(cl[0], 1.0, 1e-6, 0, "cosine loss, orthogonal");
    TEST_CLOSE(cl[1], 0.0, 0, 1e-6, "cosine loss, parallel");
    TEST_CLOSE(cl[2], 2.0, 1e-6, 0, "cosine loss, opposite");
    TEST_CLOSE(cl[3], 1.0, 1e-6, 0, "cosine loss, mean of 1, 0, 2");

    float v[4] = {3, 4, 0, 0}, nv[4], norms[2];
    be->l2norm_fwd(nv, norms, v, 2, 2, 1e-6f);
    TEST_CLOSE(nv[0], 0.6, 1e-6, 0, "l2norm [3, 4]");
    TEST_CLOSE(nv[1], 0.8, 1e-6, 0, "l2norm [3, 4]");
    TEST_CLOSE(norms[0], 5.0, 1e-6, 0, "l2norm norm of [3, 4]");
    TEST_CHECK(nv[2] == 0 && nv[3] == 0, "l2norm of a zero row must stay zero (eps clamp)");

    /* normalize_rows: [1, 2, 3, 4] has mean 2.5, unbiased variance 5/3 (MAE: torch var()) */
    float r[4] = {1, 2, 3, 4}, nr[4];
    be->normalize_rows(nr, r, 1, 4, 0.0f);
    for (int i = 0; i < 4; i++)
        TEST_CLOSE(nr[i], (r[i] - 2.5) / sqrt(5.0 / 3.0), 1e-6, 0, "normalize_rows");

    /* masked MSE: masked rows 0 and 2 have mean squared errors 1 and 4 -> 2.5 */
    float pred[6] = {1, 1, 5, 5, 2, 2}, tgt[6] = {0, 0, 0, 0, 0, 0}, mask[3] = {1, 0, 1};
    float mse;   /* written to backend memory: host memory on the CPU */
    be->masked_mse_fwd(&mse, pred, tgt, mask, 3, 2);
    TEST_CLOSE(mse, 2.5, 1e-6, 0, "masked_mse");

    /* mean pooling */
    float tok[6] = {1, 2, 3, 4, 5, 6}, pooled[2];
    be->mean_rows_fwd(pooled, tok, 1, 3, 2);
    TEST_CLOSE(pooled[0], 3.0, 1e-6, 0, "mean_rows");
    TEST_CLOSE(pooled[1], 4.0, 1e-6, 0, "mean_rows");

    /* leaky ReLU */
    float lx[2] = {-2, 3}, ly[2];
    be->leaky_relu_fwd(ly, lx, 2, 0.01f);
    TEST_CLOSE(ly[0], -0.02, 1e-6, 0, "leaky_relu(-2)");
    TEST_CLOSE(ly[1], 3.0, 1e-6, 0, "leaky_relu(3)");

    /* DiceCE with zero logits, K = 2, V = 4, labels 0,0,0,1: p = 1/2 everywhere.
     * ce = ln 2. Dice class 0: (2*1.5 + s)/(2 + 3 + s); class 1: (2*0.5 + s)/(2 + 1 + s). */
    float logits[8] = {0}, probs[8], seg[SEG_LOSS_VALUE_COUNT];
    int labels[4] = {0, 0, 0, 1};
    be->dicece_fwd(probs, seg, logits, labels, 1, 2, 4);
    double s = 1e-5, d0 = (3 + s) / (5 + s), d1 = (1 + s) / (3 + s);
    TEST_CLOSE(seg[SEG_LOSS_CE], log(2.0), 1e-6, 0, "dicece ce of uniform logits");
    TEST_CLOSE(seg[SEG_LOSS_DICE], 1.0 - (d0 + d1) / 2, 1e-6, 0, "dicece dice of uniform logits");
    TEST_CHECK(seg[SEG_LOSS_BAD_LABELS] == 0.0f, "dicece counted %g bad labels, expected none",
               seg[SEG_LOSS_BAD_LABELS]);
    /* Labels outside 0..K-1 are counted (the reader stops the run) and left out of ce: two of
     * four voxels (-1 and K) leave ce = 2 ln 2 / 4. */
    int bad[4] = {0, -1, 2, 1};
    be->dicece_fwd(probs, seg, logits, bad, 1, 2, 4);
    TEST_CHECK(seg[SEG_LOSS_BAD_LABELS] == 2.0f, "dicece counted %g bad labels, expected 2",
               seg[SEG_LOSS_BAD_LABELS]);
    TEST_CLOSE(seg[SEG_LOSS_CE], 2 * log(2.0) / 4, 1e-6, 0, "dicece ce without the bad labels");
    TEST_CLOSE(probs[5], 0.5, 1e-7, 0, "dicece probs");
    /* ... and the backward reads nothing past the class planes for them (it read
     * probs[label * V + v]): at a bad voxel no class is hit, dz_k = ce_scale p_k + p_k (c_k -
     * sum_j c_j p_j), and with p = 1/2 for both classes and c equal for both (each class has
     * one labelled voxel), dz_k = (1 / (B V)) p_k = 0.125 for w_ce = w_dice = 1. */
    float dl[8];
    be->dicece_bwd(dl, probs, bad, 1, 2, 4, 1.0f, 1.0f);
    for (int k = 0; k < 2; k++)
        for (int v = 1; v <= 2; v++)
            TEST_CLOSE(dl[k * 4 + v], 0.125, 1e-6, 0, "dicece_bwd at a label outside 0..K-1");
    return 0;
}

static int test_dicece_large(void)
{
    /* Many voxels (threaded, several chunks, a ragged last chunk) against a double loop. */
    int B = 2, K = 5;
    long V = 3001;
    size_t n = (size_t)B * K * V;
    float *logits = randn(n, 2), *probs = filled(n, NAN), *dl = filled(n, NAN),
          v[SEG_LOSS_VALUE_COUNT];
    int *labels = malloc((size_t)B * V * sizeof(int));
    for (long i = 0; i < B * V; i++) labels[i] = (int)((i * 7 + i / 13) % K);
    double *p = dzeros(n), ce_ref = 0, inter[10] = {0}, ps[10] = {0}, ys[10] = {0};
    for (int b = 0; b < B; b++)
        for (long v = 0; v < V; v++) {
            double mx = -INFINITY, sum = 0;
            for (int k = 0; k < K; k++) mx = fmax(mx, logits[(b * K + k) * V + v]);
            for (int k = 0; k < K; k++) sum += exp(logits[(b * K + k) * V + v] - mx);
            for (int k = 0; k < K; k++) {
                double pk = exp(logits[(b * K + k) * V + v] - mx) / sum;
                int y = labels[b * V + v] == k;
                p[(b * K + k) * V + v] = pk;
                inter[b * K + k] += pk * y, ps[b * K + k] += pk, ys[b * K + k] += y;
                if (y) ce_ref -= log(pk);
            }
        }
    double dice_ref = 0;
    for (int i = 0; i < B * K; i++) dice_ref += (2 * inter[i] + 1e-5) / (ps[i] + ys[i] + 1e-5);
    dice_ref = 1 - dice_ref / (B * K);
    ce_ref /= (double)B * V;
    be->dicece_fwd(probs, v, logits, labels, B, K, V);
    compare("dicece probs", probs, p, NULL, n);
    TEST_CLOSE(v[SEG_LOSS_CE], ce_ref, 1e-5, 0, "dicece ce");
    TEST_CLOSE(v[SEG_LOSS_DICE], dice_ref, 1e-5, 0, "dicece dice");
    /* backward: the closed form in double */
    double *dref = dzeros(n), *dscale = dzeros(n);
    for (int b = 0; b < B; b++)
        for (long v = 0; v < V; v++) {
            double g[5], dot = 0;
            for (int k = 0; k < K; k++) {
                int i = b * K + k, y = labels[b * V + v] == k;
                double den = ps[i] + ys[i] + 1e-5, num = 2 * inter[i] + 1e-5;
                g[k] = -(2.0 * y / den - num / (den * den)) / (B * K);
                dot += p[i * V + v] * g[k];
            }
            for (int k = 0; k < K; k++) {
                long i = (b * K + k) * V + v;
                int y = labels[b * V + v] == k;
                dref[i] = 0.5 * (p[i] - y) / ((double)B * V) + 2.0 * p[i] * (g[k] - dot);
                dscale[i] = fabs(dref[i]) + 1e-3 / ((double)B * V);
            }
        }
    be->dicece_bwd(dl, probs, labels, B, K, V, 0.5f, 2.0f);
    compare("dicece backward", dl, dref, dscale, n);
    free(logits), free(probs), free(dl), free(labels), free(p), free(dref), free(dscale);
    return 0;
}

/* GELU and its derivative across [-8, 8] (both tails, the erf approximation's whole range)
 * against libm's double erf and exp. */
static int test_gelu_dense(void)
{
    size_t n = 160001;
    float *x = filled(n, 0), *y = filled(n, NAN), *dx = filled(n, NAN), *one = filled(n, 1);
    double *yr = dzeros(n), *dr = dzeros(n), *scale = dzeros(n);
    for (size_t i = 0; i < n; i++) {
        x[i] = -8.0f + 16.0f * (float)i / (float)(n - 1);
        double xv = x[i], cdf = 0.5 * (1 + erf(xv / sqrt(2.0))), pdf = exp(-0.5 * xv * xv) / sqrt(2 * M_PI);
        yr[i] = xv * cdf, dr[i] = cdf + xv * pdf;
        scale[i] = 1.0 + fabs(xv); /* the erf error (1.5e-7) is multiplied by x/2 */
    }
    be->gelu_fwd(y, x, n);
    be->gelu_bwd(dx, one, x, n);
    compare("gelu forward on [-8, 8]", y, yr, scale, n);
    compare("gelu backward on [-8, 8]", dx, dr, scale, n);
    free(x), free(y), free(dx), free(one), free(yr), free(dr), free(scale);
    return 0;
}

/* softmax rows spanning the whole exp range (differences up to 120) against double */
static int test_softmax_range(void)
{
    int rows = 64, cols = 300;
    size_t n = (size_t)rows * cols;
    float *x = randn(n, 20), *y = filled(n, NAN);
    double *ref = dzeros(n);
    for (int r = 0; r < rows; r++) {
        double mx = -INFINITY, sum = 0;
        for (int c = 0; c < cols; c++) mx = fmax(mx, x[r * cols + c]);
        for (int c = 0; c < cols; c++) sum += exp(x[r * cols + c] - mx);
        for (int c = 0; c < cols; c++) ref[r * cols + c] = exp(x[r * cols + c] - mx) / sum;
    }
    be->softmax_fwd(y, x, rows, cols);
    compare("softmax over a wide range", y, ref, NULL, n);
    float big[3] = {-INFINITY, 0.0f, -1000.0f}, out[3];
    be->softmax_fwd(out, big, 1, 3);
    TEST_CHECK(out[0] == 0.0f && fabsf(out[1] - 1.0f) < 1e-7f && out[2] < 1e-30f,
               "softmax of [-inf, 0, -1000] = [%g, %g, %g], expected [0, 1, 0]", out[0], out[1], out[2]);
    free(x), free(y), free(ref);
    return 0;
}

/* ------------------------------------------------------------------ tokens */

static int test_patchify_layout(void)
{
    /* token n = (ix gy + iy) gz + iz, element (px p + py) p + pz (MONAI patch embedding) */
    int B = 2, X = 6, Y = 4, Z = 8, p = 2, gy = Y / p, gz = Z / p, ntok = (X / p) * gy * gz;
    size_t n = (size_t)B * X * Y * Z;
    float *vol = randn(n, 1), *pt = filled(n, NAN);
    be->patchify(pt, vol, B, X, Y, Z, p);
    size_t bad = 0;
    for (int b = 0; b < B; b++)
        for (int x = 0; x < X; x++)
            for (int y = 0; y < Y; y++)
                for (int z = 0; z < Z; z++) {
                    long tokn = ((long)(x / p) * gy + y / p) * gz + z / p;
                    long e = ((long)(x % p) * p + y % p) * p + z % p;
                    bad += pt[((long)b * ntok + tokn) * p * p * p + e] != vol[(((long)b * X + x) * Y + y) * Z + z];
                }
    TEST_CHECK(bad == 0, "patchify layout: %zu of %zu voxels misplaced", bad, n);
    free(vol), free(pt);
    return 0;
}

static int test_token_moves(void)
{
    int B = 2, N = 5, nvis = 3, C = 4;
    int perm[10] = {4, 1, 2, 0, 3, 0, 3, 4, 1, 2};
    float *vis = randn((size_t)B * nvis * C, 1), tokv[4] = {9, 8, 7, 6};
    float *out = filled((size_t)B * N * C, NAN);
    be->insert_mask_tokens(out, vis, tokv, perm, B, N, nvis, C);
    size_t bad = 0;
    for (int b = 0; b < B; b++)
        for (int j = 0; j < N; j++)
            for (int c = 0; c < C; c++) {
                float want = j < nvis ? vis[((long)b * nvis + j) * C + c] : tokv[c];
                bad += out[((long)b * N + perm[b * N + j]) * C + c] != want;
            }
    TEST_CHECK(bad == 0, "insert_mask_tokens: %zu entries wrong", bad);
    /* gather the visible rows back: the inverse */
    float *back = filled((size_t)B * nvis * C, NAN);
    be->gather_rows(back, out, perm, N, B, N, nvis, C);
    TEST_CHECK(memcmp(back, vis, (size_t)B * nvis * C * sizeof(float)) == 0,
               "gather_rows(insert_mask_tokens(v)) != v");
    /* position table rows added by index */
    float table[5 * 4];
    for (int i = 0; i < 20; i++) table[i] = (float)i;
    be->add_table_rows(back, table, perm, N, B, nvis, C);
    bad = 0;
    for (int b = 0; b < B; b++)
        for (int j = 0; j < nvis; j++)
            for (int c = 0; c < C; c++)
                bad += back[((long)b * nvis + j) * C + c] != vis[((long)b * nvis + j) * C + c] + table[perm[b * N + j] * C + c];
    TEST_CHECK(bad == 0, "add_table_rows: %zu entries wrong", bad);
    /* transpose tokens -> channels, larger than a tile in both directions */
    int rows = 70, cols = 45;
    float *t = randn((size_t)B * rows * cols, 1), *tt = filled((size_t)B * rows * cols, NAN);
    be->transpose_tokens(tt, t, B, rows, cols);
    bad = 0;
    for (int b = 0; b < B; b++)
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                bad += tt[((long)b * cols + c) * rows + r] != t[((long)b * rows + r) * cols + c];
    TEST_CHECK(bad == 0, "transpose_tokens: %zu entries wrong", bad);
    free(vis), free(out), free(back), free(t), free(tt);
    return 0;
}

/* ------------------------------------------------------------------ optimiser and EMA */

static int test_adamw(void)
{
    size_t n = 50000;
    float lr = 1e-3f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.05f;
    float *p = randn(n, 1), *g1 = randn(n, 1), *g2 = randn(n, 1);
    float *m = filled(n, 0), *v = filled(n, 0);
    double *pr = dzeros(n), *mr = dzeros(n), *vr = dzeros(n);
    for (size_t i = 0; i < n; i++) pr[i] = p[i];
    for (long step = 1; step <= 2; step++) {
        const float *g = step == 1 ? g1 : g2;
        for (size_t i = 0; i < n; i++) {
            pr[i] *= 1.0 - (double)lr * wd; /* decoupled decay */
            mr[i] = b1 * mr[i] + (1.0 - b1) * g[i];
            vr[i] = b2 * vr[i] + (1.0 - b2) * (double)g[i] * g[i];
            double mhat = mr[i] / (1.0 - pow(b1, step)), vhat = vr[i] / (1.0 - pow(b2, step));
            pr[i] -= lr * mhat / (sqrt(vhat) + eps);
        }
        const AdamwHyper h = {lr, b1, b2, eps, wd, step, 1.0f};
        be->adamw(p, g, m, v, NULL, n, h, NULL, 0.0f); /* every element decays */
        char what[64];
        snprintf(what, sizeof what, "adamw step %ld param", step);
        compare(what, p, pr, NULL, n);
        snprintf(what, sizeof what, "adamw step %ld m", step);
        compare(what, m, mr, NULL, n);
        snprintf(what, sizeof what, "adamw step %ld v", step);
        compare(what, v, vr, NULL, n);
    }
    /* weight_decay 0 (the no-decay tensors): pure Adam, the first step moves by lr sign(g) */
    float p0[2] = {1, 1}, gg[2] = {0.3f, -2}, m0[2] = {0}, v0[2] = {0};
    be->adamw(p0, gg, m0, v0, NULL, 2, (AdamwHyper){0.01f, b1, b2, 1e-12f, 0.0f, 1, 1.0f}, NULL,
              0.0f);
    TEST_CLOSE(p0[0], 0.99, 1e-6, 0, "adam first step, positive gradient");
    TEST_CLOSE(p0[1], 1.01, 1e-6, 0, "adam first step, negative gradient");
    free(p), free(g1), free(g2), free(m), free(v), free(pr), free(mr), free(vr);
    return 0;
}

static int test_ema(void)
{
    size_t n = 40000;
    float *t = randn(n, 1), *o = randn(n, 1);
    double *ref = dzeros(n);
    for (size_t i = 0; i < n; i++) ref[i] = 0.996 * t[i] + 0.004 * o[i];
    be->ema_update(t, o, n, 0.996f);
    compare("ema_update", t, ref, NULL, n);
    free(t), free(o), free(ref);
    return 0;
}

int main(void)
{
    be = backend_cpu();
    TEST_RUN(test_table_complete);
    TEST_RUN(test_memory_and_elementwise);
    TEST_RUN(test_gemm);
    TEST_RUN(test_linear);
    TEST_RUN(test_attention);
    TEST_RUN(test_attention_unsaved);
    TEST_RUN(test_conv3d);
    TEST_RUN(test_conv_transpose3d);
    TEST_RUN(test_layernorm);
    TEST_RUN(test_instnorm);
    TEST_RUN(test_hand_cases);
    TEST_RUN(test_gelu_dense);
    TEST_RUN(test_softmax_range);
    TEST_RUN(test_dicece_large);
    TEST_RUN(test_patchify_layout);
    TEST_RUN(test_token_moves);
    TEST_RUN(test_adamw);
    TEST_RUN(test_ema);
    return test_finish();
}
