#include "train/step_graph.h"

#include <string.h>

#include "core/check.h"
#include "core/log.h"

static int backend_has_graphs(const AliceBackend *be)
{
    return be->graph_capture_begin && be->graph_capture_end && be->graph_launch && be->graph_free;
}

StepGraphMode step_graph_mode(const char *cuda_graph)
{
    if (!strcmp(cuda_graph, "auto")) return STEP_GRAPH_AUTO;
    if (!strcmp(cuda_graph, "1")) return STEP_GRAPH_ALWAYS;
    if (!strcmp(cuda_graph, "0")) return STEP_GRAPH_NEVER;
    /* the registry (config_keys.c) admits only these, boolean spellings stored as 1 and 0 */
    ALICE_FATAL("cuda_graph = '%s' reached step_graph_mode: expected auto, 1 or 0", cuda_graph);
}

void step_graph_init(StepGraph *sg, const AliceBackend *be, StepGraphMode mode,
                     int sync_overlapped)
{
    memset(sg, 0, sizeof *sg);
    sg->be = be;
    sg->state = STEP_GRAPH_OFF;
    if (mode == STEP_GRAPH_NEVER) return;
    if (!backend_has_graphs(be)) {
        /* auto is the default: a CPU run has nothing to be told */
        if (mode == STEP_GRAPH_ALWAYS)
            log_warn("cuda_graph = 1 is ignored: the %s backend cannot record graphs (CUDA only); "
                     "every step runs eagerly", be->name);
        return;
    }
    if (mode == STEP_GRAPH_AUTO && sync_overlapped) {
        log_info("cuda_graph = auto: every step runs eagerly, so the gradient all-reduce stays "
                 "overlapped with backward (several GPUs: worth more than the graph's ~1.05x); "
                 "cuda_graph = 1 records the step and reduces once after backward");
        return;
    }
    sg->state = STEP_GRAPH_WARMUP;
}

int step_graph_enabled(const StepGraph *sg)
{
    return sg->state == STEP_GRAPH_WARMUP || sg->state == STEP_GRAPH_CAPTURE ||
           sg->state == STEP_GRAPH_REPLAY;
}

static StepRun run_eager(StepGraph *sg, StepEnqueueFn enqueue, void *ctx)
{
    enqueue(ctx);
    sg->eager_steps++;
    return STEP_RAN_EAGER;
}

/* Launches the graph; when the backend refuses (memory the graph names moved since it was
 * recorded, e.g. a scratch buffer grew in an op outside the step), runs this step eagerly (a
 * warm-up again) and records anew next step, up to STEP_GRAPH_MAX_RECORDINGS. */
static StepRun launch(StepGraph *sg, StepEnqueueFn enqueue, void *ctx, StepRun ran)
{
    if (sg->be->graph_launch(sg->graph)) {
        if (ran == STEP_RAN_RECORDED) sg->recorded_steps++;
        else sg->replayed_steps++;
        return ran;
    }
    sg->be->graph_free(sg->graph);
    sg->graph = NULL;
    if (sg->recordings >= STEP_GRAPH_MAX_RECORDINGS) {
        sg->state = STEP_GRAPH_FAILED;
        log_warn("cuda_graph: backend memory moved after each of %d recordings of the step; "
                 "every step runs eagerly from now on", sg->recordings);
    } else {
        sg->state = STEP_GRAPH_CAPTURE;
        log_info("cuda_graph: backend memory moved since the step was recorded; this step runs "
                 "eagerly, the next is recorded again");
    }
    return run_eager(sg, enqueue, ctx);
}

/* Records the step, then launches the recording; a failed recording ran nothing, so the step
 * then runs eagerly and the loop stays eager (the backend has said why). */
static StepRun record_and_launch(StepGraph *sg, StepEnqueueFn enqueue, void *ctx)
{
    sg->recordings++;
    if (!sg->be->graph_capture_begin()) {
        sg->state = STEP_GRAPH_FAILED;
        log_warn("cuda_graph: could not start recording the step; every step runs eagerly");
        return run_eager(sg, enqueue, ctx);
    }
    enqueue(ctx);
    sg->graph = sg->be->graph_capture_end();
    if (!sg->graph) {
        sg->state = STEP_GRAPH_FAILED;
        log_warn("cuda_graph: recording the step failed (reason above); every step runs eagerly "
                 "from now on");
        return run_eager(sg, enqueue, ctx);
    }
    sg->state = STEP_GRAPH_REPLAY;
    return launch(sg, enqueue, ctx, STEP_RAN_RECORDED);
}

StepRun step_graph_run(StepGraph *sg, StepEnqueueFn enqueue, void *ctx)
{
    switch (sg->state) {
    case STEP_GRAPH_OFF:
    case STEP_GRAPH_FAILED:
        return run_eager(sg, enqueue, ctx);
    case STEP_GRAPH_WARMUP:
        /* Plans, heuristics, scratch buffers and weight copies reach their final state. */
        sg->state = STEP_GRAPH_CAPTURE;
        return run_eager(sg, enqueue, ctx);
    case STEP_GRAPH_CAPTURE:
        return record_and_launch(sg, enqueue, ctx);
    case STEP_GRAPH_REPLAY:
        return launch(sg, enqueue, ctx, STEP_RAN_REPLAYED);
    }
    ALICE_FATAL("step graph in an unknown state %d", (int)sg->state);
}

StepRun step_graph_run_if(StepGraph *sg, int recordable, StepEnqueueFn enqueue, void *ctx)
{
    return recordable ? step_graph_run(sg, enqueue, ctx) : run_eager(sg, enqueue, ctx);
}

void step_graph_log_summary(const StepGraph *sg)
{
    if (sg->recordings == 0) return;
    log_info("cuda_graph: %ld steps recorded, %ld replayed, %ld eager (%d recordings%s)",
             sg->recorded_steps, sg->replayed_steps, sg->eager_steps, sg->recordings,
             sg->state == STEP_GRAPH_FAILED ? "; the last failed, the loop ran eagerly after it"
                                            : "");
}

void step_graph_free(StepGraph *sg)
{
    if (sg->graph) sg->be->graph_free(sg->graph);
    sg->graph = NULL;
    sg->state = STEP_GRAPH_OFF;
}
