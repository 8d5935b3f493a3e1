/* Layer-wise lr decay of fine-tuning (layer_decay; models/unetr.h unetr_layer_lr_scale), on the
 * CPU backend:
 *  - the scales by tensor NAME, as MAE's get_layer_id_for_vit assigns layers (written here from
 *    the names, not from the model's tensor ranges): vit.patch_embedding.* layer 0,
 *    vit.blocks.{i}.* layer i + 1, everything else (vit.norm, the CNN) layer depth + 1; scale
 *    decay^(depth + 1 - layer). At decay 0.5 and depth 4 these are powers of two, compared
 *    exactly; layer_decay = 1 leaves every scale 1; an inference model has none;
 *  - one AdamW update of a trained UNETR with layer_decay = 0.5 against the same update of an
 *    identical model without it, same gradients: every element moves by its tensor's scale
 *    times the undecayed move (AdamW's step is proportional to lr, decoupled weight decay
 *    included), so the model's optimiser really takes the scales. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "core/check.h"
#include "models/unetr.h"
#include "test.h"
#include "test_config.h"
#include "train/optim.h"

static const char *const tiny[][2] = {
    {"crop", "32,16,16"}, {"patch", "16"}, {"embed_dim", "12"}, {"depth", "4"}, {"heads", "2"},
    {"mlp_dim", "16"}, {"feature_size", "2"}, {"num_classes", "3"}, {"batch", "1"},
    {"lr", "0.01"}, {"weight_decay", "0.3"}, {"clip", "0"},
};

/* MAE's layer id from the tensor's name (depth + 1 for anything outside the ViT's layers). */
static int layer_from_name(const char *name, int depth)
{
    int i;
    if (!strncmp(name, "vit.patch_embedding.", 20)) return 0;
    if (sscanf(name, "vit.blocks.%d.", &i) == 1) return i + 1;
    return depth + 1;
}

static void init_model(UnetrModel *m, const char *decay, int train)
{
    Config cfg;
    TEST_CONFIG(&cfg, tiny);
    config_set(&cfg, "layer_decay", decay, "test", 0);
    unetr_init(m, &cfg, backend_cpu(), cfg.batch, train);
}

static int test_scales_by_name(void)
{
    UnetrModel m;
    init_model(&m, "0.5", 1);
    const int depth = m.vit.stack.depth;
    int bad = 0, layer_count[8] = {0};
    for (int t = 0; t < m.ps.count; t++) {
        const int layer = layer_from_name(m.ps.info[t].name, depth);
        layer_count[layer]++;
        const float want = 1.0f / (float)(1 << (depth + 1 - layer));
        if (m.ps.lr_scale[t] != want) {
            bad++;
            TEST_CHECK(0, "%s: lr scale %g, expected %g (layer %d)", m.ps.info[t].name,
                       m.ps.lr_scale[t], want, layer);
        }
    }
    TEST_CHECK(bad == 0, "%d tensors with a wrong lr scale", bad);
    /* every layer has tensors: 2 for the patch embedding, 11 per block, the rest */
    TEST_CHECK(layer_count[0] == 2 && layer_count[1] == 11 && layer_count[4] == 11 &&
               layer_count[5] > 10, "tensors per layer: %d %d %d %d", layer_count[0],
               layer_count[1], layer_count[4], layer_count[5]);
    unetr_free(&m);
    init_model(&m, "1", 1);
    int not_one = 0;
    for (int t = 0; t < m.ps.count; t++) not_one += m.ps.lr_scale[t] != 1.0f;
    TEST_CHECK(not_one == 0, "layer_decay = 1: %d scales not 1", not_one);
    unetr_free(&m);
    init_model(&m, "0.5", 0);
    TEST_CHECK(m.ps.lr_scale == NULL, "an inference model has lr scales");
    unetr_free(&m);
    return 0;
}

static int test_update_follows_scales(void)
{
    UnetrModel dec, plain;
    init_model(&dec, "0.5", 1);
    init_model(&plain, "1", 1);
    Config cfg;
    TEST_CONFIG(&cfg, tiny);
    const size_t n = dec.ps.total, bytes = n * sizeof(float);
    TEST_CHECK(n == plain.ps.total, "layouts differ");
    float *p0 = xmalloc(bytes), *pd = xmalloc(bytes), *pp = xmalloc(bytes);
    memcpy(p0, dec.ps.data, bytes);
    TEST_CHECK(memcmp(p0, plain.ps.data, bytes) == 0, "the two models start from other weights");
    float *g = test_randn(5, 1, n, 1.0f);
    for (int t = 0; t < dec.ps.count; t++) {   /* zero padding, as backward leaves it */
        const size_t end = t + 1 < dec.ps.count ? dec.ps.info[t + 1].offset : n;
        for (size_t e = dec.ps.info[t].offset + dec.ps.info[t].numel; e < end; e++) g[e] = 0.0f;
    }
    memcpy(dec.ps.grad, g, bytes);
    memcpy(plain.ps.grad, g, bytes);
    optimizer_update(&dec.ps, &cfg, cfg.lr, 1, 0.0, NULL);
    optimizer_update(&plain.ps, &cfg, cfg.lr, 1, 0.0, NULL);
    memcpy(pd, dec.ps.data, bytes);
    memcpy(pp, plain.ps.data, bytes);
    size_t bad = 0, moved = 0;
    for (int t = 0; t < dec.ps.count; t++) {
        const ParamInfo *info = &dec.ps.info[t];
        const double s = dec.ps.lr_scale[t];
        for (size_t k = 0; k < info->numel; k++) {
            const size_t e = info->offset + k;
            const double want = s * ((double)pp[e] - p0[e]), got = (double)pd[e] - p0[e];
            moved += got != 0.0;
            /* float rounding of p - lr (...) at |p| ~ 0.5: about 3e-8 absolute */
            if (!(fabs(got - want) <= 1e-7 + 1e-5 * fabs(want))) {
                if (bad++ < 5)
                    TEST_CHECK(0, "%s[%zu]: moved %.9g, scale %g x %.9g expected", info->name, k,
                               got, s, (double)pp[e] - p0[e]);
            }
        }
    }
    TEST_CHECK(bad == 0, "%zu elements moved other than scale x the undecayed update", bad);
    TEST_CHECK(moved > n / 2, "only %zu of %zu elements moved", moved, n);
    free(g);
    free(p0), free(pd), free(pp);
    unetr_free(&dec);
    unetr_free(&plain);
    return 0;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    TEST_RUN(test_scales_by_name);
    TEST_RUN(test_update_follows_scales);
    MPI_Finalize();
    return test_finish();
}
