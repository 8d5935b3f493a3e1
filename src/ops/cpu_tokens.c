/* CPU backend: data movement between volumes, patches and token sequences (patchify, visible
 * token gather, mask-token insertion, pooling, channel concat, token <-> volume transpose).
 * Index arrays come from the caller's masks: they are trusted to be in range, as on the GPU. */
#include "ops/cpu_ops.h"

#include <string.h>

/* Tile edge of the blocked transpose: a 32x32 float tile is 4 KiB, two fit L1. */
enum { TRANSPOSE_TILE = 32 };

/* What patch_copy moves: volume -> fp32 patch rows (patchify), back (unpatchify), or
 * volume -> bf16 patch rows (patchify_bf16: each value rounded once, nearest even). */
typedef enum { PATCHES_FROM_VOLUME, VOLUME_FROM_PATCHES, BF16_PATCHES_FROM_VOLUME } PatchCopy;

/* Copies between the volume and its patch rows, one z-run of p voxels at a time; `what` picks
 * the direction and the patches' type, so patchify, its adjoint unpatchify and the bf16
 * patchify share one walk. */
static void patch_copy(void *patches, float *vol, int B, int X, int Y, int Z, int p,
                       PatchCopy what)
{
    int gx = X / p, gy = Y / p, gz = Z / p;
    long np3 = (long)p * p * p;
    #pragma omp parallel for collapse(2) schedule(static) if ((long)B * X * Y * Z > CPU_OMP_MIN_ELEMENTS)
    for (int b = 0; b < B; b++)
        for (int ix = 0; ix < gx; ix++)
            for (int iy = 0; iy < gy; iy++)
                for (int iz = 0; iz < gz; iz++) {
                    long token = ((long)b * gx * gy * gz) + ((long)ix * gy + iy) * gz + iz;
                    for (int px = 0; px < p; px++)
                        for (int py = 0; py < p; py++) {
                            const long row = token * np3 + ((long)px * p + py) * p;
                            float *run = vol + (((long)b * X + ix * p + px) * Y + iy * p + py) * Z +
                                         (long)iz * p;
                            if (what == PATCHES_FROM_VOLUME)
                                memcpy((float *)patches + row, run, (size_t)p * sizeof(float));
                            else if (what == VOLUME_FROM_PATCHES)
                                memcpy(run, (float *)patches + row, (size_t)p * sizeof(float));
                            else
                                for (int pz = 0; pz < p; pz++)
                                    ((bf16_t *)patches)[row + pz] = bf16_from_float(run[pz]);
                        }
                }
}

void cpu_patchify(float *patches, const float *vol, int B, int X, int Y, int Z, int p)
{
    patch_copy(patches, (float *)vol, B, X, Y, Z, p, PATCHES_FROM_VOLUME);
}

void cpu_unpatchify(float *vol, const float *patches, int B, int X, int Y, int Z, int p)
{
    patch_copy((float *)patches, vol, B, X, Y, Z, p, VOLUME_FROM_PATCHES);
}

void cpu_patchify_bf16(bf16_t *patches, const float *vol, int B, int X, int Y, int Z, int p)
{
    /* vol is only read on this path */
    patch_copy(patches, (float *)vol, B, X, Y, Z, p, BF16_PATCHES_FROM_VOLUME);
}

void cpu_gather_rows(float *out, const float *in, const int *idx, int idx_ld, int B, int N,
                     int nsel, int C)
{
    #pragma omp parallel for collapse(2) schedule(static) if ((long)B * nsel * C > CPU_OMP_MIN_ELEMENTS)
    for (int b = 0; b < B; b++)
        for (int j = 0; j < nsel; j++) {
            long src_row = (long)b * N + idx[(long)b * idx_ld + j];
            memcpy(out + ((long)b * nsel + j) * C, in + src_row * C, (size_t)C * sizeof(float));
        }
}

void cpu_gather_rows_bf16(bf16_t *out, const float *in, const int *idx, int idx_ld, int B, int N,
                          int nsel, int C)
{
    #pragma omp parallel for collapse(2) schedule(static) if ((long)B * nsel * C > CPU_OMP_MIN_ELEMENTS)
    for (int b = 0; b < B; b++)
        for (int j = 0; j < nsel; j++) {
            const float *src = in + ((long)b * N + idx[(long)b * idx_ld + j]) * C;
            bf16_t *dst = out + ((long)b * nsel + j) * C;
            for (int c = 0; c < C; c++) dst[c] = bf16_from_float(src[c]);
        }
}

void cpu_scatter_add_rows(float *din, const float *dout, const int *idx, int idx_ld, int B,
                          int N, int nsel, int C)
{
    /* An index may repeat within a batch element, so rows of one b are added by one thread;
     * column blocks give the parallelism without write conflicts. */
    enum { BLOCK = 64 };
    int nblocks = (C + BLOCK - 1) / BLOCK;
    #pragma omp parallel for collapse(2) schedule(static) if ((long)B * nsel * C > CPU_OMP_MIN_ELEMENTS)
    for (int b = 0; b < B; b++)
        for (int blk = 0; blk < nblocks; blk++) {
            int c0 = blk * BLOCK, c1 = c0 + BLOCK < C ? c0 + BLOCK : C;
            for (int j = 0; j < nsel; j++) {
                float *dst = din + ((long)b * N + idx[(long)b * idx_ld + j]) * C;
                const float *src = dout + ((long)b * nsel + j) * C;
                for (int c = c0; c < c1; c++) dst[c] += src[c];
            }
        }
}

void cpu_add_table_rows(float *x, const float *table, const int *idx, int idx_ld, int B,
                        int nsel, int C)
{
    #pragma omp parallel for collapse(2) schedule(static) if ((long)B * nsel * C > CPU_OMP_MIN_ELEMENTS)
    for (int b = 0; b < B; b++)
        for (int j = 0; j < nsel; j++) {
            float *dst = x + ((long)b * nsel + j) * C;
            const float *src = table + (long)idx[(long)b * idx_ld + j] * C;
            for (int c = 0; c < C; c++) dst[c] += src[c];
        }
}

void cpu_insert_mask_tokens(float *out, const float *visible, const float *mask_token,
                            const int *perm, int B, int N, int nvis, int C)
{
    #pragma omp parallel for collapse(2) schedule(static) if ((long)B * N * C > CPU_OMP_MIN_ELEMENTS)
    for (int b = 0; b < B; b++)
        for (int j = 0; j < N; j++) {
            float *dst = out + ((long)b * N + perm[(long)b * N + j]) * C;
            const float *src = j < nvis ? visible + ((long)b * nvis + j) * C : mask_token;
            memcpy(dst, src, (size_t)C * sizeof(float));
        }
}

void cpu_insert_mask_tokens_bwd(float *dvisible, float *dmask_token, const float *dout,
                                const int *perm, int B, int N, int nvis, int C)
{
    if (dvisible) {
        #pragma omp parallel for collapse(2) schedule(static) if ((long)B * nvis * C > CPU_OMP_MIN_ELEMENTS)
        for (int b = 0; b < B; b++)
            for (int j = 0; j < nvis; j++)
                memcpy(dvisible + ((long)b * nvis + j) * C,
                       dout + ((long)b * N + perm[(long)b * N + j]) * C, (size_t)C * sizeof(float));
    }
    if (!dmask_token) return;
    /* The one mask token is used at every masked position: its gradient is the column sum
     * of those rows, over all b. */
    enum { BLOCK = 64 };
    int nblocks = (C + BLOCK - 1) / BLOCK;
    #pragma omp parallel for schedule(static) if ((long)B * (N - nvis) * C > CPU_OMP_MIN_ELEMENTS)
    for (int blk = 0; blk < nblocks; blk++) {
        int c0 = blk * BLOCK, nc = C - c0 < BLOCK ? C - c0 : BLOCK;
        double acc[BLOCK] = {0};
        for (int b = 0; b < B; b++)
            for (int j = nvis; j < N; j++) {
                const float *src = dout + ((long)b * N + perm[(long)b * N + j]) * C + c0;
                for (int c = 0; c < nc; c++) acc[c] += src[c];
            }
        for (int c = 0; c < nc; c++) dmask_token[c0 + c] += (float)acc[c];
    }
}

void cpu_mean_rows_fwd(float *out, const float *in, int B, int T, int C)
{
    for (int b = 0; b < B; b++) {
        float *ob = out + (long)b * C;
        for (int c = 0; c < C; c++) ob[c] = 0.0f;
        cpu_add_column_sums(ob, in + (long)b * T * C, T, C, C);
        for (int c = 0; c < C; c++) ob[c] /= (float)T;
    }
}

void cpu_mean_rows_bwd(float *din, const float *dout, int B, int T, int C)
{
    const float inv = 1.0f / (float)T;
    #pragma omp parallel for collapse(2) schedule(static) if ((long)B * T * C > CPU_OMP_MIN_ELEMENTS)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *dst = din + ((long)b * T + t) * C;
            const float *src = dout + (long)b * C;
            for (int c = 0; c < C; c++) dst[c] = src[c] * inv;
        }
}

void cpu_concat_channels(float *out, const float *a, const float *b, int B, int C1, int C2,
                         long V)
{
    long na = (long)C1 * V, nb = (long)C2 * V;
    for (int i = 0; i < B; i++) {
        memcpy(out + i * (na + nb), a + i * na, (size_t)na * sizeof(float));
        memcpy(out + i * (na + nb) + na, b + i * nb, (size_t)nb * sizeof(float));
    }
}

void cpu_split_channels(float *da, float *db, const float *dout, int B, int C1, int C2, long V)
{
    long na = (long)C1 * V, nb = (long)C2 * V;
    for (int i = 0; i < B; i++) {
        if (da) memcpy(da + i * na, dout + i * (na + nb), (size_t)na * sizeof(float));
        if (db) memcpy(db + i * nb, dout + i * (na + nb) + na, (size_t)nb * sizeof(float));
    }
}

void cpu_transpose_tokens(float *out, const float *in, int B, int rows, int cols)
{
    int tr = (rows + TRANSPOSE_TILE - 1) / TRANSPOSE_TILE;
    int tc = (cols + TRANSPOSE_TILE - 1) / TRANSPOSE_TILE;
    #pragma omp parallel for collapse(3) schedule(static) if ((long)B * rows * cols > CPU_OMP_MIN_ELEMENTS)
    for (int b = 0; b < B; b++)
        for (int i0 = 0; i0 < tr; i0++)
            for (int j0 = 0; j0 < tc; j0++) {
                const float *src = in + (long)b * rows * cols;
                float *dst = out + (long)b * rows * cols;
                int i1 = (i0 + 1) * TRANSPOSE_TILE < rows ? (i0 + 1) * TRANSPOSE_TILE : rows;
                int j1 = (j0 + 1) * TRANSPOSE_TILE < cols ? (j0 + 1) * TRANSPOSE_TILE : cols;
                for (int i = i0 * TRANSPOSE_TILE; i < i1; i++)
                    for (int j = j0 * TRANSPOSE_TILE; j < j1; j++)
                        dst[(long)j * rows + i] = src[(long)i * cols + j];
            }
}
