/* The pre-training step recorded once as a CUDA graph and replayed (cuda_graph = 1,
 * src/train/step_graph.c, cuda/cuda_graph.cu) against the same steps run eagerly, on the GPU.
 * Skipped (exit 77, "skip: no GPU") without a visible GPU.
 *
 * Each case runs STEPS training steps of a tiny Alice model (both masked views, every loss)
 * from the same initial weights, crops and masks: the forward + backward through StepGraph,
 * then what the training loop does eagerly after it (loss read-back, AdamW, EMA, DINO center
 * update). A replay runs the same kernels with the same arguments on the same data, so the
 * loss terms of every step and the final parameters, EMA target, AdamW moments and centers
 * must be BIT-IDENTICAL to the eager run. The reference is checked first: two eager runs must
 * agree bit for bit (if the backend ever gains a run-to-run nondeterministic kernel, this says
 * so instead of blaming the graph, and the graph run is then held to the eager runs' spread).
 *
 * Cases: fp32 (GEMM attention) and bf16 (bf16 activations, weight copies; head width 32, so
 * attention_kernel = auto runs cuDNN's fused attention where the build has it, and a case with
 * attention_kernel = fused keeps the own flash kernels covered), cosine and DINO losses; and
 * the fallback: a step that waits on the
 * host inside the recorded region, or grows a scratch buffer there, must spoil the recording
 * (one warning), run eagerly instead and still give the eager results bit for bit. The graph
 * cases also check that the steps really were replayed (recorded once, STEPS - 2 replays).
 *
 * Gradient accumulation (two micro-batches per step, bf16, DINO): the loop zeroes the gradients
 * once per step and one recorded step serves every micro-batch, adding to them.
 *
 * Drop-path (drop_path = 0.5): each step's draws are uploaded before the step, outside the
 * recording, and every replay must read them (bf16; Alice with the cosine loss, and UNETR with
 * an inference forward between two steps, which drops nothing, as validation runs).
 *
 * DINO's teacher temperature warm-up (warmup_teacher_temp_steps = TEMP_WARMUP_STEPS): its steps
 * take another temperature each, so they run eagerly outside the graph
 * (step_graph_run_if, as src/train/pretrain.c runs them), and the graph warms up,
 * records and replays the constant-temperature steps after them: counted, and bit-identical
 * to the eager run.
 *
 * UNETR fine-tuning (src/train/finetune.c runs its step through the same StepGraph): STEPS
 * steps of a tiny UNETR (cuDNN convolutions, instance norms, DiceCE with its values finished on
 * the device) as the fine-tuning loop runs them (a new labelled batch uploaded before each
 * step, the loss read back after it, AdamW), fp32 and bf16: losses, parameters and AdamW
 * moments bit-identical to the eager run, held to the same rules. */
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
#include "train/step_graph.h"
#include "train/train_common.h"
#include "seg_batch.h"
#include "test.h"
#include "test_config.h"

enum { STEPS = 5, TEMP_WARMUP_STEPS = 2 };

/* warmup_teacher_temp_steps of the Alice runs: 0, or TEMP_WARMUP_STEPS in the warm-up case. */
static long g_temp_warmup_steps;
/* drop_path of the Alice runs: "0", or "0.5" in the drop-path case (new draws every step,
 * uploaded before the step: a replay must read them, not the recorded step's). */
static const char *g_drop_path = "0";
/* micro-batches per step of the Alice runs (gradient accumulation: the loop zeroes the
 * gradients once per step and every micro-batch's recorded step adds to them) */
static int g_accum = 1;

/* Head width 32 (96 / 3): bf16 runs take cuDNN's fused attention (attention auto, a build with
 * the cuDNN frontend) or the register-resident flash kernels (fused, or auto without cuDNN);
 * widths a multiple of 6 (3D sin-cos position embeddings of encoder and decoder). */
static const char *const tiny[][2] = {
    {"device", "cuda"}, {"method", "alice"}, {"crop", "32,32,16"}, {"patch", "8"},
    {"embed_dim", "96"}, {"depth", "2"}, {"heads", "3"}, {"mlp_dim", "192"}, {"dec_dim", "96"},
    {"dec_depth", "1"}, {"dec_heads", "3"}, {"dec_mlp_dim", "192"}, {"head_hidden", "64"},
    {"head_bottleneck", "16"}, {"head_out", "32"}, {"casa_dim", "64"}, {"batch", "2"},
    {"lr", "1e-3"}, {"seed", "7"},
};

/* How the recorded region of a step is made to fail (the fallback cases). */
typedef enum { SPOIL_NONE, SPOIL_HOST_WAIT, SPOIL_SCRATCH_GROWTH } SpoilKind;

typedef struct {
    PretrainModel *m;
    SpoilKind spoil;
    /* SPOIL_SCRATCH_GROWTH: a linear backward whose bias column sum needs twice the scratch
     * of the call before (rows doubling, more columns than any layer of the model), so the
     * scratch must grow inside the recording too, although the warm-up step grew it; buffers
     * are allocated beforehand for the largest call. */
    float *big_dx, *big_dW, *big_db, *big_dy, *big_x, *big_W;
    int calls;
} StepCtx;

enum { BIG_ROWS0 = 512, BIG_IN = 8, BIG_OUT = 1024, BIG_CALLS = STEPS + 1 };

static void enqueue(void *ctx)
{
    StepCtx *s = ctx;
    pretrain_model_enqueue_step(s->m);
    const AliceBackend *be = s->m->be;
    if (s->spoil == SPOIL_HOST_WAIT) {
        float v;
        be->download(&v, s->m->loss_values, sizeof v);   /* a host read: waits for the GPU */
    } else if (s->spoil == SPOIL_SCRATCH_GROWTH) {
        ALICE_ASSERT(s->calls < BIG_CALLS, "more steps than buffers for");
        const int rows = BIG_ROWS0 << s->calls++;
        be->linear_bwd(s->big_dx, s->big_dW, s->big_db, s->big_dy, s->big_x, s->big_W, rows,
                       BIG_IN, BIG_OUT);
    }
}

static void mean_over_one_rank(float *buf, size_t n, void *ctx)
{
    (void)buf; (void)n; (void)ctx;   /* one rank: the mean is the value */
}

/* Everything a run ends with, on the host (UNETR: terms loss, ce, dice, 0; no target, no
 * centers). */
typedef struct {
    double terms[STEPS][4];
    float *params, *target, *adam_m, *adam_v, *centers;
    size_t n, ncenters;
    StepGraph graph;   /* its counters and state after the run (graph freed) */
} RunResult;

static float *download_all(const AliceBackend *be, const float *buf, size_t n)
{
    float *h = xmalloc((n ? n : 1) * sizeof(float));
    if (n) be->download(h, buf, n * sizeof(float));
    return h;
}

static void free_result(RunResult *r)
{
    free(r->params); free(r->target); free(r->adam_m); free(r->adam_v); free(r->centers);
    memset(r, 0, sizeof *r);
}

/* init: the initial online, target and buffer values every run starts from (the first run
 * fills it). */
typedef struct {
    float *online, *target, *buffers;
} InitialState;

static void run(const char *precision, const char *align_loss, const char *attention,
                int use_graph, SpoilKind spoil, InitialState *init, RunResult *out)
{
    Config cfg;
    TEST_CONFIG(&cfg, tiny);
    config_set(&cfg, "precision", precision, "test", 0);
    config_set(&cfg, "align_loss", align_loss, "test", 0);
    config_set(&cfg, "attention_kernel", attention, "test", 0);
    char warmup[32];
    snprintf(warmup, sizeof warmup, "%ld", g_temp_warmup_steps);
    config_set(&cfg, "warmup_teacher_temp_steps", warmup, "test", 0);
    config_set(&cfg, "warmup_teacher_temp", "0.02", "test", 0);
    config_set(&cfg, "drop_path", g_drop_path, "test", 0);
    config_validate(&cfg);
    train_apply_device_math(&cfg);
    const AliceBackend *be = backend_cuda();
    PretrainModel m;
    pretrain_model_init(&m, &cfg, be, cfg.batch);
    const size_t n = m.online.total, nb = m.buffers.total;
    if (!init->online) {
        init->online = download_all(be, m.online.data, n);
        init->target = download_all(be, m.target.data, m.target.total);
        init->buffers = download_all(be, m.buffers.data, nb);
    } else {
        be->upload(m.online.data, init->online, n * sizeof(float));
        be->upload(m.target.data, init->target, m.target.total * sizeof(float));
        if (nb) be->upload(m.buffers.data, init->buffers, nb * sizeof(float));
    }

    StepCtx ctx = {&m, spoil, NULL, NULL, NULL, NULL, NULL, NULL, 0};
    if (spoil == SPOIL_SCRATCH_GROWTH) {
        const size_t rows = (size_t)BIG_ROWS0 << (BIG_CALLS - 1);
        ctx.big_dx = be->alloc(rows * BIG_IN * sizeof(float));
        ctx.big_x = be->alloc(rows * BIG_IN * sizeof(float));
        ctx.big_dy = be->alloc(rows * BIG_OUT * sizeof(float));
        ctx.big_dW = be->alloc((size_t)BIG_OUT * BIG_IN * sizeof(float));
        ctx.big_W = be->alloc((size_t)BIG_OUT * BIG_IN * sizeof(float));
        ctx.big_db = be->alloc((size_t)BIG_OUT * sizeof(float));
        be->fill(ctx.big_x, 0.5f, rows * BIG_IN);
        be->fill(ctx.big_dy, 0.25f, rows * BIG_OUT);
        be->fill(ctx.big_W, 0.125f, (size_t)BIG_OUT * BIG_IN);
        be->fill(ctx.big_dW, 0.0f, (size_t)BIG_OUT * BIG_IN);
        be->fill(ctx.big_db, 0.0f, (size_t)BIG_OUT);
    }

    const size_t vox = (size_t)m.B * m.dims[0] * m.dims[1] * m.dims[2];
    float *vol = xmalloc(vox * VIEW_COUNT * sizeof(float));
    step_graph_init(&out->graph, be, use_graph ? STEP_GRAPH_ALWAYS : STEP_GRAPH_NEVER, 0);
    m.zero_grads_in_step = g_accum == 1;
    for (int s = 0; s < STEPS; s++) {
        if (g_accum > 1) be->fill(m.online.grad, 0.0f, m.online.total);
        for (int k = 0; k < 4; k++) out->terms[s][k] = 0.0;
        for (int micro = 0; micro < g_accum; micro++) {
            /* The inputs, uploaded before the recorded region as the training loop does. */
            const long u = (long)s * g_accum + micro;
            RngStream rng;
            rng_init(&rng, 5, (uint64_t)u, 0, RNG_TEST);
            for (size_t i = 0; i < vox * VIEW_COUNT; i++) vol[i] = rng_uniform(&rng);
            const float *views[VIEW_COUNT] = {vol, vol + vox, vol + 2 * vox, vol + 3 * vox};
            pretrain_model_set_views(&m, views);
            pretrain_model_draw_masks(&m, s, u * m.B);
            step_graph_run_if(&out->graph, pretrain_model_begin_step(&m, s), enqueue, &ctx);
            LossTerms t = pretrain_model_read_losses(&m);
            if (g_accum > 1) pretrain_model_collect_centers(&m);
            out->terms[s][0] += t.loss, out->terms[s][1] += t.l_r;
            out->terms[s][2] += t.l_dv, out->terms[s][3] += t.l_st;
        }
        if (g_accum > 1) be->scale(m.online.grad, 1.0f / (float)g_accum, m.online.total);
        adamw_step(&m.online, &cfg, cfg.lr, s + 1);
        ema_step(&m.target, &m.online, 0.99f);
        pretrain_model_update_centers(&m, mean_over_one_rank, NULL);
    }
    be->synchronize();
    out->n = n;
    out->params = download_all(be, m.online.data, n);
    out->target = download_all(be, m.target.data, n);
    out->adam_m = download_all(be, m.online.m, n);
    out->adam_v = download_all(be, m.online.v, n);
    out->ncenters = nb;
    out->centers = download_all(be, m.buffers.data, nb);
    StepGraph counters = out->graph;
    step_graph_free(&out->graph);
    out->graph = counters;
    out->graph.graph = NULL;
    if (spoil == SPOIL_SCRATCH_GROWTH) {
        be->release(ctx.big_dx); be->release(ctx.big_x); be->release(ctx.big_dy);
        be->release(ctx.big_dW); be->release(ctx.big_W); be->release(ctx.big_db);
    }
    free(vol);
    pretrain_model_free(&m);
    gpu_set_math(0, 0);
}

/* Elements of a and b that differ in their bits; worst |a - b| / max(|a|) in *rel. */
static size_t differing(const float *a, const float *b, size_t n, double *rel)
{
    size_t diff = 0;
    double worst = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++) {
        scale = fmax(scale, fabs((double)a[i]));
        if (memcmp(&a[i], &b[i], sizeof(float))) {
            diff++;
            worst = fmax(worst, fabs((double)a[i] - (double)b[i]));
        }
    }
    *rel = scale > 0 ? worst / scale : worst;
    return diff;
}

typedef struct {
    size_t count;     /* differing elements over every buffer and loss term */
    double rel;       /* worst relative difference */
} Difference;

static Difference compare_runs(const RunResult *a, const RunResult *b)
{
    Difference d = {0, 0.0};
    double rel;
    const float *ab[][2] = {{a->params, b->params}, {a->target, b->target},
                            {a->adam_m, b->adam_m}, {a->adam_v, b->adam_v}};
    for (size_t k = 0; k < sizeof ab / sizeof ab[0]; k++) {
        if (!ab[k][0] || !ab[k][1]) continue;   /* a model without an EMA target */
        d.count += differing(ab[k][0], ab[k][1], a->n, &rel);
        d.rel = fmax(d.rel, rel);
    }
    d.count += differing(a->centers, b->centers, a->ncenters, &rel);
    d.rel = fmax(d.rel, rel);
    for (int s = 0; s < STEPS; s++)
        for (int k = 0; k < 4; k++)
            if (memcmp(&a->terms[s][k], &b->terms[s][k], sizeof(double))) {
                d.count++;
                d.rel = fmax(d.rel, fabs(a->terms[s][k] - b->terms[s][k]) /
                                        fmax(fabs(a->terms[s][k]), 1e-30));
            }
    return d;
}

/* ---- UNETR fine-tuning ---- */

/* embed_dim a multiple of 6 (sin-cos positions); head width 32 as above (96 / 3). */
static const char *const unetr_tiny[][2] = {
    {"device", "cuda"}, {"crop", "32,32,32"}, {"patch", "16"}, {"embed_dim", "96"},
    {"depth", "4"}, {"heads", "3"}, {"mlp_dim", "128"}, {"feature_size", "4"},
    {"num_classes", "3"}, {"batch", "2"}, {"lr", "1e-3"}, {"seed", "7"},
};

static void enqueue_unetr(void *model) { unetr_enqueue_step(model); }

/* STEPS fine-tuning steps as finetune.c runs them: the step's batch uploaded before the
 * recorded region, forward + backward through StepGraph, the loss read back, AdamW. */
static void run_unetr(const char *precision, const char *attention, int use_graph,
                      InitialState *init, RunResult *out)
{
    Config cfg;
    TEST_CONFIG(&cfg, unetr_tiny);
    config_set(&cfg, "precision", precision, "test", 0);
    config_set(&cfg, "attention_kernel", attention, "test", 0);
    config_set(&cfg, "drop_path", g_drop_path, "test", 0);
    config_validate(&cfg);
    train_apply_device_math(&cfg);
    const AliceBackend *be = backend_cuda();
    UnetrModel m;
    unetr_init(&m, &cfg, be, cfg.batch, 1);
    const size_t n = m.ps.total;
    if (!init->online) init->online = download_all(be, m.ps.data, n);
    else be->upload(m.ps.data, init->online, n * sizeof(float));
    const long V = unetr_crop_voxels(&m);
    float *img = xmalloc((size_t)m.B * V * sizeof(float));
    int32_t *lab = xmalloc((size_t)m.B * V * sizeof(int32_t));
    step_graph_init(&out->graph, be, use_graph ? STEP_GRAPH_ALWAYS : STEP_GRAPH_NEVER, 0);
    for (int s = 0; s < STEPS; s++) {
        test_box_slab_batch(img, lab, m.B, cfg.crop[0], cfg.crop[1], cfg.crop[2], 100 + (uint64_t)s);
        unetr_set_batch(&m, img, lab);
        unetr_draw_drop_path(&m, s, (long)s * m.B);   /* no-op without drop-path */
        step_graph_run(&out->graph, enqueue_unetr, &m);
        SegLoss t = unetr_read_losses(&m);
        out->terms[s][0] = t.loss, out->terms[s][1] = t.ce, out->terms[s][2] = t.dice;
        out->terms[s][3] = 0.0;
        adamw_step(&m.ps, &cfg, cfg.lr, s + 1);
        /* a validation forward between steps (inference: drops nothing), as finetune.c's:
         * the replays after it must still drop */
        if (s == 1) unetr_forward(&m);
    }
    be->synchronize();
    out->n = n;
    out->params = download_all(be, m.ps.data, n);
    out->target = NULL;
    out->adam_m = download_all(be, m.ps.m, n);
    out->adam_v = download_all(be, m.ps.v, n);
    out->ncenters = 0;
    out->centers = download_all(be, NULL, 0);
    StepGraph counters = out->graph;
    step_graph_free(&out->graph);
    out->graph = counters;
    out->graph.graph = NULL;
    free(img);
    free(lab);
    unetr_free(&m);
    gpu_set_math(0, 0);
}

typedef enum { MODEL_ALICE, MODEL_UNETR } StepModel;

/* One run of `model`; align_loss is Alice's (ignored for UNETR); attention: the value of
 * attention_kernel. */
static void run_model(StepModel model, const char *precision, const char *align_loss,
                      const char *attention, int use_graph, InitialState *init, RunResult *out)
{
    if (model == MODEL_UNETR) run_unetr(precision, attention, use_graph, init, out);
    else run(precision, align_loss, attention, use_graph, SPOIL_NONE, init, out);
}

static int check_case(StepModel model, const char *precision, const char *align_loss,
                      const char *attention)
{
    InitialState init = {NULL, NULL, NULL};
    RunResult eager, again, graph;
    memset(&eager, 0, sizeof eager);
    memset(&again, 0, sizeof again);
    memset(&graph, 0, sizeof graph);
    run_model(model, precision, align_loss, attention, 0, &init, &eager);
    run_model(model, precision, align_loss, attention, 0, &init, &again);
    run_model(model, precision, align_loss, attention, 1, &init, &graph);

    /* the warm-up's steps eager, then the graph's own warm-up step, a recording, replays (one
     * graph run per micro-batch) */
    const long unrecorded = model == MODEL_ALICE ? g_temp_warmup_steps * g_accum : 0;
    const long runs = model == MODEL_ALICE ? (long)STEPS * g_accum : STEPS;
    TEST_CHECK(graph.graph.eager_steps == 1 + unrecorded && graph.graph.recorded_steps == 1 &&
                   graph.graph.replayed_steps == runs - 2 - unrecorded,
               "%s %s: steps ran %ld eager, %ld recorded, %ld replayed; expected %ld, 1, %ld "
               "(state %d: the recording failed? see the warning above)", precision, align_loss,
               graph.graph.eager_steps, graph.graph.recorded_steps, graph.graph.replayed_steps,
               1 + unrecorded, runs - 2 - unrecorded, (int)graph.graph.state);
    for (int s = 0; s < STEPS; s++)
        TEST_CHECK(isfinite(graph.terms[s][0]) && graph.terms[s][0] > 0,
                   "%s %s: step %d loss %g", precision, align_loss, s, graph.terms[s][0]);
    Difference base = compare_runs(&eager, &again), d = compare_runs(&eager, &graph);
    printf("    %s %s (attention %s): eager vs eager %zu differing values; graph vs eager %zu "
           "(worst relative %.2e); loss %.9g -> %.9g\n", precision, align_loss, attention,
           base.count, d.count, d.rel, graph.terms[0][0], graph.terms[STEPS - 1][0]);
    if (base.count == 0) {
        TEST_CHECK(d.count == 0, "%s %s: a replayed step differs from the eager one in %zu "
                   "values (worst relative %.2e)", precision, align_loss, d.count, d.rel);
    } else {
        printf("    note: two eager runs differ here (a run-to-run nondeterministic kernel); the "
               "graph run is held to their spread\n");
        TEST_CHECK(d.rel <= 10 * base.rel + 1e-7, "%s %s: graph vs eager worst relative %.2e, "
                   "eager vs eager %.2e", precision, align_loss, d.rel, base.rel);
    }
    free_result(&eager);
    free_result(&again);
    free_result(&graph);
    free(init.online); free(init.target); free(init.buffers);
    return 0;
}

/* A recording the backend cannot replay: one warning, the step runs eagerly, the loop stays
 * eager, and the results are the eager ones. */
static int check_fallback(SpoilKind spoil, const char *what)
{
    InitialState init = {NULL, NULL, NULL};
    RunResult eager, fallback;
    memset(&eager, 0, sizeof eager);
    memset(&fallback, 0, sizeof fallback);
    /* The recording run first: its scratch growth must happen while recording, before the
     * eager run has grown the process's scratch buffers to their largest. */
    run("fp32", "cosine", "auto", 1, spoil, &init, &fallback);
    run("fp32", "cosine", "auto", 0, spoil, &init, &eager);
    TEST_CHECK(fallback.graph.state == STEP_GRAPH_FAILED && fallback.graph.recordings == 1 &&
                   fallback.graph.replayed_steps == 0 && fallback.graph.eager_steps == STEPS,
               "%s: state %d, %d recordings, %ld replayed, %ld eager; expected a failed "
               "recording and %d eager steps", what, (int)fallback.graph.state,
               fallback.graph.recordings, fallback.graph.replayed_steps,
               fallback.graph.eager_steps, STEPS);
    Difference d = compare_runs(&eager, &fallback);
    printf("    fallback (%s): %zu values differ from the eager run\n", what, d.count);
    TEST_CHECK(d.count == 0, "%s: the fallback run differs from the eager one in %zu values "
               "(worst relative %.2e)", what, d.count, d.rel);
    free_result(&eager);
    free_result(&fallback);
    free(init.online); free(init.target); free(init.buffers);
    return 0;
}

static int test_fp32_cosine(void) { return check_case(MODEL_ALICE, "fp32", "cosine", "auto"); }
static int test_bf16_cosine(void) { return check_case(MODEL_ALICE, "bf16", "cosine", "auto"); }
static int test_bf16_dino(void) { return check_case(MODEL_ALICE, "bf16", "dino", "auto"); }
static int test_bf16_dino_temp_warmup(void)
{
    g_temp_warmup_steps = TEMP_WARMUP_STEPS;
    const int rc = check_case(MODEL_ALICE, "bf16", "dino", "auto");
    g_temp_warmup_steps = 0;
    return rc;
}
/* accumulation: two micro-batches per step through one recorded step, DINO's centers from
 * their mean */
static int test_bf16_accum(void)
{
    g_accum = 2;
    const int rc = check_case(MODEL_ALICE, "bf16", "dino", "auto");
    g_accum = 1;
    return rc;
}
static int test_bf16_drop_path(void)
{
    g_drop_path = "0.5";
    const int rc = check_case(MODEL_ALICE, "bf16", "cosine", "auto");
    g_drop_path = "0";
    return rc;
}
/* the own flash kernels inside the graph (auto runs cuDNN at this head width where built) */
static int test_bf16_fused_cosine(void)
{
    return check_case(MODEL_ALICE, "bf16", "cosine", "fused");
}
/* align_loss "unetr": the name the messages and the printed line show for the UNETR cases. */
static int test_unetr_fp32(void) { return check_case(MODEL_UNETR, "fp32", "unetr", "auto"); }
static int test_unetr_bf16(void) { return check_case(MODEL_UNETR, "bf16", "unetr", "auto"); }
static int test_unetr_bf16_drop_path(void)
{
    g_drop_path = "0.5";
    const int rc = check_case(MODEL_UNETR, "bf16", "unetr", "auto");
    g_drop_path = "0";
    return rc;
}
static int test_fallback_host_wait(void) { return check_fallback(SPOIL_HOST_WAIT, "host wait"); }
static int test_fallback_scratch_growth(void)
{
    return check_fallback(SPOIL_SCRATCH_GROWTH, "scratch growth");
}

int main(int argc, char **argv)
{
    if (gpu_device_count() == 0) {
        printf("skip: no GPU (built without CUDA, or cudaGetDeviceCount finds no device)\n");
        return 77;
    }
    MPI_Init(&argc, &argv);
    /* The fallbacks first: the scratch-growth case needs its recorded call (32 KiB of column-sum
     * partials) to outgrow SCRATCH_COLSUM, which the cases below would already have grown past
     * that (UNETR's DiceCE keeps 256 KiB of per-voxel CE terms there), so the recording would
     * not be spoiled and the case would fail. */
    TEST_RUN(test_fallback_host_wait);
    TEST_RUN(test_fallback_scratch_growth);
    TEST_RUN(test_fp32_cosine);
    TEST_RUN(test_bf16_cosine);
    TEST_RUN(test_bf16_dino);
    TEST_RUN(test_bf16_dino_temp_warmup);
    TEST_RUN(test_bf16_fused_cosine);
    TEST_RUN(test_bf16_drop_path);
    TEST_RUN(test_bf16_accum);
    TEST_RUN(test_unetr_fp32);
    TEST_RUN(test_unetr_bf16);
    TEST_RUN(test_unetr_bf16_drop_path);
    MPI_Finalize();
    return test_finish();
}
