/* Named tensors carved out of flat buffers.
 *
 * A ParamSet is a registry of tensors (PyTorch/MONAI-style name, shape, weight-decay flag,
 * initialiser) laid out back to back in one flat buffer each for values, gradients and the
 * two AdamW moments, so all-reduce, clipping, AdamW and EMA are one pass over one buffer and
 * checkpoints store one dataset per name. Model code holds tensor INDICES returned by
 * params_add (never positional magic numbers) and asks for pointers after allocation. */
#ifndef ALICE_PARAMS_H
#define ALICE_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "ops/backend.h"
#include "ops/segment_pieces.h"

#define PARAM_NAME_MAX 96
#define PARAM_MAX_DIMS 5
/* Every tensor starts on a multiple of this many floats (128 bytes): aligned for vector loads
 * on both backends, and on a word of the decay bitmask (ops/decay_mask.h), so AdamW can run
 * over any run of whole tensors with the mask read from that run's first word. */
#define PARAM_ALIGN_FLOATS 32

typedef enum {
    INIT_ZEROS,
    INIT_ONES,
    INIT_XAVIER_UNIFORM,   /* on the [shape[0], prod(shape[1:])] matrix */
    INIT_NORMAL_002,       /* normal(0, 0.02); also timm's trunc_normal_(std=.02), whose bounds
                            * of -2 and 2 lie 100 std out */
    INIT_TORCH_LINEAR,     /* uniform(+-1/sqrt(fan_in)) on the [shape[0], prod(shape[1:])]
                            * matrix: torch nn.Linear's default (kaiming_uniform_, a = sqrt 5) */
} ParamInit;

typedef struct {
    char name[PARAM_NAME_MAX];
    int ndim;
    int shape[PARAM_MAX_DIMS];
    size_t numel;
    size_t offset;          /* in floats, into every flat buffer */
    int decay;              /* AdamW weight decay applies */
    ParamInit init;
} ParamInfo;

/* The tensors registered by one module: indices [first, end). */
typedef struct {
    int first, end;
} ParamRange;

/* Told that the gradients of tensors [first, end) are final for this step (train/grad_sync.h). */
typedef void (*GradReadyFn)(void *ctx, int first, int end);

typedef struct {
    ParamInfo *info;
    int count, cap;
    size_t total;           /* floats, each tensor's start aligned (params_numel: without) */
    const AliceBackend *be;
    float *data, *grad, *m, *v;   /* backend memory; grad/m/v NULL when not trainable */
    /* AdamW updates applied to m and v: the t of their bias corrections. It travels with the
     * moments (checkpoints store it) and is not the step count, which a skipped step
     * (on_nonfinite = skip) advances without touching m or v. */
    long adam_steps;
    /* Host memory, trainable sets only, one entry per tensor. held: the tensor sits out the
     * next optimizer_update (no AdamW update, no weight decay, moments untouched: a gradient of
     * None in torch; freeze_last_layer sets it). held_updates: the updates of the set it sat
     * out, so its own AdamW t is adam_steps - held_updates (torch counts steps per tensor). */
    int *held;
    long *held_updates;
    /* Host memory, trainable sets only, one entry per tensor: the factor of the step's learning
     * rate this tensor's AdamW update takes (1 unless a model sets it: layer-wise lr decay). */
    float *lr_scale;
    /* clip_mode = per_tensor: the tensors as segments of the gradient buffer (backend memory,
     * built at the first clip_grads_per_tensor) */
    SegmentPieces clip_pieces;
    /* Backend memory, trainable sets only: bit i set <=> element i of the flat buffers takes
     * weight decay (info[].decay; padding clear), so AdamW is one pass (ops/decay_mask.h). */
    uint32_t *decay_mask;
    /* Overlap of the gradient all-reduce with backward: the training loop attaches grad_ready;
     * the model sets grads_final during the backward pass that makes the LAST contribution of the
     * step to every gradient (a tensor may get several when a model runs several backward passes per step), and backward
     * code reports each module's range after its backward through params_grads_ready. Unset,
     * nothing is reported; a missed report costs overlap, never correctness. */
    GradReadyFn grad_ready;
    void *grad_ready_ctx;
    int grads_final;
} ParamSet;

void params_init_registry(ParamSet *ps);
/* The parameters themselves: the tensors' elements, without the alignment padding of total. */
size_t params_numel(const ParamSet *ps);
/* Registers a tensor; returns its index. Duplicate names are a programming error. */
int params_add(ParamSet *ps, const char *name, int ndim, const int *shape, int decay, ParamInit init);
/* Convenience for 1-D and 2-D tensors. */
int params_add1(ParamSet *ps, const char *name, int n, int decay, ParamInit init);
int params_add2(ParamSet *ps, const char *name, int rows, int cols, int decay, ParamInit init);
/* Allocates the flat buffers (with gradient, moments and the decay mask when trainable). */
void params_allocate(ParamSet *ps, const AliceBackend *be, int trainable);
/* Initialises every tensor from the counter RNG (seed, 0, tensor index, RNG_PARAM_INIT). */
void params_initialize(ParamSet *ps, uint64_t seed);
void params_free(ParamSet *ps);
/* Index of a tensor by name, or -1. */
int params_find(const ParamSet *ps, const char *name);

static inline float *param(const ParamSet *ps, int idx) { return ps->data + ps->info[idx].offset; }
static inline float *param_grad(const ParamSet *ps, int idx) { return ps->grad + ps->info[idx].offset; }

/* A range opened before a module registers its tensors and closed after. */
static inline ParamRange params_range_open(const ParamSet *ps) { return (ParamRange){ps->count, ps->count}; }
static inline void params_range_close(const ParamSet *ps, ParamRange *r) { r->end = ps->count; }
/* The backward of the module owning r is done: its gradients are final when ps->grads_final. */
static inline void params_grads_ready(const ParamSet *ps, ParamRange r)
{
    if (ps->grad_ready && ps->grads_final && r.end > r.first) ps->grad_ready(ps->grad_ready_ctx, r.first, r.end);
}



/* A second ParamSet with the same tensors at the same indices and offsets (the EMA target). */
void params_clone_layout(ParamSet *dst, const ParamSet *src);
#endif
