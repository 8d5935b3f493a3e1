/* 3D convolution and transposed convolution (kernel == stride) of the CUDA backend through
 * cuDNN's convolution API (cudnnConvolutionForward / BackwardData / BackwardFilter /
 * BackwardBias, still shipped in cuDNN 9's libcudnn_cnn).
 *
 * A transposed convolution is the data-gradient of a convolution: with the "forward view"
 * input = y [B, Cout, kX, kY, kZ], filter W [Cin, Cout, k, k, k] (PyTorch's ConvTranspose3d
 * layout is exactly cuDNN's [K = Cin, C = Cout] filter of that view), stride k and output
 * x [B, Cin, X, Y, Z], the transposed forward is BackwardData and its backward is Forward +
 * BackwardFilter. cuDNN's alpha/beta let parameter gradients accumulate (beta = 1) as the
 * backend contract asks.
 *
 * Precision: CUDNN_FMA_MATH (true fp32, no TF32) unless gpu_set_math allowed TF32.
 * Algorithms: the heuristic's first DETERMINISTIC choice (reproducible runs). */
#include <string.h>

#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_ops.h"

struct ConvKey {
    int B, Cin, Cout, X, Y, Z, k, s, pad, tf32;  /* forward-view geometry */
};

struct ConvPlan {
    ConvKey key;
    cudnnTensorDescriptor_t in, out, bias_in, bias_out;  /* bias over in / out channels */
    cudnnFilterDescriptor_t filter;
    cudnnConvolutionDescriptor_t conv;
    cudnnConvolutionFwdAlgo_t fwd_algo;
    cudnnConvolutionBwdDataAlgo_t bwd_data_algo;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter_algo;
    size_t fwd_ws, bwd_data_ws, bwd_filter_ws;
};

enum { kConvPlanCacheSize = 64 };
static ConvPlan g_conv_plans[kConvPlanCacheSize];
static int g_conv_plan_count, g_conv_evict_next;
/* Above this a faster algorithm's workspace is not worth the memory. */
static const size_t kConvWorkspaceLimit = (size_t)1 << 30;

static cudnnTensorDescriptor_t volume_desc(int B, int C, int X, int Y, int Z)
{
    cudnnTensorDescriptor_t d;
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&d));
    const int dims[5] = {B, C, X, Y, Z};
    const int strides[5] = {C * X * Y * Z, X * Y * Z, Y * Z, Z, 1};
    CUDNN_CHECK(cudnnSetTensorNdDescriptor(d, CUDNN_DATA_FLOAT, 5, dims, strides));
    return d;
}

static void destroy_conv_plan(ConvPlan *p)
{
    CUDNN_CHECK(cudnnDestroyTensorDescriptor(p->in));
    CUDNN_CHECK(cudnnDestroyTensorDescriptor(p->out));
    CUDNN_CHECK(cudnnDestroyTensorDescriptor(p->bias_in));
    CUDNN_CHECK(cudnnDestroyTensorDescriptor(p->bias_out));
    CUDNN_CHECK(cudnnDestroyFilterDescriptor(p->filter));
    CUDNN_CHECK(cudnnDestroyConvolutionDescriptor(p->conv));
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

static void build_conv_plan(ConvPlan *p, const ConvKey *k)
{
    cudnnHandle_t dnn = cuda_context()->dnn;
    p->key = *k;
    const int Xo = (k->X + 2 * k->pad - k->k) / k->s + 1;
    const int Yo = (k->Y + 2 * k->pad - k->k) / k->s + 1;
    const int Zo = (k->Z + 2 * k->pad - k->k) / k->s + 1;
    p->in = volume_desc(k->B, k->Cin, k->X, k->Y, k->Z);
    p->out = volume_desc(k->B, k->Cout, Xo, Yo, Zo);
    p->bias_in = volume_desc(1, k->Cin, 1, 1, 1);
    p->bias_out = volume_desc(1, k->Cout, 1, 1, 1);
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&p->filter));
    const int fdims[5] = {k->Cout, k->Cin, k->k, k->k, k->k};
    CUDNN_CHECK(cudnnSetFilterNdDescriptor(p->filter, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, 5,
                                           fdims));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&p->conv));
    const int pads[3] = {k->pad, k->pad, k->pad}, strides[3] = {k->s, k->s, k->s};
    const int dil[3] = {1, 1, 1};
    CUDNN_CHECK(cudnnSetConvolutionNdDescriptor(p->conv, 3, pads, strides, dil,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    const cudnnMathType_t math = k->tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
    CUDNN_CHECK(cudnnSetConvolutionMathType(p->conv, math));
    enum { kMaxAlgos = 16 };
    int n = 0;
    cudnnConvolutionFwdAlgoPerf_t fwd[kMaxAlgos];
    CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(dnn, p->in, p->filter, p->conv, p->out,
                                                       kMaxAlgos, &n, fwd));
    pick_algo(fwd, n, &p->fwd_algo, &p->fwd_ws, "forward");
    cudnnConvolutionBwdDataAlgoPerf_t bd[kMaxAlgos];
    CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(dnn, p->filter, p->out, p->conv, p->in,
                                                            kMaxAlgos, &n, bd));
    pick_algo(bd, n, &p->bwd_data_algo, &p->bwd_data_ws, "backward-data");
    cudnnConvolutionBwdFilterAlgoPerf_t bf[kMaxAlgos];
    CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(dnn, p->in, p->out, p->conv,
                                                              p->filter, kMaxAlgos, &n, bf));
    pick_algo(bf, n, &p->bwd_filter_algo, &p->bwd_filter_ws, "backward-filter");
    /* The heuristic's memory figure can be an estimate: ask for the exact sizes. */
    CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(dnn, p->in, p->filter, p->conv, p->out,
                                                        p->fwd_algo, &p->fwd_ws));
    CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(dnn, p->filter, p->out, p->conv,
                                                             p->in, p->bwd_data_algo,
                                                             &p->bwd_data_ws));
    CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(dnn, p->in, p->out, p->conv,
                                                               p->filter, p->bwd_filter_algo,
                                                               &p->bwd_filter_ws));
}

static ConvPlan *conv_plan(int B, int Cin, int Cout, int X, int Y, int Z, int k, int s, int pad)
{
    ConvKey key;
    memset(&key, 0, sizeof key);
    key.B = B; key.Cin = Cin; key.Cout = Cout; key.X = X; key.Y = Y; key.Z = Z;
    key.k = k; key.s = s; key.pad = pad; key.tf32 = cuda_context()->allow_tf32;
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

void cuda_conv3d_fwd(float *y, const float *x, const float *W, const float *b, int B, int Cin,
                     int Cout, int X, int Y, int Z, int k, int s, int pad)
{
    if (B <= 0) return;
    ConvPlan *p = conv_plan(B, Cin, Cout, X, Y, Z, k, s, pad);
    cudnnHandle_t dnn = cuda_context()->dnn;
    void *ws = workspace(p->fwd_ws);
    CUDNN_CHECK(cudnnConvolutionForward(dnn, &kOne, p->in, x, p->filter, W, p->conv, p->fwd_algo,
                                        ws, p->fwd_ws, &kZero, p->out, y));
    if (b) CUDNN_CHECK(cudnnAddTensor(dnn, &kOne, p->bias_out, b, &kOne, p->out, y));
}

void cuda_conv3d_bwd(float *dx, float *dW, float *db, const float *dy, const float *x,
                     const float *W, int B, int Cin, int Cout, int X, int Y, int Z, int k, int s,
                     int pad)
{
    if (B <= 0) return;
    ConvPlan *p = conv_plan(B, Cin, Cout, X, Y, Z, k, s, pad);
    cudnnHandle_t dnn = cuda_context()->dnn;
    if (dx) {
        void *ws = workspace(p->bwd_data_ws);
        CUDNN_CHECK(cudnnConvolutionBackwardData(dnn, &kOne, p->filter, W, p->out, dy, p->conv,
                                                 p->bwd_data_algo, ws, p->bwd_data_ws, &kZero,
                                                 p->in, dx));
    }
    if (dW) {
        void *ws = workspace(p->bwd_filter_ws);
        CUDNN_CHECK(cudnnConvolutionBackwardFilter(dnn, &kOne, p->in, x, p->out, dy, p->conv,
                                                   p->bwd_filter_algo, ws, p->bwd_filter_ws,
                                                   &kOne, p->filter, dW));
    }
    if (db) CUDNN_CHECK(cudnnConvolutionBackwardBias(dnn, &kOne, p->out, dy, &kOne, p->bias_out, db));
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
    CUDNN_CHECK(cudnnConvolutionBackwardData(dnn, &kOne, p->filter, W, p->out, x, p->conv,
                                             p->bwd_data_algo, ws, p->bwd_data_ws, &kZero, p->in,
                                             y));
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
        CUDNN_CHECK(cudnnConvolutionForward(dnn, &kOne, p->in, dy, p->filter, W, p->conv,
                                            p->fwd_algo, ws, p->fwd_ws, &kZero, p->out, dx));
    }
    if (dW) {
        void *ws = workspace(p->bwd_filter_ws);
        CUDNN_CHECK(cudnnConvolutionBackwardFilter(dnn, &kOne, p->in, dy, p->out, x, p->conv,
                                                   p->bwd_filter_algo, ws, p->bwd_filter_ws,
                                                   &kOne, p->filter, dW));
    }
    if (db) CUDNN_CHECK(cudnnConvolutionBackwardBias(dnn, &kOne, p->in, dy, &kOne, p->bias_in, db));
}
