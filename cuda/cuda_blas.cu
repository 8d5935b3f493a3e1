/* GEMM and linear layers of the CUDA backend through cuBLASLt.
 *
 * Row-major trick: a row-major M x N matrix C is the column-major N x M matrix C^T, so
 * C = op(A) op(B) is computed as the column-major product C^T = op(B)^T op(A)^T: cuBLASLt's
 * first operand is our B, its second our A, with the same transpose flags and leading
 * dimensions. Plans (descriptors, layouts and the heuristic's algorithm) are cached by shape,
 * since the heuristic query costs far more host time than a small GEMM takes on the GPU. With
 * gemm_autotune = 1 a plan's algorithm is instead the fastest of up to 8 heuristic candidates,
 * timed at the plan's first eager call into scratch memory (tune_plan, cuda/cuda_gemm_autotune.h).
 *
 * Precision: fp32 inputs with fp32 compute by default (parity with the CPU backend); TF32
 * tensor cores only when gpu_set_math(allow_tf32 = 1); bf16 operands with fp32 accumulate
 * and fp32 output when gpu_set_math(bf16_gemm = 1) (mixed precision: the fp32 operands are
 * rounded to bf16 copies in scratch memory first; weights come from their bf16 copy, made once
 * per change, see cuda/cuda_weight_copy.h).
 *
 * bf16 activations (backend.h, "bf16 activations"): bf16 inputs go to cuBLASLt as they are (no
 * rounding pass) and the output D may be bf16 too (the plan key carries the output type): the
 * fp32 accumulator, plus the bias, is rounded once by the epilogue. A bf16 D takes its bias in
 * bf16 (cuBLASLt's bias type is the output type), i.e. the bias's bf16 weight copy.
 *
 * Epilogues: the bias is fused; GELU is not. cuBLASLt's GELU epilogues compute the tanh
 * approximation of GELU (PyTorch routes only approximate='tanh' to them), while MONAI's
 * blocks, and so this model, use the exact erf form; GELU stays its own kernel. */
#include <cuda_bf16.h>
#include <stdint.h>
#include <string.h>

#include "cuda/cuda_gelu_bf16.h" /* the GELU slope table of the fused fc1 backward */
#include "cuda/cuda_gemm_autotune.h"
#include "cuda/cuda_graph.h"
#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_ops.h"
#include "cuda/cuda_weight_copy.h"
#include "ops/cpu_math.h" /* gelu_erf_slope, MATH_MUL: the GELU-fused fc1 backward */

enum GemmEpilogue { GEMM_EPILOGUE_NONE = 0, GEMM_EPILOGUE_BIAS = 1 };
enum GemmOperandType { GEMM_OPERANDS_FP32 = 0, GEMM_OPERANDS_BF16 = 1 };
/* Element type of C/D (and of a fused bias); a bf16 C is written, never read (beta = 0). */
enum GemmOutputType { GEMM_OUTPUT_FP32 = 0, GEMM_OUTPUT_BF16 = 1 };

static size_t output_elem_bytes(int output) { return output == GEMM_OUTPUT_BF16 ? 2 : 4; }

struct GemmKey {
    int transA, transB, M, N, K, lda, ldb, ldc, batch;
    int epilogue, operands, output, tf32, align;
    int autotune;  /* gemm_autotune when built: on and off keep their own plans */
    long strideA, strideB, strideC;
};

/* Where a plan stands with the autotune (cuda/cuda_gemm_autotune.h). */
enum GemmTuneState {
    GEMM_TUNE_OFF,      /* built with autotune off: the heuristic's first, as always */
    GEMM_TUNE_PENDING,  /* candidates kept; timed at the plan's first eager call */
    GEMM_TUNE_DONE,     /* timed; algo is the fastest */
    GEMM_TUNE_UNTUNED   /* first called while a graph recorded: the first, never retuned */
};

struct GemmPlan {
    GemmKey key;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t layout_a, layout_b, layout_c;  /* cuBLASLt's A (our B), B (our A), C */
    cublasLtMatmulAlgo_t algo;
    int has_algo;  /* 0: no cuBLASLt algorithm fits; fall back to cublasGemmStridedBatchedEx */
    int out_of_place;  /* algo may write D != C (CUBLASLT_ALGO_CAP_OUT_OF_PLACE_RESULT_SUPPORT) */
    int tune;          /* GemmTuneState */
    int candidate_count;  /* the heuristic's results, best first (autotune plans) */
    long calls;           /* host calls (eager, or while a graph records): the shape table */
    cublasLtMatmulHeuristicResult_t candidates[kGemmAutotuneMaxCandidates];
};

enum { kPlanCacheSize = 256 };
static GemmPlan g_plans[kPlanCacheSize];
static int g_plan_count, g_plan_evict_next;

/* Largest power of two (at most 16) dividing the address and, for batches, the stride. The cap:
 * 16 bytes is the widest access cuBLASLt's kernels need (a 128-bit load, the TMA minimum), and
 * capping makes an operand read from a bf16 weight copy (32-byte aligned at a tensor's offset)
 * and one rounded into scratch (256-byte aligned) share a plan, hence the kernel and bits. */
enum { kMaxOperandAlignBytes = 16 };
static int alignment_bytes(const void *p, long stride_elems, int batch, size_t elem_bytes)
{
    uintptr_t bits = (uintptr_t)p | (uintptr_t)kMaxOperandAlignBytes;
    if (batch > 1) bits |= (uintptr_t)((size_t)stride_elems * elem_bytes);
    return (int)(bits & (~bits + 1));
}

static void destroy_plan(GemmPlan *p)
{
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->layout_a));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->layout_b));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->layout_c));
    CUBLAS_CHECK(cublasLtMatmulDescDestroy(p->op));
}

static cublasLtMatrixLayout_t make_layout(cudaDataType_t type, int rows, int cols, int ld,
                                          int batch, long stride)
{
    cublasLtMatrixLayout_t l;
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, type, (uint64_t)rows, (uint64_t)cols, ld));
    if (batch > 1) {
        int32_t count = batch;
        int64_t offset = stride;
        CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                      &count, sizeof count));
        CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
            l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &offset, sizeof offset));
    }
    return l;
}

/* cuBLASLt's alignment preferences cover A, B, C and D but not the epilogue's bias vector, so
 * the heuristic may pick a kernel that loads the bias 16 bytes at a time; a bias that is a
 * slice of a larger buffer at a 4-byte offset would then fault ("misaligned address"). Such a
 * bias is added by its own kernel instead (parameter tensors are 64-byte aligned, so the
 * model's linear layers always fuse). */
enum { kFusedBiasAlignBytes = 16 };

/* Whether algo may write D != C. A status other than success reads as "no": the residual is
 * then copied into D and the GEMM runs in place, correct either way (only a copy slower). */
static int algo_out_of_place(const cublasLtMatmulAlgo_t *algo)
{
    int32_t out_of_place = 0;
    size_t written = 0;
    const cublasStatus_t cap = cublasLtMatmulAlgoCapGetAttribute(
        algo, CUBLASLT_ALGO_CAP_OUT_OF_PLACE_RESULT_SUPPORT, &out_of_place, sizeof out_of_place,
        &written);
    return cap == CUBLAS_STATUS_SUCCESS && written == sizeof out_of_place && out_of_place != 0;
}

static void build_plan(GemmPlan *p, const GemmKey *k)
{
    CudaContext *ctx = cuda_context();
    p->key = *k;
    const cudaDataType_t in_type = k->operands == GEMM_OPERANDS_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    const cudaDataType_t out_type = k->output == GEMM_OUTPUT_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    const cublasComputeType_t compute =
        (k->tf32 && k->operands == GEMM_OPERANDS_FP32) ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                        : CUBLAS_COMPUTE_32F;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->op, compute, CUDA_R_32F));
    const cublasOperation_t op_a = k->transB ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_b = k->transA ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a,
                                                sizeof op_a));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b,
                                                sizeof op_b));
    if (k->epilogue == GEMM_EPILOGUE_BIAS) {
        const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        const cudaDataType_t bias_type = out_type;
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi,
                                                    sizeof epi));
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
            p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type));
        /* The heuristic reads the bias pointer's VALUE for its alignment (cublasLt.h); unset
         * (NULL) it counts as aligned to anything and may pick a kernel that faults on a bias
         * aligned to only 16 bytes (e.g. a bf16 weight copy at a tensor's offset). A stand-in
         * of exactly the guaranteed alignment (never dereferenced; the real one is set before
         * every cublasLtMatmul) keeps the choice valid for every bias this plan is used with. */
        const void *bias_hint = (const void *)(uintptr_t)kFusedBiasAlignBytes;
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                    &bias_hint, sizeof bias_hint));
    }
    /* Stored shapes in column-major terms (see the file comment). */
    p->layout_a = make_layout(in_type, k->transB ? k->K : k->N, k->transB ? k->N : k->K, k->ldb,
                              k->batch, k->strideB);
    p->layout_b = make_layout(in_type, k->transA ? k->M : k->K, k->transA ? k->K : k->M, k->lda,
                              k->batch, k->strideA);
    p->layout_c = make_layout(out_type, k->N, k->M, k->ldc, k->batch, k->strideC);

    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = ctx->lt_workspace_bytes;
    const uint32_t align = (uint32_t)k->align;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    const cublasLtMatmulPreferenceAttributes_t align_attrs[] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (size_t i = 0; i < sizeof align_attrs / sizeof align_attrs[0]; i++)
        CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, align_attrs[i], &align,
                                                          sizeof align));
    /* Autotune off: one result, today's choice. On: up to kGemmAutotuneMaxCandidates, whose
     * first is that same choice (the fallback), timed at the plan's first eager call. */
    const int requested = k->autotune ? kGemmAutotuneMaxCandidates : 1;
    int returned = 0;
    cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(ctx->lt, p->op, p->layout_a, p->layout_b,
                                                      p->layout_c, p->layout_c, pref, requested,
                                                      p->candidates, &returned);
    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    p->has_algo = (s == CUBLAS_STATUS_SUCCESS && returned > 0);
    p->candidate_count = p->has_algo ? returned : 0;
    p->tune = k->autotune && p->has_algo ? GEMM_TUNE_PENDING : GEMM_TUNE_OFF;
    p->out_of_place = 0;
    if (p->has_algo) {
        p->algo = p->candidates[0].algo;
        p->out_of_place = algo_out_of_place(&p->algo);
    }
}

static GemmPlan *find_plan(const GemmKey *k)
{
    for (int i = 0; i < g_plan_count; i++)
        if (memcmp(&g_plans[i].key, k, sizeof *k) == 0) return &g_plans[i];
    GemmPlan *p;
    if (g_plan_count < kPlanCacheSize) {
        p = &g_plans[g_plan_count++];
    } else {  /* round-robin eviction: shapes of one model fit easily, this is a safety net */
        p = &g_plans[g_plan_evict_next];
        g_plan_evict_next = (g_plan_evict_next + 1) % kPlanCacheSize;
        destroy_plan(p);
    }
    build_plan(p, k);
    p->calls = 0;
    return p;
}

/* y[r, c] += bias[c] over an M x N row-major block (only for the fallback path; with bf16 C
 * only after K = 0, where C holds exact zeros, so the sum is rounded once). */
template <typename T>
static __global__ void add_bias_kernel(T *C, int ldc, const T *bias, int M, int N)
{
    GRID_STRIDE(i, (size_t)M * N) {
        const size_t r = i / (size_t)N, c = i % (size_t)N;
        C[r * ldc + c] = narrow_to<T>(widen(C[r * ldc + c]) + widen(bias[c]));
    }
}

/* C_i = beta C_i when K = 0 (an empty sum). */
template <typename T>
static __global__ void scale_blocks_kernel(T *C, int ldc, long strideC, int M, int N, int batch,
                                           float beta)
{
    GRID_STRIDE(i, (size_t)batch * M * N) {
        const size_t b = i / ((size_t)M * N), rc = i % ((size_t)M * N);
        T *c = C + b * strideC + (rc / N) * ldc + rc % N;
        *c = narrow_to<T>(beta == 0.0f ? 0.0f : beta * widen(*c));
    }
}

/* C_i += bias broadcast over the rows of every M x N block (the unfused bias). */
template <typename T>
static void add_bias_blocks(T *C, int ldc, long strideC, const T *bias, int M, int N, int batch)
{
    for (int b = 0; b < batch; b++)
        add_bias_kernel<T><<<grid_for((size_t)M * N), kThreads, 0, cuda_stream()>>>(
            C + (size_t)b * strideC, ldc, bias, M, N);
    CUDA_CHECK_LAUNCH();
}

/* A bf16 C whose bias cannot ride the epilogue: C = round(C32 + bias), C32 the fp32 GEMM
 * result (contiguous M x N blocks), so the output is rounded once, as the fused path does. */
static __global__ void bias_round_kernel(__nv_bfloat16 *C, int ldc, long strideC,
                                         const float *C32, const __nv_bfloat16 *bias, int M,
                                         int N, int batch)
{
    GRID_STRIDE(i, (size_t)batch * M * N) {
        const size_t b = i / ((size_t)M * N), rc = i % ((size_t)M * N);
        const size_t r = rc / N, c = rc % N;
        C[b * strideC + r * ldc + c] = narrow_to<__nv_bfloat16>(C32[i] + widen(bias[c]));
    }
}

/* K = 0 (an empty sum): C_i = beta C_i, plus the bias. */
template <typename T>
static void empty_sum(T *C, int ldc, long strideC, int M, int N, int batch, float beta,
                      const T *bias)
{
    scale_blocks_kernel<T><<<grid_for((size_t)batch * M * N), kThreads, 0, cuda_stream()>>>(
        C, ldc, strideC, M, N, batch, beta);
    CUDA_CHECK_LAUNCH();
    if (bias) add_bias_blocks(C, ldc, strideC, bias, M, N, batch);
}

/* D_i = C_i over the M x N blocks of a strided batch (fp32, leading dimension ldc), for the
 * routes that compute only in place. */
static void copy_blocks(float *D, const float *C, int ldc, long strideC, int M, int N, int batch)
{
    for (int b = 0; b < batch; b++)
        CUDA_CHECK(cudaMemcpy2DAsync(D + (size_t)b * strideC, (size_t)ldc * sizeof(float),
                                     C + (size_t)b * strideC, (size_t)ldc * sizeof(float),
                                     (size_t)N * sizeof(float), (size_t)M,
                                     cudaMemcpyDeviceToDevice, cuda_stream()));
}

/* The plan's cuBLASLt call with algorithm algo, C = alpha op(A) op(B) + beta C_in (our operands
 * swapped into cuBLASLt's column-major view); its status, for the caller to check. */
static cublasStatus_t lt_matmul_algo(const GemmPlan *plan, const cublasLtMatmulAlgo_t *algo,
                                     const float *alpha, const void *A, const void *B,
                                     const float *beta, const void *C_in, void *C)
{
    CudaContext *ctx = cuda_context();
    return cublasLtMatmul(ctx->lt, plan->op, alpha, B, plan->layout_a, A, plan->layout_b, beta,
                          C_in, plan->layout_c, C, plan->layout_c, algo, ctx->lt_workspace,
                          ctx->lt_workspace_bytes, ctx->stream);
}

/* The same with the plan's algorithm. */
static cublasStatus_t lt_matmul(const GemmPlan *plan, const float *alpha, const void *A,
                                const void *B, const float *beta, const void *C_in, void *C)
{
    return lt_matmul_algo(plan, &plan->algo, alpha, A, B, beta, C_in, C);
}

/* ---- autotune: timing a plan's candidates on the call's own operands ----
 * The trials must not change any result, so they write only `scratch`, a buffer shaped like
 * the call's D: with beta = 0 it is C and D at once (C unread); with beta != 0 it starts as a
 * copy of the call's C input and the in-place candidates accumulate into it (C = D = scratch)
 * while the real output is untouched. A call of the residual form (C_in != C, beta != 0)
 * times the out-of-place form it will run: C = the real C_in (read only), D = scratch; a
 * candidate without CUBLASLT_ALGO_CAP_OUT_OF_PLACE_RESULT_SUPPORT is skipped there, except the
 * heuristic's first (the fallback; it runs in place on the scratch copy). */
struct GemmTrial {
    const GemmPlan *plan;
    const float *alpha, *beta;
    const void *A, *B;
    const void *C_read;  /* the call's C input, read by out-of-place trials */
    void *scratch;
    int residual_form;
};

static cublasStatus_t gemm_trial_launch(int candidate, void *arg)
{
    const GemmTrial *t = (const GemmTrial *)arg;
    const cublasLtMatmulAlgo_t *algo = &t->plan->candidates[candidate].algo;
    const void *c_in = t->residual_form && algo_out_of_place(algo) ? t->C_read : t->scratch;
    return lt_matmul_algo(t->plan, algo, t->alpha, t->A, t->B, t->beta, c_in, t->scratch);
}

static size_t operand_span(int rows, int cols, int ld, long stride, int batch);

/* Times the plan's candidates on this call's operands (the bias pointer already set) and
 * makes the fastest its algorithm; while a graph records, keeps the first for good. */
static void tune_plan(GemmPlan *plan, const float *alpha, const void *A, const void *B,
                      const float *beta, const void *C_in, const void *C, int M, int N, int ldc,
                      long strideC, int batch, size_t out_elem)
{
    if (cuda_graph_capturing()) {
        /* A timing run would be recorded (and replayed) instead of timed: this plan keeps the
         * heuristic's first, also in later eager calls, so no recorded graph's choice moves.
         * The eager warm-up step before every recording builds the step's plans anyway. */
        plan->tune = GEMM_TUNE_UNTUNED;
        cuda_gemm_autotune_note_untuned();
        return;
    }
    CudaContext *ctx = cuda_context();
    const int residual_form = *beta != 0.0f && C_in != C;
    int eligible[kGemmAutotuneMaxCandidates];
    for (int c = 0; c < plan->candidate_count; c++) {
        const cublasLtMatmulHeuristicResult_t *r = &plan->candidates[c];
        eligible[c] = c == 0 || (r->state == CUBLAS_STATUS_SUCCESS &&
                                 r->workspaceSize <= ctx->lt_workspace_bytes &&
                                 (!residual_form || algo_out_of_place(&r->algo)));
    }
    const size_t bytes = operand_span(M, N, ldc, strideC, batch) * out_elem;
    void *scratch = cuda_alloc(bytes);
    if (*beta != 0.0f)  /* the accumulating trials start from the call's own C */
        CUDA_CHECK(cudaMemcpyAsync(scratch, C_in, bytes, cudaMemcpyDeviceToDevice, ctx->stream));
    GemmTrial trial = {plan, alpha, beta, A, B, C_in, scratch, residual_form};
    float chosen_ms = -1.0f, first_ms = -1.0f;
    const int best = cuda_gemm_autotune_choose(plan->candidate_count, eligible,
                                               gemm_trial_launch, &trial, &chosen_ms, &first_ms);
    char shape[96];
    const GemmKey *k = &plan->key;
    snprintf(shape, sizeof shape, "%dx%dx%d%s%s b%d %s->%s%s", k->M, k->N, k->K,
             k->transA ? " At" : "", k->transB ? " Bt" : "", k->batch,
             k->operands == GEMM_OPERANDS_BF16 ? "bf16" : "fp32",
             k->output == GEMM_OUTPUT_BF16 ? "bf16" : "fp32",
             k->epilogue == GEMM_EPILOGUE_BIAS ? " bias" : "");
    cuda_gemm_autotune_note_plan(shape, 2.0 * k->M * k->N * (double)k->K * k->batch, chosen_ms,
                                 first_ms, &plan->calls);
    cuda_release(scratch);  /* after the chooser's wait: no trial still reads it */
    plan->algo = plan->candidates[best].algo;
    plan->out_of_place = algo_out_of_place(&plan->algo);
    plan->tune = GEMM_TUNE_DONE;
}

/* One GEMM on fp32 or bf16 operands (A, B point at operands of that type) into an fp32 or
 * bf16 C (beta must be 0 for bf16), optional bias of C's element type:
 * C = alpha op(A) op(B) + beta C_in (+ bias), C_in NULL meaning C itself (in place).
 * C_in != C is cuBLASLt's out-of-place form (its C read, its D written): "This function
 * supports both in-place matrix multiplication (C == D and Cdesc == Ddesc) and out-of-place
 * matrix multiplication (C != D, both matrices must have the same data type, number of rows,
 * number of columns, batch size, and memory order)" (cuBLAS documentation, cublasLtMatmul,
 * https://docs.nvidia.com/cuda/cublas/#cublasltmatmul, quoted in pytorch/pytorch#153590).
 * C_in and C share one layout here (layout_c), so all of that holds. An algorithm may still
 * lack CUBLASLT_ALGO_CAP_OUT_OF_PLACE_RESULT_SUPPORT (cublasLt.h), and the K = 0 and classic
 * cuBLAS routes work in place only: those copy C_in into C first. */
static void gemm_dispatch_c_in(int operands, int output, int transA, int transB, int M, int N,
                               int K, float alpha, const void *A, int lda, long strideA,
                               const void *B, int ldb, long strideB, float beta,
                               const void *C_in, void *C, int ldc, long strideC, int batch,
                               const void *bias)
{
    if (M <= 0 || N <= 0 || batch <= 0) return;
    const int bf16_out = output == GEMM_OUTPUT_BF16;
    if (bf16_out && beta != 0.0f)
        alice_fatal_at(__FILE__, __LINE__, "gemm_dispatch: a bf16 output is written, not "
                       "accumulated (beta = %g; use an fp32 output)", (double)beta);
    /* beta = 0 reads nothing: in place, as without C_in. So C_in != C only with an fp32 C. */
    if (!C_in || beta == 0.0f) C_in = C;
    CudaContext *ctx = cuda_context();
    if (K <= 0) {
        if (C_in != C) copy_blocks((float *)C, (const float *)C_in, ldc, strideC, M, N, batch);
        if (bf16_out)
            empty_sum((__nv_bfloat16 *)C, ldc, strideC, M, N, batch, beta,
                      (const __nv_bfloat16 *)bias);
        else
            empty_sum((float *)C, ldc, strideC, M, N, batch, beta, (const float *)bias);
        return;
    }
    const size_t out_elem = output_elem_bytes(output);
    const int fuse_bias = bias && alignment_bytes(bias, 0, 1, out_elem) >= kFusedBiasAlignBytes;
    const size_t elem = operands == GEMM_OPERANDS_BF16 ? 2 : 4;
    GemmKey key;
    memset(&key, 0, sizeof key);  /* padding too: keys are compared with memcmp */
    key.transA = transA; key.transB = transB; key.M = M; key.N = N; key.K = K;
    key.lda = lda; key.ldb = ldb; key.ldc = ldc; key.batch = batch;
    key.strideA = batch > 1 ? strideA : 0;
    key.strideB = batch > 1 ? strideB : 0;
    key.strideC = batch > 1 ? strideC : 0;
    key.epilogue = fuse_bias ? GEMM_EPILOGUE_BIAS : GEMM_EPILOGUE_NONE;
    key.operands = operands;
    key.output = output;
    key.tf32 = ctx->allow_tf32;
    key.autotune = cuda_gemm_autotune_enabled();
    int align = alignment_bytes(A, strideA, batch, elem);
    int a2 = alignment_bytes(B, strideB, batch, elem);
    int a3 = alignment_bytes(C, strideC, batch, out_elem);
    if (a2 < align) align = a2;
    if (a3 < align) align = a3;
    const int a4 = alignment_bytes(C_in, strideC, batch, out_elem);
    if (a4 < align) align = a4;
    key.align = align;
    GemmPlan *plan = bias && bf16_out && !fuse_bias ? NULL : find_plan(&key);
    if (bias && bf16_out && !(plan && plan->has_algo)) {
        /* The bias cannot be fused: an fp32 result first, then bias and one rounding. */
        float *c32 = (float *)cuda_scratch(SCRATCH_GEMM_F32,
                                           (size_t)batch * M * N * sizeof(float));
        gemm_dispatch_c_in(operands, GEMM_OUTPUT_FP32, transA, transB, M, N, K, alpha, A, lda,
                           strideA, B, ldb, strideB, 0.0f, NULL, c32, N, (long)M * N, batch,
                           NULL);
        bias_round_kernel<<<grid_for((size_t)batch * M * N), kThreads, 0, ctx->stream>>>(
            (__nv_bfloat16 *)C, ldc, strideC, c32, (const __nv_bfloat16 *)bias, M, N, batch);
        CUDA_CHECK_LAUNCH();
        return;
    }
    if (plan->has_algo) {
        if (fuse_bias)
            CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
                plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
        if (plan->tune == GEMM_TUNE_PENDING)  /* gemm_autotune: this shape's first call */
            tune_plan(plan, &alpha, A, B, &beta, C_in, C, M, N, ldc, strideC, batch, out_elem);
        if (C_in != C && !plan->out_of_place) {  /* this algorithm writes in place only */
            copy_blocks((float *)C, (const float *)C_in, ldc, strideC, M, N, batch);
            C_in = C;
        }
        plan->calls++;
        cublasStatus_t cublasLtMatmul_status = lt_matmul(plan, &alpha, A, B, &beta, C_in, C);
        if (cublasLtMatmul_status == CUBLAS_STATUS_NOT_SUPPORTED && C_in != C) {
            /* The out-of-place form has not run on every GPU this code meets: an algorithm
             * that refuses it after all is remembered as in-place only, and the call repeated
             * that way (the residual copied into C first), rather than ending the job. */
            plan->out_of_place = 0;
            copy_blocks((float *)C, (const float *)C_in, ldc, strideC, M, N, batch);
            cublasLtMatmul_status = lt_matmul(plan, &alpha, A, B, &beta, C, C);
        }
        CUBLAS_CHECK(cublasLtMatmul_status);
        if (bias && !fuse_bias)  /* fp32 C here: a bf16 C with such a bias took the route above */
            add_bias_blocks((float *)C, ldc, strideC, (const float *)bias, M, N, batch);
        return;
    }
    /* No cuBLASLt algorithm for this shape/alignment: classic cuBLAS, bias added after (fp32 C:
     * a bf16 C with a bias took the fp32 route above). */
    if (C_in != C) copy_blocks((float *)C, (const float *)C_in, ldc, strideC, M, N, batch);
    const cudaDataType_t t = operands == GEMM_OPERANDS_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    const cudaDataType_t tc = bf16_out ? CUDA_R_16BF : CUDA_R_32F;
    const cublasComputeType_t compute =
        (ctx->allow_tf32 && operands == GEMM_OPERANDS_FP32) ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                             : CUBLAS_COMPUTE_32F;
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        ctx->blas, transB ? CUBLAS_OP_T : CUBLAS_OP_N, transA ? CUBLAS_OP_T : CUBLAS_OP_N, N, M,
        K, &alpha, B, t, ldb, strideB, A, t, lda, strideA, &beta, C, tc, ldc, strideC, batch,
        compute, CUBLAS_GEMM_DEFAULT));
    if (bias) add_bias_blocks((float *)C, ldc, strideC, (const float *)bias, M, N, batch);
}

/* In place (C read when beta != 0, and written): every GEMM but the residual linear. */
static void gemm_dispatch(int operands, int output, int transA, int transB, int M, int N, int K,
                          float alpha, const void *A, int lda, long strideA, const void *B,
                          int ldb, long strideB, float beta, void *C, int ldc, long strideC,
                          int batch, const void *bias)
{
    gemm_dispatch_c_in(operands, output, transA, transB, M, N, K, alpha, A, lda, strideA, B, ldb,
                       strideB, beta, NULL, C, ldc, strideC, batch, bias);
}

/* Elements spanned by a strided batch of stored rows x cols matrices with leading dim ld. */
static size_t operand_span(int rows, int cols, int ld, long stride, int batch)
{
    if (rows <= 0 || cols <= 0 || batch <= 0) return 0;
    return (size_t)(batch - 1) * (size_t)stride + (size_t)(rows - 1) * ld + (size_t)cols;
}

/* The operand in bf16: the weight copy when x lies in a weight buffer, else rounded into the
 * scratch slot now. */
static const __nv_bfloat16 *bf16_operand(CudaScratchSlot slot, const float *x, size_t n)
{
    const __nv_bfloat16 *weights = cuda_weight_bf16(x, n);
    if (weights) return weights;
    __nv_bfloat16 *out = (__nv_bfloat16 *)cuda_scratch(slot, n * sizeof(__nv_bfloat16) + 256);
    cuda_round_to_bf16(out, x, n);
    return out;
}

/* Mixed precision: both operands rounded to bf16 (the whole strided span, so leading
 * dimensions and batch strides keep their meaning), fp32 accumulate and output. */
static void gemm_bf16_bias(int transA, int transB, int M, int N, int K, float alpha,
                           const float *A, int lda, long strideA, const float *B, int ldb,
                           long strideB, float beta, float *C, int ldc, long strideC, int batch,
                           const float *bias)
{
    const size_t span_a = operand_span(transA ? K : M, transA ? M : K, lda, strideA, batch);
    const size_t span_b = operand_span(transB ? N : K, transB ? K : N, ldb, strideB, batch);
    const __nv_bfloat16 *a16 = bf16_operand(SCRATCH_BF16_A, A, span_a);
    const __nv_bfloat16 *b16 = bf16_operand(SCRATCH_BF16_B, B, span_b);
    gemm_dispatch(GEMM_OPERANDS_BF16, GEMM_OUTPUT_FP32, transA, transB, M, N, K, alpha, a16, lda,
                  strideA, b16, ldb, strideB, beta, C, ldc, strideC, batch, bias);
}

void cuda_gemm_bf16(int transA, int transB, int M, int N, int K, float alpha, const float *A,
                    int lda, long strideA, const float *B, int ldb, long strideB, float beta,
                    float *C, int ldc, long strideC, int batch)
{
    gemm_bf16_bias(transA, transB, M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta, C,
                   ldc, strideC, batch, NULL);
}

/* fp32 or mixed precision, by the context's math mode. */
static void gemm_any(int transA, int transB, int M, int N, int K, float alpha, const float *A,
                     int lda, long strideA, const float *B, int ldb, long strideB, float beta,
                     float *C, int ldc, long strideC, int batch, const float *bias)
{
    if (cuda_context()->bf16_gemm)
        gemm_bf16_bias(transA, transB, M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta,
                       C, ldc, strideC, batch, bias);
    else
        gemm_dispatch(GEMM_OPERANDS_FP32, GEMM_OUTPUT_FP32, transA, transB, M, N, K, alpha, A,
                      lda, strideA, B, ldb, strideB, beta, C, ldc, strideC, batch, bias);
}

void cuda_gemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
               long strideA, const float *B, int ldb, long strideB, float beta, float *C, int ldc,
               long strideC, int batch)
{
    gemm_any(transA, transB, M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc,
             strideC, batch, NULL);
}

void cuda_linear_fwd(float *y, const float *x, const float *W, const float *b, int rows, int in,
                     int out)
{
    /* y = x W^T + b with the bias fused into the GEMM epilogue. */
    gemm_any(0, 1, rows, out, in, 1.0f, x, in, 0, W, in, 0, 0.0f, y, out, 0, 1, b);
}

void cuda_add_column_sums(float *db, const float *dy, long rows, int cols, long ld)
{
    colsum_accumulate(db, rows, cols, MatrixElement{dy, ld});
}

/* dy in bf16 for the GEMMs of the linear backward, in slot A as bf16_operand would round it;
 * with a bias gradient, the pass that rounds dy also sums its (unrounded, fp32) columns into
 * db: one launch and one read of dy instead of a rounding launch plus a column sum. */
static const __nv_bfloat16 *dy_bf16_and_bias_grad(float *db, const float *dy, int rows, int out)
{
    const size_t n = (size_t)rows * out;
    if (!db || cuda_weight_bf16(dy, n)) {
        if (db) cuda_add_column_sums(db, dy, rows, out, out);
        return bf16_operand(SCRATCH_BF16_A, dy, n);
    }
    __nv_bfloat16 *dy16 =
        (__nv_bfloat16 *)cuda_scratch(SCRATCH_BF16_A, n * sizeof(__nv_bfloat16) + 256);
    colsum_accumulate(db, rows, out, MatrixElementRoundedCopy{dy, out, dy16});
    return dy16;
}

/* Mixed-precision linear backward: dy16, dy rounded to bf16 once for both GEMMs (gemm_any would
 * round it for each), is made by the caller: from an fp32 dy by dy_bf16_and_bias_grad, from the
 * MLP's GELU input gradient by gelu_dh_bf16_and_bias_grad (both in the bias column sum's pass
 * when there is a bias gradient); so one function runs the GEMMs of both entries. W comes from
 * its weight copy; x is bf16 already (x16, bf16 activations) or rounded for dW only (x32). The
 * GEMMs read dy16 after the launch that wrote it, on the same stream: complete. dx is of
 * GemmOutputType dx_output: a bf16 dx (linear_bwd_bf16_dx16) is the fp32 accumulator rounded
 * by the GEMM's store (beta = 0: written, never read). */
static void linear_bwd_bf16_gemms(void *dx, int dx_output, float *dW,
                                  const __nv_bfloat16 *dy16, const float *x32,
                                  const __nv_bfloat16 *x16, const float *W, int rows, int in,
                                  int out)
{
    if (dx) {
        const __nv_bfloat16 *w16 = bf16_operand(SCRATCH_BF16_B, W, (size_t)out * in);
        gemm_dispatch(GEMM_OPERANDS_BF16, dx_output, 0, 0, rows, in, out, 1.0f, dy16, out, 0,
                      w16, in, 0, 0.0f, dx, in, 0, 1, NULL);
    }
    if (dW) {  /* slot B is free again: the dx GEMM before it is ordered on the same stream */
        if (!x16) x16 = bf16_operand(SCRATCH_BF16_B, x32, (size_t)rows * in);
        gemm_dispatch(GEMM_OPERANDS_BF16, GEMM_OUTPUT_FP32, 1, 0, out, in, rows, 1.0f, dy16, out,
                      0, x16, in, 0, 1.0f, dW, in, 0, 1, NULL);
    }
}

/* The mixed-precision linear backward on an fp32 dy; db is the fp32 column sum of the
 * unrounded dy; dx of GemmOutputType dx_output. */
static void linear_bwd_bf16_fp32_dy(void *dx, int dx_output, float *dW, float *db,
                                    const float *dy, const float *x32, const __nv_bfloat16 *x16,
                                    const float *W, int rows, int in, int out)
{
    if (!dx && !dW) {
        if (db) cuda_add_column_sums(db, dy, rows, out, out);
        return;
    }
    linear_bwd_bf16_gemms(dx, dx_output, dW, dy_bf16_and_bias_grad(db, dy, rows, out), x32, x16,
                          W, rows, in, out);
}

void cuda_linear_bwd(float *dx, float *dW, float *db, const float *dy, const float *x,
                     const float *W, int rows, int in, int out)
{
    /* The bias gradient accumulates (a BGRAD epilogue would overwrite it), so it is a
     * deterministic column sum instead. */
    if (cuda_context()->bf16_gemm) {
        linear_bwd_bf16_fp32_dy(dx, GEMM_OUTPUT_FP32, dW, db, dy, x, NULL, W, rows, in, out);
        return;
    }
    if (dx) gemm_dispatch(GEMM_OPERANDS_FP32, GEMM_OUTPUT_FP32, 0, 0, rows, in, out, 1.0f, dy,
                          out, 0, W, in, 0, 0.0f, dx, in, 0, 1, NULL);
    if (dW) gemm_dispatch(GEMM_OPERANDS_FP32, GEMM_OUTPUT_FP32, 1, 0, out, in, rows, 1.0f, dy,
                          out, 0, x, in, 0, 1.0f, dW, in, 0, 1, NULL);
    if (db) cuda_add_column_sums(db, dy, rows, out, out);
}

/* ---- bf16 activations ---- */

static int gemm_output_of(DType t, const char *op)
{
    if (t == DTYPE_F32) return GEMM_OUTPUT_FP32;
    if (t == DTYPE_BF16) return GEMM_OUTPUT_BF16;
    alice_fatal_at(__FILE__, __LINE__, "%s: unknown output element type %d (DTYPE_F32 or "
                   "DTYPE_BF16)", op, (int)t);
}

void cuda_gemm_bf16_operands(int transA, int transB, int M, int N, int K, float alpha,
                             const bf16_t *A, int lda, long strideA, const bf16_t *B, int ldb,
                             long strideB, float beta, void *C, DType c_type, int ldc,
                             long strideC, int batch)
{
    gemm_dispatch(GEMM_OPERANDS_BF16, gemm_output_of(c_type, "cuda_gemm_bf16_operands"), transA,
                  transB, M, N, K, alpha, as_nv(A), lda, strideA, as_nv(B), ldb, strideB, beta, C,
                  ldc, strideC, batch, NULL);
}

/* y = residual + x W^T + b: x straight to cuBLASLt, W (and for a bf16 y the bias) from the
 * weight copy; the residual is cuBLASLt's C (beta = 1) with y its D, so the skip connection
 * costs no pass of its own. */
void cuda_linear_fwd_bf16(void *y, DType y_type, const bf16_t *x, const float *W, const float *b,
                          const float *residual, int rows, int in, int out)
{
    const int output = gemm_output_of(y_type, "linear_fwd_bf16");
    backend_check_residual("linear_fwd_bf16", y, y_type, residual, (size_t)rows * out);
    const __nv_bfloat16 *w16 = bf16_operand(SCRATCH_BF16_B, W, (size_t)out * in);
    const void *bias = b;
    if (b && output == GEMM_OUTPUT_BF16) bias = bf16_operand(SCRATCH_BF16_A, b, (size_t)out);
    gemm_dispatch_c_in(GEMM_OPERANDS_BF16, output, 0, 1, rows, out, in, 1.0f, as_nv(x), in, 0,
                       w16, in, 0, residual ? 1.0f : 0.0f, residual, y, out, 0, 1, bias);
}

void cuda_linear_bwd_bf16(float *dx, float *dW, float *db, const float *dy, const bf16_t *x,
                          const float *W, int rows, int in, int out)
{
    linear_bwd_bf16_fp32_dy(dx, GEMM_OUTPUT_FP32, dW, db, dy, NULL, as_nv(x), W, rows, in, out);
}

void cuda_linear_bwd_bf16_dx16(bf16_t *dx, float *dW, float *db, const float *dy, const bf16_t *x,
                               const float *W, int rows, int in, int out)
{
    linear_bwd_bf16_fp32_dy(dx, GEMM_OUTPUT_BF16, dW, db, dy, NULL, as_nv(x), W, rows, in, out);
}

/* A bf16 dy of a layer without bias (the attention backward's bf16 dqkv) goes to the GEMMs as
 * it is: the operand linear_bwd_bf16 would round an fp32 dy into (SCRATCH_BF16_A, 256-byte
 * aligned like the activation arena, so the same GEMM plans), without the rounding launch. */
void cuda_linear_bwd_bf16_dy16(float *dx, float *dW, const bf16_t *dy, const bf16_t *x,
                               const float *W, int rows, int in, int out)
{
    if (!dx && !dW) return;
    linear_bwd_bf16_gemms(dx, GEMM_OUTPUT_FP32, dW, as_nv(dy), NULL, as_nv(x), W, rows, in, out);
}

void cuda_linear_bwd_bf16_dy16_dx16(bf16_t *dx, float *dW, const bf16_t *dy, const bf16_t *x,
                                    const float *W, int rows, int in, int out)
{
    if (!dx && !dW) return;
    linear_bwd_bf16_gemms(dx, GEMM_OUTPUT_BF16, dW, as_nv(dy), NULL, as_nv(x), W, rows, in, out);
}

/* ---- the MLP's GELU backward fused into fc1's bias-gradient pass ----
 * (tests/cuda_emu/test_linear_gelu_bwd_emulated.sh cuts this section out, up to
 * cuda_linear_gelu_bwd_bf16, and runs it on the host.)
 * f(r, c) = dh = dy_act[i] gelu'(h[i]) (i = r * ld + c), the value gelu_bwd_kernel
 * (cuda_elementwise.cu) stores, and rounded[i] = dh in bf16 (nearest even, as
 * MatrixElementRoundedCopy): the column sum of dh for db and dh's bf16 copy for the GEMMs in
 * one pass, with dh itself never stored in fp32. The product is MATH_MUL (__fmul_rn): inlined
 * into the column sum, a plain a * b followed by acc += would be contracted by nvcc into one
 * FMA (one rounding instead of two), and db would no longer be the sum of the stored dh.
 * gelu'(h) comes from slope, the table of gelu_erf_slope for every bf16 value that the device
 * filled with that formula (cuda_gelu_slope_bf16_table): the formula's ~90 fp32 instructions per
 * element held this pass at about a third of memory speed; NULL (a graph recording before the
 * table exists) evaluates the formula. Either way the same bits. DyAct: float, or __nv_bfloat16
 * (fc2's bf16 input gradient, linear_gelu_bwd_bf16_dy16) widened exactly before the product,
 * so the same bits as the fp32 dy_act holding the widened values. */
template <typename DyAct> struct GeluBwdRoundedCopy {
    const DyAct *dy_act;
    const __nv_bfloat16 *h;
    long ld;
    __nv_bfloat16 *rounded;
    const float *slope;
    /* staged (ColsumStaged): the loads, the slope lookup behind h's included, then the product
     * and the store */
    struct Loaded {
        float dy, g;
    };
    __device__ Loaded load(long r, int c) const
    {
        const long i = r * ld + c;
        const float g = slope ? slope[__bfloat16_as_ushort(h[i])] : gelu_erf_slope(widen(h[i]));
        return Loaded{widen(dy_act[i]), g};
    }
    __device__ float finish(long r, int c, Loaded in) const
    {
        const float dh = MATH_MUL(in.dy, in.g);
        rounded[r * ld + c] = __float2bfloat16_rn(dh);
        return dh;
    }
    __device__ float operator()(long r, int c) const { return finish(r, c, load(r, c)); }
};

/* dh's bf16 copy in slot A (where dy_bf16_and_bias_grad puts dy's), db += column sums of dh:
 * one launch. slope: GeluBwdRoundedCopy's (NULL: the formula). */
template <typename DyAct>
static const __nv_bfloat16 *gelu_dh_bf16_and_bias_grad(float *db, const DyAct *dy_act,
                                                       const __nv_bfloat16 *h, int rows, int out,
                                                       const float *slope)
{
    const size_t n = (size_t)rows * out;
    __nv_bfloat16 *dh16 =
        (__nv_bfloat16 *)cuda_scratch(SCRATCH_BF16_A, n * sizeof(__nv_bfloat16) + 256);
    colsum_accumulate(db, rows, out, GeluBwdRoundedCopy<DyAct>{dy_act, h, out, dh16, slope});
    return dh16;
}

void cuda_linear_gelu_bwd_bf16(float *dx, float *dW, float *db, const float *dy_act,
                               const bf16_t *h, float *dh_scratch, const bf16_t *x,
                               const float *W, int rows, int in, int out)
{
    /* Without db there is no column sum to fuse into, and without a GEMM no bf16 copy to
     * make: the unfused sequence, which the contract says the fused path equals. */
    if (!db || (!dx && !dW)) {
        cuda_gelu_bwd_bf16(dh_scratch, dy_act, h, (size_t)rows * out);
        cuda_linear_bwd_bf16(dx, dW, db, dh_scratch, x, W, rows, in, out);
        return;
    }
    linear_bwd_bf16_gemms(dx, GEMM_OUTPUT_FP32, dW,
                          gelu_dh_bf16_and_bias_grad(db, dy_act, as_nv(h), rows, out,
                                                     cuda_gelu_slope_bf16_table()),
                          NULL, as_nv(x), W, rows, in, out);
}

static __global__ void widen_bf16_kernel(float *dst, const __nv_bfloat16 *src, size_t n)
{
    GRID_STRIDE(i, n) dst[i] = widen(src[i]);
}

void cuda_linear_gelu_bwd_bf16_dy16(float *dx, float *dW, float *db, const bf16_t *dy_act,
                                    const bf16_t *h, float *dh_scratch, const bf16_t *x,
                                    const float *W, int rows, int in, int out)
{
    /* The cases the fp32 entry runs unfused (no db, or no GEMM; the model has neither): its
     * sequence on dy_act widened into dh_scratch, which it then overwrites with dh element by
     * element (gelu_bwd_kernel reads dy[i] before it stores dx[i]): the contract by
     * construction, at one extra pass where no model call goes. */
    if (!db || (!dx && !dW)) {
        const size_t n = (size_t)rows * out;
        if (n) {
            widen_bf16_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(dh_scratch,
                                                                         as_nv(dy_act), n);
            CUDA_CHECK_LAUNCH();
        }
        cuda_linear_gelu_bwd_bf16(dx, dW, db, dh_scratch, h, dh_scratch, x, W, rows, in, out);
        return;
    }
    linear_bwd_bf16_gemms(dx, GEMM_OUTPUT_FP32, dW,
                          gelu_dh_bf16_and_bias_grad(db, as_nv(dy_act), as_nv(h), rows, out,
                                                     cuda_gelu_slope_bf16_table()),
                          NULL, as_nv(x), W, rows, in, out);
}
