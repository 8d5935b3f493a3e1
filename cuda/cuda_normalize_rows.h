/* The streamed normalize_rows of cuda/cuda_losses.cu, C linkage: the backend's path for rows too
 * long to hold in registers (dim > 16384), public so that tests/bench/bench_recon_rows.c (a C
 * file) can time it at the paper shape beside the backend op's held path (the same formula; it
 * reads every row three times where the held path reads it once). */
#ifndef ALICE_CUDA_NORMALIZE_ROWS_H
#define ALICE_CUDA_NORMALIZE_ROWS_H

#ifdef __cplusplus
extern "C" {
#endif

/* out = (x - mean) / sqrt(var + eps) per row of dim values (src/ops/backend.h normalize_rows),
 * one block per row, three passes over the row in device memory. */
void cuda_normalize_rows_streamed(float *out, const float *x, int rows, int dim, float eps);

#ifdef __cplusplus
}
#endif

#endif
