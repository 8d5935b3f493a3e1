/* The reconstruction loss's row kernels at the paper shape (ViT-B/16, batch 8, 2 masked views,
 * crop 192x192x64: S * N = 9216 patches of P = 16^3 = 4096 voxels, a quarter of them visible):
 * normalize_rows (the norm_pix target; the backend's held path, which reads each row once, and
 * the streamed kernel, three passes over each row, the backend's path for rows past 16384
 * values: cuda/cuda_normalize_rows.h), masked_mse_bwd (visible rows written as zeros without
 * being read; and with every row masked, all read) and masked_mse_fwd (visible rows skipped).
 * Each row of the table sets the kernel beside a device-to-device copy (gpu->copy) moving the
 * same number of bytes in the same run: "copy ms, kernel ms, copy/kernel" (1 = at this card's
 * copy bandwidth); a last line gives the held path's speed-up over the streamed one. Figures
 * are times and ratios; no assertion on times. Prints "skip" and exits 0 where no device is
 * visible.
 *
 * Timing: wall clock around ITERS calls after WARMUP calls, with a device synchronisation on
 * both ends (bench_gpu_timing.h; launch overheads count, as in a training step). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef ALICE_CUDA
#include "cuda/cuda_normalize_rows.h"
#endif
#include "ops/backend.h"
#include "bench_gpu_data.h"
#include "bench_gpu_timing.h"

#ifdef ALICE_CUDA
enum { WARMUP = 3, ITERS = 20 };
/* Paper shape: 8 samples x 2 masked views x 576 patches, 16^3 voxels each. */
enum { ROWS = 8 * 2 * 576, DIM = 16 * 16 * 16 };
static const float kEps = 1e-6f;

/* The calls timed; each is set beside COPY of the same bytes moved. */
typedef enum {
    CALL_COPY, CALL_NORMALIZE_HELD, CALL_NORMALIZE_STREAMED, CALL_MSE_BWD, CALL_MSE_BWD_ALL,
    CALL_MSE_FWD, CALL_COUNT
} Call;

static const char *const kCallName[CALL_COUNT] = {
    "copy", "normalize_rows held", "normalize_rows streamed", "mse_bwd 1/4 visible",
    "mse_bwd all masked", "mse_fwd 1/4 visible"};

typedef struct {
    const AliceBackend *gpu;
    float *x, *target, *pred, *out; /* [ROWS, DIM] each */
    float *mask_quarter_visible, *mask_all; /* [ROWS] */
    float *copy_src, *copy_dst;              /* the copy's buffers, of the largest copy */
    float *loss;
    size_t copy_bytes;                       /* what CALL_COPY copies now */
} Bench;

static void run_call(const void *arg, int call, int index)
{
    (void)index;
    const Bench *b = arg;
    switch ((Call)call) {
    case CALL_COPY: b->gpu->copy(b->copy_dst, b->copy_src, b->copy_bytes); break;
    case CALL_NORMALIZE_HELD: b->gpu->normalize_rows(b->out, b->x, ROWS, DIM, kEps); break;
    case CALL_NORMALIZE_STREAMED: cuda_normalize_rows_streamed(b->out, b->x, ROWS, DIM, kEps); break;
    case CALL_MSE_BWD:
        b->gpu->masked_mse_bwd(b->out, b->pred, b->target, b->mask_quarter_visible, ROWS, DIM, 1.0f);
        break;
    case CALL_MSE_BWD_ALL:
        b->gpu->masked_mse_bwd(b->out, b->pred, b->target, b->mask_all, ROWS, DIM, 1.0f);
        break;
    case CALL_MSE_FWD:
        b->gpu->masked_mse_fwd(b->loss, b->pred, b->target, b->mask_quarter_visible, ROWS, DIM);
        break;
    case CALL_COUNT: break;
    }
}

/* Bytes a call must move at least: every value it reads or writes once. */
static double bytes_moved(Call call)
{
    const double row = (double)DIM * sizeof(float), masked = 0.75 * ROWS;
    switch (call) {
    case CALL_NORMALIZE_HELD:
    case CALL_NORMALIZE_STREAMED: return 2.0 * ROWS * row;      /* read x, write out */
    case CALL_MSE_BWD: return (2.0 * masked + ROWS) * row;       /* pred, target of masked rows */
    case CALL_MSE_BWD_ALL: return 3.0 * ROWS * row;
    case CALL_MSE_FWD: return 2.0 * masked * row;
    case CALL_COPY:
    case CALL_COUNT: break;
    }
    return 0.0;
}

static float *mask_with_visible_every(const AliceBackend *gpu, int period)
{
    float *h = malloc(ROWS * sizeof(float));
    for (int r = 0; r < ROWS; r++) h[r] = period && r % period == 0 ? 0.0f : 1.0f;
    float *d = gpu->alloc(ROWS * sizeof(float));
    gpu->upload(d, h, ROWS * sizeof(float));
    free(h);
    return d;
}

int main(void)
{
    const AliceBackend *gpu = bench_gpu_or_skip();
    if (!gpu) return 0;
    const size_t n = (size_t)ROWS * DIM;
    Bench b = {.gpu = gpu};
    /* voxel-like values: a patch's mean well away from 0 */
    b.x = bench_device_uniform(gpu, n, 11u, 0.0f, 1.0f);
    b.target = bench_device_uniform(gpu, n, 12u, -2.0f, 2.0f);
    b.pred = bench_device_uniform(gpu, n, 13u, -2.0f, 2.0f);
    b.out = gpu->alloc(n * sizeof(float));
    b.loss = gpu->alloc(sizeof(float));
    b.mask_quarter_visible = mask_with_visible_every(gpu, 4);
    b.mask_all = mask_with_visible_every(gpu, 0);
    /* the largest copy: half of masked_mse_bwd's 3 rows' worth of bytes */
    const size_t copy_max = (size_t)(bytes_moved(CALL_MSE_BWD_ALL) / 2.0);
    b.copy_src = bench_device_uniform(gpu, copy_max / sizeof(float), 14u, -1.0f, 1.0f);
    b.copy_dst = gpu->alloc(copy_max);

    printf("%-26s %10s %10s %12s %8s\n", "call [9216 x 4096]", "GB/s", "copy ms", "kernel ms",
           "copy/kernel");
    double ms[CALL_COUNT] = {0};
    for (int c = CALL_COPY + 1; c < CALL_COUNT; c++) {
        const double bytes = bytes_moved((Call)c);
        b.copy_bytes = (size_t)(bytes / 2.0); /* a copy reads and writes its bytes */
        const double copy_s = bench_seconds_per_call(gpu, run_call, &b, CALL_COPY, WARMUP, ITERS);
        const double kernel_s = bench_seconds_per_call(gpu, run_call, &b, c, WARMUP, ITERS);
        ms[c] = 1e3 * kernel_s;
        printf("%-26s %10.1f %10.4f %12.4f %8.2f\n", kCallName[c], bytes / kernel_s * 1e-9,
               1e3 * copy_s, 1e3 * kernel_s, copy_s / kernel_s);
    }
    printf("(GB/s = the bytes the call must move / its time; copy = gpu->copy of half those\n"
           " bytes, timed just before it: copy/kernel = 1 is this card's copy bandwidth)\n");
    /* not "normalize_rows ..." at the line's start: tests/gpu/run.sh greps the rows by name */
    printf("held normalize_rows %.4f ms, streamed %.4f ms: %.2fx faster; masked_mse_bwd with a "
           "quarter of the rows visible %.4f ms, all rows masked %.4f ms: %.2fx\n",
           ms[CALL_NORMALIZE_HELD], ms[CALL_NORMALIZE_STREAMED],
           ms[CALL_NORMALIZE_STREAMED] / ms[CALL_NORMALIZE_HELD], ms[CALL_MSE_BWD],
           ms[CALL_MSE_BWD_ALL], ms[CALL_MSE_BWD_ALL] / ms[CALL_MSE_BWD]);
    float *bufs[] = {b.x, b.target, b.pred, b.out, b.loss, b.mask_quarter_visible, b.mask_all,
                     b.copy_src, b.copy_dst};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) gpu->release(bufs[i]);
    return 0;
}
#else
int main(void) { return bench_skip_without_cuda(); }
#endif
