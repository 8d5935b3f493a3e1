/* A full pre-training step (MAE, Alice, Alice without CASA, Alice on the fused attention
 * kernel; in bf16 Alice on each attention kernel, the default attention_kernel = auto at
 * head width 32, where it runs cuDNN's fused attention, and both bf16_branch_out paths) in
 * fp32 on the CPU backend and on the CUDA backend from the same initial weights, crops and
 * masks: the loss
 * terms, every parameter gradient, the parameters after one AdamW step and the EMA target
 * after one update must agree. Skipped (exit 77, "skip: no GPU") without a visible GPU.
 *
 * Tolerances (fp32 on both sides, only summation orders differ; they compound through the
 * depth of the model): loss terms 1e-4 relative + 1e-6; gradients per tensor
 * |gpu - cpu| <= 2e-3 max|cpu of that tensor| + 1e-7 (a relative error per element would be
 * ill-posed for entries that are sums of cancelling terms); parameters after AdamW 1e-5
 * relative + 1e-6 (lr 1e-3 moves each by at most ~1e-3, so the gradient differences above
 * can move them by ~1e-6).
 *
 * Mixed precision (precision = bf16) is checked the same way against the CPU backend's bf16
 * emulation, with bf16 tolerances: loss terms 2e-2 relative, gradients 5e-2 max|cpu| per
 * tensor (bf16 keeps 8 significant bits; the CUDA side also rounds the GEMM operands outside
 * the transformer stacks, P, dout and dS, which the CPU reference keeps in fp32; the CPU-only
 * test test_bf16_model measures bf16 against fp32 at under 1% per gradient tensor). The
 * optimiser update is not compared in bf16: Adam's first step moves every weight by about
 * lr sign(g), so an entry whose tiny gradient flips sign differs by 2 lr whatever the
 * precision, and AdamW/EMA themselves are fp32 in both modes (checked above). */
#include <math.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "core/rng.h"
#include "models/pretrain_model.h"
#include "models/unetr.h"
#include "ops/gpu_device.h"
#include "train/optim.h"
#include "seg_batch.h"
#include "test.h"
#include "test_config.h"

static const char *const small[][2] = {
    {"crop", "32,32,16"}, {"patch", "8"}, {"embed_dim", "48"}, {"depth", "2"}, {"heads", "4"},
    {"mlp_dim", "96"}, {"dec_dim", "36"}, {"dec_depth", "1"}, {"dec_heads", "4"},
    {"dec_mlp_dim", "64"}, {"head_hidden", "64"}, {"head_bottleneck", "16"}, {"head_out", "32"},
    {"casa_dim", "32"}, {"batch", "2"}, {"mask_ratio", "0.75"}, {"lr", "1e-3"},
};

static float *download_all(const AliceBackend *be, const float *buf, size_t n)
{
    float *h = xmalloc(n * sizeof(float));
    be->download(h, buf, n * sizeof(float));
    return h;
}

/* Tolerances of one precision (see the file comment). */
typedef struct {
    const char *precision;
    double loss_rel, grad_rel;
    int check_update;   /* compare parameters after AdamW and the EMA target */
} StepTolerance;
static const StepTolerance kFp32 = {"fp32", 1e-4, 2e-3, 1};
static const StepTolerance kBf16 = {"bf16", 2e-2, 5e-2, 0};

static void compare_terms(LossTerms g, LossTerms c, const char *method, double rel)
{
    char what[160];
    snprintf(what, sizeof what, "%s loss", method);
    TEST_CLOSE(g.loss, c.loss, rel, 1e-6, what);
    snprintf(what, sizeof what, "%s l_r", method);
    TEST_CLOSE(g.l_r, c.l_r, rel, 1e-6, what);
    snprintf(what, sizeof what, "%s l_dv", method);
    TEST_CLOSE(g.l_dv, c.l_dv, rel, 1e-6, what);
    snprintf(what, sizeof what, "%s l_st", method);
    TEST_CLOSE(g.l_st, c.l_st, rel, 1e-6, what);
}

/* Per tensor of the registry: |g - c| <= rel * max|c| + abs for every element. */
static void compare_tensors(const ParamSet *ps, const float *g, const float *c, double rel,
                            double abs_tol, const char *what)
{
    int bad_tensors = 0;
    for (int t = 0; t < ps->count; t++) {
        const ParamInfo *info = &ps->info[t];
        double scale = 0.0;
        for (size_t i = 0; i < info->numel; i++) scale = fmax(scale, fabs(c[info->offset + i]));
        double worst = 0.0;
        size_t worst_i = 0;
        for (size_t i = 0; i < info->numel; i++) {
            double e = fabs((double)g[info->offset + i] - c[info->offset + i]);
            if (!(e <= worst)) worst = e, worst_i = i;
        }
        if (!(worst <= rel * scale + abs_tol)) {
            bad_tensors++;
            TEST_CHECK(0, "%s %s[%zu]: gpu %.9g, cpu %.9g (max |cpu| %.3g, tol %.3g)", what,
                       info->name, worst_i, g[info->offset + worst_i], c[info->offset + worst_i],
                       scale, rel * scale + abs_tol);
        }
    }
    printf("  %s: %d tensors, %d off\n", what, ps->count, bad_tensors);
}

/* extra: {key, value} overrides of `small` (n_extra of them; NULL, 0 for none). */
static int check_method_with(const char *method, int use_casa, const StepTolerance *tol,
                             const char *const (*extra)[2], size_t n_extra)
{
    Config cfg;
    TEST_CONFIG(&cfg, small);
    for (size_t i = 0; i < n_extra; i++) config_set(&cfg, extra[i][0], extra[i][1], "test", 0);
    config_set(&cfg, "method", method, "test", 0);
    config_set(&cfg, "use_casa", use_casa ? "1" : "0", "test", 0);
    config_set(&cfg, "precision", tol->precision, "test", 0);
    /* The GPU's GEMMs outside the stacks follow the precision too (train_begin does this). */
    gpu_set_math(0, !strcmp(tol->precision, "bf16"));
    const AliceBackend *cpu = backend_cpu(), *gpu = backend_cuda();
    PretrainModel mc, mg;
    pretrain_model_init(&mc, &cfg, cpu, cfg.batch);
    pretrain_model_init(&mg, &cfg, gpu, cfg.batch);
    const size_t total = mc.online.total;
    TEST_CHECK(total == mg.online.total, "parameter counts differ: %zu vs %zu", total,
               mg.online.total);

    /* Same initial weights on both (the CPU's), and a perturbed teacher so every loss term has
     * a gradient (as test_model_grad does). */
    float *w = download_all(cpu, mc.online.data, total);
    gpu->upload(mg.online.data, w, total * sizeof(float));
    if (mc.alice) {
        float *t = download_all(cpu, mc.target.data, total);
        RngStream r;
        rng_init(&r, 11, 0, 0, RNG_TEST);
        for (size_t i = 0; i < total; i++) t[i] += 0.05f * rng_normal(&r);
        cpu->upload(mc.target.data, t, total * sizeof(float));
        gpu->upload(mg.target.data, t, total * sizeof(float));
        free(t);
    }
    size_t vox = (size_t)mc.B * mc.dims[0] * mc.dims[1] * mc.dims[2];
    float *vol = xmalloc(vox * VIEW_COUNT * sizeof(float));
    RngStream rng;
    rng_init(&rng, 5, 0, 0, RNG_TEST);
    for (size_t i = 0; i < vox * VIEW_COUNT; i++) vol[i] = rng_uniform(&rng);
    const float *views[VIEW_COUNT] = {vol, vol + vox, vol + 2 * vox, vol + 3 * vox};
    pretrain_model_set_views(&mc, views);
    pretrain_model_set_views(&mg, views);
    pretrain_model_draw_masks(&mc, 3, 0);
    pretrain_model_draw_masks(&mg, 3, 0);

    LossTerms lc = pretrain_model_forward_backward(&mc);
    LossTerms lg = pretrain_model_forward_backward(&mg);
    char what[96];
    snprintf(what, sizeof what, "%s%s %s", method, use_casa ? "" : " (no CASA)", tol->precision);
    compare_terms(lg, lc, what, tol->loss_rel);
    float *gc = download_all(cpu, mc.online.grad, total), *gg = download_all(gpu, mg.online.grad, total);
    snprintf(what, sizeof what, "%s%s %s gradients", method, use_casa ? "" : " (no CASA)",
             tol->precision);
    compare_tensors(&mc.online, gg, gc, tol->grad_rel, 1e-7, what);
    gpu_set_math(0, 0);
    if (!tol->check_update) {
        free(w); free(vol); free(gc); free(gg);
        pretrain_model_free(&mc);
        pretrain_model_free(&mg);
        return 0;
    }

    /* AdamW's first step moves each parameter by about lr * sign(g): where a gradient is
     * within its tolerance of zero the two backends may disagree on the sign and the
     * parameters by 2 lr (seen on an H200: 1-2 of ~1e5). The gradients were compared above;
     * the update is compared on identical ones, the CPU's. */
    gpu->upload(mg.online.grad, gc, total * sizeof(float));
    adamw_step(&mc.online, &cfg, cfg.lr, 1);
    adamw_step(&mg.online, &cfg, cfg.lr, 1);
    float *pc = download_all(cpu, mc.online.data, total), *pg = download_all(gpu, mg.online.data, total);
    size_t bad = 0;
    for (size_t i = 0; i < total; i++)
        if (!(fabs((double)pg[i] - pc[i]) <= 1e-5 * fabs(pc[i]) + 1e-6)) bad++;
    TEST_CHECK(bad == 0, "%s: %zu of %zu parameters differ after AdamW", method, bad, total);
    if (mc.alice) {
        ema_step(&mc.target, &mc.online, 0.99f);
        ema_step(&mg.target, &mg.online, 0.99f);
        float *tc = download_all(cpu, mc.target.data, total), *tg = download_all(gpu, mg.target.data, total);
        bad = 0;
        for (size_t i = 0; i < total; i++)
            if (!(fabs((double)tg[i] - tc[i]) <= 1e-5 * fabs(tc[i]) + 1e-6)) bad++;
        TEST_CHECK(bad == 0, "%s: %zu of %zu EMA target values differ", method, bad, total);
        free(tc);
        free(tg);
    }
    free(w); free(vol); free(gc); free(gg); free(pc); free(pg);
    pretrain_model_free(&mc);
    pretrain_model_free(&mg);
    return 0;
}

static int check_method_at(const char *method, int use_casa, const StepTolerance *tol)
{
    return check_method_with(method, use_casa, tol, NULL, 0);
}

static int check_method(const char *method, int use_casa)
{
    return check_method_at(method, use_casa, &kFp32);
}

static int test_mae(void) { return check_method("mae", 1); }
static int test_alice(void) { return check_method("alice", 1); }
static int test_alice_no_casa(void) { return check_method("alice", 0); }
/* casa_layer = transformer (the released code's CASA: multi-head, residuals, LayerNorms, a ReLU
 * feed-forward) on both backends, fp32 and bf16. */
static const char *const kCasaTransformer[][2] = {
    {"casa_layer", "transformer"}, {"casa_heads", "2"}, {"casa_ffn_dim", "24"},
};
static int test_alice_casa_transformer(void)
{
    return check_method_with("alice", 1, &kFp32, kCasaTransformer, 3) |
           check_method_with("alice", 1, &kBf16, kCasaTransformer, 3);
}
/* cls_source = encoder: l_dv's [cls] = head(cls_proj(mean of the encoder tokens)). */
static const char *const kClsEncoder[][2] = {{"cls_source", "encoder"}};
static int test_alice_cls_encoder(void)
{
    return check_method_with("alice", 1, &kFp32, kClsEncoder, 1) |
           check_method_with("alice", 1, &kBf16, kClsEncoder, 1);
}
/* casa_kv = features: CASA's keys and values read the decoder's H (fp32 with bf16 activations
 * too) and the teacher's decoder features; their gradient joins dH beside the head's. */
static const char *const kCasaFeatures[][2] = {{"casa_kv", "features"}};
static int test_alice_casa_features(void)
{
    return check_method_with("alice", 1, &kFp32, kCasaFeatures, 1) |
           check_method_with("alice", 1, &kBf16, kCasaFeatures, 1);
}
/* drop_path: the student encoder's branches dropped or scaled per sample (the same draws on
 * both backends), the unfused residual path of a dropping block in fp32 and bf16. */
static const char *const kDropPath[][2] = {{"drop_path", "0.5"}};
static int test_alice_drop_path(void)
{
    return check_method_with("alice", 1, &kFp32, kDropPath, 1) |
           check_method_with("alice", 1, &kBf16, kDropPath, 1);
}
/* The fused attention kernel inside a whole step: the GPU model's arena is planned with row
 * logsumexps instead of probabilities (attention_saved_floats), CASA's heads wider than 128
 * stay on the GEMM path; losses, gradients, AdamW and EMA as tight as with the GEMM kernel. */
static int test_alice_fused_attention(void)
{
    gpu_set_attention(ATTN_KERNEL_FUSED);
    int rc = check_method("alice", 1);
    gpu_set_attention(ATTN_KERNEL_GEMM);
    return rc;
}

/* Mixed precision: bf16 activations in the stacks (CPU emulation vs CUDA), both attention
 * kernels. */
static int test_alice_bf16(void) { return check_method_at("alice", 1, &kBf16); }
static int test_alice_bf16_fused_attention(void)
{
    gpu_set_attention(ATTN_KERNEL_FUSED);
    int rc = check_method_at("alice", 1, &kBf16);
    gpu_set_attention(ATTN_KERNEL_GEMM);
    return rc;
}

/* attention_kernel = cudnn inside a whole bf16 step (cuDNN's fused attention where it takes the
 * shape, the flash kernels elsewhere), held to the same tolerances. `small`'s head widths (12
 * and 9) are no multiples of 8, so every call here runs the flash kernels: cuDNN itself in a
 * step is the head-width-32 cases below. */
static int test_alice_bf16_cudnn_attention(void)
{
    if (!gpu_cudnn_attention_available()) {
        printf("skip: attention_kernel = cudnn: no cuDNN frontend headers in this build\n");
        return 0;
    }
    gpu_set_attention(ATTN_KERNEL_CUDNN);
    int rc = check_method_at("alice", 1, &kBf16);
    gpu_set_attention(ATTN_KERNEL_GEMM);
    return rc;
}

/* Head width 32 in the encoder and decoder (96 / 3): a width at which attention_kernel = auto
 * takes cuDNN's fused attention in bf16 (the paper's are 64 and 32); widths a multiple of 6 for
 * the 3D sin-cos positions. CASA's one head of casa_dim = 64 goes through the fp32 entry points,
 * which cuDNN does not serve: the flash kernels' fast tiles there, under fused and auto alike. */
static const char *const heads32[][2] = {
    {"embed_dim", "96"}, {"heads", "3"}, {"mlp_dim", "192"}, {"dec_dim", "96"},
    {"dec_heads", "3"}, {"dec_mlp_dim", "192"}, {"casa_dim", "64"},
};

/* A whole bf16 step at those widths with attention_kernel = kernel (set back to gemm after),
 * checked as check_method_with checks it; *built and *refused: the cuDNN attention graphs the
 * step built and refused (cuDNN's running counts before and after). */
static int heads32_step_with_attention(enum GpuAttentionKernel kernel, int *built, int *refused)
{
    int built0, refused0, built1, refused1;
    gpu_cudnn_attention_graphs(&built0, &refused0);
    gpu_set_attention(kernel);
    int rc = check_method_with("alice", 1, &kBf16, heads32, sizeof heads32 / sizeof heads32[0]);
    gpu_set_attention(ATTN_KERNEL_GEMM);
    gpu_cudnn_attention_graphs(&built1, &refused1);
    *built = built1 - built0;
    *refused = refused1 - refused0;
    return rc;
}

/* The default, attention_kernel = auto, in a whole bf16 step at those widths: cuDNN's fused
 * attention where the build has it, and it must then really have run (new cuDNN graphs built,
 * none refused: auto chose it); the fast flash tiles without it. Held to the bf16 tolerances. */
static int test_alice_bf16_auto_attention_heads32(void)
{
    int built, refused;
    int rc = heads32_step_with_attention(ATTN_KERNEL_AUTO, &built, &refused);
    printf("  auto at head width 32: %d cuDNN graphs built, %d refused (cuDNN attention %s "
           "in this build)\n", built, refused,
           gpu_cudnn_attention_available() ? "available" : "not available");
    if (gpu_cudnn_attention_available())
        TEST_CHECK(built > 0 && refused == 0, "attention_kernel = auto at head "
                   "width 32: %d cuDNN graphs built, %d refused; expected cuDNN to run every call",
                   built, refused);
    else
        TEST_CHECK(built == 0, "a build without cuDNN attention built cuDNN graphs");
    return rc;
}

/* The own flash kernels' fast tiles (register-resident, head widths 32 and 64) in a whole bf16
 * step: attention_kernel = fused at the widths where auto now takes cuDNN. */
static int test_alice_bf16_fused_attention_heads32(void)
{
    int built, refused;
    int rc = heads32_step_with_attention(ATTN_KERNEL_FUSED, &built, &refused);
    TEST_CHECK(built == 0 && refused == 0, "attention_kernel = fused asked cuDNN for %d graphs",
               built + refused);
    return rc;
}

/* The bf16 cases above run the default bf16_branch_out = 1 (the projections and fc2 stored in
 * bf16 and added to the residual stream by the LayerNorm after them, add_layernorm_fwd) at
 * `small`'s widths (48, 36: the scalar LayerNorm kernel). Here: the same at width 384 (the
 * 16-byte vector kernel), and bf16_branch_out = 0 (the residual added in the GEMM's fp32
 * store). */
static const char *const branches_small[][2] = {{"bf16_branch_out", "0"}};
static const char *const branches_384[][2] = {
    {"bf16_branch_out", "1"}, {"embed_dim", "384"}, {"heads", "6"}, {"mlp_dim", "768"},
    {"dec_dim", "384"}, {"dec_heads", "6"}, {"dec_mlp_dim", "768"},
};
static int test_alice_bf16_branch_paths(void)
{
    return check_method_with("alice", 1, &kBf16, branches_small, 1) |
           check_method_with("alice", 1, &kBf16, branches_384,
                             sizeof branches_384 / sizeof branches_384[0]);
}

/* A UNETR fine-tuning step (ViT, convolutions, instance norms, transposed convolutions, leaky
 * ReLU, channel concat, DiceCE) from the same weights and batch: ce, dice and every parameter
 * gradient, at the tolerances of the pre-training step, on tests/unit/seg_batch.h's batch; also
 * with drop-path in the ViT (the same draws on both backends). */
static const char *const unetr_small[][2] = {
    {"crop", "32,32,16"}, {"patch", "16"}, {"embed_dim", "24"}, {"depth", "4"}, {"heads", "2"},
    {"mlp_dim", "32"}, {"feature_size", "4"}, {"num_classes", "3"}, {"batch", "2"},
};

static int check_unetr_step(const char *drop_path)
{
    Config cfg;
    TEST_CONFIG(&cfg, unetr_small);
    config_set(&cfg, "drop_path", drop_path, "test", 0);
    const AliceBackend *cpu = backend_cpu(), *gpu = backend_cuda();
    UnetrModel mc, mg;
    unetr_init(&mc, &cfg, cpu, cfg.batch, 1);
    unetr_init(&mg, &cfg, gpu, cfg.batch, 1);
    const size_t total = mc.ps.total;
    TEST_CHECK(total == mg.ps.total, "UNETR parameter counts differ: %zu vs %zu", total,
               mg.ps.total);
    float *w = download_all(cpu, mc.ps.data, total);
    gpu->upload(mg.ps.data, w, total * sizeof(float));

    const long V = unetr_crop_voxels(&mc);
    float *img = xmalloc((size_t)mc.B * V * sizeof(float));
    int32_t *lab = xmalloc((size_t)mc.B * V * sizeof(int32_t));
    test_box_slab_batch(img, lab, mc.B, cfg.crop[0], cfg.crop[1], cfg.crop[2], 13);
    unetr_set_batch(&mc, img, lab);
    unetr_set_batch(&mg, img, lab);
    SegLoss lc = unetr_forward_backward(&mc);
    SegLoss lg = unetr_forward_backward(&mg);
    TEST_CLOSE(lg.ce, lc.ce, 1e-4, 1e-6, "unetr ce");
    TEST_CLOSE(lg.dice, lc.dice, 1e-4, 1e-6, "unetr dice");
    TEST_CLOSE(lg.loss, lc.loss, 1e-4, 1e-6, "unetr loss");
    float *gc = download_all(cpu, mc.ps.grad, total), *gg = download_all(gpu, mg.ps.grad, total);
    compare_tensors(&mc.ps, gg, gc, 2e-3, 1e-7, "unetr gradients");
    free(w); free(img); free(lab); free(gc); free(gg);
    unetr_free(&mc);
    unetr_free(&mg);
    return 0;
}

static int test_unetr_step(void) { return check_unetr_step("0") | check_unetr_step("0.6"); }

int main(int argc, char **argv)
{
    if (gpu_device_count() == 0) {
        printf("skip: no GPU (built without CUDA, or cudaGetDeviceCount finds no device)\n");
        return 77;
    }
    MPI_Init(&argc, &argv);
    TEST_RUN(test_mae);
    TEST_RUN(test_alice);
    TEST_RUN(test_alice_no_casa);
    TEST_RUN(test_alice_casa_transformer);
    TEST_RUN(test_alice_cls_encoder);
    TEST_RUN(test_alice_casa_features);
    TEST_RUN(test_alice_drop_path);
    TEST_RUN(test_unetr_step);
    TEST_RUN(test_alice_fused_attention);
    TEST_RUN(test_alice_bf16);
    TEST_RUN(test_alice_bf16_fused_attention);
    TEST_RUN(test_alice_bf16_cudnn_attention);
    TEST_RUN(test_alice_bf16_fused_attention_heads32);
    TEST_RUN(test_alice_bf16_auto_attention_heads32);
    TEST_RUN(test_alice_bf16_branch_paths);
    MPI_Finalize();
    return test_finish();
}
