/* The distribution layer: one rank per GPU (or CPU process); gradients are averaged across
 * ranks through one function, NCCL on the GPU and MPI_Allreduce on the CPU. */
#ifndef ALICE_DIST_H
#define ALICE_DIST_H

#include <stddef.h>

#include "ops/backend.h"
#include "train/grad_sync.h"

typedef struct {
    int rank, size;
    int local_rank, local_size;
    int use_nccl;
} Dist;

/* Reads rank/size and the node's local rank/size (MPI already initialised); with the CUDA
 * backend and more than one rank, GPU reductions go through NCCL, whose communicator is made at
 * the first of them (dist_allreduce_mean, dist_grad_transport: collective calls either way). */
void dist_init(Dist *d, const AliceBackend *be);
void dist_finalize(Dist *d);
/* buf (backend memory, n floats) <- mean over ranks. */
void dist_allreduce_mean(const Dist *d, const AliceBackend *be, float *buf, size_t n);
/* The non-blocking averaging all-reduce behind grad_sync (backend memory): MPI_Iallreduce on
 * host memory for cpu (scaled by 1/size once waited for), NCCL on a communication stream for
 * cuda. One rank: a transport without launch (grad_sync then does nothing). d and be must
 * outlive it. */
GradTransport dist_grad_transport(const Dist *d, const AliceBackend *be);
/* Sum of a host double over ranks. */
double dist_sum_double(double x);
/* In place: each of x[0..n) summed over every rank (collective). */
void dist_sum_doubles(double *x, int n);
/* Max of a host int over ranks. */
int dist_max_int(int x);

#endif
