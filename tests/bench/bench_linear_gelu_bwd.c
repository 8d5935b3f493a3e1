/* The MLP's fc1 backward through its GELU on the GPU, at the paper configuration's shapes
 * (ViT-B/16: width 768, MLP 3072; 16 x 576 rows for the target encoder's intact views, 16 x 144
 * for the online encoder's visible tokens): linear_gelu_bwd_bf16 (dh = dy gelu'(h) computed in
 * the bias column sum's pass, which also writes dh's bf16 copy for the GEMMs; the fp32 dh never
 * stored) beside the unfused order the transformer ran before: gelu_bwd_bf16 into an fp32 dh,
 * then linear_bwd_bf16 with db (its column sum reading dh again to round it). Both include the
 * two GEMMs (dx, dW), the same in either.
 * Second table: fc2's backward and then fc1's through its GELU, as a transformer block runs
 * them (fc2 on the bf16 dy and presummed bias gradient its LayerNorm backward hands it), with
 * fc2's input gradient dh1 in fp32 (linear_bwd_bf16_dy16, then linear_gelu_bwd_bf16: the order
 * before dh1 took the activation type) beside bf16 (linear_bwd_bf16_dy16_dx16, then
 * linear_gelu_bwd_bf16_dy16: half the bytes stored by fc2's dx GEMM and read by the fused GELU
 * pass) at the paper step's backward shapes: the online encoder's visible tokens (16 x 144,
 * 768 -> 3072, 12 blocks) and the decoder's tokens (16 x 576, 384 -> 1536, 4 blocks), and their
 * sum over one step (12 encoder + 4 decoder calls). All four GEMMs in both variants.
 * Figures: ms per call of each variant and the ratio first / second measured in the same run
 * (above 1: the fusion, or the bf16 dh1, pays); no assertion on times. Prints "skip: ..." and
 * exits 0 without a GPU.
 *
 * Timing: bench_gpu_timing.h (wall clock around ITERS calls after WARMUP calls, a device
 * synchronisation on both ends, so launch overheads count as they do in a training step). */
#include <stdio.h>

#include "ops/backend.h"
#include "bench_gpu_data.h"
#include "bench_gpu_timing.h"

#ifdef ALICE_CUDA
enum { WARMUP = 5, ITERS = 50 };

typedef struct {
    const char *name;
    int rows, in, out;
} Shape;

static const Shape kShapes[] = {
    {"tgt fc1 (all)", 9216, 768, 3072},
    {"enc fc1 (visible)", 2304, 768, 3072},
};

static const AliceBackend *gpu;

/* ---- fc2 + fc1 backward, dh1 fp32 beside bf16 ---- */

enum { ENC_BLOCKS = 12, DEC_BLOCKS = 4 };

typedef struct {
    const char *name;
    int rows, width, mlp, blocks;  /* blocks: calls per paper step */
} MlpShape;

static const MlpShape kMlpShapes[] = {
    {"enc fc2+fc1 (visible)", 2304, 768, 3072, ENC_BLOCKS},
    {"dec fc2+fc1 (all)", 9216, 384, 1536, DEC_BLOCKS},
};

enum { DH1_FP32 = BENCH_UNFUSED, DH1_BF16 = BENCH_FUSED };

typedef struct {
    const MlpShape *sh;
    bf16_t *g16, *hg, *h, *ln2, *dh1_16;  /* fc2's bf16 dy, its input, fc1's output and input */
    float *dh1, *dh, *dln2, *W1, *W2, *dW1, *dW2, *db1;
} MlpCall;

static void mlp_call(const void *arg, int variant, int index)
{
    const MlpCall *c = arg;
    const MlpShape *s = c->sh;
    (void)index;
    if (variant == DH1_FP32) {
        gpu->linear_bwd_bf16_dy16(c->dh1, c->dW2, c->g16, c->hg, c->W2, s->rows, s->mlp,
                                  s->width);
        gpu->linear_gelu_bwd_bf16(c->dln2, c->dW1, c->db1, c->dh1, c->h, c->dh, c->ln2, c->W1,
                                  s->rows, s->width, s->mlp);
    } else {
        gpu->linear_bwd_bf16_dy16_dx16(c->dh1_16, c->dW2, c->g16, c->hg, c->W2, s->rows, s->mlp,
                                       s->width);
        gpu->linear_gelu_bwd_bf16_dy16(c->dln2, c->dW1, c->db1, c->dh1_16, c->h, c->dh, c->ln2,
                                       c->W1, s->rows, s->width, s->mlp);
    }
}

static void mlp_table(void)
{
    bench_fusion_header("fc2 + fc1 bwd", "fp32 dh1 ms", "bf16 dh1 ms");
    double step_fp32 = 0.0, step_bf16 = 0.0;
    for (size_t k = 0; k < sizeof kMlpShapes / sizeof kMlpShapes[0]; k++) {
        const MlpShape *s = &kMlpShapes[k];
        const size_t nh = (size_t)s->rows * s->mlp, nx = (size_t)s->rows * s->width;
        const size_t nw = (size_t)s->mlp * s->width;
        /* fc1 and fc2 weights in one weights_hint buffer (their bf16 copies made once) */
        float *weights = bench_device_uniform(gpu, 2 * nw, 31u + (uint32_t)k, -0.05f, 0.05f);
        gpu->weights_hint(weights, 2 * nw);
        MlpCall c = {.sh = s,
                     .g16 = bench_device_uniform_bf16(gpu, nx, 32u, -1.0f, 1.0f),
                     .hg = bench_device_uniform_bf16(gpu, nh, 33u, -1.0f, 1.0f),
                     .h = bench_device_uniform_bf16(gpu, nh, 34u, -3.0f, 3.0f),
                     .ln2 = bench_device_uniform_bf16(gpu, nx, 35u, -1.0f, 1.0f),
                     .dh1_16 = gpu->alloc(nh * sizeof(bf16_t)),
                     .dh1 = gpu->alloc(nh * sizeof(float)),
                     .dh = gpu->alloc(nh * sizeof(float)),
                     .dln2 = gpu->alloc(nx * sizeof(float)),
                     .W1 = weights,
                     .W2 = weights + nw,
                     .dW1 = bench_device_uniform(gpu, nw, 36u, -1.0f, 1.0f),
                     .dW2 = bench_device_uniform(gpu, nw, 37u, -1.0f, 1.0f),
                     .db1 = bench_device_uniform(gpu, s->mlp, 38u, -1.0f, 1.0f)};
        double t_fp32, t_bf16;
        bench_pair_row(gpu, s->name, mlp_call, &c, DH1_FP32, DH1_BF16, WARMUP, ITERS, &t_fp32,
                       &t_bf16);
        step_fp32 += s->blocks * t_fp32;
        step_bf16 += s->blocks * t_bf16;
        gpu->weights_forget(weights);
        float *bufs[] = {weights, c.dh1, c.dh, c.dln2, c.dW1, c.dW2, c.db1};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) gpu->release(bufs[i]);
        bf16_t *bufs16[] = {c.g16, c.hg, c.h, c.ln2, c.dh1_16};
        for (size_t i = 0; i < sizeof bufs16 / sizeof bufs16[0]; i++) gpu->release(bufs16[i]);
    }
    bench_pair_print("fc2+fc1 per step", step_fp32, step_bf16);
    printf("(ratio = fp32-dh1 time / bf16-dh1 time in the same run; per step: %d encoder and %d "
           "decoder blocks)\n", ENC_BLOCKS, DEC_BLOCKS);
}

typedef struct {
    const Shape *sh;
    float *dy_act, *dh, *dx, *dW, *db, *W;
    bf16_t *h, *x;
} Call;

static void fc1_call(const void *arg, int variant, int index)
{
    const Call *c = arg;
    const Shape *s = c->sh;
    (void)index;
    if (variant == BENCH_FUSED) {
        gpu->linear_gelu_bwd_bf16(c->dx, c->dW, c->db, c->dy_act, c->h, c->dh, c->x, c->W,
                                  s->rows, s->in, s->out);
    } else {
        gpu->gelu_bwd_bf16(c->dh, c->dy_act, c->h, (size_t)s->rows * s->out);
        gpu->linear_bwd_bf16(c->dx, c->dW, c->db, c->dh, c->x, c->W, s->rows, s->in, s->out);
    }
}

int main(void)
{
    gpu = bench_gpu_or_skip();
    if (!gpu) return 0;
    bench_fusion_header("fc1 + GELU backward", "unfused ms", "fused ms");
    for (size_t k = 0; k < sizeof kShapes / sizeof kShapes[0]; k++) {
        const Shape *s = &kShapes[k];
        const size_t nh = (size_t)s->rows * s->out, nx = (size_t)s->rows * s->in;
        const size_t nw = (size_t)s->out * s->in;
        /* W in a weights_hint buffer (the model's case: its bf16 copy is made once) */
        float *W = bench_device_uniform(gpu, nw, 7u + (uint32_t)k, -0.05f, 0.05f);
        gpu->weights_hint(W, nw);
        Call c = {.sh = s,
                  .dy_act = bench_device_uniform(gpu, nh, 21u, -1.0f, 1.0f),
                  .dh = gpu->alloc(nh * sizeof(float)),
                  .dx = gpu->alloc(nx * sizeof(float)),
                  .dW = bench_device_uniform(gpu, nw, 22u, -1.0f, 1.0f),
                  .db = bench_device_uniform(gpu, s->out, 23u, -1.0f, 1.0f),
                  .W = W,
                  .h = bench_device_uniform_bf16(gpu, nh, 4u, -3.0f, 3.0f),
                  .x = bench_device_uniform_bf16(gpu, nx, 5u, -1.0f, 1.0f)};
        bench_fusion_row(gpu, s->name, fc1_call, &c, WARMUP, ITERS);
        gpu->weights_forget(W);
        float *bufs[] = {W, c.dy_act, c.dh, c.dx, c.dW, c.db};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) gpu->release(bufs[i]);
        gpu->release(c.h);
        gpu->release(c.x);
    }
    printf("(ratio = unfused time / fused time in the same run)\n");
    mlp_table();
    return 0;
}
#else
int main(void) { return bench_skip_without_cuda(); }
#endif
