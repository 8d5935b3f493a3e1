#include "train/pretrain.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "core/check.h"
#include "core/log.h"
#include "core/preempt.h"
#include "core/timer.h"
#include "loader.h"
#include "models/pretrain_model.h"
#include "train/checkpoint.h"
#include "train/data_source.h"
#include "train/dist.h"
#include "train/optim.h"
#include "train/runlog.h"
#include "train/step_bench.h"
#include "train/step_graph.h"
#include "train/train_common.h"

enum { COL_LOSS, COL_LR_REC, COL_L_DV, COL_L_ST, COL_LR, COL_GNORM, COL_MS, COL_SPS, COL_SPREAD,
       COL_COUNT };
static const char *const log_columns[] = {"loss", "l_r", "l_dv", "l_st", "lr", "grad_norm",
                                          "ms_per_step", "samples_per_s", "feat_spread", NULL};

/* Views of a loader batch in the model's order. */
static void batch_views(const PretrainBatch *b, const float *views[VIEW_COUNT])
{
    views[VIEW_MASKED_Q] = b->query;
    views[VIEW_MASKED_K] = b->key;
    views[VIEW_INTACT_Q] = b->query_intact;
    views[VIEW_INTACT_K] = b->key_intact;
}

/* The step's forward and backward as StepGraph work (train/step_graph.h): no host waits. */
static void enqueue_step(void *model) { pretrain_model_enqueue_step(model); }

/* One step's forward + backward through the step graph (eager warm-up, then recorded once and
 * replayed, or eager throughout), then its loss terms: the one read-back of the step. Everything
 * after it (all-reduce, optimiser, EMA, DINO centers) runs eagerly and reads the values the
 * graph left in the same buffers. While the step's scalars still change (DINO's teacher
 * temperature warm-up) the step runs eagerly, outside the graph, whose state waits: it warms
 * up, records and replays from the first step after. */
static LossTerms forward_backward(StepGraph *graph, PretrainModel *m, long step)
{
    step_graph_run_if(graph, pretrain_model_begin_step(m, step), enqueue_step, m);
    return pretrain_model_read_losses(m);
}

typedef struct {
    const Dist *dist;
    const AliceBackend *be;
} AllreduceCtx;

/* The model's hook for means over ranks (DINO centers). */
static void allreduce_mean_over_ranks(float *buf, size_t n, void *ctx)
{
    const AllreduceCtx *a = ctx;
    dist_allreduce_mean(a->dist, a->be, buf, n);
}

/* Everything a step runs after forward + backward, for the training loop and the benchmark
 * alike: the gradient all-reduce, the non-finite guard, then clipping, AdamW and for alice the
 * EMA target in one pass (train_optimizer_step), then the DINO centers. terms holds the step's
 * loss terms (LossTerms order) and comes back averaged over ranks. */
static StepOutcome pretrain_update(PretrainModel *m, const Config *cfg, const Dist *dist,
                                   GradSync *sync, double terms[4], long step, float *lr,
                                   double *gnorm)
{
    const EmaUpdate ema = {&m->target, pretrain_ema_momentum(cfg, step)};
    StepOutcome outcome = train_optimizer_step(cfg, dist, sync, terms, 4, step, lr, gnorm,
                                               m->alice ? &ema : NULL);
    if (outcome != STEP_APPLIED) return outcome;
    AllreduceCtx reduce = {dist, m->be};
    pretrain_model_update_centers(m, allreduce_mean_over_ranks, &reduce);
    return outcome;
}

/* Query/key pairs of this run: crops drawn, drawn again (pair_redraws), and kept with their
 * matched point outside the key volume. */
typedef struct {
    long pairs, redrawn, outside;
} PairCounts;

static void count_pairs(PairCounts *c, const PretrainBatch *b)
{
    for (int j = 0; j < b->batch; j++) {
        c->pairs++;
        c->redrawn += b->pair_redrawn[j];
        c->outside += b->key_outside[j];
    }
}

/* What a step's micro-batches (train_accumulate_step) work on: the training loop's, which
 * read the loader, or the benchmark's (loader NULL), which reuse the views and masks set. */
typedef struct {
    PretrainModel *m;
    const Config *cfg;
    const Dist *dist;
    GradSync *sync;
    StepGraph *graph;
    Loader *loader;
    PairCounts *pairs;
} StepCtx;

/* The loader's micro-batch u = step x accum_steps + micro into the model: its views, and the
 * masks and drop-path draws of its samples (keyed by their global indices). */
static void load_micro_batch(StepCtx *c, long step, int micro)
{
    const long u = step * c->cfg->accum_steps + micro;   /* the loader's micro-step */
    PretrainBatch batch;
    loader_next_pretrain_batch(c->loader, u, &batch);
    count_pairs(c->pairs, &batch);
    const float *views[VIEW_COUNT];
    batch_views(&batch, views);
    /* device = cuda: the loader uploaded (or rendered) the batch into GPU memory already, on
     * its upload stream while the previous step computed (io/loader.h). */
    pretrain_model_transfer_views(c->m, views,
                                  batch.on_device ? VIEWS_FROM_DEVICE : VIEWS_FROM_HOST);
    pretrain_model_draw_masks(c->m, step, loader_global_sample(c->loader, u, 0));
}

/* One micro-batch (MicroBatchStep): with accumulation the teacher's batch mean joins the
 * step's DINO centers, which the first micro-batch starts afresh (a skipped step's are not
 * carried over). */
static void micro_batch_step(void *ctx, long step, int micro, double *terms)
{
    StepCtx *c = ctx;
    if (c->loader) load_micro_batch(c, step, micro);
    if (micro == 0) c->m->centers_collected = 0;
    const LossTerms t = forward_backward(c->graph, c->m, step);
    if (c->cfg->accum_steps > 1) pretrain_model_collect_centers(c->m);
    terms[0] = t.loss;
    terms[1] = t.l_r;
    terms[2] = t.l_dv;
    terms[3] = t.l_st;
}

/* Forward + backward of a whole step (its accum_steps micro-batches), then pretrain_update;
 * terms: the step's loss terms averaged over micro-batches and ranks. */
static StepOutcome whole_step(StepCtx *c, long step, double terms[4], float *lr, double *gnorm)
{
    train_accumulate_step(c->cfg, &c->m->online, c->sync, step, micro_batch_step, c, terms, 4);
    return pretrain_update(c->m, c->cfg, c->dist, c->sync, terms, step, lr, gnorm);
}

/* The benchmark's step (train/step_bench.h): the loop's own step on fixed views. Masks are
 * drawn untimed (host work the loop overlaps with nothing either, but the PyTorch reference
 * draws its masks outside its timed region too), once for all micro-batches; timed: each
 * micro-batch's forward + backward through the step graph (the gradient sync started with
 * the last), then pretrain_update, which is every kernel the loop runs after backward
 * (tests/reference/bench_torch_step.py times the same: clipping, AdamW, EMA). */
static void bench_prepare(void *ctx, long s)
{
    StepCtx *c = ctx;
    pretrain_model_draw_masks(c->m, s, 0);
}

static void bench_step(void *ctx, long s)
{
    double terms[4];
    float lr;
    double gnorm;
    const StepOutcome outcome = whole_step(ctx, s, terms, &lr, &gnorm);
    train_bench_require_applied(outcome, s, terms[0]);
}

/* Timing of the step on random inputs: the figures of `make bench`. */
static int run_bench(PretrainModel *m, const Config *cfg, const Dist *dist, long steps)
{
    size_t n = (size_t)m->B * m->dims[0] * m->dims[1] * m->dims[2];
    float *vol = xmalloc(n * sizeof(float));
    step_bench_uniform(vol, n, (uint64_t)cfg->seed);
    const float *views[VIEW_COUNT] = {vol, vol, vol, vol};
    pretrain_model_set_views(m, views);
    GradSync sync;
    train_grad_sync_init(&sync, cfg, dist, &m->online);
    /* cuda_graph = 1 or auto (one rank: no overlapped all-reduce) on CUDA: step 0 (the untimed
     * warm-up) runs eagerly, step 1 is recorded and launched, later steps replay; so the median
     * of the timed steps is a replayed one. */
    StepGraph graph;
    train_step_graph_init(&graph, m->be, cfg, &sync);
    m->zero_grads_in_step = cfg->accum_steps == 1;   /* as the loop: zeroed once per step */
    StepCtx ctx = {m, cfg, dist, &sync, &graph, NULL, NULL};
    BenchStep step = {bench_prepare, bench_step, &ctx};
    double med = step_bench_median_seconds(m->be, steps, &step);
    step_bench_report(cfg->method, cfg, m->B, med, pretrain_model_step_flops(m), &graph);
    step_graph_free(&graph);
    grad_sync_free(&sync);
    free(vol);
    return 0;
}

typedef struct {
    const Config *cfg;
    const Dist *dist;
    PretrainModel *model;
    RunLog *log;
} SaveCtx;

static void save_checkpoint(void *ctx, long steps_done)
{
    SaveCtx *s = ctx;
    runlog_sync(s->log);   /* the rows before this step survive a crash with the checkpoint */
    if (s->dist->rank == 0)
        checkpoint_save_state(s->cfg->run_dir, NULL, steps_done, s->cfg, "pretrain",
                              &s->model->online, s->model->alice ? &s->model->target : NULL,
                              &s->model->buffers, NAN);
    CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD));
}

/* Pre-training needs crops that mostly show anatomy and, with inter-volume pairs, two volumes. */
static void check_data_fits(const Config *cfg, const LoaderSource *src)
{
    int largest[3];
    data_source_largest_dims(src, largest);
    for (int a = 0; a < 3; a++)
        if (cfg->crop[a] > largest[a])
            alice_die("crop = %d,%d,%d is larger than every volume of %s (largest %d,%d,%d voxels "
                      "along X,Y,Z): choose a smaller crop, or pack the data at a finer spacing",
                      cfg->crop[0], cfg->crop[1], cfg->crop[2], cfg->data, largest[0],
                      largest[1], largest[2]);
    if (cfg->inter_volume && src->num_cases < 2)
        alice_die("%s has %d volume(s), but inter_volume = 1 pairs crops from two different "
                  "volumes: add volumes, or set inter_volume = 0", cfg->data, src->num_cases);
}

static void log_model(const PretrainModel *m, const Dist *d)
{
    const Config *c = &m->cfg;
    size_t acts = m->arena.cap;
    log_info("model: %s, encoder %dx%d (%d heads, mlp %d), decoder %dx%d, patch %d, crop %dx%dx%d "
             "-> %d tokens (%d visible)", c->method, c->depth, c->embed_dim, c->heads, c->mlp_dim,
             c->dec_depth, c->dec_dim, c->patch, c->crop[0], c->crop[1], c->crop[2], m->N, m->nvis);
    /* params, gradients, AdamW m and v (4 bytes each), and Alice's EMA copy: the buffers as
     * allocated, alignment padding included */
    const double state_bytes = m->online.total * (m->alice ? 20.0 : 16.0);
    log_info("parameters: %zu (%.1f MiB with gradients and AdamW moments%s), activations %.1f MiB "
             "per rank, batch %d per rank x %d ranks", params_numel(&m->online),
             state_bytes / 1048576.0, m->alice ? " + EMA target" : "", acts / 1048576.0, m->B,
             d->size);
    train_log_drop_path(c, m->drop_host != NULL, "the student encoder's");
}

/* Collective: the counts summed over ranks, said once. */
static void log_pair_counts(const PairCounts *c, const Config *cfg, const Dist *d)
{
    const double pairs = dist_sum_double((double)c->pairs);
    const double redrawn = dist_sum_double((double)c->redrawn);
    const double outside = dist_sum_double((double)c->outside);
    if (d->rank != 0 || pairs <= 0) return;
    log_info("pairs: %.0f query crops in this run, %.0f drawn again (pair_redraws = %d), %.0f "
             "(%.1f%%) kept with the matched point outside the key volume (its centre clamped "
             "into K)", pairs, redrawn, cfg->pair_redraws, outside, 100.0 * outside / pairs);
}

int pretrain_run(const Config *cfg, const PretrainOptions *opt)
{
    Dist dist;
    const AliceBackend *be = train_begin(cfg, &dist);
    train_signals(opt->bench_steps);
    PretrainModel model;
    pretrain_model_init(&model, cfg, be, cfg->batch);
    log_model(&model, &dist);
    train_check_memory(be, model.arena.cap + model.online.total * sizeof(float) * (model.alice ? 5 : 4),
                       &dist, "pre-training");
    if (opt->bench_steps > 0) {
        int rc = run_bench(&model, cfg, &dist, opt->bench_steps);
        pretrain_model_free(&model);
        train_end(&dist);
        return rc;
    }
    ParamSet *target = model.alice ? &model.target : NULL;

    long start = 0;
    char ckpt[4096] = "";
    /* decided before run_dir is written to: a refused run leaves it as it was */
    const int resuming = train_resume_checkpoint(cfg, &dist, be, "pretrain", NULL,
                                                 opt->resume_from, opt->resume, ckpt,
                                                 sizeof ckpt);
    /* loaded (shapes checked) before config.txt is written: a checkpoint of another model
     * leaves run_dir describing the checkpoints it holds */
    if (resuming) {
        start = checkpoint_load_state(ckpt, &model.online, target, &model.buffers);
        log_info("resumed from %s at step %ld", ckpt, start);
    }
    if (start >= cfg->steps) {
        log_info("run %s is already complete (%ld of %ld steps)", cfg->run_dir, start, cfg->steps);
        pretrain_model_free(&model);
        train_end(&dist);
        return 0;
    }

    LoaderOptions lo = loader_options_from_config(cfg, LOADER_PRETRAIN, dist.rank, dist.size,
                                                  dist.local_size);
    lo.first_step = start * cfg->accum_steps;   /* a resumed run reads no batch of steps done */
    LoaderSource source = data_source_open(cfg);
    check_data_fits(cfg, &source);
    /* config.txt once the data is known to serve too: a start refused over its data set
     * leaves run_dir describing the checkpoints it holds */
    train_prepare_run_dir(cfg, &dist, "pretrain");
    Loader *loader = loader_create(&lo, source);
    RunLog log;
    runlog_open(&log, cfg->run_dir, "metrics.csv", log_columns, start, cfg->steps, dist.rank == 0);

    const long global_batch = train_global_batch(cfg, &dist);
    /* accumulation: the loop zeroes the gradients before a step's first micro-batch, and every
     * micro-batch's backward adds to them (one recorded step serves them all) */
    model.zero_grads_in_step = cfg->accum_steps == 1;
    GradSync sync;
    train_grad_sync_init(&sync, cfg, &dist, &model.online);
    StepGraph graph;   /* cuda_graph: the step recorded once, then replayed */
    train_step_graph_init(&graph, be, cfg, &sync);
    int status = 0;
    long step = start;
    PairCounts pairs = {0, 0, 0};
    StepCtx ctx = {&model, cfg, &dist, &sync, &graph, loader, &pairs};
    for (; step < cfg->steps; step++) {
        double t0 = wall_seconds();
        double terms[4];
        float lr;
        double gnorm;
        StepOutcome outcome = whole_step(&ctx, step, terms, &lr, &gnorm);
        if (outcome == STEP_STOPPED) { status = ALICE_EXIT_DIVERGED; break; }
        /* A skipped step (on_nonfinite = skip) writes no metrics row, but its boundary still
         * runs: the periodic or last checkpoint, the preemption check. */
        if (outcome == STEP_APPLIED) {
            be->synchronize();
            double dt = wall_seconds() - t0;
            const int log_step = (step + 1) % cfg->log_every == 0;
            int print = log_step || step == start;
            /* The collapse monitor costs a download and a reduction: log steps only (every
             * rank takes this branch alike), over every rank's tokens; not the first step of a
             * resumed run unless it is one, so that its row reads as the uninterrupted run's */
            double spread = NAN;
            if (log_step && model.alice) {
                double *sums = xmalloc((size_t)(2 * cfg->head_out + 1) * sizeof(double));
                const int n = pretrain_model_feature_sums(&model, sums);
                dist_sum_doubles(sums, n);
                spread = pretrain_feature_spread(sums, cfg->head_out);
                free(sums);
            }
            double row[COL_COUNT] = {terms[0], terms[1], model.alice ? terms[2] : NAN,
                                     model.alice ? terms[3] : NAN, lr, gnorm, dt * 1e3,
                                     global_batch / dt, spread};
            runlog_row(&log, step, row, print);
        }
        /* the run's last step is "done", not a chunk to resume from */
        int chunk_done = opt->stop_after > 0 && step + 1 - start >= opt->stop_after &&
                         step + 1 < cfg->steps;
        SaveCtx save = {cfg, &dist, &model, &log};
        if (train_step_boundary(cfg, step, step + 1 == cfg->steps || chunk_done, save_checkpoint, &save)) {
            status = ALICE_EXIT_REQUEUE;
            break;
        }
        if (chunk_done) break;
    }
    if (status == 0 && step < cfg->steps)
        log_info("stopped after %ld steps of this run (--stop-after); the next run resumes at step %ld",
                 step + 1 - start, step + 1);
    else if (status == 0)
        log_info("pre-training done: %ld steps, run directory %s", cfg->steps, cfg->run_dir);
    if (model.alice) log_pair_counts(&pairs, cfg, &dist);
    runlog_close(&log);
    loader_destroy(loader);
    step_graph_log_summary(&graph);
    step_graph_free(&graph);
    grad_sync_free(&sync);
    pretrain_model_free(&model);
    train_end(&dist);
    return status;
}
