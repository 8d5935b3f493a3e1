/* Activation arena: one backend allocation per (model, batch shape), planned before the loop.
 *
 * Model code lays out its activations with arena_floats/arena_ints twice: once in planning
 * mode (nothing is allocated; the arena only adds up sizes, the returned pointers are never
 * dereferenced) and once after arena_commit, which allocates exactly the planned size. The
 * training loop then runs without a single allocation. */
#ifndef ALICE_ARENA_H
#define ALICE_ARENA_H

#include <stddef.h>

#include "ops/backend.h"

typedef struct {
    const AliceBackend *be;
    char *base;
    size_t cap, used;
    int planning;
    DType act_type;  /* of the activations that may be stored in low precision (nn/act.h) */
    /* with bf16 act_type: transformer branches (attention's projection, fc2) stored in bf16 and
     * added to the residual stream by the LayerNorm after them (bf16_branch_out) */
    int bf16_branches;
} Arena;

/* act_type: the element type of activations that may be low precision (nn/act.h). */
void arena_plan(Arena *a, const AliceBackend *be, DType act_type);
/* Allocates the planned size and rewinds, ready for the real layout pass. */
void arena_commit(Arena *a);
float *arena_floats(Arena *a, size_t n);
int *arena_ints(Arena *a, size_t n);
void arena_free(Arena *a);

#endif
