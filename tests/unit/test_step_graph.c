/* The step-graph state machine (src/train/step_graph.c) against a fake backend whose graph
 * entries this test controls, so it runs without a GPU. The fake device keeps the one
 * invariant that matters for training: after every step_graph_run, exactly one more step's
 * work has RUN (an eager enqueue runs it; an enqueue while recording only records it; a launch
 * runs what was recorded). Checked, each against hand-counted sequences:
 *  - enabled: step 0 eager (warm-up), step 1 recorded once and launched, later steps launched
 *    without enqueuing anything; the graph is freed at the end;
 *  - cuda_graph = 0: every step eager, the graph entries never called;
 *  - a backend without graph entries (device = cpu) with cuda_graph = 1: OFF, every step eager;
 *  - a recording that fails at its end (graph_capture_end NULL) or cannot begin: that step
 *    runs eagerly (once), the loop stays eager, no recording is tried again;
 *  - a launch refused because memory moved: that step runs eagerly, the stale graph is freed,
 *    the next step records again and replays after; after STEP_GRAPH_MAX_RECORDINGS
 *    recordings that all went stale, the loop stays eager. */
#include <string.h>

#include "train/step_graph.h"
#include "test.h"

/* ---- the fake device and its graph entries ---- */
struct BackendGraph {
    int steps_recorded;   /* step bodies the recording holds */
    int id;
};

static struct {
    int capturing;
    int recorded;         /* step bodies enqueued during the current recording */
    int steps_run;        /* step bodies that ran (eagerly or in a launch) */
    int enqueues, begins, ends, launches, frees, live_graphs, next_id;
    int fail_begin, fail_end;
    int refuse_launches;  /* launches to refuse from now on (-1: all) */
} dev;

static void reset_device(void) { memset(&dev, 0, sizeof dev); }

static int fake_begin(void)
{
    dev.begins++;
    if (dev.fail_begin) return 0;
    dev.capturing = 1;
    dev.recorded = 0;
    return 1;
}

static BackendGraph *fake_end(void)
{
    dev.ends++;
    dev.capturing = 0;
    if (dev.fail_end) return NULL;
    static BackendGraph graphs[64];
    BackendGraph *g = &graphs[dev.next_id % 64];
    g->steps_recorded = dev.recorded;
    g->id = ++dev.next_id;
    dev.live_graphs++;
    return g;
}

static int fake_launch(BackendGraph *g)
{
    if (dev.refuse_launches) {
        if (dev.refuse_launches > 0) dev.refuse_launches--;
        return 0;
    }
    dev.launches++;
    dev.steps_run += g->steps_recorded;
    return 1;
}

static void fake_free(BackendGraph *g)
{
    (void)g;
    dev.frees++;
    dev.live_graphs--;
}

static void enqueue_step(void *ctx)
{
    (void)ctx;
    dev.enqueues++;
    if (dev.capturing) dev.recorded++;
    else dev.steps_run++;
}

static AliceBackend graph_backend(void)
{
    AliceBackend be;
    memset(&be, 0, sizeof be);
    be.name = "fake";
    be.graph_capture_begin = fake_begin;
    be.graph_capture_end = fake_end;
    be.graph_launch = fake_launch;
    be.graph_free = fake_free;
    return be;
}

/* Runs steps and checks the invariant after each: one more step body has run. */
static void run_steps(StepGraph *sg, int n, StepRun *how)
{
    for (int s = 0; s < n; s++) {
        int before = dev.steps_run;
        StepRun r = step_graph_run(sg, enqueue_step, NULL);
        if (how) how[s] = r;
        TEST_CHECK(dev.steps_run == before + 1, "step %d ran %d step bodies, expected 1", s,
                   dev.steps_run - before);
        TEST_CHECK(!dev.capturing, "step %d left a recording open", s);
    }
}

static int test_warmup_record_replay(void)
{
    reset_device();
    AliceBackend be = graph_backend();
    StepGraph sg;
    step_graph_init(&sg, &be, 1);
    TEST_CHECK(sg.state == STEP_GRAPH_WARMUP && step_graph_enabled(&sg), "state %d", sg.state);
    StepRun how[6];
    run_steps(&sg, 6, how);
    const StepRun want[6] = {STEP_RAN_EAGER, STEP_RAN_RECORDED, STEP_RAN_REPLAYED,
                             STEP_RAN_REPLAYED, STEP_RAN_REPLAYED, STEP_RAN_REPLAYED};
    for (int s = 0; s < 6; s++) TEST_CHECK(how[s] == want[s], "step %d ran as %d, expected %d", s, how[s], want[s]);
    TEST_CHECK(dev.enqueues == 2, "%d enqueues, expected 2 (warm-up, recording)", dev.enqueues);
    TEST_CHECK(dev.begins == 1 && dev.ends == 1, "%d begins, %d ends", dev.begins, dev.ends);
    TEST_CHECK(dev.launches == 5, "%d launches, expected 5", dev.launches);
    TEST_CHECK(sg.eager_steps == 1 && sg.recorded_steps == 1 && sg.replayed_steps == 4,
               "counters %ld/%ld/%ld", sg.eager_steps, sg.recorded_steps, sg.replayed_steps);
    TEST_CHECK(sg.state == STEP_GRAPH_REPLAY, "state %d", sg.state);
    step_graph_free(&sg);
    TEST_CHECK(dev.frees == 1 && dev.live_graphs == 0, "%d frees, %d graphs alive", dev.frees, dev.live_graphs);
    return 0;
}

static int test_disabled_and_cpu(void)
{
    reset_device();
    AliceBackend be = graph_backend();
    StepGraph sg;
    step_graph_init(&sg, &be, 0);
    TEST_CHECK(sg.state == STEP_GRAPH_OFF && !step_graph_enabled(&sg), "cuda_graph = 0: state %d", sg.state);
    run_steps(&sg, 4, NULL);
    TEST_CHECK(dev.enqueues == 4 && dev.begins == 0 && dev.launches == 0,
               "cuda_graph = 0: %d enqueues, %d begins, %d launches", dev.enqueues, dev.begins, dev.launches);
    step_graph_free(&sg);
    TEST_CHECK(dev.frees == 0, "freed a graph that was never made");

    /* device = cpu, cuda_graph = 1: the backend has no graph entries; ignored with a warning */
    reset_device();
    AliceBackend cpu;
    memset(&cpu, 0, sizeof cpu);
    cpu.name = "cpu";
    step_graph_init(&sg, &cpu, 1);
    TEST_CHECK(sg.state == STEP_GRAPH_OFF && !step_graph_enabled(&sg), "cpu: state %d", sg.state);
    run_steps(&sg, 3, NULL);
    TEST_CHECK(dev.enqueues == 3 && sg.eager_steps == 3, "cpu: %d enqueues", dev.enqueues);
    step_graph_free(&sg);
    /* ... and a backend with only some graph entries is treated the same */
    reset_device();
    AliceBackend partial = graph_backend();
    partial.graph_free = NULL;
    step_graph_init(&sg, &partial, 1);
    TEST_CHECK(sg.state == STEP_GRAPH_OFF, "partial table: state %d", sg.state);
    return 0;
}

static int test_recording_fails(void)
{
    /* graph_capture_end fails: the recorded step ran nothing, so it is enqueued again */
    reset_device();
    dev.fail_end = 1;
    AliceBackend be = graph_backend();
    StepGraph sg;
    step_graph_init(&sg, &be, 1);
    StepRun how[5];
    run_steps(&sg, 5, how);
    for (int s = 0; s < 5; s++) TEST_CHECK(how[s] == STEP_RAN_EAGER, "end fails: step %d ran as %d", s, how[s]);
    TEST_CHECK(dev.enqueues == 6, "end fails: %d enqueues, expected 6 (5 steps + the failed recording)", dev.enqueues);
    TEST_CHECK(dev.begins == 1 && dev.ends == 1 && dev.launches == 0,
               "end fails: %d begins, %d ends, %d launches", dev.begins, dev.ends, dev.launches);
    TEST_CHECK(sg.state == STEP_GRAPH_FAILED && !step_graph_enabled(&sg), "end fails: state %d", sg.state);
    step_graph_free(&sg);
    TEST_CHECK(dev.frees == 0, "end fails: freed %d graphs", dev.frees);

    /* graph_capture_begin fails: nothing recorded, the step runs eagerly once */
    reset_device();
    dev.fail_begin = 1;
    step_graph_init(&sg, &be, 1);
    run_steps(&sg, 4, how);
    TEST_CHECK(dev.enqueues == 4 && dev.begins == 1 && dev.ends == 0,
               "begin fails: %d enqueues, %d begins, %d ends", dev.enqueues, dev.begins, dev.ends);
    TEST_CHECK(sg.state == STEP_GRAPH_FAILED, "begin fails: state %d", sg.state);
    step_graph_free(&sg);
    return 0;
}

static int test_stale_graph(void)
{
    reset_device();
    AliceBackend be = graph_backend();
    StepGraph sg;
    step_graph_init(&sg, &be, 1);
    StepRun how[8];
    run_steps(&sg, 3, how);             /* eager, recorded, replayed */
    dev.refuse_launches = 1;            /* memory moves: the next launch is refused */
    run_steps(&sg, 5, how + 3);
    const StepRun want[8] = {STEP_RAN_EAGER, STEP_RAN_RECORDED, STEP_RAN_REPLAYED,
                             STEP_RAN_EAGER, STEP_RAN_RECORDED, STEP_RAN_REPLAYED,
                             STEP_RAN_REPLAYED, STEP_RAN_REPLAYED};
    for (int s = 0; s < 8; s++) TEST_CHECK(how[s] == want[s], "stale: step %d ran as %d, expected %d", s, how[s], want[s]);
    TEST_CHECK(dev.begins == 2 && sg.recordings == 2, "stale: %d recordings", dev.begins);
    TEST_CHECK(dev.frees == 1 && dev.live_graphs == 1, "stale: %d frees, %d alive", dev.frees, dev.live_graphs);
    step_graph_free(&sg);
    TEST_CHECK(dev.live_graphs == 0, "stale: %d graphs alive after free", dev.live_graphs);

    /* memory moves after every recording: after STEP_GRAPH_MAX_RECORDINGS the loop is eager */
    reset_device();
    dev.refuse_launches = -1;
    step_graph_init(&sg, &be, 1);
    run_steps(&sg, 3 * STEP_GRAPH_MAX_RECORDINGS + 4, NULL);
    TEST_CHECK(dev.begins == STEP_GRAPH_MAX_RECORDINGS, "always stale: %d recordings, expected %d",
               dev.begins, (int)STEP_GRAPH_MAX_RECORDINGS);
    TEST_CHECK(sg.state == STEP_GRAPH_FAILED && sg.graph == NULL, "always stale: state %d", sg.state);
    TEST_CHECK(dev.live_graphs == 0 && dev.launches == 0, "always stale: %d alive, %d launches",
               dev.live_graphs, dev.launches);
    step_graph_free(&sg);
    return 0;
}

int main(void)
{
    TEST_RUN(test_warmup_record_replay);
    TEST_RUN(test_disabled_and_cpu);
    TEST_RUN(test_recording_fails);
    TEST_RUN(test_stale_graph);
    return test_finish();
}
