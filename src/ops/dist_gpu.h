/* NCCL collectives for the distribution layer when device = cuda (cuda/nccl_comm.cu): one
 * communicator per job, bootstrapped through MPI. Call after MPI_Init and after the CUDA
 * backend picked this rank's device (backend_cuda()). Without CUDA compiled in, these are
 * errors telling the user to rebuild (gpu_stub.c). */
#ifndef ALICE_DIST_GPU_H
#define ALICE_DIST_GPU_H

#include <stddef.h>

/* Creates the job's communicator: rank 0 makes the unique id, MPI_Bcast shares it. Collective;
 * a no-op once the communicator exists. The set-up gives up after nccl_timeout_s (a rank that
 * never joins) with an error naming the likely causes. */
void nccl_init_from_mpi(void);
/* The set-up nccl_init_from_mpi runs after the id's broadcast (under nccl_timeout_s), for a
 * communicator of nranks ranks in which this process is rank 0 and makes the id itself: with
 * one process and nranks = 2 it never completes, which is how tests/gpu/test_nccl_watchdog.sh
 * checks the set-up's time limit on one GPU. Not for jobs. */
void nccl_init_alone_for_check(int nranks);
/* In place, on the backend's stream: buf[i] = mean over ranks of buf[i] (device memory). */
void nccl_allreduce_mean(float *buf, size_t n);
/* The overlapped form of nccl_allreduce_mean (grad_sync): records an event on the backend's
 * (compute) stream, makes the communication stream wait for it and runs the averaging
 * all-reduce there, so it starts once the kernels enqueued so far (which produced buf) are done
 * while the compute stream goes on with later ones. Returns without a host synchronisation.
 * Launches must come in the same order on every rank. With ranks sharing a GPU (MPI-staged
 * transport) it reduces synchronously instead. */
void nccl_allreduce_mean_async(float *buf, size_t n);
/* 1 when nccl_allreduce_mean_async runs asynchronously (NCCL), 0 for the MPI-staged transport. */
int nccl_allreduce_overlaps(void);
/* Makes the compute stream wait for every all-reduce launched so far by
 * nccl_allreduce_mean_async; no host synchronisation. */
void nccl_allreduce_wait(void);
/* In place sum over ranks (device memory). */
void nccl_allreduce_sum(float *buf, size_t n);
/* 1 once nccl_init_from_mpi has run (and before nccl_shutdown). */
int nccl_ready(void);
void nccl_shutdown(void);

#endif
