/* Elementwise ops and whole-buffer reductions of the CUDA backend. */
#include "cuda/cuda_gelu_bf16.h"
#include "cuda/cuda_graph.h" /* cuda_graph_capturing: the GELU table is filled outside recordings */
#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_ops.h"
#include "ops/cpu_math.h"

static __global__ void axpby_kernel(float *y, const float *x, float a, float b, size_t n)
{
    GRID_STRIDE(i, n) y[i] = a * x[i] + b * y[i];
}

/* b == 0 ignores y (the BLAS convention the CPU backend follows): 0 * NaN garbage in a fresh
 * buffer would otherwise come out as NaN. */
static __global__ void ax_kernel(float *y, const float *x, float a, size_t n)
{
    GRID_STRIDE(i, n) y[i] = a * x[i];
}

void cuda_axpby(float *y, const float *x, float a, float b, size_t n)
{
    if (n == 0) return;
    if (b == 0.0f)
        ax_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(y, x, a, n);
    else
        axpby_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(y, x, a, b, n);
    CUDA_CHECK_LAUNCH();
}

static __global__ void scale_kernel(float *x, float a, size_t n)
{
    GRID_STRIDE(i, n) x[i] *= a;
}

void cuda_scale(float *x, float a, size_t n)
{
    if (n == 0) return;
    scale_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(x, a, n);
    CUDA_CHECK_LAUNCH();
}

/* Width of the float4 path: 4 floats = 16 bytes per load/store. */
constexpr int kFloatsPerVec = kVecBytes / (int)sizeof(float);

static __global__ void add_kernel(float *out, const float *a, const float *b, size_t n,
                                  bool vectorised)
{
    constexpr int W = kFloatsPerVec;
    /* out may alias a or b (in-place add): each chunk is read whole before it is written. */
    grid_stride_split<W>(
        n, vectorised,
        [=](size_t i) {
            const Pack<float, W> va = load_pack<float, W>(a + i), vb = load_pack<float, W>(b + i);
            Pack<float, W> vo;
#pragma unroll
            for (int k = 0; k < W; k++) vo.v[k] = va.v[k] + vb.v[k];
            store_pack(out + i, vo);
        },
        [=](size_t i) { out[i] = a[i] + b[i]; });
}

void cuda_add(float *out, const float *a, const float *b, size_t n)
{
    if (n == 0) return;
    const bool vec = aligned16(out, a, b);
    add_kernel<<<grid_for_split(n, vec, kFloatsPerVec), kThreads, 0, cuda_stream()>>>(out, a, b,
                                                                                     n, vec);
    CUDA_CHECK_LAUNCH();
}

/* Drop-path's branch scaling (add_group_scaled) over plane_grid: group g's n elements are one
 * plane, so a thread reads its group's scale once and never divides its flat index by n. The
 * product and the sum are rounded on their own (scaled_add_value, MATH_MUL), as on the CPU;
 * out may alias base or y: each chunk is read whole before it is written. */
static __global__ void add_group_scaled_kernel(float *out, const float *base, const float *y,
                                               const float *scale, int groups, long n,
                                               bool vectorised)
{
    constexpr int W = kPlanePerVec;
    for (int g = (int)blockIdx.y; g < groups; g += (int)gridDim.y) {
        const float s = scale[g];
        const size_t at = (size_t)g * (size_t)n;
        float *o = out + at;
        const float *yg = y + at, *bg = base ? base + at : nullptr;
        grid_stride_split<W>(
            (size_t)n, vectorised,
            [=](size_t i) {
                const Pack<float, W> vy = load_pack<float, W>(yg + i);
                Pack<float, W> vo;
                if (bg) {
                    const Pack<float, W> vb = load_pack<float, W>(bg + i);
#pragma unroll
                    for (int k = 0; k < W; k++) vo.v[k] = scaled_add_value(vb.v[k], s, vy.v[k]);
                } else {
#pragma unroll
                    for (int k = 0; k < W; k++) vo.v[k] = MATH_MUL(s, vy.v[k]);
                }
                store_pack(o + i, vo);
            },
            [=](size_t i) { o[i] = bg ? scaled_add_value(bg[i], s, yg[i]) : MATH_MUL(s, yg[i]); });
    }
}

void cuda_add_group_scaled(float *out, const float *base, const float *y, const float *scale,
                           int groups, size_t n)
{
    if (groups <= 0 || n == 0) return;
    const bool vec = n % kPlanePerVec == 0 && aligned16(out, base, y);
    add_group_scaled_kernel<<<plane_grid(groups, (long)n, vec), kThreads, 0, cuda_stream()>>>(
        out, base, y, scale, groups, (long)n, vec);
    CUDA_CHECK_LAUNCH();
}

struct SquareOf {
    const float *x;
    __device__ double operator()(size_t i) const { double v = x[i]; return v * v; }
};

double cuda_sum_squares(const float *x, size_t n)
{
    if (n == 0) return 0.0;
    return device_sum(n, SquareOf{x});
}

/* GELU, exact erf form, as PyTorch's default nn.GELU(): the CPU backend's formula
 * (ops/cpu_math.h, Abramowitz & Stegun erf rather than CUDA's erff) with the same roundings,
 * so the two backends agree bit for bit. T: float, or __nv_bfloat16 for bf16 activations
 * (x widened exactly, y rounded once, so bf16 results match the CPU's bit for bit too). */
template <typename T>
static __global__ void gelu_fwd_kernel(T *y, const T *x, size_t n, bool vectorised)
{
    constexpr int W = kVecBytes / (int)sizeof(T); /* 4 floats or 8 bf16 per 16 bytes */
    grid_stride_split<W>(
        n, vectorised,
        [=](size_t i) {
            const Pack<T, W> vx = load_pack<T, W>(x + i);
            Pack<T, W> vy;
#pragma unroll
            for (int k = 0; k < W; k++) vy.v[k] = narrow_to<T>(gelu_erf(widen(vx.v[k])));
            store_pack(y + i, vy);
        },
        [=](size_t i) { y[i] = narrow_to<T>(gelu_erf(widen(x[i]))); });
}

template <typename T> static void launch_gelu_fwd(T *y, const T *x, size_t n)
{
    if (n == 0) return;
    const bool vec = aligned16(y, x);
    constexpr int W = kVecBytes / (int)sizeof(T);
    gelu_fwd_kernel<T><<<grid_for_split(n, vec, W), kThreads, 0, cuda_stream()>>>(y, x, n, vec);
    CUDA_CHECK_LAUNCH();
}

void cuda_gelu_fwd(float *y, const float *x, size_t n) { launch_gelu_fwd(y, x, n); }

/* ---- bf16 GELU forward by table lookup ----
 * A bf16 input takes one of 65536 values, so y = bf16(gelu_erf(x)) is a table indexed by x's
 * bits: g_gelu_bf16_table, filled once per process on the device by gelu_fwd_kernel's own
 * expression (narrow_to<bf16>(gelu_erf(widen(x)))), so every output bit is that kernel's, and
 * so the CPU's. Why: the formula is ~60 fp32 instructions per element (separately rounded
 * products and sums, a correctly rounded division, Cephes' exp), which held the per-element
 * kernel at 0.43 of a copy's bandwidth (compute-bound); a lookup is a few integer instructions
 * and one shared-memory load.
 * Each block stages the table's hot part in shared memory: for either sign the kGeluHotPerSign
 * entries of biased exponent kGeluHotExpFirst .. +31, i.e. 2^-23 <= |x| < 2^9 (activations
 * practically never leave it); the rest (zeros, denormals, |x| >= 512, inf, NaN) is read from
 * the global table (L1/L2). Blocks stride over the tensor two 16-byte packs at a time (two
 * loads in flight per thread), and the grid holds only as many blocks as the device runs at
 * once, so each block stages the 16 KB once. */
constexpr int kBf16Values = 1 << 16;
constexpr unsigned kBf16SignBit = 0x8000u, kBf16MagnitudeMask = 0x7fffu;
constexpr int kBf16MantissaBits = 7;
constexpr unsigned kGeluHotExpFirst = 104;                /* 2^-23 */
constexpr int kGeluHotLog2 = 12;                          /* 32 exponents x 128 mantissas */
constexpr unsigned kGeluHotPerSign = 1u << kGeluHotLog2;
constexpr unsigned kGeluHotFirst = kGeluHotExpFirst << kBf16MantissaBits; /* |x| bits */
constexpr int kGeluTableThreads = 512;
constexpr int kBf16PerPack = kVecBytes / (int)sizeof(uint16_t); /* 8 */
typedef Pack<uint16_t, kBf16PerPack> Bf16Pack;

/* y bits of every x bits (__device__: one per device, filled by gelu_bf16_table_fill_kernel) */
__device__ __align__(16) uint16_t g_gelu_bf16_table[kBf16Values];
/* gelu_erf_slope(x) of every bf16 x, by its bits: the backward's factor, looked up by the
 * GELU-fused bias-gradient pass of cuda_blas.cu (cuda_gelu_slope_bf16_table), filled alongside */
__device__ float g_gelu_slope_bf16_table[kBf16Values];

/* values: kBf16Values (a parameter only because the host emulation's launch wants one) */
static __global__ void gelu_bf16_table_fill_kernel(unsigned values)
{
    GRID_STRIDE(i, values) {
        const float x = bf16_to_float((bf16_t)i); /* = widen(): the bits shifted up */
        g_gelu_bf16_table[i] = __bfloat16_as_ushort(narrow_to<__nv_bfloat16>(gelu_erf(x)));
        g_gelu_slope_bf16_table[i] = gelu_erf_slope(x);
    }
}

/* hot[] offset of x's bits, or kGeluHotPerSign and more where x is outside the hot range (below it
 * the unsigned difference wraps to a huge value) */
__device__ __forceinline__ unsigned gelu_bf16_hot_offset(uint16_t bits)
{
    return (bits & kBf16MagnitudeMask) - kGeluHotFirst;
}

__device__ __forceinline__ unsigned gelu_bf16_hot_index(uint16_t bits, unsigned offset)
{
    return offset | ((unsigned)(bits >> 15) << kGeluHotLog2);
}

__device__ __forceinline__ uint16_t gelu_bf16_lookup(const uint16_t *hot, uint16_t bits)
{
    const unsigned off = gelu_bf16_hot_offset(bits);
    return off < kGeluHotPerSign ? hot[gelu_bf16_hot_index(bits, off)] : g_gelu_bf16_table[bits];
}

__device__ __forceinline__ Bf16Pack gelu_bf16_lookup_pack(const uint16_t *hot, const Bf16Pack &x)
{
    unsigned off[kBf16PerPack], any = 0;
#pragma unroll
    for (int k = 0; k < kBf16PerPack; k++) {
        off[k] = gelu_bf16_hot_offset(x.v[k]);
        any |= off[k];
    }
    Bf16Pack y;
    /* kGeluHotPerSign is a power of two: the OR is below it iff every offset is. Then only
     * shared-memory loads; else (rare: a zero, a tiny or huge value) each element decides. */
    if (any < kGeluHotPerSign) {
#pragma unroll
        for (int k = 0; k < kBf16PerPack; k++) y.v[k] = hot[gelu_bf16_hot_index(x.v[k], off[k])];
    } else {
#pragma unroll
        for (int k = 0; k < kBf16PerPack; k++) y.v[k] = gelu_bf16_lookup(hot, x.v[k]);
    }
    return y;
}

/* y, x: bf16 bits; vectorised: both 16-byte aligned (else every element goes one at a time). */
static __global__ void __launch_bounds__(kGeluTableThreads)
    gelu_fwd_bf16_table_kernel(uint16_t *y, const uint16_t *x, size_t n, bool vectorised)
{
    __align__(16) __shared__ uint16_t hot[2 * kGeluHotPerSign];
    /* hot[s * kGeluHotPerSign + j] = table[(s << 15) | (kGeluHotFirst + j)], s = sign bit */
    for (unsigned e = threadIdx.x * kBf16PerPack; e < 2 * kGeluHotPerSign;
         e += blockDim.x * kBf16PerPack) {
        const unsigned sign = e >> kGeluHotLog2, j = e & (kGeluHotPerSign - 1);
        const unsigned src = (sign ? kBf16SignBit : 0u) | (kGeluHotFirst + j);
        store_pack(hot + e, load_pack<uint16_t, kBf16PerPack>(g_gelu_bf16_table + src));
    }
    __syncthreads();
    const size_t packs = vectorised ? n / kBf16PerPack : 0, done = packs * kBf16PerPack;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    /* two packs per step: both loads issue before either lookup waits on one */
    for (; p + stride < packs; p += 2 * stride) {
        const Bf16Pack a = load_pack<uint16_t, kBf16PerPack>(x + p * kBf16PerPack);
        const Bf16Pack b = load_pack<uint16_t, kBf16PerPack>(x + (p + stride) * kBf16PerPack);
        store_pack(y + p * kBf16PerPack, gelu_bf16_lookup_pack(hot, a));
        store_pack(y + (p + stride) * kBf16PerPack, gelu_bf16_lookup_pack(hot, b));
    }
    if (p < packs) {
        const Bf16Pack a = load_pack<uint16_t, kBf16PerPack>(x + p * kBf16PerPack);
        store_pack(y + p * kBf16PerPack, gelu_bf16_lookup_pack(hot, a));
    }
    GRID_STRIDE(k, n - done) y[done + k] = gelu_bf16_lookup(hot, x[done + k]);
}

static void fill_gelu_bf16_table(void)
{
    gelu_bf16_table_fill_kernel<<<kBf16Values / kThreads, kThreads, 0, cuda_stream()>>>(
        (unsigned)kBf16Values);
    CUDA_CHECK_LAUNCH();
}

/* blocks: at most those resident at once (the caller's device query); fewer for small n. */
static void launch_gelu_fwd_bf16_table(bf16_t *y, const bf16_t *x, size_t n, unsigned blocks)
{
    const bool vec = aligned16(y, x);
    const size_t units = vec ? n / kBf16PerPack + 1 : n; /* packs (and the tail), or elements */
    const size_t per_block = 2 * (size_t)kGeluTableThreads;
    const size_t want = (units + per_block - 1) / per_block;
    const unsigned grid = want < blocks ? (unsigned)(want < 1 ? 1 : want) : blocks;
    gelu_fwd_bf16_table_kernel<<<grid, kGeluTableThreads, 0, cuda_stream()>>>(y, x, n, vec);
    CUDA_CHECK_LAUNCH();
}

/* Per process (one device per rank): the device whose tables are filled, the table kernel's
 * resident blocks there, and the slope table's device address. */
static struct {
    int device;
    unsigned resident_blocks;
    const float *slope;
} g_gelu_table = {-1, 0, NULL};

/* Fills the table on first use; false while a CUDA graph is being recorded before that (the
 * fill must not live only in a recording that may be thrown away): the formula kernel runs. */
static bool gelu_bf16_table_ready(void)
{
    const int device = cuda_context()->device;
    if (g_gelu_table.device == device) return true;
    if (cuda_graph_capturing()) return false;
    int sms = 0, per_sm = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, gelu_fwd_bf16_table_kernel,
                                                             kGeluTableThreads, 0));
    g_gelu_table.resident_blocks = (unsigned)((sms < 1 ? 1 : sms) * (per_sm < 1 ? 1 : per_sm));
    void *slope = NULL;
    CUDA_CHECK(cudaGetSymbolAddress(&slope, g_gelu_slope_bf16_table));
    g_gelu_table.slope = (const float *)slope;
    fill_gelu_bf16_table(); /* on the stream: ordered before every lookup */
    g_gelu_table.device = device;
    return true;
}

void cuda_gelu_fwd_bf16(bf16_t *y, const bf16_t *x, size_t n)
{
    if (n == 0) return;
    if (gelu_bf16_table_ready())
        launch_gelu_fwd_bf16_table(y, x, n, g_gelu_table.resident_blocks);
    else
        launch_gelu_fwd(as_nv(y), as_nv(x), n);
}

void cuda_gelu_fwd_bf16_formula(bf16_t *y, const bf16_t *x, size_t n)
{
    launch_gelu_fwd(as_nv(y), as_nv(x), n);
}

const float *cuda_gelu_slope_bf16_table(void)
{
    return gelu_bf16_table_ready() ? g_gelu_table.slope : NULL;
}

/* dx, dy are fp32 whatever T is; W follows x (8 bf16 = one 16-byte load, the fp32 sides then
 * take two). */
template <typename T>
static __global__ void gelu_bwd_kernel(float *dx, const float *dy, const T *x, size_t n,
                                       bool vectorised)
{
    constexpr int W = kVecBytes / (int)sizeof(T);
    grid_stride_split<W>(
        n, vectorised,
        [=](size_t i) {
            const Pack<T, W> vx = load_pack<T, W>(x + i);
            const Pack<float, W> vdy = load_pack<float, W>(dy + i);
            Pack<float, W> vdx;
#pragma unroll
            for (int k = 0; k < W; k++) vdx.v[k] = vdy.v[k] * gelu_erf_slope(widen(vx.v[k]));
            store_pack(dx + i, vdx);
        },
        [=](size_t i) { dx[i] = dy[i] * gelu_erf_slope(widen(x[i])); });
}

template <typename T> static void launch_gelu_bwd(float *dx, const float *dy, const T *x, size_t n)
{
    if (n == 0 || !dx) return;
    const bool vec = aligned16(dx, dy, x);
    constexpr int W = kVecBytes / (int)sizeof(T);
    gelu_bwd_kernel<T><<<grid_for_split(n, vec, W), kThreads, 0, cuda_stream()>>>(dx, dy, x, n,
                                                                                  vec);
    CUDA_CHECK_LAUNCH();
}

void cuda_gelu_bwd(float *dx, const float *dy, const float *x, size_t n)
{
    launch_gelu_bwd(dx, dy, x, n);
}

void cuda_gelu_bwd_bf16(float *dx, const float *dy, const bf16_t *x, size_t n)
{
    launch_gelu_bwd(dx, dy, as_nv(x), n);
}

/* LeakyReLU (UNETR's res blocks; formulas in ops/cpu_math.h), 4 floats per 16-byte access
 * where the pointers allow. */

static __global__ void leaky_relu_fwd_kernel(float *y, const float *x, size_t n, float slope,
                                             bool vectorised)
{
    constexpr int W = kFloatsPerVec;
    grid_stride_split<W>(
        n, vectorised,
        [=](size_t i) {
            Pack<float, W> v = load_pack<float, W>(x + i);
#pragma unroll
            for (int k = 0; k < W; k++) v.v[k] = leaky_relu_value(v.v[k], slope);
            store_pack(y + i, v);
        },
        [=](size_t i) { y[i] = leaky_relu_value(x[i], slope); });
}

void cuda_leaky_relu_fwd(float *y, const float *x, size_t n, float slope)
{
    if (n == 0) return;
    const bool vec = aligned16(y, x);
    leaky_relu_fwd_kernel<<<grid_for_split(n, vec, kFloatsPerVec), kThreads, 0, cuda_stream()>>>(
        y, x, n, slope, vec);
    CUDA_CHECK_LAUNCH();
}

static __global__ void leaky_relu_bwd_kernel(float *dx, const float *dy, const float *x,
                                             size_t n, float slope, bool vectorised)
{
    constexpr int W = kFloatsPerVec;
    grid_stride_split<W>(
        n, vectorised,
        [=](size_t i) {
            const Pack<float, W> vx = load_pack<float, W>(x + i);
            Pack<float, W> vd = load_pack<float, W>(dy + i);
#pragma unroll
            for (int k = 0; k < W; k++) vd.v[k] = leaky_relu_grad(vx.v[k], vd.v[k], slope);
            store_pack(dx + i, vd);
        },
        [=](size_t i) { dx[i] = leaky_relu_grad(x[i], dy[i], slope); });
}

void cuda_leaky_relu_bwd(float *dx, const float *dy, const float *x, size_t n, float slope)
{
    if (n == 0 || !dx) return;
    const bool vec = aligned16(dx, dy, x);
    leaky_relu_bwd_kernel<<<grid_for_split(n, vec, kFloatsPerVec), kThreads, 0, cuda_stream()>>>(
        dx, dy, x, n, slope, vec);
    CUDA_CHECK_LAUNCH();
}
