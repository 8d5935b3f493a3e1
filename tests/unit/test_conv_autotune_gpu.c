/* The cuDNN convolution autotune (conv_autotune, cuda/cuda_conv.cu's tune_conv_plan) on a GPU;
 * skipped elsewhere ("skip: no GPU"). UNETR-shaped convolutions (its channel counts 1, 16, 32,
 * 64; volumes smaller than its 96^3 crop so that the CPU reference stays quick) run forward and
 * backward on the GPU with conv_autotune off and on, in fp32 and in TF32 math:
 *  - conv3d 3x3x3 pad 1: 16 -> 16 and 1 -> 16 channels (the residual blocks, the input layer);
 *  - conv3d 1x1x1: 32 -> 16 (a residual block's projection);
 *  - conv_transpose3d k = s = 2: 64 -> 32 and 32 -> 16 (the decoder's up-sampling).
 * Each run starts dW and db from the same known non-zero values of the gradients' size (the
 * backend contract accumulates parameter gradients with beta = 1), so a Find trial that had
 * written into the caller's dW, an overwrite, or an accumulation done twice shows as a whole
 * dW0 or gradient of difference (checked on the host by running the CPU backend's backward
 * twice in place of the autotuned one: every case's dW then fails, in fp32 and in TF32).
 * Checks: y, dx, dW, db of each GPU run against the CPU backend's (an independent
 * implementation, fp32) within 1e-4 (fp32) or 4e-3 (TF32: 10-bit mantissa operands) of the
 * tensor's largest value; on against off within the same tolerance (the algorithms may differ,
 * so may the summation order); and the statistics: each shape's plan tuned once per math with
 * conv_autotune on (three directions searched each), none with it off. And a shape first met
 * while a CUDA graph records: left untuned (no Find), not tuned by a later eager call either,
 * its results as the CPU's.
 * The channels-last weight gradients (conv_wgrad_layout = ndhwc; cuDNN's backward-filter on
 * channels-last copies, the filter transposed back onto dW) on the same shapes and maths: y, dx,
 * dW, db against the CPU and against NCDHW within the same tolerances, dW accumulated once;
 * the count of plans that ran channels-last and of those that kept NCDHW (no deterministic
 * channels-last algorithm offered) is printed, a finding rather than a failure.
 * The own pointwise kernels (pointwise_conv = own) on UNETR's 1x1x1 shapes (1 -> 16, 32 -> 16,
 * 16 -> 14 with a bias): y, dx, dW, db against the CPU within 1e-4 (they compute in fp32
 * whatever the math) and against cuDNN's within the math's tolerance. The own 3x3x3 weight
 * gradient (conv_wgrad_kernel = own) likewise on UNETR's full-resolution shapes (1 -> 16,
 * 16 -> 16, 32 -> 16, volumes of 32 to 34 voxels a side), its dW bit-identical when run again. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "ops/backend.h"
#include "ops/gpu_device.h"
#include "test.h"

static const AliceBackend *gpu, *cpu;
static const float kGradStart = 100.0f;  /* dW0, db0 in [-100, 100) */

typedef struct ConvCase {
    const char *name;
    int transposed;
    int B, Cin, Cout, X, k, s, pad;  /* cubic volumes X^3; transposed: s = k, pad = 0 */
} ConvCase;

static const ConvCase kCases[] = {
    {"conv3d 3x3x3 16->16 at 32^3", 0, 2, 16, 16, 32, 3, 1, 1},
    {"conv3d 3x3x3 1->16 at 32^3", 0, 2, 1, 16, 32, 3, 1, 1},
    {"conv3d 1x1x1 32->16 at 16^3", 0, 2, 32, 16, 16, 1, 1, 0},
    {"conv_transpose3d k2 64->32 at 8^3", 1, 2, 64, 32, 8, 2, 2, 0},
    {"conv_transpose3d k2 32->16 at 16^3", 1, 2, 32, 16, 16, 2, 2, 0},
};
enum { kCaseCount = (int)(sizeof kCases / sizeof kCases[0]) };

/* Element counts of one case's tensors. */
typedef struct ConvSizes {
    size_t x, y, w, b;
} ConvSizes;

static ConvSizes sizes_of(const ConvCase *c)
{
    const size_t vin = (size_t)c->X * c->X * c->X;
    const int Xo = c->transposed ? c->k * c->X : (c->X + 2 * c->pad - c->k) / c->s + 1;
    const size_t vout = (size_t)Xo * Xo * Xo;
    ConvSizes s;
    s.x = (size_t)c->B * c->Cin * vin;
    s.y = (size_t)c->B * c->Cout * vout;
    s.w = (size_t)c->Cin * c->Cout * c->k * c->k * c->k;
    s.b = (size_t)c->Cout;
    return s;
}

/* Uniform values in [-scale, scale). */
static float *uniform_values(size_t n, uint32_t sample, float scale)
{
    RngStream s;
    rng_init(&s, 2028, 0, sample, RNG_TEST);
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = scale * (2.0f * rng_uniform(&s) - 1.0f);
    return v;
}

/* The inputs a case shares across backends and runs. */
typedef struct ConvInputs {
    float *x, *w, *b, *dy, *dw0, *db0;
} ConvInputs;

/* The outputs of one run. */
typedef struct ConvOutputs {
    float *y, *dx, *dw, *db;
} ConvOutputs;

static void *to_backend(const AliceBackend *be, const float *host, size_t n)
{
    void *d = be->alloc(n * sizeof(float));
    be->upload(d, host, n * sizeof(float));
    return d;
}

static float *to_host(const AliceBackend *be, const float *d, size_t n)
{
    float *h = malloc(n * sizeof(float));
    be->download(h, d, n * sizeof(float));
    return h;
}

/* One case's tensors on a backend; dW and db hold in->dw0, in->db0. */
typedef struct ConvDevice {
    float *x, *w, *b, *dy, *dw, *db, *y, *dx;
} ConvDevice;

static ConvDevice device_inputs(const AliceBackend *be, const ConvCase *c, const ConvInputs *in)
{
    const ConvSizes n = sizes_of(c);
    ConvDevice d = {to_backend(be, in->x, n.x), to_backend(be, in->w, n.w),
                    to_backend(be, in->b, n.b), to_backend(be, in->dy, n.y),
                    to_backend(be, in->dw0, n.w), to_backend(be, in->db0, n.b),
                    be->alloc(n.y * sizeof(float)), be->alloc(n.x * sizeof(float))};
    return d;
}

/* Forward and backward of one case, enqueued (or recorded) on the backend. */
static void enqueue_case(const AliceBackend *be, const ConvCase *c, const ConvDevice *d)
{
    if (c->transposed) {
        be->conv_transpose3d_fwd(d->y, d->x, d->w, d->b, c->B, c->Cin, c->Cout, c->X, c->X, c->X,
                                 c->k);
        be->conv_transpose3d_bwd(d->dx, d->dw, d->db, d->dy, d->x, d->w, c->B, c->Cin, c->Cout,
                                 c->X, c->X, c->X, c->k);
    } else {
        be->conv3d_fwd(d->y, d->x, d->w, d->b, c->B, c->Cin, c->Cout, c->X, c->X, c->X, c->k, c->s,
                       c->pad);
        be->conv3d_bwd(d->dx, d->dw, d->db, d->dy, d->x, d->w, c->B, c->Cin, c->Cout, c->X, c->X,
                       c->X, c->k, c->s, c->pad);
    }
}

/* The outputs, then the tensors released. */
static ConvOutputs device_outputs(const AliceBackend *be, const ConvCase *c, ConvDevice *d)
{
    const ConvSizes n = sizes_of(c);
    be->synchronize();
    ConvOutputs out = {to_host(be, d->y, n.y), to_host(be, d->dx, n.x), to_host(be, d->dw, n.w),
                       to_host(be, d->db, n.b)};
    float *bufs[] = {d->x, d->w, d->b, d->dy, d->dw, d->db, d->y, d->dx};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->release(bufs[i]);
    return out;
}

/* Forward and backward of one case on a backend; dW and db start from in->dw0, in->db0. */
static ConvOutputs run_case(const AliceBackend *be, const ConvCase *c, const ConvInputs *in)
{
    ConvDevice d = device_inputs(be, c, in);
    enqueue_case(be, c, &d);
    return device_outputs(be, c, &d);
}

static void free_outputs(ConvOutputs *o)
{
    free(o->y); free(o->dx); free(o->dw); free(o->db);
}

/* got against want over all n entries within rel of want's largest value. */
static void check_close(const char *what, const char *tensor, const float *got, const float *want,
                        size_t n, double rel)
{
    double largest = 0.0;
    for (size_t i = 0; i < n; i++) largest = fmax(largest, fabs(want[i]));
    const double tol = rel * largest + 1e-6;
    size_t bad = 0, worst = 0;
    double worst_err = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double err = fabs((double)got[i] - want[i]);
        if (!(err <= tol)) bad++;
        if (!(err <= worst_err)) worst_err = err, worst = i;
    }
    TEST_CHECK(bad == 0, "%s, %s: %zu of %zu entries off by more than %.3g; worst %zu: %.9g vs "
               "%.9g", what, tensor, bad, n, tol, worst, got[worst], want[worst]);
}

static void check_outputs(const char *what, const ConvOutputs *got, const ConvOutputs *want,
                          const ConvSizes *n, double rel)
{
    check_close(what, "y", got->y, want->y, n->y, rel);
    check_close(what, "dx", got->dx, want->dx, n->x, rel);
    check_close(what, "dW (dW0 + gradient, accumulated once)", got->dw, want->dw, n->w, rel);
    check_close(what, "db (db0 + gradient)", got->db, want->db, n->b, rel);
}

static ConvInputs make_inputs(const ConvCase *c, uint32_t sample)
{
    const ConvSizes n = sizes_of(c);
    /* dW0, db0 of the gradients' own size (tens to hundreds here): an overwrite (beta = 0)
     * would be off by dW0, a double accumulation by the gradient, both far above tolerance */
    ConvInputs in = {uniform_values(n.x, sample, 1.0f), uniform_values(n.w, sample + 1, 1.0f),
                     uniform_values(n.b, sample + 2, 1.0f), uniform_values(n.y, sample + 3, 1.0f),
                     uniform_values(n.w, sample + 4, kGradStart),
                     uniform_values(n.b, sample + 5, kGradStart)};
    return in;
}

static void free_inputs(ConvInputs *in)
{
    free(in->x); free(in->w); free(in->b); free(in->dy); free(in->dw0); free(in->db0);
}

/* One case in one math: CPU reference, GPU with autotune off, then on. */
static void check_case(const ConvCase *c, int tf32, uint32_t sample)
{
    const ConvSizes n = sizes_of(c);
    ConvInputs in = make_inputs(c, sample);
    ConvOutputs ref = run_case(cpu, c, &in);
    gpu_set_math(tf32, 0);
    GpuConvAutotuneStats s0, s1, s2;
    gpu_conv_autotune_stats(&s0);
    gpu_set_conv_autotune(0);
    ConvOutputs off = run_case(gpu, c, &in);
    gpu_conv_autotune_stats(&s1);
    gpu_set_conv_autotune(1);
    ConvOutputs on = run_case(gpu, c, &in);
    gpu_set_conv_autotune(0);
    gpu_conv_autotune_stats(&s2);
    const double rel = tf32 ? 4e-3 : 1e-4;
    char what[160];
    snprintf(what, sizeof what, "%s, %s, conv_autotune 0 vs CPU", c->name, tf32 ? "tf32" : "fp32");
    check_outputs(what, &off, &ref, &n, rel);
    snprintf(what, sizeof what, "%s, %s, conv_autotune 1 vs CPU", c->name, tf32 ? "tf32" : "fp32");
    check_outputs(what, &on, &ref, &n, rel);
    snprintf(what, sizeof what, "%s, %s, conv_autotune 1 vs 0", c->name, tf32 ? "tf32" : "fp32");
    check_outputs(what, &on, &off, &n, rel);
    TEST_CHECK(s1.plans_tuned == s0.plans_tuned && s1.left_untuned == s0.left_untuned,
               "%s: conv_autotune = 0 tuned %d plans (expected none)", what,
               s1.plans_tuned - s0.plans_tuned);
    TEST_CHECK(s2.plans_tuned - s1.plans_tuned == 1,
               "%s: conv_autotune = 1 tuned %d plans (expected 1: forward and backward share "
               "the shape's plan; left untuned %d)", what, s2.plans_tuned - s1.plans_tuned,
               s2.left_untuned - s1.left_untuned);
    const int searched = (s2.searches_changed + s2.searches_kept) -
                         (s1.searches_changed + s1.searches_kept);
    TEST_CHECK(searched == 3, "%s: %d directions searched (expected 3)", what, searched);
    printf("%s: %s; Find's times chosen %.4f ms vs heuristic %.4f ms (directions changed %d)\n",
           c->name, tf32 ? "tf32" : "fp32",
           s2.chosen_ms - s1.chosen_ms, s2.heuristic_ms - s1.heuristic_ms,
           s2.searches_changed - s1.searches_changed);
    free_outputs(&ref); free_outputs(&off); free_outputs(&on);
    free_inputs(&in);
}

static int test_unetr_shapes(void)
{
    for (int tf32 = 0; tf32 <= 1; tf32++)
        for (int i = 0; i < kCaseCount; i++) check_case(&kCases[i], tf32, (uint32_t)(10 * i));
    return 0;
}

/* A plan first met while a CUDA graph records keeps the heuristic's algorithms for good: Find
 * does not run (nothing would be timed, and its allocations would spoil the recording), the
 * plan counts as left untuned, and a later eager call of the shape does not tune it either.
 * The results (the graph's replay, or the eager run when the recording was dropped, e.g. for a
 * workspace that had to grow) still match the CPU's, dW accumulated once. */
static int test_plan_first_met_while_recording(void)
{
    const ConvCase c = {"conv3d 3x3x3 16->32 at 16^3, first met while recording", 0, 2, 16, 32,
                        16, 3, 1, 1};
    const ConvSizes n = sizes_of(&c);
    ConvInputs in = make_inputs(&c, 100);
    ConvOutputs ref = run_case(cpu, &c, &in);
    gpu_set_math(0, 0);
    gpu_set_conv_autotune(1);
    GpuConvAutotuneStats s0, s1, s2;
    ConvDevice d = device_inputs(gpu, &c, &in);
    gpu->synchronize();
    gpu_conv_autotune_stats(&s0);
    TEST_CHECK(gpu->graph_capture_begin(), "the CUDA backend did not start a recording");
    enqueue_case(gpu, &c, &d);
    BackendGraph *graph = gpu->graph_capture_end();
    gpu_conv_autotune_stats(&s1);
    TEST_CHECK(s1.left_untuned - s0.left_untuned == 1 && s1.plans_tuned == s0.plans_tuned,
               "a plan built while recording: %d left untuned, %d tuned (expected 1, 0)",
               s1.left_untuned - s0.left_untuned, s1.plans_tuned - s0.plans_tuned);
    const int replayed = graph && gpu->graph_launch(graph);
    if (!replayed) enqueue_case(gpu, &c, &d);  /* nothing recorded ran: the same work eagerly */
    ConvOutputs got = device_outputs(gpu, &c, &d);
    gpu->graph_free(graph);
    check_outputs(replayed ? "recorded plan, graph replay vs CPU" : "recorded plan, eager vs CPU",
                  &got, &ref, &n, 1e-4);
    ConvOutputs again = run_case(gpu, &c, &in);  /* an eager call of the same shape */
    gpu_conv_autotune_stats(&s2);
    gpu_set_conv_autotune(0);
    TEST_CHECK(s2.plans_tuned == s1.plans_tuned && s2.left_untuned == s1.left_untuned,
               "the shape first met while recording was tuned by a later eager call (%d tuned)",
               s2.plans_tuned - s1.plans_tuned);
    check_outputs("recorded plan, later eager call vs CPU", &again, &ref, &n, 1e-4);
    printf("%s: %s\n", c.name, replayed ? "replayed from the graph" : "recording dropped, eager");
    free_outputs(&ref); free_outputs(&got); free_outputs(&again);
    free_inputs(&in);
    return 0;
}

/* One case in one math with conv_wgrad_layout = ndhwc: against the CPU and against NCDHW. */
static void check_channels_last_case(const ConvCase *c, int tf32, uint32_t sample)
{
    const ConvSizes n = sizes_of(c);
    ConvInputs in = make_inputs(c, sample);
    ConvOutputs ref = run_case(cpu, c, &in);
    gpu_set_math(tf32, 0);
    gpu_set_conv_autotune(0);
    gpu_set_conv_wgrad_layout(CONV_WGRAD_NCDHW);
    ConvOutputs ncdhw = run_case(gpu, c, &in);
    gpu_set_conv_wgrad_layout(CONV_WGRAD_NDHWC);
    ConvOutputs ndhwc = run_case(gpu, c, &in);
    gpu_set_conv_wgrad_layout(CONV_WGRAD_NCDHW);
    const double rel = tf32 ? 4e-3 : 1e-4;
    char what[160];
    snprintf(what, sizeof what, "%s, %s, conv_wgrad_layout ndhwc vs CPU", c->name,
             tf32 ? "tf32" : "fp32");
    check_outputs(what, &ndhwc, &ref, &n, rel);
    snprintf(what, sizeof what, "%s, %s, conv_wgrad_layout ndhwc vs ncdhw", c->name,
             tf32 ? "tf32" : "fp32");
    check_outputs(what, &ndhwc, &ncdhw, &n, rel);
    free_outputs(&ref); free_outputs(&ncdhw); free_outputs(&ndhwc);
    free_inputs(&in);
}

static int test_wgrad_channels_last(void)
{
    int cl0, kept0, cl1, kept1;
    gpu_conv_wgrad_layout_stats(&cl0, &kept0);
    for (int tf32 = 0; tf32 <= 1; tf32++)
        for (int i = 0; i < kCaseCount; i++)
            check_channels_last_case(&kCases[i], tf32, (uint32_t)(10 * i + 5));
    gpu_conv_wgrad_layout_stats(&cl1, &kept1);
    TEST_CHECK(cl1 - cl0 + kept1 - kept0 == 2 * kCaseCount, "conv_wgrad_layout = ndhwc built %d "
               "plans (expected one per shape and math: %d)", cl1 - cl0 + kept1 - kept0,
               2 * kCaseCount);
    printf("conv_wgrad_layout = ndhwc: %d of %d plans ran the channels-last weight gradient, %d "
           "kept NCDHW (no deterministic channels-last algorithm)\n", cl1 - cl0,
           2 * kCaseCount, kept1 - kept0);
    return 0;
}

static const ConvCase kPointwiseCases[] = {
    {"conv3d 1x1x1 1->16 at 32^3", 0, 2, 1, 16, 32, 1, 1, 0},
    {"conv3d 1x1x1 32->16 at 24^3", 0, 2, 32, 16, 24, 1, 1, 0},
    {"conv3d 1x1x1 16->14 at 32^3 (output layer)", 0, 2, 16, 14, 32, 1, 1, 0},
};

static int test_pointwise_own(void)
{
    const int n_cases = (int)(sizeof kPointwiseCases / sizeof kPointwiseCases[0]);
    for (int tf32 = 0; tf32 <= 1; tf32++)
        for (int i = 0; i < n_cases; i++) {
            const ConvCase *c = &kPointwiseCases[i];
            const ConvSizes n = sizes_of(c);
            ConvInputs in = make_inputs(c, (uint32_t)(200 + 10 * i));
            ConvOutputs ref = run_case(cpu, c, &in);
            gpu_set_math(tf32, 0);
            gpu_set_pointwise_conv(POINTWISE_CONV_CUDNN);
            ConvOutputs dnn = run_case(gpu, c, &in);
            gpu_set_pointwise_conv(POINTWISE_CONV_OWN);
            ConvOutputs own = run_case(gpu, c, &in);
            gpu_set_pointwise_conv(POINTWISE_CONV_CUDNN);
            char what[160];
            snprintf(what, sizeof what, "%s, %s, pointwise_conv own vs CPU", c->name,
                     tf32 ? "tf32" : "fp32");
            check_outputs(what, &own, &ref, &n, 1e-4);
            snprintf(what, sizeof what, "%s, %s, pointwise_conv own vs cudnn", c->name,
                     tf32 ? "tf32" : "fp32");
            check_outputs(what, &own, &dnn, &n, tf32 ? 4e-3 : 1e-4);
            free_outputs(&ref); free_outputs(&dnn); free_outputs(&own);
            free_inputs(&in);
        }
    return 0;
}

/* Z >= 32: the shapes cuda_conv_wgrad3_runs routes to the kernel */
static const ConvCase kWgrad3Cases[] = {
    {"conv3d 3x3x3 1->16 at 33^3 (input block)", 0, 2, 1, 16, 33, 3, 1, 1},
    {"conv3d 3x3x3 16->16 at 34^3 (res block)", 0, 2, 16, 16, 34, 3, 1, 1},
    {"conv3d 3x3x3 32->16 at 32^3 (last decoder block)", 0, 2, 32, 16, 32, 3, 1, 1},
};

static int test_wgrad3_own(void)
{
    const int n_cases = (int)(sizeof kWgrad3Cases / sizeof kWgrad3Cases[0]);
    for (int tf32 = 0; tf32 <= 1; tf32++)
        for (int i = 0; i < n_cases; i++) {
            const ConvCase *c = &kWgrad3Cases[i];
            const ConvSizes n = sizes_of(c);
            ConvInputs in = make_inputs(c, (uint32_t)(300 + 10 * i));
            ConvOutputs ref = run_case(cpu, c, &in);
            gpu_set_math(tf32, 0);
            gpu_set_conv_wgrad_kernel(CONV_WGRAD_KERNEL_CUDNN);
            ConvOutputs dnn = run_case(gpu, c, &in);
            gpu_set_conv_wgrad_kernel(CONV_WGRAD_KERNEL_OWN);
            const long calls = gpu_conv_wgrad3_calls();
            ConvOutputs own = run_case(gpu, c, &in);
            ConvOutputs again = run_case(gpu, c, &in);
            gpu_set_conv_wgrad_kernel(CONV_WGRAD_KERNEL_CUDNN);
            TEST_CHECK(gpu_conv_wgrad3_calls() - calls == 2, "%s: the own kernel ran %ld times "
                       "in two backward calls with conv_wgrad_kernel = own (expected 2)",
                       c->name, gpu_conv_wgrad3_calls() - calls);
            char what[160];
            snprintf(what, sizeof what, "%s, %s, conv_wgrad_kernel own vs CPU", c->name,
                     tf32 ? "tf32" : "fp32");
            /* y and dx are cuDNN's in the math's precision; dW is fp32 whatever the math */
            check_close(what, "dW (dW0 + gradient, accumulated once)", own.dw, ref.dw, n.w, 1e-4);
            check_outputs(what, &own, &ref, &n, tf32 ? 4e-3 : 1e-4);
            snprintf(what, sizeof what, "%s, %s, conv_wgrad_kernel own vs cudnn", c->name,
                     tf32 ? "tf32" : "fp32");
            check_outputs(what, &own, &dnn, &n, tf32 ? 4e-3 : 1e-4);
            TEST_CHECK(memcmp(own.dw, again.dw, n.w * sizeof(float)) == 0,
                       "%s, %s: the own dW differs between two runs", c->name,
                       tf32 ? "tf32" : "fp32");
            free_outputs(&ref); free_outputs(&dnn); free_outputs(&own); free_outputs(&again);
            free_inputs(&in);
        }
    return 0;
}

int main(void)
{
    if (gpu_device_count() == 0) {
        printf("skip: no GPU (built without CUDA, or cudaGetDeviceCount finds no device)\n");
        return 77;
    }
    gpu = backend_cuda();
    cpu = backend_cpu();
    /* the cuDNN weight gradients these tests are about (test_wgrad3_own switches to the own
     * kernel and back) */
    gpu_set_conv_wgrad_kernel(CONV_WGRAD_KERNEL_CUDNN);
    TEST_RUN(test_unetr_shapes);
    TEST_RUN(test_plan_first_met_while_recording);
    TEST_RUN(test_wgrad_channels_last);
    TEST_RUN(test_pointwise_own);
    TEST_RUN(test_wgrad3_own);
    gpu_set_math(0, 0);
    GpuConvAutotuneStats s;
    gpu_conv_autotune_stats(&s);
    printf("conv autotune: %d plans tuned, %d changed an algorithm, %d left untuned; Find's "
           "times: chosen %.4f ms vs heuristic %.4f ms\n", s.plans_tuned, s.plans_changed,
           s.left_untuned, s.chosen_ms, s.heuristic_ms);
    return test_finish();
}
