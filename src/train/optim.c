#include "train/optim.h"

#include <math.h>

#include "core/check.h"

float schedule_lr(const Config *cfg, long step)
{
    if (step < cfg->warmup) return cfg->lr * (float)(step + 1) / (float)cfg->warmup;
    long span = cfg->steps - cfg->warmup;
    double t = span > 0 ? (double)(step - cfg->warmup) / (double)span : 1.0;
    if (t > 1.0) t = 1.0;
    return (float)(cfg->min_lr + (cfg->lr - cfg->min_lr) * 0.5 * (1.0 + cos(M_PI * t)));
}

double grad_global_norm(const ParamSet *ps)
{
    /* Padding between tensors is never written, so it stays zero and adds nothing. */
    return sqrt(ps->be->sum_squares(ps->grad, ps->total));
}

void clip_grad_norm(ParamSet *ps, double norm, double max_norm)
{
    if (max_norm <= 0 || norm <= max_norm) return;
    ps->be->scale(ps->grad, (float)(max_norm / (norm + 1e-6)), ps->total);
}

void adamw_step(ParamSet *ps, const Config *cfg, float lr, long step1)
{
    /* One call over the whole flat buffer: the decay mask carries the per-tensor flags, and the
     * zero padding between tensors stays zero (ops/adamw_math.h). A trainable set always has
     * its mask (params_allocate); without one every element would decay. */
    ALICE_ASSERT(ps->decay_mask || ps->total == 0, "adamw_step on a ParamSet without a decay mask "
                 "(allocated untrainable?)");
    ps->be->adamw(ps->data, ps->grad, ps->m, ps->v, ps->decay_mask, ps->total, lr, cfg->beta1,
                  cfg->beta2, cfg->adam_eps, cfg->weight_decay, step1);
}

void ema_step(ParamSet *target, const ParamSet *online, float momentum)
{
    target->be->ema_update(target->data, online->data, online->total, momentum);
}
