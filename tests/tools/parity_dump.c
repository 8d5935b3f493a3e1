/* Writes everything the PyTorch parity tests need (tests/reference/test_*_parity.py): the
 * tiny model's initial weights, a batch and its masks, the C loss terms and gradients, the
 * losses of 5 AdamW steps on that batch, the EMA target after the first step and, with
 * align_loss = dino, the centers after the first step (each step updates them).
 * usage: parity_dump OUT.h5 [key=value ...]   (method=mae|alice, ...) */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "core/rng.h"
#include "cli/commands.h"
#include "h5util.h"
#include "train/checkpoint.h"
#include "models/pretrain_model.h"
#include "train/optim.h"

static const char *const tiny_config[][2] = {
    {"crop", "16,16,8"}, {"patch", "4"}, {"embed_dim", "24"}, {"depth", "2"}, {"heads", "2"},
    {"mlp_dim", "48"}, {"dec_dim", "12"}, {"dec_depth", "1"}, {"dec_heads", "2"},
    {"dec_mlp_dim", "24"}, {"head_hidden", "16"}, {"head_bottleneck", "8"}, {"head_out", "16"},
    {"casa_dim", "12"}, {"batch", "2"}, {"clip", "0"}, {"lr", "1e-3"}, {"warmup", "2"},
    {"steps", "5"}, {"ema_start", "0.9"}, {"ema_end", "1"}, {"weight_decay", "0.05"},
};

/* teacher_decoder = full: the teacher holds the whole decoder (as alice_ref.py's Target). */
static int g_teacher_full;

/* Target tensors the teacher branch holds (docs/MODEL.md). */
static int teacher_tensor(const char *name)
{
    /* cls_proj exists with cls_source = encoder, where the teacher's [cls] uses it */
    return !strncmp(name, "encoder.", 8) || !strncmp(name, "head.", 5) ||
           !strncmp(name, "cls_proj.", 9) ||
           !strncmp(name, g_teacher_full ? "decoder." : "decoder.decoder_embed.",
                    g_teacher_full ? 8 : 22);
}

/* One process: the mean over ranks is the value itself. */
static void single_rank_mean(float *buf, size_t n, void *ctx)
{
    (void)buf, (void)n, (void)ctx;
}

static void write_scalar(hid_t f, const char *name, double v)
{
    int one = 1;
    h5_write_doubles(f, name, 1, &one, &v);
}

/* drop_path > 0: which encoder branches masked view v's samples keep, [B, depth,
 * DROP_BRANCH_COUNT] (1 kept, 0 dropped), from the scales the model drew; the reference
 * derives the kept branches' scales from drop_path itself. */
static void write_drop_path_keeps(hid_t f, const PretrainModel *m, int v, const char *view)
{
    const int depth = m->enc.stack.depth, S = m->masked.S;
    int dims[3] = {m->B, depth, DROP_BRANCH_COUNT};
    int *keep = xmalloc((size_t)m->B * depth * DROP_BRANCH_COUNT * sizeof(int));
    drop_path_keep_flags(keep, m->drop_host, depth, S, v * m->B, m->B);
    char name[64];
    snprintf(name, sizeof name, "batch/drop_keep_%s", view);
    h5_write_ints(f, name, 3, dims, keep);
    free(keep);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    if (argc < 2) { fprintf(stderr, "usage: parity_dump OUT.h5 [key=value ...]\n"); return 2; }
    Config cfg;
    config_defaults(&cfg);
    for (size_t i = 0; i < sizeof tiny_config / sizeof tiny_config[0]; i++)
        config_set(&cfg, tiny_config[i][0], tiny_config[i][1], "parity defaults", 0);
    for (int i = 2; i < argc; i++)
        if (!cli_config_arg(&cfg, argc, argv, &i)) alice_die("expected key=value, got %s", argv[i]);
    const AliceBackend *be = backend_cpu();
    PretrainModel m;
    pretrain_model_init(&m, &cfg, be, cfg.batch);
    g_teacher_full = m.teacher_full;
    const int views = m.alice ? VIEW_COUNT : 1;
    const size_t vox = (size_t)m.B * m.dims[0] * m.dims[1] * m.dims[2];
    float *vol[VIEW_COUNT] = {0};
    for (int v = 0; v < views; v++) {
        vol[v] = xmalloc(vox * sizeof(float));
        RngStream rng;
        rng_init(&rng, (uint64_t)cfg.seed, 0, (uint32_t)v, RNG_TEST);
        /* Smooth-ish content: a ramp plus noise, so normalised patches are well conditioned. */
        for (size_t i = 0; i < vox; i++) vol[v][i] = 0.5f * rng_uniform(&rng) + (float)(i % 7) / 7.0f;
    }
    pretrain_model_set_views(&m, (const float *const *)vol);
    pretrain_model_draw_masks(&m, 0, 0);

    hid_t f = h5_create_tmp(argv[1]);
    char *text = config_to_text(&cfg);
    h5_attr_string(f, "config", text);
    h5_attr_string(f, "method", cfg.method);
    free(text);
    params_write_h5(f, "params", "", &m.online, m.online.data, NULL);
    if (m.alice) params_write_h5(f, "params", "target.", &m.target, m.target.data, teacher_tensor);
    static const char *const view_names[VIEW_COUNT] = {"u", "r", "w", "v"};
    int vdims[5] = {m.B, 1, m.dims[0], m.dims[1], m.dims[2]};
    int pdims[2] = {m.B, m.N};
    int *perm = xmalloc((size_t)m.B * m.N * sizeof(int));
    for (int v = 0; v < views; v++) {
        char name[64];
        snprintf(name, sizeof name, "batch/%s", view_names[v]);
        h5_write_floats(f, name, 5, vdims, vol[v]);
        if (v < (m.alice ? MASKED_VIEWS : 1)) {
            be->download(perm, m.mv[v].perm, (size_t)m.B * m.N * sizeof(int));
            snprintf(name, sizeof name, "batch/perm_%s", view_names[v]);
            h5_write_ints(f, name, 2, pdims, perm);
            if (m.drop_host) write_drop_path_keeps(f, &m, v, view_names[v]);
        }
    }
    double losses[5];
    for (int s = 0; s < 5; s++) {
        pretrain_model_begin_step(&m, s);   /* DINO's teacher temperature of step s */
        LossTerms t = pretrain_model_forward_backward(&m);
        losses[s] = t.loss;
        if (s == 0) {
            write_scalar(f, "out/loss", t.loss);
            write_scalar(f, "out/l_r", t.l_r);
            write_scalar(f, "out/l_dv", t.l_dv);
            write_scalar(f, "out/l_st", t.l_st);
            params_write_h5(f, "grads", "", &m.online, m.online.grad, NULL);
        }
        /* clipping, AdamW and (alice) the EMA target in one pass, as the training loop */
        const EmaUpdate ema = {&m.target, pretrain_ema_momentum(&cfg, s)};
        optimizer_update(&m.online, &cfg, schedule_lr(&cfg, s, cfg.batch), s + 1,
                         grad_global_norm(&m.online), m.alice ? &ema : NULL);
        if (m.alice && s == 0)
            params_write_h5(f, "ema", "target.", &m.target, m.target.data, teacher_tensor);
        pretrain_model_update_centers(&m, single_rank_mean, NULL);
        if (m.dino && s == 0) params_write_h5(f, "centers", "", &m.buffers, m.buffers.data, NULL);
    }
    int five = 5;
    h5_write_doubles(f, "adam/losses", 1, &five, losses);
    h5_commit(f, argv[1]);
    printf("parity_dump: %s method=%s loss=%.9g\n", argv[1], cfg.method, losses[0]);
    free(perm);
    for (int v = 0; v < views; v++) free(vol[v]);
    pretrain_model_free(&m);
    MPI_Finalize();
    return 0;
}
