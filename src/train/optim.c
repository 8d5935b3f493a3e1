#include "train/optim.h"

#include <math.h>
#include <string.h>

#include "core/check.h"

float schedule_lr(const Config *cfg, long step)
{
    if (step < cfg->warmup) return cfg->lr * (float)(step + 1) / (float)cfg->warmup;
    long span = cfg->steps - cfg->warmup;
    double t = span > 0 ? (double)(step - cfg->warmup) / (double)span : 1.0;
    if (t > 1.0) t = 1.0;
    return (float)(cfg->min_lr + (cfg->lr - cfg->min_lr) * 0.5 * (1.0 + cos(M_PI * t)));
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

float clip_grad_scale(double norm, double max_norm)
{
    if (max_norm <= 0) return 1.0f;
    /* torch clamps the coefficient, not the norm: within 1e-6 below the threshold it scales */
    const double scale = max_norm / (norm + 1e-6);
    return scale < 1.0 ? (float)scale : 1.0f;
}

/* One adamw call over the whole flat buffer: the decay mask carries the per-tensor flags, and
 * the zero padding between tensors stays zero (ops/adamw_math.h). */
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
    const AdamwHyper h = {.lr = lr, .beta1 = cfg->beta1, .beta2 = cfg->beta2,
                          .eps = cfg->adam_eps,
                          .weight_decay = schedule_weight_decay(cfg, step1 - 1),
                          .step = ps->adam_steps + 1, .grad_scale = grad_scale};
    ps->adam_steps++;
    ps->be->adamw(ps->data, ps->grad, ps->m, ps->v, ps->decay_mask, ps->total, h,
                  ema ? ema->target->data : NULL, ema ? ema->momentum : 0.0f);
}

void clip_grads_per_tensor(ParamSet *ps, double max_norm)
{
    if (max_norm <= 0) return;
    for (int i = 0; i < ps->count; i++) {
        const ParamInfo *t = &ps->info[i];
        float *g = ps->grad + t->offset;
        const float factor = clip_grad_scale(sqrt(ps->be->sum_squares(g, t->numel)), max_norm);
        if (factor < 1.0f) ps->be->scale(g, factor, t->numel);
    }
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
