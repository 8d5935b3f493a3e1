/* Writes what the UNETR PyTorch parity test (tests/reference/test_unetr_parity.py) needs: the
 * tiny model's initial weights (MONAI state_dict names), a batch (windowed image, labels), the
 * logits, the DiceCE loss terms and every parameter gradient.
 * usage: unetr_dump OUT.h5 [key=value ...]
 * Layout: attr config; /params/<name> (attr decay); /batch/image [B,1,X,Y,Z] float32,
 * /batch/label [B,X,Y,Z] int32; with drop_path > 0 /batch/drop_keep [B, depth, 2] int32 (the
 * ViT branches each sample keeps, 1, or drops, 0); /out/{loss,ce,dice} float64 [1];
 * /out/logits [B,K,X,Y,Z]; /grads/<name>. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "core/rng.h"
#include "cli/commands.h"
#include "h5util.h"
#include "train/checkpoint.h"
#include "models/unetr.h"

static const char *const tiny_config[][2] = {
    {"crop", "32,32,16"}, {"patch", "16"}, {"embed_dim", "12"}, {"depth", "4"}, {"heads", "2"},
    {"mlp_dim", "24"}, {"feature_size", "4"}, {"num_classes", "3"}, {"batch", "2"},
};

/* drop_path > 0: the branches of the ViT each sample keeps (the model's draws at init). */
static void write_drop_keep(hid_t f, const UnetrModel *m)
{
    const int depth = m->vit.stack.depth;
    int dims[3] = {m->B, depth, DROP_BRANCH_COUNT};
    int *keep = xmalloc((size_t)m->B * depth * DROP_BRANCH_COUNT * sizeof(int));
    drop_path_keep_flags(keep, m->drop_host, depth, m->B, 0, m->B);
    h5_write_ints(f, "batch/drop_keep", 3, dims, keep);
    free(keep);
}

static void write_scalar(hid_t f, const char *name, double v)
{
    int one = 1;
    h5_write_doubles(f, name, 1, &one, &v);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    if (argc < 2) { fprintf(stderr, "usage: unetr_dump OUT.h5 [key=value ...]\n"); return 2; }
    Config cfg;
    config_defaults(&cfg);
    for (size_t i = 0; i < sizeof tiny_config / sizeof tiny_config[0]; i++)
        config_set(&cfg, tiny_config[i][0], tiny_config[i][1], "unetr_dump defaults", 0);
    for (int i = 2; i < argc; i++)
        if (!cli_config_arg(&cfg, argc, argv, &i)) alice_die("expected key=value, got %s", argv[i]);
    UnetrModel m;
    unetr_init(&m, &cfg, backend_cpu(), cfg.batch, 1);
    const int *c = cfg.crop;
    const long D = unetr_crop_voxels(&m);
    float *img = xmalloc((size_t)m.B * D * sizeof(float));
    int32_t *lab = xmalloc((size_t)m.B * D * sizeof(int32_t));
    RngStream rng;
    rng_init(&rng, (uint64_t)cfg.seed, 0, 0, RNG_TEST);
    /* An ellipsoid per foreground class over noise: every class present, smooth boundaries. */
    for (int b = 0; b < m.B; b++)
        for (int x = 0; x < c[0]; x++)
            for (int y = 0; y < c[1]; y++)
                for (int z = 0; z < c[2]; z++) {
                    size_t i = (size_t)b * D + ((size_t)x * c[1] + y) * c[2] + z;
                    int cls = 0;
                    for (int k = 1; k < m.K; k++) {
                        double cx = c[0] * (0.25 + 0.5 * k / m.K) + b, cy = c[1] * 0.5, cz = c[2] * 0.5;
                        double r = (x - cx) * (x - cx) / (0.04 * c[0] * c[0]) +
                                   (y - cy) * (y - cy) / (0.06 * c[1] * c[1]) +
                                   (z - cz) * (z - cz) / (0.08 * c[2] * c[2]);
                        if (r < 1.0) cls = k;
                    }
                    lab[i] = cls;
                    img[i] = 0.2f + 0.25f * (float)cls + 0.1f * rng_uniform(&rng);
                }
    unetr_set_batch(&m, img, lab);

    hid_t f = h5_create_tmp(argv[1]);
    char *text = config_to_text(&cfg);
    h5_attr_string(f, "config", text);
    free(text);
    params_write_h5(f, "params", "", &m.ps, m.ps.data, NULL);
    int vdims[5] = {m.B, 1, c[0], c[1], c[2]};
    h5_write_floats(f, "batch/image", 5, vdims, img);
    int ldims[4] = {m.B, c[0], c[1], c[2]};
    h5_write_ints(f, "batch/label", 4, ldims, lab);
    if (m.drop_host) write_drop_keep(f, &m);
    SegLoss l = unetr_forward_backward(&m);
    write_scalar(f, "out/loss", l.loss);
    write_scalar(f, "out/ce", l.ce);
    write_scalar(f, "out/dice", l.dice);
    float *logits = xmalloc((size_t)m.B * m.K * D * sizeof(float));
    m.be->download(logits, m.logits, (size_t)m.B * m.K * D * sizeof(float));
    int odims[5] = {m.B, m.K, c[0], c[1], c[2]};
    h5_write_floats(f, "out/logits", 5, odims, logits);
    params_write_h5(f, "grads", "", &m.ps, m.ps.grad, NULL);
    h5_commit(f, argv[1]);
    printf("unetr_dump: %s depth=%d loss=%.9g (ce %.9g, dice %.9g), %d tensors\n", argv[1],
           cfg.depth, l.loss, l.ce, l.dice, m.ps.count);
    free(logits);
    free(img);
    free(lab);
    unetr_free(&m);
    MPI_Finalize();
    return 0;
}
