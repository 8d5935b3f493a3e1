#include "train/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "ops/clip_math.h"
#include "ops/decay_mask.h"

double peak_lr(const Config *cfg, long global_batch)
{
    if (cfg->lr_reference_batch <= 0) return cfg->lr;
    return (double)cfg->lr * (double)global_batch / (double)cfg->lr_reference_batch;
}

float schedule_lr(const Config *cfg, long step, long global_batch)
{
    const float peak = (float)peak_lr(cfg, global_batch);   /* cfg->lr itself when not scaled */
    if (step < cfg->warmup) return peak * (float)(step + 1) / (float)cfg->warmup;
    long span = cfg->steps - cfg->warmup;
    double t = span > 0 ? (double)(step - cfg->warmup) / (double)span : 1.0;
    if (t > 1.0) t = 1.0;
    return (float)(cfg->min_lr + (peak - cfg->min_lr) * 0.5 * (1.0 + cos(M_PI * t)));
}

float schedule_weight_decay(const Config *cfg, long step)
{
    if (strcmp(cfg->weight_decay_schedule, "cosine") != 0) return cfg->weight_decay;
    const double t = (double)step / (double)cfg->steps, end = cfg->weight_decay_end;
    return (float)(end + (cfg->weight_decay - end) * 0.5 * (1.0 + cos(M_PI * t)));
}

double grad_global_norm(const ParamSet *ps)
{
    /* Padding between tensors is never written, so it stays zero and adds nothing. */
    return sqrt(ps->be->sum_squares(ps->grad, ps->total));
}

float clip_grad_scale(double norm, double max_norm) { return clip_factor(norm, max_norm); }

/* The tensors [first, end) of a run: from the first's offset to the next run's (or the end of
 * the buffer), padding included, which starts on a decay-mask word (PARAM_ALIGN_FLOATS). */
static size_t run_begin(const ParamSet *ps, int first) { return ps->info[first].offset; }
static size_t run_end(const ParamSet *ps, int end)
{
    return end < ps->count ? ps->info[end].offset : ps->total;
}

/* Tensor i's AdamW t for the update about to run (torch counts steps per tensor). */
static long tensor_adam_t(const ParamSet *ps, int i)
{
    return ps->adam_steps + 1 - ps->held_updates[i];
}

/* The end of the run of tensors from `first` that share their held flag, AdamW t and lr scale. */
static int run_of_tensors(const ParamSet *ps, int first)
{
    int end = first + 1;
    while (end < ps->count && ps->held[end] == ps->held[first] &&
           tensor_adam_t(ps, end) == tensor_adam_t(ps, first) &&
           ps->lr_scale[end] == ps->lr_scale[first])
        end++;
    return end;
}

/* AdamW over the flat buffer, one backend call per run of tensors that share their held flag,
 * AdamW t and lr scale: one call over the whole set unless freeze_last_layer holds (or held) a
 * tensor or layer-wise lr decay gives the encoder's layers their own rates (a call per layer).
 * The decay mask carries the per-tensor flags, and the zero padding between tensors stays zero
 * (ops/adamw_math.h). A held run takes no update; the EMA still covers it (its target keeps
 * following the unchanged online values, as in DINO). */
static void adamw_call(ParamSet *ps, const Config *cfg, float lr, long step1, float grad_scale,
                       const EmaUpdate *ema)
{
    /* A trainable set always has its mask (params_allocate); without one every element would
     * decay. */
    ALICE_ASSERT(ps->decay_mask || ps->total == 0, "AdamW on a ParamSet without a decay mask "
                 "(allocated untrainable?)");
    /* The fused EMA covers exactly the elements ema_step covers: all of the online set. */
    ALICE_ASSERT(!ema || (ema->target->total == ps->total && ema->target->be == ps->be),
                 "optimizer_update: the EMA target (%zu floats) does not share the layout and "
                 "backend of the online set (%zu floats)", ema ? ema->target->total : 0,
                 ps->total);
    AdamwHyper h = {.lr = lr, .beta1 = cfg->beta1, .beta2 = cfg->beta2, .eps = cfg->adam_eps,
                    .weight_decay = schedule_weight_decay(cfg, step1 - 1),
                    .grad_scale = grad_scale};
    for (int first = 0, end; first < ps->count; first = end) {
        end = run_of_tensors(ps, first);
        const size_t o = run_begin(ps, first), n = run_end(ps, end) - o;
        ALICE_ASSERT(o % DECAY_MASK_WORD_BITS == 0, "AdamW run at float %zu: not on a decay-mask "
                     "word (PARAM_ALIGN_FLOATS)", o);
        float *ema_target = ema ? ema->target->data + o : NULL;
        if (ps->held[first]) {
            if (ema) ps->be->ema_update(ema_target, ps->data + o, n, ema->momentum);
            continue;
        }
        h.step = tensor_adam_t(ps, first);
        /* torch: the group's lr = lr x lr_scale, decoupled decay p *= 1 - (that lr) wd too */
        h.lr = lr * ps->lr_scale[first];
        ps->be->adamw(ps->data + o, ps->grad + o, ps->m + o, ps->v + o,
                      ps->decay_mask + o / DECAY_MASK_WORD_BITS, n, h, ema_target,
                      ema ? ema->momentum : 0.0f);
    }
    for (int i = 0; i < ps->count; i++) ps->held_updates[i] += ps->held[i];
    ps->adam_steps++;
}

void clip_grads_per_tensor(ParamSet *ps, double max_norm)
{
    if (max_norm <= 0 || ps->count == 0) return;
    if (!ps->clip_pieces.piece_start) {   /* first use: the tensors as segments, padding included */
        size_t *start = xmalloc((size_t)(ps->count + 1) * sizeof *start);
        for (int i = 0; i < ps->count; i++) start[i] = ps->info[i].offset;
        start[ps->count] = ps->total;
        segment_pieces_build(&ps->clip_pieces, ps->be, start, ps->count);
        free(start);
    }
    ps->be->clip_segments(ps->grad, &ps->clip_pieces, max_norm);
}

void optimizer_update(ParamSet *ps, const Config *cfg, float lr, long step1, double grad_norm,
                      const EmaUpdate *ema)
{
    if (!strcmp(cfg->clip_mode, "per_tensor")) {
        clip_grads_per_tensor(ps, cfg->clip);
        adamw_call(ps, cfg, lr, step1, 1.0f, ema);
        return;
    }
    adamw_call(ps, cfg, lr, step1, clip_grad_scale(grad_norm, cfg->clip), ema);
}

void adamw_step(ParamSet *ps, const Config *cfg, float lr, long step1)
{
    adamw_call(ps, cfg, lr, step1, 1.0f, NULL);
}

void ema_step(ParamSet *target, const ParamSet *online, float momentum)
{
    target->be->ema_update(target->data, online->data, online->total, momentum);
}
