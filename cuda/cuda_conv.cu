/* 3D convolution and transposed convolution (kernel == stride) of the CUDA backend through
 * cuDNN's convolution API (cudnnConvolutionForward / BackwardData / BackwardFilter, still
 * shipped in cuDNN 9's libcudnn_cnn).
 *
 * A transposed convolution is the data-gradient of a convolution: with the "forward view"
 * input = y [B, Cout, kX, kY, kZ], filter W [Cin, Cout, k, k, k] (PyTorch's ConvTranspose3d
 * layout is exactly cuDNN's [K = Cin, C = Cout] filter of that view), stride k and output
 * x [B, Cin, X, Y, Z], the transposed forward is BackwardData and its backward is Forward +
 * BackwardFilter. cuDNN's alpha/beta let parameter gradients accumulate (beta = 1) as the
 * backend contract asks. Bias gradients are the backend's own per-channel sums
 * (cuda_channel_sums_accumulate): cudnnConvolutionBackwardBias took 2.8 ms for UNETR's output
 * convolution (4 x 14 x 96^3 floats, 71 GB/s; run 9, H200).
 *
 * Precision: CUDNN_FMA_MATH (true fp32, no TF32) unless gpu_set_math allowed TF32.
 * Algorithms: the heuristic's first DETERMINISTIC choice (reproducible runs); with
 * conv_autotune = 1 the fastest deterministic one cudnnFind*AlgorithmEx measures on scratch
 * buffers when the plan is built eagerly (tune_conv_plan).
 *
 * Weight gradients channels-last (conv_wgrad_layout = ndhwc): for NCDHW fp32 tensors cuDNN's
 * heuristic picks sm80 backward-filter kernels that took 12.2 of UNETR's 58 ms per step (run 9,
 * H200: `sm80_xmma_wgrad_implicit_gemm_indexed_wo_smem_tf32`, 4 calls at 96^3). The plan then
 * also describes the input and output gradient channels-last (NDHWC strides) and the filter
 * KDHWC (CUDNN_TENSOR_NHWC), copies both tensors channels-last (cuda/cuda_conv_layout.cu),
 * runs backward-filter on the copies into a scratch filter and adds it, transposed, onto dW.
 * Its algorithm is the heuristic's first deterministic one for those descriptors; a shape for
 * which there is none keeps NCDHW (logged). conv_autotune times the NCDHW directions only.
 *
 * Pointwise convolutions with few channels (pointwise_conv = own) bypass cuDNN altogether:
 * cuda/cuda_conv_pointwise.cu; so does the weight gradient of 3x3x3 stride-1 convolutions with
 * few channels under conv_wgrad_kernel = own (cuda/cuda_conv_wgrad3.cu). */
#include <string.h>

#include "cuda/cuda_conv_autotune.h"
#include "cuda/cuda_conv_layout.h"
#include "cuda/cuda_conv_pointwise.h"
#include "cuda/cuda_conv_wgrad3.h"
#include "cuda/cuda_graph.h"
#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_ops.h"

extern "C" {
#include "ops/conv_autotune_rule.h"
#include "ops/volume_strides.h"
}

struct ConvKey {
    int B, Cin, Cout, X, Y, Z, k, s, pad, tf32;  /* forward-view geometry */
    int autotune;  /* conv_autotune when built: on and off keep their own plans */
    int wgrad_channels_last;  /* conv_wgrad_layout = ndhwc when built */
};

/* One convolution descriptor per direction: the autotune may run a direction with the math type
 * Find measured it under (tf32 = 1 only), the others keep theirs. */
struct ConvPlan {
    ConvKey key;
    cudnnTensorDescriptor_t in, out, bias_in, bias_out;  /* bias over in / out channels */
    cudnnFilterDescriptor_t filter;
    cudnnConvolutionDescriptor_t conv_fwd, conv_bwd_data, conv_bwd_filter;
    cudnnConvolutionFwdAlgo_t fwd_algo;
    cudnnConvolutionBwdDataAlgo_t bwd_data_algo;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter_algo;
    size_t fwd_ws, bwd_data_ws, bwd_filter_ws;
    /* channels-last backward-filter (key.wgrad_channels_last and cuDNN offered an algorithm) */
    int cl;
    cudnnTensorDescriptor_t in_cl, out_cl;
    cudnnFilterDescriptor_t filter_cl;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter_algo_cl;
    size_t bwd_filter_ws_cl;
};

enum { kConvPlanCacheSize = 64 };
static ConvPlan g_conv_plans[kConvPlanCacheSize];
static int g_conv_plan_count, g_conv_evict_next;
/* Above this a faster algorithm's workspace is not worth the memory. */
static const size_t kConvWorkspaceLimit = (size_t)1 << 30;

/* A {B, C, X, Y, Z} tensor's descriptor, NCDHW in memory or NDHWC with channels_last (dims
 * still given as {B, C, X, Y, Z}). Ends the job naming the shape when it is beyond cuDNN's int
 * descriptors (src/ops/volume_strides.h). */
static cudnnTensorDescriptor_t volume_desc_layout(int B, int C, int X, int Y, int Z,
                                                  int channels_last)
{
    int strides[5];
    if (!volume_strides(B, C, X, Y, Z, channels_last, strides))
        alice_die("convolution tensor of %d x %d channels x %d x %d x %d voxels: %lld elements, "
                  "more than cuDNN's int descriptors address (2^31 - 1): use a smaller batch, "
                  "crop or sliding window (roi)", B, C, X, Y, Z,
                  (long long)B * C * X * Y * Z);
    cudnnTensorDescriptor_t d;
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&d));
    const int dims[5] = {B, C, X, Y, Z};
    CUDNN_CHECK(cudnnSetTensorNdDescriptor(d, CUDNN_DATA_FLOAT, 5, dims, strides));
    return d;
}

static cudnnTensorDescriptor_t volume_desc(int B, int C, int X, int Y, int Z)
{
    return volume_desc_layout(B, C, X, Y, Z, 0);
}

static cudnnTensorDescriptor_t volume_desc_channels_last(int B, int C, int X, int Y, int Z)
{
    return volume_desc_layout(B, C, X, Y, Z, 1);
}

static void destroy_channels_last(ConvPlan *p)
{
    if (!p->cl) return;
    CUDNN_CHECK(cudnnDestroyTensorDescriptor(p->in_cl));
    CUDNN_CHECK(cudnnDestroyTensorDescriptor(p->out_cl));
    CUDNN_CHECK(cudnnDestroyFilterDescriptor(p->filter_cl));
    p->cl = 0;
}

static void destroy_conv_plan(ConvPlan *p)
{
    destroy_channels_last(p);
    CUDNN_CHECK(cudnnDestroyTensorDescriptor(p->in));
    CUDNN_CHECK(cudnnDestroyTensorDescriptor(p->out));
    CUDNN_CHECK(cudnnDestroyTensorDescriptor(p->bias_in));
    CUDNN_CHECK(cudnnDestroyTensorDescriptor(p->bias_out));
    CUDNN_CHECK(cudnnDestroyFilterDescriptor(p->filter));
    CUDNN_CHECK(cudnnDestroyConvolutionDescriptor(p->conv_fwd));
    CUDNN_CHECK(cudnnDestroyConvolutionDescriptor(p->conv_bwd_data));
    CUDNN_CHECK(cudnnDestroyConvolutionDescriptor(p->conv_bwd_filter));
}

static cudnnConvolutionDescriptor_t conv_desc(const ConvKey *k, cudnnMathType_t math)
{
    cudnnConvolutionDescriptor_t d;
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d));
    const int pads[3] = {k->pad, k->pad, k->pad}, strides[3] = {k->s, k->s, k->s};
    const int dil[3] = {1, 1, 1};
    CUDNN_CHECK(cudnnSetConvolutionNdDescriptor(d, 3, pads, strides, dil,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CUDNN_CHECK(cudnnSetConvolutionMathType(d, math));
    return d;
}

/* First deterministic, supported algorithm within the workspace limit from a heuristic list.
 * The entries' reported mathType is not filtered on: the math that runs is the descriptor's
 * (CUDNN_FMA_MATH in fp32 mode, set before the query and never changed), so no entry can turn
 * TF32 on, and an entry whose reported type differs is still a valid algorithm to run. */
template <typename Perf, typename Algo>
static void pick_algo(const Perf *perf, int n, Algo *algo, size_t *ws, const char *what)
{
    for (int i = 0; i < n; i++)
        if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].determinism == CUDNN_DETERMINISTIC &&
            perf[i].memory <= kConvWorkspaceLimit) {
            *algo = perf[i].algo;
            *ws = perf[i].memory;
            return;
        }
    ALICE_FATAL("cuDNN offers no deterministic %s algorithm within %zu MiB of workspace for this "
                "convolution", what, kConvWorkspaceLimit >> 20);
}

/* Output extent of one spatial axis of the forward view. */
static int out_extent(int n, const ConvKey *k) { return (n + 2 * k->pad - k->k) / k->s + 1; }

/* Largest workspace of the deterministic, supported entries of a heuristic list within the
 * limit: the Find trials get that much, so whatever the heuristic would allow can be timed. */
template <typename Perf>
static size_t deterministic_workspace(const Perf *perf, int n)
{
    size_t most = 0;
    for (int i = 0; i < n; i++)
        if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].determinism == CUDNN_DETERMINISTIC &&
            perf[i].memory <= kConvWorkspaceLimit && perf[i].memory > most)
            most = perf[i].memory;
    return most;
}

/* Whether a Find entry may run in this plan: it ran, deterministically, within the trials'
 * workspace, and under a math the run allows. Fp16 down-conversion is below the TF32 contract
 * of tf32 = 1; tensor-core math is outside fp32 mode's (its FMA descriptor forbids it anyway,
 * so such an entry cannot describe what would run). */
template <typename Perf>
static int find_entry_usable(const Perf *r, size_t ws_bytes, int tf32)
{
    if (r->status != CUDNN_STATUS_SUCCESS || r->determinism != CUDNN_DETERMINISTIC ||
        r->memory > ws_bytes)
        return 0;
    if (r->mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) return 0;
    return tf32 || r->mathType != CUDNN_TENSOR_OP_MATH;
}

enum { kMaxFound = 32 };  /* Find lists an algorithm once per math type it tried */

/* One direction's choice by conv_autotune_choose (src/ops/conv_autotune_rule.h) from its Find
 * results: on a change the direction's algorithm becomes the entry's and, with tf32 = 1, its
 * descriptor's math type too, so what runs is what Find timed. 1 when the algorithm changed. */
template <typename Perf, typename Algo>
static int choose_found(const Perf *perf, int n, size_t ws_bytes, int tf32,
                        cudnnConvolutionDescriptor_t conv, Algo *algo)
{
    ConvAutotuneResult r[kMaxFound];
    if (n > kMaxFound) n = kMaxFound;
    for (int i = 0; i < n; i++) {
        r[i].algo = (int)perf[i].algo;
        r[i].usable = find_entry_usable(&perf[i], ws_bytes, tf32);
        r[i].ms = perf[i].time;
    }
    const int pick = conv_autotune_choose(cuda_conv_autotune_stats(), r, n, (int)*algo);
    if (pick < 0) return 0;
    *algo = perf[pick].algo;
    if (tf32) CUDNN_CHECK(cudnnSetConvolutionMathType(conv, perf[pick].mathType));
    return 1;
}

/* conv_autotune: cudnnFind*AlgorithmEx times every direction's algorithms on scratch buffers of
 * the plan's shapes, never on a caller's tensors (backward-filter accumulates into dW with
 * beta = 1, and a trial must not add to it), with `find_ws_bytes` of workspace (within
 * kConvWorkspaceLimit). While a CUDA graph records, the trials would be recorded instead of
 * timed (and their allocations would spoil the recording): the plan keeps the heuristic's
 * choices for good, as the GEMM autotune's plans do; the eager warm-up step before every
 * recording builds the step's plans anyway. */
static void tune_conv_plan(ConvPlan *p, size_t find_ws_bytes)
{
    if (cuda_graph_capturing()) {
        cuda_conv_autotune_note_untuned();
        return;
    }
    const ConvKey *k = &p->key;
    cudnnHandle_t dnn = cuda_context()->dnn;
    cudaStream_t stream = cuda_stream();
    const size_t in_bytes = (size_t)k->B * k->Cin * k->X * k->Y * k->Z * sizeof(float);
    const size_t out_bytes = (size_t)k->B * k->Cout * out_extent(k->X, k) * out_extent(k->Y, k) *
                             out_extent(k->Z, k) * sizeof(float);
    const size_t filter_bytes = (size_t)k->Cout * k->Cin * k->k * k->k * k->k * sizeof(float);
    /* A run that fits without conv_autotune must not die of its trials: they get 90% of the free
     * device memory at most (cudaMalloc's granularity, the context's own needs), the workspace
     * shrinking first (Find then skips the algorithms that need more). */
    size_t free_bytes = 0, total_bytes = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    const size_t room = free_bytes / 10 * 9, tensors = in_bytes + out_bytes + filter_bytes;
    if (tensors > room) {
        log_warn("conv_autotune: %.2f GiB of trial buffers for the convolution B=%d Cin=%d "
                 "Cout=%d %dx%dx%d k=%d do not fit the %.2f GiB of free device memory; this shape "
                 "keeps the heuristic's algorithms", (double)tensors / (1u << 30), k->B, k->Cin,
                 k->Cout, k->X, k->Y, k->Z, k->k, (double)free_bytes / (1u << 30));
        cuda_conv_autotune_note_untuned();
        return;
    }
    if (find_ws_bytes > room - tensors) find_ws_bytes = room - tensors;
    float *x = (float *)cuda_alloc(in_bytes);
    float *y = (float *)cuda_alloc(out_bytes);
    float *w = (float *)cuda_alloc(filter_bytes);
    void *ws = cuda_alloc(find_ws_bytes);  /* NULL when 0: Find then times workspace-free ones */
    /* Defined values (no NaN or denormal paths in the trials); timings do not depend on them. */
    CUDA_CHECK(cudaMemsetAsync(x, 0, in_bytes, stream));
    CUDA_CHECK(cudaMemsetAsync(y, 0, out_bytes, stream));
    CUDA_CHECK(cudaMemsetAsync(w, 0, filter_bytes, stream));
    CUDA_WAIT_STREAM(stream);  /* Find synchronises unwatched: let the watched wait come first */
    cudnnConvolutionFwdAlgoPerf_t fwd[kMaxFound];
    cudnnConvolutionBwdDataAlgoPerf_t bwd_data[kMaxFound];
    cudnnConvolutionBwdFilterAlgoPerf_t bwd_filter[kMaxFound];
    int n_fwd = 0, n_bwd_data = 0, n_bwd_filter = 0;
    const char *failed = "forward";
    cudnnStatus_t st = cudnnFindConvolutionForwardAlgorithmEx(
        dnn, p->in, x, p->filter, w, p->conv_fwd, p->out, y, kMaxFound, &n_fwd, fwd, ws,
        find_ws_bytes);
    if (st == CUDNN_STATUS_SUCCESS) {
        failed = "backward-data";
        st = cudnnFindConvolutionBackwardDataAlgorithmEx(
            dnn, p->filter, w, p->out, y, p->conv_bwd_data, p->in, x, kMaxFound, &n_bwd_data,
            bwd_data, ws, find_ws_bytes);
    }
    if (st == CUDNN_STATUS_SUCCESS) {
        failed = "backward-filter";
        st = cudnnFindConvolutionBackwardFilterAlgorithmEx(
            dnn, p->in, x, p->out, y, p->conv_bwd_filter, p->filter, w, kMaxFound,
            &n_bwd_filter, bwd_filter, ws, find_ws_bytes);
    }
    CUDA_WAIT_STREAM(stream);
    cuda_release(ws);  /* after the wait: no trial still uses them */
    cuda_release(w);
    cuda_release(y);
    cuda_release(x);
    if (st != CUDNN_STATUS_SUCCESS) {
        log_warn("conv_autotune: cuDNN's %s Find failed (%s) for the convolution B=%d Cin=%d "
                 "Cout=%d %dx%dx%d k=%d s=%d pad=%d; this shape keeps the heuristic's algorithms",
                 failed, cudnnGetErrorString(st), k->B, k->Cin, k->Cout, k->X, k->Y, k->Z, k->k,
                 k->s, k->pad);
        cuda_conv_autotune_note_untuned();
        return;
    }
    int changed = choose_found(fwd, n_fwd, find_ws_bytes, k->tf32, p->conv_fwd, &p->fwd_algo);
    changed |= choose_found(bwd_data, n_bwd_data, find_ws_bytes, k->tf32, p->conv_bwd_data,
                            &p->bwd_data_algo);
    changed |= choose_found(bwd_filter, n_bwd_filter, find_ws_bytes, k->tf32,
                            p->conv_bwd_filter, &p->bwd_filter_algo);
    cuda_conv_autotune_note_tuned(changed);
}

/* Plans built under conv_wgrad_layout = ndhwc (gpu_conv_wgrad_layout_stats). */
static int g_cl_plans, g_cl_kept_ncdhw;

void gpu_conv_wgrad_layout_stats(int *channels_last_plans, int *kept_ncdhw_plans)
{
    *channels_last_plans = g_cl_plans;
    *kept_ncdhw_plans = g_cl_kept_ncdhw;
}

/* The channels-last backward-filter of conv_wgrad_layout = ndhwc: descriptors and the first
 * deterministic algorithm within the workspace limit, or (none offered) the plan keeps NCDHW.
 * The math type is the NCDHW direction's (the plan's tf32, or what conv_autotune chose). */
static void build_channels_last(ConvPlan *p)
{
    const ConvKey *k = &p->key;
    cudnnHandle_t dnn = cuda_context()->dnn;
    p->in_cl = volume_desc_channels_last(k->B, k->Cin, k->X, k->Y, k->Z);
    p->out_cl = volume_desc_channels_last(k->B, k->Cout, out_extent(k->X, k),
                                          out_extent(k->Y, k), out_extent(k->Z, k));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&p->filter_cl));
    const int fdims[5] = {k->Cout, k->Cin, k->k, k->k, k->k};
    CUDNN_CHECK(cudnnSetFilterNdDescriptor(p->filter_cl, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NHWC, 5,
                                           fdims));
    p->cl = 1;
    enum { kMaxAlgos = 16 };
    int n = 0;
    cudnnConvolutionBwdFilterAlgoPerf_t bf[kMaxAlgos];
    /* Not checked as fatal: cuDNN may refuse the 5-D channels-last filter outright (not
     * supported, bad parameter), which is "none offered" below, not an error of the run. */
    const cudnnStatus_t query = cudnnGetConvolutionBackwardFilterAlgorithm_v7(
        dnn, p->in_cl, p->out_cl, p->conv_bwd_filter, p->filter_cl, kMaxAlgos, &n, bf);
    if (query != CUDNN_STATUS_SUCCESS) n = 0;
    for (int i = 0; i < n; i++)
        if (bf[i].status == CUDNN_STATUS_SUCCESS && bf[i].determinism == CUDNN_DETERMINISTIC &&
            bf[i].memory <= kConvWorkspaceLimit) {
            p->bwd_filter_algo_cl = bf[i].algo;
            CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(
                dnn, p->in_cl, p->out_cl, p->conv_bwd_filter, p->filter_cl,
                p->bwd_filter_algo_cl, &p->bwd_filter_ws_cl));
            g_cl_plans++;
            return;
        }
    log_warn("conv_wgrad_layout = ndhwc: cuDNN offers no deterministic channels-last "
             "backward-filter algorithm for the convolution B=%d Cin=%d Cout=%d %dx%dx%d k=%d s=%d "
             "pad=%d (%s); this shape keeps the NCDHW weight gradient", k->B, k->Cin, k->Cout,
             k->X, k->Y, k->Z, k->k, k->s, k->pad,
             query == CUDNN_STATUS_SUCCESS ? "none listed" : cudnnGetErrorString(query));
    destroy_channels_last(p);
    g_cl_kept_ncdhw++;
}

static void build_conv_plan(ConvPlan *p, const ConvKey *k)
{
    cudnnHandle_t dnn = cuda_context()->dnn;
    p->key = *k;
    p->in = volume_desc(k->B, k->Cin, k->X, k->Y, k->Z);
    p->out = volume_desc(k->B, k->Cout, out_extent(k->X, k), out_extent(k->Y, k),
                         out_extent(k->Z, k));
    p->bias_in = volume_desc(1, k->Cin, 1, 1, 1);
    p->bias_out = volume_desc(1, k->Cout, 1, 1, 1);
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&p->filter));
    const int fdims[5] = {k->Cout, k->Cin, k->k, k->k, k->k};
    CUDNN_CHECK(cudnnSetFilterNdDescriptor(p->filter, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, 5,
                                           fdims));
    const cudnnMathType_t math = k->tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
    p->conv_fwd = conv_desc(k, math);
    p->conv_bwd_data = conv_desc(k, math);
    p->conv_bwd_filter = conv_desc(k, math);
    enum { kMaxAlgos = 16 };
    int n = 0;
    size_t find_ws = 0;  /* conv_autotune's trial workspace */
    cudnnConvolutionFwdAlgoPerf_t fwd[kMaxAlgos];
    CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(dnn, p->in, p->filter, p->conv_fwd,
                                                       p->out, kMaxAlgos, &n, fwd));
    pick_algo(fwd, n, &p->fwd_algo, &p->fwd_ws, "forward");
    find_ws = deterministic_workspace(fwd, n);
    cudnnConvolutionBwdDataAlgoPerf_t bd[kMaxAlgos];
    CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(dnn, p->filter, p->out,
                                                            p->conv_bwd_data, p->in, kMaxAlgos,
                                                            &n, bd));
    pick_algo(bd, n, &p->bwd_data_algo, &p->bwd_data_ws, "backward-data");
    const size_t bd_ws = deterministic_workspace(bd, n);
    if (bd_ws > find_ws) find_ws = bd_ws;
    cudnnConvolutionBwdFilterAlgoPerf_t bf[kMaxAlgos];
    CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(dnn, p->in, p->out,
                                                              p->conv_bwd_filter, p->filter,
                                                              kMaxAlgos, &n, bf));
    pick_algo(bf, n, &p->bwd_filter_algo, &p->bwd_filter_ws, "backward-filter");
    const size_t bf_ws = deterministic_workspace(bf, n);
    if (bf_ws > find_ws) find_ws = bf_ws;
    if (k->autotune) tune_conv_plan(p, find_ws);
    /* The heuristic's memory figure can be an estimate: ask for the exact sizes (of the
     * algorithm and math each direction now runs). */
    CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(dnn, p->in, p->filter, p->conv_fwd,
                                                        p->out, p->fwd_algo, &p->fwd_ws));
    CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(dnn, p->filter, p->out,
                                                             p->conv_bwd_data, p->in,
                                                             p->bwd_data_algo, &p->bwd_data_ws));
    CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(dnn, p->in, p->out,
                                                               p->conv_bwd_filter, p->filter,
                                                               p->bwd_filter_algo,
                                                               &p->bwd_filter_ws));
    p->cl = 0;
    if (k->wgrad_channels_last) build_channels_last(p);
}

static ConvPlan *conv_plan(int B, int Cin, int Cout, int X, int Y, int Z, int k, int s, int pad)
{
    ConvKey key;
    memset(&key, 0, sizeof key);
    key.B = B; key.Cin = Cin; key.Cout = Cout; key.X = X; key.Y = Y; key.Z = Z;
    key.k = k; key.s = s; key.pad = pad; key.tf32 = cuda_context()->allow_tf32;
    key.autotune = cuda_conv_autotune_enabled();
    key.wgrad_channels_last = gpu_conv_wgrad_layout() == CONV_WGRAD_NDHWC;
    for (int i = 0; i < g_conv_plan_count; i++)
        if (memcmp(&g_conv_plans[i].key, &key, sizeof key) == 0) return &g_conv_plans[i];
    ConvPlan *p;
    if (g_conv_plan_count < kConvPlanCacheSize) {
        p = &g_conv_plans[g_conv_plan_count++];
    } else {
        p = &g_conv_plans[g_conv_evict_next];
        g_conv_evict_next = (g_conv_evict_next + 1) % kConvPlanCacheSize;
        destroy_conv_plan(p);
    }
    build_conv_plan(p, &key);
    return p;
}

static void *workspace(size_t bytes)
{
    return bytes ? cuda_scratch(SCRATCH_CONV_WORKSPACE, bytes) : NULL;
}

static const float kOne = 1.0f, kZero = 0.0f;

/* dW += the weight gradient of the plan's forward view from its input `in` and output
 * gradient `dout` (both NCDHW): cuDNN's backward-filter accumulating (beta = 1), or with the
 * channels-last plan, on channels-last copies into a scratch filter added onto dW. */
static void backward_filter(const ConvPlan *p, float *dW, const float *in, const float *dout)
{
    cudnnHandle_t dnn = cuda_context()->dnn;
    if (!p->cl) {
        void *ws = workspace(p->bwd_filter_ws);
        CUDNN_CHECK(cudnnConvolutionBackwardFilter(dnn, &kOne, p->in, in, p->out, dout,
                                                   p->conv_bwd_filter, p->bwd_filter_algo, ws,
                                                   p->bwd_filter_ws, &kOne, p->filter, dW));
        return;
    }
    const ConvKey *k = &p->key;
    const long in_volume = (long)k->X * k->Y * k->Z;
    const long out_volume = (long)out_extent(k->X, k) * out_extent(k->Y, k) * out_extent(k->Z, k);
    const int taps = k->k * k->k * k->k;
    float *in_cl = (float *)cuda_scratch(SCRATCH_CONV_CL_IN,
                                         (size_t)k->B * k->Cin * in_volume * sizeof(float));
    float *dout_cl = (float *)cuda_scratch(SCRATCH_CONV_CL_OUT,
                                           (size_t)k->B * k->Cout * out_volume * sizeof(float));
    float *dW_cl = (float *)cuda_scratch(SCRATCH_CONV_CL_FILTER,
                                         (size_t)k->Cout * k->Cin * taps * sizeof(float));
    cuda_to_channels_last(in_cl, in, k->B, k->Cin, in_volume);
    cuda_to_channels_last(dout_cl, dout, k->B, k->Cout, out_volume);
    void *ws = workspace(p->bwd_filter_ws_cl);
    CUDNN_CHECK(cudnnConvolutionBackwardFilter(dnn, &kOne, p->in_cl, in_cl, p->out_cl, dout_cl,
                                               p->conv_bwd_filter, p->bwd_filter_algo_cl, ws,
                                               p->bwd_filter_ws_cl, &kZero, p->filter_cl, dW_cl));
    cuda_filter_from_channels_last_accumulate(dW, dW_cl, k->Cout, k->Cin, taps);
}

void cuda_conv3d_fwd(float *y, const float *x, const float *W, const float *b, int B, int Cin,
                     int Cout, int X, int Y, int Z, int k, int s, int pad)
{
    if (B <= 0) return;
    if (cuda_pointwise_conv_runs(Cin, Cout, k, s, pad)) {
        cuda_pointwise_conv_fwd(y, x, W, b, B, Cin, Cout, (long)X * Y * Z);
        return;
    }
    ConvPlan *p = conv_plan(B, Cin, Cout, X, Y, Z, k, s, pad);
    cudnnHandle_t dnn = cuda_context()->dnn;
    void *ws = workspace(p->fwd_ws);
    CUDNN_CHECK(cudnnConvolutionForward(dnn, &kOne, p->in, x, p->filter, W, p->conv_fwd,
                                        p->fwd_algo, ws, p->fwd_ws, &kZero, p->out, y));
    if (b) CUDNN_CHECK(cudnnAddTensor(dnn, &kOne, p->bias_out, b, &kOne, p->out, y));
}

void cuda_conv3d_bwd(float *dx, float *dW, float *db, const float *dy, const float *x,
                     const float *W, int B, int Cin, int Cout, int X, int Y, int Z, int k, int s,
                     int pad)
{
    if (B <= 0) return;
    if (cuda_pointwise_conv_runs(Cin, Cout, k, s, pad)) {
        cuda_pointwise_conv_bwd(dx, dW, db, dy, x, W, B, Cin, Cout, (long)X * Y * Z);
        return;
    }
    ConvPlan *p = conv_plan(B, Cin, Cout, X, Y, Z, k, s, pad);
    cudnnHandle_t dnn = cuda_context()->dnn;
    if (dx) {
        void *ws = workspace(p->bwd_data_ws);
        CUDNN_CHECK(cudnnConvolutionBackwardData(dnn, &kOne, p->filter, W, p->out, dy,
                                                 p->conv_bwd_data, p->bwd_data_algo, ws,
                                                 p->bwd_data_ws, &kZero, p->in, dx));
    }
    if (dW && cuda_conv_wgrad3_runs(Cin, Cout, k, s, pad, Z))
        cuda_conv_wgrad3(dW, dy, x, B, Cin, Cout, X, Y, Z);
    else if (dW)
        backward_filter(p, dW, x, dy);
    if (db) {
        const ConvKey *g = &p->key;
        const long out_volume = (long)out_extent(g->X, g) * out_extent(g->Y, g) *
                                out_extent(g->Z, g);
        cuda_channel_sums_accumulate(db, dy, B, Cout, out_volume);
    }
}

/* Forward view of a transposed conv: input y-shaped (Cout channels, k-times larger), output
 * x-shaped (Cin channels), kernel k, stride k, no padding. */
static ConvPlan *transposed_plan(int B, int Cin, int Cout, int X, int Y, int Z, int k)
{
    return conv_plan(B, Cout, Cin, k * X, k * Y, k * Z, k, k, 0);
}

void cuda_conv_transpose3d_fwd(float *y, const float *x, const float *W, const float *b, int B,
                               int Cin, int Cout, int X, int Y, int Z, int k)
{
    if (B <= 0) return;
    ConvPlan *p = transposed_plan(B, Cin, Cout, X, Y, Z, k);
    cudnnHandle_t dnn = cuda_context()->dnn;
    void *ws = workspace(p->bwd_data_ws);
    CUDNN_CHECK(cudnnConvolutionBackwardData(dnn, &kOne, p->filter, W, p->out, x,
                                             p->conv_bwd_data, p->bwd_data_algo, ws,
                                             p->bwd_data_ws, &kZero, p->in, y));
    if (b) CUDNN_CHECK(cudnnAddTensor(dnn, &kOne, p->bias_in, b, &kOne, p->in, y));
}

void cuda_conv_transpose3d_bwd(float *dx, float *dW, float *db, const float *dy, const float *x,
                               const float *W, int B, int Cin, int Cout, int X, int Y, int Z,
                               int k)
{
    if (B <= 0) return;
    ConvPlan *p = transposed_plan(B, Cin, Cout, X, Y, Z, k);
    cudnnHandle_t dnn = cuda_context()->dnn;
    if (dx) {
        void *ws = workspace(p->fwd_ws);
        CUDNN_CHECK(cudnnConvolutionForward(dnn, &kOne, p->in, dy, p->filter, W, p->conv_fwd,
                                            p->fwd_algo, ws, p->fwd_ws, &kZero, p->out, dx));
    }
    if (dW) backward_filter(p, dW, dy, x);
    if (db) {
        /* dy is the forward view's input: its channels (the plan's Cin) are this op's Cout */
        const ConvKey *g = &p->key;
        cuda_channel_sums_accumulate(db, dy, B, g->Cin, (long)g->X * g->Y * g->Z);
    }
}
