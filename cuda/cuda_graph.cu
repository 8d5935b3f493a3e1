/* CUDA graphs of the backend's stream: backend.h graph_* entries and the capture hooks of
 * cuda/cuda_graph.h.
 *
 * Capture mode: cudaStreamCaptureModeThreadLocal. Other threads keep working while the
 * training thread records a step (the loader's uploads on their own stream, pinned allocations,
 * event waits; NCCL's proxy threads): Global mode would make their potentially unsafe calls
 * fail in those threads while any capture is open; Relaxed mode would also let the recording thread itself call cudaMalloc / cudaFree /
 * synchronising APIs without an error, hiding exactly the mistakes that make a graph wrong.
 * ThreadLocal rejects them on the recording thread only, and the backend's own places that
 * would make them (cuda/cuda_graph.h) turn them into a spoiled capture instead.
 *
 * A failed capture is never fatal: the capture is ended, the error (not sticky) cleared with
 * cudaGetLastError, one log_warn names the reason, and graph_capture_end returns NULL so the
 * caller runs the step eagerly. Every other CUDA call is checked with the house macros. */
#include <atomic>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "cuda/cuda_context.h"
#include "cuda/cuda_graph.h"
#include "cuda/cuda_weight_copy.h"

struct BackendGraph {
    cudaGraphExec_t exec;
    unsigned long long memory_epoch;  /* cuda_graph_memory_moved count when its capture began */
    size_t nodes;
};

enum { kMaxDeferredFrees = 64 };

/* The capture of this thread (only the thread that calls graph_capture_begin records). */
struct CaptureState {
    int active;
    char spoiled[512];                 /* "" = replayable so far */
    void *deferred_free[kMaxDeferredFrees];
    int ndeferred;
    int deferred_overflow;             /* frees beyond the list: leaked, said in the warning */
    unsigned zero_slots;               /* bit s: scratch slot s reallocated during the capture */
    unsigned long long memory_epoch;   /* g_memory_epoch when the capture began */
};
static thread_local CaptureState t_capture;

/* Bumped whenever memory a graph may name is reallocated or freed (any thread). */
static std::atomic<unsigned long long> g_memory_epoch(0);

int cuda_graph_capturing(void) { return t_capture.active; }

void cuda_graph_spoil(const char *fmt, ...)
{
    if (!t_capture.active || t_capture.spoiled[0]) return;  /* the first reason wins */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t_capture.spoiled, sizeof t_capture.spoiled, fmt, ap);
    va_end(ap);
    if (!t_capture.spoiled[0]) snprintf(t_capture.spoiled, sizeof t_capture.spoiled, "unknown");
}

void *cuda_graph_malloc_relaxed(size_t bytes)
{
    /* Push-pop of the thread's capture mode, as cudaThreadExchangeStreamCaptureMode suggests:
     * cudaMalloc does not touch the stream, it is only the ThreadLocal rule that forbids it. */
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
    void *p = NULL;
    const cudaError_t e = cudaMalloc(&p, bytes);
    CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
    if (e == cudaErrorMemoryAllocation)
        alice_die("out of GPU memory: %.2f GiB requested while recording a CUDA graph; reduce "
                  "batch or crop, or set cuda_graph = 0", (double)bytes / (1u << 30));
    CUDA_CHECK(e);
    return p;
}

void cuda_graph_free_after_capture(void *p)
{
    if (!p) return;
    if (t_capture.ndeferred < kMaxDeferredFrees) t_capture.deferred_free[t_capture.ndeferred++] = p;
    else t_capture.deferred_overflow++;
}

void cuda_graph_zero_after_capture(int scratch_slot)
{
    if (scratch_slot >= 0 && scratch_slot < SCRATCH_SLOT_COUNT) t_capture.zero_slots |= 1u << scratch_slot;
}

void cuda_graph_memory_moved(void) { g_memory_epoch.fetch_add(1); }

int cuda_graph_capture_begin(void)
{
    ALICE_ASSERT(!t_capture.active, "graph_capture_begin while a capture is already recording");
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    CUDA_CHECK(cudaStreamIsCapturing(cuda_stream(), &status));
    if (status != cudaStreamCaptureStatusNone) {
        log_warn("cuda_graph: the backend's stream is already being captured elsewhere; this "
                 "step runs eagerly");
        return 0;
    }
    /* A weight written since the warm-up step by an op that does not keep its bf16 copy (an
     * upload, a plain copy) would otherwise spoil the recording in cuda_weight_bf16 and leave
     * the loop eager for good: bring every stale copy up to date now, eagerly, in stream order
     * (graph_launch does the same before each replay). */
    cuda_weight_copies_refresh();
    const cudaError_t e = cudaStreamBeginCapture(cuda_stream(), cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();  /* not sticky: clear it so the next checked call is clean */
        log_warn("cuda_graph: cudaStreamBeginCapture failed: %s (%s); the step runs eagerly",
                 cudaGetErrorString(e), cudaGetErrorName(e));
        return 0;
    }
    t_capture.active = 1;
    t_capture.spoiled[0] = '\0';
    /* Read at the start: memory moved while recording (a thread that does not spoil this
     * capture) may be named by the recorded work, so the graph must come out stale. */
    t_capture.memory_epoch = g_memory_epoch.load();
    t_capture.ndeferred = 0;
    t_capture.deferred_overflow = 0;
    t_capture.zero_slots = 0;
    return 1;
}

/* What a capture deferred: now that the stream runs eagerly again, zero the reallocated
 * scratch slots (in stream order, before anything that uses them) and free the replaced
 * buffers once the work enqueued before the capture, which may read them, is done. */
static void settle_deferred(void)
{
    CudaContext *ctx = cuda_context();
    for (int s = 0; s < SCRATCH_SLOT_COUNT; s++)
        if (((t_capture.zero_slots >> s) & 1u) && ctx->scratch[s])
            CUDA_CHECK(cudaMemsetAsync(ctx->scratch[s], 0, ctx->scratch_bytes[s], ctx->stream));
    if (t_capture.ndeferred) {
        CUDA_WAIT_STREAM(ctx->stream);   /* eager work from before the capture may read them */
        CUDA_WAIT_BEFORE_DEVICE_SYNC();  /* cudaFree also waits for the communication stream */
        for (int i = 0; i < t_capture.ndeferred; i++) CUDA_CHECK(cudaFree(t_capture.deferred_free[i]));
    }
    if (t_capture.deferred_overflow)
        log_warn("cuda_graph: %d device buffers replaced during the capture were not freed "
                 "(more than %d)", t_capture.deferred_overflow, (int)kMaxDeferredFrees);
    t_capture.ndeferred = 0;
    t_capture.deferred_overflow = 0;
    t_capture.zero_slots = 0;
}

BackendGraph *cuda_graph_capture_end(void)
{
    ALICE_ASSERT(t_capture.active, "graph_capture_end without graph_capture_begin");
    cudaGraph_t graph = NULL;
    const cudaError_t end = cudaStreamEndCapture(cuda_stream(), &graph);
    t_capture.active = 0;
    if (end != cudaSuccess) (void)cudaGetLastError();  /* e.g. ...Invalidated: not sticky */
    settle_deferred();
    if (end != cudaSuccess || !graph) {
        log_warn("cuda_graph: the capture failed: cudaStreamEndCapture: %s (%s)%s%s; the step "
                 "runs eagerly", cudaGetErrorString(end), cudaGetErrorName(end),
                 t_capture.spoiled[0] ? "; first problem seen: " : "", t_capture.spoiled);
        if (graph) CUDA_CHECK(cudaGraphDestroy(graph));
        return NULL;
    }
    if (t_capture.spoiled[0]) {
        log_warn("cuda_graph: the recorded step cannot be replayed: %s; the step runs eagerly",
                 t_capture.spoiled);
        CUDA_CHECK(cudaGraphDestroy(graph));
        return NULL;
    }
    size_t nodes = 0;
    CUDA_CHECK(cudaGraphGetNodes(graph, NULL, &nodes));
    cudaGraphExec_t exec = NULL;
    const cudaError_t inst = cudaGraphInstantiateWithFlags(&exec, graph, 0);
    CUDA_CHECK(cudaGraphDestroy(graph));  /* the executable graph holds what it needs */
    if (inst != cudaSuccess) {
        (void)cudaGetLastError();
        log_warn("cuda_graph: cudaGraphInstantiateWithFlags failed: %s (%s) for a graph of %zu "
                 "nodes; the step runs eagerly", cudaGetErrorString(inst), cudaGetErrorName(inst),
                 nodes);
        return NULL;
    }
    BackendGraph *g = (BackendGraph *)xmalloc(sizeof *g);
    g->exec = exec;
    g->memory_epoch = t_capture.memory_epoch;
    g->nodes = nodes;
    log_info("cuda_graph: step recorded as one CUDA graph of %zu nodes", nodes);
    return g;
}

int cuda_graph_launch(BackendGraph *graph)
{
    ALICE_ASSERT(graph, "graph_launch of a NULL graph");
    ALICE_ASSERT(!t_capture.active, "graph_launch while recording a capture");
    if (graph->memory_epoch != g_memory_epoch.load()) return 0;
    /* bf16 weight copies marked stale since (a write outside the optimiser's fused update):
     * refresh them here, eagerly and in stream order, since the graph recorded GEMMs that
     * read the copies but not the refresh (every copy was current when it was recorded). */
    cuda_weight_copies_refresh();
    CUDA_CHECK(cudaGraphLaunch(graph->exec, cuda_stream()));
    return 1;
}

void cuda_graph_free(BackendGraph *graph)
{
    if (!graph) return;
    CUDA_WAIT_STREAM(cuda_stream());  /* a launch of it may still be running */
    CUDA_CHECK(cudaGraphExecDestroy(graph->exec));
    free(graph);
}
