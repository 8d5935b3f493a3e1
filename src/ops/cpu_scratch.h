/* Grow-only scratch buffers of the CPU backend, one set per thread: large temporaries of the
 * convolutions (padded copies, im2col slabs, the transposed convolution's kernel blocks) kept
 * between calls, since a fresh allocation of tens of MB is an mmap that page-faults every call
 * (measured 2x on a 56.6 MB transposed-conv block). Never freed: they live as long as the
 * thread, at the size of the largest call. */
#ifndef ALICE_CPU_SCRATCH_H
#define ALICE_CPU_SCRATCH_H

#include <stddef.h>

typedef enum {
    CPU_SCRATCH_PADDED_IN,    /* direct convolution: z-padded input copy */
    CPU_SCRATCH_PADDED_DY,    /* direct convolution: z-padded output gradient */
    CPU_SCRATCH_WEIGHTS,      /* direct convolution: packed weights */
    CPU_SCRATCH_IM2COL,       /* im2col forward / weight-gradient slab */
    CPU_SCRATCH_IM2COL_GRAD,  /* im2col input-gradient slab */
    CPU_SCRATCH_KERNEL_BLOCKS,/* transposed convolution: W^T x / the shuffled dy */
    CPU_SCRATCH_SLOTS
} CpuScratchSlot;

/* At least n floats for `slot` on the calling thread; contents undefined. */
float *cpu_scratch(CpuScratchSlot slot, size_t n);

#endif
