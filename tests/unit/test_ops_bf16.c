/* The bf16 format (ops/bf16.h) and the CPU backend's mixed-precision ops (linear, layernorm,
 * GELU, attention with bf16 activations) against references written here in double from the
 * same bf16 inputs -- never by calling the fp32 CPU op the mixed-precision op is built on.
 *
 * Tolerances (stated per case below):
 *  - an fp32 result of a sum of K terms against the double reference:
 *      |got - ref| <= 2e-5 * scale + 1e-6, scale = sum of |terms|
 *    (K fp32 roundings of partial sums bounded by K * 2^-24 * scale; K <= 100 here, so
 *    6e-6 * scale, with margin for OpenBLAS's blocking);
 *  - a bf16 output, rounded once (to nearest) from an fp32 result r: |round(r) - ref| <=
 *    |round(r) - r| + |r - ref| <= half a bf16 ulp at |r| + the fp32 bound e, and |r| <=
 *    |ref| + e, so the tolerance is e + ulp(|ref| + e) / 2 (at most one ulp of the output;
 *    tight enough that truncating instead of rounding fails).
 * Outputs are poisoned with NaN first, so an entry the op never writes fails. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/rng.h"
#include "bf16_ref.h"
#include "ops/backend.h"
#include "test.h"

#define REL 2e-5
#define ABS 1e-6

static const AliceBackend *be;
static uint32_t next_stream = 1;

static const bf16_t BF16_QNAN = 0x7fc0;

static float *randn(size_t n, float scale) { return test_randn(4242, next_stream++, n, scale); }

/* n standard normals times scale, rounded to bf16 (the bf16 tensors the ops read). */
static bf16_t *randn_bf16(size_t n, float scale)
{
    return test_randn_bf16(4242, next_stream++, n, scale);
}

static bf16_t *bf16_filled(size_t n, bf16_t v)
{
    bf16_t *h = malloc((n ? n : 1) * sizeof(bf16_t));
    for (size_t i = 0; i < n; i++) h[i] = v;
    return h;
}

static double *dzeros(size_t n) { return calloc(n ? n : 1, sizeof(double)); }

/* One bf16 ulp at magnitude a: bf16 keeps 8 significant bits, so for a in [2^(e-1), 2^e) the
 * spacing is 2^(e-8); below the normal range it is the denormal spacing 2^-133. */
static double bf16_ulp(double a)
{
    int e;
    frexp(fabs(a), &e);
    if (e < -125) e = -125;
    return ldexp(1.0, e - 8);
}

/* Compares an fp32 output with a double reference (tolerance on scale, see the top). */
static void compare_f32(const char *what, const float *got, const double *ref, const double *scale,
                        size_t n)
{
    test_compare_ref(what, got, ref, scale, n, REL, ABS);
}

/* Compares a bf16 output with a double reference: fp32 bound plus half a bf16 ulp. */
static void compare_bf16(const char *what, const bf16_t *got, const double *ref,
                         const double *scale, size_t n)
{
    size_t bad = 0, worst_i = 0;
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double f32 = REL * (scale ? scale[i] : fabs(ref[i])) + ABS;
        double tol = f32 + 0.5 * bf16_ulp(fabs(ref[i]) + f32);
        double r = fabs(bf16_value(got[i]) - ref[i]) / tol;
        if (!(r <= 1.0)) bad++;
        if (!(r <= worst)) worst = r, worst_i = i;
    }
    TEST_CHECK(bad == 0, "%s: %zu of %zu entries off; worst %zu: got %.9g, expected %.9g", what,
               bad, n, worst_i, bf16_value(got[worst_i]), ref[worst_i]);
}

/* ------------------------------------------------------------------ the format */

/* bf16_reference_round (bf16_ref.h) writes round to nearest even out independently. */

static int test_bf16_format(void)
{
    /* Hand cases (1 has pattern 0x3f80; one bf16 ulp at 1 is 2^-7):
     *  1 + 2^-8       is halfway between 1 and 1 + 2^-7: tie, 0x3f80 is even -> 1 (0x3f80)
     *  1 + 3*2^-8     halfway between 1 + 2^-7 (0x3f81, odd) and 1 + 2^-6 (0x3f82) -> 0x3f82
     *  1 + 2^-8 + 2^-20  just above the tie -> 1 + 2^-7 (0x3f81)
     *  1 + 2^-8 - 2^-23  just below the tie -> 1
     *  -(1 + 3*2^-8)  the sign does not change the rounding -> 0xbf82
     *  FLT_MAX (0x7f7fffff) is past the halfway point 0x7f7f8000 -> +inf (0x7f80)
     *  0x7f7f8000 is the exact tie above the largest finite bf16 (0x7f7f, odd) -> +inf
     *  0x7f7f7fff is below it -> 0x7f7f = (2 - 2^-7) 2^127 = 3.38953139e38, the largest finite
     *  -0 keeps its sign (0x8000); the smallest fp32 denormal 2^-149 -> +0
     *  0x00018000 (a denormal tie above the odd 0x0001) -> 0x0002 */
    struct { float x; uint16_t want; const char *what; } cases[] = {
        {1.0f, 0x3f80, "1"},
        {1.0f + 0x1p-8f, 0x3f80, "1 + 2^-8 (tie to even, down)"},
        {1.0f + 3 * 0x1p-8f, 0x3f82, "1 + 3*2^-8 (tie to even, up)"},
        {1.0f + 0x1p-8f + 0x1p-20f, 0x3f81, "just above a tie"},
        {1.0f + 0x1p-8f - 0x1p-23f, 0x3f80, "just below a tie"},
        {-(1.0f + 3 * 0x1p-8f), 0xbf82, "negative tie"},
        {bits_float(0x7f7fffffu), 0x7f80, "FLT_MAX overflows to inf"},
        {bits_float(0x7f7f8000u), 0x7f80, "tie above the largest finite bf16"},
        {bits_float(0x7f7f7fffu), 0x7f7f, "largest finite bf16"},
        {-bits_float(0x7f7f7fffu), 0xff7f, "most negative finite bf16"},
        {-0.0f, 0x8000, "-0"},
        {bits_float(0x00000001u), 0x0000, "smallest denormal"},
        {bits_float(0x00018000u), 0x0002, "denormal tie"},
        {INFINITY, 0x7f80, "+inf"},
        {-INFINITY, 0xff80, "-inf"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t got = bf16_from_float(cases[i].x);
        TEST_CHECK(got == cases[i].want, "%s: 0x%04x, expected 0x%04x", cases[i].what, got,
                   cases[i].want);
    }
    TEST_CHECK(bf16_value(0x7f7f) == 0x1.fep127, "largest finite value %.9g", bf16_value(0x7f7f));
    TEST_CHECK(bf16_round(1.0f + 3 * 0x1p-8f) == 1.0f + 0x1p-6f, "bf16_round of a tie");

    /* NaNs stay NaN, signalling ones (0x7f800001 would truncate to inf) and those whose
     * rounding would carry into the sign bit included. */
    const uint32_t nans[] = {0x7fc00000u, 0x7f800001u, 0x7fffffffu, 0xffffffffu, 0xff800001u,
                             0x7f80ffffu};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        float r = bf16_to_float(bf16_from_float(bits_float(nans[i])));
        TEST_CHECK(isnan(r), "NaN 0x%08x became %g", nans[i], r);
        TEST_CHECK(isnan(bf16_round(bits_float(nans[i]))), "bf16_round(NaN 0x%08x)", nans[i]);
    }

    /* Every non-NaN pattern widens exactly (the upper half of the fp32) and comes back. */
    long bad_widen = 0, bad_back = 0;
    for (uint32_t h = 0; h < 65536u; h++) {
        if ((h & 0x7f80u) == 0x7f80u && (h & 0x007fu)) continue; /* NaN */
        float f = bf16_to_float((bf16_t)h);
        bad_widen += float_bits(f) != h << 16;
        bad_back += bf16_from_float(f) != h;
    }
    TEST_CHECK(bad_widen == 0, "%ld patterns widened wrongly", bad_widen);
    TEST_CHECK(bad_back == 0, "%ld patterns did not round-trip", bad_back);

    /* Random fp32 patterns (every exponent) against the reference rounding. */
    RngStream s;
    rng_init(&s, 4242, 0, 0, RNG_TEST);
    long bad_random = 0;
    uint32_t first_bad = 0;
    for (int i = 0; i < 200000; i++) {
        uint32_t bits = rng_u32(&s);
        /* every fourth one a tie or near-tie pattern, which random bits rarely give */
        if (i % 4 == 0) bits = (bits & 0xffff0000u) | (0x8000u + (uint32_t)(i % 3) - 1u);
        float x = bits_float(bits);
        if (isnan(x)) continue;
        if (bf16_from_float(x) != bf16_reference_round(x)) {
            if (!bad_random) first_bad = bits;
            bad_random++;
        }
    }
    TEST_CHECK(bad_random == 0, "%ld random patterns rounded wrongly (first 0x%08x)", bad_random,
               first_bad);
    return 0;
}

/* ------------------------------------------------------------------ linear */

/* y[r, o] = sum_i x[r, i] round(W[o, i]) + bias (bias rounded when round_bias) in double;
 * scale = sum of |terms|. */
static void linear_reference(double *ref, double *scale, const bf16_t *x, const float *W,
                             const float *b, int round_bias, int rows, int in, int out)
{
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < out; o++) {
            double bias = b ? (round_bias ? bf16_value(bf16_reference_round(b[o])) : b[o]) : 0.0;
            double acc = bias, mag = fabs(bias);
            for (int i = 0; i < in; i++) {
                double t = bf16_value(x[(long)r * in + i]) *
                           bf16_value(bf16_reference_round(W[(long)o * in + i]));
                acc += t;
                mag += fabs(t);
            }
            ref[(long)r * out + o] = acc;
            scale[(long)r * out + o] = mag;
        }
}

static int test_linear_fwd(void)
{
    /* Sizes not multiples of anything; rows*in*out large enough to split across threads. */
    const int rows = 70, in = 67, out = 45;
    const size_t nx = (size_t)rows * in, ny = (size_t)rows * out;
    bf16_t *x = randn_bf16(nx, 1.0f);
    float *W = randn((size_t)out * in, 0.3f), *b = randn(out, 0.5f);
    double *ref = dzeros(ny), *scale = dzeros(ny);

    for (int with_bias = 0; with_bias <= 1; with_bias++) {
        const float *bias = with_bias ? b : NULL;
        /* fp32 output: the bias unrounded */
        float *yf = test_filled(ny, NAN);
        be->linear_fwd_bf16(yf, DTYPE_F32, x, W, bias, NULL, rows, in, out);
        linear_reference(ref, scale, x, W, bias, 0, rows, in, out);
        compare_f32(with_bias ? "linear fp32 y" : "linear fp32 y (no bias)", yf, ref, scale, ny);

        /* bf16 output: the bias rounded before it is added */
        bf16_t *yh = bf16_filled(ny, BF16_QNAN);
        be->linear_fwd_bf16(yh, DTYPE_BF16, x, W, bias, NULL, rows, in, out);
        linear_reference(ref, scale, x, W, bias, 1, rows, in, out);
        compare_bf16(with_bias ? "linear bf16 y" : "linear bf16 y (no bias)", yh, ref, scale, ny);

        /* Rounded once from the fp32 result: the bf16 output is exactly the fp32 output (with
         * the bias pre-rounded) rounded. */
        float *br = malloc(out * sizeof(float));
        for (int o = 0; o < out; o++) br[o] = (float)bf16_value(bf16_reference_round(b[o]));
        be->linear_fwd_bf16(yf, DTYPE_F32, x, W, with_bias ? br : NULL, NULL, rows, in, out);
        size_t differ = 0;
        for (size_t i = 0; i < ny; i++) differ += yh[i] != bf16_reference_round(yf[i]);
        TEST_CHECK(differ == 0, "%zu bf16 outputs are not the fp32 result rounded once", differ);
        free(br);
        free(yh);
        free(yf);
    }

    /* Hand case for the bias rounding (one row, one input): x = 3*2^-10, W = 1,
     * b = 1 + 2^-9. fp32 output: 1 + 5*2^-10 exactly. bf16 output: b rounds to 1 first
     * (2^-9 is below half an ulp, 2^-8), then 1 + 3*2^-10 rounds to 1; rounding the
     * unrounded sum 1 + 5*2^-10 (above the tie 1 + 2^-8) would give 1 + 2^-7 instead. */
    {
        bf16_t hx = bf16_from_float(3 * 0x1p-10f), hy = BF16_QNAN;
        float hW = 1.0f, hb = 1.0f + 0x1p-9f, fy = NAN;
        be->linear_fwd_bf16(&fy, DTYPE_F32, &hx, &hW, &hb, NULL, 1, 1, 1);
        TEST_CHECK(fy == 1.0f + 5 * 0x1p-10f, "hand fp32 y %.9g", fy);
        be->linear_fwd_bf16(&hy, DTYPE_BF16, &hx, &hW, &hb, NULL, 1, 1, 1);
        TEST_CHECK(hy == 0x3f80, "hand bf16 y 0x%04x (%.9g), expected 1 (0x3f80)", hy,
                   bf16_value(hy));
    }
    free(scale);
    free(ref);
    free(b);
    free(W);
    free(x);
    return 0;
}

static int test_linear_bwd(void)
{
    const int rows = 63, in = 41, out = 52;
    const size_t nx = (size_t)rows * in, nw = (size_t)out * in, ny = (size_t)rows * out;
    bf16_t *x = randn_bf16(nx, 1.0f);
    float *W = randn(nw, 0.3f), *dy = randn(ny, 0.7f);
    float *dW0 = randn(nw, 0.2f), *db0 = randn(out, 0.2f);

    /* References in double: dyr = round(dy), Wr = round(W). */
    double *dx_ref = dzeros(nx), *dx_scale = dzeros(nx);
    double *dW_ref = dzeros(nw), *dW_scale = dzeros(nw);
    double *db_ref = dzeros(out), *db_scale = dzeros(out);
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < in; i++)
            for (int o = 0; o < out; o++) {
                double t = bf16_value(bf16_reference_round(dy[(long)r * out + o])) *
                           bf16_value(bf16_reference_round(W[(long)o * in + i]));
                dx_ref[(long)r * in + i] += t;
                dx_scale[(long)r * in + i] += fabs(t);
            }
    for (int o = 0; o < out; o++)
        for (int i = 0; i < in; i++) {
            double acc = dW0[(long)o * in + i], mag = fabs(acc);
            for (int r = 0; r < rows; r++) {
                double t = bf16_value(bf16_reference_round(dy[(long)r * out + o])) *
                           bf16_value(x[(long)r * in + i]);
                acc += t;
                mag += fabs(t);
            }
            dW_ref[(long)o * in + i] = acc;
            dW_scale[(long)o * in + i] = mag;
        }
    /* db from the UNROUNDED dy (the contract) */
    for (int o = 0; o < out; o++) {
        double acc = db0[o], mag = fabs(acc);
        for (int r = 0; r < rows; r++) {
            acc += dy[(long)r * out + o];
            mag += fabs(dy[(long)r * out + o]);
        }
        db_ref[o] = acc;
        db_scale[o] = mag;
    }

    float *dx = test_filled(nx, NAN), *dW = malloc(nw * sizeof(float)),
          *db = malloc(out * sizeof(float));
    memcpy(dW, dW0, nw * sizeof(float));
    memcpy(db, db0, out * sizeof(float));
    be->linear_bwd_bf16(dx, dW, db, dy, x, W, rows, in, out);
    compare_f32("linear_bwd dx (overwritten)", dx, dx_ref, dx_scale, nx);
    compare_f32("linear_bwd dW (accumulated)", dW, dW_ref, dW_scale, nw);
    compare_f32("linear_bwd db (unrounded dy)", db, db_ref, db_scale, out);

    /* The unrounded-dy rule is visible: rounding dy would move db by far more than the
     * tolerance (dy is not bf16-representable, so its rounding errors are ~2^-9 |dy|). */
    double db_rounded_dy = db0[0];
    for (int r = 0; r < rows; r++)
        db_rounded_dy += bf16_value(bf16_reference_round(dy[(long)r * out]));
    TEST_CHECK(fabs(db_rounded_dy - db_ref[0]) > REL * db_scale[0] + ABS,
               "test is blind to the db rule (dy rounding moved db[0] by only %g)",
               fabs(db_rounded_dy - db_ref[0]));

    /* NULL gradients are skipped; each one alone is still right. */
    float *dx1 = test_filled(nx, NAN);
    be->linear_bwd_bf16(dx1, NULL, NULL, dy, x, W, rows, in, out);
    compare_f32("linear_bwd dx alone", dx1, dx_ref, dx_scale, nx);
    memcpy(dW, dW0, nw * sizeof(float));
    be->linear_bwd_bf16(NULL, dW, NULL, dy, x, W, rows, in, out);
    compare_f32("linear_bwd dW alone", dW, dW_ref, dW_scale, nw);
    memcpy(db, db0, out * sizeof(float));
    be->linear_bwd_bf16(NULL, NULL, db, dy, x, W, rows, in, out);
    compare_f32("linear_bwd db alone", db, db_ref, db_scale, out);
    be->linear_bwd_bf16(NULL, NULL, NULL, dy, x, W, rows, in, out); /* nothing to do */

    free(dx1);
    free(db);
    free(dW);
    free(dx);
    free(db_scale);
    free(db_ref);
    free(dW_scale);
    free(dW_ref);
    free(dx_scale);
    free(dx_ref);
    free(db0);
    free(dW0);
    free(dy);
    free(W);
    free(x);
    return 0;
}

/* ------------------------------------------------------------------ layernorm, GELU */

static int test_layernorm_fwd(void)
{
    const int rows = 17, dim = 96;
    const float eps = 1e-5f;
    const size_t n = (size_t)rows * dim;
    float *x = randn(n, 2.0f), *gamma = randn(dim, 1.0f), *beta = randn(dim, 0.5f);
    for (int r = 0; r < rows; r++)
        for (int d = 0; d < dim; d++) x[(long)r * dim + d] += 3.0f * (float)r - 20.0f; /* offsets */
    double *ref = dzeros(n), *scale = dzeros(n), *mean_ref = dzeros(rows),
           *rstd_ref = dzeros(rows);
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (long)r * dim;
        double m = 0.0, v = 0.0;
        for (int d = 0; d < dim; d++) m += xr[d];
        m /= dim;
        for (int d = 0; d < dim; d++) v += (xr[d] - m) * (xr[d] - m);
        v /= dim; /* biased, as nn.LayerNorm */
        double rs = 1.0 / sqrt(v + eps);
        mean_ref[r] = m;
        rstd_ref[r] = rs;
        for (int d = 0; d < dim; d++) {
            double xhat = (xr[d] - m) * rs;
            ref[(long)r * dim + d] = xhat * gamma[d] + beta[d];
            /* fp32 normalisation errors scale with |xhat gamma| (and |x| / sigma through
             * the mean's rounding) */
            scale[(long)r * dim + d] = (fabs(xhat) + fabs(xr[d]) * rs) * fabs(gamma[d]) +
                                       fabs(beta[d]);
        }
    }
    bf16_t *y = bf16_filled(n, BF16_QNAN);
    float *mean = test_filled(rows, NAN), *rstd = test_filled(rows, NAN);
    be->layernorm_fwd_bf16(y, mean, rstd, x, gamma, beta, rows, dim, eps);
    compare_bf16("layernorm bf16 y", y, ref, scale, n);
    compare_f32("layernorm mean", mean, mean_ref, NULL, rows);
    compare_f32("layernorm rstd", rstd, rstd_ref, NULL, rows);
    free(rstd);
    free(mean);
    free(y);
    free(rstd_ref);
    free(mean_ref);
    free(scale);
    free(ref);
    free(beta);
    free(gamma);
    free(x);
    return 0;
}

static int test_gelu(void)
{
    /* Above CPU_OMP_MIN_ELEMENTS (the parallel path); normal values (sd 3) plus edge cases. */
    const size_t n = 40000;
    bf16_t *x = randn_bf16(n, 3.0f);
    const float edges[] = {0.0f, -0.0f, 1.0f, -1.0f, 10.0f, -10.0f, 1e-30f, -1e-30f, 6.0f, -6.0f};
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) x[i] = bf16_from_float(edges[i]);
    float *dy = randn(n, 1.0f);
    double *ref = dzeros(n), *scale = dzeros(n), *dref = dzeros(n), *dscale = dzeros(n);
    for (size_t i = 0; i < n; i++) {
        double v = bf16_value(x[i]);
        double cdf = 0.5 * (1.0 + erf(v / sqrt(2.0)));
        double pdf = exp(-0.5 * v * v) / sqrt(2.0 * M_PI);
        ref[i] = v * cdf;
        /* The backend's erf is Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7): gelu is off by up
         * to |x|/2 * 1.5e-7 absolute, on top of a few fp32 roundings. */
        scale[i] = fabs(ref[i]) + 0.5 * fabs(v) * 1.5e-7 / REL;
        dref[i] = dy[i] * (cdf + v * pdf);
        dscale[i] = fabs(dy[i]) * (fabs(cdf) + fabs(v * pdf) + 1.5e-7 / REL);
    }
    bf16_t *y = bf16_filled(n, BF16_QNAN);
    be->gelu_fwd_bf16(y, x, n);
    compare_bf16("gelu bf16 y", y, ref, scale, n);
    float *dx = test_filled(n, NAN);
    be->gelu_bwd_bf16(dx, dy, x, n);
    compare_f32("gelu dx", dx, dref, dscale, n);
    TEST_CHECK(y[0] == 0x0000 && dx[0] == 0.5f * dy[0], "gelu at 0: y 0x%04x, dx %g", y[0], dx[0]);
    free(dx);
    free(y);
    free(dscale);
    free(dref);
    free(scale);
    free(ref);
    free(dy);
    free(x);
    return 0;
}

/* ------------------------------------------------------------------ attention */

typedef struct {
    int B, H, Tq, Tk, Dh, ldq, ldkv;
} AttnShape;

/* Double reference of forward and backward from the widened bf16 inputs (qf, kf, vf: fp32
 * arrays with the op's strides): probs [B,H,Tq,Tk], out [B,Tq,H*Dh], and for dout the input
 * gradients (same strides as q, k, v; entries outside the views untouched). */
static void attention_reference(const AttnShape *a, const float *qf, const float *kf,
                                const float *vf, const float *dout, double *probs, double *out,
                                double *out_scale, double *dq, double *dq_scale, double *dk,
                                double *dk_scale, double *dv, double *dv_scale)
{
    const int C = a->H * a->Dh, Tq = a->Tq, Tk = a->Tk, Dh = a->Dh;
    const double inv = 1.0 / sqrt((double)Dh);
    double *s = dzeros(Tk), *dP = dzeros(Tk);
    for (int b = 0; b < a->B; b++)
        for (int h = 0; h < a->H; h++) {
            double *P = probs + ((size_t)b * a->H + h) * Tq * Tk;
            for (int i = 0; i < Tq; i++) {
                double mx = test_attention_scores(s, qf, kf, b, h, i, Tq, Tk, Dh, a->ldq, a->ldkv);
                double sum = 0.0;
                for (int j = 0; j < Tk; j++) sum += (s[j] = exp(s[j] - mx));
                for (int j = 0; j < Tk; j++) P[(size_t)i * Tk + j] = s[j] / sum;
            }
            for (int i = 0; i < Tq; i++)
                for (int e = 0; e < Dh; e++) {
                    double acc = 0.0, mag = 0.0;
                    for (int j = 0; j < Tk; j++) {
                        double t = P[(size_t)i * Tk + j] *
                                   vf[((size_t)b * Tk + j) * a->ldkv + h * Dh + e];
                        acc += t;
                        mag += fabs(t);
                    }
                    out[((size_t)b * Tq + i) * C + h * Dh + e] = acc;
                    out_scale[((size_t)b * Tq + i) * C + h * Dh + e] = mag;
                }
            /* backward: dV = P^T dO; dP = dO V^T; dS = P (dP - <dP, P>); dQ = dS K / sqrt(Dh);
             * dK = dS^T Q / sqrt(Dh). The scales bound fp32 errors of every stage by the
             * magnitudes |P||dO||V| that flow through it. */
            for (int j = 0; j < Tk; j++)
                for (int e = 0; e < Dh; e++) {
                    double acc = 0.0, mag = 0.0;
                    for (int i = 0; i < Tq; i++) {
                        double t = P[(size_t)i * Tk + j] * dout[((size_t)b * Tq + i) * C + h * Dh + e];
                        acc += t;
                        mag += fabs(t);
                    }
                    size_t at = ((size_t)b * Tk + j) * a->ldkv + h * Dh + e;
                    dv[at] = acc;
                    dv_scale[at] = mag;
                }
            for (int i = 0; i < Tq; i++) {
                double dot = 0.0, dotmag = 0.0;
                for (int j = 0; j < Tk; j++) {
                    double acc = 0.0, mag = 0.0;
                    for (int e = 0; e < Dh; e++) {
                        double t = dout[((size_t)b * Tq + i) * C + h * Dh + e] *
                                   vf[((size_t)b * Tk + j) * a->ldkv + h * Dh + e];
                        acc += t;
                        mag += fabs(t);
                    }
                    dP[j] = acc;
                    s[j] = mag; /* |dP| scale */
                    dot += acc * P[(size_t)i * Tk + j];
                    dotmag += mag * P[(size_t)i * Tk + j];
                }
                for (int j = 0; j < Tk; j++) {
                    double p = P[(size_t)i * Tk + j];
                    double dS = p * (dP[j] - dot), dSmag = p * (s[j] + dotmag);
                    for (int e = 0; e < Dh; e++) {
                        size_t qat = ((size_t)b * Tq + i) * a->ldq + h * Dh + e;
                        size_t kat = ((size_t)b * Tk + j) * a->ldkv + h * Dh + e;
                        dq[qat] += dS * kf[kat] * inv;
                        dq_scale[qat] += dSmag * fabs(kf[kat]) * inv;
                        dk[kat] += dS * qf[qat] * inv;
                        dk_scale[kat] += dSmag * fabs(qf[qat]) * inv;
                    }
                }
            }
        }
    free(dP);
    free(s);
}

/* Compares the view entries (rows of width C at stride ld) of an fp32 gradient buffer. */
static void compare_view(const char *what, const float *got, const double *ref,
                         const double *scale, long rows, int ld, int C)
{
    for (long r = 0; r < rows; r++)
        compare_f32(what, got + r * ld, ref + r * ld, scale + r * ld, (size_t)C);
}

/* The buffers of one attention call: q is qbuf + q_off (row stride ldq), k and v are
 * kvbuf + k_off and kvbuf + v_off (row stride ldkv); qbuf == kvbuf for a packed qkv buffer.
 * Gradients go to fp32 buffers of the same sizes and layouts. */
typedef struct {
    const bf16_t *qbuf, *kvbuf;
    size_t q_span, kv_span;
    int q_off, k_off, v_off;
} AttnBuffers;

/* Runs attention fwd + bwd and checks out (bf16), saved probs, dq, dk, dv against the double
 * reference; then backward again with only dq and only dv requested (NULL for the others). */
static void check_attention(const char *what, const AttnShape *a, const AttnBuffers *m)
{
    const int C = a->H * a->Dh;
    const int packed = m->qbuf == m->kvbuf;
    const size_t n_out = (size_t)a->B * a->Tq * C, n_p = (size_t)a->B * a->H * a->Tq * a->Tk;
    const bf16_t *q = m->qbuf + m->q_off, *k = m->kvbuf + m->k_off, *v = m->kvbuf + m->v_off;
    /* widened copies of the buffers, for the reference */
    float *qf = malloc(m->q_span * sizeof(float)), *kvf = malloc(m->kv_span * sizeof(float));
    for (size_t i = 0; i < m->q_span; i++) qf[i] = (float)bf16_value(m->qbuf[i]);
    for (size_t i = 0; i < m->kv_span; i++) kvf[i] = (float)bf16_value(m->kvbuf[i]);
    float *dout = randn(n_out, 1.0f);

    double *probs = dzeros(n_p), *out = dzeros(n_out), *out_scale = dzeros(n_out);
    double *dq = dzeros(m->q_span), *dq_scale = dzeros(m->q_span);
    double *dk = dzeros(m->kv_span), *dk_scale = dzeros(m->kv_span);
    double *dv = dzeros(m->kv_span), *dv_scale = dzeros(m->kv_span);
    attention_reference(a, qf + m->q_off, kvf + m->k_off, kvf + m->v_off, dout, probs, out,
                        out_scale, dq + m->q_off, dq_scale + m->q_off, dk + m->k_off,
                        dk_scale + m->k_off, dv + m->v_off, dv_scale + m->v_off);

    /* forward */
    bf16_t *o = bf16_filled(n_out, BF16_QNAN);
    const size_t saved_n = be->attention_saved_floats(a->B, a->H, a->Tq, a->Tk, a->Dh);
    TEST_CHECK(saved_n == n_p, "%s: saved holds %zu floats, expected probs %zu", what, saved_n,
               n_p);
    float *saved = test_filled(saved_n > n_p ? saved_n : n_p, NAN);
    be->attention_fwd_bf16(o, saved, q, k, v, a->B, a->H, a->Tq, a->Tk, a->Dh, a->ldq, a->ldkv);
    char label[160];
    snprintf(label, sizeof label, "%s: out (bf16)", what);
    compare_bf16(label, o, out, out_scale, n_out);
    snprintf(label, sizeof label, "%s: saved probs", what);
    compare_f32(label, saved, probs, NULL, n_p);

    /* backward into NaN-poisoned buffers with the layouts of the inputs */
    float *gq = test_filled(m->q_span, NAN);
    float *gkv = packed ? gq : test_filled(m->kv_span, NAN);
    be->attention_bwd_bf16(gq + m->q_off, gkv + m->k_off, gkv + m->v_off, dout, q, k, v, o, saved,
                           a->B, a->H, a->Tq, a->Tk, a->Dh, a->ldq, a->ldkv);
    const long q_rows = (long)a->B * a->Tq, kv_rows = (long)a->B * a->Tk;
    snprintf(label, sizeof label, "%s: dq", what);
    compare_view(label, gq + m->q_off, dq + m->q_off, dq_scale + m->q_off, q_rows, a->ldq, C);
    snprintf(label, sizeof label, "%s: dk", what);
    compare_view(label, gkv + m->k_off, dk + m->k_off, dk_scale + m->k_off, kv_rows, a->ldkv, C);
    snprintf(label, sizeof label, "%s: dv", what);
    compare_view(label, gkv + m->v_off, dv + m->v_off, dv_scale + m->v_off, kv_rows, a->ldkv, C);

    /* NULL gradients are skipped: dq alone, then dv alone */
    float *g1 = test_filled(m->q_span > m->kv_span ? m->q_span : m->kv_span, NAN);
    be->attention_bwd_bf16(g1 + m->q_off, NULL, NULL, dout, q, k, v, o, saved, a->B, a->H,
                           a->Tq, a->Tk, a->Dh, a->ldq, a->ldkv);
    snprintf(label, sizeof label, "%s: dq alone", what);
    compare_view(label, g1 + m->q_off, dq + m->q_off, dq_scale + m->q_off, q_rows, a->ldq, C);
    be->attention_bwd_bf16(NULL, NULL, g1 + m->v_off, dout, q, k, v, o, saved, a->B, a->H, a->Tq,
                           a->Tk, a->Dh, a->ldq, a->ldkv);
    snprintf(label, sizeof label, "%s: dv alone", what);
    compare_view(label, g1 + m->v_off, dv + m->v_off, dv_scale + m->v_off, kv_rows, a->ldkv, C);

    free(g1);
    if (!packed) free(gkv);
    free(gq);
    free(saved);
    free(o);
    free(dv_scale);
    free(dv);
    free(dk_scale);
    free(dk);
    free(dq_scale);
    free(dq);
    free(out_scale);
    free(out);
    free(probs);
    free(dout);
    free(kvf);
    free(qf);
}

static int test_attention_packed(void)
{
    /* Self-attention on one packed qkv buffer: q = qkv, k = qkv + C, v = qkv + 2C, ld = 3C. */
    AttnShape a = {.B = 2, .H = 2, .Tq = 5, .Tk = 5, .Dh = 4};
    const int C = a.H * a.Dh;
    a.ldq = a.ldkv = 3 * C;
    const size_t span = (size_t)a.B * a.Tq * 3 * C;
    bf16_t *qkv = randn_bf16(span, 1.5f);
    AttnBuffers m = {.qbuf = qkv, .kvbuf = qkv, .q_span = span, .kv_span = span, .q_off = 0,
                     .k_off = C, .v_off = 2 * C};
    check_attention("packed qkv", &a, &m);
    free(qkv);
    return 0;
}

static int test_attention_cross(void)
{
    /* Cross attention, Tq != Tk: q in its own buffer with a row stride wider than C (the gap
     * columns hold NaN, which must not leak into anything), k and v packed in a kv buffer
     * (k = kv, v = kv + C, ldkv = 2C). */
    AttnShape a = {.B = 2, .H = 3, .Tq = 3, .Tk = 7, .Dh = 4};
    const int C = a.H * a.Dh;
    a.ldq = C + 5;
    a.ldkv = 2 * C;
    const size_t q_span = (size_t)a.B * a.Tq * a.ldq, kv_span = (size_t)a.B * a.Tk * a.ldkv;
    bf16_t *q = randn_bf16(q_span, 1.5f), *kv = randn_bf16(kv_span, 1.5f);
    for (size_t r = 0; r < (size_t)a.B * a.Tq; r++)
        for (int c = C; c < a.ldq; c++) q[r * a.ldq + c] = BF16_QNAN;
    AttnBuffers m = {.qbuf = q, .kvbuf = kv, .q_span = q_span, .kv_span = kv_span, .q_off = 0,
                     .k_off = 0, .v_off = C};
    check_attention("cross, separate buffers", &a, &m);

    /* The same views in one allocation, the kv span right after the q span (touching views,
     * which the op may widen together): the same results. */
    bf16_t *both = malloc((q_span + kv_span) * sizeof(bf16_t));
    memcpy(both, q, q_span * sizeof(bf16_t));
    memcpy(both + q_span, kv, kv_span * sizeof(bf16_t));
    /* one buffer holding both: the q view at 0, k and v after the q span */
    AttnBuffers one = {.qbuf = both, .kvbuf = both, .q_span = q_span + kv_span,
                       .kv_span = q_span + kv_span, .q_off = 0, .k_off = (int)q_span,
                       .v_off = (int)q_span + C};
    check_attention("cross, one allocation", &a, &one);
    free(both);
    free(kv);
    free(q);
    return 0;
}

/* saved == NULL (forward only): the bf16 out must be bit-identical to the saving call's.
 * Shapes: Tq != Tk, odd sizes, head widths 8/32/64, more (batch, head) tasks than threads. */
static void attention_unsaved_case(int B, int H, int Tq, int Tk, int Dh)
{
    const int C = H * Dh, ldq = C + 3, ldkv = 2 * C; /* q with a gap, k and v packed */
    bf16_t *q = randn_bf16((size_t)B * Tq * ldq, 1.5f), *kv = randn_bf16((size_t)B * Tk * ldkv, 1.5f);
    const size_t n_out = (size_t)B * Tq * C;
    bf16_t *o_saved = bf16_filled(n_out, BF16_QNAN), *o_unsaved = bf16_filled(n_out, BF16_QNAN);
    float *saved = test_filled(be->attention_saved_floats(B, H, Tq, Tk, Dh), NAN);
    be->attention_fwd_bf16(o_saved, saved, q, kv, kv + C, B, H, Tq, Tk, Dh, ldq, ldkv);
    be->attention_fwd_bf16(o_unsaved, NULL, q, kv, kv + C, B, H, Tq, Tk, Dh, ldq, ldkv);
    size_t differ = 0, nonfinite = 0;
    for (size_t i = 0; i < n_out; i++) {
        differ += o_saved[i] != o_unsaved[i];
        nonfinite += !isfinite(bf16_value(o_unsaved[i]));
    }
    TEST_CHECK(differ == 0 && nonfinite == 0,
               "attention_fwd_bf16 saved=NULL B%d H%d Tq%d Tk%d Dh%d: %zu of %zu outputs differ "
               "in bits from the saving call, %zu not finite", B, H, Tq, Tk, Dh, differ, n_out,
               nonfinite);
    free(saved);
    free(o_unsaved);
    free(o_saved);
    free(kv);
    free(q);
}

static int test_attention_unsaved(void)
{
    attention_unsaved_case(3, 5, 13, 13, 8);
    attention_unsaved_case(2, 3, 11, 29, 8);
    attention_unsaved_case(3, 3, 37, 21, 32);
    attention_unsaved_case(1, 7, 33, 19, 64);
    attention_unsaved_case(2, 3, 41, 41, 64);
    return 0;
}

int main(void)
{
    be = backend_cpu();
    TEST_RUN(test_bf16_format);
    TEST_RUN(test_linear_fwd);
    TEST_RUN(test_linear_bwd);
    TEST_RUN(test_layernorm_fwd);
    TEST_RUN(test_gelu);
    TEST_RUN(test_attention_packed);
    TEST_RUN(test_attention_cross);
    TEST_RUN(test_attention_unsaved);
    return test_finish();
}
