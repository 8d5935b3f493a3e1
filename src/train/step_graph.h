/* The pre-training step as one backend graph (config key cuda_graph): the step's forward and
 * backward are enqueued eagerly once (warm-up: cuBLASLt plans and heuristics, scratch buffers,
 * bf16 weight copies all reach their final state), recorded into a graph on the next step, and
 * replayed with one launch on every later step, so the host no longer issues ~2600 kernel
 * launches per step (docs/PERFORMANCE.md: 6 ms of a 27 ms step were GPU idle between them).
 *
 * A replay runs the recorded kernels with the recorded pointers and scalars. That is the step
 * because everything the forward and backward read lives at fixed addresses (parameters,
 * gradients, the activation arena, the loss values) and every per-step input is put there
 * BEFORE the recorded work: views and masks are uploaded or copied before it, the loss
 * weights are configuration constants. Everything with host logic stays outside the graph and
 * runs eagerly after it: the loss read-back, the gradient all-reduce, the optimiser, the EMA,
 * DINO's center update, the loader.
 *
 * The state machine (one per training loop):
 *   WARMUP  --step eager-->  CAPTURE  --recorded + launched-->  REPLAY  --launch-->  REPLAY
 *   CAPTURE --recording failed: warning, the step run eagerly-->  FAILED (eager from then on)
 *   REPLAY  --graph stale (backend memory moved since recording): the step run eagerly-->
 *           CAPTURE (recorded again next step; after STEP_GRAPH_MAX_RECORDINGS: FAILED)
 *   OFF: cuda_graph = 0; a backend without graphs (device = cpu: with cuda_graph = 1 a
 *   warning says it is ignored, with auto nothing is said); or auto with the gradient
 *   all-reduce overlapped with backward (see StepGraphMode); every step eager.
 * Whatever the state, step_graph_run has enqueued exactly one step's work when it returns. */
#ifndef ALICE_STEP_GRAPH_H
#define ALICE_STEP_GRAPH_H

#include "ops/backend.h"

typedef enum {
    STEP_GRAPH_OFF,
    STEP_GRAPH_WARMUP,
    STEP_GRAPH_CAPTURE,
    STEP_GRAPH_REPLAY,
    STEP_GRAPH_FAILED,
} StepGraphState;

/* How step_graph_run ran one step. */
typedef enum { STEP_RAN_EAGER, STEP_RAN_RECORDED, STEP_RAN_REPLAYED } StepRun;

/* A stale graph is recorded again at most this many times per run: memory that keeps moving
 * means the recording never pays, so the loop stays eager. */
enum { STEP_GRAPH_MAX_RECORDINGS = 4 };

/* The config key cuda_graph (auto|1|0). ALWAYS records wherever the backend can; with several
 * ranks the caller then runs the gradient all-reduce once after backward (train_common.h).
 * AUTO records where the backend can AND the all-reduce is not overlapped with backward (one
 * rank, overlap_allreduce = 0, ranks sharing a GPU): on several GPUs hiding the all-reduce of
 * ~100 M gradients behind backward is worth more than the graph's 1.05x measured on one H200
 * (paper bf16 step with the defaults: 16.9 ms eager, 16.1 ms replayed; run 8). */
typedef enum { STEP_GRAPH_NEVER, STEP_GRAPH_ALWAYS, STEP_GRAPH_AUTO } StepGraphMode;

/* The mode of a cuda_graph value as the registry stores it ("auto", "1", "0"). */
StepGraphMode step_graph_mode(const char *cuda_graph);

/* Enqueues one step's work on the backend (no host waits inside). */
typedef void (*StepEnqueueFn)(void *ctx);

typedef struct {
    const AliceBackend *be;
    StepGraphState state;
    BackendGraph *graph;
    /* Counters (tests, logs): steps run each way, and recordings made (successful or not). */
    long eager_steps, recorded_steps, replayed_steps;
    int recordings;
} StepGraph;

/* mode: step_graph_mode(cfg->cuda_graph); sync_overlapped: the gradient all-reduce would be
 * overlapped with backward (GradSync.overlap; 0 without one). A backend without graph entries
 * (the CPU backend) turns ALWAYS into OFF with one log_warn saying it is ignored, AUTO into OFF
 * silently; AUTO with sync_overlapped is OFF, said in one log_info. */
void step_graph_init(StepGraph *sg, const AliceBackend *be, StepGraphMode mode,
                     int sync_overlapped);
/* Enqueues one step: eagerly, recorded and launched, or replayed (see the state machine). */
StepRun step_graph_run(StepGraph *sg, StepEnqueueFn enqueue, void *ctx);
/* step_graph_run when `recordable`; otherwise the step runs eagerly and the state is left as it
 * is: a step whose scalars differ from the later steps' (DINO's teacher temperature during its
 * warm-up, pretrain_model_begin_step) would be replayed wrongly, so the graph warms up, records
 * and replays from the first recordable step. Counted in eager_steps. */
StepRun step_graph_run_if(StepGraph *sg, int recordable, StepEnqueueFn enqueue, void *ctx);
/* 1 while steps may go through a graph (WARMUP, CAPTURE, REPLAY). */
int step_graph_enabled(const StepGraph *sg);
/* One log_info line of the counters after a training run: how many steps ran recorded,
 * replayed and eagerly (nothing when no recording was attempted: the graph off, or a CPU run). */
void step_graph_log_summary(const StepGraph *sg);
void step_graph_free(StepGraph *sg);

#endif
