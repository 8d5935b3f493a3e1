/* The fused attention kernels of cuda/cuda_flash_attention.cu, run through the host emulation
 * of emu_cuda.h (test_flash_attention_emulated.sh builds this file together with the kernel
 * source), against an independent double-precision reference of forward (out, row logsumexp)
 * and backward (dq, dk, dv). Three modes: fp32 (CUDA-core tile products), bf16 (the wmma
 * tensor-core branch on fp32 tensors) and bf16 activations (bf16 q, k, v and out read and
 * written directly by the same kernels: attention_*_bf16). Outputs start as NaN; gradient
 * elements the op does not own (the padding columns of q's rows) start as a sentinel that must
 * survive. The backward runs twice:
 * the results must be bitwise identical (the kernels promise determinism). In bf16 activations
 * the gradients are also stored in bf16 (attention_bwd_bf16_grad16), by the kernels themselves
 * and by the GEMM path's fp32 stand-ins (cuda_attention_bwd_bf16_rounded_after, the flash
 * kernels as its fp32 backward): both must equal the fp32 gradients rounded, bit for bit,
 * sentinels between the views included. */
#include "emu_cuda.h"

#include "cuda/cuda_ops.h"
#include "ops/gpu_device.h"

static int failures = 0;
static const float kUntouched = -7.0f;

/* gpu_set_attention (cut out with the kernels) asks whether cuDNN's attention is built: not in
 * the emulation (cuda/cuda_attention_cudnn.cu is not compiled here). */
int gpu_cudnn_attention_available(void) { return 0; }
const char *gpu_cudnn_attention_unavailable_reason(void) { return "not in the emulation"; }

static double uniform(uint64_t &s)
{
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(s >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0;
}

/* |got - want| <= rtol |want| + atol_rel * max |want| on owned elements; the others untouched. */
static void compare(const char *what, const std::vector<float> &got,
                    const std::vector<double> &want, const std::vector<char> &owned, double rtol,
                    double atol_rel)
{
    double largest = 0.0;
    for (size_t i = 0; i < want.size(); i++)
        if (owned[i]) largest = std::max(largest, std::fabs(want[i]));
    double worst = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < want.size(); i++) {
        if (!owned[i]) {
            if (!(got[i] == kUntouched)) {
                printf("  FAIL %s: element %zu is not the op's but was written (%g)\n", what, i,
                       got[i]);
                failures++;
                return;
            }
            continue;
        }
        double e = std::fabs(got[i] - want[i]) / (atol_rel * largest + rtol * std::fabs(want[i]));
        if (std::isnan(e) || std::isnan(got[i])) e = INFINITY;
        if (e > worst) worst = e, at = i;
    }
    printf("  %s %-6s worst error / tolerance %.3g at %zu (got %.8g, want %.8g)\n",
           worst <= 1.0 ? "ok  " : "FAIL", what, worst, at, got[at], want[at]);
    if (!(worst <= 1.0)) failures++;
}

/* FP32: fp32 tiles; BF16_TILES: fp32 tensors, bf16 tiles (gpu_set_math bf16_gemm); BF16_ACT:
 * bf16 q, k, v and out (the attention_*_bf16 entries), bf16 tiles. */
enum Mode { MODE_FP32, MODE_BF16_TILES, MODE_BF16_ACT };
static const char *const kModeName[] = {"fp32", "bf16", "bf16 activations"};

static std::vector<uint16_t> to_bf16(const std::vector<float> &x)
{
    std::vector<uint16_t> out(x.size());
    for (size_t i = 0; i < x.size(); i++) out[i] = bf16_from_float(x[i]);
    return out;
}

static std::vector<float> widened(const std::vector<uint16_t> &x)
{
    std::vector<float> out(x.size());
    for (size_t i = 0; i < x.size(); i++) out[i] = bf16_to_float(x[i]);
    return out;
}

/* fwd + bwd in bf16 activations: the inputs (already bf16 values) as bf16_t, out back widened. */
static void run_bf16_activations(std::vector<float> &out, std::vector<float> &lse,
                                 std::vector<float> &dq, float *dk, float *dv,
                                 const std::vector<float> &dout, const std::vector<float> &qbuf,
                                 const std::vector<float> &kvbuf, int packed, size_t koff,
                                 size_t voff, int B, int H, int Tq, int Tk, int Dh, int ldq,
                                 int ldkv)
{
    const std::vector<uint16_t> q16 = to_bf16(qbuf), kv16 = packed ? q16 : to_bf16(kvbuf);
    std::vector<uint16_t> out16(out.size(), 0x7fc0);  /* bf16 NaN: unwritten elements show */
    cuda_flash_attention_fwd_bf16(out16.data(), lse.data(), q16.data(), kv16.data() + koff,
                                  kv16.data() + voff, B, H, Tq, Tk, Dh, ldq, ldkv);
    cuda_flash_attention_bwd_bf16(dq.data(), dk, dv, dout.data(), q16.data(), kv16.data() + koff,
                                  kv16.data() + voff, out16.data(), lse.data(), B, H, Tq, Tk, Dh,
                                  ldq, ldkv);
    out = widened(out16);
}

/* bf16 gradients, both ways, against the fp32 ones (every element: owned ones rounded, the
 * sentinels, exact in bf16, kept) given as dq32 and dkv32 (dkv32 NULL when packed). */
static void check_bf16_gradients(const std::vector<float> &dq32, const std::vector<float> *dkv32,
                                 const std::vector<float> &dout, const std::vector<float> &qbuf,
                                 const std::vector<float> &kvbuf, int packed, size_t koff,
                                 size_t voff, int B, int H, int Tq, int Tk, int Dh, int ldq,
                                 int ldkv)
{
    const std::vector<uint16_t> q16 = to_bf16(qbuf), kv16 = packed ? q16 : to_bf16(kvbuf);
    const uint16_t *k16 = kv16.data() + koff, *v16 = kv16.data() + voff;
    std::vector<uint16_t> out16((size_t)B * Tq * H * Dh);
    std::vector<float> lse((size_t)B * H * Tq);
    cuda_flash_attention_fwd_bf16(out16.data(), lse.data(), q16.data(), k16, v16, B, H, Tq, Tk,
                                  Dh, ldq, ldkv);
    const std::vector<uint16_t> want_q = to_bf16(dq32);
    const std::vector<uint16_t> want_kv = dkv32 ? to_bf16(*dkv32) : std::vector<uint16_t>();
    for (int way = 0; way < 2; way++) {
        const uint16_t untouched = bf16_from_float(kUntouched);
        std::vector<uint16_t> dq(dq32.size(), untouched), dkv(dkv32 ? dkv32->size() : 0, untouched);
        uint16_t *dkv_base = packed ? dq.data() : dkv.data();
        if (way == 0)
            cuda_flash_attention_bwd_bf16_grad16(dq.data(), dkv_base + koff, dkv_base + voff,
                                                 dout.data(), q16.data(), k16, v16, out16.data(),
                                                 lse.data(), B, H, Tq, Tk, Dh, ldq, ldkv);
        else
            cuda_attention_bwd_bf16_rounded_after(cuda_flash_attention_bwd_bf16, dq.data(),
                                                  dkv_base + koff, dkv_base + voff, dout.data(),
                                                  q16.data(), k16, v16, out16.data(), lse.data(),
                                                  B, H, Tq, Tk, Dh, ldq, ldkv);
        const bool same = dq == want_q && dkv == want_kv;
        printf("  %s bf16 gradients (%s) == fp32 gradients rounded, bit for bit\n",
               same ? "ok  " : "FAIL", way == 0 ? "stored by the kernels" : "fp32 stand-ins");
        if (!same) failures++;
    }
}

static void attention_case(int B, int H, int Tq, int Tk, int Dh, int packed, Mode mode)
{
    const int bf16 = mode != MODE_FP32;
    const int C = H * Dh, ldq = packed ? 3 * C : C + 3, ldkv = packed ? 3 * C : 2 * C;
    const size_t nq = (size_t)B * Tq * ldq, nkv = packed ? nq : (size_t)B * Tk * ldkv;
    const size_t nout = (size_t)B * Tq * C, nrows = (size_t)B * H * Tq;
    const size_t koff = packed ? C : 0, voff = packed ? 2 * C : C;
    uint64_t seed = 1234u + 7u * Tq + Dh;
    std::vector<float> qbuf(nq), kvbuf(nkv), dout(nout);
    for (float &x : qbuf) x = (float)uniform(seed);
    for (float &x : kvbuf) x = (float)uniform(seed);
    for (float &x : dout) x = (float)uniform(seed);
    if (mode == MODE_BF16_ACT) {  /* the reference sees the exact bf16 inputs */
        for (float &x : qbuf) x = bf16_round(x);
        for (float &x : kvbuf) x = bf16_round(x);
    }
    float *kvbase = packed ? qbuf.data() : kvbuf.data();
    const float *q = qbuf.data(), *k = kvbase + koff, *v = kvbase + voff;

    /* reference, double precision, straight from the definition */
    std::vector<double> out_r(nout), lse_r(nrows), dq_r(nq, 0.0), dkv_r(nkv, 0.0);
    std::vector<char> q_owned(nq, 0), kv_owned(nkv, 0);
    std::vector<double> &dk_r = packed ? dq_r : dkv_r;
    std::vector<char> &k_owned = packed ? q_owned : kv_owned;
    const double scale = 1.0 / std::sqrt((double)Dh);
    auto Q = [&](int b, int i, int h, int e) { return (double)q[((size_t)b * Tq + i) * ldq + h * Dh + e]; };
    auto K = [&](int b, int j, int h, int e) { return (double)k[((size_t)b * Tk + j) * ldkv + h * Dh + e]; };
    auto V = [&](int b, int j, int h, int e) { return (double)v[((size_t)b * Tk + j) * ldkv + h * Dh + e]; };
    auto dO = [&](int b, int i, int h, int e) { return (double)dout[((size_t)b * Tq + i) * C + h * Dh + e]; };
    std::vector<double> P((size_t)Tq * Tk), dS((size_t)Tq * Tk);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            for (int i = 0; i < Tq; i++) {
                double mx = -INFINITY, sum = 0.0, D = 0.0;
                for (int j = 0; j < Tk; j++) {
                    double s = 0.0;
                    for (int e = 0; e < Dh; e++) s += Q(b, i, h, e) * K(b, j, h, e);
                    P[(size_t)i * Tk + j] = s * scale;
                    mx = std::max(mx, s * scale);
                }
                for (int j = 0; j < Tk; j++) sum += std::exp(P[(size_t)i * Tk + j] - mx);
                lse_r[((size_t)b * H + h) * Tq + i] = mx + std::log(sum);
                for (int j = 0; j < Tk; j++) P[(size_t)i * Tk + j] = std::exp(P[(size_t)i * Tk + j] - mx) / sum;
                for (int e = 0; e < Dh; e++) {
                    double o = 0.0;
                    for (int j = 0; j < Tk; j++) o += P[(size_t)i * Tk + j] * V(b, j, h, e);
                    out_r[((size_t)b * Tq + i) * C + h * Dh + e] = o;
                }
                for (int j = 0; j < Tk; j++) {
                    double dp = 0.0;
                    for (int e = 0; e < Dh; e++) dp += dO(b, i, h, e) * V(b, j, h, e);
                    dS[(size_t)i * Tk + j] = dp;
                    D += dp * P[(size_t)i * Tk + j];
                }
                for (int j = 0; j < Tk; j++) dS[(size_t)i * Tk + j] = P[(size_t)i * Tk + j] * (dS[(size_t)i * Tk + j] - D);
            }
            for (int i = 0; i < Tq; i++)
                for (int e = 0; e < Dh; e++) {
                    double a = 0.0;
                    for (int j = 0; j < Tk; j++) a += dS[(size_t)i * Tk + j] * K(b, j, h, e);
                    const size_t at = ((size_t)b * Tq + i) * ldq + h * Dh + e;
                    dq_r[at] = scale * a;
                    q_owned[at] = 1;
                }
            for (int j = 0; j < Tk; j++)
                for (int e = 0; e < Dh; e++) {
                    double a = 0.0, c = 0.0;
                    for (int i = 0; i < Tq; i++) {
                        a += dS[(size_t)i * Tk + j] * Q(b, i, h, e);
                        c += P[(size_t)i * Tk + j] * dO(b, i, h, e);
                    }
                    const size_t at = ((size_t)b * Tk + j) * ldkv + h * Dh + e;
                    dk_r[at + koff] = scale * a;
                    k_owned[at + koff] = 1;
                    dk_r[at + voff] = c;
                    k_owned[at + voff] = 1;
                }
        }

    cuda_context()->bf16_gemm = bf16;
    std::vector<float> out(nout, NAN), lse(nrows, NAN), dq(nq), dkv(nkv);
    for (size_t i = 0; i < nq; i++) dq[i] = q_owned[i] ? NAN : kUntouched;
    for (size_t i = 0; i < nkv; i++) dkv[i] = kv_owned[i] ? NAN : kUntouched;
    float *dkv_base = packed ? dq.data() : dkv.data();
    if (mode == MODE_BF16_ACT) {
        run_bf16_activations(out, lse, dq, dkv_base + koff, dkv_base + voff, dout, qbuf, kvbuf,
                             packed, koff, voff, B, H, Tq, Tk, Dh, ldq, ldkv);
    } else {
        cuda_flash_attention_fwd(out.data(), lse.data(), q, k, v, B, H, Tq, Tk, Dh, ldq, ldkv);
        cuda_flash_attention_bwd(dq.data(), dkv_base + koff, dkv_base + voff, dout.data(), q, k,
                                 v, out.data(), lse.data(), B, H, Tq, Tk, Dh, ldq, ldkv);
    }
    printf("%s B=%d H=%d Tq=%d Tk=%d Dh=%d %s\n", kModeName[mode], B, H, Tq, Tk, Dh,
           packed ? "packed qkv" : "q + packed kv");
    /* fp32: summation order only (1e-5 / 1e-4 relative as test_backend_parity); bf16: 8-bit
     * operands (and in bf16 activations an out rounded once more), 2e-2 of the largest
     * magnitude */
    const double r_out = bf16 ? 2e-2 : 1e-5, a_out = bf16 ? 2e-2 : 1e-6;
    const double r_grad = bf16 ? 2e-2 : 1e-4, a_grad = bf16 ? 2e-2 : 1e-5;
    compare("out", out, out_r, std::vector<char>(nout, 1), r_out, a_out);
    compare("lse", lse, lse_r, std::vector<char>(nrows, 1), r_out, a_out);
    compare(packed ? "dqkv" : "dq", dq, dq_r, q_owned, r_grad, a_grad);
    if (!packed) compare("dkv", dkv, dkv_r, kv_owned, r_grad, a_grad);
    if (mode == MODE_BF16_ACT)
        check_bf16_gradients(dq, packed ? nullptr : &dkv, dout, qbuf, kvbuf, packed, koff, voff,
                             B, H, Tq, Tk, Dh, ldq, ldkv);

    std::vector<float> dq2(dq), dkv2(dkv);
    float *dkv2_base = packed ? dq2.data() : dkv2.data();
    if (mode == MODE_BF16_ACT) {
        std::vector<float> out2(out), lse2(lse);
        run_bf16_activations(out2, lse2, dq2, dkv2_base + koff, dkv2_base + voff, dout, qbuf,
                             kvbuf, packed, koff, voff, B, H, Tq, Tk, Dh, ldq, ldkv);
    } else {
        cuda_flash_attention_bwd(dq2.data(), dkv2_base + koff, dkv2_base + voff, dout.data(), q,
                                 k, v, out.data(), lse.data(), B, H, Tq, Tk, Dh, ldq, ldkv);
    }
    const bool same = !std::memcmp(dq.data(), dq2.data(), nq * sizeof(float)) &&
                      !std::memcmp(dkv.data(), dkv2.data(), nkv * sizeof(float));
    printf("  %s backward bitwise repeatable\n", same ? "ok  " : "FAIL");
    if (!same) failures++;
}

int main()
{
    gpu_set_attention(ATTN_KERNEL_FUSED);
    for (Mode m : {MODE_FP32, MODE_BF16_TILES, MODE_BF16_ACT}) {
        attention_case(1, 2, 70, 70, 8, 1, m);    /* Dh 8 padded to 16, two 64-row tiles */
        attention_case(1, 1, 37, 100, 24, 0, m);  /* Tq != Tk, tiny config head width */
        attention_case(1, 1, 66, 66, 32, 1, m);   /* decoder head width */
        attention_case(1, 1, 65, 130, 64, 0, m);  /* ViT-B head width, 2 x 3 tiles */
        attention_case(1, 1, 40, 50, 40, 0, m);   /* runtime-Dh kernels, 32-row tiles */
        attention_case(1, 1, 33, 20, 128, 0, m);  /* widest fused head, Tk < one tile */
    }
    printf(failures ? "FAILED: %d checks\n" : "all checks passed\n", failures);
    return failures ? 1 : 0;
}
