/* Instance norm of the CUDA backend through cuDNN (gpu_set_instnorm(INSTNORM_KERNEL_CUDNN),
 * config key instnorm_kernel = cudnn) beside the own kernels of cuda/cuda_norm.cu; the backend
 * table's instnorm_fwd / instnorm_bwd are the two dispatchers at the end of this file.
 *
 * Instance norm over each (b, c) plane of V voxels IS cuDNN's spatial batch norm in training
 * mode on the same memory viewed as NCHW [1, B*C, 1, V]: spatial mode normalises each channel
 * over its N*H*W = V values with the biased variance, so each plane is one cuDNN "channel"
 * (NVIDIA's TensorRT InstanceNormalization plugin uses the same view). API facts relied on
 * (cuDNN 9, /usr/local/cuda/include/cudnn_ops.h, and the cuDNN API reference):
 *  - cudnnBatchNormalizationForwardTraining: scale, bias, saved mean and saved inverse
 *    variance share one 1 x C' x 1 x 1 descriptor (cudnnDeriveBNTensorDescriptor makes it);
 *    resultRunningMean / resultRunningVariance may both be NULL (then exponentialAverageFactor
 *    is not used); epsilon must be >= CUDNN_BN_MIN_EPSILON (0.0 in the installed cuDNN 9.19,
 *    larger in older releases; below it the own kernels run); resultSaveMean gets the plane means and
 *    resultSaveInvVariance 1/sqrt(var + eps). The reference calls these two a cache whose
 *    content "may vary" with the mode; for CUDNN_BATCHNORM_SPATIAL it is the inverse standard
 *    deviation (PyTorch's cuDNN batch norm returns it as save_invstd), and test_backend_parity
 *    compares mean and rstd with the CPU's, so a cuDNN that stored anything else fails there.
 *  - cudnnBatchNormalizationBackward: dx = alphaDataDiff * result + betaDataDiff * dx and
 *    dscale, dbias = alphaParamDiff * result + betaParamDiff * prior (beta 0: not read); with
 *    savedMean / savedInvVariance given it reuses them instead of recomputing the statistics,
 *    so the epsilon it takes (the backend's backward has none; kBackwardEpsilon below) does
 *    not enter the result (test_backend_parity's eps = 0.5 case would show it if it did).
 *  - alpha/beta are host floats for float tensors; the handle already runs on the context's
 *    stream (cudnnSetStream in cuda_context.cu), so these calls are ordered with every other op.
 *  - cuDNN 9 marks this legacy API deprecated only under CUDNN_WARN_DEPRECATED, which the build
 *    leaves undefined (nvcc runs with -Werror all-warnings).
 * CUDNN_BATCHNORM_SPATIAL, not SPATIAL_PERSISTENT: the latter may overflow in fp32 (cuDNN's
 * note on it; the TensorRT plugin quotes it).
 *
 * Contract (src/ops/backend.h; reference src/ops/cpu_norm.c): forward writes y, mean, rstd;
 * backward OVERWRITES dx and ACCUMULATES dgamma[c] += sum_b sum_v dy xhat and
 * dbeta[c] += sum_b sum_v dy (either may be NULL, with or without gamma). cuDNN's scale, bias
 * and their gradients are per C' = B*C channel, so gamma/beta are expanded to [B*C] (affine =
 * False, UNETR's case: a persistent ones/zeros buffer, no launch) and dscale/dbias are summed
 * over b by one small kernel (only when dgamma or dbeta is asked for).
 *
 * Launches per call: forward cuDNN's own (+1 expansion with gamma or beta); backward cuDNN's
 * (+1 expansion with gamma, +1 fold with dgamma or dbeta). The own kernels take 3 forward and
 * 3-4 backward. The results agree with the own kernels' to float tolerance, not bit for bit.
 *
 * Descriptors: created once and re-set on every call (cudnnSetTensor4dDescriptor and
 * cudnnDeriveBNTensorDescriptor only store a few ints on the host: no allocation, no device
 * work), rather than cached per shape: the same cost with nothing to key or evict.
 *
 * Falls back to the own kernels where cuDNN cannot run the call: epsilon below
 * CUDNN_BN_MIN_EPSILON; B*C, V or B*C*V beyond INT_MAX (the legacy descriptors take int
 * dimensions; the element count is kept within int too, conservatively); planes of one voxel;
 * a backward without dx (cuDNN always writes dx). */
#include <climits>

#include "cuda/cuda_graph.h"
#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_ops.h"
#include "ops/gpu_device.h"

/* ---- instance norm through cuDNN: small kernels ----
 * (cut out and run on the host by tests/cuda_emu/test_instnorm_cudnn_emulated.sh: keep the
 * markers) */

/* For the planes p = b*C + c: scale[p] = gamma[c] (1 without gamma), bias[p] = beta[c]
 * (0 without beta). */
static __global__ void instnorm_expand_affine_kernel(float *scale, float *bias,
                                                     const float *gamma, const float *beta,
                                                     int C, size_t planes)
{
    GRID_STRIDE(p, planes) {
        const int c = (int)(p % (size_t)C);
        scale[p] = gamma ? gamma[c] : 1.0f;
        bias[p] = beta ? beta[c] : 0.0f;
    }
}

static void instnorm_expand_affine(float *scale, float *bias, const float *gamma,
                                   const float *beta, int B, int C)
{
    const size_t planes = (size_t)B * C;
    instnorm_expand_affine_kernel<<<grid_for(planes), kThreads, 0, cuda_stream()>>>(
        scale, bias, gamma, beta, C, planes);
    CUDA_CHECK_LAUNCH();
}

/* dgamma[c] += sum_b dscale[b*C + c], dbeta[c] += sum_b dbias[b*C + c] (either may be NULL):
 * summed in double in b order and rounded once, as the CPU reference folds its plane sums. */
static __global__ void instnorm_fold_param_grads_kernel(float *dgamma, float *dbeta,
                                                        const float *dscale, const float *dbias,
                                                        int B, int C)
{
    GRID_STRIDE(c, (size_t)C) {
        double g = 0.0, b = 0.0;
        for (int bi = 0; bi < B; bi++) {
            g += dscale[(size_t)bi * C + c];
            b += dbias[(size_t)bi * C + c];
        }
        if (dgamma) dgamma[c] += (float)g;
        if (dbeta) dbeta[c] += (float)b;
    }
}

static void instnorm_fold_param_grads(float *dgamma, float *dbeta, const float *dscale,
                                      const float *dbias, int B, int C)
{
    instnorm_fold_param_grads_kernel<<<grid_for((size_t)C), kThreads, 0, cuda_stream()>>>(
        dgamma, dbeta, dscale, dbias, B, C);
    CUDA_CHECK_LAUNCH();
}
/* ---- end of the small kernels ---- */

static const float kOne = 1.0f, kZero = 0.0f;
static const cudnnBatchNormMode_t kInstnormMode = CUDNN_BATCHNORM_SPATIAL;
/* The backward's epsilon: any valid one, as it does not enter a backward given the saved
 * statistics. 1e-5 (UNETR's and MONAI's) rather than cuDNN 9's minimum of 0, in case a
 * release checks for a positive epsilon. */
static const double kBackwardEpsilon = CUDNN_BN_MIN_EPSILON > 1e-5 ? CUDNN_BN_MIN_EPSILON : 1e-5;

/* The [1, B*C, 1, V] view of x, y, dy, dx and the derived [1, B*C, 1, 1] descriptor of the
 * per-plane vectors, re-set for the call's shape. */
struct InstnormDescs {
    cudnnTensorDescriptor_t volume, planes;
};

static const InstnormDescs *instnorm_descs(int planes, int V)
{
    static InstnormDescs d;
    static bool created;
    if (!created) {
        CUDNN_CHECK(cudnnCreateTensorDescriptor(&d.volume));
        CUDNN_CHECK(cudnnCreateTensorDescriptor(&d.planes));
        created = true;
    }
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(d.volume, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1,
                                           planes, 1, V));
    CUDNN_CHECK(cudnnDeriveBNTensorDescriptor(d.planes, d.volume, kInstnormMode));
    return &d;
}

/* Scale and bias of affine = False: ones [capacity] then zeros [capacity], kept between calls
 * and written once per growth (so an UNETR step launches nothing for them). */
static float *g_unit_affine;
static size_t g_unit_affine_planes;

static void unit_affine(size_t planes, const float **ones, const float **zeros)
{
    size_t capacity = g_unit_affine_planes;
    if (planes > capacity) {
        const bool recording = cuda_graph_capturing() != 0;
        cuda_release(g_unit_affine);  /* waits for the calls that may still read it */
        g_unit_affine = (float *)cuda_alloc(2 * planes * sizeof(float));
        capacity = planes;
        instnorm_expand_affine(g_unit_affine, g_unit_affine + planes, NULL, NULL, 1, (int)planes);
        /* Recording (spoiled by the allocation above): the fill was recorded, not run, so the
         * next eager call makes and fills the buffer again. Eager: graphs recorded before name
         * the freed buffer. */
        g_unit_affine_planes = recording ? 0 : planes;
        if (!recording) cuda_graph_memory_moved();
    }
    *ones = g_unit_affine;
    *zeros = g_unit_affine + capacity;
}

/* Whether the legacy descriptors (int dimensions) hold a call of this shape. An empty call is
 * left to the own kernels (they return at once), and so are planes of one voxel: training-mode
 * batch norm of a single value per channel is a case frameworks refuse before cuDNN sees it,
 * so nothing promises cuDNN takes it, and no UNETR level is that small. */
static bool cudnn_shape_fits(int B, int C, long V)
{
    const long planes = (long)B * C;
    return B > 0 && C > 0 && V > 1 && planes <= INT_MAX && V <= INT_MAX &&
           planes * V <= (long)INT_MAX;
}

static void cudnn_instnorm_fwd(float *y, float *mean, float *rstd, const float *x,
                               const float *gamma, const float *beta, int B, int C, long V,
                               float eps)
{
    const int planes = B * C;
    const InstnormDescs *d = instnorm_descs(planes, (int)V);
    const float *scale, *bias;
    if (gamma || beta) {
        float *s = (float *)cuda_scratch(SCRATCH_STATS, 2 * (size_t)planes * sizeof(float));
        instnorm_expand_affine(s, s + planes, gamma, beta, B, C);
        scale = s;
        bias = s + planes;
    } else {
        unit_affine((size_t)planes, &scale, &bias);
    }
    /* exponentialAverageFactor 1.0: unused, the running statistics are NULL */
    CUDNN_CHECK(cudnnBatchNormalizationForwardTraining(
        cuda_context()->dnn, kInstnormMode, &kOne, &kZero, d->volume, x, d->volume, y, d->planes,
        scale, bias, 1.0, NULL, NULL, (double)eps, mean, rstd));
}

static void cudnn_instnorm_bwd(float *dx, float *dgamma, float *dbeta, const float *dy,
                               const float *x, const float *mean, const float *rstd,
                               const float *gamma, int B, int C, long V)
{
    const int planes = B * C;
    const InstnormDescs *d = instnorm_descs(planes, (int)V);
    /* scratch: expanded gamma (or unused), then cuDNN's per-plane dscale and dbias */
    enum { kScaleAt, kDscaleAt, kDbiasAt, kScratchVectors };
    float *s = (float *)cuda_scratch(SCRATCH_STATS,
                                     kScratchVectors * (size_t)planes * sizeof(float));
    float *dscale = s + (size_t)kDscaleAt * planes, *dbias = s + (size_t)kDbiasAt * planes;
    const float *scale, *unused_bias;
    if (gamma) {
        /* the expansion's bias half lands in dscale, which cuDNN then overwrites (beta 0) */
        instnorm_expand_affine(s + (size_t)kScaleAt * planes, dscale, gamma, NULL, B, C);
        scale = s + (size_t)kScaleAt * planes;
    } else {
        unit_affine((size_t)planes, &scale, &unused_bias);
    }
    CUDNN_CHECK(cudnnBatchNormalizationBackward(
        cuda_context()->dnn, kInstnormMode, &kOne, &kZero, &kOne, &kZero, d->volume, x,
        d->volume, dy, d->volume, dx, d->planes, scale, dscale, dbias, kBackwardEpsilon, mean,
        rstd));
    if (dgamma || dbeta) instnorm_fold_param_grads(dgamma, dbeta, dscale, dbias, B, C);
}

/* ---- the backend table's entries: the kernel gpu_set_instnorm chose ---- */

static bool cudnn_forward_runs(int B, int C, long V, float eps)
{
    return gpu_instnorm_kernel() == INSTNORM_KERNEL_CUDNN &&
           (double)eps >= CUDNN_BN_MIN_EPSILON && cudnn_shape_fits(B, C, V);
}

/* cuDNN's backward always writes dx: a call without dx runs the own kernels. */
static bool cudnn_backward_runs(const float *dx, int B, int C, long V)
{
    return gpu_instnorm_kernel() == INSTNORM_KERNEL_CUDNN && dx && cudnn_shape_fits(B, C, V);
}

void cuda_instnorm_fwd_selected(float *y, float *mean, float *rstd, const float *x,
                                const float *gamma, const float *beta, int B, int C, long V,
                                float eps)
{
    if (cudnn_forward_runs(B, C, V, eps))
        cudnn_instnorm_fwd(y, mean, rstd, x, gamma, beta, B, C, V, eps);
    else
        cuda_instnorm_fwd(y, mean, rstd, x, gamma, beta, B, C, V, eps);
}

void cuda_instnorm_bwd_selected(float *dx, float *dgamma, float *dbeta, const float *dy,
                                const float *x, const float *mean, const float *rstd,
                                const float *gamma, int B, int C, long V)
{
    if (cudnn_backward_runs(dx, B, C, V))
        cudnn_instnorm_bwd(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, B, C, V);
    else
        cuda_instnorm_bwd(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, B, C, V);
}

/* The fused instance norm + LeakyReLU entries (backend.h instnorm_lrelu_fwd / _bwd): the own
 * fused kernels, or where cuDNN runs the instance norm, the unfused sequence around it through
 * a scratch intermediate (the same ops, so the same bits as the caller running them). */
void cuda_instnorm_lrelu_fwd_selected(float *y, float *mean, float *rstd, const float *x,
                                      const float *gamma, const float *beta, const float *addend,
                                      int B, int C, long V, float eps, float slope)
{
    if (!cudnn_forward_runs(B, C, V, eps)) {
        cuda_instnorm_lrelu_fwd(y, mean, rstd, x, gamma, beta, addend, B, C, V, eps, slope);
        return;
    }
    const size_t n = (size_t)B * C * V;
    float *normed = (float *)cuda_scratch(SCRATCH_INSTNORM_STAGE, n * sizeof(float));
    cudnn_instnorm_fwd(normed, mean, rstd, x, gamma, beta, B, C, V, eps);
    if (addend) cuda_add(normed, normed, addend, n);
    cuda_leaky_relu_fwd(y, normed, n, slope);
}

void cuda_instnorm_lrelu_bwd_selected(float *dx, float *dgamma, float *dbeta, const float *dy,
                                      const float *act, float slope, const float *x,
                                      const float *mean, const float *rstd, const float *gamma,
                                      int B, int C, long V)
{
    if (!cudnn_backward_runs(dx, B, C, V)) {
        cuda_instnorm_lrelu_bwd(dx, dgamma, dbeta, dy, act, slope, x, mean, rstd, gamma, B, C,
                                V);
        return;
    }
    const size_t n = (size_t)B * C * V;
    float *gated = (float *)cuda_scratch(SCRATCH_INSTNORM_STAGE, n * sizeof(float));
    cuda_leaky_relu_bwd(gated, dy, act, n, slope);
    cudnn_instnorm_bwd(dx, dgamma, dbeta, gated, x, mean, rstd, gamma, B, C, V);
}
