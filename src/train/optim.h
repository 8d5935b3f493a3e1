/* Optimisation over a ParamSet: learning-rate schedule (linear warm-up + cosine), global-norm
 * gradient clipping, AdamW with per-tensor decay flags, EMA of a target ParamSet; clipping,
 * AdamW and the EMA run as one pass over the flat buffers (optimizer_update). */
#ifndef ALICE_OPTIM_H
#define ALICE_OPTIM_H

#include "core/config.h"
#include "nn/params.h"

/* The peak learning rate of a run whose steps take global_batch samples over all ranks: lr,
 * or with lr_reference_batch = N > 0 the linear scaling rule's lr x global_batch / N. */
double peak_lr(const Config *cfg, long global_batch);
/* Learning rate of 0-based step s: peak*(s+1)/warmup during warm-up, then cosine from the peak
 * to min_lr (peak_lr of global_batch: batch x ranks). */
float schedule_lr(const Config *cfg, long step, long global_batch);
/* AdamW's weight decay at 0-based step s: weight_decay (weight_decay_schedule = constant), or
 * DINO's cosine_scheduler without warm-up, end + (weight_decay - end) (1 + cos(pi s / steps)) / 2
 * with end = weight_decay_end (weight_decay at step 0, approaching end at the last step). */
float schedule_weight_decay(const Config *cfg, long step);
/* sqrt(sum of squared gradients). */
double grad_global_norm(const ParamSet *ps);
/* The factor global-norm clipping multiplies every gradient by (torch.nn.utils.clip_grad_norm_):
 * max_norm / (norm + 1e-6) rounded to float where that is below 1 and max_norm > 0; else 1 (torch
 * clamps the coefficient at 1, so a norm within 1e-6 below the threshold is scaled too);
 * ops/clip_math.h's clip_factor, which the backends' per-tensor clipping uses too. */
float clip_grad_scale(double norm, double max_norm);

/* An EMA target network updated in the optimiser's pass: target = momentum target
 * + (1 - momentum) online, from the online parameters AdamW has just written. */
typedef struct {
    ParamSet *target;  /* the layout of the online set (params_clone_layout) */
    float momentum;
} EmaUpdate;

/* clip_mode = per_tensor: each tensor's gradient whose norm n exceeds max_norm multiplied, in
 * place, by clip_grad_scale(n, max_norm) (DINO's utils.clip_gradients): the backend op
 * clip_segments over the tensors as segments (ps->clip_pieces, built at the first call), two
 * launches on the GPU and no host synchronisation. */
void clip_grads_per_tensor(ParamSet *ps, double max_norm);

/* One optimiser update of ps, one backend call over the whole flat set: AdamW at learning rate
 * lr (bias corrections for ps->adam_steps + 1 updates, which it counts; weight decay
 * schedule_weight_decay(cfg, step1 - 1), step1 being the 1-based step of the schedules,
 * where ps->decay_mask says so) on the
 * gradients clipped to global norm cfg->clip, grad_norm being their norm (the factor
 * clip_grad_scale is applied inside AdamW's pass, so ps->grad itself stays unscaled; with
 * clip_mode = per_tensor clip_grads_per_tensor scales ps->grad first instead); and, ema
 * non-NULL, the EMA of ema->target over all of ps in the same pass. The bits are those of
 * scaling the gradients, then adamw_step, then ema_step. */
void optimizer_update(ParamSet *ps, const Config *cfg, float lr, long step1, double grad_norm,
                      const EmaUpdate *ema);
/* AdamW without clipping or EMA (optimizer_update with neither): benchmarks and tests. */
void adamw_step(ParamSet *ps, const Config *cfg, float lr, long step1);
/* target = m target + (1 - m) online alone, one pass over the flat buffers. */
void ema_step(ParamSet *target, const ParamSet *online, float momentum);

#endif
