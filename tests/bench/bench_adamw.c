/* AdamW over the paper pre-training parameters (the online student of
 * jobs/pretrain_vitb_paper.cfg: ViT-B/16 encoder, decoder, projection head, CASA, registered as
 * pretrain_model_init registers them), two ways in the same run on each backend:
 *  - one call over the whole ParamSet with its decay mask: what adamw_step does now;
 *  - one call per tensor with that tensor's weight decay: the former adamw_step, the reference.
 * Prints ms per optimiser step, backend calls (= kernel launches on the GPU) and the bytes the
 * pass must move per second (param, grad, m, v read; param, m, v written: 28 bytes a float),
 * then the speed-up of the one call. The CPU backend runs 2 steps, the GPU 20 after 3 of warm-up
 * (wall clock with a device synchronisation at both ends: launch costs count, as in training);
 * the GPU half prints "skip" where no device is visible. No assertion on times.
 * Usage: bench_adamw [cpu|cuda|all]  (default all). */
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
#include "bench_gpu_timing.h"

/* The paper preset's model keys (jobs/pretrain_vitb_paper.cfg). */
static const char *const kPaperModel[][2] = {
    {"patch", "16"},       {"embed_dim", "768"},    {"depth", "12"},         {"heads", "12"},
    {"mlp_dim", "3072"},   {"dec_dim", "384"},      {"dec_depth", "4"},      {"dec_heads", "12"},
    {"dec_mlp_dim", "1536"}, {"head_hidden", "2048"}, {"head_bottleneck", "256"},
    {"head_out", "256"},   {"casa_dim", "768"},     {"weight_decay", "0.05"}, {"lr", "5e-5"},
};

typedef enum { MODE_ONE_CALL, MODE_PER_TENSOR, MODE_COUNT } Mode;
static const char *const kModeName[MODE_COUNT] = {"one call (decay mask)",
                                                  "per tensor (reference)"};

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
                       cfg->head_out);
    casa_register(&casa, ps, "casa", cfg->embed_dim, cfg->head_out, cfg->casa_dim, cfg->head_out);
}

typedef struct {
    const ParamSet *ps;
    const Config *cfg;
} Optimiser;

/* One optimiser step, the index-th call (0-based, warm-up included) = AdamW step index + 1. */
static void step(const void *arg, int mode, int index)
{
    const ParamSet *ps = ((const Optimiser *)arg)->ps;
    const Config *cfg = ((const Optimiser *)arg)->cfg;
    const AliceBackend *be = ps->be;
    const long s = 1 + index;
    if (mode == MODE_ONE_CALL) {
        be->adamw(ps->data, ps->grad, ps->m, ps->v, ps->decay_mask, ps->total, cfg->lr,
                  cfg->beta1, cfg->beta2, cfg->adam_eps, cfg->weight_decay, s);
        return;
    }
    for (int i = 0; i < ps->count; i++) {
        const ParamInfo *t = &ps->info[i];
        be->adamw(ps->data + t->offset, ps->grad + t->offset, ps->m + t->offset,
                  ps->v + t->offset, NULL, t->numel, cfg->lr, cfg->beta1, cfg->beta2,
                  cfg->adam_eps, t->decay ? cfg->weight_decay : 0.0f, s);
    }
}

static void bench_backend(const AliceBackend *be, const Config *cfg, int warmup, int iters)
{
    ParamSet ps;
    register_paper_student(&ps, cfg);
    params_allocate(&ps, be, 1);
    params_initialize(&ps, 1234);
    be->fill(ps.grad, 1e-3f, ps.total);
    size_t floats = 0;
    for (int i = 0; i < ps.count; i++) floats += ps.info[i].numel;
    const double bytes = 28.0 * (double)floats;
    const Optimiser opt = {&ps, cfg};
    double t[MODE_COUNT];
    for (int mode = 0; mode < MODE_COUNT; mode++) {
        t[mode] = bench_seconds_per_call(be, step, &opt, mode, warmup, iters);
        printf("%-6s %-24s %10.3f %8d %9.1f\n", be->name, kModeName[mode], 1e3 * t[mode],
               mode == MODE_ONE_CALL ? 1 : ps.count, bytes / t[mode] * 1e-9);
    }
    printf("%-6s one call / per tensor: %.2fx faster (%d tensors, %.1fM parameters, %.1fM "
           "floats with padding)\n", be->name, t[MODE_PER_TENSOR] / t[MODE_ONE_CALL], ps.count,
           floats * 1e-6, ps.total * 1e-6);
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
