#include "train/finetune.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <errno.h>
#include <unistd.h>

#include <mpi.h>

#include "core/check.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/preempt.h"
#include "core/rng.h"
#include "core/timer.h"
#include "data/crop.h"
#include "eval/sliding_window.h"
#include "loader.h"
#include "models/unetr.h"
#include "train/checkpoint.h"
#include "train/data_source.h"
#include "train/dist.h"
#include "train/optim.h"
#include "train/runlog.h"
#include "train/step_bench.h"
#include "train/step_graph.h"
#include "train/train_common.h"

enum { COL_LOSS, COL_CE, COL_DICE, COL_LR, COL_GNORM, COL_MS, COL_SPS, COL_COUNT };
static const char *const log_columns[] = {"loss", "ce", "dice", "lr", "grad_norm", "ms_per_step",
                                          "samples_per_s", NULL};

#define BEST_CKPT "ckpt_best.h5"
#define VAL_CSV "val.csv"

/* MONAI's UNETR BTCV recipe (tutorial + research-contributions, item by item in
 * docs/MODEL.md): ScaleIntensityRanged a_min -175, a_max 250; RandCropByPosNegLabeld 96^3,
 * pos = neg = 1, num_samples 4; AdamW(lr 1e-4, weight_decay 1e-5), default betas; 25000
 * iterations, validation every 500 with sliding windows of 96^3 at research-contributions'
 * overlap 0.5 (the tutorial's: 0.25), warm-up then cosine lr (research-contributions).
 * Not num_samples: crops_per_case stays 1 here (batch 4 is then 4 volumes a step;
 * jobs/finetune_btcv.cfg sets 4, the recipe's 4 crops of one volume), so job files with a
 * batch that 4 does not divide keep working. */
static const char *const kFinetuneDefaults[][2] = {
    {"window_lo", "-175"}, {"window_hi", "250"}, {"crop", "96,96,96"}, {"batch", "4"},
    {"pos_fraction", "0.5"}, {"lr", "1e-4"}, {"min_lr", "0"}, {"weight_decay", "1e-5"},
    {"beta1", "0.9"}, {"beta2", "0.999"}, {"clip", "0"}, {"steps", "25000"},
    {"warmup", "500"}, {"val_every", "500"}, {"ckpt_every", "500"}, {"run_dir", "runs/finetune"},
};

int finetune_default_count(void)
{
    return (int)(sizeof kFinetuneDefaults / sizeof kFinetuneDefaults[0]);
}

const char *finetune_default_key(int i) { return kFinetuneDefaults[i][0]; }
const char *finetune_default_value(int i) { return kFinetuneDefaults[i][1]; }

void finetune_config_defaults(Config *cfg)
{
    for (int i = 0; i < finetune_default_count(); i++)
        config_set(cfg, kFinetuneDefaults[i][0], kFinetuneDefaults[i][1], "fine-tuning defaults",
                   0);
}

double case_mean_dice(const uint8_t *pred, const int32_t *truth, size_t n, int K)
{
    long *inter = xcalloc((size_t)K, sizeof(long)), *np = xcalloc((size_t)K, sizeof(long)),
         *ng = xcalloc((size_t)K, sizeof(long));
    for (size_t i = 0; i < n; i++) {
        int p = pred[i], g = truth[i];
        if (p < K) np[p]++;
        if (g >= 0 && g < K) ng[g]++;
        if (p == g && p < K) inter[p]++;
    }
    double sum = 0.0;
    int counted = 0;
    for (int k = 1; k < K; k++) {
        if (ng[k] == 0) continue;   /* MONAI DiceMetric's ignore_empty: no truth, no score */
        sum += 2.0 * inter[k] / (double)(np[k] + ng[k]);
        counted++;
    }
    free(inter);
    free(np);
    free(ng);
    return counted ? sum / counted : NAN;
}

/* Mean Dice over the held-out cases; ranks split the cases (case j goes to rank j % size). */
static double validate(UnetrModel *m, Loader *loader, const Dist *d)
{
    const int *cases;
    int nval = loader_validation_cases(loader, &cases);
    SlidingWindow sw = {{m->cfg.crop[0], m->cfg.crop[1], m->cfg.crop[2]}, m->K, m->B,
                        m->cfg.sw_overlap, SW_SIGMA_SCALE, unetr_predict, m, m->be};
    double sum = 0.0, scored = 0.0;
    for (int j = d->rank; j < nval; j += d->size) {
        WindowedCase c;
        loader_read_full_case(loader, cases[j], &c);
        size_t n = (size_t)c.dim[0] * c.dim[1] * c.dim[2];
        uint8_t *pred = xmalloc(n);
        sliding_window_argmax(&sw, c.image, c.dim, pred, NULL);
        const double dice = case_mean_dice(pred, c.label, n, m->K);
        if (!isnan(dice)) {   /* a case without organs has no score */
            sum += dice;
            scored += 1.0;
        }
        free(pred);
        windowed_case_free(&c);
    }
    sum = dist_sum_double(sum);
    scored = dist_sum_double(scored);
    return scored > 0 ? sum / scored : 0.0;
}

/* val.csv keeps the rows of steps up to `upto` (a resumed run rewrites what came after) and
 * returns the best mean Dice among them (-1 when none); *has_upto: whether step upto has a
 * row, *upto_dice its Dice (-1 when none). Rank 0 only. */
static double val_csv_restore(const char *run_dir, long upto, int *has_upto, double *upto_dice)
{
    *has_upto = 0;
    *upto_dice = -1.0;
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/%s", run_dir, VAL_CSV);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    double best = -1.0;
    FILE *in = fopen(path, "r");
    FILE *out = fopen(tmp, "w");
    if (!out) alice_die("%s: cannot write (%s); check that the run directory is writable", tmp, strerror(errno));
    fprintf(out, "step,mean_dice\n");
    if (in) {
        char line[256];
        while (fgets(line, sizeof line, in)) {
            long s;
            double v;
            if (sscanf(line, "%ld,%lf", &s, &v) != 2 || s > upto) continue;
            fputs(line, out);   /* as written: the value exact (val_csv_append) */
            if (!strchr(line, '\n')) fputc('\n', out);   /* a last row cut short */
            if (v > best) best = v;
            if (s == upto) {
                *has_upto = 1;
                *upto_dice = v;
            }
        }
        fclose(in);
    }
    commit_stream(out, tmp, path);
    return best;
}

/* Of run_dir's discarded_best_step<N>.h5 files (each job killed between checkpoints after a
 * new best sets one aside), only the one with the highest Dice is kept (ties: the newest): a
 * model someone may want is that one, and each file is a whole model (about 1 GB for the
 * ViT-B UNETR) that a run preempted often would otherwise pile up. Files that cannot be read
 * are left alone. Rank 0 only. */
static void keep_best_discarded(const char *run_dir)
{
    DIR *d = opendir(run_dir);
    if (!d) return;
    char keep[4200] = "";
    double keep_dice = -INFINITY;
    long keep_step = -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        long step;
        char expect[96], path[4200];
        if (sscanf(e->d_name, "discarded_best_step%ld", &step) != 1) continue;
        snprintf(expect, sizeof expect, "discarded_best_step%ld.h5", step);
        if (strcmp(expect, e->d_name)) continue;
        snprintf(path, sizeof path, "%s/%s", run_dir, e->d_name);
        if (!checkpoint_intact(path)) continue;
        const double dice = checkpoint_metric(path);
        if (isnan(dice)) continue;
        const int better = dice > keep_dice || (dice == keep_dice && step > keep_step);
        const char *drop = better ? keep : path;
        if (drop[0]) {
            if (unlink(drop) == 0)
                log_info("removed %s: %s holds a discarded best of a higher Dice (or a newer "
                         "one of the same)", drop, better ? path : keep);
            else
                log_warn("cannot remove %s (%s), a discarded best below another", drop,
                         strerror(errno));
        }
        if (better) {
            snprintf(keep, sizeof keep, "%s", path);
            keep_dice = dice;
            keep_step = step;
        }
    }
    closedir(d);
}

/* A ckpt_best.h5 of a step after `start`, the step a run resumes from, was written by the
 * steps the resume discards (a crash between checkpoints, a resume from an earlier one): its
 * weights and Dice are in no kept val.csv row. It is set aside (not deleted: it may be the
 * model wanted) and the best restarts, so the next validation writes ckpt_best.h5 again.
 * Returns the best to go on with. Rank 0 only. */
static double set_aside_discarded_best(const char *run_dir, long start, double best)
{
    char path[4096], aside[4200];
    snprintf(path, sizeof path, "%s/%s", run_dir, BEST_CKPT);
    if (access(path, F_OK) != 0) return best;
    if (!checkpoint_intact(path)) {
        /* a resume never reads it: a crash while it was written must not stop the run */
        snprintf(aside, sizeof aside, "%s/%s.damaged", run_dir, BEST_CKPT);
        if (rename(path, aside) != 0)
            alice_die("%s is damaged (truncated or unreadable) and cannot be set aside as %s "
                      "(%s): move it away to resume", path, aside, strerror(errno));
        log_warn("%s is damaged (truncated or unreadable; a crash while it was written?): set "
                 "aside as %s; ckpt_best.h5 will be the best validation from step %ld on", path,
                 aside, start);
        return -1.0;
    }
    const long step = checkpoint_step(path);
    if (step <= start) return best;
    snprintf(aside, sizeof aside, "%s/discarded_best_step%ld.h5", run_dir, step);
    if (rename(path, aside) != 0)
        alice_die("%s: cannot rename it to %s (%s); check that the run directory is writable",
                  path, aside, strerror(errno));
    log_warn("%s is of step %ld, after step %ld this run resumes from: the steps that wrote it "
             "are discarded, so it is set aside as %s; the best of the kept validations (Dice "
             "%.4f) has no weights on disk, and ckpt_best.h5 will be the best validation from "
             "step %ld on", path, step, start, aside, best, start);
    keep_best_discarded(run_dir);
    return -1.0;
}

/* The best validation Dice a resumed run goes on from (rank 0 only): the one the checkpoint it
 * resumes from recorded (the run's best up to its step, the Dice of its ckpt_best.h5; -1 after a
 * set-aside restarted it), else (an older alice's checkpoint, without one) val.csv's best. Not
 * val.csv's first: rows lost in a crash before they reached the disk would lower it, and a later,
 * worse validation would replace ckpt_best.h5; after a set-aside its best has no weights on
 * disk. The one validation the recorded best can lack is the one after the checkpoint's own
 * step (start_dice, -1 when val.csv has none): a preempted run skipped it and wrote the
 * checkpoint, the next start gave it and may have written ckpt_best.h5 from it before a crash.
 * -1 when run_dir holds no ckpt_best.h5 (a --resume from another run_dir, the file removed),
 * so the next validation writes one. */
static double resumed_best(const char *ckpt, const char *run_dir, double csv_best,
                           double start_dice)
{
    double best = csv_best;
    const double recorded = checkpoint_metric(ckpt);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", run_dir, BEST_CKPT);
    const int best_on_disk = access(path, F_OK) == 0;
    if (isfinite(recorded)) {
        if (recorded > csv_best && best_on_disk)
            log_warn("%s/%s holds no validation as good as the best Dice %.4f that %s recorded "
                     "(rows lost in a crash, or removed): the run goes on from that best, so only "
                     "a better validation replaces %s", run_dir, VAL_CSV, recorded, ckpt,
                     BEST_CKPT);
        best = recorded;
    }
    if (start_dice > best) best = start_dice;
    if (best >= 0 && !best_on_disk) {
        log_info("%s holds no %s (best Dice so far %.4f): the next validation writes it",
                 run_dir, BEST_CKPT, best);
        best = -1.0;
    }
    return best;
}

static void val_csv_append(const char *run_dir, long step, double dice)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", run_dir, VAL_CSV);
    FILE *f = fopen(path, "a");
    if (!f) alice_die("%s: cannot append (%s); check that the run directory is writable", path, strerror(errno));
    /* every digit: a resumed run's best (val_csv_restore) is the uninterrupted run's double,
     * so both take the same "new best" decisions. On the disk before a checkpoint can follow
     * (rows lost in a crash would lower the best a resumed run of an older alice's checkpoint
     * goes on from, resumed_best). */
    fprintf(f, "%ld,%.17g\n", step, dice);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0 || fclose(f) != 0)
        alice_die("%s: cannot append (%s; disk full?)", path, strerror(errno));
}

/* The step's forward and backward as StepGraph work (train/step_graph.h): no host waits. */
static void enqueue_step(void *model) { unetr_enqueue_step(model); }

/* One step's forward + backward through the step graph (eager warm-up, then recorded once and
 * replayed, or eager throughout), then its loss: the one read-back of the step. The batch was
 * copied into the model's image and label buffers before (fixed addresses the graph reads);
 * the all-reduce and optimiser after it run eagerly on the gradients the graph left. */
static SegLoss forward_backward(StepGraph *graph, UnetrModel *m)
{
    step_graph_run(graph, enqueue_step, m);
    return unetr_read_losses(m);
}

/* What a step's micro-batches (train_accumulate_step) work on: the training loop's, which
 * read the loader, or the benchmark's (loader NULL), which reuse the batch left in the
 * model's buffers. */
typedef struct {
    UnetrModel *m;
    const Config *cfg;
    const Dist *dist;
    GradSync *sync;
    StepGraph *graph;
    Loader *loader;
} StepCtx;

/* The loader's micro-batch u = step x accum_steps + micro into the model's fixed buffers
 * (BEFORE the step's recorded work), and the drop-path draws of its samples (keyed by their
 * global indices). Labels were checked against num_classes when each case was read. */
static void load_micro_batch(StepCtx *c, long step, int micro)
{
    const long u = step * c->cfg->accum_steps + micro;   /* the loader's micro-step */
    FinetuneBatch batch;
    loader_next_finetune_batch(c->loader, u, &batch);
    const size_t crop_vox = (size_t)unetr_crop_voxels(c->m);
    if (batch.on_device) {
        /* device = cuda: the loader uploaded (or rendered) the batch into GPU memory, on its
         * upload stream while the previous step computed (io/loader.h). */
        c->m->be->copy(c->m->image, batch.image, (size_t)c->m->B * crop_vox * sizeof(float));
        c->m->be->copy(c->m->label, batch.label, (size_t)c->m->B * crop_vox * sizeof(int32_t));
    } else {
        unetr_set_batch(c->m, batch.image, batch.label);
    }
    unetr_draw_drop_path(c->m, step, loader_global_sample(c->loader, u, 0));
}

/* One micro-batch (MicroBatchStep): terms = loss, ce, dice. */
static void micro_batch_step(void *ctx, long step, int micro, double *terms)
{
    StepCtx *c = ctx;
    if (c->loader) load_micro_batch(c, step, micro);
    const SegLoss t = forward_backward(c->graph, c->m);
    terms[0] = t.loss;
    terms[1] = t.ce;
    terms[2] = t.dice;
}

/* Forward + backward of a whole step (its accum_steps micro-batches), then the optimiser
 * (all-reduce, guard, clipping, AdamW); terms averaged over micro-batches and ranks. */
static StepOutcome whole_step(StepCtx *c, long step, double terms[3], float *lr, double *gnorm)
{
    train_accumulate_step(c->cfg, &c->m->ps, c->sync, step, micro_batch_step, c, terms, 3);
    return train_optimizer_step(c->cfg, c->dist, c->sync, terms, 3, step, lr, gnorm, NULL);
}

/* The benchmark's step (train/step_bench.h): the loop's own step on the batch left in the
 * model's buffers, its drop-path draws made untimed, once for all micro-batches. */
static void bench_prepare(void *ctx, long s)
{
    StepCtx *c = ctx;
    unetr_draw_drop_path(c->m, s, 0);
}

static void bench_step(void *ctx, long s)
{
    double terms[3];
    float lr;
    double gnorm;
    const StepOutcome outcome = whole_step(ctx, s, terms, &lr, &gnorm);
    train_bench_require_applied(outcome, s, terms[0]);
}

/* --bench-steps: the step's timing on random crops (uniform intensities, labels uniform in
 * 0..K-1) of crop x batch, through the same step graph and optimiser as the loop; no data
 * file, nothing written. */
static void run_bench(UnetrModel *m, const Config *cfg, const Dist *dist, long steps)
{
    const size_t n = (size_t)m->B * (size_t)unetr_crop_voxels(m);
    float *image = xmalloc(n * sizeof(float));
    int32_t *label = xmalloc(n * sizeof(int32_t));
    step_bench_uniform(image, n, (uint64_t)cfg->seed);
    RngStream rng;   /* sample 1: a stream apart from the image's (sample 0) */
    rng_init(&rng, (uint64_t)cfg->seed, 0, 1, RNG_TEST);
    for (size_t i = 0; i < n; i++) label[i] = (int32_t)rng_below(&rng, (uint32_t)m->K);
    unetr_set_batch(m, image, label);
    GradSync sync;
    train_grad_sync_init(&sync, cfg, dist, &m->ps);
    StepGraph graph;
    train_step_graph_init(&graph, m->be, cfg, &sync);
    m->zero_grads_in_step = cfg->accum_steps == 1;   /* as the loop: zeroed once per step */
    StepCtx ctx = {m, cfg, dist, &sync, &graph, NULL};
    BenchStep step = {bench_prepare, bench_step, &ctx};
    double med = step_bench_median_seconds(m->be, steps, &step);
    step_bench_report("unetr", cfg, m->B, med, unetr_step_flops(m), &graph);
    step_graph_free(&graph);
    grad_sync_free(&sync);
    free(image);
    free(label);
}

static void save(const UnetrModel *m, const Dist *d, const char *name, long step, double metric)
{
    if (d->rank == 0) checkpoint_save(m->cfg.run_dir, name, step, &m->cfg, "finetune", &m->ps, NULL, metric);
    CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD));
}

/* The validation after step `done` (1-based count of steps done): mean Dice over the held-out
 * cases, its val.csv row, and ckpt_best.h5 when it beats *best. Collective. */
static void validate_after(UnetrModel *m, Loader *loader, const Dist *d, long done, int nval,
                           double *best)
{
    double tv = wall_seconds();
    double dice = validate(m, loader, d);
    int improved = dice > *best;
    if (improved) *best = dice;
    log_info("validation after step %ld: mean Dice %.4f over %d cases (best %.4f)%s, %.1f s",
             done, dice, nval, *best, improved ? ", new best" : "", wall_seconds() - tv);
    if (d->rank == 0) val_csv_append(m->cfg.run_dir, done, dice);
    if (improved) save(m, d, BEST_CKPT, done, dice);
}

typedef struct {
    const UnetrModel *model;
    const Dist *dist;
    double best;
    RunLog *log;
} PeriodicSave;

static void save_periodic(void *ctx, long steps_done)
{
    PeriodicSave *p = ctx;
    runlog_sync(p->log);   /* the rows before this step survive a crash with the checkpoint */
    save(p->model, p->dist, NULL, steps_done, p->best);
}

int finetune_run(const Config *cfg, const FinetuneOptions *opt)
{
    Dist dist;
    const AliceBackend *be = train_begin(cfg, &dist);
    train_signals(opt->bench_steps);
    UnetrModel model;
    unetr_init(&model, cfg, be, cfg->batch, 1);
    log_info("model: UNETR, ViT %dx%d (%d heads, mlp %d), feature size %d, %d classes, crop %dx%dx%d "
             "-> %d tokens, skips from blocks %d, %d, %d", cfg->depth, cfg->embed_dim, cfg->heads,
             cfg->mlp_dim, cfg->feature_size, cfg->num_classes, cfg->crop[0], cfg->crop[1],
             cfg->crop[2], model.N, model.skip_block[0], model.skip_block[1], model.skip_block[2]);
    log_info("parameters: %zu (%.1f MiB with gradients and AdamW moments), activations %.1f MiB "
             "per rank, batch %d per rank x %d ranks", params_numel(&model.ps),
             model.ps.total * 16.0 / 1048576.0,
             model.arena.cap / 1048576.0, model.B, dist.size);
    train_log_drop_path(cfg, model.drop_host != NULL, "the ViT's");
    if (cfg->layer_decay < 1.0f)
        log_info("layer-wise lr decay %g: the ViT's patch embedding at lr x %.3g, block 0 at lr x "
                 "%.3g, block %d at lr x %g, the rest at lr (the logged lr)", cfg->layer_decay,
                 unetr_layer_lr_scale(&model, model.vit.pe_b, cfg->layer_decay),
                 unetr_layer_lr_scale(&model, model.vit.stack.blk[0].qkv_w, cfg->layer_decay),
                 cfg->depth - 1,
                 unetr_layer_lr_scale(&model, model.vit.stack.blk[cfg->depth - 1].qkv_w,
                                      cfg->layer_decay));
    train_check_memory(be, model.arena.cap + model.ps.total * sizeof(float) * 4, &dist, "fine-tuning");
    if (opt->bench_steps > 0) {
        run_bench(&model, cfg, &dist, opt->bench_steps);
        unetr_free(&model);
        train_end(&dist);
        return 0;
    }
    int folds;
    data_source_describe(cfg, model.cfg.data_spacing, &folds);   /* spacing: in the checkpoints */
    if (cfg->fold >= folds)   /* before run_dir is written to and the loader's threads start */
        alice_die("fold = %d but %s has %d folds (0..%d; num_folds of its packing): choose one of "
                  "them, or fold = -1 to train on every case without validation", cfg->fold,
                  cfg->data, folds, folds - 1);

    long start = 0;
    char ckpt[4096] = "";
    /* decided before run_dir is written to: a refused run leaves it as it was */
    const int resuming = train_resume_checkpoint(cfg, &dist, be, "finetune",
                                                 model.cfg.data_spacing, opt->resume_from,
                                                 opt->resume, ckpt, sizeof ckpt);
    /* loaded (shapes checked) before config.txt is written: a checkpoint of another model
     * leaves run_dir describing the checkpoints it holds */
    if (resuming) {
        start = checkpoint_load(ckpt, &model.ps, NULL);
        log_info("resumed from %s at step %ld", ckpt, start);
    } else if (cfg->pretrained[0]) {
        unetr_load_pretrained(&model, cfg->pretrained);
    } else {
        log_info("encoder: random initialisation (no pretrained checkpoint)");
    }
    if (start >= cfg->steps) {
        log_info("run %s is already complete (%ld of %ld steps)", cfg->run_dir, start, cfg->steps);
        unetr_free(&model);
        train_end(&dist);
        return 0;
    }

    LoaderOptions lo = loader_options_from_config(cfg, LOADER_FINETUNE, dist.rank, dist.size,
                                                  dist.local_size);
    lo.first_step = start * cfg->accum_steps;   /* a resumed run reads no batch of steps done */
    LoaderSource source = data_source_open(cfg);
    int labelled = 0, held_out = 0;   /* as the loader will split them */
    for (int i = 0; i < source.num_cases; i++)
        if (source.case_has_label(source.ctx, i)) {
            labelled++;
            held_out += source.case_fold(source.ctx, i) == cfg->fold;
        }
    if (cfg->fold >= 0 && held_out == 0)
        alice_die("fold = %d holds no labelled case of %s (%d labelled cases; its folds are "
                  "0..num_folds-1 of its packing, or of num_folds for synthetic data): choose "
                  "another fold, or fold = -1 to train on every case without validation",
                  cfg->fold, cfg->data, labelled);
    /* config.txt once the data set serves (see pretrain_run), before the loader's threads
     * start: a failure to write it must not exit beside their HDF5 reads */
    train_prepare_run_dir(cfg, &dist, "finetune");
    Loader *loader = loader_create(&lo, source);
    const int *cases;
    int nval = loader_validation_cases(loader, &cases);
    int ntrain = loader_training_cases(loader, &cases);
    log_info("fine-tuning on %d labelled cases, validating on %d (fold %d) every %ld steps",
             ntrain, nval, cfg->fold, cfg->val_every);
    if (cfg->crops_per_case > 1)
        log_info("crops: %d per case drawn, %d case(s) per rank and %s", cfg->crops_per_case,
                 cfg->batch / cfg->crops_per_case, cfg->accum_steps > 1 ? "micro-batch" : "step");
    double best = -1.0;
    int start_validated = 0;
    if (dist.rank == 0) {
        double start_dice;
        best = val_csv_restore(cfg->run_dir, start, &start_validated, &start_dice);
        if (start > 0) best = resumed_best(ckpt, cfg->run_dir, best, start_dice);
        if (start > 0) best = set_aside_discarded_best(cfg->run_dir, start, best);
    }
    CHECK_MPI(MPI_Bcast(&best, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD));
    CHECK_MPI(MPI_Bcast(&start_validated, 1, MPI_INT, 0, MPI_COMM_WORLD));

    RunLog log;
    runlog_open(&log, cfg->run_dir, "metrics.csv", log_columns, start, cfg->steps, dist.rank == 0);
    /* A preempted run skipped the validation due after its last step (below): given now, on the
     * weights that step left, so val.csv and ckpt_best.h5 are those of an uninterrupted run.
     * Not when this start is told to stop as well (a signal while it started): the validation
     * may outlast the signal's lead, and no step may run before it (a run resumed after that
     * step would not know it is owed). The checkpoint resumed from is still the newest, so the
     * run exits for requeue at once and the next start gives it. Collective. */
    int status = 0, chunk_stopped = 0;
    if (start > 0 && nval > 0 && start % cfg->val_every == 0 && !start_validated) {
        if (preempt_agreed()) {
            log_info("stopped again before the validation after step %ld, which the preempted "
                     "run skipped: exiting with status %d, %s still the newest checkpoint; the "
                     "next start gives it", start, ALICE_EXIT_REQUEUE, ckpt);
            status = ALICE_EXIT_REQUEUE;
        } else {
            log_info("validation after step %ld, which the preempted run skipped", start);
            validate_after(&model, loader, &dist, start, nval, &best);
        }
    }
    const long global_batch = train_global_batch(cfg, &dist);
    model.zero_grads_in_step = cfg->accum_steps == 1;   /* accumulation: zeroed once per step */
    GradSync sync;
    train_grad_sync_init(&sync, cfg, &dist, &model.ps);
    /* cuda_graph (1, or auto on CUDA without an overlapped all-reduce): the step recorded
     * once, then replayed. Validation (sliding windows) stays eager, between steps, on the
     * same buffers: a replay recomputes everything it reads. */
    StepGraph graph;
    train_step_graph_init(&graph, be, cfg, &sync);
    StepCtx ctx = {&model, cfg, &dist, &sync, &graph, loader};
    for (long step = start; status == 0 && step < cfg->steps; step++) {
        double t0 = wall_seconds();
        double terms[3];
        float lr;
        double gnorm;
        StepOutcome outcome = whole_step(&ctx, step, terms, &lr, &gnorm);
        if (outcome == STEP_STOPPED) { status = ALICE_EXIT_DIVERGED; break; }
        /* A skipped step (on_nonfinite = skip) writes no metrics row, but its validation and
         * boundary still run: the last validation, the periodic or last checkpoint, the
         * preemption check. */
        if (outcome == STEP_APPLIED) {
            be->synchronize();
            double dt = wall_seconds() - t0;
            double row[COL_COUNT] = {terms[0], terms[1], terms[2], lr, gnorm, dt * 1e3,
                                     global_batch / dt};
            runlog_row(&log, step, row, (step + 1) % cfg->log_every == 0 || step == start);
        }
        const int last = step + 1 == cfg->steps;
        const int chunk_done = opt->stop_after > 0 && step + 1 - start >= opt->stop_after;
        /* A preemption signal leaves 120 s (--signal=B:USR1@120) and a validation over whole
         * volumes can take longer: a run told to stop skips it and checkpoints at once (below);
         * the last step's validation, which ends the run, always runs. Collective. */
        const int validation_due = nval > 0 && ((step + 1) % cfg->val_every == 0 || last);
        const int preempted = validation_due && !last && preempt_agreed();
        if (preempted)
            log_info("validation after step %ld skipped: the run checkpoints and stops first "
                     "(preemption); the resumed run gives it before its first step", step + 1);
        if (validation_due && !preempted)
            validate_after(&model, loader, &dist, step + 1, nval, &best);
        if (nval == 0 && last) save(&model, &dist, BEST_CKPT, step + 1, NAN);
        PeriodicSave ps = {&model, &dist, best, &log};
        if (train_step_boundary(cfg, step, last || chunk_done, save_periodic, &ps)) {
            status = ALICE_EXIT_REQUEUE;
            break;
        }
        if (chunk_done && !last) {
            log_info("stopped after %ld steps of this run (--stop-after); the next run resumes "
                     "at step %ld", step + 1 - start, step + 1);
            chunk_stopped = 1;
            break;
        }
    }
    if (status == 0 && !chunk_stopped && nval > 0)
        log_info("fine-tuning done: %ld steps, best validation Dice %.4f, run directory %s "
                 "(ckpt_best.h5 and the last ckpt_<step>.h5)", cfg->steps, best, cfg->run_dir);
    else if (status == 0 && !chunk_stopped)
        log_info("fine-tuning done: %ld steps without validation (no held-out case), run "
                 "directory %s (ckpt_best.h5 holds the last step's weights, as the last "
                 "ckpt_<step>.h5)", cfg->steps, cfg->run_dir);
    step_graph_log_summary(&graph);
    step_graph_free(&graph);
    grad_sync_free(&sync);
    runlog_close(&log);
    loader_destroy(loader);
    unetr_free(&model);
    train_end(&dist);
    return status;
}
