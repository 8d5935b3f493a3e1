/* The qkv layer's backward behind attention's on the GPU, at the paper configuration's shapes
 * (ViT-B/16: width 768, 12 heads of 64; 16 x 576 rows for the target encoder's intact views,
 * 16 x 144 for the online encoder's visible tokens), bf16 activations, attention_kernel = auto:
 *  unfused: attention_bwd_bf16 into an fp32 dqkv [rows, 3W], then linear_bwd_bf16 (db NULL),
 *           which rounds dqkv to bf16 (one launch, an fp32 write and read of [rows, 3W]) for
 *           its two GEMMs; the order tstack_backward_taps ran before;
 *  fused:   attention_bwd_bf16_grad16 into a bf16 dqkv (auto at head width 64: cuDNN stores its
 *           bf16 gradients there directly where the build has it, else the flash kernels round
 *           dq, dk, dv in their store), then linear_bwd_bf16_dy16 (the GEMMs read it as it is).
 * Both include attention's backward passes and the two GEMMs (dx, dW), the same in either.
 * Figures: ms per call of each variant and the ratio unfused / fused measured in the same run
 * (above 1: the change pays); no assertion on times. Prints "skip: ..." and exits 0 without a
 * GPU.
 *
 * Timing: bench_gpu_timing.h (wall clock around ITERS calls after WARMUP calls, a device
 * synchronisation on both ends, so launch overheads count as they do in a training step). */
#include <stdio.h>

#include "ops/backend.h"
#include "ops/gpu_device.h"
#include "bench_gpu_data.h"
#include "bench_gpu_timing.h"

#ifdef ALICE_CUDA
enum { WARMUP = 3, ITERS = 20, WIDTH = 768, HEADS = 12 };

typedef struct {
    const char *name;
    int B, T;
} Shape;

static const Shape kShapes[] = {
    {"tgt qkv (all)", 16, 576},
    {"enc qkv (visible)", 16, 144},
};

static const AliceBackend *gpu;

typedef struct {
    const Shape *sh;
    bf16_t *qkv, *att, *dqkv16, *ln1;
    float *saved, *datt, *dqkv32, *dx, *dW, *W;
} Call;

static void qkv_call(const void *arg, int variant, int index)
{
    const Call *c = arg;
    const int B = c->sh->B, T = c->sh->T, W = WIDTH, rows = B * T;
    (void)index;
    if (variant == BENCH_FUSED) {
        gpu->attention_bwd_bf16_grad16(c->dqkv16, c->dqkv16 + W, c->dqkv16 + 2 * W, c->datt,
                                       c->qkv, c->qkv + W, c->qkv + 2 * W, c->att, c->saved, B,
                                       HEADS, T, T, W / HEADS, 3 * W, 3 * W);
        gpu->linear_bwd_bf16_dy16(c->dx, c->dW, c->dqkv16, c->ln1, c->W, rows, W, 3 * W);
    } else {
        gpu->attention_bwd_bf16(c->dqkv32, c->dqkv32 + W, c->dqkv32 + 2 * W, c->datt, c->qkv,
                                c->qkv + W, c->qkv + 2 * W, c->att, c->saved, B, HEADS, T, T,
                                W / HEADS, 3 * W, 3 * W);
        gpu->linear_bwd_bf16(c->dx, c->dW, NULL, c->dqkv32, c->ln1, c->W, rows, W, 3 * W);
    }
}

int main(void)
{
    gpu = bench_gpu_or_skip();
    if (!gpu) return 0;
    gpu_set_math(0, 1);                  /* precision = bf16 */
    /* the default: cuDNN's attention at head width 64 (the flash kernels without it) */
    gpu_set_attention(ATTN_KERNEL_AUTO);
    bench_fusion_header("attention + qkv bwd", "fp32 dqkv ms", "bf16 ms");
    for (size_t k = 0; k < sizeof kShapes / sizeof kShapes[0]; k++) {
        const Shape *s = &kShapes[k];
        const int W = WIDTH, rows = s->B * s->T;
        const size_t nqkv = (size_t)rows * 3 * W, nx = (size_t)rows * W, nw = (size_t)3 * W * W;
        /* W in a weights_hint buffer (the model's case: its bf16 copy is made once) */
        float *Wq = bench_device_uniform(gpu, nw, 7u + (uint32_t)k, -0.05f, 0.05f);
        gpu->weights_hint(Wq, nw);
        const size_t n_saved = gpu->attention_saved_floats(s->B, HEADS, s->T, s->T, W / HEADS);
        Call c = {.sh = s,
                  .qkv = bench_device_uniform_bf16(gpu, nqkv, 3u, -1.0f, 1.0f),
                  .att = gpu->alloc(nx * sizeof(bf16_t)),
                  .dqkv16 = gpu->alloc(nqkv * sizeof(bf16_t)),
                  .ln1 = bench_device_uniform_bf16(gpu, nx, 5u, -1.0f, 1.0f),
                  .saved = gpu->alloc(n_saved * sizeof(float)),
                  .datt = bench_device_uniform(gpu, nx, 21u, -1.0f, 1.0f),
                  .dqkv32 = gpu->alloc(nqkv * sizeof(float)),
                  .dx = gpu->alloc(nx * sizeof(float)),
                  .dW = bench_device_uniform(gpu, nw, 22u, -1.0f, 1.0f),
                  .W = Wq};
        gpu->attention_fwd_bf16(c.att, c.saved, c.qkv, c.qkv + W, c.qkv + 2 * W, s->B, HEADS,
                                s->T, s->T, W / HEADS, 3 * W, 3 * W);
        bench_fusion_row(gpu, s->name, qkv_call, &c, WARMUP, ITERS);
        gpu->weights_forget(Wq);
        float *fbufs[] = {Wq, c.saved, c.datt, c.dqkv32, c.dx, c.dW};
        for (size_t i = 0; i < sizeof fbufs / sizeof fbufs[0]; i++) gpu->release(fbufs[i]);
        bf16_t *hbufs[] = {c.qkv, c.att, c.dqkv16, c.ln1};
        for (size_t i = 0; i < sizeof hbufs / sizeof hbufs[0]; i++) gpu->release(hbufs[i]);
    }
    printf("(ratio = fp32 dqkv time / bf16 dqkv time in the same run)\n");
    return 0;
}
#else
int main(void) { return bench_skip_without_cuda(); }
#endif
