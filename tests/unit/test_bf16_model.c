/* Mixed precision (precision = bf16) at the model level, on the CPU backend (which stores the
 * transformer activations in bf16 exactly as the CUDA backend does):
 *  - the activation arena: a transformer stack laid out with bf16 activations is smaller than
 *    the fp32 layout by exactly the six bf16 tensors per block and the bf16 dqkv and dh1 of
 *    backward (hand-computed sizes);
 *  - one pre-training step (MAE and Alice) and one UNETR fine-tuning step in bf16 against
 *    the same step in fp32 (the reference, itself checked by finite differences in
 *    test_model_grad): the loss within 2% and every parameter tensor's gradient within 5% in
 *    norm with a cosine above 0.995. Why these bounds: a bf16 value is off by at most 2^-9
 *    relative; a dozen such roundings along a path of a 2-block model, most of them
 *    independent, give errors of about 1% in losses and gradients, and systematic errors
 *    (a wrong transpose, an unrounded or missing term) give O(1) differences or a cosine far
 *    below 1.
 *  - the Alice step with drop-path (drop_path = 0.5: the second encoder block's branches
 *    dropped or doubled per sample, the same draws in both runs): a dropping block takes the
 *    unfused residual path and hands its branches' linear layers an fp32 scaled dy, not the
 *    bf16 copy of the unscaled gradient (which fails these bounds);
 *  - the Alice step with casa_kv = features (CASA's keys from the decoder's H, kept fp32);
 *  - the Alice step with bf16_branch_out = 0 (the residual added in the GEMM's fp32 store
 *    instead of the default's bf16 branches added by the LayerNorms), alone and with
 *    drop-path. */
#include <mpi.h>
#include <string.h>

#include "core/check.h"
#include "core/rng.h"
#include "models/pretrain_model.h"
#include "models/unetr.h"
#include "nn/transformer.h"
#include "seg_batch.h"
#include "test.h"
#include "test_config.h"

enum { ARENA_ALIGN_BYTES = 256 };  /* nn/arena.c's alignment of every block */

static size_t aligned(size_t bytes)
{
    return (bytes + ARENA_ALIGN_BYTES - 1) / ARENA_ALIGN_BYTES * ARENA_ALIGN_BYTES;
}

static size_t stack_arena_bytes(const TStack *s, DType t, int B, int T)
{
    Arena ar;
    arena_plan(&ar, backend_cpu(), t);
    TStackActs a;
    tstack_layout(s, &a, &ar, B, T, TSTACK_TRAIN);
    return ar.used;
}

static int test_arena_sizes(void)
{
    const int W = 24, heads = 2, M = 40, depth = 3, B = 2, T = 7;
    ParamSet ps;
    params_init_registry(&ps);
    TStack s;
    tstack_register(&s, &ps, "enc", W, heads, M, depth);
    const size_t f32 = stack_arena_bytes(&s, DTYPE_F32, B, T);
    const size_t b16 = stack_arena_bytes(&s, DTYPE_BF16, B, T);
    /* Per block: ln1 [rows, W], qkv [rows, 3W], att [rows, W], ln2 [rows, W], h and hg
     * [rows, M] go from 4 to 2 bytes per element, each block rounded up to 256 bytes. */
    const size_t rows = (size_t)B * T;
    const size_t elems[6] = {rows * W, rows * 3 * W, rows * W, rows * W, rows * M, rows * M};
    size_t saved = 0;
    for (int i = 0; i < 6; i++) saved += aligned(elems[i] * 4) - aligned(elems[i] * 2);
    saved *= depth;
    /* and once per stack the backward scratch dqkv [rows, 3W] (attention's gradient, stored in
     * the activation type for the qkv layer's bf16 GEMMs) */
    saved += aligned(rows * 3 * W * 4) - aligned(rows * 3 * W * 2);
    /* and fc2's input gradient dh1 [rows, M] (bf16 for fc1's GELU backward, as PyTorch's
     * autocast rounds it) */
    saved += aligned(rows * M * 4) - aligned(rows * M * 2);
    TEST_CHECK(f32 - b16 == saved, "bf16 layout saves %zu bytes, expected %zu (fp32 %zu, bf16 %zu)",
               f32 - b16, saved, f32, b16);
    params_free(&ps);
    return 0;
}

static const char *const tiny[][2] = {
    {"crop", "16,16,8"}, {"patch", "4"}, {"embed_dim", "48"}, {"depth", "2"}, {"heads", "4"},
    {"mlp_dim", "96"}, {"dec_dim", "36"}, {"dec_depth", "1"}, {"dec_heads", "3"},
    {"dec_mlp_dim", "64"}, {"head_hidden", "32"}, {"head_bottleneck", "16"}, {"head_out", "24"},
    {"casa_dim", "16"}, {"batch", "2"}, {"mask_ratio", "0.5"},
};

typedef struct {
    LossTerms loss;
    float *grad;   /* host copy of every gradient */
    float *data;   /* host copy of the weights (same in both runs: a check of the setup) */
    size_t total;
} StepResult;

/* More settings of a case (e.g. drop_path = 0.5), {NULL, NULL} ended. */
typedef struct {
    const char *key, *value;
} Setting;

static void set_all(Config *cfg, const Setting *set)
{
    for (; set->key; set++) config_set(cfg, set->key, set->value, "test", 0);
}

static StepResult one_step(const char *method, const char *precision, const Setting *set)
{
    Config cfg;
    TEST_CONFIG(&cfg, tiny);
    config_set(&cfg, "method", method, "test", 0);
    config_set(&cfg, "precision", precision, "test", 0);
    set_all(&cfg, set);
    PretrainModel m;
    pretrain_model_init(&m, &cfg, backend_cpu(), cfg.batch);
    const size_t vox = (size_t)m.B * 16 * 16 * 8;
    float *vol = xmalloc(vox * sizeof(float) * VIEW_COUNT);
    RngStream rng;
    rng_init(&rng, 11, 0, 0, RNG_TEST);
    for (size_t i = 0; i < vox * VIEW_COUNT; i++) vol[i] = rng_uniform(&rng);
    const float *views[VIEW_COUNT] = {vol, vol + vox, vol + 2 * vox, vol + 3 * vox};
    pretrain_model_set_views(&m, views);
    pretrain_model_draw_masks(&m, 5, 0);
    if (m.alice)  /* a teacher unlike the student: every loss term has a gradient */
        for (size_t i = 0; i < m.target.total; i++) m.target.data[i] += 0.05f * rng_normal(&rng);
    StepResult r;
    r.loss = pretrain_model_forward_backward(&m);
    r.total = m.online.total;
    r.grad = xmalloc(r.total * sizeof(float));
    r.data = xmalloc(r.total * sizeof(float));
    memcpy(r.grad, m.online.grad, r.total * sizeof(float));
    memcpy(r.data, m.online.data, r.total * sizeof(float));
    free(vol);
    pretrain_model_free(&m);
    return r;
}

/* Relative L2 difference of two gradients over one tensor. */
static double tensor_rel_diff(const ParamInfo *info, const float *ref, const float *other)
{
    double nr = 0, diff = 0;
    for (size_t k = info->offset; k < info->offset + info->numel; k++) {
        nr += (double)ref[k] * ref[k];
        diff += ((double)ref[k] - other[k]) * ((double)ref[k] - other[k]);
    }
    return nr > 0 ? sqrt(diff / nr) : 0.0;
}

/* Per tensor of ps: the bf16 gradient within max_rel of the fp32 one in norm (plus, when
 * sensitivity is given, 4x the fp32 gradient's own change under a bf16-sized perturbation of
 * the weights: see test_unetr_step) and its cosine at least min_cos. */
static void compare_gradients(const ParamSet *ps, const float *ref, const float *mp,
                              const float *sensitivity, double max_rel, double min_cos,
                              const char *what)
{
    int checked = 0, bad = 0;
    double worst_rel = 0, worst_cos = 1;
    for (int t = 0; t < ps->count; t++) {
        const ParamInfo *info = &ps->info[t];
        double dot = 0, nr = 0, nm = 0, diff = 0;
        for (size_t k = info->offset; k < info->offset + info->numel; k++) {
            const double a = ref[k], b = mp[k];
            dot += a * b; nr += a * a; nm += b * b; diff += (a - b) * (a - b);
        }
        if (nr == 0.0) {  /* no gradient in fp32 (e.g. an unused tensor): none in bf16 either */
            TEST_CHECK(nm == 0.0, "%s %s: gradient %.3g in bf16, 0 in fp32", what, info->name, sqrt(nm));
            continue;
        }
        const double rel = sqrt(diff / nr), cosv = dot / sqrt(nr * (nm > 0 ? nm : 1e-300));
        checked++;
        if (rel > worst_rel) worst_rel = rel;
        if (cosv < worst_cos) worst_cos = cosv;
        const double allowed = max_rel + (sensitivity ? 4.0 * tensor_rel_diff(info, ref, sensitivity) : 0.0);
        if (!(rel <= allowed && cosv >= min_cos)) {
            bad++;
            TEST_CHECK(0, "%s %s: bf16 gradient off by %.3g relative, %.3g allowed (cosine %.5f)",
                       what, info->name, rel, allowed, cosv);
        }
    }
    printf("  %s: %d gradient tensors, worst relative error %.4f, worst cosine %.5f, %d off\n",
           what, checked, worst_rel, worst_cos, bad);
}

static int compare_steps_with(const char *method, const Setting *set)
{
    StepResult ref = one_step(method, "fp32", set);
    StepResult mp = one_step(method, "bf16", set);
    TEST_CHECK(ref.total == mp.total && memcmp(ref.data, mp.data, ref.total * sizeof(float)) == 0,
               "%s: both runs must start from the same weights", method);
    TEST_CLOSE(mp.loss.loss, ref.loss.loss, 2e-2, 1e-4, "total loss, bf16 vs fp32");
    TEST_CLOSE(mp.loss.l_r, ref.loss.l_r, 2e-2, 1e-4, "reconstruction loss, bf16 vs fp32");
    Config cfg;
    TEST_CONFIG(&cfg, tiny);
    config_set(&cfg, "method", method, "test", 0);
    set_all(&cfg, set);
    PretrainModel names;
    pretrain_model_init(&names, &cfg, backend_cpu(), cfg.batch);
    compare_gradients(&names.online, ref.grad, mp.grad, NULL, 5e-2, 0.995, method);
    printf("  %s: loss fp32 %.6f bf16 %.6f\n", method, ref.loss.loss, mp.loss.loss);
    pretrain_model_free(&names);
    free(ref.grad); free(ref.data); free(mp.grad); free(mp.data);
    return 0;
}

static int compare_steps(const char *method)
{
    return compare_steps_with(method, (const Setting[]){{NULL, NULL}});
}
static int test_mae_step(void) { return compare_steps("mae"); }
static int test_alice_step(void) { return compare_steps("alice"); }
static int test_alice_step_drop_path(void)
{
    return compare_steps_with("alice", (const Setting[]){{"drop_path", "0.5"}, {NULL, NULL}});
}
/* casa_kv = features: the decoder's H stays fp32 (CASA's LayerNorm reads it) while the head's
 * and pred's GEMMs round it as operands */
static int test_alice_step_casa_features(void)
{
    return compare_steps_with("alice", (const Setting[]){{"casa_kv", "features"}, {NULL, NULL}});
}
/* The cases above run the default bf16_branch_out = 1 (the projections and fc2 stored in bf16
 * and added by the LayerNorm after them; with drop_path = 0.5 the second encoder block drops,
 * its branches keeping the fp32 path, so both meet in one stack). bf16_branch_out = 0: the
 * residual added in the GEMM's fp32 store, alone and with drop-path. */
static int test_alice_step_fp32_store_branches(void)
{
    compare_steps_with("alice", (const Setting[]){{"bf16_branch_out", "0"}, {NULL, NULL}});
    return compare_steps_with("alice", (const Setting[]){{"bf16_branch_out", "0"},
                                                         {"drop_path", "0.5"}, {NULL, NULL}});
}

/* UNETR fine-tuning: its ViT encoder runs the same stacks (batch: tests/unit/seg_batch.h). */
static const char *const unetr_tiny[][2] = {
    {"crop", "64,64,32"}, {"patch", "16"}, {"embed_dim", "24"}, {"depth", "4"}, {"heads", "2"},
    {"mlp_dim", "32"}, {"feature_size", "4"}, {"num_classes", "3"}, {"batch", "2"},
};

/* perturb: weights multiplied by 1 + u, u uniform in [-2^-9, 2^-9] (half a bf16 ulp at most). */
static SegLoss unetr_step(const char *precision, int perturb, float **grad, UnetrModel *keep)
{
    Config cfg;
    TEST_CONFIG(&cfg, unetr_tiny);
    config_set(&cfg, "precision", precision, "test", 0);
    UnetrModel m;
    unetr_init(&m, &cfg, backend_cpu(), cfg.batch, 1);
    const long V = unetr_crop_voxels(&m);
    float *img = xmalloc((size_t)m.B * V * sizeof(float));
    int32_t *lab = xmalloc((size_t)m.B * V * sizeof(int32_t));
    test_box_slab_batch(img, lab, m.B, cfg.crop[0], cfg.crop[1], cfg.crop[2], 13);
    RngStream rng;
    rng_init(&rng, 17, 0, 0, RNG_TEST);
    if (perturb)
        for (size_t i = 0; i < m.ps.total; i++)
            m.ps.data[i] *= 1.0f + (2.0f * rng_uniform(&rng) - 1.0f) / 512.0f;
    unetr_set_batch(&m, img, lab);
    SegLoss loss = unetr_forward_backward(&m);
    *grad = xmalloc(m.ps.total * sizeof(float));
    memcpy(*grad, m.ps.grad, m.ps.total * sizeof(float));
    free(img);
    free(lab);
    if (keep) *keep = m;
    else unetr_free(&m);
    return loss;
}

/* UNETR at initialisation is ill-conditioned: its fp32 gradients move by 5-11% per tensor when
 * the weights move by at most 2^-9 relative (measured with this configuration), so a fixed
 * bound would either fail on noise or pass anything. The bound is
 * calibrated in the same run: the bf16 gradient may differ from fp32 by 4x what that bf16-sized
 * weight perturbation does to the fp32 gradient, plus 2%, with a cosine of at least 0.97 -- a
 * systematic error (a missing term, a wrong operand) stays O(1) and fails. */
static int test_unetr_step(void)
{
    float *gref, *gmp, *gpert;
    UnetrModel names;
    SegLoss ref = unetr_step("fp32", 0, &gref, &names), mp = unetr_step("bf16", 0, &gmp, NULL);
    SegLoss pert = unetr_step("fp32", 1, &gpert, NULL);
    TEST_CLOSE(mp.ce, ref.ce, 2e-2, 1e-4, "unetr cross-entropy, bf16 vs fp32");
    TEST_CLOSE(mp.dice, ref.dice, 2e-2, 1e-4, "unetr dice loss, bf16 vs fp32");
    printf("  unetr: loss fp32 %.6f bf16 %.6f (fp32 with perturbed weights %.6f)\n", ref.loss,
           mp.loss, pert.loss);
    compare_gradients(&names.ps, gref, gmp, gpert, 2e-2, 0.97, "unetr");
    unetr_free(&names);
    free(gref);
    free(gmp);
    free(gpert);
    return 0;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    TEST_RUN(test_arena_sizes);
    TEST_RUN(test_mae_step);
    TEST_RUN(test_alice_step);
    TEST_RUN(test_alice_step_drop_path);
    TEST_RUN(test_alice_step_casa_features);
    TEST_RUN(test_alice_step_fp32_store_branches);
    TEST_RUN(test_unetr_step);
    MPI_Finalize();
    return test_finish();
}
