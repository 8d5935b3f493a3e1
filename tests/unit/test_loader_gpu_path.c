/* The loader's data_device = gpu path on any machine: this test stands in for the GPU by
 * defining the functions of ops/gpu_data.h over host memory (so libalice's stub or CUDA
 * versions are not linked in): device buffers are malloc'ed and poisoned (NaN / -1),
 * transfers are memcpy, and the "kernel" renders each recipe with crop_recipe_render_cpu,
 * the per-voxel code the CUDA kernel runs. Everything else is the real loader: recipes made by
 * the prefetch threads, the GPU volume cache with its budget and LRU, host fallbacks, the
 * mapping of recipes to batch buffers, reference counts, jumps. Checked against the loader's
 * host path on the same options: identical bytes, every step, both modes, 0 and 2 threads,
 * budgets that hold every volume, none, or one; volume uploads and host crops counted; no
 * device buffer left at loader_destroy. (test_gpu_crops compares the real kernel on a GPU.) */
#include <string.h>

#include "data/crop_recipe.h"
#include "gpu_volume_cache.h"
#include "loader.h"
#include "ops/gpu_data.h"
#include "synthetic_body.h"
#include "test.h"

/* ---- the emulated device ---------------------------------------------------------------- */

static long g_live_buffers, g_rendered;
static size_t g_free_bytes = (size_t)1 << 40;   /* what the emulated device reports free */

void *gpu_pinned_alloc(size_t bytes) { return malloc(bytes ? bytes : 1); }
void gpu_pinned_free(void *ptr) { free(ptr); }
void *gpu_data_alloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    memset(p, 0xff, bytes);   /* NaN as float, -1 as int32: unwritten voxels cannot match */
    g_live_buffers++;
    return p;
}
void gpu_data_free(void *ptr)
{
    if (!ptr) return;
    g_live_buffers--;
    free(ptr);
}
size_t gpu_data_free_bytes(void) { return g_free_bytes; }
void gpu_data_upload(void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }
void gpu_data_upload_async(void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }
void gpu_data_synchronize(void) {}
void gpu_data_download(void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }
void gpu_crops_render(const struct CropRecipe *recipes, int count)
{
    for (int i = 0; i < count; i++) crop_recipe_render_cpu(&recipes[i]);
    g_rendered += count;
}

/* ---- the test ------------------------------------------------------------------------------ */

enum { B = 3, STEPS = 4, CASES = 3 };
static const int kCrop[3] = {32, 32, 16};
static Volume g_vol[CASES];

static LoaderOptions options(LoaderMode mode, int threads)
{
    Config cfg;
    config_defaults(&cfg);
    memcpy(cfg.crop, kCrop, sizeof cfg.crop);
    cfg.batch = B;
    cfg.prefetch = threads;
    LoaderOptions o = loader_options_from_config(&cfg, mode, 0, 1);
    o.validation_fold = -1;
    o.aug_masked = augment_params_intact();   /* every augmentation on, noise and gamma often */
    o.aug_masked.p_noise = o.aug_masked.p_gamma = 0.5f;
    o.aug_intact = o.aug_masked;
    o.aug_finetune = o.aug_masked;
    return o;
}

typedef struct { long host_crops, uploads; } RunCounts;

/* Steps 0..STEPS-1, then a jump back to step 1: the emulated-GPU loader against the host one. */
static RunCounts compare(LoaderMode mode, int threads, long budget)
{
    LoaderOptions host = options(mode, threads), gpu = options(mode, threads);
    gpu.data_on_gpu = 1;
    gpu.gpu_cache_bytes = budget;
    Loader *a = loader_create(&host, loader_source_memory(g_vol, CASES, NULL));
    Loader *b = loader_create(&gpu, loader_source_memory(g_vol, CASES, NULL));
    const size_t n = (size_t)B * kCrop[0] * kCrop[1] * kCrop[2];
    const long steps[] = {0, 1, 2, 3, 1};
    for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++) {
        long step = steps[k];
        if (mode == LOADER_PRETRAIN) {
            PretrainBatch x, y;
            loader_next_pretrain_batch(a, step, &x);
            loader_next_pretrain_batch(b, step, &y);
            TEST_CHECK(!x.on_device && y.on_device, "on_device %d %d", x.on_device, y.on_device);
            const float *hv[4] = {x.query, x.key, x.query_intact, x.key_intact};
            const float *dv[4] = {y.query, y.key, y.query_intact, y.key_intact};
            for (int v = 0; v < 4; v++)
                TEST_CHECK(!memcmp(hv[v], dv[v], n * sizeof(float)), "pre-training step %ld view %d "
                           "(threads %d, budget %ld) differs from the host loader", step, v, threads, budget);
            TEST_CHECK(!memcmp(x.query_case, y.query_case, B * sizeof(int)) &&
                       !memcmp(x.key_center, y.key_center, B * sizeof *x.key_center) &&
                       !memcmp(x.query_aug, y.query_aug, B * sizeof *x.query_aug), "metadata differ");
        } else {
            FinetuneBatch x, y;
            loader_next_finetune_batch(a, step, &x);
            loader_next_finetune_batch(b, step, &y);
            TEST_CHECK(!x.on_device && y.on_device, "on_device %d %d", x.on_device, y.on_device);
            TEST_CHECK(!memcmp(x.image, y.image, n * sizeof(float)) &&
                       !memcmp(x.label, y.label, n * sizeof(int32_t)),
                       "fine-tuning step %ld (threads %d, budget %ld) differs from the host loader",
                       step, threads, budget);
            TEST_CHECK(!memcmp(x.case_index, y.case_index, B * sizeof(int)), "cases differ");
        }
    }
    LoaderCacheStats s = loader_cache_stats(b);
    RunCounts c = {s.host_crops, s.gpu_uploads};
    loader_destroy(a);
    loader_destroy(b);
    TEST_CHECK(g_live_buffers == 0, "%ld device buffers left after loader_destroy", g_live_buffers);
    return c;
}

static int test_gpu_path_equals_host(void)
{
    const long all = 1L << 30, none = 64;
    for (int threads = 0; threads <= 2; threads += 2)
        for (int m = 0; m < 2; m++) {
            LoaderMode mode = m ? LOADER_PRETRAIN : LOADER_FINETUNE;
            const int views = mode == LOADER_PRETRAIN ? 4 : 1;
            long before = g_rendered;
            RunCounts c = compare(mode, threads, all);
            TEST_CHECK(c.host_crops == 0, "%ld host crops with room for every volume", c.host_crops);
            TEST_CHECK(c.uploads >= 1 && c.uploads <= CASES, "%ld volume uploads for %d cases "
                       "(each goes up once)", c.uploads, CASES);
            TEST_CHECK(g_rendered - before == 5L * B * views, "%ld crops rendered, expected %d",
                       g_rendered - before, 5 * B * views);
            c = compare(mode, threads, none);
            TEST_CHECK(c.host_crops == 5L * B * views && c.uploads == 0,
                       "no volume fits: %ld host crops (expected %d), %ld uploads", c.host_crops,
                       5 * B * views, c.uploads);
        }
    return 0;
}

static int test_budget_of_one_volume(void)
{
    /* Room for the largest volume only: a pre-training pair's second volume is cut on the host
     * (the first is pinned for the batch), and volumes are evicted and uploaded again. */
    size_t largest = 0;
    for (int i = 0; i < CASES; i++) {
        size_t b = gpu_volume_bytes(&g_vol[i], 0);
        largest = b > largest ? b : largest;
    }
    RunCounts c = compare(LOADER_PRETRAIN, 0, (long)largest + 1);
    TEST_CHECK(c.host_crops > 0 && c.host_crops < 5L * B * 4, "%ld host crops", c.host_crops);
    TEST_CHECK(c.uploads > 1, "%ld uploads: expected evictions and new uploads", c.uploads);
    /* The same budget reached the other way: gpu_cache_mb asks for plenty, but the device has
     * only the 1 GiB reserve plus one volume free, so the loader lowers the budget. */
    g_free_bytes = ((size_t)1 << 30) + largest + 1;
    RunCounts d = compare(LOADER_PRETRAIN, 0, 1L << 40);
    g_free_bytes = (size_t)1 << 40;
    TEST_CHECK(d.host_crops == c.host_crops && d.uploads == c.uploads, "free-memory limit: %ld host "
               "crops and %ld uploads, expected %ld and %ld as with the same budget set directly",
               d.host_crops, d.uploads, c.host_crops, c.uploads);
    return 0;
}

int main(void)
{
    for (int i = 0; i < CASES; i++) {
        BodyCase bc = {1.0 + 0.1 * i, 1.0, 25.0 * i, 25.0 * i + 400, {6.0f, 6.0f, 9.0f}, 48};
        body_make(&bc, &g_vol[i]);
    }
    TEST_RUN(test_gpu_path_equals_host);
    TEST_RUN(test_budget_of_one_volume);
    for (int i = 0; i < CASES; i++) volume_free(&g_vol[i]);
    return test_finish();
}
