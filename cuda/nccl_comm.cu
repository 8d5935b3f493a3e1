/* Gradient all-reduce of the distribution layer (src/ops/dist_gpu.h) when device = cuda.
 *
 * One NCCL communicator per job: rank 0 makes the unique id, MPI_Bcast shares it. All-reduces
 * run on the CUDA backend's stream, so they follow the backward kernels that produced the
 * gradients without a host synchronisation. The overlapped form (grad_sync's buckets) runs on a
 * second, communication stream ordered after the compute stream by events, so a bucket's
 * reduction proceeds while backward computes earlier layers; nccl_allreduce_wait orders the
 * compute stream after all of them (the optimiser's kernels), again without the host waiting.
 *
 * NCCL refuses two ranks of one communicator on the same GPU ("duplicate GPU"). That happens
 * legitimately when a node runs more ranks than it has GPUs (tests: two ranks sharing one
 * card must equal one rank with the doubled batch). Then the same calls reduce through MPI
 * instead (device -> pinned host -> MPI_Allreduce -> device), with a warning, so results are
 * identical and only slower. */
#define OMPI_SKIP_MPICXX 1  /* C API only: Open MPI's C++ bindings are not warning-free */
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <nccl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_context.h"
#include "cuda/cuda_wait.h"
#include "cuda/nccl_watch.h"

#define NCCL_CHECK(call) do { ncclResult_t r_ = (call); if (r_ != ncclSuccess) \
    alice_fatal_at(__FILE__, __LINE__, "NCCL call failed: %s: %s", #call, \
                   ncclGetErrorString(r_)); } while (0)

enum ReduceTransport { TRANSPORT_NONE, TRANSPORT_NCCL, TRANSPORT_MPI_STAGED };

static ncclComm_t g_comm;
static ReduceTransport g_transport = TRANSPORT_NONE;
static int g_size = 1;
static int g_rank;
static float *g_host_buf;      /* pinned staging buffer of the MPI transport */
static size_t g_host_floats;
/* Overlapped all-reduce: created on first use (NCCL transport only). */
static cudaStream_t g_comm_stream;
static cudaEvent_t g_grads_ready;   /* compute stream -> communication stream */
static cudaEvent_t g_reduced;       /* communication stream -> compute stream */
static int g_comm_stream_ready;

int nccl_ready(void) { return g_transport != TRANSPORT_NONE; }

/* 1 on every rank when two ranks of some node hold the same device (NCCL refuses them): the
 * device choice counted the ranks of this node on this rank's device (by PCI bus id, among the
 * ranks of MPI's shared-memory split, not host names: containers may all be called
 * "localhost"); the answer is agreed over the job. */
static int some_gpu_is_shared(void)
{
    int shared = cuda_context()->ranks_on_device > 1;
    /* Every rank must pick the same transport. */
    CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, &shared, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    return shared;
}

/* ---- the communicator's set-up under nccl_timeout_s --------------------------------------
 * ncclCommInitRank blocks until every rank of the communicator has joined NCCL's bootstrap
 * over its own sockets. A rank that never gets there (it died after the id's broadcast, or the
 * nodes cannot reach each other on the interface NCCL picked: a wrong NCCL_SOCKET_IFNAME) held
 * the others in that call until Slurm's time limit, since no communicator exists yet for the
 * watched waits to query or abort. So the call runs on a helper thread (with this rank's
 * device current: the current device is per thread) while the main thread polls for its end
 * under the same limit as every other GPU wait. On timeout the job ends; the helper thread,
 * still inside NCCL, ends with the process. The helper never calls MPI (FUNNELED). */
struct CommSetup {
    ncclUniqueId id;
    int nranks, rank, device;
    ncclComm_t comm;
    cudaError_t device_result;
    ncclResult_t result;
    int done;   /* set last, atomically: the fields above are then final */
};

static void *comm_setup_thread(void *arg)
{
    CommSetup *c = (CommSetup *)arg;
    c->device_result = cudaSetDevice(c->device);
    if (c->device_result == cudaSuccess)
        c->result = ncclCommInitRank(&c->comm, c->nranks, c->id, c->rank);
    __atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static ncclComm_t open_communicator(int nranks, const ncclUniqueId *id, int rank)
{
    /* On the heap: after a timeout the helper thread still writes into it while the job ends. */
    CommSetup *c = (CommSetup *)xcalloc(1, sizeof *c);
    c->id = *id;
    c->nranks = nranks;
    c->rank = rank;
    c->device = cuda_context()->device;
    c->result = ncclInternalError;
    pthread_t helper;
    const int created = pthread_create(&helper, NULL, comm_setup_thread, c);
    if (created != 0)
        ALICE_FATAL("cannot start the thread that sets up the NCCL communicator: %s",
                    strerror(created));
    double waited_s = 0.0;
    if (!cuda_wait_host_flag(&c->done, &waited_s))
        ALICE_FATAL("rank %d: the NCCL communicator over %d ranks was not set up within %.0f s "
                    "(nccl_timeout_s = %g): NCCL's start-up could not reach every rank. Fix: "
                    "check the other ranks' logs (one may have failed before this point); on "
                    "several nodes check that they reach each other on the network interface "
                    "NCCL picks (NCCL_DEBUG=INFO shows it; NCCL_SOCKET_IFNAME names the right "
                    "one), then resubmit the job",
                    rank, nranks, waited_s, cuda_collective_timeout_s());
    const int joined = pthread_join(helper, NULL);
    if (joined != 0)
        ALICE_FATAL("joining the NCCL set-up thread failed: %s", strerror(joined));
    if (c->device_result != cudaSuccess)
        ALICE_FATAL("CUDA call failed: cudaSetDevice(%d) on the NCCL set-up thread: %s", c->device,
                    cudaGetErrorString(c->device_result));
    if (c->result != ncclSuccess)
        ALICE_FATAL("NCCL call failed: ncclCommInitRank(%d ranks, rank %d): %s", nranks, rank,
                    ncclGetErrorString(c->result));
    ncclComm_t comm = c->comm;
    free(c);
    return comm;
}

void nccl_init_alone_for_check(int nranks)
{
    if (nccl_ready()) ALICE_FATAL("nccl_init_alone_for_check: a communicator exists already");
    cuda_context_init();
    ncclUniqueId id;
    NCCL_CHECK(ncclGetUniqueId(&id));
    g_size = nranks;
    g_rank = 0;
    g_comm = open_communicator(nranks, &id, 0);
    g_transport = TRANSPORT_NCCL;
}

void nccl_init_from_mpi(void)
{
    if (nccl_ready()) return;
    int mpi_up = 0;
    CHECK_MPI(MPI_Initialized(&mpi_up));
    if (!mpi_up) ALICE_FATAL("nccl_init_from_mpi called before MPI_Init");
    cuda_context_init();  /* this rank's device must be current before the communicator */
    int rank = 0;
    CHECK_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    CHECK_MPI(MPI_Comm_size(MPI_COMM_WORLD, &g_size));
    g_rank = rank;
    if (some_gpu_is_shared()) {
        g_transport = TRANSPORT_MPI_STAGED;
        if (rank == 0)
            log_warn("ranks share a GPU (the warning above says on which node): NCCL cannot put "
                     "two ranks on one GPU, so gradients are averaged through MPI via host "
                     "memory (correct, slower); start one rank per GPU for speed");
        return;
    }
    ncclUniqueId id;
    if (rank == 0) NCCL_CHECK(ncclGetUniqueId(&id));
    CHECK_MPI(MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD));
    g_comm = open_communicator(g_size, &id, rank);
    g_transport = TRANSPORT_NCCL;
    log_info("nccl: communicator over %d ranks (NCCL %d.%d.%d)", g_size, NCCL_MAJOR, NCCL_MINOR,
             NCCL_PATCH);
}

static void require_ready(void)
{
    if (!nccl_ready()) ALICE_FATAL("GPU all-reduce before nccl_init_from_mpi");
}

/* MPI transport: sum over ranks through the pinned host buffer, times scale. */
static void staged_allreduce(float *buf, size_t n, float scale)
{
    if (n > g_host_floats) {
        if (g_host_buf) CUDA_CHECK(cudaFreeHost(g_host_buf));
        CUDA_CHECK(cudaMallocHost((void **)&g_host_buf, n * sizeof(float)));
        g_host_floats = n;
    }
    cudaStream_t s = cuda_stream();
    CUDA_CHECK(cudaMemcpyAsync(g_host_buf, buf, n * sizeof(float), cudaMemcpyDeviceToHost, s));
    CUDA_WAIT_STREAM(s);
    const size_t kMaxCount = (size_t)1 << 30;  /* MPI counts are int */
    for (size_t off = 0; off < n; off += kMaxCount) {
        const int count = (int)(n - off < kMaxCount ? n - off : kMaxCount);
        CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, g_host_buf + off, count, MPI_FLOAT, MPI_SUM,
                                MPI_COMM_WORLD));
    }
    if (scale != 1.0f)
        for (size_t i = 0; i < n; i++) g_host_buf[i] *= scale;
    CUDA_CHECK(cudaMemcpyAsync(buf, g_host_buf, n * sizeof(float), cudaMemcpyHostToDevice, s));
    CUDA_WAIT_STREAM(s);  /* the host buffer is reused by the next call */
}

void nccl_allreduce_sum(float *buf, size_t n)
{
    require_ready();
    if (n == 0) return;
    if (g_transport == TRANSPORT_MPI_STAGED) {
        staged_allreduce(buf, n, 1.0f);
        return;
    }
    NCCL_CHECK(ncclAllReduce(buf, buf, n, ncclFloat32, ncclSum, g_comm, cuda_stream()));
}

void nccl_allreduce_mean(float *buf, size_t n)
{
    require_ready();
    if (n == 0) return;
    if (g_transport == TRANSPORT_MPI_STAGED) {
        staged_allreduce(buf, n, 1.0f / (float)g_size);
        return;
    }
    /* ncclAvg (NCCL >= 2.10) divides inside the reduction: one pass, no extra scale kernel. */
    NCCL_CHECK(ncclAllReduce(buf, buf, n, ncclFloat32, ncclAvg, g_comm, cuda_stream()));
}

static void comm_stream_init(void)
{
    if (g_comm_stream_ready) return;
    /* The highest priority: a bucket's reduction should not queue behind the backward kernels
     * it is meant to overlap (lower numbers are higher priorities). */
    int lowest = 0, highest = 0;
    CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&lowest, &highest));
    CUDA_CHECK(cudaStreamCreateWithPriority(&g_comm_stream, cudaStreamNonBlocking, highest));
    CUDA_CHECK(cudaEventCreateWithFlags(&g_grads_ready, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&g_reduced, cudaEventDisableTiming));
    g_comm_stream_ready = 1;
}

void nccl_allreduce_mean_async(float *buf, size_t n)
{
    require_ready();
    if (n == 0) return;
    if (g_transport == TRANSPORT_MPI_STAGED) {
        staged_allreduce(buf, n, 1.0f / (float)g_size);  /* on the compute stream, synchronous */
        return;
    }
    comm_stream_init();
    /* cudaStreamWaitEvent captures the event as recorded now, so one event serves every
     * launch: each waits for exactly the kernels enqueued before it. */
    CUDA_CHECK(cudaEventRecord(g_grads_ready, cuda_stream()));
    CUDA_CHECK(cudaStreamWaitEvent(g_comm_stream, g_grads_ready, 0));
    NCCL_CHECK(ncclAllReduce(buf, buf, n, ncclFloat32, ncclAvg, g_comm, g_comm_stream));
}

int nccl_allreduce_overlaps(void) { return g_transport == TRANSPORT_NCCL; }

void nccl_allreduce_wait(void)
{
    require_ready();
    if (!g_comm_stream_ready) return;   /* nothing was launched on it */
    CUDA_CHECK(cudaEventRecord(g_reduced, g_comm_stream));
    CUDA_CHECK(cudaStreamWaitEvent(cuda_stream(), g_reduced, 0));
}

/* ---- the communicator as the host waits watch it (cuda/nccl_watch.h) ---------------------- */

int nccl_watch_active(void) { return g_transport == TRANSPORT_NCCL; }

int nccl_watch_rank(void) { return g_rank; }

cudaStream_t nccl_watch_comm_stream(void) { return g_comm_stream_ready ? g_comm_stream : NULL; }

/* Orders the query of the communicator against its abort: a host thread that passed the
 * "communicator exists" check must not query it while another thread aborts (frees) it. */
static pthread_mutex_t g_watch_lock = PTHREAD_MUTEX_INITIALIZER;

int nccl_watch_async_error(char *detail, size_t detail_bytes)
{
    pthread_mutex_lock(&g_watch_lock);
    if (g_transport != TRANSPORT_NCCL) {
        pthread_mutex_unlock(&g_watch_lock);
        return 0;
    }
    ncclResult_t async = ncclSuccess;
    /* A failing query is reported like the error it failed to read: the wait aborts. */
    const ncclResult_t queried = ncclCommGetAsyncError(g_comm, &async);
    if (queried != ncclSuccess) async = queried;
    /* ncclInProgress belongs to non-blocking communicators still initialising: not a failure. */
    if (async == ncclSuccess || async == ncclInProgress) {
        pthread_mutex_unlock(&g_watch_lock);
        return 0;
    }
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 13, 0)
    const char *last = ncclGetLastError(g_comm);
#else
    const char *last = "";
#endif
    snprintf(detail, detail_bytes, "%s%s%s", ncclGetErrorString(async),
             last && *last ? ": " : "", last ? last : "");
    pthread_mutex_unlock(&g_watch_lock);
    return (int)async;
}

void nccl_watch_abort(void)
{
    if (g_transport != TRANSPORT_NCCL) return;
    /* One abort even if two host threads gave up at once (the loader may wait on events). */
    static int abort_claimed;
    if (__atomic_exchange_n(&abort_claimed, 1, __ATOMIC_ACQ_REL)) return;
    /* Forget the communicator first: whatever happens next (the fatal error's exit), nothing
     * may use or destroy it again; the lock waits out a query in flight. Its own result is not
     * checked: a failure here must not hide the error being reported. */
    pthread_mutex_lock(&g_watch_lock);
    g_transport = TRANSPORT_NONE;
    pthread_mutex_unlock(&g_watch_lock);
    (void)ncclCommAbort(g_comm);
}

void nccl_shutdown(void)
{
    if (!nccl_ready()) return;
    /* Pending collectives finish first; watched waits, as a dead peer hangs these too. */
    CUDA_WAIT_STREAM(cuda_stream());
    if (g_comm_stream_ready) CUDA_WAIT_STREAM(g_comm_stream);
    /* The communicator goes before the stream its collectives ran on, so nothing NCCL may still
     * refer to while it flushes and frees is already gone. */
    if (g_transport == TRANSPORT_NCCL) NCCL_CHECK(ncclCommDestroy(g_comm));
    if (g_comm_stream_ready) {
        CUDA_CHECK(cudaEventDestroy(g_grads_ready));
        CUDA_CHECK(cudaEventDestroy(g_reduced));
        CUDA_CHECK(cudaStreamDestroy(g_comm_stream));
        g_comm_stream_ready = 0;
    }
    if (g_host_buf) CUDA_CHECK(cudaFreeHost(g_host_buf));
    g_host_buf = NULL;
    g_host_floats = 0;
    g_transport = TRANSPORT_NONE;
}
