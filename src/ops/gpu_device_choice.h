/* Which of its visible GPUs a rank takes (cuda/cuda_context.cu), as plain C so that the rule
 * is tested without a GPU (tests/unit/test_gpu_device_choice.c).
 *
 * A rank cannot take "its local rank modulo the device count": launchers differ in what they
 * tell it (mpiexec under Slurm leaves SLURM_LOCALID = 0 in every rank; --gpu-bind=closest or
 * --gpus-per-task = 2 give each rank a subset of the node's GPUs, different subsets to
 * different ranks). What every rank can know is the set of devices it sees (their PCI bus ids),
 * and, through MPI, the sets of the other ranks on its node. Ranks that see the same set share
 * those devices: each takes the next one in node-rank order. So one GPU per task (Slurm
 * binding) gives index 0 everywhere, all GPUs visible (mpirun) gives the node rank, and
 * tasks 0, 2, 4, 6 seeing GPUs 0-3 take 0, 1, 2, 3. */
#ifndef ALICE_GPU_DEVICE_CHOICE_H
#define ALICE_GPU_DEVICE_CHOICE_H

#include <stddef.h>

typedef struct {
    int index;  /* the device this rank takes, among its visible ones */
    int order;  /* this rank's position among the node ranks with its key (0: the first) */
    int peers;  /* node ranks with this rank's key, itself included: more than the number of
                 * visible devices means ranks must share a GPU */
} GpuDeviceChoice;

/* The visible-set keys of a node: n records of `stride` bytes, the key of node rank r at
 * keys + r * stride (compared as whole records: zero-pad them). `me` is this rank's node rank,
 * `count` its number of visible devices (> 0). */
GpuDeviceChoice gpu_device_choice(const char *keys, size_t stride, int n, int me, int count);

#endif
