/* The AdamW and EMA kernels of the CUDA backend (cuda/cuda_optim.cu: adamw_kernel with and
 * without the EMA target, ema_kernel, and their host functions cuda_adamw / cuda_ema_update)
 * run WITHOUT a GPU: test_adamw_emulated.sh cuts their source (and the launch helpers of
 * cuda/cuda_kernels.cuh) out of cuda/, rewrites the <<<...>>> launches into emu_launch, makes
 * every 16-/8-byte pack access check its alignment, and this file runs the kernels on the
 * host, one CUDA thread after another (no barriers or shuffles: the serial order is a valid
 * schedule). Every result must equal, BIT FOR BIT, the sequence the one launch replaces, each
 * former kernel's per-element formula with the roundings nvcc gave it (below, with its
 * host-side coefficients): the scale kernel (clipping: g * s), the former per-tensor AdamW
 * kernel, each element taking its tensor's weight decay or 0 by its mask bit, then the former
 * ema_update kernel (fma(target, momentum, online * rest)):
 *  - a ParamSet-like buffer (odd-sized tensors, mixed decay flags, zero padding that must stay
 *    +0.0) in one call, against one former launch per tensor, with and without the clipping
 *    factor and the EMA target (and the target's bf16 copy);
 *  - element ranges of 1 .. 4099 (tails around the vector width), pointers shifted by 0, 1 and 4
 *    elements each (vector path, scalar fallback; the target shifted alone too), grids capped
 *    at 3 blocks (every thread strides), random mask bits and a NULL mask (every element
 *    decays), clipping factors 1 and 0.37;
 *  - the bf16 weight copies of the parameters and of the EMA target: absent (NULL), 8-byte
 *    aligned (vector stores), shifted by 1 and 2 elements (scalar fallback, else the alignment
 *    check fires); they must hold the rounded new values and nothing may be written outside
 *    [0, n) of any buffer; the gradients are only read;
 *  - ema_update alone (the vectorised ema_kernel) over the same ranges, offsets and copies.
 * The kernels' arithmetic runs here as ops/adamw_math.h's and ops/ema_math.h's device branch
 * (explicit rounding intrinsics, emulated as IEEE operations). What this cannot see (that nvcc
 * keeps those intrinsics unfused: tests/gpu/test_adamw_ptx.sh; speed) is left to the PTX check
 * and to test_backend_parity on a GPU. */
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "emu_serial.h"

/* The CUDA rounding intrinsics of ops/adamw_math.h's device branch, each one IEEE operation
 * rounded to nearest (fmaf: one rounding; the .sh compiles with -ffp-contract=off). */
#define ALICE_EMULATE_CUDA_ROUNDING 1
static inline float __fmaf_rn(float a, float b, float c) { return std::fmaf(a, b, c); }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fsqrt_rn(float a) { return std::sqrt(a); }
extern "C" {
#include "ops/adamw_math.h"
#include "ops/decay_mask.h"
#include "ops/ema_math.h"
}

/* core/check.h's assertion (cuda_adamw refuses an EMA target overlapping the parameters):
 * a failure here is a test failure. */
#define ALICE_ASSERT(cond, ...) do { if (!(cond)) { printf("ALICE_ASSERT: " __VA_ARGS__); \
    printf("\n"); std::exit(1); } } while (0)

/* Pack loads/stores (patched in by the .sh): a vector access off its alignment is a fault on
 * the GPU, so it fails here too; the count shows the vector path really ran. */
static long g_pack_accesses, g_misaligned;
static void emu_check_aligned(const void *p, size_t alignment)
{
    g_pack_accesses++;
    if ((uintptr_t)p % alignment) g_misaligned++;
}

/* The weight-copy lookup of cuda/cuda_weight_copy.cu: the test decides the answer, one copy
 * for the parameters and one for the EMA target; every question is recorded. */
static __nv_bfloat16 *g_copy, *g_target_copy;
static const float *g_target;
static int g_copy_asks;
static const float *g_copy_asked_p[2];
static size_t g_copy_asked_n[2];
static __nv_bfloat16 *cuda_weight_bf16_for_update(const float *p, size_t n)
{
    if (g_copy_asks < 2) g_copy_asked_p[g_copy_asks] = p, g_copy_asked_n[g_copy_asks] = n;
    g_copy_asks++;
    return p == g_target ? g_target_copy : g_copy;
}

#include "adamw_kernel.inc"  /* cut out of cuda/ by the .sh */

static int fails = 0;
#define CHECK(c, ...) do { if (!(c)) { if (fails++ < 20) { printf("FAIL: "); printf(__VA_ARGS__); printf("\n"); } } } while (0)

/* ---- the former kernel (per tensor, one decay factor per launch) ----
 * Its source, one element:
 *     mi = beta1 * m[i] + (1.0f - beta1) * g;
 *     vi = beta2 * v[i] + (1.0f - beta2) * g * g;
 *     p  = param[i] * decay - step_size * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps);
 * and below the roundings nvcc 13.0 gave it for sm_90 (its SASS, read with cuobjdump: FMUL
 * m*beta1, FFMA (1-beta1)*g + that; FMUL (1-beta2)*g, FFMA g*that + v*beta2; IEEE sqrt; FFMA
 * sqrt*inv_sqrt_bc2 + eps; IEEE division; FFMA param*decay - quotient): the bits the GPU gave
 * before this change, which the one-launch kernel must reproduce. */
static void old_adamw_kernel_element(float *param, __nv_bfloat16 *param_bf16, float g,
                                     float *m, float *v, size_t i, float beta1, float beta2,
                                     float eps, float step_size, float inv_sqrt_bc2, float decay)
{
    const float mi = std::fmaf(1.0f - beta1, g, m[i] * beta1);
    const float vi = std::fmaf(g, (1.0f - beta2) * g, v[i] * beta2);
    m[i] = mi;
    v[i] = vi;
    const float quotient = step_size * mi / std::fmaf(std::sqrt(vi), inv_sqrt_bc2, eps);
    const float p = std::fmaf(param[i], decay, -quotient);
    param[i] = p;
    if (param_bf16) param_bf16[i] = __float2bfloat16_rn(p);
}

/* The former clipping pass (clip_grad_norm through the scale kernel, `x[i] *= a`: one mul.f32
 * with nothing to fuse it with), run only when clipping; the factor 1 changes no bit. */
static float old_scaled_gradient(float g, float grad_scale)
{
    return grad_scale == 1.0f ? g : g * grad_scale;
}

/* The former cuda_adamw's host part for element i, weight_decay chosen by its flag, on the
 * gradient the clipping pass left. */
static void old_adamw(float *param, __nv_bfloat16 *copy, const float *grad, float *m, float *v,
                      size_t i, int decays, float lr, float beta1, float beta2, float eps,
                      float weight_decay, long step, float grad_scale)
{
    const float wd = decays ? weight_decay : 0.0f;
    const double bc1 = 1.0 - pow(beta1, (double)step);
    const double bc2 = 1.0 - pow(beta2, (double)step);
    const float step_size = (float)(lr / bc1);
    const float inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
    const float decay = 1.0f - lr * wd;
    old_adamw_kernel_element(param, copy, old_scaled_gradient(grad[i], grad_scale), m, v, i,
                             beta1, beta2, eps, step_size, inv_sqrt_bc2, decay);
}

/* ---- the former ema_update kernel (one element per thread) ----
 * Its source `target[i] = momentum * target[i] + rest * online[i]` (rest = 1 - momentum on
 * the host), as nvcc 13.0 compiled it for sm_90 (its PTX: mul.f32 online*rest, then fma.rn.f32
 * target*momentum + that product), and the bf16 copy of the new value. */
static void old_ema(float *target, __nv_bfloat16 *target_bf16, const float *online, size_t i,
                    float momentum)
{
    const float rest = 1.0f - momentum;
    const float t = std::fmaf(target[i], momentum, online[i] * rest);
    target[i] = t;
    if (target_bf16) target_bf16[i] = __float2bfloat16_rn(t);
}

static uint64_t rs = 88172645463325252ull;
static uint32_t urand32() { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return (uint32_t)(rs >> 32); }
static float urand(float lo, float hi) { return lo + (hi - lo) * (float)((urand32() >> 8) * (1.0 / 16777216.0)); }

constexpr float kGuard = 12345.0f;
constexpr uint16_t kGuardBf16 = 0x7bad;

/* n floats at a 64-byte aligned base + off, with guard values around them. */
struct Buf {
    std::vector<float> raw;
    float *p;
    size_t n;
    Buf(size_t n_, int off, float lo, float hi) : raw(n_ + 64 + 32, kGuard), n(n_)
    {
        uintptr_t a = ((uintptr_t)raw.data() + 16 * sizeof(float) + 63) & ~(uintptr_t)63;
        p = (float *)a + off;
        for (size_t i = 0; i < n; i++) p[i] = urand(lo, hi);
    }
    bool guards_intact() const
    {
        const float *lo = raw.data(), *hi = raw.data() + raw.size();
        for (const float *q = lo; q < p; q++) if (*q != kGuard) return false;
        for (const float *q = p + n; q < hi; q++) if (*q != kGuard) return false;
        return true;
    }
};
struct Bf16Buf {
    std::vector<uint16_t> raw;
    uint16_t *p;
    size_t n;
    Bf16Buf(size_t n_, int off) : raw(n_ + 128 + 64, kGuardBf16), n(n_)
    {
        uintptr_t a = ((uintptr_t)raw.data() + 32 * sizeof(uint16_t) + 63) & ~(uintptr_t)63;
        p = (uint16_t *)a + off;
    }
    __nv_bfloat16 *nv() { return reinterpret_cast<__nv_bfloat16 *>(p); }
    bool guards_intact() const
    {
        const uint16_t *lo = raw.data(), *hi = raw.data() + raw.size();
        for (const uint16_t *q = lo; q < p; q++) if (*q != kGuardBf16) return false;
        for (const uint16_t *q = p + n; q < hi; q++) if (*q != kGuardBf16) return false;
        return true;
    }
};

static bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

struct Hyper { float lr, beta1, beta2, eps, wd; long step; };

static AdamwHyper adamw_hyper(const Hyper &h, float grad_scale)
{
    AdamwHyper a;
    a.lr = h.lr, a.beta1 = h.beta1, a.beta2 = h.beta2, a.eps = h.eps, a.weight_decay = h.wd;
    a.step = h.step, a.grad_scale = grad_scale;
    return a;
}

/* What a range case varies: element offsets of param, grad, m, v and the EMA target (to 16
 * bytes), the bf16 copies' offsets (-1: no copy), the mask, the clipping factor, the EMA. */
struct Range {
    int op, og, om, ov, ot;
    int copy_off, target_copy_off;
    bool null_mask;
    float grad_scale;
    bool ema;
};

constexpr float kMomentum = 0.996f;

/* One call of the kernel on shifted buffers vs the former sequence element by element. */
static void range_case(size_t n, const Range &r, const Hyper &h)
{
    Buf p(n, r.op, -1, 1), g(n, r.og, -1, 1), m(n, r.om, -0.1f, 0.1f), v(n, r.ov, 0, 0.01f);
    Buf t(n, r.ot, -1, 1);
    std::vector<float> rp(p.p, p.p + n), rm(m.p, m.p + n), rv(v.p, v.p + n), rt(t.p, t.p + n);
    const std::vector<float> g0(g.p, g.p + n);
    std::vector<uint32_t> mask(decay_mask_words(n) + 1, 0);
    for (size_t w = 0; w < mask.size(); w++) mask[w] = urand32();
    Bf16Buf copy(n, r.copy_off < 0 ? 0 : r.copy_off);
    Bf16Buf tcopy(n, r.target_copy_off < 0 ? 0 : r.target_copy_off);
    std::vector<__nv_bfloat16> rcopy(n), rtcopy(n);
    g_copy = r.copy_off < 0 ? nullptr : copy.nv();
    g_target_copy = r.target_copy_off < 0 ? nullptr : tcopy.nv();
    g_target = r.ema ? t.p : nullptr;
    g_copy_asks = 0;
    const uint32_t *mk = r.null_mask ? nullptr : mask.data();
    const long launches = emu_launches;
    cuda_adamw(p.p, g.p, m.p, v.p, mk, n, adamw_hyper(h, r.grad_scale), r.ema ? t.p : nullptr,
               kMomentum);
    CHECK(emu_launches == launches + 1, "one call is %ld launches", emu_launches - launches);
    CHECK(g_copy_asks == (r.ema ? 2 : 1) && g_copy_asked_p[0] == p.p && g_copy_asked_n[0] == n &&
          (!r.ema || (g_copy_asked_p[1] == t.p && g_copy_asked_n[1] == n)),
          "weight copies asked for the wrong ranges (%d questions)", g_copy_asks);
    for (size_t i = 0; i < n; i++) {
        const int decays = r.null_mask ? 1 : (int)((mask[i >> 5] >> (i & 31)) & 1u);
        old_adamw(rp.data(), rcopy.data(), g.p, rm.data(), rv.data(), i, decays, h.lr, h.beta1,
                  h.beta2, h.eps, h.wd, h.step, r.grad_scale);
        if (r.ema) old_ema(rt.data(), rtcopy.data(), rp.data(), i, kMomentum);
        CHECK(same_bits(p.p[i], rp[i]) && same_bits(m.p[i], rm[i]) && same_bits(v.p[i], rv[i]),
              "n %zu offs %d/%d/%d/%d mask %s scale %g i %zu: p %.9g vs %.9g, m %.9g vs %.9g, "
              "v %.9g vs %.9g", n, r.op, r.og, r.om, r.ov, r.null_mask ? "NULL" : "random",
              r.grad_scale, i, p.p[i], rp[i], m.p[i], rm[i], v.p[i], rv[i]);
        CHECK(same_bits(t.p[i], rt[i]), "n %zu offs %d/%d ema %d i %zu: target %.9g vs %.9g", n,
              r.op, r.ot, r.ema, i, t.p[i], rt[i]);
        CHECK(same_bits(g.p[i], g0[i]), "n %zu i %zu: the gradient was written", n, i);
        if (r.copy_off >= 0)
            CHECK(copy.p[i] == rcopy[i].bits, "bf16 copy n %zu off %d i %zu", n, r.copy_off, i);
        if (r.ema && r.target_copy_off >= 0)
            CHECK(tcopy.p[i] == rtcopy[i].bits, "target bf16 copy n %zu off %d i %zu", n,
                  r.target_copy_off, i);
    }
    CHECK(p.guards_intact() && g.guards_intact() && m.guards_intact() && v.guards_intact() &&
          t.guards_intact(), "n %zu offs %d/%d/%d/%d/%d: a write outside [0, n)", n, r.op, r.og,
          r.om, r.ov, r.ot);
    if (r.copy_off >= 0) CHECK(copy.guards_intact(), "n %zu: bf16 copy written outside [0, n)", n);
    else for (uint16_t b : copy.raw) CHECK(b == kGuardBf16, "n %zu: a bf16 write without a copy", n);
    if (r.ema && r.target_copy_off >= 0)
        CHECK(tcopy.guards_intact(), "n %zu: target bf16 copy written outside [0, n)", n);
    else for (uint16_t b : tcopy.raw) CHECK(b == kGuardBf16, "n %zu: a target bf16 write without "
                                            "a copy (or without the EMA)", n);
}

/* ema_update alone on shifted buffers vs the former ema kernel element by element. */
static void ema_range_case(size_t n, int ot, int oo, int copy_off, float momentum)
{
    Buf t(n, ot, -1, 1), o(n, oo, -1, 1);
    std::vector<float> rt(t.p, t.p + n);
    Bf16Buf copy(n, copy_off < 0 ? 0 : copy_off);
    std::vector<__nv_bfloat16> rcopy(n);
    g_target = t.p;
    g_target_copy = copy_off < 0 ? nullptr : copy.nv();
    g_copy = nullptr;
    g_copy_asks = 0;
    cuda_ema_update(t.p, o.p, n, momentum);
    CHECK(g_copy_asks == 1 && g_copy_asked_p[0] == t.p && g_copy_asked_n[0] == n,
          "ema_update: weight copy asked for the wrong range");
    for (size_t i = 0; i < n; i++) {
        old_ema(rt.data(), rcopy.data(), o.p, i, momentum);
        CHECK(same_bits(t.p[i], rt[i]), "ema n %zu offs %d/%d i %zu: %.9g vs %.9g", n, ot, oo, i,
              t.p[i], rt[i]);
        if (copy_off >= 0)
            CHECK(copy.p[i] == rcopy[i].bits, "ema bf16 copy n %zu off %d i %zu", n, copy_off, i);
    }
    CHECK(t.guards_intact() && o.guards_intact(), "ema n %zu offs %d/%d: a write outside [0, n)",
          n, ot, oo);
    if (copy_off >= 0) CHECK(copy.guards_intact(), "ema n %zu: bf16 copy written outside", n);
    else for (uint16_t b : copy.raw) CHECK(b == kGuardBf16, "ema n %zu: a bf16 write without a copy", n);
}

/* A ParamSet-like buffer in ONE call vs one former launch per tensor (clipping pass first,
 * EMA after); padding stays +0. */
static void param_set_case(const Hyper &h, bool with_copy, float grad_scale, bool ema)
{
    struct T { size_t numel; int decay; };
    const T tensors[] = {{7, 1}, {33, 0}, {1, 1}, {50, 0}, {17, 1}, {125, 1}, {64, 0},
                         {210, 1}, {1031, 0}, {4099, 1}, {1, 0}};
    std::vector<size_t> offset;
    size_t total = 0;
    for (const T &t : tensors) { offset.push_back(total); total += (t.numel + 15) & ~(size_t)15; }
    Buf p(total, 0, 0, 0), g(total, 0, 0, 0), m(total, 0, 0, 0), v(total, 0, 0, 0);
    Buf tg(total, 0, 0, 0);
    std::vector<uint32_t> mask(decay_mask_words(total), 0);
    for (size_t k = 0; k < offset.size(); k++)
        for (size_t i = 0; i < tensors[k].numel; i++) {
            const size_t e = offset[k] + i;
            p.p[e] = urand(-1, 1), g.p[e] = urand(-1, 1);
            m.p[e] = urand(-0.1f, 0.1f), v.p[e] = urand(0, 0.01f);
            tg.p[e] = urand(-1, 1);
            if (tensors[k].decay) mask[e >> 5] |= 1u << (e & 31);
        }
    std::vector<float> rp(p.p, p.p + total), rm(m.p, m.p + total), rv(v.p, v.p + total);
    std::vector<float> rt(tg.p, tg.p + total);
    Bf16Buf copy(total, 0), tcopy(total, 0);
    std::vector<__nv_bfloat16> rcopy(total), rtcopy(total);
    g_copy = with_copy ? copy.nv() : nullptr;
    g_target_copy = with_copy ? tcopy.nv() : nullptr;
    g_target = ema ? tg.p : nullptr;
    g_copy_asks = 0;
    const long launches = emu_launches;
    cuda_adamw(p.p, g.p, m.p, v.p, mask.data(), total, adamw_hyper(h, grad_scale),
               ema ? tg.p : nullptr, kMomentum);
    CHECK(emu_launches == launches + 1, "one call is %ld launches", emu_launches - launches);
    std::vector<char> inside(total, 0);
    for (size_t k = 0; k < offset.size(); k++)
        for (size_t i = 0; i < tensors[k].numel; i++) {
            const size_t e = offset[k] + i;
            inside[e] = 1;
            old_adamw(rp.data(), rcopy.data(), g.p, rm.data(), rv.data(), e, tensors[k].decay,
                      h.lr, h.beta1, h.beta2, h.eps, h.wd, h.step, grad_scale);
        }
    /* the former ema_update: one launch over the whole target (padding included) */
    if (ema)
        for (size_t e = 0; e < total; e++) old_ema(rt.data(), rtcopy.data(), rp.data(), e, kMomentum);
    for (size_t e = 0; e < total; e++) {
        if (inside[e]) {
            CHECK(same_bits(p.p[e], rp[e]) && same_bits(m.p[e], rm[e]) && same_bits(v.p[e], rv[e]),
                  "param set element %zu: p %.9g vs %.9g", e, p.p[e], rp[e]);
            if (with_copy) CHECK(copy.p[e] == rcopy[e].bits, "param set bf16 copy element %zu", e);
        } else {
            CHECK(same_bits(p.p[e], 0.0f) && same_bits(m.p[e], 0.0f) && same_bits(v.p[e], 0.0f),
                  "padding element %zu: p %g m %g v %g (must stay +0)", e, p.p[e], m.p[e], v.p[e]);
            if (with_copy) CHECK(copy.p[e] == 0, "padding element %zu: bf16 copy 0x%04x", e, copy.p[e]);
        }
        CHECK(same_bits(tg.p[e], rt[e]), "param set EMA target element %zu: %.9g vs %.9g", e,
              tg.p[e], rt[e]);
        if (with_copy && ema)
            CHECK(tcopy.p[e] == rtcopy[e].bits, "param set target bf16 copy element %zu", e);
    }
}

int main()
{
    const Hyper hypers[] = {{1e-3f, 0.9f, 0.95f, 1e-8f, 0.05f, 1}, {0.02f, 0.9f, 0.999f, 1e-6f, 5.0f, 7},
                            {3e-4f, 0.8f, 0.95f, 1e-8f, 0.1f, 1000}};
    const int offs[3] = {0, 1, 4};
    const size_t sizes[] = {1, 3, 4, 5, 7, 8, 9, 33, 1003, 4099};
    for (unsigned cap : {1u << 30, 3u}) {
        emu_max_grid = cap;
        for (const Hyper &h : hypers)
            for (float scale : {1.0f, 0.37f})
                for (bool ema : {false, true}) {
                    param_set_case(h, true, scale, ema);
                    param_set_case(h, false, scale, ema);
                }
        const Hyper &h = hypers[1];
        for (size_t n : sizes)
            for (int op : offs)
                for (int og : offs) {
                    /* m, v with param; m shifted alone; v shifted with a NULL mask */
                    range_case(n, {op, og, op, op, op, -1, -1, false, 1.0f, false}, h);
                    range_case(n, {op, op, og, op, op, -1, -1, false, 0.37f, false}, h);
                    range_case(n, {op, op, op, og, op, -1, -1, true, 0.37f, false}, h);
                    /* the EMA target with param, and shifted alone */
                    range_case(n, {op, og, op, op, op, -1, -1, false, 0.37f, true}, h);
                    range_case(n, {op, op, op, op, og, -1, -1, false, 1.0f, true}, h);
                    ema_range_case(n, op, og, -1, 0.9f);
                }
        for (size_t n : {(size_t)5, (size_t)8, (size_t)1003})
            for (int copy_off : {-1, 0, 1, 2, 4}) {
                range_case(n, {0, 0, 0, 0, 0, copy_off, -1, false, 0.37f, false}, h);
                /* the target's copy alone shifted, then both copies */
                range_case(n, {0, 0, 0, 0, 0, 0, copy_off, false, 0.37f, true}, h);
                range_case(n, {0, 0, 0, 0, 0, copy_off, copy_off, false, 1.0f, true}, h);
                ema_range_case(n, 0, 0, copy_off, 0.996f);
            }
    }
    const long vector_accesses = g_pack_accesses;
    CHECK(g_misaligned == 0, "%ld vector accesses off their alignment", g_misaligned);
    CHECK(vector_accesses > 0, "the vector path never ran");
    printf("%s (%d failures, %ld launches, %ld vector accesses)\n", fails ? "FAILED" : "all ok",
           fails, emu_launches, vector_accesses);
    return fails != 0;
}
