/* Minimal test harness for C tests. A test binary runs its cases with TEST_RUN, then returns
 * test_finish(): exit 0 when every check passed, 1 on any failure, 77 when every case skipped
 * (tests/run.sh counts 77 as skipped). Checks print the failing values, file and line. */
#ifndef ALICE_TEST_H
#define ALICE_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

static int test_failures = 0, test_cases = 0, test_skipped = 0, test_case_failed = 0;

#define TEST_CHECK(cond, ...) do { if (!(cond)) { \
    fprintf(stderr, "  FAIL %s:%d: ", __FILE__, __LINE__); fprintf(stderr, __VA_ARGS__); \
    fputc('\n', stderr); test_failures++; test_case_failed = 1; } } while (0)

/* |a - b| <= atol + rtol * |b| */
#define TEST_CLOSE(a, b, rtol, atol, what) do { double a_ = (a), b_ = (b); \
    TEST_CHECK(fabs(a_ - b_) <= (atol) + (rtol) * fabs(b_) && !isnan(a_), \
               "%s: got %.9g, expected %.9g (rtol %g, atol %g)", what, a_, b_, \
               (double)(rtol), (double)(atol)); } while (0)

/* A case returns 0 when it ran, 77 when it skipped (with a message saying why). */
#define TEST_RUN(fn) do { test_cases++; test_case_failed = 0; \
    int r_ = fn(); \
    if (r_ == 77) { test_skipped++; printf("  skip %s\n", #fn); } \
    else printf("  %s %s\n", test_case_failed ? "FAIL" : "ok  ", #fn); \
    fflush(stdout); } while (0)

/* n standard-normal values times scale from the counter RNG (seed, stream); malloc'd. */
static inline float *test_randn(uint64_t seed, uint32_t stream, size_t n, float scale)
{
    RngStream s;
    rng_init(&s, seed, 0, stream, RNG_TEST);
    float *x = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = scale * rng_normal(&s);
    return x;
}

/* A malloc'd copy of n floats (the inputs an in-place or accumulating op is about to change). */
static inline float *test_copy(const float *x, size_t n)
{
    float *y = malloc((n ? n : 1) * sizeof(float));
    memcpy(y, x, n * sizeof(float));
    return y;
}

/* Every got[i] within rel * (scale ? scale[i] : |ref[i]|) + abs_tol of a double reference;
 * counts the entries off and reports the worst one. */
static inline void test_compare_ref(const char *what, const float *got, const double *ref,
                                    const double *scale, size_t n, double rel, double abs_tol)
{
    size_t bad = 0, worst_i = 0;
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double tol = rel * (scale ? scale[i] : fabs(ref[i])) + abs_tol;
        double r = fabs(got[i] - ref[i]) / tol;
        if (!(r <= 1.0)) bad++;
        if (!(r <= worst)) worst = r, worst_i = i;
    }
    TEST_CHECK(bad == 0, "%s: %zu of %zu entries off; worst %zu: got %.9g, expected %.9g", what,
               bad, n, worst_i, n ? got[worst_i] : 0.0f, n ? ref[worst_i] : 0.0);
}

/* n copies of v; malloc'd. */
static inline float *test_filled(size_t n, float v)
{
    float *x = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = v;
    return x;
}

/* Reference for the attention tests: the scaled scores q_i . k_j / sqrt(Dh), j < Tk, of query
 * row (b, h, i) in double into s[Tk] (layouts of the backend's attention contract); returns
 * their maximum. */
static inline double test_attention_scores(double *s, const float *q, const float *k, int b, int h,
                                           int i, int Tq, int Tk, int Dh, int ldq, int ldkv)
{
    double mx = -INFINITY;
    for (int j = 0; j < Tk; j++) {
        double d = 0.0;
        for (int e = 0; e < Dh; e++)
            d += (double)q[((size_t)b * Tq + i) * ldq + h * Dh + e] *
                 k[((size_t)b * Tk + j) * ldkv + h * Dh + e];
        s[j] = d / sqrt((double)Dh);
        mx = fmax(mx, s[j]);
    }
    return mx;
}

/* Central finite difference (loss(x + h) - loss(x - h)) / 2h of one scalar *x of a model,
 * which is restored afterwards; loss(ctx) evaluates the model (the gradient tests). */
static inline double test_central_difference(float *x, float h, double (*loss)(void *ctx), void *ctx)
{
    const float keep = *x;
    *x = keep + h;
    const double up = loss(ctx);
    *x = keep - h;
    const double down = loss(ctx);
    *x = keep;
    return (up - down) / (2.0 * h);
}

static inline int test_finish(void)
{
    if (test_failures) return 1;
    if (test_cases > 0 && test_skipped == test_cases) return 77;
    return 0;
}

#endif
