/* The transformer block's residual adds fused into the op before them, on the GPU, at the
 * paper configuration's shapes (ViT-B/16: width 768, MLP 3072; 16 x 576 rows for the target
 * encoder, 16 x 144 for the online encoder's visible tokens):
 *  - forward: linear_fwd_bf16 with the residual as cuBLASLt's C (one launch) beside
 *    linear_fwd_bf16 then the add op (what the blocks ran before), for the attention
 *    projection (768 -> 768) and fc2 (3072 -> 768);
 *  - backward: layernorm_bwd with dx_residual beside layernorm_bwd then add.
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

static const BenchShape kLinear[] = {
    {"tgt proj (all)", 9216, 768, 768},
    {"tgt fc2 (all)", 9216, 3072, 768},
    {"enc proj (visible)", 2304, 768, 768},
    {"enc fc2 (visible)", 2304, 3072, 768},
};

static const BenchShape kNorm[] = {
    {"tgt LN (all)", 9216, 0, 768},
    {"enc LN (visible)", 2304, 0, 768},
};

static const AliceBackend *gpu;

typedef struct {
    const BenchShape *sh;
    float *y, *res, *W, *b;
    bf16_t *x;
} LinearCall;

static void linear_call(const void *arg, int variant, int index)
{
    const LinearCall *c = arg;
    const BenchShape *s = c->sh;
    (void)index;
    if (variant == BENCH_FUSED) {
        gpu->linear_fwd_bf16(c->y, DTYPE_F32, c->x, c->W, c->b, c->res, s->rows, s->in, s->out);
    } else {
        gpu->linear_fwd_bf16(c->y, DTYPE_F32, c->x, c->W, c->b, NULL, s->rows, s->in, s->out);
        gpu->add(c->y, c->y, c->res, (size_t)s->rows * s->out);
    }
}

static void bench_linear(void)
{
    bench_fusion_header("linear + residual", "unfused ms", "fused ms");
    for (size_t k = 0; k < sizeof kLinear / sizeof kLinear[0]; k++) {
        const BenchShape *s = &kLinear[k];
        /* W and b in one weights_hint buffer (the model's case: their bf16 copies are made
         * once, not rounded on every call); b 64-byte aligned after W, as parameters are. */
        const size_t nw = (size_t)s->out * s->in, b_at = (nw + 15) / 16 * 16;
        float *weights = bench_device_uniform(gpu, b_at + s->out, 7u + (uint32_t)k, -0.05f, 0.05f);
        gpu->weights_hint(weights, b_at + s->out);
        LinearCall c = {s, gpu->alloc((size_t)s->rows * s->out * sizeof(float)),
                        bench_device_uniform(gpu, (size_t)s->rows * s->out, 99u, -1.0f, 1.0f),
                        weights, weights + b_at,
                        bench_device_uniform_bf16(gpu, (size_t)s->rows * s->in, 5u, -1.0f, 1.0f)};
        bench_fusion_row(gpu, s->name, linear_call, &c, WARMUP, ITERS);
        gpu->weights_forget(weights);
        gpu->release(weights);
        gpu->release(c.y);
        gpu->release(c.res);
        gpu->release(c.x);
    }
}

typedef struct {
    const BenchShape *sh;
    float *dx, *res, *dy, *x, *mean, *rstd, *gamma, *dgamma, *dbeta;
} NormCall;

static void norm_call(const void *arg, int variant, int index)
{
    const NormCall *c = arg;
    const BenchShape *s = c->sh;
    (void)index;
    if (variant == BENCH_FUSED) {
        gpu->layernorm_bwd(c->dx, c->res, c->dgamma, c->dbeta, c->dy, c->x, c->mean, c->rstd,
                           c->gamma, s->rows, s->out);
    } else {
        gpu->layernorm_bwd(c->dx, NULL, c->dgamma, c->dbeta, c->dy, c->x, c->mean, c->rstd,
                           c->gamma, s->rows, s->out);
        gpu->add(c->dx, c->res, c->dx, (size_t)s->rows * s->out);
    }
}

static void bench_norm(void)
{
    printf("\n");
    bench_fusion_header("layernorm_bwd + resid.", "unfused ms", "fused ms");
    for (size_t k = 0; k < sizeof kNorm / sizeof kNorm[0]; k++) {
        const BenchShape *s = &kNorm[k];
        const size_t n = (size_t)s->rows * s->out;
        NormCall c = {s, gpu->alloc(n * sizeof(float)),
                      bench_device_uniform(gpu, n, 11u, -1.0f, 1.0f),
                      bench_device_uniform(gpu, n, 12u, -1.0f, 1.0f),
                      bench_device_uniform(gpu, n, 13u, -2.0f, 3.0f),
                      gpu->alloc((size_t)s->rows * sizeof(float)),
                      gpu->alloc((size_t)s->rows * sizeof(float)),
                      bench_device_uniform(gpu, s->out, 14u, 0.5f, 1.5f),
                      bench_device_uniform(gpu, s->out, 15u, -1.0f, 1.0f),
                      bench_device_uniform(gpu, s->out, 16u, -1.0f, 1.0f)};
        float *y = gpu->alloc(n * sizeof(float));
        gpu->layernorm_fwd(y, c.mean, c.rstd, c.x, c.gamma, NULL, s->rows, s->out, 1e-5f);
        bench_fusion_row(gpu, s->name, norm_call, &c, WARMUP, ITERS);
        float *bufs[] = {y, c.dx, c.res, c.dy, c.x, c.mean, c.rstd, c.gamma, c.dgamma, c.dbeta};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) gpu->release(bufs[i]);
    }
}

int main(void)
{
    gpu = bench_gpu_or_skip();
    if (!gpu) return 0;
    bench_linear();
    bench_norm();
    printf("(ratio = unfused time / fused time in the same run; per block and pass the paper's\n"
           "step runs two fused linears forward and two fused LayerNorm backwards)\n");
    return 0;
}
#else
int main(void) { return bench_skip_without_cuda(); }
#endif
