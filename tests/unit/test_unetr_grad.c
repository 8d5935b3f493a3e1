/* Finite-difference check of the tiny UNETR's DiceCE loss (w_ce = w_dice = 1) against the
 * analytic gradient at sampled entries of EVERY parameter tensor (ViT, encoders, decoders,
 * output conv), and a check that the ViT's skip taps carry gradient (blocks 1, 2, 3 of 4).
 * Central differences in fp32 with h = 2e-3 on a loss near 2: round-off is about
 * 2 * 2.4e-7 / 4e-3 = 1.2e-4 in the quotient; pass when |fd - analytic| <= 5e-4 + 5e-2 |fd|.
 * LeakyReLU kinks can make an occasional entry differ; at most 2% of entries may be off (a
 * wrong backward gets most entries of a tensor wrong). */
#include <mpi.h>
#include <string.h>

#include "core/check.h"
#include "core/rng.h"
#include "models/unetr.h"
#include "seg_batch.h"
#include "test.h"
#include "test_config.h"

static const char *const tiny[][2] = {
    {"crop", "32,16,16"}, {"patch", "16"}, {"embed_dim", "12"}, {"depth", "4"}, {"heads", "2"},
    {"mlp_dim", "16"}, {"feature_size", "2"}, {"num_classes", "3"}, {"batch", "2"},
};

static double loss_only(UnetrModel *m)
{
    unetr_forward(m);
    float v[SEG_LOSS_VALUE_COUNT];   /* the CPU backend's memory is host memory */
    m->be->dicece_fwd(m->probs, v, m->logits, m->label, m->B, m->K, unetr_crop_voxels(m));
    return (double)v[SEG_LOSS_CE] + (double)v[SEG_LOSS_DICE];
}

static double loss_only_ctx(void *m) { return loss_only(m); }

static int test_unetr_gradients(void)
{
    Config cfg;
    TEST_CONFIG(&cfg, tiny);
    UnetrModel m;
    unetr_init(&m, &cfg, backend_cpu(), cfg.batch, 1);
    TEST_CHECK(m.skip_block[0] == 1 && m.skip_block[1] == 2 && m.skip_block[2] == 3,
               "skip blocks %d %d %d, expected 1 2 3 for depth 4", m.skip_block[0],
               m.skip_block[1], m.skip_block[2]);
    const long D = unetr_crop_voxels(&m);
    float *img = xmalloc((size_t)m.B * D * sizeof(float));
    int32_t *lab = xmalloc((size_t)m.B * D * sizeof(int32_t));
    test_box_slab_batch(img, lab, m.B, 32, 16, 16, 11);
    RngStream rng;
    rng_init(&rng, 12, 0, 0, RNG_TEST);
    unetr_set_batch(&m, img, lab);
    ParamSet *ps = &m.ps;
    SegLoss l = unetr_forward_backward(&m);
    TEST_CHECK(isfinite(l.loss) && l.loss > 0.5, "loss %g", l.loss);
    float *grad = xmalloc(ps->total * sizeof(float));
    memcpy(grad, ps->grad, ps->total * sizeof(float));
    const float h = 2e-3f;
    /* LeakyReLU kinks let a finite difference straddle a slope change now and then: a few
     * entries may be off over the whole model, but never two of one tensor's three (a tensor
     * whose gradient is wrong as a whole shows in all of its samples). */
    int checked = 0, bad = 0;
    for (int t = 0; t < ps->count; t++) {
        int bad_here = 0;
        const ParamInfo *info = &ps->info[t];
        double gmax = 0.0;
        for (size_t k = 0; k < info->numel; k++) gmax = fmax(gmax, fabs(grad[info->offset + k]));
        TEST_CHECK(gmax > 0.0, "%s: the gradient is zero everywhere", info->name);
        for (int s = 0; s < 3; s++) {
            size_t k = info->offset + rng_below(&rng, (uint32_t)info->numel);
            double fd = test_central_difference(&ps->data[k], h, loss_only_ctx, &m);
            checked++;
            if (fabs(fd - grad[k]) > 5e-4 + 5e-2 * fabs(fd)) {
                bad++;
                bad_here++;
                fprintf(stderr, "  off: %s[%zu]: finite difference %.6g, analytic %.6g\n",
                        info->name, k - info->offset, fd, grad[k]);
            }
        }
        TEST_CHECK(bad_here < 2, "%s: %d of its 3 sampled entries off", info->name, bad_here);
    }
    printf("  %d entries of %d tensors checked, %d off (loss %.5f = ce %.5f + dice %.5f)\n",
           checked, ps->count, bad, l.loss, l.ce, l.dice);
    TEST_CHECK(bad <= checked / 50, "%d of %d finite-difference entries off", bad, checked);
    free(grad);
    free(img);
    free(lab);
    unetr_free(&m);
    return 0;
}

/* Inference lays the ViT out forward-only with every block's output kept for the skips
 * (TSTACK_FORWARD_TAPS): its logits must be those of the training layout, bit for bit (the
 * same ops on the same data, only the buffers differ), in less memory (no saved attention, no
 * gradients, two alternating sets of block scratch). Batch 2, so a wrong skip tap or a block
 * reading an overwritten buffer changes the result. With drop_path (a trained model's ViT drops
 * branches in its training steps) inference drops nothing: the same logits, while the training
 * step's forward gives others. */
static int check_inference_layout(const char *drop_path)
{
    Config cfg;
    TEST_CONFIG(&cfg, tiny);
    config_set(&cfg, "drop_path", drop_path, "test", 0);
    UnetrModel train, infer;
    unetr_init(&train, &cfg, backend_cpu(), cfg.batch, 1);
    unetr_init(&infer, &cfg, backend_cpu(), cfg.batch, 0);
    TEST_CHECK(train.ps.total == infer.ps.total &&
                   !memcmp(train.ps.data, infer.ps.data, train.ps.total * sizeof(float)),
               "the two models start from different parameters");
    const long D = unetr_crop_voxels(&train);
    const size_t n = (size_t)train.B * train.K * D;
    float *img = xmalloc((size_t)train.B * D * sizeof(float));
    int32_t *lab = xmalloc((size_t)train.B * D * sizeof(int32_t));
    test_box_slab_batch(img, lab, train.B, 32, 16, 16, 5);
    unetr_set_batch(&train, img, lab);
    unetr_set_batch(&infer, img, NULL);
    const float *a = unetr_forward(&train), *b = unetr_forward(&infer);
    size_t differ = 0;
    for (size_t i = 0; i < n; i++) differ += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    TEST_CHECK(differ == 0, "drop_path %s: %zu of %zu logits differ between the layouts",
               drop_path, differ, n);
    if (train.drop_host) {   /* the training step's forward drops: other logits */
        unetr_forward_backward(&train);
        differ = 0;
        for (size_t i = 0; i < n; i++) differ += train.logits[i] != b[i];
        TEST_CHECK(differ > n / 2, "drop_path %s: the training forward's logits equal the "
                   "inference ones in %zu of %zu", drop_path, n - differ, n);
    }
    /* the skips really read distinct block outputs: taps 1 and 2 differ */
    const size_t tok = (size_t)train.B * train.N * train.E;
    TEST_CHECK(memcmp(infer.va.st.act[1].out, infer.va.st.act[2].out, tok * sizeof(float)) != 0,
               "blocks 1 and 2 share their output buffer in the inference layout");
    printf("  activations: training layout %.1f KiB, inference %.1f KiB\n",
           train.arena.used / 1024.0, infer.arena.used / 1024.0);
    TEST_CHECK(infer.arena.used < train.arena.used, "inference layout not smaller");
    const TStackActs *st = &infer.va.st;
    TEST_CHECK(!st->train && st->act[0].probs == NULL && st->g0 == NULL,
               "the inference ViT keeps saved attention or gradient buffers");
    TEST_CHECK(st->act[0].qkv.p == st->act[2].qkv.p && st->act[0].out != st->act[2].out,
               "the inference ViT does not alternate its block scratch");
    free(img);
    free(lab);
    unetr_free(&train);
    unetr_free(&infer);
    return 0;
}

static int test_unetr_inference_layout(void)
{
    return check_inference_layout("0") | check_inference_layout("0.6");
}

/* Parameter names follow MONAI's UNETR state_dict. */
static int test_unetr_names(void)
{
    Config cfg;
    TEST_CONFIG(&cfg, tiny);
    UnetrModel m;
    unetr_init(&m, &cfg, backend_cpu(), 1, 0);
    static const char *const expect[] = {
        "vit.patch_embedding.patch_embeddings.weight", "vit.blocks.0.attn.qkv.weight", "vit.norm.weight",
        "encoder1.layer.conv1.conv.weight", "encoder1.layer.conv3.conv.weight",
        "encoder2.transp_conv_init.conv.weight", "encoder2.blocks.1.0.conv.weight",
        "encoder2.blocks.1.1.conv2.conv.weight", "encoder3.blocks.0.1.conv1.conv.weight",
        "encoder4.transp_conv_init.conv.weight", "decoder5.transp_conv.conv.weight",
        "decoder5.conv_block.conv3.conv.weight", "decoder2.conv_block.conv1.conv.weight",
        "out.conv.conv.weight", "out.conv.conv.bias",
    };
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++)
        TEST_CHECK(params_find(&m.ps, expect[i]) >= 0, "no tensor %s", expect[i]);
    TEST_CHECK(params_find(&m.ps, "encoder2.blocks.0.1.conv3.conv.weight") < 0,
               "a res block with equal channels must have no conv3");
    int d5 = params_find(&m.ps, "decoder5.conv_block.conv1.conv.weight");
    TEST_CHECK(d5 >= 0 && m.ps.info[d5].shape[0] == 16 && m.ps.info[d5].shape[1] == 32,
               "decoder5.conv_block.conv1 shape [8F, 16F, 3, 3, 3] with F = 2");
    int e4 = params_find(&m.ps, "encoder4.transp_conv_init.conv.weight");
    TEST_CHECK(e4 >= 0 && m.ps.info[e4].shape[0] == 12 && m.ps.info[e4].shape[1] == 16,
               "encoder4.transp_conv_init shape [E, 8F, 2, 2, 2]");
    unetr_free(&m);
    return 0;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    TEST_RUN(test_unetr_names);
    TEST_RUN(test_unetr_gradients);
    TEST_RUN(test_unetr_inference_layout);
    MPI_Finalize();
    return test_finish();
}
