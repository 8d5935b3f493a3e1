/* NCCL collectives for the distribution layer when device = cuda (cuda/nccl_comm.cu): one
 * communicator per job, bootstrapped through MPI. Call after MPI_Init and after the CUDA
 * backend picked this rank's device (backend_cuda()). Without CUDA compiled in, these are
 * errors telling the user to rebuild (gpu_stub.c). */
#ifndef ALICE_DIST_GPU_H
#define ALICE_DIST_GPU_H

#include <stddef.h>

/* Creates the job's communicator: rank 0 makes the unique id, MPI_Bcast shares it. */
void nccl_init_from_mpi(void);
/* In place, on the backend's stream: buf[i] = mean over ranks of buf[i] (device memory). */
void nccl_allreduce_mean(float *buf, size_t n);
/* In place sum over ranks (device memory). */
void nccl_allreduce_sum(float *buf, size_t n);
/* 1 once nccl_init_from_mpi has run (and before nccl_shutdown). */
int nccl_ready(void);
void nccl_shutdown(void);

#endif
