/* Marks inline functions that both compilers build: __host__ __device__ under nvcc, nothing
 * under gcc. Headers of shared math (Philox, the per-voxel crop formula) use it so the CPU
 * tests run the exact code the CUDA kernels run. */
#ifndef ALICE_HOSTDEV_H
#define ALICE_HOSTDEV_H

#ifdef __CUDACC__
#define ALICE_HOSTDEV __host__ __device__
#else
#define ALICE_HOSTDEV
#endif

#endif
