/* Error checking for every CUDA runtime, cuBLAS, cuBLASLt, cuDNN and NCCL call: each macro
 * reports the failing call with its file and line and ends the job through alice_fatal_at
 * (MPI_Abort when MPI is up, so no rank is left waiting in a collective). */
#ifndef ALICE_CUDA_CHECK_H
#define ALICE_CUDA_CHECK_H

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "cuda/cuda_c_api.h"

#define CUDA_CHECK(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) \
    alice_fatal_at(__FILE__, __LINE__, "CUDA call failed: %s: %s (%s)", #call, \
                   cudaGetErrorString(e_), cudaGetErrorName(e_)); } while (0)

/* After a kernel launch: catches bad launch configurations at the launching line. */
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

#define CUBLAS_CHECK(call) do { cublasStatus_t s_ = (call); if (s_ != CUBLAS_STATUS_SUCCESS) \
    alice_fatal_at(__FILE__, __LINE__, "cuBLAS call failed: %s: %s", #call, \
                   cublasGetStatusString(s_)); } while (0)

#define CUDNN_CHECK(call) do { cudnnStatus_t s_ = (call); if (s_ != CUDNN_STATUS_SUCCESS) \
    alice_fatal_at(__FILE__, __LINE__, "cuDNN call failed: %s: %s", #call, \
                   cudnnGetErrorString(s_)); } while (0)

#endif
