/* What every training command does around its loop: threads per rank, the run directory,
 * the resolved configuration file, memory checks, and the non-finite guard. */
#ifndef ALICE_TRAIN_COMMON_H
#define ALICE_TRAIN_COMMON_H

#include <stddef.h>

#include "core/config.h"
#include "ops/backend.h"
#include "nn/params.h"
#include "train/dist.h"
#include "train/grad_sync.h"
#include "train/optim.h"  /* EmaUpdate */
#include "train/step_graph.h"

/* The math of the CUDA backend from cfg (keys tf32, precision, attention_kernel,
 * instnorm_kernel): GEMM modes, the attention and the instance norm kernels. Every command that builds a model (pretrain, finetune, infer) calls
 * it before planning an arena, because the attention kernel decides how much attention saves
 * for backward (backend attention_saved_floats). A no-op without CUDA or with device = cpu. */
void train_apply_device_math(const Config *cfg);
/* OpenMP threads: cfg->threads, or the node's cores divided by the ranks on the node. */
void train_set_threads(const Config *cfg, const Dist *d);
/* The start every model-building command shares: the backend of cfg->device, its math
 * (train_apply_device_math), the distribution layer and the OpenMP threads, in that order. */
const AliceBackend *train_begin(const Config *cfg, Dist *d);
/* The end every such command shares, on every exit path after train_begin: the run's summaries
 * of the device math (the GEMM and convolution autotunes', when gemm_autotune / conv_autotune
 * = 1 tuned something), then the distribution layer (dist_finalize). */
void train_end(Dist *d);
/* The preemption signals of a training loop: handled from the start (main installed the
 * handlers before MPI_Init; again here, after it), so a signal while the model is set up or the
 * checkpoint and data are read stops the run at its first step boundary, checkpointed for
 * requeue; the benchmark (bench_steps > 0), which never checks, gets back what it had. Before
 * the loader's threads start. */
void train_signals(long bench_steps);
/* Creates run_dir (and parents) on rank 0 and writes config.txt; every rank waits for it. */
void train_prepare_run_dir(const Config *cfg, const Dist *d, const char *command);
/* Ends the job before any compute when `bytes` of model state does not fit the memory of the
 * backend (host RAM per rank for cpu), naming the keys that decide the size. */
void train_check_memory(const AliceBackend *be, size_t bytes, const Dist *d, const char *what);
/* Samples of one optimiser step over every rank: batch x ranks x accum_steps. */
long train_global_batch(const Config *cfg, const Dist *d);
/* Says what drop_path does to the trained encoder (`which`, e.g. "student encoder"): its rates
 * when laid out (active), or a warning when drop_path > 0 does nothing (depth 1). */
void train_log_drop_path(const Config *cfg, int active, const char *which);
/* Peak resident set size of this process in MiB. */
double train_peak_rss_mib(void);
/* 1 when loss and every gradient are finite on every rank: grad_norm is the global gradient
 * norm, non-finite exactly when a gradient element is (backend.h sum_squares). */
int train_step_finite(double loss, double grad_norm);

/* The gradient averaging of every loop (train/grad_sync.h) for the trainable ParamSet ps:
 * buckets of cfg->allreduce_bucket_mb, overlapped with backward when cfg->overlap_allreduce.
 * Call grad_sync_begin(sync) before each step's forward/backward; train_optimizer_step
 * finishes it. d, ps and the backend must outlive sync (grad_sync_free). */
void train_grad_sync_init(GradSync *sync, const Config *cfg, const Dist *d, ParamSet *ps);

/* The step graph of a training loop (train/step_graph.h) for cfg->cuda_graph: the forward +
 * backward of the first step runs eagerly, the next is recorded, later steps replay. The
 * gradient-ready hooks that start bucket all-reduces during backward are host calls a replay
 * would not make (grad_sync's bucket bookkeeping would then launch every bucket again after
 * backward), so with a graph sync's all-reduce runs once after backward, outside the graph
 * (grad_sync_finish in train_optimizer_step, before anything reads the gradients). That is
 * cuda_graph = 1; auto records no graph while sync->overlap is on (sync keeps its overlap). */
void train_step_graph_init(StepGraph *graph, const AliceBackend *be, const Config *cfg,
                           GradSync *sync);

/* The checkpoint a training run of `kind` ("pretrain", "finetune") starts from, decided on
 * rank 0 and broadcast (ranks may see a shared folder differently): resume_from when given,
 * else with `resume` the latest intact ckpt_<step>.h5 of run_dir. Returns 1 with its path in
 * ckpt, 0 to start fresh. Ends the job, before anything is written, when the run would mix two
 * runs' checkpoints in run_dir (a fresh start over existing checkpoints: prune would delete the
 * new run's and a restart would resume the old one; resume_from older than run_dir's latest),
 * when run_dir's checkpoints are all damaged, or when the checkpoint is of another kind or
 * method (checkpoint_check_resumable, which also warns when the rank count, backend be or
 * thread count differ from the checkpoint's), or when data_spacing (the voxel spacing of the
 * run's data set; NULL or zeros: not checked) differs from the checkpoint's. Collective. */
int train_resume_checkpoint(const Config *cfg, const Dist *d, const AliceBackend *be,
                            const char *kind, const double *data_spacing,
                            const char *resume_from, int resume, char *ckpt, size_t n);

/* Most loss terms a loop logs (LossTerms: 4). */
enum { TRAIN_MAX_TERMS = 4 };

/* One micro-batch of a step: loads it (or not: the benchmark's fixed batch), runs forward +
 * backward, which add to the gradients, and writes its nterms loss terms to terms. */
typedef void (*MicroBatchStep)(void *ctx, long step, int micro, double *terms);

/* The forward + backward half of a step of every loop and benchmark, over cfg->accum_steps
 * micro-batches: with more than one the gradients of ps are zeroed here, once (the models
 * leave them when their zero_grads_in_step is 0), each micro-batch's backward adds to them,
 * and sync's all-reduce begins with the last one's backward (grad_sync_begin; overlapped
 * where it is). terms comes back as the micro-batches' mean; train_optimizer_step then
 * scales the summed gradients by 1/accum_steps and finishes the step. */
void train_accumulate_step(const Config *cfg, ParamSet *ps, GradSync *sync, long step,
                           MicroBatchStep run, void *ctx, double *terms, int nterms);

typedef enum { STEP_APPLIED, STEP_SKIPPED, STEP_STOPPED } StepOutcome;
/* The optimiser half of a training step, shared by every loop: waits for the gradients of
 * sync->ps averaged over the ranks (grad_sync_finish) and, with accum_steps > 1, over the
 * micro-batches whose gradients the backward passes summed (terms: the micro-batches' mean
 * already), averages the loss terms over the ranks (terms[0] is the total loss), guards
 * against non-finite values (cfg->on_nonfinite: stop with the last checkpoint intact, or skip
 * the step: then ema is not updated either), clips the global
 * gradient norm and applies AdamW with the scheduled learning rate, and with ema non-NULL
 * updates the EMA target from the new parameters, all in one pass (train/optim.h
 * optimizer_update). */
StepOutcome train_optimizer_step(const Config *cfg, const Dist *d, GradSync *sync, double *terms,
                                 int nterms, long step, float *lr, double *grad_norm,
                                 const EmaUpdate *ema);

/* A benchmark step (--bench-steps) has no loop to skip or stop: one that was not applied (a
 * non-finite loss terms[0] or gradient) ends the job, naming step and loss. */
void train_bench_require_applied(StepOutcome outcome, long step, double loss);

/* The end of step `step` (0-based) of every loop: the periodic (or last) checkpoint through
 * save(ctx, steps_done), then the collective preemption check. Returns 1 when the run must
 * stop for a requeue; a checkpoint of the finished step then exists. Collective. */
int train_step_boundary(const Config *cfg, long step, int last, void (*save)(void *ctx, long steps_done),
                        void *ctx);

#endif
