/* AdamW over the paper pre-training parameters (the online student of
 * jobs/pretrain_vitb_paper.cfg: ViT-B/16 encoder, decoder, projection head, CASA, registered as
 * pretrain_model_init registers them), on each backend, two comparisons in the same run:
 *  1. the AdamW pass alone:
 *     - one call over the whole ParamSet with its decay mask: what adamw_step does now;
 *     - one call per tensor with that tensor's weight decay: the former adamw_step, the
 *       reference;
 *  2. the whole optimiser update of an alice pre-training step, with clipping active (factor
 *     0.75) and the EMA target (a clone of the student's layout, as pretrain_model_init makes
 *     it), on the CUDA backend with both sets' bf16 weight copies current (as after a bf16
 *     step's GEMMs):
 *     - the former sequence, the reference: scale (clipping: gradients read and written),
 *       adamw, ema_update: 3 calls;
 *     - one adamw call with the clipping factor and the EMA target: optimizer_update now;
 *  3. per-tensor clipping (clip_mode = per_tensor), every tensor scaled on every call (the
 *     gradients refilled with 1 before each mode; call k clips at 1 / 2^k, below every tensor's
 *     norm after call k - 1, so each call about halves it: a factor that rounds to 1 would skip
 *     the scaling pass, and the thresholds stay above clipping's 1e-6, whose factors would
 *     shrink the values into denormals):
 *     - the former loop, the reference: per tensor one sum_squares read back to the host (a
 *       device synchronisation each on the GPU) and one scale;
 *     - one clip_segments call over the tensors' pieces: clip_grads_per_tensor now.
 * Prints ms per optimiser step, backend calls (= kernel launches on the GPU) and the bytes the
 * mode must move per second: 28 bytes a float for AdamW (param, grad, m, v read; param, m, v
 * written), 8 more for the separate scaling pass, 12 for the EMA (target and param read,
 * target written) of which the fused pass saves the param read: 48 and 36 a float, plus 2
 * bytes for each bf16 copy written (on CUDA in comparison 2: the student's and the target's,
 * in both modes), 12 a float for clipping (read twice, written once); then the speed-up of each
 * one-call mode. The CPU backend runs 2 steps, the GPU 20 after 3 of warm-up
 * (wall clock with a device synchronisation at both ends: launch costs count, as in training);
 * the GPU half prints "skip" where no device is visible. No assertion on times.
 * Usage: bench_adamw [cpu|cuda|all]  (default all). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/config.h"
#include "models/casa.h"
#include "models/mae_decoder.h"
#include "models/proj_head.h"
#include "models/vit.h"
#include "nn/params.h"
#include "ops/backend.h"
#include "ops/gpu_device.h"
#include "train/optim.h"
#include "bench_gpu_timing.h"

/* The paper preset's model keys (jobs/pretrain_vitb_paper.cfg). */
static const char *const kPaperModel[][2] = {
    {"patch", "16"},       {"embed_dim", "768"},    {"depth", "12"},         {"heads", "12"},
    {"mlp_dim", "3072"},   {"dec_dim", "384"},      {"dec_depth", "4"},      {"dec_heads", "12"},
    {"dec_mlp_dim", "1536"}, {"head_hidden", "2048"}, {"head_bottleneck", "256"},
    {"head_out", "256"},   {"casa_dim", "768"},     {"weight_decay", "0.05"}, {"lr", "5e-5"},
};

typedef enum {
    MODE_ONE_CALL, MODE_PER_TENSOR, MODE_SEQUENCE, MODE_FUSED, MODE_CLIP_LOOP, MODE_CLIP_SEGMENTS,
    MODE_COUNT
} Mode;
static const char *const kModeName[MODE_COUNT] = {
    "one call (decay mask)", "per tensor (reference)", "clip+adamw+ema, 3 calls",
    "clip+adamw+ema, fused", "clip per tensor, loop", "clip per tensor, pieces"};
/* Bytes moved per float of the set (bf16 copies apart: kBf16CopyBytes per copy written). */
static const double kModeBytes[MODE_COUNT] = {28.0, 28.0, 48.0, 36.0, 12.0, 12.0};
/* Per-tensor clipping's threshold at call 0: at most every tensor's gradient norm (gradients
 * 1 each); call k uses kPerTensorClip / 2^k. */
static const double kPerTensorClip = 1.0;
static const double kBf16CopyBytes = 2.0;
/* The clipping factor of the update comparison (a gradient norm 4/3 of the threshold): below
 * 1, so the sequence really scales; the gradients stay normal floats over every step. */
static const float kClipFactor = 0.75f;

static void register_paper_student(ParamSet *ps, const Config *cfg)
{
    VitEncoder enc;
    MaeDecoder dec;
    ProjHead head;
    Casa casa;
    params_init_registry(ps);
    vit_encoder_register(&enc, ps, "encoder", cfg->patch, cfg->embed_dim, cfg->heads,
                         cfg->mlp_dim, cfg->depth);
    mae_decoder_register(&dec, ps, "decoder", cfg->embed_dim, cfg->dec_dim, cfg->dec_heads,
                         cfg->dec_mlp_dim, cfg->dec_depth, cfg->patch * cfg->patch * cfg->patch);
    proj_head_register(&head, ps, "head", cfg->dec_dim, cfg->head_hidden, cfg->head_bottleneck,
                       cfg->head_out, cfg->head_norm_last, 0);
    casa_register(&casa, ps, "casa", cfg->embed_dim, cfg->head_out, cfg->casa_dim, cfg->head_out,
                  0, 1, 0);
}

typedef struct {
    ParamSet *ps, *target;
    const Config *cfg;
} Optimiser;

/* One optimiser step, the index-th call (0-based, warm-up included) = AdamW step index + 1. */
static void step(const void *arg, int mode, int index)
{
    const Optimiser *o = arg;
    ParamSet *ps = o->ps;
    const Config *cfg = o->cfg;
    const AliceBackend *be = ps->be;
    const long s = 1 + index;
    const float momentum = 0.996f;
    AdamwHyper h = {cfg->lr, cfg->beta1, cfg->beta2, cfg->adam_eps, cfg->weight_decay, s, 1.0f};
    switch ((Mode)mode) {
    case MODE_ONE_CALL:
        be->adamw(ps->data, ps->grad, ps->m, ps->v, ps->decay_mask, ps->total, h, NULL, 0.0f);
        return;
    case MODE_PER_TENSOR:
        for (int i = 0; i < ps->count; i++) {
            const ParamInfo *t = &ps->info[i];
            h.weight_decay = t->decay ? cfg->weight_decay : 0.0f;
            be->adamw(ps->data + t->offset, ps->grad + t->offset, ps->m + t->offset,
                      ps->v + t->offset, NULL, t->numel, h, NULL, 0.0f);
        }
        return;
    case MODE_SEQUENCE:
        be->scale(ps->grad, kClipFactor, ps->total);
        be->adamw(ps->data, ps->grad, ps->m, ps->v, ps->decay_mask, ps->total, h, NULL, 0.0f);
        be->ema_update(o->target->data, ps->data, ps->total, momentum);
        return;
    case MODE_FUSED:
        h.grad_scale = kClipFactor;
        be->adamw(ps->data, ps->grad, ps->m, ps->v, ps->decay_mask, ps->total, h,
                  o->target->data, momentum);
        return;
    case MODE_CLIP_LOOP:
        for (int i = 0; i < ps->count; i++) {
            float *g = ps->grad + ps->info[i].offset;
            const float f = clip_grad_scale(sqrt(be->sum_squares(g, ps->info[i].numel)),
                                            ldexp(kPerTensorClip, -index));
            if (f < 1.0f) be->scale(g, f, ps->info[i].numel);
        }
        return;
    case MODE_CLIP_SEGMENTS:
        clip_grads_per_tensor(ps, ldexp(kPerTensorClip, -index));
        return;
    case MODE_COUNT: break;
    }
}

/* CUDA: one bf16 GEMM reading each set makes its bf16 weight copy current, as the GEMMs of a
 * bf16 training step leave it; AdamW and the EMA then write the copies alongside. Returns the
 * copies written per float by the update modes (0 on the CPU, which keeps none). */
static int make_weight_copies_current(const AliceBackend *be, const ParamSet *sets[2])
{
#ifdef ALICE_CUDA
    if (be != backend_cpu()) {
        const int width = 16;
        float *x = be->alloc((size_t)width * sizeof(float));
        float *y = be->alloc((size_t)width * sizeof(float));
        be->fill(x, 1.0f, (size_t)width);
        gpu_set_math(0, 1);
        for (int k = 0; k < 2; k++) be->linear_fwd(y, x, sets[k]->data, NULL, 1, width, width);
        gpu_set_math(0, 0);
        be->synchronize();
        be->release(x);
        be->release(y);
        return 2;
    }
#endif
    (void)be;
    (void)sets;
    return 0;
}

static void print_mode(const AliceBackend *be, Mode mode, double seconds, int calls,
                       double floats, int copies)
{
    const double bytes = (kModeBytes[mode] + copies * kBf16CopyBytes) * floats;
    printf("%-6s %-24s %10.3f %8d %9.1f\n", be->name, kModeName[mode], 1e3 * seconds, calls,
           bytes / seconds * 1e-9);
}

static void bench_backend(const AliceBackend *be, const Config *cfg, int warmup, int iters)
{
    ParamSet ps, target;
    register_paper_student(&ps, cfg);
    params_allocate(&ps, be, 1);
    params_initialize(&ps, 1234);
    be->fill(ps.grad, 1e-3f, ps.total);
    size_t floats = 0;
    for (int i = 0; i < ps.count; i++) floats += ps.info[i].numel;
    const Optimiser opt = {&ps, &target, cfg};
    double t[MODE_COUNT];
    for (int mode = MODE_ONE_CALL; mode <= MODE_PER_TENSOR; mode++) {
        t[mode] = bench_seconds_per_call(be, step, &opt, mode, warmup, iters);
        print_mode(be, (Mode)mode, t[mode], mode == MODE_ONE_CALL ? 1 : ps.count,
                   (double)floats, 0);
    }
    printf("%-6s one call / per tensor: %.2fx faster (%d tensors, %.1fM parameters, %.1fM "
           "floats with padding)\n", be->name, t[MODE_PER_TENSOR] / t[MODE_ONE_CALL], ps.count,
           floats * 1e-6, ps.total * 1e-6);

    /* The EMA target as pretrain_model_init makes it: the student's layout, untrainable. */
    params_clone_layout(&target, &ps);
    params_allocate(&target, be, 0);
    be->copy(target.data, ps.data, ps.total * sizeof(float));
    const ParamSet *sets[2] = {&ps, &target};
    const int copies = make_weight_copies_current(be, sets);
    for (int mode = MODE_SEQUENCE; mode <= MODE_FUSED; mode++) {
        t[mode] = bench_seconds_per_call(be, step, &opt, mode, warmup, iters);
        print_mode(be, (Mode)mode, t[mode], mode == MODE_SEQUENCE ? 3 : 1, (double)floats,
                   copies);
    }
    printf("%-6s fused / 3 calls: %.2fx faster (clipping factor %.2f, EMA target, %s)\n",
           be->name, t[MODE_SEQUENCE] / t[MODE_FUSED], kClipFactor,
           copies ? "bf16 weight copies current" : "no bf16 weight copies");
    for (int mode = MODE_CLIP_LOOP; mode <= MODE_CLIP_SEGMENTS; mode++) {
        be->fill(ps.grad, 1.0f, ps.total);
        t[mode] = bench_seconds_per_call(be, step, &opt, mode, warmup, iters);
        print_mode(be, (Mode)mode, t[mode], mode == MODE_CLIP_LOOP ? 2 * ps.count : 2,
                   (double)floats, 0);
    }
    printf("%-6s clip pieces / loop: %.2fx faster (%d tensors, %d pieces; the loop reads %d "
           "norms back)\n", be->name, t[MODE_CLIP_LOOP] / t[MODE_CLIP_SEGMENTS], ps.count,
           ps.clip_pieces.pieces, ps.count);
    params_free(&target);
    params_free(&ps);
}

int main(int argc, char **argv)
{
    /* argument: cpu, cuda or all (default); the GPU script runs "cuda" (the CPU half costs
     * seconds of the device budget). */
    const char *which = argc > 1 ? argv[1] : "all";
    const int run_cpu = strcmp(which, "cuda") != 0, run_cuda = strcmp(which, "cpu") != 0;
    if (strcmp(which, "cpu") && strcmp(which, "cuda") && strcmp(which, "all")) {
        fprintf(stderr, "bench_adamw: unknown argument '%s'; use cpu, cuda or all\n", which);
        return 2;
    }
    Config cfg;
    config_defaults(&cfg);
    for (size_t i = 0; i < sizeof kPaperModel / sizeof kPaperModel[0]; i++)
        config_set(&cfg, kPaperModel[i][0], kPaperModel[i][1], "bench_adamw", 0);
    printf("AdamW over the paper student's parameters, one optimiser step\n");
    printf("%-6s %-24s %10s %8s %9s\n", "device", "mode", "ms/step", "calls", "GB/s");
    if (run_cpu) bench_backend(backend_cpu(), &cfg, 0, 2);
    if (!run_cuda) return 0;
#ifdef ALICE_CUDA
    if (gpu_device_count() > 0) bench_backend(backend_cuda(), &cfg, 3, 20);
    else printf("cuda   skip: no GPU visible\n");
#else
    printf("cuda   skip: built without CUDA\n");
#endif
    return 0;
}
