/* The one-launch column sums on the GPU, at the paper configuration's shapes (ViT-B/16: width
 * 768, MLP 3072; 16 x 576 rows for the target encoder, 16 x 144 for the online encoder's
 * visible tokens):
 *  - LayerNorm's dgamma and dbeta from one two-output launch (layernorm_bwd with both) beside
 *    two one-output launches (layernorm_bwd with dgamma only, then with dbeta only);
 *  - the bf16 linear backward's bias gradient summed in the pass that rounds dy for the GEMMs
 *    (linear_bwd_bf16 with db) beside the unfused order: linear_bwd_bf16 without db (dy rounded
 *    by its own launch), then the bias column sum by itself (layernorm_bwd with dbeta only,
 *    which is exactly the column sum of dy);
 *  - LayerNorm's whole backward as the model calls it (dx with the skip connection's residual,
 *    dgamma, dbeta: one kernel reading dy and x once, then a column sum over its per-block
 *    partials) beside the two passes it replaced, still what the entry points run when asked
 *    apart (layernorm_bwd with dx alone: the dx kernel; then with dgamma and dbeta alone: the
 *    two-output column sum over dy and x), at the widths and rows of the paper step's
 *    LayerNorm backwards (encoder: 2304 visible tokens x 768, 25 per step; decoder: 9216
 *    tokens x 384, 9 per step), and their sum over one step ("LN bwd per step", the two CASA
 *    LayerNorms left out);
 *  - a LayerNorm backward and the linear layer that reads its dx as dy (a bf16 stack's LN2 and
 *    proj, LN1 and the previous fc2, the final norm and the last fc2), at the same shapes with
 *    proj as the consumer: layernorm_bwd then linear_bwd_bf16 with db (its column sum over the
 *    fp32 dx that also writes dx's bf16 copy, then the GEMMs) beside layernorm_bwd_dx16
 *    (dx's bf16 copy and column sums in the LayerNorm kernel) then linear_bwd_bf16_dy16 (the
 *    GEMMs alone), and the sum over one step's such pairs ("LN+linear bwd per step": the
 *    encoder's 24, the decoder's 8; the GEMMs are in both columns, so the difference of the
 *    two is the saving, the ratio understates it).
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

/* LayerNorm backwards of the paper step: shape, and how many run per step (the encoder's 12
 * blocks x 2 + its final norm; the decoder's 4 x 2 + 1). */
static const BenchShape kNormBwd[] = {
    {"LN bwd enc (visible)", 2304, 0, 768},
    {"LN bwd dec (all)", 9216, 0, 384},
};
static const int kNormBwdPerStep[] = {25, 9};

/* LayerNorm backwards whose dx feeds a linear layer (proj here, in = out = the width), and how
 * many run per step: per block LN2 -> proj and LN1 -> the previous block's fc2 (not in the
 * first block: its LN1 gives the stack's input gradient), and the final norm -> the last
 * fc2: encoder 12 + 11 + 1, decoder 4 + 3 + 1. */
static const BenchShape kNormToLinear[] = {
    {"LN+proj bwd enc (visible)", 2304, 768, 768},
    {"LN+proj bwd dec (all)", 9216, 384, 384},
};
static const int kNormToLinearPerStep[] = {24, 8};

typedef struct {
    const BenchShape *sh;
    float *dy, *x, *mean, *rstd, *gamma, *dgamma, *dbeta, *res; /* LayerNorm */
    float *dx, *dW, *db, *W; /* linear (dx: LayerNorm's too) */
    bf16_t *x16;
    float *ldx;    /* the consumer's input gradient (LayerNorm then linear) */
    bf16_t *dx16;  /* LayerNorm's dx in bf16 (layernorm_bwd_dx16) */
    float *y;      /* LayerNorm's forward output (the forward only gives mean and rstd) */
} Call;

/* A LayerNorm backward's inputs at c->sh (rows x out) from seeds seed .. seed + 5, the
 * forward's mean and rstd of x, and dx; norm_inputs_release frees them. */
static void norm_inputs_alloc(Call *c, uint32_t seed)
{
    const BenchShape *s = c->sh;
    const size_t n = (size_t)s->rows * s->out;
    c->dy = bench_device_uniform(gpu, n, seed, -1.0f, 1.0f);
    c->x = bench_device_uniform(gpu, n, seed + 1, -2.0f, 3.0f);
    c->res = bench_device_uniform(gpu, n, seed + 2, -1.0f, 1.0f);
    c->gamma = bench_device_uniform(gpu, s->out, seed + 3, 0.5f, 1.5f);
    c->dgamma = bench_device_uniform(gpu, s->out, seed + 4, -1.0f, 1.0f);
    c->dbeta = bench_device_uniform(gpu, s->out, seed + 5, -1.0f, 1.0f);
    c->dx = gpu->alloc(n * sizeof(float));
    c->mean = gpu->alloc((size_t)s->rows * sizeof(float));
    c->rstd = gpu->alloc((size_t)s->rows * sizeof(float));
    c->y = gpu->alloc(n * sizeof(float));
    gpu->layernorm_fwd(c->y, c->mean, c->rstd, c->x, c->gamma, NULL, s->rows, s->out, 1e-5f);
}

static void norm_inputs_release(Call *c)
{
    float *bufs[] = {c->y, c->dy, c->x, c->res, c->dx, c->mean, c->rstd, c->gamma, c->dgamma,
                     c->dbeta};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) gpu->release(bufs[i]);
}

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

static void norm_bwd_call(const void *arg, int variant, int index)
{
    const Call *c = arg;
    const BenchShape *s = c->sh;
    (void)index;
    if (variant == BENCH_FUSED) {
        gpu->layernorm_bwd(c->dx, c->res, c->dgamma, c->dbeta, c->dy, c->x, c->mean, c->rstd,
                           c->gamma, s->rows, s->out);
    } else {
        gpu->layernorm_bwd(c->dx, c->res, NULL, NULL, c->dy, c->x, c->mean, c->rstd, c->gamma,
                           s->rows, s->out);
        gpu->layernorm_bwd(NULL, NULL, c->dgamma, c->dbeta, c->dy, c->x, c->mean, c->rstd,
                           c->gamma, s->rows, s->out);
    }
}

static void norm_to_linear_call(const void *arg, int variant, int index)
{
    const Call *c = arg;
    const BenchShape *s = c->sh;
    (void)index;
    if (variant == BENCH_FUSED) {
        gpu->layernorm_bwd_dx16(c->dx, c->res, c->dgamma, c->dbeta, c->dx16, c->db, c->dy, c->x,
                                c->mean, c->rstd, c->gamma, s->rows, s->out);
        gpu->linear_bwd_bf16_dy16(c->ldx, c->dW, c->dx16, c->x16, c->W, s->rows, s->in, s->out);
    } else {
        gpu->layernorm_bwd(c->dx, c->res, c->dgamma, c->dbeta, c->dy, c->x, c->mean, c->rstd,
                           c->gamma, s->rows, s->out);
        gpu->linear_bwd_bf16(c->ldx, c->dW, c->db, c->dx, c->x16, c->W, s->rows, s->in, s->out);
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
        Call c = {.sh = s};
        norm_inputs_alloc(&c, 11u);   /* dx and res stay unused: parameter gradients only */
        bench_fusion_row(gpu, s->name, norm_call, &c, WARMUP, ITERS);
        norm_inputs_release(&c);
    }
}

static void bench_norm_bwd(void)
{
    printf("\n");
    bench_fusion_header("LN bwd dx+dgamma+dbeta", "2 passes ms", "1 pass ms");
    double step_two = 0.0, step_one = 0.0;
    for (size_t k = 0; k < sizeof kNormBwd / sizeof kNormBwd[0]; k++) {
        const BenchShape *s = &kNormBwd[k];
        Call c = {.sh = s};
        norm_inputs_alloc(&c, 31u);
        double two = 0.0, one = 0.0;
        bench_pair_row(gpu, s->name, norm_bwd_call, &c, BENCH_UNFUSED, BENCH_FUSED, WARMUP, ITERS,
                       &two, &one);
        step_two += kNormBwdPerStep[k] * two;
        step_one += kNormBwdPerStep[k] * one;
        norm_inputs_release(&c);
    }
    bench_pair_print("LN bwd per step", step_two, step_one);
}

static void bench_norm_to_linear(void)
{
    printf("\n");
    bench_fusion_header("LN bwd + linear bwd", "LN, linear ms", "dx16 ms");
    double step_old = 0.0, step_new = 0.0;
    for (size_t k = 0; k < sizeof kNormToLinear / sizeof kNormToLinear[0]; k++) {
        const BenchShape *s = &kNormToLinear[k];
        const size_t n = (size_t)s->rows * s->out, nw = (size_t)s->out * s->in;
        float *W = bench_device_uniform(gpu, nw, 41u, -0.05f, 0.05f);
        gpu->weights_hint(W, nw);  /* the model's case: W's bf16 copy made once */
        Call c = {.sh = s,
                  .dW = bench_device_uniform(gpu, nw, 48u, -1.0f, 1.0f),
                  .db = bench_device_uniform(gpu, s->out, 49u, -1.0f, 1.0f),
                  .W = W,
                  .x16 = bench_device_uniform_bf16(gpu, (size_t)s->rows * s->in, 50u, -1.0f,
                                                   1.0f),
                  .ldx = gpu->alloc((size_t)s->rows * s->in * sizeof(float)),
                  .dx16 = gpu->alloc(n * sizeof(bf16_t))};
        norm_inputs_alloc(&c, 42u);
        double old = 0.0, fused = 0.0;
        bench_pair_row(gpu, s->name, norm_to_linear_call, &c, BENCH_UNFUSED, BENCH_FUSED, WARMUP,
                       ITERS, &old, &fused);
        step_old += kNormToLinearPerStep[k] * old;
        step_new += kNormToLinearPerStep[k] * fused;
        gpu->weights_forget(W);
        norm_inputs_release(&c);
        float *bufs[] = {c.dW, c.db, W, c.ldx};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) gpu->release(bufs[i]);
        gpu->release(c.x16);
        gpu->release(c.dx16);
    }
    bench_pair_print("LN+linear bwd per step", step_old, step_new);
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
    bench_norm_bwd();
    bench_norm_to_linear();
    bench_linear();
    printf("(ratio = unfused time / fused time in the same run)\n");
    return 0;
}
#else
int main(void) { return bench_skip_without_cuda(); }
#endif
