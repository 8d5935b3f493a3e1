/* Finite-difference check of the whole pre-training loss (MAE, Alice, Alice without CASA, and
 * Alice with align_loss = dino with and without CASA, its centers set to random values and held
 * fixed like the teacher; both losses also with casa_layer = transformer, 2 heads, and with
 * cls_source = encoder; with casa_kv = features (CASA's keys from H and the teacher's decoder
 * features, dec_dim 12 wide, not the heads' 8); and with drop-path, drop_path = 0.6 on a
 * 3-block encoder, the step's draws held fixed as the masks)
 * against the analytic gradient at sampled entries of EVERY parameter tensor.
 * Central differences in fp32 with h = 2e-3; pass when |fd - analytic| <= 3e-3 + 5e-2 |fd|
 * (fp32 round-off of a loss near 1 divided by 2h is about 1e-4; the margin covers curvature). */
#include <mpi.h>
#include <string.h>

#include "core/check.h"
#include "core/rng.h"
#include "models/pretrain_model.h"
#include "test.h"
#include "test_config.h"

static const char *const tiny[][2] = {
    {"crop", "8,8,8"}, {"patch", "4"}, {"embed_dim", "12"}, {"depth", "2"}, {"heads", "2"},
    {"mlp_dim", "16"}, {"dec_dim", "12"}, {"dec_depth", "1"}, {"dec_heads", "2"},
    {"dec_mlp_dim", "16"}, {"head_hidden", "10"}, {"head_bottleneck", "6"}, {"head_out", "8"},
    {"casa_dim", "6"}, {"batch", "2"}, {"mask_ratio", "0.5"},
};

static const char *g_cls_source = "decoder";
static const char *g_casa_kv = "heads";
static const char *g_drop_path = "0";   /* with depth 3 in the drop-path case */

static double loss_of(PretrainModel *m) { return pretrain_model_forward_backward(m).loss; }
static double loss_of_ctx(void *m) { return loss_of(m); }

static int check_layer(const char *method, int use_casa, const char *align_loss,
                       const char *casa_layer)
{
    Config cfg;
    TEST_CONFIG(&cfg, tiny);
    config_set(&cfg, "cls_source", g_cls_source, "test", 0);
    config_set(&cfg, "casa_kv", g_casa_kv, "test", 0);
    config_set(&cfg, "casa_layer", casa_layer, "test", 0);
    config_set(&cfg, "casa_heads", "2", "test", 0);
    config_set(&cfg, "casa_ffn_dim", "10", "test", 0);
    config_set(&cfg, "method", method, "test", 0);
    config_set(&cfg, "use_casa", use_casa ? "1" : "0", "test", 0);
    config_set(&cfg, "align_loss", align_loss, "test", 0);
    config_set(&cfg, "drop_path", g_drop_path, "test", 0);
    if (strcmp(g_drop_path, "0") != 0) config_set(&cfg, "depth", "3", "test", 0);
    const AliceBackend *be = backend_cpu();
    PretrainModel m;
    pretrain_model_init(&m, &cfg, be, cfg.batch);
    /* Random-weight heads give near-constant pooled features; perturb the target copy so the
     * teacher differs from the student and every loss term has a gradient. */
    ParamSet *ps = &m.online;
    size_t vox = (size_t)m.B * 8 * 8 * 8;
    float *vol = xmalloc(vox * sizeof(float) * VIEW_COUNT);
    RngStream rng;
    rng_init(&rng, 7, 0, 0, RNG_TEST);
    for (size_t i = 0; i < vox * VIEW_COUNT; i++) vol[i] = rng_uniform(&rng);
    const float *views[VIEW_COUNT] = {vol, vol + vox, vol + 2 * vox, vol + 3 * vox};
    pretrain_model_set_views(&m, views);
    pretrain_model_draw_masks(&m, 3, 0);
    if (m.alice) {
        for (size_t i = 0; i < m.target.total; i++) m.target.data[i] += 0.05f * rng_normal(&rng);
    }
    /* Zero centers would leave the centering untested: give them values of the outputs' size. */
    for (size_t i = 0; i < m.buffers.total; i++) m.buffers.data[i] = 0.1f * rng_normal(&rng);
    loss_of(&m);
    m.freeze_teacher = 1;   /* T is a stop-gradient target: keep it fixed under perturbation */
    float *grad = xmalloc(ps->total * sizeof(float));
    memcpy(grad, ps->grad, ps->total * sizeof(float));
    const float h = 2e-3f;
    int checked = 0, bad = 0;
    for (int t = 0; t < ps->count; t++) {
        const ParamInfo *info = &ps->info[t];
        /* The absolute slack follows the tensor's own gradient size (many of MAE's encoder
         * gradients are ~1e-3: a fixed 3e-3 let them be halved unnoticed), above a floor for
         * the fp32 loss's rounding in the difference quotient. */
        double sq = 0.0;
        for (size_t k = 0; k < info->numel; k++)
            sq += (double)grad[info->offset + k] * grad[info->offset + k];
        const double abs_tol = 2e-4 + 2e-2 * sqrt(sq / (double)info->numel);
        for (int s = 0; s < 3; s++) {
            size_t k = info->offset + rng_below(&rng, (uint32_t)info->numel);
            double fd = test_central_difference(&ps->data[k], h, loss_of_ctx, &m);
            checked++;
            if (fabs(fd - grad[k]) > abs_tol + 5e-2 * fabs(fd)) {
                bad++;
                TEST_CHECK(0, "%s %s[%zu]: finite difference %.6g, analytic %.6g", method,
                           info->name, k - info->offset, fd, grad[k]);
            }
        }
    }
    printf("  %s%s, align_loss %s, casa_layer %s, casa_kv %s, cls_source %s, drop_path %s: %d "
           "entries of %d tensors checked, %d off\n", method, use_casa ? "" : " (no CASA)",
           align_loss, casa_layer, g_casa_kv, g_cls_source, g_drop_path, checked, ps->count, bad);
    free(grad);
    free(vol);
    pretrain_model_free(&m);
    return 0;
}

static int check_method(const char *method, int use_casa, const char *align_loss)
{
    return check_layer(method, use_casa, align_loss, "single");
}

static int test_mae(void) { return check_method("mae", 1, "cosine"); }
static int test_alice(void) { return check_method("alice", 1, "cosine"); }
static int test_alice_no_casa(void) { return check_method("alice", 0, "cosine"); }
static int test_alice_dino(void) { return check_method("alice", 1, "dino"); }
static int test_alice_dino_no_casa(void) { return check_method("alice", 0, "dino"); }
static int test_alice_casa_transformer(void)
{
    return check_layer("alice", 1, "cosine", "transformer");
}
static int test_alice_dino_casa_transformer(void)
{
    return check_layer("alice", 1, "dino", "transformer");
}
/* l_dv's [cls] from the encoder: gradients through cls_proj and the pooled V into the encoder */
static int test_alice_cls_encoder(void)
{
    g_cls_source = "encoder";
    int rc = check_method("alice", 1, "cosine") | check_method("alice", 0, "dino");
    g_cls_source = "decoder";
    return rc;
}

/* CASA's keys and values from H and the teacher's features: the gradient through the keys
 * reaches H directly (beside the head's), in both CASA forms */
static int test_alice_casa_features(void)
{
    g_casa_kv = "features";
    int rc = check_method("alice", 1, "cosine") | check_layer("alice", 1, "dino", "transformer");
    g_casa_kv = "heads";
    return rc;
}

/* drop-path: blocks 1 and 2 drop at 0.3 and 0.6, per masked sample and branch */
static int test_alice_drop_path(void)
{
    g_drop_path = "0.6";
    int rc = check_method("alice", 1, "cosine") | check_method("mae", 1, "cosine");
    g_drop_path = "0";
    return rc;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    TEST_RUN(test_mae);
    TEST_RUN(test_alice);
    TEST_RUN(test_alice_no_casa);
    TEST_RUN(test_alice_dino);
    TEST_RUN(test_alice_dino_no_casa);
    TEST_RUN(test_alice_casa_transformer);
    TEST_RUN(test_alice_dino_casa_transformer);
    TEST_RUN(test_alice_cls_encoder);
    TEST_RUN(test_alice_casa_features);
    TEST_RUN(test_alice_drop_path);
    MPI_Finalize();
    return test_finish();
}
