/* The GPU device as seen from C code that must also build without CUDA: device discovery
 * (tests skip when it is 0) and the math mode of the CUDA backend. Without CUDA compiled in,
 * gpu_stub.c answers: no device, and setting a math mode is a no-op. */
#ifndef ALICE_GPU_DEVICE_H
#define ALICE_GPU_DEVICE_H

/* Number of visible CUDA devices; 0 when built without CUDA, without a driver or without a
 * device. Never errors out (tests use it to decide whether to skip). */
int gpu_device_count(void);

/* Math mode of the CUDA backend's GEMMs and convolutions (fp32 parity by default).
 * allow_tf32: fp32 GEMMs/convolutions may use TF32 tensor cores (10-bit mantissa inputs).
 * bf16_gemm: linear layers and attention GEMMs round their inputs to bf16 and accumulate in
 * fp32 (mixed precision: parameters, gradients and optimiser state stay fp32). */
void gpu_set_math(int allow_tf32, int bf16_gemm);

/* bf16_gemm only: keep a bf16 copy of the weight buffers (backend weights_hint), made once per
 * weight change, instead of rounding the weights again in every GEMM (on by default; off only
 * to measure it: config key bf16_weight_copy). Results are the same either way. */
void gpu_set_weight_copies(int enabled);
/* Bytes of the bf16 weight copies made so far (0 without CUDA): copies exist only once a bf16
 * GEMM has read a weight buffer. */
unsigned long long gpu_weight_copy_bytes(void);

/* Attention kernel of the CUDA backend (config key attention_kernel). GEMM: batched GEMMs
 * with the probabilities [B, H, Tq, Tk] materialised and saved for backward. FUSED: the own
 * tiled flash-attention kernels that save only the row logsumexp [B, H, Tq] (heads up to 128
 * wide; wider ones keep the GEMM path). CUDNN: cuDNN's fused attention (graph API through the
 * cudnn-frontend headers, cuda/cuda_attention_cudnn.cu) for the bf16 attention ops at head
 * widths that are multiples of 8 up to 128 with 16-byte aligned rows; every other call runs as
 * FUSED (the same saved row logsumexp). AUTO, the default: where the flash kernels run on their
 * register-resident tensor-core tiles (bf16 GEMMs, i.e. precision = bf16, and head widths 32 or
 * 64) the bf16 ops go to cuDNN when this build has it (else, or for a call cuDNN declines, the
 * flash kernels), GEMM elsewhere (fp32 tiles of the fused kernels are slower than the GEMM
 * path). Measured on an H200: cuDNN 2.03x the flash kernels at Dh 64, 1.31x at Dh 32. The rule
 * is src/ops/attention_choice.h. Set it, and the math mode, before activation arenas are
 * planned: the saved buffer's size (backend attention_saved_floats) depends on both. */
enum GpuAttentionKernel { ATTN_KERNEL_GEMM, ATTN_KERNEL_FUSED, ATTN_KERNEL_AUTO, ATTN_KERNEL_CUDNN };
void gpu_set_attention(int kernel);
/* 1 when this build can run ATTN_KERNEL_CUDNN (CUDA with the cuDNN frontend headers), 0
 * otherwise (then gpu_set_attention(ATTN_KERNEL_CUDNN) on a CUDA build is a fatal error, and
 * train_apply_device_math refuses attention_kernel = cudnn for device = cuda). */
int gpu_cudnn_attention_available(void);
/* Why this build cannot run ATTN_KERNEL_CUDNN (one sentence naming the fix; only meaningful when
 * gpu_cudnn_attention_available() is 0): built without CUDA, without the frontend headers, or
 * with headers that did not compile against this cuDNN. */
const char *gpu_cudnn_attention_unavailable_reason(void);
/* Graphs cuDNN's attention built so far (forward, forward-only and backward, one per shape and
 * layout, cached) and shapes it refused (those ran the flash kernels, with a warning); 0, 0
 * without the path. Tests and the benchmark check that the model's shapes really ran cuDNN. */
void gpu_cudnn_attention_graphs(int *built, int *refused);
#define GPU_CUDNN_ATTENTION_MISSING_MSG \
    "attention_kernel = cudnn needs the cuDNN frontend headers (scripts/deps.sh installs them)"

/* Instance norm kernel of the CUDA backend (config key instnorm_kernel; backend instnorm_fwd /
 * instnorm_bwd). OWN: the backend's kernels (cuda/cuda_norm.cu). CUDNN: cuDNN's training-mode
 * spatial batch norm over a [1, B*C, 1, V] view, i.e. one "channel" per (b, c) plane
 * (cuda/cuda_instnorm_cudnn.cu); it falls back to OWN where cuDNN cannot run the call (an
 * epsilon below CUDNN_BN_MIN_EPSILON, sizes beyond cuDNN's int dimensions, a backward without
 * dx). Same contract either way; results agree to float tolerance, not bit for bit. Without
 * CUDA the choice is recorded and nothing runs it. An unknown value is a fatal error. */
enum GpuInstnormKernel { INSTNORM_KERNEL_OWN, INSTNORM_KERNEL_CUDNN };
void gpu_set_instnorm(int kernel);
int gpu_instnorm_kernel(void);

/* Layout of the CUDA backend's convolution weight gradients (config key conv_wgrad_layout;
 * backend conv3d_bwd / conv_transpose3d_bwd dW). NCDHW: cuDNN's backward-filter on the tensors
 * as they are. NDHWC: on channels-last copies of the input and the output gradient made by own
 * transposes, into a channels-last filter transposed back onto dW (cuda/cuda_conv.cu); a shape
 * for which cuDNN offers no deterministic channels-last algorithm keeps NCDHW. Same contract
 * either way; results agree to float tolerance. Without CUDA the choice is recorded and nothing
 * runs it. An unknown value is a fatal error. */
enum GpuConvWgradLayout { CONV_WGRAD_NCDHW, CONV_WGRAD_NDHWC };
void gpu_set_conv_wgrad_layout(int layout);
int gpu_conv_wgrad_layout(void);
/* Weight gradients of 3x3x3, stride 1, padding 1 convolutions with at most 32 input and output
 * channels (config key conv_wgrad_kernel; backend conv3d_bwd dW). OWN (the default, 1.057x the
 * UNETR step in run 13): the backend's kernel on the NCDHW tensors (cuda/cuda_conv_wgrad3.cu),
 * fp32 FMAs whatever the TF32 setting, deterministic. CUDNN: cuDNN's backward-filter in the
 * layout conv_wgrad_layout names, like every other shape. Same contract either way; results
 * agree to float tolerance. Without CUDA the choice is recorded and nothing runs it. An unknown
 * value is a fatal error. */
enum GpuConvWgradKernel { CONV_WGRAD_KERNEL_OWN, CONV_WGRAD_KERNEL_CUDNN };
void gpu_set_conv_wgrad_kernel(int kernel);
int gpu_conv_wgrad_kernel(void);
/* Weight gradients the own 3x3x3 kernel computed so far (0 without CUDA). */
long gpu_conv_wgrad3_calls(void);
/* Pointwise (1x1x1, stride 1, no padding) convolutions of the CUDA backend with at most 32
 * input and output channels (config key pointwise_conv; backend conv3d_fwd / conv3d_bwd).
 * CUDNN: cuDNN's convolution API like every other shape. OWN: the backend's kernels on the
 * NCDHW tensors (cuda/cuda_conv_pointwise.cu): one pass per map, a deterministic weight
 * gradient. Same contract either way; results agree to float tolerance. Without CUDA the
 * choice is recorded and nothing runs it. An unknown value is a fatal error. */
enum GpuPointwiseConv { POINTWISE_CONV_CUDNN, POINTWISE_CONV_OWN };
void gpu_set_pointwise_conv(int kernel);
int gpu_pointwise_conv(void);

/* Convolution plans built under NDHWC so far: with the channels-last weight gradient, and those
 * that kept NCDHW because cuDNN offered no deterministic algorithm (0 and 0 without CUDA). */
void gpu_conv_wgrad_layout_stats(int *channels_last_plans, int *kept_ncdhw_plans);

/* Limit of every host wait of the CUDA backend while an NCCL communicator exists (config key
 * nccl_timeout_s; 0 = wait forever): a wait this long without the GPU finishing aborts the
 * communicator and ends the job with an error naming the key, instead of hanging on a dead peer
 * rank. NCCL's asynchronous errors end such a wait at once, whatever the limit. */
void gpu_set_collective_timeout(double seconds);

/* cuBLASLt algorithm autotune of the CUDA backend's GEMMs (config key gemm_autotune; off by
 * default). Off: every GEMM shape runs the heuristic's first algorithm (requestedAlgoCount 1).
 * On: a shape's plan asks the heuristic for up to 8 candidates and, at its first EAGER call,
 * times each on that call's own operands (1 warm-up + 3 timed launches, cudaEvents on the
 * backend stream) writing only scratch memory, and keeps the fastest; a plan first used while a
 * CUDA graph records keeps the heuristic's first and is never retuned (a recorded graph names
 * its algorithm). On and off keep separate plans, so one process may compare them. Set it
 * before the GEMMs it should govern; without CUDA it is a no-op and the statistics stay 0. */
void gpu_set_gemm_autotune(int enabled);
typedef struct GpuGemmAutotuneStats {
    int plans_tuned;        /* plans whose candidates were timed */
    int kept_first;         /* of those, plans whose fastest was the heuristic's first */
    int left_untuned;       /* plans first used while a graph recorded: the heuristic's first */
    int candidates_timed;   /* candidates timed over all plans (the first included) */
    int candidates_skipped; /* refused: error status, workspace, no out-of-place form */
    double chosen_ms;       /* sum over tuned plans of one launch of the chosen algorithm */
    double first_ms;        /* the same sum for the heuristic's first algorithms */
} GpuGemmAutotuneStats;
/* The statistics since the last report (all 0 without CUDA or with autotune never on). */
void gpu_gemm_autotune_stats(GpuGemmAutotuneStats *out);
/* At the end of a run: one log_info line of the statistics ("gemm autotune: ..."; tests/gpu/
 * run.sh reads it) when any plan was tuned or left untuned, then the statistics restart. */
void gpu_gemm_autotune_report(void);

/* cuDNN convolution algorithm autotune of the CUDA backend (config key conv_autotune; off by
 * default). Off: every convolution shape's plan runs the first DETERMINISTIC algorithm of
 * cuDNN's heuristic list per direction (forward, backward-data, backward-filter). On: a plan
 * built EAGERLY lets cudnnFind*AlgorithmEx time the algorithms of each direction on scratch
 * buffers of the plan's shapes (never the caller's tensors) and keeps the fastest deterministic
 * one that succeeded within the workspace limit, the heuristic's choice when Find offers none;
 * a plan built while a CUDA graph records keeps the heuristic's choices for good. On and off
 * keep separate plans. Without CUDA it is a no-op and the statistics stay 0. */
void gpu_set_conv_autotune(int enabled);
typedef struct GpuConvAutotuneStats {
    int plans_tuned;       /* plans whose three directions Find timed */
    int plans_changed;     /* of those, plans where some direction left the heuristic's choice */
    int searches_changed;  /* directions (3 per tuned plan) that left the heuristic's choice */
    int searches_kept;     /* directions that kept it (fastest, tie, or nothing usable) */
    int left_untuned;      /* plans built while a graph recorded, whose Find failed or whose
                            * trial buffers did not fit: the heuristic's choices */
    double chosen_ms;      /* sum over directions whose heuristic choice Find timed too */
    double heuristic_ms;   /* the same sum for the heuristic's choices */
} GpuConvAutotuneStats;
/* The statistics since the last report (all 0 without CUDA or with autotune never on). */
void gpu_conv_autotune_stats(GpuConvAutotuneStats *out);
/* At the end of a run: one log_info line ("conv autotune: ..."; tests/gpu/run.sh reads it) when
 * any plan was tuned or left untuned, then the statistics restart. */
void gpu_conv_autotune_report(void);

/* Peak device memory allocated through the backend so far (bytes); 0 without CUDA. */
unsigned long long gpu_peak_bytes(void);

#endif
