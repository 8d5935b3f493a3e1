/* attention_kernel = cudnn (cuDNN's fused attention, cuda/cuda_attention_cudnn.cu) on the
 * configuration side, without a GPU: the key admits it; with device = cpu it is as harmless
 * as fused (the CPU backend has one attention, and train_apply_device_math neither stops nor
 * changes the CPU results: the same bf16 attention output before and after); and the build
 * says whether it can run it (gpu_cudnn_attention_available: 0 without CUDA). The refusal of
 * a CUDA build without the frontend headers is tests/integration/test_cudnn_attention_build.sh.
 *
 * And the choice itself (src/ops/attention_choice.h, the rule the CUDA backend runs), against a
 * hand-written table: the default auto takes cuDNN at bf16 head widths 32 and 64 when the build
 * has it, the flash kernels there otherwise, the GEMM path elsewhere; fused is the flash kernels
 * only; cudnn is cuDNN at every multiple of 8 up to 128; the saved statistics (row logsumexps
 * or probabilities) do not depend on whether cuDNN or the flash kernels run a call. The GPU
 * side (cuDNN graphs really built under auto) is tests/unit/test_step_parity_gpu.c. */
#include <math.h>
#include <string.h>

#include "ops/backend.h"
#include "ops/attention_choice.h"
#include "ops/bf16.h"
#include "ops/gpu_device.h"
#include "test.h"
#include "test_config.h"
#include "train/train_common.h"

static const char *const cpu_cudnn[][2] = {{"device", "cpu"}, {"attention_kernel", "cudnn"},
                                           {"precision", "bf16"}};

static int test_key_parses(void)
{
    Config cfg;
    TEST_CONFIG(&cfg, cpu_cudnn);
    TEST_CHECK(!strcmp(cfg.attention_kernel, "cudnn"), "attention_kernel read back as '%s'",
               cfg.attention_kernel);
    return 0;
}

/* The CPU backend's bf16 attention on fixed inputs, B=1 H=2 T=5 Dh=8 packed qkv. */
static void cpu_attention(const AliceBackend *cpu, bf16_t *out)
{
    enum { B = 1, H = 2, T = 5, Dh = 8, C = H * Dh };
    bf16_t qkv[B * T * 3 * C];
    for (int i = 0; i < B * T * 3 * C; i++) qkv[i] = bf16_from_float(sinf(0.37f * (float)i));
    float saved[B * H * T * T];
    cpu->attention_fwd_bf16(out, saved, qkv, qkv + C, qkv + 2 * C, B, H, T, T, Dh, 3 * C, 3 * C);
}

static int test_cpu_harmless(void)
{
    const AliceBackend *cpu = backend_cpu();
    bf16_t before[5 * 16], after[5 * 16];
    cpu_attention(cpu, before);
    Config cfg;
    TEST_CONFIG(&cfg, cpu_cudnn);
    train_apply_device_math(&cfg);   /* must not stop: device = cpu */
    cpu_attention(cpu, after);
    TEST_CHECK(!memcmp(before, after, sizeof before), "the CPU attention changed with "
               "attention_kernel = cudnn");
    return 0;
}

static int test_availability(void)
{
#ifndef ALICE_CUDA
    TEST_CHECK(gpu_cudnn_attention_available() == 0, "a build without CUDA claims cuDNN attention");
#endif
    int built = -1, refused = -1;
    gpu_cudnn_attention_graphs(&built, &refused);
    TEST_CHECK(built == 0 && refused == 0, "graphs before any attention ran: %d built, %d refused",
               built, refused);
    TEST_CHECK(strstr(GPU_CUDNN_ATTENTION_MISSING_MSG, "scripts/deps.sh") != NULL,
               "the missing-headers message names the fix");
    return 0;
}

/* The path a call takes, as the CUDA backend picks it. */
typedef enum { PATH_GEMM, PATH_FLASH, PATH_CUDNN } Path;
static const char *const path_names[] = {"gemm", "flash", "cudnn"};

static Path path_of(int kernel, int bf16, int Dh, int cudnn_built)
{
    if (attention_uses_cudnn(kernel, bf16, Dh, cudnn_built)) return PATH_CUDNN;
    return attention_saves_row_stats(kernel, bf16, Dh) ? PATH_FLASH : PATH_GEMM;
}

static int test_choice_table(void)
{
    static const struct {
        int kernel, bf16, Dh, cudnn_built;
        Path want;
    } rows[] = {
        /* auto, the default: cuDNN where the fast flash tiles would run, if built */
        {ATTN_KERNEL_AUTO, 1, 64, 1, PATH_CUDNN}, {ATTN_KERNEL_AUTO, 1, 32, 1, PATH_CUDNN},
        {ATTN_KERNEL_AUTO, 1, 64, 0, PATH_FLASH}, {ATTN_KERNEL_AUTO, 1, 32, 0, PATH_FLASH},
        {ATTN_KERNEL_AUTO, 1, 16, 1, PATH_GEMM},  {ATTN_KERNEL_AUTO, 1, 128, 1, PATH_GEMM},
        {ATTN_KERNEL_AUTO, 1, 768, 1, PATH_GEMM}, {ATTN_KERNEL_AUTO, 0, 64, 1, PATH_GEMM},
        {ATTN_KERNEL_AUTO, 0, 32, 0, PATH_GEMM},
        /* fused: the flash kernels only, never cuDNN */
        {ATTN_KERNEL_FUSED, 1, 64, 1, PATH_FLASH}, {ATTN_KERNEL_FUSED, 1, 32, 1, PATH_FLASH},
        {ATTN_KERNEL_FUSED, 0, 64, 1, PATH_FLASH}, {ATTN_KERNEL_FUSED, 1, 24, 1, PATH_FLASH},
        {ATTN_KERNEL_FUSED, 1, 128, 1, PATH_FLASH}, {ATTN_KERNEL_FUSED, 1, 129, 1, PATH_GEMM},
        {ATTN_KERNEL_FUSED, 1, 768, 1, PATH_GEMM},
        /* cudnn: every multiple of 8 up to 128, the flash kernels at the other widths */
        {ATTN_KERNEL_CUDNN, 1, 64, 1, PATH_CUDNN}, {ATTN_KERNEL_CUDNN, 1, 8, 1, PATH_CUDNN},
        {ATTN_KERNEL_CUDNN, 1, 24, 1, PATH_CUDNN}, {ATTN_KERNEL_CUDNN, 1, 128, 1, PATH_CUDNN},
        {ATTN_KERNEL_CUDNN, 1, 20, 1, PATH_FLASH}, {ATTN_KERNEL_CUDNN, 1, 4, 1, PATH_FLASH},
        {ATTN_KERNEL_CUDNN, 1, 136, 1, PATH_GEMM}, {ATTN_KERNEL_CUDNN, 1, 768, 1, PATH_GEMM},
        /* gemm: always */
        {ATTN_KERNEL_GEMM, 1, 64, 1, PATH_GEMM}, {ATTN_KERNEL_GEMM, 0, 32, 1, PATH_GEMM},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const Path got = path_of(rows[i].kernel, rows[i].bf16, rows[i].Dh, rows[i].cudnn_built);
        TEST_CHECK(got == rows[i].want, "kernel %d, bf16 %d, Dh %d, cudnn built %d: %s, "
                   "expected %s",
                   rows[i].kernel, rows[i].bf16, rows[i].Dh, rows[i].cudnn_built, path_names[got],
                   path_names[rows[i].want]);
        /* a cuDNN call saves what the flash kernels save (they take over a call cuDNN declines,
         * on the same buffer), so the arena's size cannot depend on which ran */
        if (got == PATH_CUDNN)
            TEST_CHECK(attention_saves_row_stats(rows[i].kernel, rows[i].bf16, rows[i].Dh),
                       "kernel %d Dh %d: cuDNN chosen but the saved buffer is sized for "
                       "probabilities", rows[i].kernel, rows[i].Dh);
        /* whether this build has cuDNN's attention never changes the saved size */
        TEST_CHECK(attention_saves_row_stats(rows[i].kernel, rows[i].bf16, rows[i].Dh) ==
                       (path_of(rows[i].kernel, rows[i].bf16, rows[i].Dh, 0) == PATH_FLASH),
                   "kernel %d Dh %d: the saved statistics depend on the build", rows[i].kernel,
                   rows[i].Dh);
    }
    return 0;
}

int main(void)
{
    TEST_RUN(test_key_parses);
    TEST_RUN(test_cpu_harmless);
    TEST_RUN(test_availability);
    TEST_RUN(test_choice_table);
    return test_finish();
}
