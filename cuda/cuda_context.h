/* The per-rank CUDA context: the device this rank owns, its one stream, library handles and
 * growable scratch buffers. Every op of the CUDA backend runs on this one stream, so ops are
 * ordered without events, and scratch buffers may be reused by consecutive ops. */
#ifndef ALICE_CUDA_CONTEXT_H
#define ALICE_CUDA_CONTEXT_H

#include "cuda/cuda_check.h"
#include "cuda/cuda_wait.h"  /* host waits: CUDA_WAIT_STREAM / CUDA_WAIT_EVENT, never the plain syncs */

/* Named scratch buffers (no magic indices). Each grows on demand and is only valid until the
 * op that asked for it returns control to the stream order (i.e. within one op). */
enum CudaScratchSlot {
    SCRATCH_REDUCE,          /* per-block partial sums of device-wide reductions (double) */
    SCRATCH_COLSUM,          /* per-chunk partial column sums (float) */
    SCRATCH_STATS,           /* per-row / per-plane statistics of backward passes */
    SCRATCH_ATTN_GRAD,       /* dP / dS of attention backward, one batch element */
    SCRATCH_CONV_WORKSPACE,  /* cuDNN workspace */
    SCRATCH_BF16_A,          /* bf16 copies of GEMM operands (mixed precision) */
    SCRATCH_BF16_B,
    SCRATCH_ATTN_BF16,       /* bf16 P or dS of bf16 attention (GEMM kernel), one batch element */
    SCRATCH_GEMM_F32,        /* fp32 result of a bf16-output GEMM whose bias is added unfused */
    SCRATCH_ATTN_PROBS,      /* probabilities of a forward-only GEMM-path attention (saved NULL) */
    SCRATCH_ATTN_GRAD_F32,   /* fp32 dq, dk, dv of a GEMM-path attention backward whose gradients
                              * are bf16 (attention_bwd_bf16_grad16), before their rounding */
    SCRATCH_COLSUM_ARRIVALS, /* arrival counters of the one-launch column sums: unlike the other
                              * slots its contents persist between ops (all zero between column
                              * sums; cuda_colsum_arrivals in cuda_reduce.cu keeps it so) */
    SCRATCH_CUDNN_ATTN_WORKSPACE, /* workspace of cuDNN's fused attention graphs */
    SCRATCH_CUDNN_ATTN_GRAD16,    /* cuDNN attention backward: bf16 dq, dk, dv before widening
                                   * to fp32, or the ones the caller does not want */
    SCRATCH_INSTNORM_STAGE,  /* the unfused intermediate of the fused instance norm + LeakyReLU
                              * ops where cuDNN's instance norm runs them (instnorm_kernel =
                              * cudnn): the normalised x, or the gated dy */
    SCRATCH_CONV_CL_IN,      /* channels-last weight gradients (conv_wgrad_layout = ndhwc): */
    SCRATCH_CONV_CL_OUT,     /* the input and output-gradient copies, and the filter gradient */
    SCRATCH_CONV_CL_FILTER,  /* before its transpose onto dW */
    SCRATCH_POINTWISE_PARTIALS, /* per-block weight-gradient partials of the own pointwise
                                 * convolutions (pointwise_conv = own) */
    SCRATCH_WGRAD3_PARTIALS, /* per-block partials of the own 3x3x3 weight gradient
                              * (conv_wgrad_kernel = own) */
    SCRATCH_SLOT_COUNT
};

struct CudaContext {
    int device;
    int ranks_on_device;   /* ranks of this node on `device`, this one included (device choice) */
    int initialised;
    cudaStream_t stream;
    cublasHandle_t blas;
    cublasLtHandle_t lt;
    cudnnHandle_t dnn;
    void *lt_workspace;          /* cuBLASLt workspace, fixed size */
    size_t lt_workspace_bytes;
    void *scratch[SCRATCH_SLOT_COUNT];
    size_t scratch_bytes[SCRATCH_SLOT_COUNT];
    double *host_result;         /* pinned: reductions come back through it */
    void *download_bounce;       /* pinned, kDownloadBounceBytes: small downloads use it */
    int allow_tf32;
    int bf16_gemm;
    unsigned long long live_bytes, peak_bytes;
};

/* Size of the context's pinned buffer for small downloads (cuda_download). */
constexpr size_t kDownloadBounceBytes = 64u << 10;

/* Picks the device (src/ops/gpu_device_choice.h: the next of the devices this rank sees among
 * the node's ranks that see the same ones; collective over the node when MPI is up), creates
 * stream and handles. Errors out with a clear message when no device is visible. Idempotent. */
void cuda_context_init(void);
/* The context; valid after cuda_context_init (backend_cuda() runs it). */
CudaContext *cuda_context(void);
static inline cudaStream_t cuda_stream(void) { return cuda_context()->stream; }
/* A scratch buffer of at least bytes (grows by reallocation after synchronising). */
void *cuda_scratch(CudaScratchSlot slot, size_t bytes);

#endif
