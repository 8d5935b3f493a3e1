/* Start and end shared by the MPI + GPU check tools (nccl_*_check.c): MPI up, rank and size,
 * "skip" with exit 77 where no GPU is visible, the CUDA backend and the job's communicator;
 * at the end the worst verdict of every rank and an orderly shutdown. */
#ifndef ALICE_GPU_MPI_TOOL_H
#define ALICE_GPU_MPI_TOOL_H

#include <mpi.h>
#include <stdio.h>

#include "core/check.h"
#include "ops/backend.h"
#include "ops/dist_gpu.h"
#include "ops/gpu_device.h"

/* Returns the CUDA backend with NCCL set up, or NULL after MPI_Finalize when the tool must
 * skip (then exit 77). */
static inline const AliceBackend *gpu_tool_start(int *argc, char ***argv, int *rank, int *size)
{
    CHECK_MPI(MPI_Init(argc, argv));
    CHECK_MPI(MPI_Comm_rank(MPI_COMM_WORLD, rank));
    CHECK_MPI(MPI_Comm_size(MPI_COMM_WORLD, size));
    if (gpu_device_count() == 0) {
        if (*rank == 0) printf("skip: no GPU (built without CUDA or no device visible)\n");
        CHECK_MPI(MPI_Finalize());
        return NULL;
    }
    const AliceBackend *gpu = backend_cuda();
    nccl_init_from_mpi();
    return gpu;
}

/* 1 when any rank saw a bad value (every rank gets the same answer). */
static inline int gpu_tool_any_bad(int bad)
{
    int any_bad = 0;
    CHECK_MPI(MPI_Allreduce(&bad, &any_bad, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    return any_bad;
}

/* Communicator down, MPI down; the exit status of the tool. */
static inline int gpu_tool_finish(int any_bad)
{
    nccl_shutdown();
    CHECK_MPI(MPI_Finalize());
    return any_bad ? 1 : 0;
}

#endif
