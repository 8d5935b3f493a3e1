/* bf16 weight copies of the CUDA backend (cuda/cuda_weight_copy.h). A copy is made lazily, by
 * the first bf16 GEMM that reads a weight after the weights changed, with the same rounding
 * (__float2bfloat16_rn) the GEMM would have applied to its fp32 operand, so GEMM results are
 * unchanged by it; only the repeated rounding passes disappear. */
#include "cuda/cuda_graph.h"
#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_ops.h"
#include "cuda/cuda_weight_copy.h"

extern "C" {
#include "ops/weight_copy_map.h"
}

static WeightCopyMap g_map;
static int g_enabled = 1;

/* 8 values per thread on the aligned path: one 16-byte bf16 store, two 16-byte fp32 loads. */
constexpr int kBf16PerVec = kVecBytes / (int)sizeof(__nv_bfloat16);

static __global__ void to_bf16_kernel(__nv_bfloat16 *out, const float *in, size_t n,
                                      bool vectorised)
{
    constexpr int W = kBf16PerVec;
    grid_stride_split<W>(
        n, vectorised,
        [=](size_t i) {
            const Pack<float, W> vin = load_pack<float, W>(in + i);
            Pack<__nv_bfloat16, W> vout;
#pragma unroll
            for (int k = 0; k < W; k++) vout.v[k] = __float2bfloat16_rn(vin.v[k]);
            store_pack(out + i, vout);
        },
        [=](size_t i) { out[i] = __float2bfloat16_rn(in[i]); });
}

void cuda_round_to_bf16(__nv_bfloat16 *out, const float *in, size_t n)
{
    if (n == 0) return;
    const bool vec = aligned16(out, in);
    to_bf16_kernel<<<grid_for_split(n, vec, kBf16PerVec), kThreads, 0, cuda_stream()>>>(out, in,
                                                                                       n, vec);
    CUDA_CHECK_LAUNCH();
}

void cuda_to_bf16(bf16_t *y, const float *x, size_t n) { cuda_round_to_bf16(as_nv(y), x, n); }

void gpu_set_weight_copies(int enabled)
{
    g_enabled = enabled != 0;
    /* Off: updates stop maintaining the copies, so none may be trusted when switched back on. */
    for (int i = 0; i < g_map.count; i++) g_map.entry[i].current = 0;
}

unsigned long long gpu_weight_copy_bytes(void)
{
    unsigned long long bytes = 0;
    for (int i = 0; i < g_map.count; i++)
        if (g_map.entry[i].copy) bytes += g_map.entry[i].floats * sizeof(__nv_bfloat16);
    return bytes;
}

void cuda_weights_hint(const float *data, size_t n)
{
    if (data && n) weight_copy_map_add(&g_map, data, n);
}

void cuda_weights_forget(const float *data)
{
    if (!data) return;
    WeightCopy gone = weight_copy_map_remove(&g_map, data);
    if (gone.copy) {
        cuda_release(gone.copy);
        cuda_graph_memory_moved();  /* recorded graphs may read the copy */
    }
}

static size_t offset_in(const WeightCopy *e, const float *p)
{
    return (size_t)((uintptr_t)p - e->base) / sizeof(float);
}

const __nv_bfloat16 *cuda_weight_bf16(const float *p, size_t span_floats)
{
    if (!g_enabled || span_floats == 0) return NULL;
    WeightCopy *e = weight_copy_map_find(&g_map, p, span_floats);
    if (!e) return NULL;
    if (!e->copy) e->copy = cuda_alloc(e->floats * sizeof(__nv_bfloat16));
    if (!e->current) {
        cuda_round_to_bf16((__nv_bfloat16 *)e->copy, (const float *)e->base, e->floats);
        /* Recording a graph (cuda/cuda_graph.h): the rounding above is recorded, not run, so
         * the copy is not current yet; and a graph that rounds the weights inside would
         * only be right if that stayed so. The eager warm-up step leaves every copy current. */
        if (cuda_graph_capturing())
            cuda_graph_spoil("a bf16 weight copy was stale while recording");
        else
            e->current = 1;
    }
    return (const __nv_bfloat16 *)e->copy + offset_in(e, p);
}

void cuda_weight_copies_refresh(void)
{
    if (!g_enabled) return;
    for (int i = 0; i < g_map.count; i++) {
        WeightCopy *e = &g_map.entry[i];
        if (!e->copy || e->current) continue;
        cuda_round_to_bf16((__nv_bfloat16 *)e->copy, (const float *)e->base, e->floats);
        e->current = 1;
    }
}

__nv_bfloat16 *cuda_weight_bf16_for_update(const float *p, size_t n)
{
    WeightCopy *e = g_enabled && n ? weight_copy_map_find(&g_map, p, n) : NULL;
    if (e && e->current) return (__nv_bfloat16 *)e->copy + offset_in(e, p);
    weight_copy_map_written(&g_map, p, n * sizeof(float));
    return NULL;
}

void cuda_upload_weights_aware(void *dst, const void *host_src, size_t bytes)
{
    weight_copy_map_written(&g_map, dst, bytes);
    cuda_upload(dst, host_src, bytes);
}

void cuda_copy_weights_aware(void *dst, const void *src, size_t bytes)
{
    weight_copy_map_written(&g_map, dst, bytes);
    cuda_copy(dst, src, bytes);
}

void cuda_fill_weights_aware(float *x, float value, size_t n)
{
    weight_copy_map_written(&g_map, x, n * sizeof(float));
    cuda_fill(x, value, n);
}

void cuda_axpby_weights_aware(float *y, const float *x, float a, float b, size_t n)
{
    weight_copy_map_written(&g_map, y, n * sizeof(float));
    cuda_axpby(y, x, a, b, n);
}

void cuda_scale_weights_aware(float *x, float a, size_t n)
{
    weight_copy_map_written(&g_map, x, n * sizeof(float));
    cuda_scale(x, a, n);
}

void cuda_add_weights_aware(float *out, const float *a, const float *b, size_t n)
{
    weight_copy_map_written(&g_map, out, n * sizeof(float));
    cuda_add(out, a, b, n);
}
