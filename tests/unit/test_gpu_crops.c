/* GPU crops (data_device = gpu) against the CPU, on a GPU; skipped elsewhere ("skip: no GPU").
 *
 * 1. The crop kernel (cuda/cuda_crops.cu) against crop_recipe_render_cpu for random recipes
 *    over a synthetic volume (starts inside, across and beyond the edges; every flip/turn;
 *    scale, shift, gamma, noise), device outputs poisoned with NaN first so an unwritten voxel
 *    fails. Tolerance: 0 (bit-identical) for every recipe without gamma -- the same per-voxel
 *    function (data/sample_voxel.h) with products and sums rounded alike (SV_MUL/SV_ADD) and the
 *    same Philox words -- and 1e-6 absolute with gamma (device powf is within 2 ulp of glibc's).
 *    Labels exact.
 * 2. The loader with data_on_gpu against the loader on the host, same options and steps:
 *    pre-training (4 views) and fine-tuning (image + labels) batches downloaded and compared
 *    with the same tolerances, also with a GPU budget below one volume (every crop cut on the
 *    host and uploaded) and one that holds a single volume (a pair's second volume falls back). */
#include <string.h>

#include "data/crop_recipe.h"
#include "gpu_volume_cache.h"
#include "loader.h"
#include "ops/gpu_data.h"
#include "ops/gpu_device.h"
#include "synthetic_body.h"
#include "test.h"

#define GAMMA_ATOL 1e-6

static Volume g_vol[2];

static void make_volumes(void)
{
    for (int i = 0; i < 2; i++) {
        BodyCase bc = {1.0 + 0.1 * i, 1.0, 30.0 * i, 30.0 * i + 400, {3.0f, 3.0f, 5.0f}, 96};
        body_make(&bc, &g_vol[i]);
    }
}

/* Worst difference of n floats (NaN counts as infinite) and label mismatches. */
static double compare(const float *a, const float *b, size_t n, const int32_t *la, const int32_t *lb,
                      long *label_bad)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = isnan(a[i]) || isnan(b[i]) ? INFINITY : fabs((double)a[i] - (double)b[i]);
        worst = d > worst ? d : worst;
    }
    *label_bad = 0;
    if (la && lb)
        for (size_t i = 0; i < n; i++) *label_bad += la[i] != lb[i];
    return worst;
}

static int test_kernel_equals_cpu(void)
{
    const Volume *v = &g_vol[0];
    const size_t nv = volume_voxels(v);
    int16_t *dimg = gpu_data_alloc(nv * sizeof(int16_t));
    uint8_t *dlab = gpu_data_alloc(nv);
    gpu_data_upload(dimg, v->image, nv * sizeof(int16_t));
    gpu_data_upload(dlab, v->label, nv);
    enum { RECIPES = 48 };
    const int size[3] = {40, 40, 24};
    const size_t n = (size_t)size[0] * size[1] * size[2];
    float *cpu = malloc(RECIPES * n * sizeof(float)), *gpu = malloc(RECIPES * n * sizeof(float));
    int32_t *cpu_l = malloc(RECIPES * n * sizeof(int32_t)), *gpu_l = malloc(RECIPES * n * sizeof(int32_t));
    float *dout = gpu_data_alloc(RECIPES * n * sizeof(float));
    int32_t *dout_l = gpu_data_alloc(RECIPES * n * sizeof(int32_t));
    for (size_t i = 0; i < RECIPES * n; i++) { gpu[i] = NAN; gpu_l[i] = -1; }
    gpu_data_upload(dout, gpu, RECIPES * n * sizeof(float));        /* poison */
    gpu_data_upload(dout_l, gpu_l, RECIPES * n * sizeof(int32_t));

    AugmentParams p = augment_params_intact();
    p.p_noise = 0.5f;
    p.p_gamma = 0.3f;
    RngStream r, noise;
    rng_init(&r, 11, 0, 0, RNG_TEST);
    CropRecipe host[RECIPES], dev[RECIPES];
    uint32_t offset = 0;
    rng_init(&noise, 11, 0, 1, RNG_AUG_NOISE);
    for (int k = 0; k < RECIPES; k++) {
        int start[3];
        for (int a = 0; a < 3; a++) start[a] = (int)rng_below(&r, (uint32_t)(v->dim[a] + size[a])) - size[a] / 2 - 4;
        AugmentDraw d;
        augment_draw(&p, size, &r, &d);
        crop_recipe_make(&host[k], v, (HuWindow){-125, 225}, start, size, &d, &noise, offset,
                         cpu + k * n, cpu_l + k * n);
        offset += crop_recipe_noise_words(&host[k]);
        crop_recipe_render_cpu(&host[k]);
        dev[k] = host[k];
        dev[k].image = dimg;
        dev[k].label = dlab;
        dev[k].out = dout + k * n;
        dev[k].out_label = dout_l + k * n;
    }
    gpu_crops_render(dev, RECIPES);
    gpu_data_download(gpu, dout, RECIPES * n * sizeof(float));
    gpu_data_download(gpu_l, dout_l, RECIPES * n * sizeof(int32_t));
    int with_gamma = 0;
    for (int k = 0; k < RECIPES; k++) {
        long bad_labels;
        double worst = compare(cpu + k * n, gpu + k * n, n, cpu_l + k * n, gpu_l + k * n, &bad_labels);
        double tol = host[k].gamma != 1.0f ? GAMMA_ATOL : 0.0;
        with_gamma += host[k].gamma != 1.0f;
        TEST_CHECK(worst <= tol, "recipe %d (rot %d flips %d%d%d scale %g shift %g gamma %g noise %g): "
                   "worst |gpu - cpu| %.3g > %.3g", k, host[k].rot90, host[k].flip[0], host[k].flip[1],
                   host[k].flip[2], host[k].scale, host[k].shift, host[k].gamma, host[k].noise_std, worst, tol);
        TEST_CHECK(bad_labels == 0, "recipe %d: %ld labels differ", k, bad_labels);
    }
    printf("    %d recipes (%d with gamma) of %dx%dx%d compared\n", RECIPES, with_gamma, size[0], size[1], size[2]);
    gpu_data_free(dimg); gpu_data_free(dlab); gpu_data_free(dout); gpu_data_free(dout_l);
    free(cpu); free(gpu); free(cpu_l); free(gpu_l);
    return 0;
}

static LoaderOptions options(LoaderMode mode)
{
    Config cfg;
    config_defaults(&cfg);
    cfg.crop[0] = 48; cfg.crop[1] = 48; cfg.crop[2] = 32;
    cfg.batch = 3;
    cfg.prefetch = 1;
    LoaderOptions o = loader_options_from_config(&cfg, mode, 0, 1, 1);
    o.validation_fold = -1;
    o.aug_masked = augment_params_intact();   /* every augmentation on the masked views too */
    o.aug_finetune = augment_params_intact();
    return o;
}

/* Steps 0..2 of a GPU loader against a host loader; returns host crops made by the GPU one. */
static long compare_loaders(LoaderMode mode, long budget)
{
    LoaderOptions host = options(mode), gpu = options(mode);
    gpu.data_on_gpu = 1;
    gpu.gpu_cache_bytes = budget;
    Loader *a = loader_create(&host, loader_source_memory(g_vol, 2, NULL));
    Loader *b = loader_create(&gpu, loader_source_memory(g_vol, 2, NULL));
    const size_t n = (size_t)3 * 48 * 48 * 32;
    float *down = malloc(n * sizeof(float));
    int32_t *down_l = malloc(n * sizeof(int32_t));
    for (long step = 0; step < 3; step++) {
        if (mode == LOADER_PRETRAIN) {
            PretrainBatch x, y;
            loader_next_pretrain_batch(a, step, &x);
            loader_next_pretrain_batch(b, step, &y);
            TEST_CHECK(!x.on_device && y.on_device, "on_device flags %d %d", x.on_device, y.on_device);
            const float *hv[4] = {x.query, x.key, x.query_intact, x.key_intact};
            const float *dv[4] = {y.query, y.key, y.query_intact, y.key_intact};
            for (int v = 0; v < 4; v++) {
                gpu_data_download(down, dv[v], n * sizeof(float));
                long unused;
                double worst = compare(hv[v], down, n, NULL, NULL, &unused);
                TEST_CHECK(worst <= GAMMA_ATOL, "pre-training step %ld view %d budget %ld: worst %.3g",
                           step, v, budget, worst);
            }
            TEST_CHECK(!memcmp(x.query_case, y.query_case, 3 * sizeof(int)), "query cases differ");
        } else {
            FinetuneBatch x, y;
            loader_next_finetune_batch(a, step, &x);
            loader_next_finetune_batch(b, step, &y);
            gpu_data_download(down, y.image, n * sizeof(float));
            gpu_data_download(down_l, y.label, n * sizeof(int32_t));
            long bad_labels;
            double worst = compare(x.image, down, n, x.label, down_l, &bad_labels);
            TEST_CHECK(worst <= GAMMA_ATOL && bad_labels == 0, "fine-tuning step %ld budget %ld: worst "
                       "%.3g, %ld labels differ", step, budget, worst, bad_labels);
        }
    }
    long host_crops = loader_cache_stats(b).host_crops;
    free(down);
    free(down_l);
    loader_destroy(a);
    loader_destroy(b);
    return host_crops;
}

static int test_loader_gpu_equals_host(void)
{
    const long all = 1L << 30, none = 1024, one = (long)gpu_volume_bytes(&g_vol[1], 1) + 16;
    TEST_CHECK(compare_loaders(LOADER_PRETRAIN, all) == 0, "host crops with room for every volume");
    TEST_CHECK(compare_loaders(LOADER_FINETUNE, all) == 0, "host crops with room for every volume");
    TEST_CHECK(compare_loaders(LOADER_PRETRAIN, none) == 3 * 3 * 4, "every crop on the host when no volume fits");
    TEST_CHECK(compare_loaders(LOADER_FINETUNE, none) == 3 * 3, "every crop on the host when no volume fits");
    long some = compare_loaders(LOADER_PRETRAIN, one);
    TEST_CHECK(some > 0 && some < 3 * 3 * 4, "one-volume budget: %ld host crops", some);
    return 0;
}

int main(void)
{
    if (gpu_device_count() == 0) {
        printf("skip: no GPU (GPU crops are compared with the CPU where one is visible)\n");
        return 77;
    }
    make_volumes();
    TEST_RUN(test_kernel_equals_cpu);
    TEST_RUN(test_loader_gpu_equals_host);
    for (int i = 0; i < 2; i++) volume_free(&g_vol[i]);
    return test_finish();
}
