/* CUDA memory-bound op benchmark at the paper pre-training shapes (ViT-B/16, batch 8, crop
 * 192x192x64, p = 16: 576 tokens of 4096 voxels; MLP width 3072): add, GELU fwd/bwd in fp32
 * and bf16, patchify/unpatchify, gather_rows, their bf16-output variants (patchify_bf16,
 * gather_rows_bf16: fp32 read, bf16 written), masked_mse_bwd and the bf16 LayerNorm forward
 * at the target encoder's, the online encoder's and the decoder's shapes (its vector path is
 * the register-resident kernel, its fallback the scalar one). The bf16 GELU forward runs
 * twice: the backend op (a lookup in the table of all 65536 results) and the per-element
 * formula kernel it replaced (cuda/cuda_gelu_bf16.h, the same bits); a last line gives their
 * speed ratio. Each op runs twice in the same
 * run: on 16-byte aligned buffers (the kernels' vector path) and on buffers shifted by one
 * element (the scalar fallback), and its bytes moved per second are set beside a device-to-
 * device copy (gpu->copy) of the same number of bytes, the bandwidth reference of this card.
 * Figures are ms, GB/s and ratios; no assertion on times. Prints "skip" and exits 0 where no
 * device is visible.
 *
 * Timing: wall clock around ITERS calls after WARMUP calls, with a device synchronisation on
 * both ends (launch overheads count, as in a training step). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/timer.h"
#ifdef ALICE_CUDA
#include "cuda/cuda_gelu_bf16.h"
#endif
#include "ops/backend.h"
#include "ops/gpu_device.h"
#include "bench_gpu_data.h"
#include "bench_gpu_timing.h"

#ifdef ALICE_CUDA
enum { WARMUP = 3, ITERS = 20 };

/* The ops measured; OP_COPY is the reference. */
typedef enum {
    OP_COPY, OP_ADD, OP_GELU_FWD, OP_GELU_BWD, OP_GELU_FWD_BF16, OP_GELU_BF16_FORMULA,
    OP_GELU_BWD_BF16, OP_PATCHIFY, OP_UNPATCHIFY, OP_GATHER_ROWS, OP_PATCHIFY_BF16,
    OP_GATHER_ROWS_BF16, OP_MASKED_MSE_BWD, OP_LN_FWD_TGT, OP_LN_FWD_ENC, OP_LN_FWD_DEC, OP_COUNT
} Op;

static const char *const kOpName[OP_COUNT] = {
    "copy (reference)", "add [4608, 768]", "gelu_fwd [4608, 3072]", "gelu_bwd [4608, 3072]",
    "gelu_fwd_bf16 [4608, 3072]", "gelu_bf16_formula [4608, 3072]", "gelu_bwd_bf16 [4608, 3072]",
    "patchify 8x192x192x64", "unpatchify 8x192x192x64", "gather_rows 8x432 of 576",
    "patchify_bf16 8x192x192x64", "gather_rows_bf16 8x432 of 576",
    "masked_mse_bwd [4608, 4096]", "ln_fwd_bf16_tgt [9216, 768]", "ln_fwd_bf16_enc [2304, 768]",
    "ln_fwd_bf16_dec [9216, 384]"};

/* Paper shapes. */
enum { B = 8, X = 192, Y = 192, Z = 64, P = 16, TOKENS = 576, NSEL = 432, PATCH = 4096,
       ROWS = B * TOKENS, WIDTH = 768, MLP = 3072, DEC_WIDTH = 384 };

static const AliceBackend *gpu;

typedef struct {
    float *f[3];       /* fp32 operands, each of kFloats + 1 */
    bf16_t *h;         /* bf16 input and output, kBf16 values */
    int *idx;          /* [B, TOKENS] row indices */
    float *mask;       /* [ROWS] */
} Buffers;

static const size_t kFloats = (size_t)B * X * Y * Z; /* the largest fp32 operand: 18.9M */
/* gelu_fwd_bf16 reads the first ROWS * MLP values and writes the next ROWS * MLP (+ 1: shift). */
static const size_t kBf16 = 2 * (size_t)ROWS * MLP + 1;

static float *device_uniform(size_t n, uint32_t seed)
{
    return bench_device_uniform(gpu, n, seed, -2.0f, 2.0f);
}

/* layernorm_fwd_bf16 over rows x dim: x from f[0], gamma and beta from f[1], the statistics
 * in f[2], y in the bf16 buffer. Returns bytes moved. */
static double run_layernorm(const Buffers *bu, int shift, int rows, int dim)
{
    float *stats = bu->f[2] + shift;
    gpu->layernorm_fwd_bf16(bu->h + shift, stats, stats + rows, bu->f[0] + shift, bu->f[1] + shift,
                            bu->f[1] + shift + dim, rows, dim, 1e-5f);
    return (double)rows * dim * (sizeof(float) + sizeof(bf16_t)) + 2.0 * rows * sizeof(float);
}

/* Runs op once; shift 0 (aligned) or 1 (every pointer one element off). Returns bytes moved. */
static double run_op(Op op, const Buffers *bu, int shift)
{
    float *a = bu->f[0] + shift, *b = bu->f[1] + shift, *c = bu->f[2] + shift;
    bf16_t *h = bu->h + shift;
    const size_t nadd = (size_t)ROWS * WIDTH, nmlp = (size_t)ROWS * MLP;
    const size_t nmse = (size_t)ROWS * PATCH;
    switch (op) {
    case OP_COPY: gpu->copy(c, a, kFloats * sizeof(float)); return 2.0 * kFloats * sizeof(float);
    case OP_ADD: gpu->add(c, a, b, nadd); return 3.0 * nadd * sizeof(float);
    case OP_GELU_FWD: gpu->gelu_fwd(c, a, nmlp); return 2.0 * nmlp * sizeof(float);
    case OP_GELU_BWD: gpu->gelu_bwd(c, b, a, nmlp); return 3.0 * nmlp * sizeof(float);
    case OP_GELU_FWD_BF16:
        /* output into the second half of the bf16 buffer (the operands must not overlap) */
        gpu->gelu_fwd_bf16(h + nmlp, h, nmlp);
        return 2.0 * nmlp * sizeof(bf16_t);
    case OP_GELU_BF16_FORMULA:
        cuda_gelu_fwd_bf16_formula(h + nmlp, h, nmlp);
        return 2.0 * nmlp * sizeof(bf16_t);
    case OP_GELU_BWD_BF16:
        gpu->gelu_bwd_bf16(c, b, h, nmlp);
        return nmlp * (2.0 * sizeof(float) + sizeof(bf16_t));
    case OP_PATCHIFY: gpu->patchify(c, a, B, X, Y, Z, P); return 2.0 * kFloats * sizeof(float);
    case OP_UNPATCHIFY: gpu->unpatchify(c, a, B, X, Y, Z, P); return 2.0 * kFloats * sizeof(float);
    case OP_GATHER_ROWS:
        gpu->gather_rows(c, a, bu->idx, TOKENS, B, TOKENS, NSEL, PATCH);
        return 2.0 * B * NSEL * PATCH * sizeof(float);
    case OP_PATCHIFY_BF16:  /* bf16 patches in the bf16 buffer (kBf16 > kFloats + 1) */
        gpu->patchify_bf16(h, a, B, X, Y, Z, P);
        return kFloats * (double)(sizeof(float) + sizeof(bf16_t));
    case OP_GATHER_ROWS_BF16:
        gpu->gather_rows_bf16(h, a, bu->idx, TOKENS, B, TOKENS, NSEL, PATCH);
        return (double)B * NSEL * PATCH * (sizeof(float) + sizeof(bf16_t));
    case OP_MASKED_MSE_BWD:
        gpu->masked_mse_bwd(c, a, b, bu->mask, ROWS, PATCH, 1.0f);
        return 3.0 * nmse * sizeof(float);
    case OP_LN_FWD_TGT: return run_layernorm(bu, shift, 2 * ROWS, WIDTH);
    case OP_LN_FWD_ENC: return run_layernorm(bu, shift, 2 * B * (TOKENS / 4), WIDTH);
    case OP_LN_FWD_DEC: return run_layernorm(bu, shift, 2 * ROWS, DEC_WIDTH);
    case OP_COUNT: break;
    }
    return 0.0;
}

static double time_op(Op op, const Buffers *bu, int shift, double *bytes)
{
    for (int i = 0; i < WARMUP; i++) *bytes = run_op(op, bu, shift);
    gpu->synchronize();
    const double t0 = wall_seconds();
    for (int i = 0; i < ITERS; i++) run_op(op, bu, shift);
    gpu->synchronize();
    return (wall_seconds() - t0) / ITERS;
}

int main(void)
{
    gpu = bench_gpu_or_skip();
    if (!gpu) return 0;
    Buffers bu;
    for (int k = 0; k < 3; k++) bu.f[k] = device_uniform(kFloats + 1, 7u + (uint32_t)k);
    /* bf16 values uniform in [-4, 4), rounded on the host */
    bu.h = bench_device_uniform_bf16(gpu, kBf16, 99u, -4.0f, 4.0f);
    int *idx = malloc((size_t)B * TOKENS * sizeof(int));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < TOKENS; t++) idx[b * TOKENS + t] = (t * 5 + b) % TOKENS; /* 5 coprime to 576 */
    bu.idx = gpu->alloc((size_t)B * TOKENS * sizeof(int));
    gpu->upload(bu.idx, idx, (size_t)B * TOKENS * sizeof(int));
    free(idx);
    float *mask = malloc(ROWS * sizeof(float));
    for (int r = 0; r < ROWS; r++) mask[r] = r % 4 != 0 ? 1.0f : 0.0f;
    bu.mask = gpu->alloc(ROWS * sizeof(float));
    gpu->upload(bu.mask, mask, ROWS * sizeof(float));
    free(mask);

    double bytes = 0.0;
    const double t_copy = time_op(OP_COPY, &bu, 0, &bytes);
    const double copy_gbs = bytes / t_copy * 1e-9;
    printf("%-30s %10s %9s %8s %10s %9s %8s %10s\n", "op (paper shape)", "vec ms", "GB/s",
           "of copy", "scalar ms", "GB/s", "of copy", "vec gain");
    double vec_ms[OP_COUNT];
    for (int op = 0; op < OP_COUNT; op++) {
        const double tv = time_op((Op)op, &bu, 0, &bytes);
        vec_ms[op] = 1e3 * tv;
        const double gv = bytes / tv * 1e-9;
        const double ts = time_op((Op)op, &bu, 1, &bytes);
        const double gs = bytes / ts * 1e-9;
        printf("%-30s %10.4f %9.1f %8.2f %10.4f %9.1f %8.2f %10.2f\n", kOpName[op], 1e3 * tv, gv,
               gv / copy_gbs, 1e3 * ts, gs, gs / copy_gbs, ts / tv);
    }
    printf("(GB/s = bytes each op must move / time; 'of copy' = that over gpu->copy's GB/s on\n"
           " %.0f MB in this run; scalar = every pointer shifted by one element, the kernels'\n"
           " fallback path; vec gain = scalar time / vector time)\n",
           2.0 * kFloats * sizeof(float) * 1e-6);
    /* not "gelu_fwd_bf16 ..." at the line's start: tests/gpu/run.sh greps the row by that */
    printf("bf16 GELU forward: table lookup %.4f ms, per-element formula %.4f ms: %.2fx faster\n",
           vec_ms[OP_GELU_FWD_BF16], vec_ms[OP_GELU_BF16_FORMULA],
           vec_ms[OP_GELU_BF16_FORMULA] / vec_ms[OP_GELU_FWD_BF16]);
    for (int k = 0; k < 3; k++) gpu->release(bu.f[k]);
    gpu->release(bu.h);
    gpu->release(bu.idx);
    gpu->release(bu.mask);
    return 0;
}
#else
int main(void) { return bench_skip_without_cuda(); }
#endif
