/* Which device buffers hold weights, and whether the backend's low-precision copy of each is
 * current. Host-only bookkeeping (no device calls), shared by the CUDA backend's bf16 weight
 * copies (cuda/cuda_weight_copy.cu) and its CPU unit test.
 *
 * Why: with precision = bf16 every GEMM rounds its fp32 operands to bf16 first. Weights change
 * only at the optimiser and EMA steps but are read by many GEMMs in between (forward of each
 * view, backward's input gradient, the teacher), so rounding them once per change instead of
 * once per GEMM saves a pass over all weights per GEMM. The map answers two questions: "does
 * this GEMM operand lie inside a registered weight buffer?" (use the copy at the same offset)
 * and "does this write touch one?" (the copy is stale until made again). */
#ifndef ALICE_WEIGHT_COPY_MAP_H
#define ALICE_WEIGHT_COPY_MAP_H

#include <stddef.h>
#include <stdint.h>

enum { WEIGHT_COPY_MAX_BUFFERS = 32 };  /* parameter sets per process: a handful per model */

typedef struct {
    uintptr_t base;   /* first byte of the fp32 buffer */
    size_t floats;    /* its length in fp32 elements */
    void *copy;       /* the backend's low-precision copy (owned by the backend), or NULL */
    int current;      /* the copy equals the rounded buffer */
} WeightCopy;

typedef struct {
    WeightCopy entry[WEIGHT_COPY_MAX_BUFFERS];
    int count;
} WeightCopyMap;

/* Registers [base, base + floats); registering the same base again updates its length and
 * marks the copy stale. Overlapping another registered buffer is a programming error. */
void weight_copy_map_add(WeightCopyMap *m, const float *base, size_t floats);
/* Unregisters the buffer starting at base; returns its entry (the caller frees entry.copy),
 * or an entry with base 0 when base was not registered. */
WeightCopy weight_copy_map_remove(WeightCopyMap *m, const float *base);
/* The entry whose buffer contains every element of [p, p + span_floats), or NULL. */
WeightCopy *weight_copy_map_find(WeightCopyMap *m, const float *p, size_t span_floats);
/* A write of bytes at dst: every copy whose buffer overlaps it becomes stale. */
void weight_copy_map_written(WeightCopyMap *m, const void *dst, size_t bytes);

#endif
