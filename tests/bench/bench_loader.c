/* Loader throughput and matcher accuracy.
 *
 * 1. Crops per second per core for 192x192x64 crops with augmentation, cut from a synthetic
 *    256x256x160 volume held in memory (prefetch 0: everything runs on the calling core):
 *    fine-tuning crops (pos/neg centre, crop, flips/turns, intensity) and pre-training pairs
 *    (query + matched key crop, each also strongly augmented: 4 views). The reference,
 *    measured in the same run, is one memcpy of a crop's float bytes, so the ratio says how
 *    many memory copies a crop costs.
 * 2. The same with 2 prefetch threads (wall-clock throughput the training loop sees).
 *    On a GPU (data_device = gpu) the same workloads again with crops rendered by the CUDA
 *    kernel from volumes in GPU memory (threads then only make the random decisions), timed
 *    to the end of the device work; "x CPU/core" is GPU crops/s over the CPU's crops/s per
 *    core of the same workload. Without a GPU those rows are reported as skipped.
 * 3. The matcher's landmark error table on synthetic bodies (profile vs bbox baseline). */
#include <stdio.h>
#include <string.h>

#include "core/timer.h"
#include "data/match_eval.h"
#include "loader.h"
#include "ops/gpu_data.h"
#include "ops/gpu_device.h"
#include "synthetic_body.h"

static double memcpy_seconds(size_t bytes, int reps)
{
    char *a = malloc(bytes), *b = malloc(bytes);
    memset(a, 1, bytes);
    memset(b, 0, bytes);
    double t0 = wall_seconds();
    for (int i = 0; i < reps; i++) {
        a[i % bytes] = (char)i;
        memcpy(b, a, bytes);
    }
    double t = (wall_seconds() - t0) / reps;
    volatile char sink = b[bytes / 2];
    (void)sink;
    free(a);
    free(b);
    return t;
}

static double time_batches(Loader *L, LoaderMode mode, int steps, int on_gpu)
{
    /* One untimed batch fills the cache and per-case summaries. */
    if (mode == LOADER_PRETRAIN) { PretrainBatch b; loader_next_pretrain_batch(L, 0, &b); }
    else { FinetuneBatch b; loader_next_finetune_batch(L, 0, &b); }
    double t0 = wall_seconds();
    for (long s = 1; s <= steps; s++) {
        if (mode == LOADER_PRETRAIN) { PretrainBatch b; loader_next_pretrain_batch(L, s, &b); }
        else { FinetuneBatch b; loader_next_finetune_batch(L, s, &b); }
    }
    if (on_gpu) gpu_data_synchronize();
    return wall_seconds() - t0;
}

int main(void)
{
    enum { CASES = 2, BATCH = 2, STEPS = 8 };
    Volume vols[CASES];
    double t0 = wall_seconds();
    for (int i = 0; i < CASES; i++) {
        BodyCase bc = {1.0 + 0.08 * i, 1.0, 20.0 * i, 20.0 * i + 450, {1.6f, 1.6f, 2.8f}, 256};
        body_make(&bc, &vols[i]);
    }
    printf("synthetic volumes: %d x %dx%dx%d int16 (made in %.1f s)\n", CASES, vols[0].dim[0],
           vols[0].dim[1], vols[0].dim[2], wall_seconds() - t0);

    Config cfg;
    config_defaults(&cfg);
    cfg.crop[0] = 192; cfg.crop[1] = 192; cfg.crop[2] = 64;
    cfg.batch = BATCH;
    size_t crop_bytes = (size_t)192 * 192 * 64 * sizeof(float);
    double ref = memcpy_seconds(crop_bytes, 20);
    printf("reference: memcpy of one crop (%.1f MB) %.2f ms\n\n", crop_bytes / 1e6, ref * 1e3);
    const int have_gpu = gpu_device_count() > 0;
    double cpu_per_core[2] = {0, 0};   /* per workload, 0 threads */
    printf("| workload | data | threads | crops/s | crops/s per core | ms/crop | x memcpy | x CPU/core |\n"
           "|---|---|---:|---:|---:|---:|---:|---:|\n");
    for (int on_gpu = 0; on_gpu <= have_gpu; on_gpu++)
    for (int threads = 0; threads <= 2; threads += 2) {
        for (int m = 0; m < 2; m++) {
            LoaderMode mode = m ? LOADER_PRETRAIN : LOADER_FINETUNE;
            LoaderOptions o = loader_options_from_config(&cfg, mode, 0, 1, 1);
            o.prefetch = threads;
            o.validation_fold = -1;
            if (mode == LOADER_FINETUNE) o.window = (HuWindow){WINDOW_FINETUNE_LO, WINDOW_FINETUNE_HI};
            o.data_on_gpu = on_gpu;
            o.gpu_cache_bytes = 1L << 30;
            Loader *L = loader_create(&o, loader_source_memory(vols, CASES, NULL));
            double t = time_batches(L, mode, STEPS, on_gpu);
            loader_destroy(L);
            /* A pre-training sample is two crops (Q and K), each with its augmented copy. */
            int crops = STEPS * BATCH * (mode == LOADER_PRETRAIN ? 2 : 1);
            int cores = threads ? threads : 1;
            double per = t / crops;
            if (!on_gpu && threads == 0) cpu_per_core[m] = crops / t;
            printf("| %s | %s | %d | %.1f | %.1f | %.2f | %.2f | %.1f |\n",
                   mode == LOADER_PRETRAIN ? "pre-training crop (+ strong-aug copy)" : "fine-tuning crop + aug",
                   on_gpu ? "gpu" : "cpu", threads, crops / t, crops / t / cores, per * 1e3, per / ref,
                   crops / t / cpu_per_core[m]);
        }
    }
    if (!have_gpu) printf("| GPU crops (data_device = gpu) | gpu | - | skipped: no GPU | | | | |\n");
    for (int i = 0; i < CASES; i++) volume_free(&vols[i]);

    /* Matcher landmark error on bodies that differ in girth, height, spacing and field of view. */
    const BodyCase bodies[] = {
        {1.00, 1.00, 0, 450, {4, 4, 4}, 120},   {1.12, 0.92, 100, 420, {4, 4, 3}, 128},
        {0.90, 1.08, 150, 360, {4, 4, 5}, 120}, {1.05, 1.00, 60, 300, {4, 4, 3}, 128},
        {0.95, 0.95, 180, 470, {4, 4, 6}, 120}, {1.08, 1.05, 120, 330, {4, 4, 2.5}, 128},
        {1.15, 1.10, 0, 260, {4, 4, 4}, 128},   {0.92, 0.90, 200, 480, {4, 4, 4}, 120},
    };
    enum { NB = sizeof bodies / sizeof bodies[0] };
    Volume bv[NB];
    for (int i = 0; i < NB; i++) body_make(&bodies[i], &bv[i]);
    const Matcher *methods[2] = {&matcher_profile, &matcher_bbox};
    MatchReport r;
    t0 = wall_seconds();
    match_evaluate(bv, NB, methods, 2, &r);
    printf("\nmatcher on %d synthetic bodies (%.2f s):\n", NB, wall_seconds() - t0);
    match_report_print(stdout, &r, NULL);
    match_report_free(&r);
    for (int i = 0; i < NB; i++) volume_free(&bv[i]);
    return 0;
}
