/* CPU backend: GEMM and the linear layer, on OpenBLAS sgemm. */
#include "ops/cpu_ops.h"

#include <cblas.h>

/* A batch of GEMMs smaller than this many flops each runs one GEMM per OpenMP thread with
 * single-threaded BLAS; larger ones run one after another, each on all BLAS threads. */
#define CPU_SMALL_GEMM_FLOPS 8.0e6

/* Columns per task when summing columns: 64 doubles fit L1 and give wide layers
 * (768 columns) a dozen tasks. */
enum { COLUMN_BLOCK = 64 };

static inline CBLAS_TRANSPOSE cblas_op(int trans) { return trans ? CblasTrans : CblasNoTrans; }

void cpu_gemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
              long strideA, const float *B, int ldb, long strideB, float beta, float *C, int ldc,
              long strideC, int batch)
{
    if (batch <= 0 || M <= 0 || N <= 0) return;
    double flops = 2.0 * M * N * K;
    if (batch > 1 && flops < CPU_SMALL_GEMM_FLOPS) {
        int blas_threads = cpu_blas_serial_begin();
        #pragma omp parallel for schedule(static)
        for (int i = 0; i < batch; i++)
            cblas_sgemm(CblasRowMajor, cblas_op(transA), cblas_op(transB), M, N, K, alpha,
                        A + i * strideA, lda, B + i * strideB, ldb, beta, C + i * strideC, ldc);
        cpu_blas_serial_end(blas_threads);
        return;
    }
    for (int i = 0; i < batch; i++)
        cblas_sgemm(CblasRowMajor, cblas_op(transA), cblas_op(transB), M, N, K, alpha,
                    A + i * strideA, lda, B + i * strideB, ldb, beta, C + i * strideC, ldc);
}

void cpu_linear_fwd(float *y, const float *x, const float *W, const float *b, int rows, int in,
                    int out)
{
    float beta = 0.0f;
    if (b) {
        /* Start every row from the bias and let sgemm accumulate onto it (beta = 1). */
        #pragma omp parallel for schedule(static) if ((long)rows * out > CPU_OMP_MIN_ELEMENTS)
        for (int r = 0; r < rows; r++)
            for (int o = 0; o < out; o++) y[(long)r * out + o] = b[o];
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.0f, x, in, W, in, beta,
                y, out);
}

void cpu_linear_bwd(float *dx, float *dW, float *db, const float *dy, const float *x,
                    const float *W, int rows, int in, int out)
{
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, in, out, 1.0f, dy, out, W,
                    in, 0.0f, dx, in);
    if (dW)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, rows, 1.0f, dy, out, x, in,
                    1.0f, dW, in);
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
            for (int c = 0; c < nc; c++) acc[c] += row[c];
        }
        for (int c = 0; c < nc; c++) db[c0 + c] += (float)acc[c];
    }
}
