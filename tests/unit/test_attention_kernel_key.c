/* attention_kernel = cudnn (cuDNN's fused attention, cuda/cuda_attention_cudnn.cu) on the
 * configuration side, without a GPU: the key admits it; with device = cpu it is as harmless
 * as fused (the CPU backend has one attention, and train_apply_device_math neither stops nor
 * changes the CPU results: the same bf16 attention output before and after); and the build
 * says whether it can run it (gpu_cudnn_attention_available: 0 without CUDA). The refusal of
 * a CUDA build without the frontend headers is tests/integration/test_cudnn_attention_build.sh. */
#include <math.h>
#include <string.h>

#include "ops/backend.h"
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

int main(void)
{
    TEST_RUN(test_key_parses);
    TEST_RUN(test_cpu_harmless);
    TEST_RUN(test_availability);
    return test_finish();
}
