/* The job's NCCL communicator as the host waits see it (cuda/cuda_wait.cu): whether there is
 * one to watch, its asynchronous error, and the abort. Implemented in cuda/nccl_comm.cu, which
 * owns the communicator; kept apart from ops/dist_gpu.h because only the CUDA backend's waits
 * may use it. */
#ifndef ALICE_NCCL_WATCH_H
#define ALICE_NCCL_WATCH_H

#include <cuda_runtime.h>
#include <stddef.h>

/* 1 while an NCCL communicator exists (NCCL transport, between init and shutdown or abort). */
int nccl_watch_active(void);
/* 0 while the communicator is healthy; else the ncclResult_t of its asynchronous error, with
 * NCCL's error string and its last error message written into detail (detail_bytes). */
int nccl_watch_async_error(char *detail, size_t detail_bytes);
/* ncclCommAbort: stops NCCL's kernels and proxy threads (a hung collective never returns
 * otherwise). The communicator is gone afterwards: nccl_ready() is 0, nccl_shutdown a no-op. */
void nccl_watch_abort(void);
/* The communication stream of the overlapped all-reduce, or NULL before its first use. */
cudaStream_t nccl_watch_comm_stream(void);
/* This process's rank in the communicator (MPI_COMM_WORLD rank). */
int nccl_watch_rank(void);

#endif
