/* Which of its visible GPUs a rank takes (cuda/cuda_context.cu), as plain C so that the rule
 * is tested without a GPU (tests/unit/test_gpu_device_choice.c).
 *
 * A rank cannot take "its local rank modulo the device count": launchers differ in what they
 * tell it (mpiexec under Slurm leaves SLURM_LOCALID = 0 in every rank; --gpu-bind=closest or
 * --gpus-per-task = 2 give each rank a subset of the node's GPUs, different subsets to
 * different ranks). What every rank can know is the set of devices it sees (their PCI bus ids),
 * and, through MPI, the sets of the other ranks on its node. The ranks then assign devices
 * greedily, every rank computing the same assignment from the same sets: in order of fewest
 * visible devices first (the most constrained), then node rank, each takes its least used
 * visible device (ties: the first it sees). So one GPU per task (Slurm binding) gives index 0
 * everywhere, all GPUs visible (mpirun) gives the node rank, tasks 0, 2, 4, 6 seeing GPUs 0-3
 * take 0, 1, 2, 3, and overlapping sets ({A} and {A, B}) still spread (A and B). Ranks share
 * a device only when there are more ranks than devices they can reach. */
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
