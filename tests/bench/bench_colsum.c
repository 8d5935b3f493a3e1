/* The one-launch column sums on the GPU, at the paper configuration's shapes (ViT-B/16: width
 * 768, MLP 3072; 16 x 576 rows for the target encoder, 16 x 144 for the online encoder's
 * visible tokens):
 *  - LayerNorm's dgamma and dbeta from one two-output launch (layernorm_bwd with both) beside
 *    two one-output launches (layernorm_bwd with dgamma only, then with dbeta only);
 *  - the bf16 linear backward's bias gradient summed in the pass that rounds dy for the GEMMs
 *    (linear_bwd_bf16 with db) beside the unfused order: linear_bwd_bf16 without db (dy rounded
 *    by its own launch), then the bias column sum by itself (layernorm_bwd with dbeta only,
 *    which is exactly the column sum of dy).
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

static const BenchShape kNorm[] = {
    {"tgt LN (all)", 9216, 0, 768},
    {"enc LN (visible)", 2304, 0, 768},
};

static const BenchShape kLinear[] = {
    {"tgt proj (all)", 9216, 768, 768},
    {"tgt fc1 (all)", 9216, 768, 3072},
    {"enc proj (visible)", 2304, 768, 768},
    {"enc fc1 (visible)", 2304, 768, 3072},
};

static const AliceBackend *gpu;

typedef struct {
    const BenchShape *sh;
    float *dy, *x, *mean, *rstd, *gamma, *dgamma, *dbeta; /* LayerNorm */
    float *dx, *dW, *db, *W;                              /* linear */
    bf16_t *x16;
} Call;

static void norm_call(const void *arg, int variant, int index)
{
    const Call *c = arg;
    const BenchShape *s = c->sh;
    (void)index;
    if (variant == BENCH_FUSED) {
        gpu->layernorm_bwd(NULL, NULL, c->dgamma, c->dbeta, c->dy, c->x, c->mean, c->rstd,
                           c->gamma, s->rows, s->out);
    } else {
        gpu->layernorm_bwd(NULL, NULL, c->dgamma, NULL, c->dy, c->x, c->mean, c->rstd, c->gamma,
                           s->rows, s->out);
        gpu->layernorm_bwd(NULL, NULL, NULL, c->dbeta, c->dy, c->x, c->mean, c->rstd, c->gamma,
                           s->rows, s->out);
    }
}

static void linear_call(const void *arg, int variant, int index)
{
    const Call *c = arg;
    const BenchShape *s = c->sh;
    (void)index;
    if (variant == BENCH_FUSED) {
        gpu->linear_bwd_bf16(c->dx, c->dW, c->db, c->dy, c->x16, c->W, s->rows, s->in, s->out);
    } else {
        gpu->linear_bwd_bf16(c->dx, c->dW, NULL, c->dy, c->x16, c->W, s->rows, s->in, s->out);
        /* the column sum of dy: layernorm_bwd's dbeta alone (its other inputs unread) */
        gpu->layernorm_bwd(NULL, NULL, NULL, c->db, c->dy, NULL, NULL, NULL, NULL, s->rows,
                           s->out);
    }
}

static void bench_norm(void)
{
    bench_fusion_header("LN dgamma + dbeta", "2 launches", "1 launch");
    for (size_t k = 0; k < sizeof kNorm / sizeof kNorm[0]; k++) {
        const BenchShape *s = &kNorm[k];
        const size_t n = (size_t)s->rows * s->out;
        Call c = {.sh = s,
                  .dy = bench_device_uniform(gpu, n, 11u, -1.0f, 1.0f),
                  .x = bench_device_uniform(gpu, n, 13u, -2.0f, 3.0f),
                  .mean = gpu->alloc((size_t)s->rows * sizeof(float)),
                  .rstd = gpu->alloc((size_t)s->rows * sizeof(float)),
                  .gamma = bench_device_uniform(gpu, s->out, 14u, 0.5f, 1.5f),
                  .dgamma = bench_device_uniform(gpu, s->out, 15u, -1.0f, 1.0f),
                  .dbeta = bench_device_uniform(gpu, s->out, 16u, -1.0f, 1.0f)};
        float *y = gpu->alloc(n * sizeof(float));
        gpu->layernorm_fwd(y, c.mean, c.rstd, c.x, c.gamma, NULL, s->rows, s->out, 1e-5f);
        bench_fusion_row(gpu, s->name, norm_call, &c, WARMUP, ITERS);
        float *bufs[] = {y, c.dy, c.x, c.mean, c.rstd, c.gamma, c.dgamma, c.dbeta};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) gpu->release(bufs[i]);
    }
}

static void bench_linear(void)
{
    printf("\n");
    bench_fusion_header("linear_bwd_bf16 + db", "db apart ms", "fused ms");
    for (size_t k = 0; k < sizeof kLinear / sizeof kLinear[0]; k++) {
        const BenchShape *s = &kLinear[k];
        /* W in a weights_hint buffer (the model's case: its bf16 copy is made once) */
        float *W = bench_device_uniform(gpu, (size_t)s->out * s->in, 7u + (uint32_t)k, -0.05f,
                                        0.05f);
        gpu->weights_hint(W, (size_t)s->out * s->in);
        Call c = {.sh = s,
                  .dy = bench_device_uniform(gpu, (size_t)s->rows * s->out, 21u, -1.0f, 1.0f),
                  .dx = gpu->alloc((size_t)s->rows * s->in * sizeof(float)),
                  .dW = bench_device_uniform(gpu, (size_t)s->out * s->in, 22u, -1.0f, 1.0f),
                  .db = bench_device_uniform(gpu, s->out, 23u, -1.0f, 1.0f),
                  .W = W,
                  .x16 = bench_device_uniform_bf16(gpu, (size_t)s->rows * s->in, 5u, -1.0f,
                                                   1.0f)};
        bench_fusion_row(gpu, s->name, linear_call, &c, WARMUP, ITERS);
        gpu->weights_forget(W);
        float *bufs[] = {W, c.dy, c.dx, c.dW, c.db};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) gpu->release(bufs[i]);
        gpu->release(c.x16);
    }
}

int main(void)
{
    gpu = bench_gpu_or_skip();
    if (!gpu) return 0;
    bench_norm();
    bench_linear();
    printf("(ratio = unfused time / fused time in the same run)\n");
    return 0;
}
#else
int main(void) { return bench_skip_without_cuda(); }
#endif
