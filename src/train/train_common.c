#include "train/train_common.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/check.h"
#include "core/fsutil.h"
#include "core/sysmem.h"
#include "core/log.h"
#include "core/preempt.h"
#include "ops/gpu_device.h"
#include "geometry.h"
#include "train/checkpoint.h"
#include "train/optim.h"
#include "train/run_lock.h"
#include <mpi.h>

/* A CUDA build without the cuDNN frontend headers cannot run attention_kernel = cudnn: say so
 * before anything runs (train_begin calls this before opening the device). */
static void refuse_unbuilt_attention_kernel(const Config *cfg)
{
    if (!strcmp(cfg->device, "cuda") && !strcmp(cfg->attention_kernel, "cudnn") &&
        !gpu_cudnn_attention_available())
        alice_die("%s; or use attention_kernel = fused", gpu_cudnn_attention_unavailable_reason());
}

void train_apply_device_math(const Config *cfg)
{
    const int bf16 = !strcmp(cfg->precision, "bf16");
    int kernel = !strcmp(cfg->attention_kernel, "fused") ? ATTN_KERNEL_FUSED
                 : !strcmp(cfg->attention_kernel, "gemm") ? ATTN_KERNEL_GEMM
                 : !strcmp(cfg->attention_kernel, "cudnn") ? ATTN_KERNEL_CUDNN
                                                            : ATTN_KERNEL_AUTO;
    refuse_unbuilt_attention_kernel(cfg);
    /* device = cpu (or no CUDA at all): no CUDA attention runs, so cudnn is as harmless as
     * fused there, and a build that cannot run it leaves the CUDA backend's choice at auto */
    if (kernel == ATTN_KERNEL_CUDNN && !gpu_cudnn_attention_available()) kernel = ATTN_KERNEL_AUTO;
    gpu_set_math(cfg->tf32, bf16);
    gpu_set_weight_copies(cfg->bf16_weight_copy);
    gpu_set_attention(kernel);
    /* the registry admits only own|cudnn (config_keys.c) */
    gpu_set_instnorm(!strcmp(cfg->instnorm_kernel, "cudnn") ? INSTNORM_KERNEL_CUDNN
                                                            : INSTNORM_KERNEL_OWN);
    gpu_set_collective_timeout(cfg->nccl_timeout_s);
    gpu_set_gemm_autotune(cfg->gemm_autotune);
    gpu_set_conv_autotune(cfg->conv_autotune);
    /* the registry admits only ncdhw|ndhwc (config_keys.c) */
    gpu_set_conv_wgrad_layout(!strcmp(cfg->conv_wgrad_layout, "ndhwc") ? CONV_WGRAD_NDHWC
                                                                       : CONV_WGRAD_NCDHW);
    /* the registry admits only own|cudnn (config_keys.c) */
    gpu_set_conv_wgrad_kernel(!strcmp(cfg->conv_wgrad_kernel, "cudnn") ? CONV_WGRAD_KERNEL_CUDNN
                                                                       : CONV_WGRAD_KERNEL_OWN);
    /* the registry admits only cudnn|own (config_keys.c) */
    gpu_set_pointwise_conv(!strcmp(cfg->pointwise_conv, "own") ? POINTWISE_CONV_OWN
                                                               : POINTWISE_CONV_CUDNN);
    const char *other = cfg->tf32 ? "tf32" : "fp32";
    const char *mixed = cfg->bf16_weight_copy
                            ? "bf16 operands (fp32 accumulate, bf16 weight copies)"
                            : "bf16 operands (fp32 accumulate, weights rounded in every GEMM)";
    /* auto's rule: src/ops/attention_choice.h */
    const char *auto_choice = !bf16 ? " (gemm: fp32)"
                              : gpu_cudnn_attention_available()
                                  ? " (cudnn at head widths 32 and 64, fused where cuDNN declines "
                                    "a shape, gemm elsewhere)"
                                  : " (fused at head widths 32 and 64: this build has no cuDNN "
                                    "attention; gemm elsewhere)";
    if (!strcmp(cfg->device, "cuda"))
        log_info("cuda math: linear/attention GEMMs %s, other GEMMs and convolutions %s, "
                 "attention kernel %s%s, instance norm %s, convolution weight gradients %s "
                 "(3x3x3 with few channels: %s), pointwise convolutions %s%s%s",
                 bf16 ? mixed : other, other, cfg->attention_kernel,
                 kernel != ATTN_KERNEL_AUTO ? "" : auto_choice, cfg->instnorm_kernel,
                 cfg->conv_wgrad_layout, cfg->conv_wgrad_kernel, cfg->pointwise_conv,
                 cfg->gemm_autotune ? ", cuBLASLt algorithms timed per GEMM shape "
                                      "(gemm_autotune = 1)" : "",
                 cfg->conv_autotune ? ", cuDNN convolution algorithms timed per shape "
                                      "(conv_autotune = 1)" : "");
}

/* The resolved configuration without its threads line (per rank by design), malloc'd. */
static char *shared_config_text(const Config *cfg)
{
    char *text = config_to_text(cfg), *out = xmalloc(strlen(text) + 1), *end = out;
    for (const char *line = text; *line;) {
        const size_t len = strcspn(line, "\n") + (line[strcspn(line, "\n")] == '\n');
        if (strncmp(line, "threads ", 8) && strncmp(line, "threads=", 8)) {
            memcpy(end, line, len);
            end += len;
        }
        line += len;
    }
    *end = '\0';
    free(text);
    return out;
}

/* Every rank reads the command line and the job files itself: ranks that read different ones
 * (a job file on node-local storage, one edited while the job started) hang in a collective
 * (another steps) or train apart in silence (another lr). Every rank's resolved configuration
 * must be rank 0's; a rank that differs ends the job naming the first key. */
static void check_ranks_share_config(const Config *cfg, const Dist *d)
{
    if (d->size == 1) return;
    char *mine = shared_config_text(cfg);
    long len = (long)strlen(mine) + 1;
    CHECK_MPI(MPI_Bcast(&len, 1, MPI_LONG, 0, MPI_COMM_WORLD));
    char *first = d->rank == 0 ? mine : xmalloc((size_t)len);
    ALICE_ASSERT(len < 2147483647L, "a configuration of %ld bytes", len);
    CHECK_MPI(MPI_Bcast(first, (int)len, MPI_CHAR, 0, MPI_COMM_WORLD));
    if (d->rank != 0 && strcmp(mine, first) != 0) {
        const char *a = mine, *b = first;
        while (*a && *a == *b) {   /* to the first line that differs */
            const size_t la = strcspn(a, "\n"), lb = strcspn(b, "\n");
            if (la != lb || strncmp(a, b, la)) break;
            a += la + (a[la] == '\n');
            b += lb + (b[lb] == '\n');
        }
        alice_die("rank %d's configuration differs from rank 0's: '%.*s' here, '%.*s' on rank 0 "
                  "(each rank reads the command line and the job files itself: give every rank "
                  "the same ones, on storage all nodes see alike)", d->rank,
                  (int)strcspn(a, "\n"), a, (int)strcspn(b, "\n"), b);
    }
    if (first != mine) free(first);
    free(mine);
}

const AliceBackend *train_begin(const Config *cfg, Dist *d)
{
    refuse_unbuilt_attention_kernel(cfg);  /* a configuration error, before the device opens */
    const AliceBackend *be = backend_by_name(cfg->device);
    train_apply_device_math(cfg);   /* before any model plans its arena */
    dist_init(d, be);
    check_ranks_share_config(cfg, d);
    train_set_threads(cfg, d);
    if (cfg->accum_steps > 1 && d->rank == 0)
        log_info("gradient accumulation: %d micro-batches of %d per step and rank, a global "
                 "batch of %ld", cfg->accum_steps, cfg->batch, train_global_batch(cfg, d));
    if (cfg->lr_reference_batch > 0 && d->rank == 0)
        log_info("lr: %g for a global batch of %d, this run's %ld (batch %d x %d ranks x %d "
                 "micro-batches): peak %g", cfg->lr, cfg->lr_reference_batch,
                 train_global_batch(cfg, d), cfg->batch, d->size, cfg->accum_steps,
                 peak_lr(cfg, train_global_batch(cfg, d)));
    return be;
}

long train_global_batch(const Config *cfg, const Dist *d)
{
    return (long)cfg->batch * d->size * cfg->accum_steps;
}

void train_end(Dist *d)
{
    gpu_gemm_autotune_report();
    gpu_conv_autotune_report();
    dist_finalize(d);
}

void train_set_threads(const Config *cfg, const Dist *d)
{
    int n = cfg->threads;
    if (n <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        n = (int)(cores / (d->local_size > 0 ? d->local_size : 1));
        /* A launcher that binds the rank (mpirun's bind-to-core, srun --cpu-bind, taskset)
         * leaves it fewer CPUs than its share of the node: more threads would share them. */
        cpu_set_t allowed;
        if (sched_getaffinity(0, sizeof allowed, &allowed) == 0 && CPU_COUNT(&allowed) < n)
            n = CPU_COUNT(&allowed);
        if (n < 1) n = 1;
    }
    /* The OpenMP build of OpenBLAS (see the Makefile) runs its GEMMs on this same pool. */
    omp_set_num_threads(n);
}

void train_signals(long bench_steps)
{
    if (bench_steps <= 0) preempt_install();
    else preempt_uninstall();
}

void train_prepare_run_dir(const Config *cfg, const Dist *d, const char *command)
{
    if (d->rank == 0) {
        make_dirs(cfg->run_dir, "set run_dir to a writable path");
        char path[4096], tmp[4200];
        snprintf(path, sizeof path, "%s/config.txt", cfg->run_dir);
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        FILE *f = fopen(tmp, "w");
        if (!f) alice_die("cannot write %s: %s (set run_dir to a writable path)", tmp, strerror(errno));
        char *text = config_to_text(cfg);
        fprintf(f, "# alice %s, %d rank(s)\n%s", command, d->size, text);
        free(text);
        commit_stream(f, tmp, path);
    }
    CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD));
}

void train_log_drop_path(const Config *cfg, int active, const char *which)
{
    if (active)
        log_info("drop-path: %s blocks drop each branch per sample at rate %g x block / %d "
                 "(block 0 never, the last at %g)", which, cfg->drop_path, cfg->depth - 1,
                 cfg->drop_path);
    else if (cfg->drop_path > 0)
        log_warn("drop_path = %g does nothing with depth = %d: block 0 never drops",
                 cfg->drop_path, cfg->depth);
}

void train_check_memory(const AliceBackend *be, size_t bytes, const Dist *d, const char *what)
{
    if (strcmp(be->name, "cpu") != 0) return;   /* the CUDA backend reports its own OOM */
    double avail = host_available_bytes();
    double need = (double)bytes * (d->local_size > 0 ? d->local_size : 1);
    if (need > 0.95 * avail)
        alice_die("%s needs %.2f GiB of memory per rank (x%d ranks on this node) but only %.2f GiB "
                  "are available: lower batch, crop or the model size (embed_dim, depth, mlp_dim)",
                  what, bytes / 1073741824.0, d->local_size, avail / 1073741824.0);
}

double train_peak_rss_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

int train_step_finite(double loss, double grad_norm)
{
    int bad = !isfinite(loss) || !isfinite(grad_norm);
    return !dist_max_int(bad);
}

/* A fine-tuning run resumed on data packed at another spacing than its checkpoint's would train
 * one model at two voxel sizes, and its checkpoints would then claim the new spacing to alice
 * infer (which resamples nothing: it refuses data at another spacing). */
static void check_resume_spacing(const char *ckpt, const char *data, const double *now)
{
    double then[3];
    if (!now || now[0] <= 0.0 || !checkpoint_data_spacing(ckpt, then) || spacing_equal(now, then))
        return;
    alice_die("%s is packed at %g,%g,%g mm but %s, the checkpoint this run resumes, was trained "
              "on data at %g,%g,%g mm: repack the cases with `alice pack ... spacing=%g,%g,%g`, "
              "or give this run another run_dir to start over at the new spacing", data, now[0],
              now[1], now[2], ckpt, then[0], then[1], then[2], then[0], then[1], then[2]);
}

/* Rank 0's side of train_resume_checkpoint. */
static int choose_resume_checkpoint(const Config *cfg, const char *backend, const char *kind,
                                    const double *data_spacing, const char *resume_from,
                                    int resume, char *ckpt, size_t n)
{
    run_dir_lock(cfg->run_dir);   /* before any .tmp is taken for a dead run's */
    checkpoint_remove_stale_tmp(cfg->run_dir);
    const long newest = checkpoint_latest_step(cfg->run_dir);
    if (resume_from) {
        snprintf(ckpt, n, "%s", resume_from);
        const long step = checkpoint_check_resumable(ckpt, kind, cfg, backend);
        check_resume_spacing(ckpt, cfg->data, data_spacing);
        if (newest > step)
            alice_die("run_dir %s holds ckpt_%ld.h5, newer than %s (step %ld): this run would mix "
                      "its checkpoints with those of the run it redoes; move the newer "
                      "checkpoints away, or give this run another run_dir", cfg->run_dir, newest,
                      ckpt, step);
        return 1;
    }
    if (!resume) {
        if (newest >= 0)
            alice_die("run_dir %s already holds checkpoints (the newest ckpt_%ld.h5): with "
                      "--no-resume this run's checkpoints would mix with them (the older would "
                      "be pruned first, a restart would resume the other run); give this run "
                      "another run_dir, or remove them", cfg->run_dir, newest);
        return 0;
    }
    if (checkpoint_find_latest(cfg->run_dir, ckpt, n) < 0) {
        if (newest >= 0)
            alice_die("run_dir %s holds checkpoints (the newest ckpt_%ld.h5) but none of them is "
                      "intact (see above): restore one from a copy, or remove them to start over",
                      cfg->run_dir, newest);
        return 0;
    }
    checkpoint_check_resumable(ckpt, kind, cfg, backend);
    check_resume_spacing(ckpt, cfg->data, data_spacing);
    return 1;
}

int train_resume_checkpoint(const Config *cfg, const Dist *d, const AliceBackend *be,
                            const char *kind, const double *data_spacing,
                            const char *resume_from, int resume, char *ckpt, size_t n)
{
    char path[4096] = "";
    int found = d->rank == 0 ? choose_resume_checkpoint(cfg, be->name, kind, data_spacing,
                                                        resume_from, resume, path, sizeof path)
                             : 0;
    CHECK_MPI(MPI_Bcast(&found, 1, MPI_INT, 0, MPI_COMM_WORLD));
    CHECK_MPI(MPI_Bcast(path, (int)sizeof path, MPI_CHAR, 0, MPI_COMM_WORLD));
    snprintf(ckpt, n, "%s", found ? path : "");
    return found;
}

void train_grad_sync_init(GradSync *sync, const Config *cfg, const Dist *d, ParamSet *ps)
{
    const size_t bucket_floats = (size_t)(cfg->allreduce_bucket_mb * 1048576.0 / sizeof(float));
    grad_sync_init(sync, ps, bucket_floats, cfg->overlap_allreduce, dist_grad_transport(d, ps->be));
    if (d->size == 1) return;
    if (cfg->overlap_allreduce && !sync->overlap)
        log_info("overlap_allreduce: the ranks share a GPU, so each all-reduce goes through host "
                 "memory and blocks; reducing once after backward instead");
    log_info("gradient all-reduce: %s, %d bucket(s) of about %.3g MiB over %zu floats",
             sync->overlap ? "overlapped with backward" : "after backward",
             sync->overlap ? sync->nbuckets : 1,
             sync->overlap ? (double)cfg->allreduce_bucket_mb : ps->total * 4.0 / 1048576.0,
             ps->total);
}

void train_step_graph_init(StepGraph *graph, const AliceBackend *be, const Config *cfg,
                           GradSync *sync)
{
    /* auto keeps an overlapped all-reduce (no graph); 1 records and turns the overlap off */
    step_graph_init(graph, be, step_graph_mode(cfg->cuda_graph), sync->overlap);
    if (step_graph_enabled(graph) && sync->overlap) {
        sync->overlap = 0;
        log_info("cuda_graph: the gradient all-reduce runs once after backward, outside the "
                 "graph (overlap_allreduce is off with a graph)");
    }
}

void train_accumulate_step(const Config *cfg, ParamSet *ps, GradSync *sync, long step,
                           MicroBatchStep run, void *ctx, double *terms, int nterms)
{
    ALICE_ASSERT(nterms >= 1 && nterms <= TRAIN_MAX_TERMS, "%d loss terms (1..%d)", nterms,
                 TRAIN_MAX_TERMS);
    const int accum = cfg->accum_steps;
    if (accum > 1) ps->be->fill(ps->grad, 0.0f, ps->total);
    for (int k = 0; k < nterms; k++) terms[k] = 0.0;
    for (int micro = 0; micro < accum; micro++) {
        if (micro == accum - 1) grad_sync_begin(sync);
        double mt[TRAIN_MAX_TERMS];
        run(ctx, step, micro, mt);
        for (int k = 0; k < nterms; k++) terms[k] += mt[k] / accum;
    }
}

StepOutcome train_optimizer_step(const Config *cfg, const Dist *d, GradSync *sync, double *terms,
                                 int nterms, long step, float *lr, double *grad_norm,
                                 const EmaUpdate *ema)
{
    ParamSet *ps = sync->ps;
    grad_sync_finish(sync);
    /* accumulation: the micro-batches' gradients were summed; their mean is the step's */
    if (cfg->accum_steps > 1) ps->be->scale(ps->grad, 1.0f / (float)cfg->accum_steps, ps->total);
    for (int i = 0; i < nterms; i++) terms[i] = dist_sum_double(terms[i]) / d->size;
    *grad_norm = grad_global_norm(ps);
    *lr = schedule_lr(cfg, step, train_global_batch(cfg, d));
    if (!train_step_finite(terms[0], *grad_norm)) {
        if (!strcmp(cfg->on_nonfinite, "stop")) {
            /* nothing of this step is written: the newest checkpoint predates it */
            const long kept = checkpoint_latest_step(cfg->run_dir);
            char where[4200];
            if (kept >= 0)
                snprintf(where, sizeof where, "%s/ckpt_%ld.h5, the newest checkpoint, is of "
                         "step %ld, before it", cfg->run_dir, kept, kept);
            else
                snprintf(where, sizeof where, "%s holds no checkpoint yet, so a rerun starts "
                         "where this run started (step 0, or the checkpoint --resume named)",
                         cfg->run_dir);
            log_warn("step %ld: non-finite loss (%g) or gradient; stopping (exit status %d). "
                     "%s. Lower lr, or set on_nonfinite = skip to skip such steps", step,
                     terms[0], ALICE_EXIT_DIVERGED, where);
            return STEP_STOPPED;
        }
        log_warn("step %ld: non-finite loss (%g) or gradient; step skipped", step, terms[0]);
        return STEP_SKIPPED;
    }
    /* Clipping happens inside AdamW's pass; the gradients themselves stay unscaled (nothing
     * reads them again before the next step zeroes them). */
    optimizer_update(ps, cfg, *lr, step + 1, *grad_norm, ema);
    return STEP_APPLIED;
}

void train_bench_require_applied(StepOutcome outcome, long step, double loss)
{
    if (outcome != STEP_APPLIED)
        alice_die("benchmark step %ld produced a non-finite loss (%g) or gradient: lower lr or "
                  "check precision", step, loss);
}

int train_step_boundary(const Config *cfg, long step, int last, void (*save)(void *ctx, long steps_done),
                        void *ctx)
{
    int periodic = (step + 1) % cfg->ckpt_every == 0;
    if (periodic || last) save(ctx, step + 1);
    if (last || !preempt_agreed()) return 0;
    if (!periodic) save(ctx, step + 1);
    log_info("preempted after step %ld: checkpoint written, exiting with status %d for requeue",
             step, ALICE_EXIT_REQUEUE);
    return 1;
}
