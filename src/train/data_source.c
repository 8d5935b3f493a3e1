#include "train/data_source.h"

#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "core/log.h"
#include "data/phantom.h"
#include "dataset.h"

/* One context for both kinds: a packed data set, or phantoms held in memory (the memory
 * source copies on read, so the phantoms live as long as the loader). */
typedef struct {
    int max_dim[3];
    Dataset *ds;
    LoaderSource mem;
    Volume *volumes;
    int *folds;
    int count;
} SourceCtx;

static const char *src_name(void *ctx, int i)
{
    SourceCtx *s = ctx;
    return s->ds ? dataset_case(s->ds, i)->name : s->mem.case_name(s->mem.ctx, i);
}
static int src_fold(void *ctx, int i)
{
    SourceCtx *s = ctx;
    return s->ds ? dataset_case(s->ds, i)->fold : s->mem.case_fold(s->mem.ctx, i);
}
static int src_has_label(void *ctx, int i)
{
    SourceCtx *s = ctx;
    return s->ds ? dataset_case(s->ds, i)->has_label : s->mem.case_has_label(s->mem.ctx, i);
}
static void src_read(void *ctx, int i, Volume *out, VolumeAllocFn alloc)
{
    SourceCtx *s = ctx;
    if (s->ds) dataset_read_case_alloc(s->ds, i, out, alloc);
    else s->mem.read_case(s->mem.ctx, i, out, alloc);
}
static void src_close(void *ctx)
{
    SourceCtx *s = ctx;
    if (s->ds) dataset_close(s->ds);
    if (s->mem.close) s->mem.close(s->mem.ctx);
    for (int i = 0; i < s->count; i++) volume_free(&s->volumes[i]);
    free(s->volumes);
    free(s->folds);
    free(s);
}

static void grow(int max_dim[3], const int dim[3])
{
    for (int a = 0; a < 3; a++)
        if (dim[a] > max_dim[a]) max_dim[a] = dim[a];
}

void data_source_describe(const Config *cfg, double spacing[3], int *num_folds)
{
    spacing[0] = spacing[1] = spacing[2] = 0.0;
    *num_folds = cfg->num_folds;
    if (!strcmp(cfg->data, "synthetic")) return;
    Dataset *ds = dataset_open(cfg->data);
    float sp[3];
    dataset_spacing(ds, sp);
    *num_folds = dataset_num_folds(ds);
    dataset_close(ds);
    for (int a = 0; a < 3; a++) spacing[a] = sp[a];
}

LoaderSource data_source_open(const Config *cfg)
{
    SourceCtx *s = xcalloc(1, sizeof *s);
    int n;
    if (strcmp(cfg->data, "synthetic") != 0) {
        s->ds = dataset_open(cfg->data);
        n = dataset_num_cases(s->ds);
        for (int i = 0; i < n; i++) grow(s->max_dim, dataset_case(s->ds, i)->dim);
        log_info("data: %s, %d cases", cfg->data, n);
    } else {
        n = s->count = cfg->synthetic_cases;
        s->volumes = xcalloc((size_t)n, sizeof *s->volumes);
        s->folds = xcalloc((size_t)n, sizeof *s->folds);
        for (int i = 0; i < n; i++) {
            phantom_generate((uint64_t)cfg->seed, i, PHANTOM_SMALL, &s->volumes[i], NULL);
            s->folds[i] = i % cfg->num_folds;
            grow(s->max_dim, s->volumes[i].dim);
        }
        s->mem = loader_source_memory(s->volumes, n, s->folds);
        log_info("data: %d synthetic phantoms generated in memory (seed %ld)", n, cfg->seed);
    }
    return (LoaderSource){s, n, src_name, src_fold, src_has_label, src_read, src_close};
}

void data_source_largest_dims(const LoaderSource *src, int max_dim[3])
{
    const SourceCtx *s = src->ctx;
    memcpy(max_dim, s->max_dim, sizeof s->max_dim);
}
