/* Device selection, stream, library handles and scratch buffers of the CUDA backend. */
#include "cuda/cuda_context.h"
#include "cuda/cuda_graph.h"

/* The C API only: Open MPI's deprecated C++ bindings do not compile warning-free. */
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "ops/gpu_device_choice.h"
}

static CudaContext g_ctx;

/* cuBLASLt workspace: NVIDIA recommends 32 MiB on Hopper for the best kernels. */
static const size_t kLtWorkspaceBytes = 32u << 20;

CudaContext *cuda_context(void) { return &g_ctx; }

int gpu_device_count(void)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();  /* clear the sticky-free error so later calls are clean */
        return 0;
    }
    return count;
}

/* This rank's visible devices as one key: their PCI bus ids, comma-separated, zero-padded. */
enum { kVisibleSetKeyBytes = 1024 };

static void visible_set_key(char *key, int count)
{
    memset(key, 0, kVisibleSetKeyBytes);
    size_t used = 0;
    for (int d = 0; d < count; d++) {
        char bus[32] = {0};
        CUDA_CHECK(cudaDeviceGetPCIBusId(bus, (int)sizeof bus, d));
        int w = snprintf(key + used, kVisibleSetKeyBytes - used, "%s%s", d ? "," : "", bus);
        if (w < 0 || (size_t)w >= kVisibleSetKeyBytes - used) {
            /* whole ids only: the devices that fit are the candidates (gpu_device_choice) */
            memset(key + used, 0, kVisibleSetKeyBytes - used);
            break;
        }
        used += (size_t)w;
    }
}

/* The `bytes`-byte record `key` of every rank of this node (MPI's shared-memory split), in
 * node-rank order (malloc'd, node_size records). Collective over the node; MPI must be up. */
static char *cuda_node_allgather(const void *key, int bytes, int *node_rank, int *node_size)
{
    MPI_Comm node;
    CHECK_MPI(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
    CHECK_MPI(MPI_Comm_rank(node, node_rank));
    CHECK_MPI(MPI_Comm_size(node, node_size));
    char *all = (char *)xmalloc((size_t)*node_size * (size_t)bytes);
    CHECK_MPI(MPI_Allgather(key, bytes, MPI_CHAR, all, bytes, MPI_CHAR, node));
    CHECK_MPI(MPI_Comm_free(&node));
    return all;
}

/* The device of this rank among its `count` visible ones (src/ops/gpu_device_choice.h says
 * why not the local rank, and how ranks spread): the ranks of this node (MPI's shared-memory
 * split) exchange their visible sets; MPI is up in every command that opens the backend, and
 * every rank opens it at the same point, so the exchange is collective. A process without MPI
 * takes the first. */
static GpuDeviceChoice choose_device(int count)
{
    GpuDeviceChoice one = {0, 1, 1};
    int mpi_up = 0, mpi_down = 0;
    CHECK_MPI(MPI_Initialized(&mpi_up));
    CHECK_MPI(MPI_Finalized(&mpi_down));
    if (!mpi_up || mpi_down) return one;
    /* A collective, and MPI is initialised MPI_THREAD_FUNNELED: only the main thread may run it
     * (the loader's threads reach cuda_context_init only after the main thread opened the
     * backend, when it returns at once). */
    int main_thread = 0;
    CHECK_MPI(MPI_Is_thread_main(&main_thread));
    ALICE_ASSERT(main_thread, "the CUDA backend was first opened on a thread other than MPI's "
                 "main thread: its device choice is an MPI collective (open the backend on the "
                 "main thread, before starting threads)");
    char key[kVisibleSetKeyBytes];
    visible_set_key(key, count);
    int rank = 0, size = 1;
    char *keys = cuda_node_allgather(key, kVisibleSetKeyBytes, &rank, &size);
    GpuDeviceChoice c = gpu_device_choice(keys, kVisibleSetKeyBytes, size, rank, count);
    free(keys);
    return c;
}


void cuda_context_init(void)
{
    if (g_ctx.initialised) return;
    int count = gpu_device_count();
    if (count <= 0)
        alice_die("device = cuda, but no CUDA device is visible to this process (no GPU, no "
                  "driver, or CUDA_VISIBLE_DEVICES hides them); run on a GPU node or set "
                  "device = cpu");
    const GpuDeviceChoice choice = choose_device(count);
    g_ctx.device = choice.index;
    g_ctx.ranks_on_device = choice.sharing;
    const char *visible = getenv("CUDA_VISIBLE_DEVICES");
    if (choice.sharing > 1 && choice.first_on_device)
        log_warn("%d ranks on this node use the same GPU (this rank sees %d, "
                 "CUDA_VISIBLE_DEVICES=%s): more ranks than GPUs they can reach, so ranks share "
                 "GPUs: each holds its own model and data on a shared device (slower, more "
                 "memory). For one rank per GPU start as many ranks per node as GPUs, or let "
                 "Slurm bind them (--gpus-per-task=1)", choice.sharing, count,
                 visible ? visible : "unset");
    CUDA_CHECK(cudaSetDevice(g_ctx.device));
    CUDA_CHECK(cudaStreamCreateWithFlags(&g_ctx.stream, cudaStreamNonBlocking));
    CUBLAS_CHECK(cublasCreate(&g_ctx.blas));
    CUBLAS_CHECK(cublasSetStream(g_ctx.blas, g_ctx.stream));
    /* fp32 parity by default: no TF32 unless gpu_set_math allows it (it may run first). */
    CUBLAS_CHECK(cublasSetMathMode(g_ctx.blas, g_ctx.allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                                : CUBLAS_DEFAULT_MATH));
    CUBLAS_CHECK(cublasLtCreate(&g_ctx.lt));
    CUDNN_CHECK(cudnnCreate(&g_ctx.dnn));
    CUDNN_CHECK(cudnnSetStream(g_ctx.dnn, g_ctx.stream));
    g_ctx.lt_workspace_bytes = kLtWorkspaceBytes;
    CUDA_CHECK(cudaMalloc(&g_ctx.lt_workspace, g_ctx.lt_workspace_bytes));
    CUBLAS_CHECK(cublasSetWorkspace(g_ctx.blas, g_ctx.lt_workspace, g_ctx.lt_workspace_bytes));
    CUDA_CHECK(cudaMallocHost((void **)&g_ctx.host_result, 64 * sizeof(double)));
    CUDA_CHECK(cudaMallocHost(&g_ctx.download_bounce, kDownloadBounceBytes));
    g_ctx.initialised = 1;
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, g_ctx.device));
    /* The libraries that run, not the headers built against: cudnn-frontend, for one, takes
     * version-dependent workarounds (docs/PERFORMANCE.md, the host-to-device copies). */
    int runtime = 0, blas = 0;
    CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
    CUBLAS_CHECK(cublasLtGetProperty(MAJOR_VERSION, &blas));
    int blas_minor = 0;
    CUBLAS_CHECK(cublasLtGetProperty(MINOR_VERSION, &blas_minor));
    const size_t dnn = cudnnGetVersion();
    char bus[32] = {0};
    CUDA_CHECK(cudaDeviceGetPCIBusId(bus, (int)sizeof bus, g_ctx.device));
    log_info("cuda: device %d of %d (bus %s, CUDA_VISIBLE_DEVICES=%s; %d rank(s) of this node "
             "on it): %s (sm_%d%d, %.1f GiB); CUDA runtime %d.%d, cuBLASLt %d.%d, "
             "cuDNN %zu.%zu.%zu", g_ctx.device, count, bus, visible ? visible : "unset",
             choice.sharing, prop.name, prop.major, prop.minor,
             (double)prop.totalGlobalMem / (1u << 30), runtime / 1000, runtime % 1000 / 10, blas,
             blas_minor, dnn / 10000, dnn % 10000 / 100, dnn % 100);
}

void gpu_set_math(int allow_tf32, int bf16_gemm)
{
    g_ctx.allow_tf32 = allow_tf32 != 0;
    g_ctx.bf16_gemm = bf16_gemm != 0;
    if (g_ctx.initialised)
        CUBLAS_CHECK(cublasSetMathMode(g_ctx.blas, g_ctx.allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                                    : CUBLAS_DEFAULT_MATH));
}

unsigned long long gpu_peak_bytes(void) { return g_ctx.peak_bytes; }

void *cuda_scratch(CudaScratchSlot slot, size_t bytes)
{
    if (bytes <= g_ctx.scratch_bytes[slot]) return g_ctx.scratch[slot];
    /* Grow by half again so a slowly growing request does not reallocate every call. */
    size_t want = bytes + bytes / 2;
    if (cuda_graph_capturing()) {
        /* Recording a graph (cuda/cuda_graph.h): the eager warm-up step should have grown
         * every slot the step uses. The recording is now unusable; keep it valid without a
         * wait or a free (illegal under capture): the old buffer is freed after the capture,
         * the new one zeroed then (the arrival counters' slot must start at zero). */
        cuda_graph_spoil("scratch slot %d had to grow from %zu to %zu bytes while recording "
                         "(more than the eager warm-up step needed)", (int)slot,
                         g_ctx.scratch_bytes[slot], bytes);
        cuda_graph_free_after_capture(g_ctx.scratch[slot]);
        g_ctx.scratch[slot] = cuda_graph_malloc_relaxed(want);
        cuda_graph_zero_after_capture((int)slot);
    } else {
        if (g_ctx.scratch[slot]) {
            CUDA_WAIT_STREAM(g_ctx.stream);  /* pending kernels may read it */
            CUDA_WAIT_BEFORE_DEVICE_SYNC();  /* cudaFree also waits for the communication stream */
            CUDA_CHECK(cudaFree(g_ctx.scratch[slot]));
        }
        CUDA_CHECK(cudaMalloc(&g_ctx.scratch[slot], want));
    }
    g_ctx.scratch_bytes[slot] = want;
    cuda_graph_memory_moved();  /* graphs recorded before name the old buffer */
    return g_ctx.scratch[slot];
}
