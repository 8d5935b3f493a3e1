#include "train/data_source.h"

#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "core/log.h"
#include "data/phantom.h"
#include "dataset.h"

static const char *ds_name(void *ctx, int i) { return dataset_case(ctx, i)->name; }
static int ds_fold(void *ctx, int i) { return dataset_case(ctx, i)->fold; }
static int ds_has_label(void *ctx, int i) { return dataset_case(ctx, i)->has_label; }
static void ds_read(void *ctx, int i, Volume *out) { dataset_read_case(ctx, i, out); }
static void ds_close(void *ctx) { dataset_close(ctx); }

/* Phantoms live as long as the loader: the memory source copies on read. */
typedef struct {
    LoaderSource inner;
    Volume *volumes;
    int *folds;
    int count;
} SyntheticCtx;

static const char *syn_name(void *ctx, int i) { SyntheticCtx *s = ctx; return s->inner.case_name(s->inner.ctx, i); }
static int syn_fold(void *ctx, int i) { SyntheticCtx *s = ctx; return s->inner.case_fold(s->inner.ctx, i); }
static int syn_has_label(void *ctx, int i) { SyntheticCtx *s = ctx; return s->inner.case_has_label(s->inner.ctx, i); }
static void syn_read(void *ctx, int i, Volume *out) { SyntheticCtx *s = ctx; s->inner.read_case(s->inner.ctx, i, out); }
static void syn_close(void *ctx)
{
    SyntheticCtx *s = ctx;
    if (s->inner.close) s->inner.close(s->inner.ctx);
    for (int i = 0; i < s->count; i++) volume_free(&s->volumes[i]);
    free(s->volumes);
    free(s->folds);
    free(s);
}

LoaderSource data_source_open(const Config *cfg)
{
    if (strcmp(cfg->data, "synthetic") != 0) {
        Dataset *ds = dataset_open(cfg->data);
        log_info("data: %s, %d cases", cfg->data, dataset_num_cases(ds));
        return (LoaderSource){ds, dataset_num_cases(ds), ds_name, ds_fold, ds_has_label, ds_read, ds_close};
    }
    SyntheticCtx *s = xcalloc(1, sizeof *s);
    s->count = cfg->synthetic_cases;
    s->volumes = xcalloc((size_t)s->count, sizeof *s->volumes);
    s->folds = xcalloc((size_t)s->count, sizeof *s->folds);
    for (int i = 0; i < s->count; i++) {
        phantom_generate((uint64_t)cfg->seed, i, PHANTOM_SMALL, &s->volumes[i], NULL);
        s->folds[i] = i % cfg->num_folds;
    }
    log_info("data: %d synthetic phantoms generated in memory (seed %ld)", s->count, cfg->seed);
    s->inner = loader_source_memory(s->volumes, s->count, s->folds);
    return (LoaderSource){s, s->count, syn_name, syn_fold, syn_has_label, syn_read, syn_close};
}
