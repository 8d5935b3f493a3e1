/* The batched-GEMM attention path of the CUDA backend (cuda/cuda_attention.cu) runs WITHOUT a
 * GPU: test_attention_gemm_path_emulated.sh cuts the source from the softmax backward kernel
 * through cuda_attention_bwd_bf16, and this file links it against host stand-ins of what it
 * calls: cuBLAS-style strided-batched GEMMs (row-major operands, op(A_i) = A + i strideA, sums in
 * double, one rounding to the output type), the row softmax, bf16 rounding (counted), and the
 * flash / cuDNN routes declined (a call to them fails the test); the scratch slots are
 * emu_cuda.h's, poisoned (NaN) before every call. Checked:
 *  - fp32 mode: cuda_attention_fwd / bwd against a double reference (tight);
 *  - bf16 GEMMs (the fp32 entry points, CASA's path): against a double reference that rounds
 *    q, k, v, P, dout and dS to bf16 for their products, within bf16 tolerances; every subset
 *    of gradients, untouched gradient elements kept (NaN poison); the launches of the rounding
 *    it promises (4 roundings forward, 5 backward, whatever B) and its GEMM calls (one per
 *    product with one head, B with several); and cuda_gemm (which would round per GEMM) never
 *    called;
 *  - the bf16 entry points on the inputs rounded give the same bits (probabilities, gradients;
 *    out = the fp32 out rounded), the claim test_backend_parity checks on the GPU.
 * Shapes: one head over several elements (the batched case), several heads, packed qkv and
 * cross attention, B = 1. */
#include "cuda/cuda_kernels.cuh" /* the test's stand-in: emu_cuda.h + cuda/cuda_bf16.cuh */
#include "emu_test_util.h"

#include <cmath>

extern "C" {
#include "ops/backend.h" /* DType */
}

/* ---- stand-ins of what the cut source calls ---- */

/* The scratch slots and the context are emu_cuda.h's; every slot is poisoned (NaN) before
 * each attention call, so a read of scratch the call did not write shows. */
static void poison_scratch()
{
    for (auto &buf : emu_scratch_buffers) std::fill(buf.begin(), buf.end(), (unsigned char)0xff);
}

static int fails = 0;
static void fail(const char *what)
{
    if (++fails <= 20) fprintf(stderr, "FAIL %s\n", what);
}

template <typename... A> int cuda_flash_attention_applies(A...) { return 0; }
template <typename... A> int cuda_flash_fwd_fast(A...) { return 0; }
template <typename... A> void cuda_flash_attention_fwd(A...) { fail("flash forward called"); }
template <typename... A> void cuda_flash_attention_bwd(A...) { fail("flash backward called"); }
template <typename... A> void cuda_flash_attention_fwd_bf16(A...) { fail("flash forward called"); }
template <typename... A> void cuda_flash_attention_bwd_bf16(A...) { fail("flash backward called"); }
template <typename... A> int cuda_cudnn_attention_takes(A...) { return 0; }
template <typename... A> int cuda_cudnn_attention_fwd_bf16(A...) { fail("cudnn called"); return 0; }
template <typename... A> int cuda_cudnn_attention_bwd_bf16(A...) { fail("cudnn called"); return 0; }

static int g_roundings, g_gemm_calls, g_fp32_gemm_calls;

static float elem(const float *p, size_t i) { return p[i]; }
static float elem(const bf16_t *p, size_t i) { return bf16_to_float(p[i]); }

/* C_i = alpha op(A_i) op(B_i) + beta C_i, i < batch, row-major as backend.h's gemm. */
template <typename T>
static void host_gemm(int tA, int tB, int M, int N, int K, float alpha, const T *A, int lda,
                      long sA, const T *B, int ldb, long sB, float beta, void *C, DType ct,
                      int ldc, long sC, int batch)
{
    for (int i = 0; i < batch; i++)
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) {
                double acc = 0;
                for (int k = 0; k < K; k++) {
                    const size_t ai = (size_t)i * sA + (tA ? (size_t)k * lda + m : (size_t)m * lda + k);
                    const size_t bi = (size_t)i * sB + (tB ? (size_t)n * ldb + k : (size_t)k * ldb + n);
                    acc += (double)elem(A, ai) * elem(B, bi);
                }
                const size_t ci = (size_t)i * sC + (size_t)m * ldc + n;
                if (ct == DTYPE_F32) {
                    float *c = (float *)C;
                    c[ci] = (float)(alpha * acc) + (beta != 0.0f ? beta * c[ci] : 0.0f);
                } else {
                    ((bf16_t *)C)[ci] = bf16_from_float((float)(alpha * acc));
                }
            }
}

void cuda_gemm(int tA, int tB, int M, int N, int K, float alpha, const float *A, int lda, long sA,
               const float *B, int ldb, long sB, float beta, float *C, int ldc, long sC, int batch)
{
    if (cuda_context()->bf16_gemm) fail("cuda_gemm (a rounding per GEMM) called under bf16 GEMMs");
    g_fp32_gemm_calls++;
    host_gemm(tA, tB, M, N, K, alpha, A, lda, sA, B, ldb, sB, beta, C, DTYPE_F32, ldc, sC, batch);
}

void cuda_gemm_bf16_operands(int tA, int tB, int M, int N, int K, float alpha, const bf16_t *A,
                             int lda, long sA, const bf16_t *B, int ldb, long sB, float beta,
                             void *C, DType ct, int ldc, long sC, int batch)
{
    g_gemm_calls++;
    host_gemm(tA, tB, M, N, K, alpha, A, lda, sA, B, ldb, sB, beta, C, ct, ldc, sC, batch);
}

void cuda_softmax_fwd(float *y, const float *x, int rows, int cols)
{
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *yr = y + (size_t)r * cols;
        float mx = -INFINITY;
        for (int c = 0; c < cols; c++) mx = std::max(mx, xr[c]);
        double sum = 0;
        for (int c = 0; c < cols; c++) sum += std::exp((double)xr[c] - mx);
        for (int c = 0; c < cols; c++) yr[c] = (float)(std::exp((double)xr[c] - mx) / sum);
    }
}

void cuda_round_to_bf16(__nv_bfloat16 *out, const float *in, size_t n)
{
    g_roundings++;
    for (size_t i = 0; i < n; i++) out[i] = __float2bfloat16_rn(in[i]);
}

#include "attention_gemm_path.inc" /* cut out of cuda/cuda_attention.cu by the .sh */

/* ---- reference and checks ---- */

static EmuLcg lcg{77};

static double rb(double x, bool round) { return round ? bf16_to_float(bf16_from_float((float)x)) : x; }

struct Shape {
    int B, H, Tq, Tk, Dh, packed;
};

struct Ref {
    std::vector<double> probs, out, dq, dk, dv; /* dq [B Tq C], dk/dv [B Tk C], compact */
};

/* Attention in double; round: q, k, v, P, dout, dS rounded to bf16 for their products. */
static Ref reference(const Shape &s, const float *q, const float *k, const float *v,
                     const float *dout, int ldq, int ldkv, bool round)
{
    const int B = s.B, H = s.H, Tq = s.Tq, Tk = s.Tk, Dh = s.Dh, C = H * Dh;
    const double scale = 1.0 / std::sqrt((double)(float)Dh);
    Ref r;
    r.probs.assign((size_t)B * H * Tq * Tk, 0);
    r.out.assign((size_t)B * Tq * C, 0);
    r.dq.assign((size_t)B * Tq * C, 0);
    r.dk.assign((size_t)B * Tk * C, 0);
    r.dv.assign((size_t)B * Tk * C, 0);
    auto Q = [&](int b, int i, int c) { return rb(q[((size_t)b * Tq + i) * ldq + c], round); };
    auto K = [&](int b, int j, int c) { return rb(k[((size_t)b * Tk + j) * ldkv + c], round); };
    auto V = [&](int b, int j, int c) { return rb(v[((size_t)b * Tk + j) * ldkv + c], round); };
    auto D = [&](int b, int i, int c) { return rb(dout[((size_t)b * Tq + i) * C + c], round); };
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < Tq; i++) {
                double *p = &r.probs[(((size_t)b * H + h) * Tq + i) * Tk];
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < Tk; j++) {
                    double sc = 0;
                    for (int d = 0; d < Dh; d++) sc += Q(b, i, h * Dh + d) * K(b, j, h * Dh + d);
                    p[j] = (float)scale * sc;
                    mx = std::max(mx, p[j]);
                }
                for (int j = 0; j < Tk; j++) sum += p[j] = std::exp(p[j] - mx);
                for (int j = 0; j < Tk; j++) p[j] /= sum;
                std::vector<double> dp(Tk), ds(Tk);
                double dot = 0;
                for (int j = 0; j < Tk; j++) {
                    const double pj = rb(p[j], round);
                    for (int d = 0; d < Dh; d++) {
                        r.out[((size_t)b * Tq + i) * C + h * Dh + d] += pj * V(b, j, h * Dh + d);
                        r.dv[((size_t)b * Tk + j) * C + h * Dh + d] += pj * D(b, i, h * Dh + d);
                    }
                    dp[j] = 0;
                    for (int d = 0; d < Dh; d++) dp[j] += D(b, i, h * Dh + d) * V(b, j, h * Dh + d);
                    dot += p[j] * dp[j];
                }
                for (int j = 0; j < Tk; j++) {
                    ds[j] = rb(scale * p[j] * (dp[j] - dot), round);
                    for (int d = 0; d < Dh; d++) {
                        r.dq[((size_t)b * Tq + i) * C + h * Dh + d] += ds[j] * K(b, j, h * Dh + d);
                        r.dk[((size_t)b * Tk + j) * C + h * Dh + d] += ds[j] * Q(b, i, h * Dh + d);
                    }
                }
            }
    return r;
}

static double rms(const std::vector<double> &x)
{
    double s = 0;
    for (double v : x) s += v * v;
    return x.empty() ? 0 : std::sqrt(s / x.size());
}

/* got (rows of C at leading dim ld, column offset off) against ref (compact rows of C). */
static void check_view(const float *got, int ld, int off, const std::vector<double> &ref,
                       long rows, int C, double rtol, double atol_rms, const char *what)
{
    const double atol = atol_rms * rms(ref);
    size_t bad = 0;
    for (long r = 0; r < rows; r++)
        for (int c = 0; c < C; c++) {
            const double g = got[(size_t)r * ld + off + c], w = ref[(size_t)r * C + c];
            if (!(std::fabs(g - w) <= rtol * std::fabs(w) + atol)) bad++;
        }
    if (bad) {
        char m[256];
        snprintf(m, sizeof m, "%s: %zu of %ld elements off the reference", what, bad, rows * C);
        fail(m);
    }
}

/* Elements of the view (rows at ld, columns [off, off + C)) keep their NaN poison iff !owned. */
static void check_untouched(const float *buf, size_t n, int ld, int off, int C, bool owned,
                            const char *what)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        const int c = (int)(i % (size_t)ld);
        if (c < off || c >= off + C) continue;
        if (std::isnan(buf[i]) == owned) bad++;
    }
    if (bad) {
        char m[256];
        snprintf(m, sizeof m, "%s: %zu elements %s", what, bad,
                 owned ? "not written" : "written although not asked for");
        fail(m);
    }
}

enum { GQ = 1, GK = 2, GV = 4 };

static void run_shape(const Shape &s)
{
    const int B = s.B, H = s.H, Tq = s.Tq, Tk = s.Tk, Dh = s.Dh, C = H * Dh;
    const int ldq = s.packed ? 3 * C : C, ldkv = s.packed ? 3 * C : 2 * C;
    const int koff = s.packed ? C : 0, voff = s.packed ? 2 * C : C;
    const size_t nq = (size_t)B * Tq * ldq, nkv = s.packed ? nq : (size_t)B * Tk * ldkv;
    const size_t n_out = (size_t)B * Tq * C, n_probs = (size_t)B * H * Tq * Tk;
    std::vector<float> qb(nq), kvb_own(s.packed ? 0 : nkv), dout(n_out);
    for (auto &x : qb) x = lcg.uniform(-1, 1);
    for (auto &x : kvb_own) x = lcg.uniform(-1, 1);
    for (auto &x : dout) x = lcg.uniform(-1, 1);
    float *kvb = s.packed ? qb.data() : kvb_own.data();
    const float *q = qb.data(), *k = kvb + koff, *v = kvb + voff;
    char what[200];
    for (int bf16 = 0; bf16 < 2; bf16++) {
        emu_context.bf16_gemm = bf16;
        const Ref ref = reference(s, q, k, v, dout.data(), ldq, ldkv, bf16 != 0);
        const double rtol = bf16 ? 2e-2 : 1e-4, atol = bf16 ? 1e-2 : 1e-5;
        std::vector<float> out(n_out, NAN), probs(n_probs, NAN);
        g_roundings = g_gemm_calls = g_fp32_gemm_calls = 0;
        poison_scratch();
        cuda_attention_fwd(out.data(), probs.data(), q, k, v, B, H, Tq, Tk, Dh, ldq, ldkv);
        snprintf(what, sizeof what, "%s forward B=%d H=%d Tq=%d Tk=%d Dh=%d packed=%d",
                 bf16 ? "bf16 GEMMs" : "fp32", B, H, Tq, Tk, Dh, s.packed);
        std::vector<double> probs_ref(ref.probs);
        check_view(probs.data(), Tk, 0, probs_ref, (long)B * H * Tq, Tk, rtol, atol, what);
        check_view(out.data(), C, 0, ref.out, (long)B * Tq, C, rtol, atol, what);
        const int products_fwd = H == 1 ? 2 : 2 * B;
        if (bf16 && (g_roundings != 4 || g_gemm_calls != products_fwd)) {
            snprintf(what, sizeof what, "bf16 forward B=%d H=%d: %d roundings (want 4), %d GEMM "
                     "calls (want %d)", B, H, g_roundings, g_gemm_calls, products_fwd);
            fail(what);
        }
        /* the bf16 entry points on the rounded inputs: the same bits */
        std::vector<bf16_t> q16(nq), kv16_own(s.packed ? 0 : nkv), out16(n_out);
        for (size_t i = 0; i < nq; i++) q16[i] = bf16_from_float(qb[i]);
        for (size_t i = 0; i < kv16_own.size(); i++) kv16_own[i] = bf16_from_float(kvb_own[i]);
        const bf16_t *kv16 = s.packed ? q16.data() : kv16_own.data();
        std::vector<float> probs16(n_probs, NAN);
        if (bf16) {
            poison_scratch();
            cuda_attention_fwd_bf16(out16.data(), probs16.data(), q16.data(), kv16 + koff,
                                    kv16 + voff, B, H, Tq, Tk, Dh, ldq, ldkv);
            if (std::memcmp(probs16.data(), probs.data(), n_probs * sizeof(float)))
                fail("bf16 entry forward: probabilities differ in bits from the fp32 entry's");
            for (size_t i = 0; i < n_out; i++)
                if (out16[i] != bf16_from_float(out[i])) {
                    fail("bf16 entry forward: out is not the fp32 entry's out rounded");
                    break;
                }
        }
        const int subsets[] = {GQ | GK | GV, GV, GQ | GK, GK, GQ};
        for (int w : subsets) {
            std::vector<float> dqb(nq, NAN), dkvb_own(s.packed ? 0 : nkv, NAN);
            float *dkvb = s.packed ? dqb.data() : dkvb_own.data();
            g_roundings = g_gemm_calls = g_fp32_gemm_calls = 0;
            poison_scratch();
            cuda_attention_bwd(w & GQ ? dqb.data() : nullptr, w & GK ? dkvb + koff : nullptr,
                               w & GV ? dkvb + voff : nullptr, dout.data(), q, k, v, out.data(),
                               probs.data(), B, H, Tq, Tk, Dh, ldq, ldkv);
            snprintf(what, sizeof what, "%s backward B=%d H=%d Tq=%d Tk=%d Dh=%d packed=%d "
                     "(dq %d dk %d dv %d)", bf16 ? "bf16 GEMMs" : "fp32", B, H, Tq, Tk, Dh,
                     s.packed, !!(w & GQ), !!(w & GK), !!(w & GV));
            if (w & GQ) check_view(dqb.data(), ldq, 0, ref.dq, (long)B * Tq, C, rtol, atol, what);
            if (w & GK) check_view(dkvb, ldkv, koff, ref.dk, (long)B * Tk, C, rtol, atol, what);
            if (w & GV) check_view(dkvb, ldkv, voff, ref.dv, (long)B * Tk, C, rtol, atol, what);
            check_untouched(dqb.data(), nq, ldq, 0, C, w & GQ, what);
            check_untouched(dkvb, nkv, ldkv, koff, C, w & GK, what);
            check_untouched(dkvb, nkv, ldkv, voff, C, w & GV, what);
            /* rounding launches: dout, P (dv), q (dk), k (dq), v (dq or dk) */
            const int want_round = 1 + !!(w & GV) + !!(w & GK) + !!(w & GQ) + !!(w & (GQ | GK));
            const int want_gemms = (H == 1 ? 1 : B) * (!!(w & GV) + (w & (GQ | GK) ? 1 : 0) +
                                                       !!(w & GQ) + !!(w & GK));
            if (bf16 && (g_roundings != want_round || g_gemm_calls != want_gemms)) {
                char m[300];
                snprintf(m, sizeof m, "%s: %d roundings (want %d), %d GEMM calls (want %d)", what,
                         g_roundings, want_round, g_gemm_calls, want_gemms);
                fail(m);
            }
            if (!bf16) continue;
            std::vector<float> dq16b(nq, NAN), dkv16_own(s.packed ? 0 : nkv, NAN);
            float *dkv16b = s.packed ? dq16b.data() : dkv16_own.data();
            poison_scratch();
            cuda_attention_bwd_bf16(w & GQ ? dq16b.data() : nullptr,
                                    w & GK ? dkv16b + koff : nullptr,
                                    w & GV ? dkv16b + voff : nullptr, dout.data(), q16.data(),
                                    kv16 + koff, kv16 + voff, out16.data(), probs16.data(), B, H,
                                    Tq, Tk, Dh, ldq, ldkv);
            if (std::memcmp(dq16b.data(), dqb.data(), nq * sizeof(float)) ||
                (!s.packed && std::memcmp(dkv16b, dkvb, nkv * sizeof(float))))
                fail("bf16 entry backward: gradients differ in bits from the fp32 entry's");
        }
    }
    emu_context.bf16_gemm = 0;
}

int main()
{
    const Shape shapes[] = {
        {3, 1, 12, 20, 40, 0}, /* one head (CASA's case): the elements one batched GEMM */
        {1, 1, 5, 6, 24, 0},   /* one head, one element */
        {2, 3, 9, 9, 8, 1},    /* packed qkv, several heads */
        {2, 2, 7, 13, 16, 0},  /* cross attention, several heads, Tq != Tk */
    };
    for (const Shape &s : shapes) run_shape(s);
    return emu_finish(fails,
                      "attention GEMM path (emulated): %zu shapes, fp32 mode, bf16 GEMMs (fp32 "
                      "entry) and bf16 entry, every gradient subset: ok",
                      sizeof shapes / sizeof shapes[0]);
}
