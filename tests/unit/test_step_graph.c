/* The step-graph state machine (src/train/step_graph.c) against a fake backend whose graph
 * entries this test controls, so it runs without a GPU. The fake device keeps the one
 * invariant that matters for training: after every step_graph_run, exactly one more step's
 * work has RUN (an eager enqueue runs it; an enqueue while recording only records it; a launch
 * runs what was recorded). Checked, each against hand-counted sequences:
 *  - enabled: step 0 eager (warm-up), step 1 recorded once and launched, later steps launched
 *    without enqueuing anything; the graph is freed at the end;
 *  - cuda_graph = 0: every step eager, the graph entries never called;
 *  - a backend without graph entries (device = cpu) with cuda_graph = 1: OFF, every step eager;
 *  - cuda_graph = auto: one rank (no overlapped all-reduce) records and replays as 1 does; an
 *    all-reduce overlapped with backward keeps the loop eager (and, through
 *    train_step_graph_init, the overlap on), where 1 records and turns the overlap off; a
 *    backend without graph entries is eager; the config values parse to the three modes;
 *  - a recording that fails at its end (graph_capture_end NULL) or cannot begin: that step
 *    runs eagerly (once), the loop stays eager, no recording is tried again;
 *  - a launch refused because memory moved: that step runs eagerly, the stale graph is freed,
 *    the next step records again and replays after; after STEP_GRAPH_MAX_RECORDINGS
 *    recordings that all went stale, the loop stays eager;
 *  - step_graph_log_summary's line: the counters after replays and after a failed recording,
 *    nothing with the graph off. */
#include <string.h>

#include "train/step_graph.h"
#include "train/train_common.h"
#include "test.h"
#include "test_child.h"
#include "test_config.h"

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
    step_graph_init(&sg, &be, STEP_GRAPH_ALWAYS, 0);
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

/* step_graph_log_summary's line after 6 steps, in a child whose stdout (log_info's) joins
 * its stderr (the pipe test_child_exit reads). */
static StepGraphMode summary_mode;
static void summary_after_six_steps(void)
{
    fflush(stdout);
    if (dup2(2, 1) < 0) _exit(3);
    AliceBackend be = graph_backend();
    StepGraph sg;
    step_graph_init(&sg, &be, summary_mode, 0);
    for (int s = 0; s < 6; s++) step_graph_run(&sg, enqueue_step, NULL);
    step_graph_log_summary(&sg);
    step_graph_free(&sg);
    fflush(stdout);
}

static void expect_summary(StepGraphMode mode, int fail_end, const char *want)
{
    reset_device();
    dev.fail_end = fail_end;
    summary_mode = mode;
    char err[2048];
    const int status = test_child_exit(summary_after_six_steps, err, sizeof err);
    TEST_CHECK(status == 0 && (want ? strstr(err, want) != NULL : err[0] == '\0'),
               "mode %d, fail_end %d: exit %d, stderr '%s', expected %s%s", (int)mode, fail_end,
               status, err, want ? "a line with " : "nothing", want ? want : "");
}

static int test_log_summary(void)
{
    expect_summary(STEP_GRAPH_ALWAYS, 0, "cuda_graph: 1 steps recorded, 4 replayed, 1 eager "
                   "(1 recordings)\n");
    expect_summary(STEP_GRAPH_ALWAYS, 1, "cuda_graph: 0 steps recorded, 0 replayed, 6 eager "
                   "(1 recordings; the last failed, the loop ran eagerly after it)");
    expect_summary(STEP_GRAPH_NEVER, 0, NULL);
    return 0;
}

static int test_disabled_and_cpu(void)
{
    reset_device();
    AliceBackend be = graph_backend();
    StepGraph sg;
    step_graph_init(&sg, &be, STEP_GRAPH_NEVER, 0);
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
    step_graph_init(&sg, &cpu, STEP_GRAPH_ALWAYS, 0);
    TEST_CHECK(sg.state == STEP_GRAPH_OFF && !step_graph_enabled(&sg), "cpu: state %d", sg.state);
    run_steps(&sg, 3, NULL);
    TEST_CHECK(dev.enqueues == 3 && sg.eager_steps == 3, "cpu: %d enqueues", dev.enqueues);
    step_graph_free(&sg);
    /* ... and a backend with only some graph entries is treated the same */
    reset_device();
    AliceBackend partial = graph_backend();
    partial.graph_free = NULL;
    step_graph_init(&sg, &partial, STEP_GRAPH_ALWAYS, 0);
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
    step_graph_init(&sg, &be, STEP_GRAPH_ALWAYS, 0);
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
    step_graph_init(&sg, &be, STEP_GRAPH_ALWAYS, 0);
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
    step_graph_init(&sg, &be, STEP_GRAPH_ALWAYS, 0);
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
    step_graph_init(&sg, &be, STEP_GRAPH_ALWAYS, 0);
    run_steps(&sg, 3 * STEP_GRAPH_MAX_RECORDINGS + 4, NULL);
    TEST_CHECK(dev.begins == STEP_GRAPH_MAX_RECORDINGS, "always stale: %d recordings, expected %d",
               dev.begins, (int)STEP_GRAPH_MAX_RECORDINGS);
    TEST_CHECK(sg.state == STEP_GRAPH_FAILED && sg.graph == NULL, "always stale: state %d", sg.state);
    TEST_CHECK(dev.live_graphs == 0 && dev.launches == 0, "always stale: %d alive, %d launches",
               dev.live_graphs, dev.launches);
    step_graph_free(&sg);
    return 0;
}

/* cuda_graph = auto against the fake backend with graph entries. */
static int test_auto(void)
{
    TEST_CHECK(step_graph_mode("auto") == STEP_GRAPH_AUTO && step_graph_mode("1") ==
                   STEP_GRAPH_ALWAYS && step_graph_mode("0") == STEP_GRAPH_NEVER,
               "cuda_graph values: auto %d, 1 %d, 0 %d", step_graph_mode("auto"),
               step_graph_mode("1"), step_graph_mode("0"));

    /* one rank (no overlapped all-reduce): the same sequence as cuda_graph = 1 */
    reset_device();
    AliceBackend be = graph_backend();
    StepGraph sg;
    step_graph_init(&sg, &be, STEP_GRAPH_AUTO, 0);
    TEST_CHECK(sg.state == STEP_GRAPH_WARMUP && step_graph_enabled(&sg), "auto, one rank: state %d",
               sg.state);
    StepRun how[4];
    run_steps(&sg, 4, how);
    const StepRun want[4] = {STEP_RAN_EAGER, STEP_RAN_RECORDED, STEP_RAN_REPLAYED,
                             STEP_RAN_REPLAYED};
    for (int s = 0; s < 4; s++)
        TEST_CHECK(how[s] == want[s], "auto, one rank: step %d ran as %d, expected %d", s, how[s],
                   want[s]);
    TEST_CHECK(dev.enqueues == 2 && dev.begins == 1 && dev.launches == 3,
               "auto, one rank: %d enqueues, %d begins, %d launches; expected 2, 1, 3",
               dev.enqueues, dev.begins, dev.launches);
    step_graph_free(&sg);

    /* several ranks with the all-reduce overlapped with backward: no graph, every step eager */
    reset_device();
    step_graph_init(&sg, &be, STEP_GRAPH_AUTO, 1);
    TEST_CHECK(sg.state == STEP_GRAPH_OFF && !step_graph_enabled(&sg),
               "auto, overlapped all-reduce: state %d", sg.state);
    run_steps(&sg, 3, NULL);
    TEST_CHECK(dev.enqueues == 3 && dev.begins == 0 && dev.launches == 0,
               "auto, overlapped all-reduce: %d enqueues, %d begins, %d launches", dev.enqueues,
               dev.begins, dev.launches);
    step_graph_free(&sg);
    /* ... while cuda_graph = 1 records whatever the all-reduce does */
    reset_device();
    step_graph_init(&sg, &be, STEP_GRAPH_ALWAYS, 1);
    TEST_CHECK(sg.state == STEP_GRAPH_WARMUP, "1, overlapped all-reduce: state %d", sg.state);
    step_graph_free(&sg);

    /* device = cpu: no graph entries, eager (the warning is cuda_graph = 1's only:
     * tests/train/test_cuda_graph_cpu.sh checks the logs) */
    reset_device();
    AliceBackend cpu;
    memset(&cpu, 0, sizeof cpu);
    cpu.name = "cpu";
    step_graph_init(&sg, &cpu, STEP_GRAPH_AUTO, 0);
    TEST_CHECK(sg.state == STEP_GRAPH_OFF, "auto, cpu: state %d", sg.state);
    run_steps(&sg, 2, NULL);
    TEST_CHECK(dev.enqueues == 2 && sg.eager_steps == 2, "auto, cpu: %d enqueues", dev.enqueues);
    step_graph_free(&sg);
    return 0;
}

/* The training loops' entry (train_step_graph_init) with a gradient sync overlapped with
 * backward (several ranks, overlap_allreduce = 1): auto keeps the overlap and records nothing;
 * 1 records and turns the overlap off (the all-reduce then runs once after backward); with the
 * overlap already off (one rank, overlap_allreduce = 0, ranks sharing a GPU) auto records. */
static int test_training_loop_choice(void)
{
    static const char *const auto_graph[][2] = {{"cuda_graph", "auto"}};
    static const char *const always[][2] = {{"cuda_graph", "1"}};
    AliceBackend be = graph_backend();
    Config cfg;
    GradSync sync;
    StepGraph sg;

    reset_device();
    TEST_CONFIG(&cfg, auto_graph);
    memset(&sync, 0, sizeof sync);
    sync.overlap = 1;
    train_step_graph_init(&sg, &be, &cfg, &sync);
    TEST_CHECK(!step_graph_enabled(&sg) && sync.overlap == 1,
               "auto, overlapped sync: graph %d, overlap %d; expected no graph, overlap kept",
               step_graph_enabled(&sg), sync.overlap);
    step_graph_free(&sg);

    reset_device();
    memset(&sync, 0, sizeof sync);
    train_step_graph_init(&sg, &be, &cfg, &sync);
    TEST_CHECK(step_graph_enabled(&sg) && sync.overlap == 0,
               "auto, sync after backward: graph %d, overlap %d; expected a graph",
               step_graph_enabled(&sg), sync.overlap);
    step_graph_free(&sg);

    reset_device();
    TEST_CONFIG(&cfg, always);
    memset(&sync, 0, sizeof sync);
    sync.overlap = 1;
    train_step_graph_init(&sg, &be, &cfg, &sync);
    TEST_CHECK(step_graph_enabled(&sg) && sync.overlap == 0,
               "1, overlapped sync: graph %d, overlap %d; expected a graph, overlap off",
               step_graph_enabled(&sg), sync.overlap);
    step_graph_free(&sg);

    /* the default is auto */
    config_defaults(&cfg);
    TEST_CHECK(step_graph_mode(cfg.cuda_graph) == STEP_GRAPH_AUTO, "default cuda_graph = '%s'",
               cfg.cuda_graph);
    return 0;
}

int main(void)
{
    TEST_RUN(test_warmup_record_replay);
    TEST_RUN(test_log_summary);
    TEST_RUN(test_disabled_and_cpu);
    TEST_RUN(test_recording_fails);
    TEST_RUN(test_stale_graph);
    TEST_RUN(test_auto);
    TEST_RUN(test_training_loop_choice);
    return test_finish();
}
