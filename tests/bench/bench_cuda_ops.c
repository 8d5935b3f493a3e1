/* CUDA op microbenchmarks at the shapes of the paper configuration (ViT-B/16, crop 192x192x64
 * = 576 tokens, mask ratio 0.75 = 144 visible, batch 8 x 2 crops): the backend's linear layer
 * (cuBLASLt, fused bias) beside plain cuBLAS on the same shapes in the same run (cublasSgemm
 * fp32, cublasSgemm with TF32 math, cublasGemmEx on pre-converted bf16 operands), and the
 * attention forward + backward, GEMM kernel beside the fused (flash) kernel; the linear rows
 * again with the cuBLASLt autotune (gemm_autotune) off and on. Figures are
 * TFLOP/s and ratios to a reference measured in the same run; no assertion on times. Prints
 * "skip: no GPU" and exits 0 where no device is visible.
 *
 * Timing: wall clock around ITERS calls after WARMUP calls, with a device synchronisation on
 * both ends (so launch overheads count, as they do in a training step). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/timer.h"
#include "ops/backend.h"
#include "ops/gpu_device.h"
#include "bench_gpu_data.h"
#include "bench_gpu_timing.h"

#ifdef ALICE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime.h>

enum { WARMUP = 3, ITERS = 20 };

#define BENCH_CUDA(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { \
    fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
    exit(1); } } while (0)
#define BENCH_CUBLAS(call) do { cublasStatus_t s_ = (call); if (s_ != CUBLAS_STATUS_SUCCESS) { \
    fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cublasGetStatusString(s_)); \
    exit(1); } } while (0)

typedef struct {
    const char *name;
    int M, K, N; /* rows, in, out of a linear layer */
} LinearShape;

/* Online encoder on the visible tokens (16 x 144 rows), target encoder and decoder on all
 * tokens (16 x 576 rows). */
static const LinearShape kShapes[] = {
    {"enc qkv (visible)", 2304, 768, 2304},  {"enc fc1 (visible)", 2304, 768, 3072},
    {"enc fc2 (visible)", 2304, 3072, 768},  {"tgt qkv (all)", 9216, 768, 2304},
    {"tgt fc1 (all)", 9216, 768, 3072},      {"dec fc1 (all)", 9216, 384, 1536},
};

static const AliceBackend *gpu;
static cublasHandle_t ref;

static float *device_uniform(size_t n) { return bench_device_uniform(gpu, n, 12345u, -1.0f, 1.0f); }

/* bf16 bits of a float, round to nearest even (operands for the cuBLAS bf16 reference). */
static uint16_t bf16_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static void *device_bf16_copy(const float *d, size_t n)
{
    float *h = malloc(n * sizeof(float));
    uint16_t *hb = malloc(n * sizeof(uint16_t));
    gpu->download(h, d, n * sizeof(float));
    for (size_t i = 0; i < n; i++) hb[i] = bf16_bits(h[i]);
    void *out = NULL;
    BENCH_CUDA(cudaMalloc(&out, n * sizeof(uint16_t)));
    BENCH_CUDA(cudaMemcpy(out, hb, n * sizeof(uint16_t), cudaMemcpyHostToDevice));
    free(h);
    free(hb);
    return out;
}

typedef enum { REF_FP32, REF_TF32, REF_BF16 } RefMode;

/* y = x W^T on the reference handle, row-major trick (C^T = W x^T in column-major). */
static void ref_linear(RefMode mode, float *y, const void *x, const void *W, int M, int K, int N)
{
    const float one = 1.0f, zero = 0.0f;
    if (mode == REF_BF16)
        BENCH_CUBLAS(cublasGemmEx(ref, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, W, CUDA_R_16BF, K,
                                  x, CUDA_R_16BF, K, &zero, y, CUDA_R_32F, N, CUBLAS_COMPUTE_32F,
                                  CUBLAS_GEMM_DEFAULT));
    else
        BENCH_CUBLAS(cublasSgemm(ref, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, (const float *)W, K,
                                 (const float *)x, K, &zero, y, N));
}

static double time_ref(RefMode mode, float *y, const void *x, const void *W, int M, int K, int N)
{
    BENCH_CUBLAS(cublasSetMathMode(ref, mode == REF_TF32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                         : CUBLAS_DEFAULT_MATH));
    for (int i = 0; i < WARMUP; i++) ref_linear(mode, y, x, W, M, K, N);
    BENCH_CUDA(cudaDeviceSynchronize());
    double t0 = wall_seconds();
    for (int i = 0; i < ITERS; i++) ref_linear(mode, y, x, W, M, K, N);
    BENCH_CUDA(cudaDeviceSynchronize());
    return (wall_seconds() - t0) / ITERS;
}

static double time_backend_fwd(float *y, const float *x, const float *W, const float *b, int M,
                               int K, int N)
{
    for (int i = 0; i < WARMUP; i++) gpu->linear_fwd(y, x, W, b, M, K, N);
    gpu->synchronize();
    double t0 = wall_seconds();
    for (int i = 0; i < ITERS; i++) gpu->linear_fwd(y, x, W, b, M, K, N);
    gpu->synchronize();
    return (wall_seconds() - t0) / ITERS;
}

static double time_backend_bwd(float *dx, float *dW, float *db, const float *dy, const float *x,
                               const float *W, int M, int K, int N)
{
    for (int i = 0; i < WARMUP; i++) gpu->linear_bwd(dx, dW, db, dy, x, W, M, K, N);
    gpu->synchronize();
    double t0 = wall_seconds();
    for (int i = 0; i < ITERS; i++) gpu->linear_bwd(dx, dW, db, dy, x, W, M, K, N);
    gpu->synchronize();
    return (wall_seconds() - t0) / ITERS;
}

/* The bf16-activation path of a transformer block (precision = bf16, bf16_activations = 1):
 * bf16 x straight from the previous op, bf16 y, and the weights registered, so the GEMM reads
 * the bf16 copy the optimizer keeps instead of rounding W on each call. */
static double time_backend_fwd_bf16(void *y16, const bf16_t *x16, const float *W, const float *b,
                                    int M, int K, int N)
{
    for (int i = 0; i < WARMUP; i++) gpu->linear_fwd_bf16(y16, DTYPE_BF16, x16, W, b, NULL, M, K, N);
    gpu->synchronize();
    double t0 = wall_seconds();
    for (int i = 0; i < ITERS; i++) gpu->linear_fwd_bf16(y16, DTYPE_BF16, x16, W, b, NULL, M, K, N);
    gpu->synchronize();
    return (wall_seconds() - t0) / ITERS;
}

static double time_backend_bwd_bf16(float *dx, float *dW, float *db, const float *dy,
                                    const bf16_t *x16, const float *W, int M, int K, int N)
{
    for (int i = 0; i < WARMUP; i++) gpu->linear_bwd_bf16(dx, dW, db, dy, x16, W, M, K, N);
    gpu->synchronize();
    double t0 = wall_seconds();
    for (int i = 0; i < ITERS; i++) gpu->linear_bwd_bf16(dx, dW, db, dy, x16, W, M, K, N);
    gpu->synchronize();
    return (wall_seconds() - t0) / ITERS;
}

/* One linear shape's buffers: the fp32 operands and gradients (uniform values), x's bf16 copy
 * and a bf16 y, for the bf16-activation entry points. */
typedef struct {
    float *x, *W, *b, *y, *dy, *dx, *dW, *db;
    void *x16, *y16;
} LinearBuffers;

static LinearBuffers linear_buffers_alloc(int M, int K, int N)
{
    LinearBuffers L;
    L.x = device_uniform((size_t)M * K);
    L.W = device_uniform((size_t)N * K);
    L.b = device_uniform(N);
    L.y = device_uniform((size_t)M * N);
    L.dy = device_uniform((size_t)M * N);
    L.dx = device_uniform((size_t)M * K);
    L.dW = device_uniform((size_t)N * K);
    L.db = device_uniform(N);
    L.x16 = device_bf16_copy(L.x, (size_t)M * K);
    L.y16 = NULL;
    BENCH_CUDA(cudaMalloc(&L.y16, (size_t)M * N * sizeof(uint16_t)));
    return L;
}

static void linear_buffers_free(LinearBuffers *L)
{
    gpu->release(L->x); gpu->release(L->W); gpu->release(L->b); gpu->release(L->y);
    gpu->release(L->dy); gpu->release(L->dx); gpu->release(L->dW); gpu->release(L->db);
    BENCH_CUDA(cudaFree(L->x16));
    BENCH_CUDA(cudaFree(L->y16));
}

static void bench_linear(void)
{
    static const struct { const char *name; int tf32, bf16; RefMode ref; } modes[] = {
        {"fp32", 0, 0, REF_FP32}, {"tf32", 1, 0, REF_TF32}, {"bf16", 0, 1, REF_BF16}};
    printf("%-20s %-5s %10s %12s %12s %8s %12s\n", "linear (M x K -> N)", "mode", "fwd ms",
           "fwd TFLOP/s", "cuBLAS TF/s", "ratio", "bwd TFLOP/s");
    for (size_t s = 0; s < sizeof kShapes / sizeof kShapes[0]; s++) {
        const LinearShape *sh = &kShapes[s];
        const int M = sh->M, K = sh->K, N = sh->N;
        LinearBuffers L = linear_buffers_alloc(M, K, N);
        void *W16 = device_bf16_copy(L.W, (size_t)N * K);
        const double flops = 2.0 * M * N * K;
        for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
            gpu_set_math(modes[m].tf32, modes[m].bf16);
            double t_fwd = time_backend_fwd(L.y, L.x, L.W, L.b, M, K, N);
            double t_bwd = time_backend_bwd(L.dx, L.dW, L.db, L.dy, L.x, L.W, M, K, N);
            const int bf = modes[m].ref == REF_BF16;
            double t_ref = time_ref(modes[m].ref, L.y, bf ? L.x16 : (void *)L.x,
                                    bf ? W16 : (void *)L.W, M, K, N);
            printf("%-20s %-5s %10.3f %12.1f %12.1f %8.2f %12.1f\n", sh->name, modes[m].name,
                   1e3 * t_fwd, flops / t_fwd / 1e12, flops / t_ref / 1e12, t_ref / t_fwd,
                   2.0 * flops / t_bwd / 1e12);
        }
        /* bf16 activations: no operand conversion in the forward, the reference's setting. */
        gpu_set_math(0, 1);
        gpu->weights_hint(L.W, (size_t)N * K);
        double t_fwd = time_backend_fwd_bf16(L.y16, (const bf16_t *)L.x16, L.W, L.b, M, K, N);
        double t_bwd =
            time_backend_bwd_bf16(L.dx, L.dW, L.db, L.dy, (const bf16_t *)L.x16, L.W, M, K, N);
        gpu->weights_forget(L.W);
        double t_ref = time_ref(REF_BF16, L.y, L.x16, W16, M, K, N);
        printf("%-20s %-5s %10.3f %12.1f %12.1f %8.2f %12.1f\n", sh->name, "bf16a", 1e3 * t_fwd,
               flops / t_fwd / 1e12, flops / t_ref / 1e12, t_ref / t_fwd,
               2.0 * flops / t_bwd / 1e12);
        gpu_set_math(0, 0);
        linear_buffers_free(&L);
        BENCH_CUDA(cudaFree(W16));
    }
    printf("(ratio = cuBLAS time / backend time on the same shape and precision; the backend's\n"
           " fwd includes the fused bias, and in bf16 mode the fp32->bf16 operand conversion;\n"
           " bf16a = bf16 activations: bf16 x and y, registered weights (their bf16 copy), as\n"
           " in the transformer blocks with precision = bf16; its cuBLAS writes fp32 y;\n"
           " bwd = dx + dW + db, 4MNK flops)\n");
}

/* Times one attention forward and backward (ms each) with the backend's current modes. */
static void time_attention(double *t_fwd, double *t_bwd, float *out, float *saved, float *qkv,
                           float *dqkv, float *dout, int B, int H, int T, int Dh)
{
    const int C = H * Dh;
    for (int i = 0; i < WARMUP; i++) {
        gpu->attention_fwd(out, saved, qkv, qkv + C, qkv + 2 * C, B, H, T, T, Dh, 3 * C, 3 * C);
        gpu->attention_bwd(dqkv, dqkv + C, dqkv + 2 * C, dout, qkv, qkv + C, qkv + 2 * C, out,
                           saved, B, H, T, T, Dh, 3 * C, 3 * C);
    }
    gpu->synchronize();
    double t0 = wall_seconds();
    for (int i = 0; i < ITERS; i++)
        gpu->attention_fwd(out, saved, qkv, qkv + C, qkv + 2 * C, B, H, T, T, Dh, 3 * C, 3 * C);
    gpu->synchronize();
    *t_fwd = (wall_seconds() - t0) / ITERS;
    t0 = wall_seconds();
    for (int i = 0; i < ITERS; i++)
        gpu->attention_bwd(dqkv, dqkv + C, dqkv + 2 * C, dout, qkv, qkv + C, qkv + 2 * C, out,
                           saved, B, H, T, T, Dh, 3 * C, 3 * C);
    gpu->synchronize();
    *t_bwd = (wall_seconds() - t0) / ITERS;
}

/* Forward only (saved = NULL, as the EMA target's blocks run): ms per call. q16/out16 non-NULL
 * time the bf16-activation entry on those bf16 tensors instead of the fp32 one. */
static double time_attention_fwd_only(float *out, const float *qkv, bf16_t *out16,
                                      const bf16_t *qkv16, int B, int H, int T, int Dh)
{
    const int C = H * Dh;
    double t0 = 0.0;
    for (int i = 0; i < WARMUP + ITERS; i++) {
        if (i == WARMUP) {
            gpu->synchronize();
            t0 = wall_seconds();
        }
        if (qkv16)
            gpu->attention_fwd_bf16(out16, NULL, qkv16, qkv16 + C, qkv16 + 2 * C, B, H, T, T,
                                    Dh, 3 * C, 3 * C);
        else
            gpu->attention_fwd(out, NULL, qkv, qkv + C, qkv + 2 * C, B, H, T, T, Dh, 3 * C,
                               3 * C);
    }
    gpu->synchronize();
    return (wall_seconds() - t0) / ITERS;
}

/* Attention of the paper configuration, GEMM kernel (materialised probabilities) beside the
 * fused kernel (attention_kernel = fused) in each math mode; "x gemm" is the fused kernel's
 * speed-up over the GEMM kernel in the same mode (fwd+bwd time), "saved MiB" what each keeps
 * for backward. TFLOP/s count model FLOPs (4 B H T^2 Dh forward, twice that backward), not
 * the fused backward's recomputation. "fwd-only" rows: saved = NULL (the EMA target's blocks),
 * "bf16a" the bf16-activation entry on bf16 q, k, v; their "x gemm" is against the GEMM
 * kernel's saving forward in the same mode. */
static void bench_attention(void)
{
    static const struct { const char *name; int B, H, T, Dh; } cases[] = {
        {"enc all tokens", 8, 12, 576, 64},  /* target encoder: T = 576, paper batch 8 */
        {"enc visible", 8, 12, 144, 64},     /* online encoder on the masked view */
        {"dec all tokens", 8, 12, 576, 32},  /* decoder: width 384, 12 heads */
    };
    static const struct { const char *name; int tf32, bf16; } modes[] = {
        {"fp32", 0, 0}, {"tf32", 1, 0}, {"bf16", 0, 1}};
    static const struct { const char *name; int kernel; } kernels[] = {
        {"gemm", ATTN_KERNEL_GEMM}, {"fused", ATTN_KERNEL_FUSED}};
    printf("\n%-28s %5s %3s %5s %9s %9s %11s %11s %9s %7s\n", "attention", "T", "Dh", "B*H",
           "fwd ms", "bwd ms", "fwd TFLOP/s", "bwd TFLOP/s", "saved MiB", "x gemm");
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int B = cases[c].B, H = cases[c].H, T = cases[c].T, Dh = cases[c].Dh, C = H * Dh;
        float *qkv = device_uniform((size_t)B * T * 3 * C), *dqkv = device_uniform((size_t)B * T * 3 * C);
        float *out = device_uniform((size_t)B * T * C), *dout = device_uniform((size_t)B * T * C);
        float *saved = device_uniform((size_t)B * H * T * T);  /* room for either kernel */
        const double fwd_flops = 4.0 * B * H * (double)T * T * Dh, bwd_flops = 2.0 * fwd_flops;
        void *qkv16 = device_bf16_copy(qkv, (size_t)B * T * 3 * C), *out16 = NULL;
        BENCH_CUDA(cudaMalloc(&out16, (size_t)B * T * C * sizeof(uint16_t)));
        for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
            gpu_set_math(modes[m].tf32, modes[m].bf16);
            double gemm_total = 0.0, gemm_fwd = 0.0;
            for (size_t k = 0; k < sizeof kernels / sizeof kernels[0]; k++) {
                gpu_set_attention(kernels[k].kernel);
                double t_fwd, t_bwd;
                time_attention(&t_fwd, &t_bwd, out, saved, qkv, dqkv, dout, B, H, T, Dh);
                if (kernels[k].kernel == ATTN_KERNEL_GEMM) gemm_total = t_fwd + t_bwd, gemm_fwd = t_fwd;
                const double saved_mib =
                    gpu->attention_saved_floats(B, H, T, T, Dh) * sizeof(float) / 1048576.0;
                char label[64];
                snprintf(label, sizeof label, "%s %s %s", cases[c].name, modes[m].name,
                         kernels[k].name);
                printf("%-28s %5d %3d %5d %9.3f %9.3f %11.1f %11.1f %9.1f %7.2f\n", label, T, Dh,
                       B * H, 1e3 * t_fwd, 1e3 * t_bwd, fwd_flops / t_fwd / 1e12,
                       bwd_flops / t_bwd / 1e12, saved_mib, gemm_total / (t_fwd + t_bwd));
            }
            /* forward only, GEMM kernel selected: "x gemm" against the saving forward */
            gpu_set_attention(ATTN_KERNEL_GEMM);
            const int act16 = modes[m].bf16;  /* bf16 mode: also the bf16-activation entry */
            for (int a = 0; a <= act16; a++) {
                const double t = time_attention_fwd_only(out, qkv, a ? (bf16_t *)out16 : NULL,
                                                         a ? (const bf16_t *)qkv16 : NULL, B,
                                                         H, T, Dh);
                char label[64];
                snprintf(label, sizeof label, "%s %s%s fwd-only", cases[c].name, modes[m].name,
                         a ? "a" : "");
                printf("%-28s %5d %3d %5d %9.3f %9s %11.1f %11s %9.1f %7.2f\n", label, T, Dh,
                       B * H, 1e3 * t, "-", fwd_flops / t / 1e12, "-", 0.0, gemm_fwd / t);
            }
        }
        BENCH_CUDA(cudaFree(qkv16));
        BENCH_CUDA(cudaFree(out16));
        gpu_set_attention(ATTN_KERNEL_GEMM);
        gpu_set_math(0, 0);
        gpu->release(qkv); gpu->release(dqkv); gpu->release(out); gpu->release(dout);
        gpu->release(saved);
    }
}

/* The bf16-activation attention entries as the transformer calls them (attention_fwd_bf16
 * saving the statistics, attention_bwd_bf16_grad16 into the packed bf16 dqkv), the own flash
 * kernels (attention_kernel = fused) beside cuDNN's fused attention (attention_kernel = cudnn),
 * same process, same buffers; "x fused" is cuDNN's speed-up over the flash kernels (fwd+bwd).
 * Rows "<case> bf16a fused|cudnn"; the cudnn rows are left out (one note line) when this
 * build has no cuDNN frontend headers. Each kernel is warmed up first, so cuDNN's one-off
 * graph building is not timed. */
static void time_attention_bf16a(double *t_fwd, double *t_bwd, bf16_t *out16, float *saved,
                                 const bf16_t *qkv16, bf16_t *dqkv16, const float *dout, int B,
                                 int H, int T, int Dh)
{
    const int C = H * Dh;
    double t0 = 0.0;
    for (int i = 0; i < WARMUP + ITERS; i++) {
        if (i == WARMUP) { gpu->synchronize(); t0 = wall_seconds(); }
        gpu->attention_fwd_bf16(out16, saved, qkv16, qkv16 + C, qkv16 + 2 * C, B, H, T, T, Dh,
                                3 * C, 3 * C);
    }
    gpu->synchronize();
    *t_fwd = (wall_seconds() - t0) / ITERS;
    for (int i = 0; i < WARMUP + ITERS; i++) {
        if (i == WARMUP) { gpu->synchronize(); t0 = wall_seconds(); }
        gpu->attention_bwd_bf16_grad16(dqkv16, dqkv16 + C, dqkv16 + 2 * C, dout, qkv16,
                                       qkv16 + C, qkv16 + 2 * C, out16, saved, B, H, T, T, Dh,
                                       3 * C, 3 * C);
    }
    gpu->synchronize();
    *t_bwd = (wall_seconds() - t0) / ITERS;
}

static void bench_attention_cudnn(void)
{
    static const struct { const char *name; int B, H, T, Dh; } cases[] = {
        {"enc all tokens", 8, 12, 576, 64}, {"enc visible", 8, 12, 144, 64},
        {"dec all tokens", 8, 12, 576, 32}};
    static const struct { const char *name; int kernel; } kernels[] = {
        {"fused", ATTN_KERNEL_FUSED}, {"cudnn", ATTN_KERNEL_CUDNN}};
    const int have_cudnn = gpu_cudnn_attention_available();
    printf("\n%-28s %5s %3s %5s %9s %9s %11s %11s %9s %7s\n", "attention bf16a (model entry)",
           "T", "Dh", "B*H", "fwd ms", "bwd ms", "fwd TFLOP/s", "bwd TFLOP/s", "saved MiB",
           "x fused");
    if (!have_cudnn)
        printf("(no cudnn rows: this build has no cuDNN frontend headers; scripts/deps.sh)\n");
    gpu_set_math(0, 1);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int B = cases[c].B, H = cases[c].H, T = cases[c].T, Dh = cases[c].Dh, C = H * Dh;
        const size_t n_qkv = (size_t)B * T * 3 * C, n_out = (size_t)B * T * C;
        float *qkv = device_uniform(n_qkv), *dout = device_uniform(n_out);
        float *saved = device_uniform((size_t)B * H * T);  /* row statistics: both kernels */
        void *qkv16 = device_bf16_copy(qkv, n_qkv), *dqkv16 = NULL, *out16 = NULL;
        BENCH_CUDA(cudaMalloc(&dqkv16, n_qkv * sizeof(uint16_t)));
        BENCH_CUDA(cudaMalloc(&out16, n_out * sizeof(uint16_t)));
        const double fwd_flops = 4.0 * B * H * (double)T * T * Dh, bwd_flops = 2.0 * fwd_flops;
        double fused_total = 0.0;
        for (size_t k = 0; k < sizeof kernels / sizeof kernels[0]; k++) {
            if (kernels[k].kernel == ATTN_KERNEL_CUDNN && !have_cudnn) continue;
            gpu_set_attention(kernels[k].kernel);
            double t_fwd, t_bwd;
            time_attention_bf16a(&t_fwd, &t_bwd, (bf16_t *)out16, saved, (const bf16_t *)qkv16,
                                 (bf16_t *)dqkv16, dout, B, H, T, Dh);
            if (kernels[k].kernel == ATTN_KERNEL_FUSED) fused_total = t_fwd + t_bwd;
            char label[64];
            snprintf(label, sizeof label, "%s bf16a %s", cases[c].name, kernels[k].name);
            printf("%-28s %5d %3d %5d %9.3f %9.3f %11.1f %11.1f %9.1f %7.2f\n", label, T, Dh,
                   B * H, 1e3 * t_fwd, 1e3 * t_bwd, fwd_flops / t_fwd / 1e12,
                   bwd_flops / t_bwd / 1e12,
                   gpu->attention_saved_floats(B, H, T, T, Dh) * sizeof(float) / 1048576.0,
                   fused_total / (t_fwd + t_bwd));
        }
        gpu_set_attention(ATTN_KERNEL_GEMM);
        BENCH_CUDA(cudaFree(qkv16));
        BENCH_CUDA(cudaFree(dqkv16));
        BENCH_CUDA(cudaFree(out16));
        gpu->release(qkv); gpu->release(dout); gpu->release(saved);
    }
    if (have_cudnn) {
        int built = 0, refused = 0;
        gpu_cudnn_attention_graphs(&built, &refused);
        printf("(cudnn: %d graphs built, %d shapes refused and run on the flash kernels)\n",
               built, refused);
    }
    gpu_set_math(0, 0);
}

/* The linear rows again with the cuBLASLt autotune off (the heuristic's first algorithm, the
 * default) and on (gemm_autotune = 1: each shape's candidates timed at its first call, here a
 * warm-up call, and the fastest kept), in this process: ratio = off time / on time (> 1: the
 * autotune's choice is faster). bf16 = fp32 operands rounded per call; bf16a = the bf16
 * activation path with registered weights, as in the transformer blocks. */
static void bench_linear_autotune(void)
{
    printf("\n%-29s %-5s %9s %9s %7s %9s %9s %7s\n", "linear autotune", "mode", "fwd off",
           "fwd on", "ratio", "bwd off", "bwd on", "ratio");
    GpuGemmAutotuneStats before, after;
    gpu_gemm_autotune_stats(&before);
    for (size_t s = 0; s < sizeof kShapes / sizeof kShapes[0]; s++) {
        const LinearShape *sh = &kShapes[s];
        const int M = sh->M, K = sh->K, N = sh->N;
        LinearBuffers L = linear_buffers_alloc(M, K, N);
        gpu_set_math(0, 1);
        for (int activations = 0; activations < 2; activations++) {
            double fwd[2], bwd[2];
            if (activations) gpu->weights_hint(L.W, (size_t)N * K);
            for (int tune = 0; tune < 2; tune++) {
                gpu_set_gemm_autotune(tune);
                fwd[tune] = activations
                    ? time_backend_fwd_bf16(L.y16, (const bf16_t *)L.x16, L.W, L.b, M, K, N)
                    : time_backend_fwd(L.y, L.x, L.W, L.b, M, K, N);
                bwd[tune] = activations
                    ? time_backend_bwd_bf16(L.dx, L.dW, L.db, L.dy, (const bf16_t *)L.x16, L.W,
                                            M, K, N)
                    : time_backend_bwd(L.dx, L.dW, L.db, L.dy, L.x, L.W, M, K, N);
            }
            gpu_set_gemm_autotune(0);
            if (activations) gpu->weights_forget(L.W);
            /* "autotune <shape>": run.sh's linear rows grep "^<shape> <mode> " */
            printf("autotune %-20s %-5s %9.3f %9.3f %7.3f %9.3f %9.3f %7.3f\n", sh->name,
                   activations ? "bf16a" : "bf16", 1e3 * fwd[0], 1e3 * fwd[1], fwd[0] / fwd[1],
                   1e3 * bwd[0], 1e3 * bwd[1], bwd[0] / bwd[1]);
        }
        gpu_set_math(0, 0);
        linear_buffers_free(&L);
    }
    gpu_gemm_autotune_stats(&after);
    const double chosen = after.chosen_ms - before.chosen_ms, first = after.first_ms - before.first_ms;
    printf("(ms per call, off = the heuristic's first algorithm, on = gemm_autotune = 1; ratio =\n"
           " off / on. Autotune here: %d plans tuned, %d kept the heuristic's first; its own\n"
           " timing runs: one launch of each chosen %.3f ms vs first %.3f ms, %.3fx)\n",
           after.plans_tuned - before.plans_tuned, after.kept_first - before.kept_first, chosen,
           first, chosen > 0.0 ? first / chosen : 1.0);
}

int main(void)
{
    gpu = bench_gpu_or_skip();
    if (!gpu) return 0;
    BENCH_CUBLAS(cublasCreate(&ref));
    bench_linear();
    bench_linear_autotune();
    bench_attention();
    bench_attention_cudnn();
    printf("\npeak backend memory: %.2f GiB\n", (double)gpu_peak_bytes() / (1u << 30));
    BENCH_CUBLAS(cublasDestroy(ref));
    return 0;
}
#else
int main(void) { return bench_skip_without_cuda(); }
#endif
