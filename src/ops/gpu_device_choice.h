/* Which of its visible GPUs a rank takes (cuda/cuda_context.cu), as plain C so that the rule
 * is tested without a GPU (tests/unit/test_gpu_device_choice.c).
 *
 * A rank cannot take "its local rank modulo the device count": launchers differ in what they
 * tell it (mpiexec under Slurm leaves SLURM_LOCALID = 0 in every rank; --gpu-bind=closest or
 * --gpus-per-task = 2 give each rank a subset of the node's GPUs, different subsets to
 * different ranks). What every rank can know is the set of devices it sees (their PCI bus ids),
 * and, through MPI, the sets of the other ranks on its node. Every rank then computes the same
 * assignment from the same sets: a maximum matching of ranks to devices (in order of fewest
 * visible devices first, then node rank, each rank takes the first free device it sees, else
 * frees one along an augmenting path), then ranks left over take their least used device. So
 * one GPU per task (Slurm binding) gives index 0 everywhere, all GPUs visible (mpirun) gives
 * the node rank, tasks 0, 2, 4, 6 seeing GPUs 0-3 take 0, 1, 2, 3, and overlapping sets
 * ({A} and {A, B}; {A, C}, {A, B}, {A, B}) still get one device each. Ranks share a device
 * only when no assignment gives each its own. */
#ifndef ALICE_GPU_DEVICE_CHOICE_H
#define ALICE_GPU_DEVICE_CHOICE_H

#include <stddef.h>

typedef struct {
    int index;            /* the device this rank takes, among its visible ones */
    int sharing;          /* node ranks on that device, this one included (> 1: shared) */
    int first_on_device;  /* 1 when no lower node rank took the same device */
} GpuDeviceChoice;

/* The visible-set keys of a node: n records of `stride` bytes, the key of node rank r at
 * keys + r * stride: its devices' ids (PCI bus ids), comma-separated, NUL-terminated or filling
 * the record (whole ids only: a key cut short names fewer devices, those are the candidates).
 * `me` is this rank's node rank, `count` its number of visible devices (> 0; its key names at
 * most that many). */
GpuDeviceChoice gpu_device_choice(const char *keys, size_t stride, int n, int me, int count);

#endif
