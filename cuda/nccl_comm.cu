/* NCCL collectives of the distribution layer (src/ops/dist_gpu.h): one communicator per job,
 * its unique id made by rank 0 and broadcast with MPI; all-reduces run on the CUDA backend's
 * stream, so they are ordered after the backward kernels that produced the gradients without
 * a host synchronisation. */
#define OMPI_SKIP_MPICXX 1  /* C API only: Open MPI's C++ bindings are not warning-free */
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <nccl.h>

#include "cuda/cuda_context.h"

#define NCCL_CHECK(call) do { ncclResult_t r_ = (call); if (r_ != ncclSuccess) \
    alice_fatal_at(__FILE__, __LINE__, "NCCL call failed: %s: %s", #call, \
                   ncclGetErrorString(r_)); } while (0)

static ncclComm_t g_comm;
static int g_ready, g_size = 1;

int nccl_ready(void) { return g_ready; }

void nccl_init_from_mpi(void)
{
    if (g_ready) return;
    int mpi_up = 0;
    CHECK_MPI(MPI_Initialized(&mpi_up));
    if (!mpi_up) ALICE_FATAL("nccl_init_from_mpi called before MPI_Init");
    cuda_context_init();  /* this rank's device must be current before the communicator */
    int rank = 0;
    CHECK_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    CHECK_MPI(MPI_Comm_size(MPI_COMM_WORLD, &g_size));
    ncclUniqueId id;
    if (rank == 0) NCCL_CHECK(ncclGetUniqueId(&id));
    CHECK_MPI(MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD));
    NCCL_CHECK(ncclCommInitRank(&g_comm, g_size, id, rank));
    g_ready = 1;
    log_info("nccl: communicator over %d ranks (NCCL %d.%d.%d)", g_size, NCCL_MAJOR, NCCL_MINOR,
             NCCL_PATCH);
}

static void require_ready(void)
{
    if (!g_ready) ALICE_FATAL("NCCL all-reduce before nccl_init_from_mpi");
}

void nccl_allreduce_sum(float *buf, size_t n)
{
    require_ready();
    if (n == 0) return;
    NCCL_CHECK(ncclAllReduce(buf, buf, n, ncclFloat32, ncclSum, g_comm, cuda_stream()));
}

void nccl_allreduce_mean(float *buf, size_t n)
{
    require_ready();
    if (n == 0) return;
    /* ncclAvg (NCCL >= 2.10) divides inside the reduction: one pass, no extra scale kernel. */
    NCCL_CHECK(ncclAllReduce(buf, buf, n, ncclFloat32, ncclAvg, g_comm, cuda_stream()));
}

void nccl_shutdown(void)
{
    if (!g_ready) return;
    CUDA_CHECK(cudaStreamSynchronize(cuda_stream()));  /* pending collectives finish first */
    NCCL_CHECK(ncclCommDestroy(g_comm));
    g_ready = 0;
}
