/* The cuDNN attention graphs (cuda/cuda_attention_cudnn.cu) checked WITHOUT a GPU: the path's
 * own graph description (tensors with our strides, the SDPA forward / backward node, scale,
 * statistics) for each call the model makes is handed to the cuDNN frontend's validate() for
 * an sm_90 device (H100/H200) through cuda_cudnn_attention_validate_offline: cuDNN's support
 * surface must take the model's shapes (the ViT-B encoder on the visible tokens and the
 * teacher's full views, the decoder's 32-wide heads, cross attention with q and a packed kv,
 * backward into the packed bf16 dqkv and into compact scratch), and the tiny models' shapes of
 * the GPU tests that run cuDNN under the default attention_kernel = auto. A head width that is
 * not a multiple of 8 must be refused (so the check is not vacuous). What validate() cannot see
 * (engine availability, numerics, speed) is left to test_backend_parity and the benchmarks on
 * a GPU. Skips without CUDA or without the frontend headers. */
#include <stdio.h>
#include <string.h>

#include "ops/gpu_device.h"
#include "test.h"

#ifdef ALICE_CUDA
#include "cuda/cuda_attention_cudnn.h"

enum { KIND_FORWARD, KIND_INFERENCE, KIND_BACKWARD };
enum { SM90 = 90 };

typedef struct {
    const char *what;
    int kind, B, H, Tq, Tk, Dh;
    int packed;      /* q, k, v in one [rows, 3C] buffer; else q [rows, C] and kv [rows, 2C] */
    int grad16;      /* backward into the packed buffer's strides; else compact [rows, C] */
} GraphCase;

static const GraphCase kModelCases[] = {
    {"encoder, visible tokens (2B views)", KIND_FORWARD, 16, 12, 144, 144, 64, 1, 0},
    {"encoder backward into bf16 dqkv", KIND_BACKWARD, 16, 12, 144, 144, 64, 1, 1},
    {"encoder backward into fp32 (compact bf16 first)", KIND_BACKWARD, 16, 12, 144, 144, 64, 1, 0},
    {"teacher, all tokens, forward only", KIND_INFERENCE, 16, 12, 576, 576, 64, 1, 0},
    {"decoder, all tokens", KIND_FORWARD, 16, 12, 576, 576, 32, 1, 0},
    {"decoder backward into bf16 dqkv", KIND_BACKWARD, 16, 12, 576, 576, 32, 1, 1},
    {"cross attention q / packed kv", KIND_FORWARD, 8, 1, 144, 576, 64, 0, 0},
    {"cross attention backward", KIND_BACKWARD, 8, 1, 144, 576, 64, 0, 0},
};

/* The tiny models of the GPU tests whose bf16 steps run cuDNN under the default
 * attention_kernel = auto (test_cuda_graph_step, test_step_parity_gpu's head-width-32 cases):
 * crop 32x32x16, patch 8 (32 tokens, 8 visible), batch 2, width 96 in 3 heads of 32. */
static const GraphCase kTinyTestCases[] = {
    {"tiny: encoder, visible tokens (2B views)", KIND_FORWARD, 4, 3, 8, 8, 32, 1, 0},
    {"tiny: encoder backward into bf16 dqkv", KIND_BACKWARD, 4, 3, 8, 8, 32, 1, 1},
    {"tiny: teacher, all tokens, forward only", KIND_INFERENCE, 4, 3, 32, 32, 32, 1, 0},
    {"tiny: decoder, all tokens", KIND_FORWARD, 4, 3, 32, 32, 32, 1, 0},
    {"tiny: decoder backward into fp32 (compact bf16 first)", KIND_BACKWARD, 4, 3, 32, 32, 32, 1, 0},
};

static int validate(const GraphCase *c, char *why, size_t n)
{
    const int C = c->H * c->Dh;
    const int ldq = c->packed ? 3 * C : C, ldkv = c->packed ? 3 * C : 2 * C;
    const int bwd = c->kind == KIND_BACKWARD;
    const int ld_dq = bwd ? (c->grad16 ? ldq : C) : 0, ld_dkv = bwd ? (c->grad16 ? ldkv : C) : 0;
    return cuda_cudnn_attention_validate_offline(c->kind, c->B, c->H, c->Tq, c->Tk, c->Dh, ldq,
                                                 ldkv, ld_dq, ld_dkv, ld_dkv, SM90, why, n);
}

static int validate_all(const GraphCase *cases, size_t count)
{
    char why[2048];
    for (size_t i = 0; i < count; i++) {
        const GraphCase *c = &cases[i];
        const int ok = validate(c, why, sizeof why);
        TEST_CHECK(ok, "%s (B=%d H=%d Tq=%d Tk=%d Dh=%d): cuDNN's validate() refuses it: %s",
                   c->what, c->B, c->H, c->Tq, c->Tk, c->Dh, why);
        if (ok) printf("  validated: %s (%s)\n", c->what, why);
    }
    return 0;
}

static int test_model_shapes_validate(void)
{
    return validate_all(kModelCases, sizeof kModelCases / sizeof kModelCases[0]);
}

static int test_tiny_test_shapes_validate(void)
{
    return validate_all(kTinyTestCases, sizeof kTinyTestCases / sizeof kTinyTestCases[0]);
}

static int test_odd_head_width_refused(void)
{
    const GraphCase odd = {"head width 12", KIND_FORWARD, 2, 2, 64, 64, 12, 1, 0};
    char why[2048];
    TEST_CHECK(!validate(&odd, why, sizeof why), "a head width of 12 (not a multiple of 8) "
               "validated: the offline check would accept anything");
    printf("  refused as it should be: %.200s\n", why);
    return 0;
}
#endif

int main(void)
{
#ifndef ALICE_CUDA
    printf("skip: built without CUDA (no cuDNN attention)\n");
    return 77;
#else
    if (!gpu_cudnn_attention_available()) {
        printf("skip: this CUDA build has no cuDNN frontend headers (scripts/deps.sh)\n");
        return 77;
    }
    TEST_RUN(test_model_shapes_validate);
    TEST_RUN(test_tiny_test_shapes_validate);
    TEST_RUN(test_odd_head_width_refused);
    return test_finish();
#endif
}
