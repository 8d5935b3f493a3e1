/* CPU backend: GEMM and the linear layer, on OpenBLAS sgemm.
 *
 * One thread pool for everything: each GEMM is split into blocks of C across the OpenMP
 * threads, one single-threaded sgemm per block (the bias of a linear layer filled by the same
 * thread, so a layer is one parallel region). With Debian's pthread build of OpenBLAS its own
 * threads would sit beside OpenMP's, each pool spinning while the other wants the cores
 * (measured 0.4-0.8x of plain sgemm for linear layers on 2 cores), so that build is set to one
 * thread. The OpenMP build (what the Makefile links when installed) needs nothing: inside a
 * parallel region it runs single-threaded by itself. */
#include "ops/cpu_ops.h"

#include <cblas.h>
#include <omp.h>

/* Below this many flops a GEMM runs on one thread (an OpenMP region costs microseconds). */
#define CPU_PARALLEL_GEMM_FLOPS 2.0e6
/* Rows/columns of C per block are a multiple of this (OpenBLAS micro-kernel widths). */
enum { GEMM_SPLIT_ALIGN = 16 };
/* Columns per task when summing columns: 64 doubles fit L1 and give wide layers
 * (768 columns) a dozen tasks. */
enum { COLUMN_BLOCK = 64 };

static inline CBLAS_TRANSPOSE cblas_op(int trans) { return trans ? CblasTrans : CblasNoTrans; }

void cpu_blas_single_thread(void)
{
    /* The OpenMP build must be left alone: its openblas_set_num_threads also calls
     * omp_set_num_threads, which would serialise every OpenMP loop of the backend. */
    if (openblas_get_parallel() == OPENBLAS_OPENMP) return;
    if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}

/* C[rows, cols) block = alpha op(A) op(B) + beta C, where a non-NULL bias (length N) first
 * overwrites every row of the block (and beta is then taken as 1). */
static void sgemm_block(int transA, int transB, int M, int N, int K, float alpha, const float *A,
                        int lda, const float *B, int ldb, float beta, float *C, int ldc,
                        const float *bias)
{
    if (bias) {
        for (int r = 0; r < M; r++)
            for (int c = 0; c < N; c++) C[(long)r * ldc + c] = bias[c];
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, cblas_op(transA), cblas_op(transB), M, N, K, alpha, A, lda, B, ldb,
                beta, C, ldc);
}

/* cpu_sgemm with an optional bias broadcast over the rows of C, filled by each thread for its
 * own block so that a linear layer is one parallel region. */
static void sgemm_split(int transA, int transB, int M, int N, int K, float alpha, const float *A,
                        int lda, const float *B, int ldb, float beta, float *C, int ldc,
                        const float *bias)
{
    if (M <= 0 || N <= 0) return;
    cpu_blas_single_thread();
    int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
    if (threads == 1 || 2.0 * M * N * K < CPU_PARALLEL_GEMM_FLOPS) {
        sgemm_block(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias);
        return;
    }
    /* Split the longer side of C: rows of op(A) or columns of op(B). */
    int split_rows = M >= N;
    int len = split_rows ? M : N;
    int chunk = (len + threads - 1) / threads;
    chunk = (chunk + GEMM_SPLIT_ALIGN - 1) / GEMM_SPLIT_ALIGN * GEMM_SPLIT_ALIGN;
    int parts = (len + chunk - 1) / chunk;
    #pragma omp parallel for schedule(static, 1) num_threads(threads)
    for (int part = 0; part < parts; part++) {
        int start = part * chunk, count = len - start < chunk ? len - start : chunk;
        if (split_rows) {
            const float *Ap = transA ? A + start : A + (long)start * lda;
            sgemm_block(transA, transB, count, N, K, alpha, Ap, lda, B, ldb, beta,
                        C + (long)start * ldc, ldc, bias);
        } else {
            const float *Bp = transB ? B + (long)start * ldb : B + start;
            sgemm_block(transA, transB, M, count, K, alpha, A, lda, Bp, ldb, beta, C + start,
                        ldc, bias ? bias + start : NULL);
        }
    }
}

void cpu_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc)
{
    sgemm_split(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, NULL);
}

void cpu_gemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
              long strideA, const float *B, int ldb, long strideB, float beta, float *C, int ldc,
              long strideC, int batch)
{
    if (batch <= 0 || M <= 0 || N <= 0) return;
    int threads = omp_get_max_threads();
    /* Whole matrices per thread (attention heads) when the batch spreads evenly or the
     * matrices are too small to split; otherwise each GEMM is split across the threads. */
    int balanced = batch % threads == 0 || batch >= 4 * threads;
    if (batch > 1 && batch >= threads && (balanced || 2.0 * M * N * K < CPU_PARALLEL_GEMM_FLOPS)) {
        cpu_blas_single_thread();
        #pragma omp parallel for schedule(static)
        for (int i = 0; i < batch; i++)
            cblas_sgemm(CblasRowMajor, cblas_op(transA), cblas_op(transB), M, N, K, alpha,
                        A + i * strideA, lda, B + i * strideB, ldb, beta, C + i * strideC, ldc);
        return;
    }
    for (int i = 0; i < batch; i++)
        cpu_sgemm(transA, transB, M, N, K, alpha, A + i * strideA, lda, B + i * strideB, ldb,
                  beta, C + i * strideC, ldc);
}

void cpu_linear_fwd(float *y, const float *x, const float *W, const float *b, int rows, int in,
                    int out)
{
    /* rows start from the bias (when given) and sgemm accumulates onto them */
    sgemm_split(0, 1, rows, out, in, 1.0f, x, in, W, in, 0.0f, y, out, b);
}

void cpu_linear_bwd(float *dx, float *dW, float *db, const float *dy, const float *x,
                    const float *W, int rows, int in, int out)
{
    if (dx) cpu_sgemm(0, 0, rows, in, out, 1.0f, dy, out, W, in, 0.0f, dx, in);
    if (dW) cpu_sgemm(1, 0, out, in, rows, 1.0f, dy, out, x, in, 1.0f, dW, in);
    if (db) cpu_add_column_sums(db, dy, rows, out, out);
}

void cpu_add_column_sums(float *db, const float *dy, long rows, int cols, long ld)
{
    int nblocks = (cols + COLUMN_BLOCK - 1) / COLUMN_BLOCK;
    #pragma omp parallel for schedule(static) if (rows * cols > CPU_OMP_MIN_ELEMENTS)
    for (int blk = 0; blk < nblocks; blk++) {
        int c0 = blk * COLUMN_BLOCK;
        int nc = cols - c0 < COLUMN_BLOCK ? cols - c0 : COLUMN_BLOCK;
        double acc[COLUMN_BLOCK] = {0};
        for (long r = 0; r < rows; r++) {
            const float *row = dy + r * ld + c0;
            #pragma omp simd
            for (int c = 0; c < nc; c++) acc[c] += row[c];
        }
        for (int c = 0; c < nc; c++) db[c0 + c] += (float)acc[c];
    }
}
