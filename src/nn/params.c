#include "nn/params.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "core/rng.h"
#include "ops/decay_mask.h"

_Static_assert(PARAM_ALIGN_FLOATS % DECAY_MASK_WORD_BITS == 0,
               "a tensor must start on a decay-mask word (optim.c runs AdamW per run of tensors)");

void params_init_registry(ParamSet *ps) { memset(ps, 0, sizeof *ps); }

size_t params_numel(const ParamSet *ps)
{
    size_t n = 0;
    for (int i = 0; i < ps->count; i++) n += ps->info[i].numel;
    return n;
}

int params_find(const ParamSet *ps, const char *name)
{
    for (int i = 0; i < ps->count; i++)
        if (strcmp(ps->info[i].name, name) == 0) return i;
    return -1;
}

int params_add(ParamSet *ps, const char *name, int ndim, const int *shape, int decay, ParamInit init)
{
    ALICE_ASSERT(!ps->data, "params_add(%s) after allocation", name);
    ALICE_ASSERT(ndim >= 1 && ndim <= PARAM_MAX_DIMS, "tensor %s: bad rank %d", name, ndim);
    ALICE_ASSERT(strlen(name) < PARAM_NAME_MAX, "tensor name too long: %s", name);
    ALICE_ASSERT(params_find(ps, name) < 0, "tensor %s registered twice", name);
    if (ps->count == ps->cap) {
        ps->cap = ps->cap ? 2 * ps->cap : 64;
        ps->info = xrealloc(ps->info, (size_t)ps->cap * sizeof *ps->info);
    }
    ParamInfo *t = &ps->info[ps->count];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->numel = 1;
    for (int d = 0; d < ndim; d++) {
        ALICE_ASSERT(shape[d] > 0, "tensor %s: non-positive dimension", name);
        t->shape[d] = shape[d];
        t->numel *= (size_t)shape[d];
    }
    t->offset = ps->total;
    ps->total += (t->numel + PARAM_ALIGN_FLOATS - 1) & ~(size_t)(PARAM_ALIGN_FLOATS - 1);
    t->decay = decay;
    t->init = init;
    return ps->count++;
}

int params_add1(ParamSet *ps, const char *name, int n, int decay, ParamInit init)
{
    return params_add(ps, name, 1, &n, decay, init);
}

int params_add2(ParamSet *ps, const char *name, int rows, int cols, int decay, ParamInit init)
{
    int shape[2] = {rows, cols};
    return params_add(ps, name, 2, shape, decay, init);
}

/* The decay bitmask of the registered tensors, uploaded once: AdamW reads it every step. */
static uint32_t *decay_mask_upload(const ParamSet *ps, const AliceBackend *be)
{
    const size_t words = decay_mask_words(ps->total);
    if (words == 0) return NULL;
    uint32_t *host = xcalloc(words, sizeof(uint32_t));
    for (int i = 0; i < ps->count; i++)
        if (ps->info[i].decay) decay_mask_set_range(host, ps->info[i].offset, ps->info[i].numel);
    uint32_t *mask = be->alloc(words * sizeof(uint32_t));
    be->upload(mask, host, words * sizeof(uint32_t));
    free(host);
    return mask;
}

void params_allocate(ParamSet *ps, const AliceBackend *be, int trainable)
{
    ps->be = be;
    size_t bytes = ps->total * sizeof(float);
    ps->data = be->alloc(bytes);
    be->weights_hint(ps->data, ps->total);
    be->fill(ps->data, 0.0f, ps->total);
    if (trainable) {
        ps->grad = be->alloc(bytes);
        ps->m = be->alloc(bytes);
        ps->v = be->alloc(bytes);
        be->fill(ps->grad, 0.0f, ps->total);
        be->fill(ps->m, 0.0f, ps->total);
        be->fill(ps->v, 0.0f, ps->total);
        ps->decay_mask = decay_mask_upload(ps, be);
        ps->held = xcalloc((size_t)(ps->count ? ps->count : 1), sizeof *ps->held);
        ps->held_updates = xcalloc((size_t)(ps->count ? ps->count : 1), sizeof *ps->held_updates);
        ps->lr_scale = xmalloc((size_t)(ps->count ? ps->count : 1) * sizeof *ps->lr_scale);
        for (int i = 0; i < ps->count; i++) ps->lr_scale[i] = 1.0f;
    }
}

void params_initialize(ParamSet *ps, uint64_t seed)
{
    float *host = xcalloc(ps->total, sizeof(float));
    for (int i = 0; i < ps->count; i++) {
        const ParamInfo *t = &ps->info[i];
        float *p = host + t->offset;
        RngStream rng;
        rng_init(&rng, seed, 0, (uint32_t)i, RNG_PARAM_INIT);
        switch (t->init) {
        case INIT_ZEROS: break;
        case INIT_ONES:
            for (size_t k = 0; k < t->numel; k++) p[k] = 1.0f;
            break;
        case INIT_XAVIER_UNIFORM: {
            double fan_out = t->shape[0], fan_in = (double)t->numel / t->shape[0];
            float a = (float)sqrt(6.0 / (fan_in + fan_out));
            for (size_t k = 0; k < t->numel; k++) p[k] = a * (2.0f * rng_uniform(&rng) - 1.0f);
            break;
        }
        case INIT_NORMAL_002:
            for (size_t k = 0; k < t->numel; k++) p[k] = 0.02f * rng_normal(&rng);
            break;
        case INIT_TORCH_LINEAR: {
            const float a = (float)(1.0 / sqrt((double)t->numel / t->shape[0]));
            for (size_t k = 0; k < t->numel; k++) p[k] = a * (2.0f * rng_uniform(&rng) - 1.0f);
            break;
        }
        }
    }
    ps->be->upload(ps->data, host, ps->total * sizeof(float));
    free(host);
}

void params_free(ParamSet *ps)
{
    if (ps->be) {
        ps->be->weights_forget(ps->data);
        ps->be->release(ps->data);
        if (ps->grad) {
            ps->be->release(ps->grad);
            ps->be->release(ps->m);
            ps->be->release(ps->v);
        }
        if (ps->decay_mask) ps->be->release(ps->decay_mask);
        segment_pieces_free(&ps->clip_pieces, ps->be);
    }
    free(ps->held);
    free(ps->held_updates);
    free(ps->lr_scale);
    free(ps->info);
    memset(ps, 0, sizeof *ps);
}

void params_clone_layout(ParamSet *dst, const ParamSet *src)
{
    memset(dst, 0, sizeof *dst);
    dst->count = dst->cap = src->count;
    dst->total = src->total;
    dst->info = xmalloc((size_t)src->count * sizeof *src->info);
    memcpy(dst->info, src->info, (size_t)src->count * sizeof *src->info);
}
