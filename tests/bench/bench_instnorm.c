/* Instance norm on the GPU: the own kernels (cuda/cuda_norm.cu) beside cuDNN's batch norm over
 * the (b, c) planes (cuda/cuda_instnorm_cudnn.cu), chosen by gpu_set_instnorm (config key
 * instnorm_kernel), at the shapes of UNETR's res blocks on the 96^3 fine-tuning crop: batch 2,
 * feature size 16 doubling per level (C 16/32/64/128 at 96^3/48^3/24^3/12^3), affine = False
 * as UNETR's blocks run it. Forward and backward (dx only, as the blocks ask) are timed
 * separately.
 *
 * Output: a table whose rows are "<name> own_ms cudnn_ms ratio" (ratio = own / cudnn, above 1:
 * cuDNN is faster; tests/gpu/run.sh reads the last three columns), row names "fwd C16 96^3",
 * "bwd C16 96^3", ... "bwd C128 12^3", then the sum over the rows and the faster choice. No
 * assertion on times. Prints "skip: ..." and exits 0 without a GPU.
 *
 * A second table times UNETR's res-block passes fused (instnorm_lrelu_fwd / _bwd, own kernels)
 * beside the unfused ops they replace, at the same shapes: "fused fwd ..." is instnorm, the
 * residual add and LeakyReLU against one instnorm_lrelu_fwd with the residual; "fused bwd ..."
 * LeakyReLU's backward then instnorm_bwd against one instnorm_lrelu_bwd. Rows
 * "<name> unfused_ms fused_ms ratio" (above 1: the fused op is faster), then "fused sum".
 *
 * Timing: bench_gpu_timing.h (wall clock around ITERS calls after WARMUP calls, a device
 * synchronisation on both ends, so launch overheads count as they do in a training step). */
#include <stdio.h>

#include "ops/backend.h"
#include "ops/gpu_device.h"
#include "bench_gpu_data.h"
#include "bench_gpu_timing.h"

#ifdef ALICE_CUDA
enum { WARMUP = 5, ITERS = 50 };
enum { BATCH = 2 };
static const float kEps = 1e-5f; /* UNETR_NORM_EPS (MONAI's InstanceNorm3d default) */

typedef struct {
    const char *fwd_name, *bwd_name;
    int C, edge; /* channels, and the cube edge of the feature volume */
} ResBlockShape;

static const ResBlockShape kShapes[] = {
    {"fwd C16 96^3", "bwd C16 96^3", 16, 96},
    {"fwd C32 48^3", "bwd C32 48^3", 32, 48},
    {"fwd C64 24^3", "bwd C64 24^3", 64, 24},
    {"fwd C128 12^3", "bwd C128 12^3", 128, 12},
};

enum Pass { PASS_FWD, PASS_BWD };

static const AliceBackend *gpu;

typedef struct {
    enum Pass pass;
    int C;
    long V;
    float *x, *y, *dy, *dx, *mean, *rstd, *scratch;
} NormCall;

/* variant: the GpuInstnormKernel to run */
static void norm_call(const void *arg, int variant, int index)
{
    const NormCall *c = arg;
    (void)index;
    gpu_set_instnorm(variant);
    if (c->pass == PASS_FWD)
        gpu->instnorm_fwd(c->y, c->mean, c->rstd, c->x, NULL, NULL, BATCH, c->C, c->V, kEps);
    else
        gpu->instnorm_bwd(c->dx, NULL, NULL, c->dy, c->x, c->mean, c->rstd, NULL, BATCH, c->C,
                          c->V);
}

/* The res-block passes, unfused (BENCH_UNFUSED) or fused (BENCH_FUSED); scratch holds the
 * unfused sequence's intermediate. */
static void res_pass_call(const void *arg, int variant, int index)
{
    const NormCall *c = arg;
    (void)index;
    const size_t n = (size_t)BATCH * c->C * c->V;
    const float slope = 0.01f; /* UNETR_LEAKY_SLOPE */
    if (c->pass == PASS_FWD && variant == BENCH_FUSED) {
        gpu->instnorm_lrelu_fwd(c->y, c->mean, c->rstd, c->x, NULL, NULL, c->dy, BATCH, c->C,
                                c->V, kEps, slope);
    } else if (c->pass == PASS_FWD) {
        gpu->instnorm_fwd(c->dx, c->mean, c->rstd, c->x, NULL, NULL, BATCH, c->C, c->V, kEps);
        gpu->add(c->dx, c->dx, c->dy, n);
        gpu->leaky_relu_fwd(c->y, c->dx, n, slope);
    } else if (variant == BENCH_FUSED) {
        gpu->instnorm_lrelu_bwd(c->dx, NULL, NULL, c->dy, c->y, slope, c->x, c->mean, c->rstd,
                                NULL, BATCH, c->C, c->V);
    } else {
        gpu->leaky_relu_bwd(c->scratch, c->dy, c->y, n, slope);
        gpu->instnorm_bwd(c->dx, NULL, NULL, c->scratch, c->x, c->mean, c->rstd, NULL, BATCH,
                          c->C, c->V);
    }
}

/* One row; returns its own and cudnn seconds through *own, *cudnn. */
static void bench_row(const char *name, const NormCall *c, double *own, double *cudnn)
{
    bench_pair_row(gpu, name, norm_call, c, INSTNORM_KERNEL_OWN, INSTNORM_KERNEL_CUDNN, WARMUP,
                   ITERS, own, cudnn);
}

/* One shape's buffers: x uniform in [-1, 2), dy in [-1, 1) (seeds seed and seed + 20), y, dx,
 * the statistics, and with_scratch a volume for the unfused sequence's intermediate. */
static NormCall shape_buffers(const ResBlockShape *s, uint32_t seed, int with_scratch)
{
    const long V = (long)s->edge * s->edge * s->edge;
    const size_t n = (size_t)BATCH * s->C * V, planes = (size_t)BATCH * s->C;
    NormCall c = {PASS_FWD, s->C, V, bench_device_uniform(gpu, n, seed, -1.0f, 2.0f),
                  gpu->alloc(n * sizeof(float)),
                  bench_device_uniform(gpu, n, seed + 20u, -1.0f, 1.0f),
                  gpu->alloc(n * sizeof(float)), gpu->alloc(planes * sizeof(float)),
                  gpu->alloc(planes * sizeof(float)),
                  with_scratch ? gpu->alloc(n * sizeof(float)) : NULL};
    return c;
}

static void release_buffers(NormCall *c)
{
    float *bufs[] = {c->x, c->y, c->dy, c->dx, c->mean, c->rstd, c->scratch};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) gpu->release(bufs[i]);
}

/* The second table: the res-block passes fused beside unfused, own kernels. */
static void bench_res_passes(void)
{
    bench_fusion_header("res-block passes (B 2)", "unfused_ms", "fused_ms");
    double total_unfused = 0.0, total_fused = 0.0;
    for (size_t k = 0; k < sizeof kShapes / sizeof kShapes[0]; k++) {
        const ResBlockShape *s = &kShapes[k];
        NormCall c = shape_buffers(s, 61u + (uint32_t)k, 1);
        char name[40];
        for (int pass = PASS_FWD; pass <= PASS_BWD; pass++) {
            double unfused, fused;
            c.pass = (enum Pass)pass;
            snprintf(name, sizeof name, "fused %s", pass == PASS_FWD ? s->fwd_name : s->bwd_name);
            bench_pair_row(gpu, name, res_pass_call, &c, BENCH_UNFUSED, BENCH_FUSED, WARMUP,
                           ITERS, &unfused, &fused);
            total_unfused += unfused;
            total_fused += fused;
        }
        release_buffers(&c);
    }
    bench_pair_print("fused sum", total_unfused, total_fused);
    printf("(ratio = unfused time / fused time in the same run; forward: instnorm, residual add "
           "and LeakyReLU; backward: LeakyReLU's backward and instnorm_bwd)\n");
}

int main(void)
{
    gpu = bench_gpu_or_skip();
    if (!gpu) return 0;
    const int before = gpu_instnorm_kernel();
    bench_fusion_header("instance norm (B 2)", "own_ms", "cudnn_ms");
    double total_own = 0.0, total_cudnn = 0.0;
    for (size_t k = 0; k < sizeof kShapes / sizeof kShapes[0]; k++) {
        const ResBlockShape *s = &kShapes[k];
        NormCall c = shape_buffers(s, 21u + (uint32_t)k, 0);
        double own, cudnn;
        bench_row(s->fwd_name, &c, &own, &cudnn);
        total_own += own;
        total_cudnn += cudnn;
        /* the backward reads the statistics of the last forward (cuDNN's; both kernels save
         * the same mean and 1/sqrt(var + eps)) */
        c.pass = PASS_BWD;
        bench_row(s->bwd_name, &c, &own, &cudnn);
        total_own += own;
        total_cudnn += cudnn;
        release_buffers(&c);
    }
    bench_pair_print("sum of the rows", total_own, total_cudnn);
    printf("faster over the res-block shapes: %s (instnorm_kernel = %s)\n",
           total_cudnn < total_own ? "cudnn" : "own", total_cudnn < total_own ? "cudnn" : "own");
    printf("(ratio = own time / cudnn time in the same run; each UNETR res block runs 2-3 instance "
           "norms forward and backward per step)\n\n");
    gpu_set_instnorm(INSTNORM_KERNEL_OWN);
    bench_res_passes();
    gpu_set_instnorm(before);
    return 0;
}
#else
int main(void) { return bench_skip_without_cuda(); }
#endif
