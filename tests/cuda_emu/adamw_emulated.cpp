/* The one-launch AdamW kernel of the CUDA backend (cuda/cuda_optim.cu: adamw_kernel and its host
 * function cuda_adamw) runs WITHOUT a GPU: test_adamw_emulated.sh cuts its source (and the launch
 * helpers of cuda/cuda_kernels.cuh) out of cuda/, rewrites the <<<...>>> launch into emu_launch,
 * makes every 16-/8-byte pack access check its alignment, and this file runs the kernel on the
 * host, one CUDA thread after another (no barriers or shuffles: the serial order is a valid
 * schedule). Every result must equal, BIT FOR BIT, the former per-tensor kernel's per-element
 * formula with the roundings nvcc gave it (below, with its host-side coefficients), each
 * element taking its tensor's weight decay or 0 by its mask bit:
 *  - a ParamSet-like buffer (odd-sized tensors, mixed decay flags, zero padding that must stay
 *    +0.0) in one call, against one former launch per tensor;
 *  - element ranges of 1 .. 4099 (tails around the vector width), pointers shifted by 0, 1 and 4
 *    elements each (vector path, scalar fallback), grids capped at 3 blocks (every thread
 *    strides), random mask bits and a NULL mask (every element decays);
 *  - the bf16 weight copy: absent (NULL), 8-byte aligned (vector stores), shifted by 1 and
 *    2 elements (scalar fallback, else the alignment check fires); it must hold the rounded new
 *    parameters and nothing may be written outside [0, n) of any buffer.
 * The kernel's arithmetic runs here as ops/adamw_math.h's device branch (explicit rounding
 * intrinsics, emulated as IEEE operations). What this cannot see (that nvcc keeps those
 * intrinsics unfused: tests/gpu/test_adamw_ptx.sh; speed) is left to the PTX check and to
 * test_backend_parity on a GPU. */
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
}

/* Pack loads/stores (patched in by the .sh): a vector access off its alignment is a fault on
 * the GPU, so it fails here too; the count shows the vector path really ran. */
static long g_pack_accesses, g_misaligned;
static void emu_check_aligned(const void *p, size_t alignment)
{
    g_pack_accesses++;
    if ((uintptr_t)p % alignment) g_misaligned++;
}

/* The weight-copy lookup of cuda/cuda_weight_copy.cu: the test decides the answer. */
static __nv_bfloat16 *g_copy;
static const float *g_copy_asked_p;
static size_t g_copy_asked_n;
static __nv_bfloat16 *cuda_weight_bf16_for_update(const float *p, size_t n)
{
    g_copy_asked_p = p;
    g_copy_asked_n = n;
    return g_copy;
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
static void old_adamw_kernel_element(float *param, __nv_bfloat16 *param_bf16, const float *grad,
                                     float *m, float *v, size_t i, float beta1, float beta2,
                                     float eps, float step_size, float inv_sqrt_bc2, float decay)
{
    const float g = grad[i];
    const float mi = std::fmaf(1.0f - beta1, g, m[i] * beta1);
    const float vi = std::fmaf(g, (1.0f - beta2) * g, v[i] * beta2);
    m[i] = mi;
    v[i] = vi;
    const float quotient = step_size * mi / std::fmaf(std::sqrt(vi), inv_sqrt_bc2, eps);
    const float p = std::fmaf(param[i], decay, -quotient);
    param[i] = p;
    if (param_bf16) param_bf16[i] = __float2bfloat16_rn(p);
}

/* The former cuda_adamw's host part for element i, weight_decay chosen by its flag. */
static void old_adamw(float *param, __nv_bfloat16 *copy, const float *grad, float *m, float *v,
                      size_t i, int decays, float lr, float beta1, float beta2, float eps,
                      float weight_decay, long step)
{
    const float wd = decays ? weight_decay : 0.0f;
    const double bc1 = 1.0 - pow(beta1, (double)step);
    const double bc2 = 1.0 - pow(beta2, (double)step);
    const float step_size = (float)(lr / bc1);
    const float inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
    const float decay = 1.0f - lr * wd;
    old_adamw_kernel_element(param, copy, grad, m, v, i, beta1, beta2, eps, step_size,
                             inv_sqrt_bc2, decay);
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

/* One call of the new kernel on shifted buffers vs the former formula element by element. */
static void range_case(size_t n, int op, int og, int om, int ov, int copy_off, bool null_mask,
                       const Hyper &h)
{
    Buf p(n, op, -1, 1), g(n, og, -1, 1), m(n, om, -0.1f, 0.1f), v(n, ov, 0, 0.01f);
    std::vector<float> rp(p.p, p.p + n), rm(m.p, m.p + n), rv(v.p, v.p + n);
    std::vector<uint32_t> mask(decay_mask_words(n) + 1, 0);
    for (size_t w = 0; w < mask.size(); w++) mask[w] = urand32();
    Bf16Buf copy(n, copy_off < 0 ? 0 : copy_off);
    std::vector<__nv_bfloat16> rcopy(n);
    g_copy = copy_off < 0 ? nullptr : copy.nv();
    const uint32_t *mk = null_mask ? nullptr : mask.data();
    cuda_adamw(p.p, g.p, m.p, v.p, mk, n, h.lr, h.beta1, h.beta2, h.eps, h.wd, h.step);
    CHECK(g_copy_asked_p == p.p && g_copy_asked_n == n, "weight copy asked for the wrong range");
    for (size_t i = 0; i < n; i++) {
        const int decays = null_mask ? 1 : (int)((mask[i >> 5] >> (i & 31)) & 1u);
        old_adamw(rp.data(), rcopy.data(), g.p, rm.data(), rv.data(), i, decays, h.lr, h.beta1,
                  h.beta2, h.eps, h.wd, h.step);
        CHECK(same_bits(p.p[i], rp[i]) && same_bits(m.p[i], rm[i]) && same_bits(v.p[i], rv[i]),
              "n %zu offs %d/%d/%d/%d mask %s i %zu: p %.9g vs %.9g, m %.9g vs %.9g, v %.9g vs %.9g",
              n, op, og, om, ov, null_mask ? "NULL" : "random", i, p.p[i], rp[i], m.p[i], rm[i],
              v.p[i], rv[i]);
        if (copy_off >= 0)
            CHECK(copy.p[i] == rcopy[i].bits, "bf16 copy n %zu off %d i %zu", n, copy_off, i);
    }
    CHECK(p.guards_intact() && g.guards_intact() && m.guards_intact() && v.guards_intact(),
          "n %zu offs %d/%d/%d/%d: a write outside [0, n)", n, op, og, om, ov);
    if (copy_off >= 0) CHECK(copy.guards_intact(), "n %zu: bf16 copy written outside [0, n)", n);
    else for (uint16_t b : copy.raw) CHECK(b == kGuardBf16, "n %zu: a bf16 write without a copy", n);
}

/* A ParamSet-like buffer in ONE call vs one former launch per tensor; padding stays +0. */
static void param_set_case(const Hyper &h, bool with_copy)
{
    struct T { size_t numel; int decay; };
    const T tensors[] = {{7, 1}, {33, 0}, {1, 1}, {50, 0}, {17, 1}, {125, 1}, {64, 0},
                         {210, 1}, {1031, 0}, {4099, 1}, {1, 0}};
    std::vector<size_t> offset;
    size_t total = 0;
    for (const T &t : tensors) { offset.push_back(total); total += (t.numel + 15) & ~(size_t)15; }
    Buf p(total, 0, 0, 0), g(total, 0, 0, 0), m(total, 0, 0, 0), v(total, 0, 0, 0);
    std::vector<uint32_t> mask(decay_mask_words(total), 0);
    for (size_t k = 0; k < offset.size(); k++)
        for (size_t i = 0; i < tensors[k].numel; i++) {
            const size_t e = offset[k] + i;
            p.p[e] = urand(-1, 1), g.p[e] = urand(-1, 1);
            m.p[e] = urand(-0.1f, 0.1f), v.p[e] = urand(0, 0.01f);
            if (tensors[k].decay) mask[e >> 5] |= 1u << (e & 31);
        }
    std::vector<float> rp(p.p, p.p + total), rm(m.p, m.p + total), rv(v.p, v.p + total);
    Bf16Buf copy(total, 0);
    std::vector<__nv_bfloat16> rcopy(total);
    g_copy = with_copy ? copy.nv() : nullptr;
    const long launches = emu_launches;
    cuda_adamw(p.p, g.p, m.p, v.p, mask.data(), total, h.lr, h.beta1, h.beta2, h.eps, h.wd, h.step);
    CHECK(emu_launches == launches + 1, "one call is %ld launches", emu_launches - launches);
    std::vector<char> inside(total, 0);
    for (size_t k = 0; k < offset.size(); k++)
        for (size_t i = 0; i < tensors[k].numel; i++) {
            const size_t e = offset[k] + i;
            inside[e] = 1;
            old_adamw(rp.data(), rcopy.data(), g.p, rm.data(), rv.data(), e, tensors[k].decay,
                      h.lr, h.beta1, h.beta2, h.eps, h.wd, h.step);
        }
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
    }
}

int main()
{
    const Hyper hypers[] = {{1e-3f, 0.9f, 0.95f, 1e-8f, 0.05f, 1}, {0.02f, 0.9f, 0.999f, 1e-6f, 5.0f, 7},
                            {3e-4f, 0.8f, 0.95f, 1e-8f, 0.1f, 1000}};
    const int offs[3] = {0, 1, 4};
    for (unsigned cap : {1u << 30, 3u}) {
        emu_max_grid = cap;
        for (const Hyper &h : hypers) {
            param_set_case(h, true);
            param_set_case(h, false);
        }
        const Hyper &h = hypers[1];
        for (size_t n : {(size_t)1, (size_t)3, (size_t)4, (size_t)5, (size_t)7, (size_t)8,
                         (size_t)9, (size_t)33, (size_t)1003, (size_t)4099})
            for (int op : offs)
                for (int og : offs) {
                    range_case(n, op, og, op, op, -1, false, h);   /* m, v with param */
                    range_case(n, op, op, og, op, -1, false, h);   /* m shifted alone */
                    range_case(n, op, op, op, og, -1, true, h);    /* v shifted, NULL mask */
                }
        for (size_t n : {(size_t)5, (size_t)8, (size_t)1003})
            for (int copy_off : {-1, 0, 1, 2, 4}) range_case(n, 0, 0, 0, 0, copy_off, false, h);
    }
    const long vector_accesses = g_pack_accesses;
    CHECK(g_misaligned == 0, "%ld vector accesses off their alignment", g_misaligned);
    CHECK(vector_accesses > 0, "the vector path never ran");
    printf("%s (%d failures, %ld launches, %ld vector accesses)\n", fails ? "FAILED" : "all ok",
           fails, emu_launches, vector_accesses);
    return fails != 0;
}
