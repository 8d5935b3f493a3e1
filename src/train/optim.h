/* Optimisation over a ParamSet: learning-rate schedule (linear warm-up + cosine), global-norm
 * gradient clipping, AdamW with per-tensor decay flags, EMA of a target ParamSet. */
#ifndef ALICE_OPTIM_H
#define ALICE_OPTIM_H

#include "core/config.h"
#include "nn/params.h"

/* Learning rate of 0-based step s: lr*(s+1)/warmup during warm-up, then cosine to min_lr. */
float schedule_lr(const Config *cfg, long step);
/* sqrt(sum of squared gradients). */
double grad_global_norm(const ParamSet *ps);
/* Scales gradients so that their global norm is at most max_norm (no-op when <= 0). */
void clip_grad_norm(ParamSet *ps, double norm, double max_norm);
/* One AdamW step (1-based step for bias correction): one backend call over the whole set,
 * weight decay where ps->decay_mask says so. */
void adamw_step(ParamSet *ps, const Config *cfg, float lr, long step1);
/* target = m target + (1 - m) online, one pass over the flat buffers. */
void ema_step(ParamSet *target, const ParamSet *online, float momentum);

#endif
