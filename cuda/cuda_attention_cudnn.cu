/* bf16 attention through cuDNN's fused scaled-dot-product attention (flash attention inside
 * cuDNN), built with NVIDIA's header-only cudnn-frontend (C++17) on cuDNN's graph API:
 * Graph::sdpa() for forward, Graph::sdpa_backward() for backward. Selected by
 * gpu_set_attention(ATTN_KERNEL_CUDNN) (config key attention_kernel = cudnn) at every head width
 * it takes, and by the default ATTN_KERNEL_AUTO where the own flash kernels' fast bf16 tiles
 * would run (head widths 32 and 64; src/ops/attention_choice.h): measured on an H200 at 2.03x
 * the flash kernels (Dh 64) and 1.31x (Dh 32), forward + backward.
 *
 * The model's attention: scale 1/sqrt(Dh), no mask, no dropout, no bias. Layouts are cuDNN
 * [b, h, s, d] tensors with explicit strides over our memory, so nothing is transposed or
 * copied: q[b, t, h*Dh + d] with row stride ldq is dims {B, H, Tq, Dh}, strides
 * {Tq*ldq, Dh, ldq, 1} (k, v likewise with ldkv; a packed [rows, 3C] qkv buffer needs no
 * repacking); out [B, Tq, C] is strides {Tq*C, Dh, C, 1}. cuDNN's softmax statistics
 * ("Stats", fp32 {B, H, Tq, 1}, the natural-log logsumexp of the scaled scores) are written
 * straight into saved: the layout and meaning of the flash kernels' lse [B, H, Tq], so
 * attention_saved_floats is unchanged, and a call this path declines (say a misaligned bf16
 * gradient) falls back to the flash backward on the same statistics.
 *
 * Backward: cuDNN wants dO in the io type, so the fp32 dout is rounded once into bf16
 * (SCRATCH_BF16_A); it computes D = rowsum(dO * O) itself from bf16 O and dO. Its dQ, dK, dV
 * come out in bf16: attention_bwd_bf16_grad16 has cuDNN store them straight into dq, dk, dv
 * (a NULL one goes to SCRATCH_CUDNN_ATTN_GRAD16); attention_bwd_bf16 has them stored compact
 * in SCRATCH_CUDNN_ATTN_GRAD16 and widened into the fp32 destinations (the kernel below). So
 * the grad16 results are bit for bit the fp32 results rounded (widening is exact) as the
 * contract asks, provided cuDNN's backward is deterministic: we ask for its deterministic
 * algorithm (SDPA_backward_attributes::set_deterministic_algorithm) and fall back to the
 * non-deterministic one, with one warning, only if this cuDNN cannot build it.
 *
 * Plans: building a cuDNN graph takes milliseconds to seconds (heuristics, kernel selection,
 * possibly runtime compilation), so each graph is built once per (kind, shape, strides) and
 * kept for the life of the process (a model has a handful); execute() then only binds
 * pointers. A key no attempt can build (a head width or layout this cuDNN's engines refuse) is
 * remembered as refused, said once with every attempt's reason (log_warn), and runs the flash
 * kernels. Workspace comes from SCRATCH_CUDNN_ATTN_WORKSPACE; every frontend call is checked
 * by CUDNN_FE_CHECK (file, line, cuDNN's message). The handle runs on the context's stream
 * (cudnnSetStream in cuda_context.cu), so these calls are ordered with every other op.
 *
 * Builds: the Makefile defines ALICE_CUDNN_FRONTEND and adds the frontend's include folder
 * (.devdeps/cudnn-frontend/include, from scripts/deps.sh) for this file alone when the headers
 * are present: the headers are heavy, so they stay in this one translation unit, and only in
 * nvcc's host pass (#ifndef __CUDA_ARCH__; the device pass sees the small kernel only). Without
 * them this file compiles the variant at the end, whose gpu_cudnn_attention_available() is 0:
 * train_begin then stops with gpu_cudnn_attention_unavailable_reason() before anything runs. */
#include <cuda_bf16.h>

#include <cstdio>

#include "cuda/cuda_attention_cudnn.h"
#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_ops.h"
#include "cuda/cuda_weight_copy.h"  /* cuda_round_to_bf16 */
#include "ops/attention_choice.h"
#include "ops/gpu_device.h"

/* ---- cuDNN attention: widening kernel ----
 * (cut out and run on the host by tests/cuda_emu/test_cudnn_attention_emulated.sh: keep the
 * markers) */

/* dst[r * ld + c] = src[r * cols + c] widened (exact) for r < rows, c < cols: cuDNN's compact
 * bf16 gradient into the fp32 destination with q's or kv's row stride. */
static __global__ void cudnn_attention_widen_rows_kernel(float *dst, const __nv_bfloat16 *src,
                                                         long rows, int cols, long ld)
{
    GRID_STRIDE(i, (size_t)rows * cols) {
        const size_t r = i / (size_t)cols, c = i % (size_t)cols;
        dst[r * (size_t)ld + c] = widen(src[i]);
    }
}

/* (unused in the build without the frontend headers) */
[[maybe_unused]] static void cudnn_attention_widen_rows(float *dst, const __nv_bfloat16 *src,
                                                        long rows, int cols, long ld)
{
    const size_t n = (size_t)rows * cols;
    if (n == 0) return;
    cudnn_attention_widen_rows_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(dst, src, rows,
                                                                                  cols, ld);
    CUDA_CHECK_LAUNCH();
}

/* ---- end of cuDNN attention: widening kernel ---- */

/* 16-byte alignment of a bf16 tensor's start and row stride (cuDNN's TMA loads need it). */
static bool bf16_rows_aligned(const void *p, long ld)
{
    return ((uintptr_t)p % 16u) == 0 && ((size_t)ld * sizeof(__nv_bfloat16)) % 16u == 0;
}

int cuda_cudnn_attention_takes(const bf16_t *q, const bf16_t *k, const bf16_t *v,
                               const bf16_t *out, int Dh, int ldq, int ldkv)
{
    /* Which kernel and head width go to cuDNN: src/ops/attention_choice.h (CUDNN at every
     * multiple of 8 up to 128, cuDNN's support surface on sm80/sm90; AUTO where the fast flash
     * tiles would run, in a build with the frontend). Every head start h*Dh is then 16-byte
     * aligned too. */
    return attention_uses_cudnn(cuda_attention_kernel(), cuda_context()->bf16_gemm, Dh,
                                gpu_cudnn_attention_available()) &&
           bf16_rows_aligned(q, ldq) && bf16_rows_aligned(k, ldkv) && bf16_rows_aligned(v, ldkv) &&
           ((uintptr_t)out % 16u) == 0;
}

#if defined(ALICE_CUDNN_FRONTEND) && !defined(__CUDA_ARCH__)
#include <array>
#include <cmath>
#include <cstring>  /* the frontend's shim uses std::strlen without including it */
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include <cudnn_frontend.h>

namespace {

namespace fe = cudnn_frontend;
using TensorPtr = std::shared_ptr<fe::graph::Tensor_attributes>;

/* Every frontend call returns an error_t: a failure ends the job naming the call, file, line
 * and cuDNN's message (the CUDNN_CHECK of cuda/cuda_check.h for the frontend). */
#define CUDNN_FE_CHECK(call) do { fe::error_t e_ = (call); if (e_.is_bad()) \
    alice_fatal_at(__FILE__, __LINE__, "cuDNN frontend call failed: %s: %s", #call, \
                   e_.get_message().c_str()); } while (0)
/* While building, a failure is one attempt's answer (the next attempt may succeed): it is
 * returned as text naming the call and line instead. */
#define CUDNN_FE_TRY(call) do { fe::error_t e_ = (call); if (e_.is_bad()) \
    return std::string(#call) + " (" __FILE__ ":" + std::to_string(__LINE__) + "): " + \
           e_.get_message(); } while (0)

/* Tensor uids of the variant packs (named, never magic numbers). */
enum TensorUid : int64_t { UID_Q = 1, UID_K, UID_V, UID_O, UID_STATS, UID_DO, UID_DQ, UID_DK, UID_DV };

enum class GraphKind : int64_t { Forward, Inference, Backward };

/* What a built graph depends on: kind, sizes and the row strides of every tensor (pointers are
 * bound per call). ld_dq/ld_dk/ld_dv are 0 for forward graphs. */
struct GraphKey {
    GraphKind kind;
    int64_t B, H, Tq, Tk, Dh, ldq, ldkv, ld_dq, ld_dk, ld_dv;
    bool operator<(const GraphKey &o) const
    {
        const std::array<int64_t, 11> a{(int64_t)kind, B, H, Tq, Tk, Dh, ldq, ldkv, ld_dq, ld_dk, ld_dv};
        const std::array<int64_t, 11> b{(int64_t)o.kind, o.B, o.H, o.Tq, o.Tk, o.Dh, o.ldq, o.ldkv,
                                        o.ld_dq, o.ld_dk, o.ld_dv};
        return a < b;
    }
};

struct BuiltGraph {
    std::shared_ptr<fe::graph::Graph> graph;
    int64_t workspace_bytes;
};

/* Built graphs, and the keys no attempt could build (declined for good: not retried). */
std::map<GraphKey, BuiltGraph> g_graphs;
std::set<GraphKey> g_refused;

/* One attempt at building: for forward graphs the frontend's implementation choice (AUTO
 * lets it pick cuDNN's newer unified SDPA engine where its support surface allows, COMPOSITE
 * is the classic fused flash-attention graph); for backward graphs (no such choice) whether
 * the deterministic algorithm is asked for. Tried in order; graph_for skips the attempts that
 * mean nothing for the graph's kind. */
struct BuildAttempt {
    fe::AttentionImplementation_t implementation;
    bool deterministic;
    const char *label;
};
constexpr BuildAttempt kForwardAttempts[] = {
    {fe::AttentionImplementation_t::AUTO, true, "implementation chosen by the frontend"},
    {fe::AttentionImplementation_t::COMPOSITE, true, "composite implementation"},
};
constexpr BuildAttempt kBackwardAttempts[] = {
    {fe::AttentionImplementation_t::AUTO, true, "deterministic algorithm"},
    {fe::AttentionImplementation_t::AUTO, false, "NON-deterministic algorithm"},
};

/* A bf16 [b, h, s, d] tensor over rows of stride ld (heads interleaved in a row). */
TensorPtr bhsd(fe::graph::Graph &g, const char *name, TensorUid uid, int64_t B, int64_t H,
               int64_t T, int64_t Dh, int64_t ld)
{
    return g.tensor(fe::graph::Tensor_attributes()
                        .set_name(name)
                        .set_uid(uid)
                        .set_dim({B, H, T, Dh})
                        .set_stride({T * ld, Dh, ld, 1})
                        .set_data_type(fe::DataType_t::BFLOAT16));
}

void set_bhsd_output(const TensorPtr &t, TensorUid uid, int64_t B, int64_t H, int64_t T,
                     int64_t Dh, int64_t ld)
{
    t->set_output(true).set_uid(uid).set_dim({B, H, T, Dh}).set_stride({T * ld, Dh, ld, 1})
        .set_data_type(fe::DataType_t::BFLOAT16);
}

/* The saved statistics: fp32 {B, H, Tq, 1}, contiguous: the flash kernels' lse [B, H, Tq]. */
std::vector<int64_t> stats_dims(const GraphKey &k) { return {k.B, k.H, k.Tq, 1}; }
std::vector<int64_t> stats_strides(const GraphKey &k) { return {k.H * k.Tq, k.Tq, 1, 1}; }

/* The graph of key k as attempt a describes it (tensors and the SDPA node), not yet validated
 * or built: shared by the build below and by the offline validation the tests run without a
 * GPU (cuda_cudnn_attention_validate_offline), which passes the target's compute capability
 * and SM count (0: the frontend asks the device). They must be set before the nodes are added:
 * each node copies the graph's context when it is made. */
std::shared_ptr<fe::graph::Graph> make_graph(const GraphKey &k, const BuildAttempt &a,
                                             int offline_sm_version = 0, int offline_sm_count = 0)
{
    auto g = std::make_shared<fe::graph::Graph>();
    if (offline_sm_version) g->set_sm_version(offline_sm_version).set_sm_count(offline_sm_count);
    g->set_io_data_type(fe::DataType_t::BFLOAT16)
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    const float scale = 1.0f / sqrtf((float)k.Dh);
    const int64_t C = k.H * k.Dh;
    TensorPtr Q = bhsd(*g, "Q", UID_Q, k.B, k.H, k.Tq, k.Dh, k.ldq);
    TensorPtr K = bhsd(*g, "K", UID_K, k.B, k.H, k.Tk, k.Dh, k.ldkv);
    TensorPtr V = bhsd(*g, "V", UID_V, k.B, k.H, k.Tk, k.Dh, k.ldkv);
    if (k.kind == GraphKind::Backward) {
        TensorPtr O = bhsd(*g, "O", UID_O, k.B, k.H, k.Tq, k.Dh, C);
        TensorPtr dO = bhsd(*g, "dO", UID_DO, k.B, k.H, k.Tq, k.Dh, C);
        TensorPtr stats = g->tensor(fe::graph::Tensor_attributes()
                                        .set_name("Stats")
                                        .set_uid(UID_STATS)
                                        .set_dim(stats_dims(k))
                                        .set_stride(stats_strides(k))
                                        .set_data_type(fe::DataType_t::FLOAT));
        auto opts = fe::graph::SDPA_backward_attributes()
                        .set_name("alice_sdpa_backward")
                        .set_attn_scale(scale)
                        .set_deterministic_algorithm(a.deterministic);
        auto grads = g->sdpa_backward(Q, K, V, O, dO, stats, opts);
        set_bhsd_output(grads[0], UID_DQ, k.B, k.H, k.Tq, k.Dh, k.ld_dq);
        set_bhsd_output(grads[1], UID_DK, k.B, k.H, k.Tk, k.Dh, k.ld_dk);
        set_bhsd_output(grads[2], UID_DV, k.B, k.H, k.Tk, k.Dh, k.ld_dv);
    } else {
        const bool stats_out = k.kind == GraphKind::Forward;
        auto opts = fe::graph::SDPA_attributes()
                        .set_name("alice_sdpa")
                        .set_generate_stats(stats_out)
                        .set_attn_scale(scale)
                        .set_implementation(a.implementation);
        auto outs = g->sdpa(Q, K, V, opts);
        set_bhsd_output(outs[0], UID_O, k.B, k.H, k.Tq, k.Dh, C);
        if (stats_out)
            outs[1]->set_output(true).set_uid(UID_STATS).set_dim(stats_dims(k))
                .set_stride(stats_strides(k)).set_data_type(fe::DataType_t::FLOAT);
    }
    return g;
}

/* Builds the graph of key k with attempt a into out; "" on success, else why not. */
std::string try_build_steps(const GraphKey &k, const BuildAttempt &a, BuiltGraph *out)
{
    std::shared_ptr<fe::graph::Graph> g = make_graph(k, a);
    cudnnHandle_t handle = cuda_context()->dnn;
    CUDNN_FE_TRY(g->validate());
    CUDNN_FE_TRY(g->build_operation_graph(handle));
    /* heuristics' first choices, then cuDNN's fallback list: more candidates, never fewer */
    CUDNN_FE_TRY(g->create_execution_plans({fe::HeurMode_t::A, fe::HeurMode_t::FALLBACK}));
    CUDNN_FE_TRY(g->check_support());   /* (the handle overloads of these two are deprecated) */
    CUDNN_FE_TRY(g->build_plans());
    int64_t ws = 0;
    CUDNN_FE_TRY(g->get_workspace_size(ws));
    out->graph = g;
    out->workspace_bytes = ws;
    return "";
}

/* try_build_steps, with an exception thrown inside the frontend (some of its paths throw
 * instead of returning an error_t) turned into the attempt's answer too. */
std::string try_build(const GraphKey &k, const BuildAttempt &a, BuiltGraph *out)
{
    try {
        return try_build_steps(k, a, out);
    } catch (const std::exception &e) {
        return std::string("exception from the cuDNN frontend: ") + e.what();
    }
}

const char *kind_name(GraphKind kind)
{
    return kind == GraphKind::Forward ? "forward" : kind == GraphKind::Inference ? "inference"
                                                                                 : "backward";
}

/* The cached graph of key k, built on first use; NULL when this cuDNN builds none for it
 * (said once, with every attempt's reason): the caller then runs the flash kernels. */
const BuiltGraph *graph_for(const GraphKey &k)
{
    auto it = g_graphs.find(k);
    if (it != g_graphs.end()) return &it->second;
    if (g_refused.count(k)) return nullptr;
    std::string why;
    const bool bwd = k.kind == GraphKind::Backward;
    const BuildAttempt *first = bwd ? kBackwardAttempts : kForwardAttempts;
    const size_t count = bwd ? std::size(kBackwardAttempts) : std::size(kForwardAttempts);
    for (const BuildAttempt *a_it = first; a_it != first + count; ++a_it) {
        const BuildAttempt &a = *a_it;
        BuiltGraph built{};
        const std::string err = try_build(k, a, &built);
        if (err.empty()) {
            if (bwd && !a.deterministic)
                log_warn("cuDNN attention backward B=%lld H=%lld Tq=%lld Tk=%lld Dh=%lld: this cuDNN "
                         "builds no deterministic algorithm; running the non-deterministic one "
                         "(runs are then not bitwise repeatable)",
                         (long long)k.B, (long long)k.H, (long long)k.Tq, (long long)k.Tk,
                         (long long)k.Dh);
            log_info("cuDNN attention: %s graph B=%lld H=%lld Tq=%lld Tk=%lld Dh=%lld built (%s; "
                     "workspace %lld bytes)", kind_name(k.kind), (long long)k.B, (long long)k.H,
                     (long long)k.Tq, (long long)k.Tk, (long long)k.Dh, a.label,
                     (long long)built.workspace_bytes);
            return &g_graphs.emplace(k, built).first->second;
        }
        why += std::string("\n  ") + a.label + ": " + err;
    }
    log_warn("cuDNN attention: no %s graph for B=%lld H=%lld Tq=%lld Tk=%lld Dh=%lld (cuDNN %zu, "
             "frontend %d.%d.%d); this shape runs the flash kernels instead. Every attempt "
             "failed:%s", kind_name(k.kind), (long long)k.B, (long long)k.H, (long long)k.Tq,
             (long long)k.Tk, (long long)k.Dh, cudnnGetVersion(), CUDNN_FRONTEND_MAJOR_VERSION,
             CUDNN_FRONTEND_MINOR_VERSION, CUDNN_FRONTEND_PATCH_VERSION, why.c_str());
    g_refused.insert(k);
    return nullptr;
}

void run_graph(const BuiltGraph &bg, std::unordered_map<int64_t, void *> &pack)
{
    void *workspace = cuda_scratch(SCRATCH_CUDNN_ATTN_WORKSPACE,
                                   bg.workspace_bytes > 0 ? (size_t)bg.workspace_bytes : 1);
    CUDNN_FE_CHECK(bg.graph->execute(cuda_context()->dnn, pack, workspace));
}

/* The statistics' start 16-byte aligned, as cuDNN wants every tensor (activation arenas align
 * to 256 bytes; a caller's odd buffer is declined by forward and backward alike, and the flash
 * kernels run both). */
bool stats_aligned(const float *saved) { return ((uintptr_t)saved % 16u) == 0; }

/* cuDNN's variant packs take non-const pointers; inputs are only read. */
void *in(const void *p) { return const_cast<void *>(p); }

/* The backward graph with gradient row strides ld_dq/ld_dk/ld_dv into dq16/dk16/dv16; any
 * NULL destination gets a compact region of SCRATCH_CUDNN_ATTN_GRAD16 (its ld must then be C). */
bool backward(__nv_bfloat16 *dq16, __nv_bfloat16 *dk16, __nv_bfloat16 *dv16, long ld_dq,
              long ld_dk, long ld_dv, const float *dout, const bf16_t *q, const bf16_t *k,
              const bf16_t *v, const bf16_t *out, const float *saved, int B, int H, int Tq,
              int Tk, int Dh, int ldq, int ldkv)
{
    if (!saved)
        alice_fatal_at(__FILE__, __LINE__, "cuDNN attention backward without saved statistics "
                       "(the forward ran with saved = NULL, forward only)");
    if (!stats_aligned(saved)) return false;  /* the forward declined it too: flash kernels */
    const GraphKey key{GraphKind::Backward, B, H, Tq, Tk, Dh, ldq, ldkv, ld_dq, ld_dk, ld_dv};
    const BuiltGraph *bg = graph_for(key);
    if (!bg) return false;
    const int C = H * Dh;
    const size_t n_dout = (size_t)B * Tq * C;
    __nv_bfloat16 *dout16 =
        (__nv_bfloat16 *)cuda_scratch(SCRATCH_BF16_A, n_dout * sizeof(__nv_bfloat16));
    cuda_round_to_bf16(dout16, dout, n_dout);
    std::unordered_map<int64_t, void *> pack = {
        {UID_Q, in(q)}, {UID_K, in(k)}, {UID_V, in(v)}, {UID_O, in(out)},
        {UID_DO, dout16}, {UID_STATS, in(saved)},
        {UID_DQ, dq16}, {UID_DK, dk16}, {UID_DV, dv16}};
    run_graph(*bg, pack);
    return true;
}

}  // namespace

int cuda_cudnn_attention_compiled(void) { return 1; }

const char *gpu_cudnn_attention_unavailable_reason(void) { return "(available)"; }

/* SMs of an H100 SXM (132; an H200 has as many): what validate() is told offline. */
constexpr int kOfflineSmCount = 132;

int cuda_cudnn_attention_validate_offline(int kind, int B, int H, int Tq, int Tk, int Dh, int ldq,
                                          int ldkv, int ld_dq, int ld_dk, int ld_dv,
                                          int sm_version, char *why, size_t why_len)
{
    const GraphKind kinds[] = {GraphKind::Forward, GraphKind::Inference, GraphKind::Backward};
    if (kind < 0 || kind > 2) ALICE_FATAL("cuDNN attention: unknown graph kind %d", kind);
    const GraphKey k{kinds[kind], B, H, Tq, Tk, Dh, ldq, ldkv, ld_dq, ld_dk, ld_dv};
    const bool bwd = k.kind == GraphKind::Backward;
    std::string all;
    /* the first attempt that validates wins, as in graph_for */
    const BuildAttempt *first = bwd ? kBackwardAttempts : kForwardAttempts;
    const size_t count = bwd ? std::size(kBackwardAttempts) : std::size(kForwardAttempts);
    for (const BuildAttempt *a = first; a != first + count; ++a) {
        std::string err;
        try {
            /* no device to ask: the target's compute capability, and an H100's SM count */
            std::shared_ptr<fe::graph::Graph> g = make_graph(k, *a, sm_version, kOfflineSmCount);
            fe::error_t e = g->validate();
            if (e.is_good()) {
                snprintf(why, why_len, "%s", a->label);
                return 1;
            }
            err = e.get_message();
        } catch (const std::exception &e) {
            err = std::string("exception: ") + e.what();
        }
        all += std::string(all.empty() ? "" : "; ") + a->label + ": " + err;
    }
    snprintf(why, why_len, "%s", all.c_str());
    return 0;
}

void gpu_cudnn_attention_graphs(int *built, int *refused)
{
    *built = (int)g_graphs.size();
    *refused = (int)g_refused.size();
}

int cuda_cudnn_attention_fwd_bf16(bf16_t *out, float *saved, const bf16_t *q, const bf16_t *k,
                                  const bf16_t *v, int B, int H, int Tq, int Tk, int Dh, int ldq,
                                  int ldkv)
{
    if (B <= 0 || H <= 0 || Tq <= 0 || Tk <= 0) return 1;
    if (saved && !stats_aligned(saved)) return 0;
    const GraphKey key{saved ? GraphKind::Forward : GraphKind::Inference, B, H, Tq, Tk, Dh, ldq,
                       ldkv, 0, 0, 0};
    const BuiltGraph *bg = graph_for(key);
    if (!bg) return 0;
    std::unordered_map<int64_t, void *> pack = {{UID_Q, in(q)}, {UID_K, in(k)}, {UID_V, in(v)},
                                                {UID_O, out}};
    if (saved) pack.emplace(UID_STATS, saved);
    run_graph(*bg, pack);
    return 1;
}

int cuda_cudnn_attention_bwd_bf16(float *dq, float *dk, float *dv, const float *dout,
                                  const bf16_t *q, const bf16_t *k, const bf16_t *v,
                                  const bf16_t *out, const float *saved, int B, int H, int Tq,
                                  int Tk, int Dh, int ldq, int ldkv)
{
    if (B <= 0 || H <= 0 || Tq <= 0 || Tk <= 0 || (!dq && !dk && !dv)) return 1;
    const int C = H * Dh;
    const size_t nq = (size_t)B * Tq * C, nkv = (size_t)B * Tk * C;
    /* compact bf16 dQ | dK | dV (each region's start stays 16-byte aligned: C % 8 == 0) */
    __nv_bfloat16 *g16 = (__nv_bfloat16 *)cuda_scratch(SCRATCH_CUDNN_ATTN_GRAD16,
                                                       (nq + 2 * nkv) * sizeof(__nv_bfloat16));
    __nv_bfloat16 *dq16 = g16, *dk16 = g16 + nq, *dv16 = g16 + nq + nkv;
    if (!backward(dq16, dk16, dv16, C, C, C, dout, q, k, v, out, saved, B, H, Tq, Tk, Dh, ldq,
                  ldkv))
        return 0;
    if (dq) cudnn_attention_widen_rows(dq, dq16, (long)B * Tq, C, ldq);
    if (dk) cudnn_attention_widen_rows(dk, dk16, (long)B * Tk, C, ldkv);
    if (dv) cudnn_attention_widen_rows(dv, dv16, (long)B * Tk, C, ldkv);
    return 1;
}

int cuda_cudnn_attention_bwd_bf16_grad16(bf16_t *dq, bf16_t *dk, bf16_t *dv, const float *dout,
                                         const bf16_t *q, const bf16_t *k, const bf16_t *v,
                                         const bf16_t *out, const float *saved, int B, int H,
                                         int Tq, int Tk, int Dh, int ldq, int ldkv)
{
    if ((dq && !bf16_rows_aligned(dq, ldq)) || (dk && !bf16_rows_aligned(dk, ldkv)) ||
        (dv && !bf16_rows_aligned(dv, ldkv)))
        return 0;
    if (B <= 0 || H <= 0 || Tq <= 0 || Tk <= 0 || (!dq && !dk && !dv)) return 1;
    const int C = H * Dh;
    const size_t nq = (size_t)B * Tq * C, nkv = (size_t)B * Tk * C;
    /* a gradient nobody wants still has to go somewhere: a compact scratch region */
    const size_t spare = (dq ? 0 : nq) + (dk ? 0 : nkv) + (dv ? 0 : nkv);
    __nv_bfloat16 *next = spare ? (__nv_bfloat16 *)cuda_scratch(SCRATCH_CUDNN_ATTN_GRAD16,
                                                                spare * sizeof(__nv_bfloat16))
                                : nullptr;
    __nv_bfloat16 *dq16 = dq ? as_nv(dq) : next;
    if (!dq) next += nq;
    __nv_bfloat16 *dk16 = dk ? as_nv(dk) : next;
    if (!dk) next += nkv;
    __nv_bfloat16 *dv16 = dv ? as_nv(dv) : next;
    return backward(dq16, dk16, dv16, dq ? ldq : C, dk ? ldkv : C, dv ? ldkv : C, dout, q, k, v,
                    out, saved, B, H, Tq, Tk, Dh, ldq, ldkv);
}

#elif !defined(__CUDA_ARCH__)
/* Built without the cuDNN frontend headers (or, ALICE_CUDNN_FRONTEND_BROKEN, with headers that
 * did not compile against this cuDNN: the Makefile then compiles this variant after printing
 * the compiler's errors, so the rest of a GPU run is not lost to one file): the path cannot
 * run. train_begin refuses attention_kernel = cudnn with the reason below first; reaching
 * these entry points anyway (a direct gpu_set_attention caller) is the same error. */
const char *gpu_cudnn_attention_unavailable_reason(void)
{
#ifdef ALICE_CUDNN_FRONTEND_BROKEN
    return "attention_kernel = cudnn: the cuDNN frontend headers (.devdeps/cudnn-frontend) did not "
           "compile against this cuDNN (the build printed the compiler's errors for "
           "cuda/cuda_attention_cudnn.cu)";
#else
    return GPU_CUDNN_ATTENTION_MISSING_MSG "; this alice was built without them: run "
           "scripts/deps.sh and rebuild (make)";
#endif
}

[[noreturn]] static void cudnn_attention_missing(void)
{
    alice_die("%s", gpu_cudnn_attention_unavailable_reason());
}

int cuda_cudnn_attention_compiled(void) { return 0; }

int cuda_cudnn_attention_validate_offline(int, int, int, int, int, int, int, int, int, int, int,
                                          int, char *why, size_t why_len)
{
    snprintf(why, why_len, "%s", GPU_CUDNN_ATTENTION_MISSING_MSG);
    return 0;
}

void gpu_cudnn_attention_graphs(int *built, int *refused)
{
    *built = 0;
    *refused = 0;
}

int cuda_cudnn_attention_fwd_bf16(bf16_t *, float *, const bf16_t *, const bf16_t *,
                                  const bf16_t *, int, int, int, int, int, int, int)
{
    cudnn_attention_missing();
}

int cuda_cudnn_attention_bwd_bf16(float *, float *, float *, const float *, const bf16_t *,
                                  const bf16_t *, const bf16_t *, const bf16_t *, const float *,
                                  int, int, int, int, int, int, int)
{
    cudnn_attention_missing();
}

int cuda_cudnn_attention_bwd_bf16_grad16(bf16_t *, bf16_t *, bf16_t *, const float *,
                                         const bf16_t *, const bf16_t *, const bf16_t *,
                                         const bf16_t *, const float *, int, int, int, int, int,
                                         int, int)
{
    cudnn_attention_missing();
}
#endif

int gpu_cudnn_attention_available(void) { return cuda_cudnn_attention_compiled(); }
