/* The MLP's fc1 backward through its GELU on the GPU, at the paper configuration's shapes
 * (ViT-B/16: width 768, MLP 3072; 16 x 576 rows for the target encoder's intact views, 16 x 144
 * for the online encoder's visible tokens): linear_gelu_bwd_bf16 (dh = dy gelu'(h) computed in
 * the bias column sum's pass, which also writes dh's bf16 copy for the GEMMs; the fp32 dh never
 * stored) beside the unfused order the transformer ran before: gelu_bwd_bf16 into an fp32 dh,
 * then linear_bwd_bf16 with db (its column sum reading dh again to round it). Both include the
 * two GEMMs (dx, dW), the same in either.
 * Figures: ms per call of each variant and the ratio unfused / fused measured in the same run
 * (above 1: the fusion pays); no assertion on times. Prints "skip: ..." and exits 0 without a
 * GPU.
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
    return 0;
}
#else
int main(void) { return bench_skip_without_cuda(); }
#endif
