/* Answers of gpu_device.h and dist_gpu.h in a build without CUDA (USE_CUDA=0): no device, and
 * NCCL calls are a clear error naming the fix. With CUDA, cuda/ provides the real ones. */
#include "ops/dist_gpu.h"
#include "ops/gpu_device.h"

#ifndef ALICE_CUDA
#include <string.h>

#include "core/check.h"

int gpu_device_count(void) { return 0; }
void gpu_set_math(int allow_tf32, int bf16_gemm) { (void)allow_tf32; (void)bf16_gemm; }

void gpu_set_weight_copies(int enabled) { (void)enabled; }

unsigned long long gpu_weight_copy_bytes(void) { return 0; }
unsigned long long gpu_peak_bytes(void) { return 0; }
void gpu_set_attention(int kernel) { (void)kernel; }
int gpu_cudnn_attention_available(void) { return 0; }
const char *gpu_cudnn_attention_unavailable_reason(void)
{
    return "attention_kernel = cudnn runs on CUDA only, and this alice was built without CUDA "
           "(USE_CUDA=0): rebuild with nvcc and the cuDNN frontend headers (scripts/deps.sh)";
}
void gpu_cudnn_attention_graphs(int *built, int *refused) { *built = 0; *refused = 0; }

void gpu_set_collective_timeout(double seconds) { (void)seconds; }

/* No CUDA, no GEMM plans: nothing is tuned, so the statistics stay zero and nothing is logged. */
void gpu_set_gemm_autotune(int enabled) { (void)enabled; }
void gpu_gemm_autotune_stats(GpuGemmAutotuneStats *out) { memset(out, 0, sizeof *out); }
void gpu_gemm_autotune_report(void) {}
/* No CUDA, no convolution plans: the same for conv_autotune. */
void gpu_set_conv_autotune(int enabled) { (void)enabled; }
void gpu_conv_autotune_stats(GpuConvAutotuneStats *out) { memset(out, 0, sizeof *out); }
void gpu_conv_autotune_report(void) {}
void gpu_conv_wgrad_layout_stats(int *channels_last_plans, int *kept_ncdhw_plans)
{
    *channels_last_plans = 0;
    *kept_ncdhw_plans = 0;
}
long gpu_conv_wgrad3_calls(void) { return 0; }

static _Noreturn void nccl_not_built(void)
{
    alice_die("NCCL all-reduce requested, but this alice was built without CUDA; rebuild with "
              "USE_CUDA=1 (nvcc, NCCL) or use device = cpu");
}
void nccl_init_from_mpi(void) { nccl_not_built(); }
void nccl_init_alone_for_check(int nranks) { (void)nranks; nccl_not_built(); }
void nccl_allreduce_mean(float *buf, size_t n) { (void)buf; (void)n; nccl_not_built(); }
void nccl_allreduce_sum(float *buf, size_t n) { (void)buf; (void)n; nccl_not_built(); }
void nccl_allreduce_mean_async(float *buf, size_t n) { (void)buf; (void)n; nccl_not_built(); }
void nccl_allreduce_wait(void) { nccl_not_built(); }
int nccl_allreduce_overlaps(void) { return 0; }
int nccl_ready(void) { return 0; }
void nccl_shutdown(void) {}
#endif
