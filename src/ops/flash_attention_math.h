/* The per-row math of tiled ("flash") attention, shared by the CUDA kernels
 * (cuda/cuda_flash_attention.cu, compiled by nvcc) and the plain-C model of the same tile loop
 * (tests/unit/test_flash_tiling.c, compiled by gcc), so the CPU test exercises exactly the
 * arithmetic the GPU runs.
 *
 * Forward (online softmax): scores arrive one key tile at a time. Each row keeps its running
 * maximum m and running sum l of exp(s - m); a new tile raises m to m', rescales what was
 * accumulated so far (l and the output row) by exp(m - m') and adds exp(s - m'). After the last
 * tile, out = acc / l and the row's logsumexp lse = m + log(l) is all backward needs.
 * Backward recomputes p = exp(s - lse) tile by tile and forms dS = p (dP - D) with
 * D = rowsum(dO * O) (= sum_j p_j dP_j, the softmax backward's dot product).
 * Within a block several threads share a row ("parts", below). */
#ifndef ALICE_FLASH_ATTENTION_MATH_H
#define ALICE_FLASH_ATTENTION_MATH_H

#include <math.h>

#ifdef __CUDACC__
#define FLASH_HD __host__ __device__ __forceinline__
#else
#define FLASH_HD static inline
#endif

/* Running state of one query row before its first key tile. */
FLASH_HD void flash_row_init(float *m, float *l)
{
    *m = -INFINITY;
    *l = 0.0f;
}

/* A row's work is split among `parts` threads: part p owns the columns j = p, p + parts, ...
 * (interleaved, so the threads of one row hit different shared-memory banks). The kernels
 * combine the parts' maxima and sums with warp shuffles (butterfly: after offset 1 every part
 * holds x_p + x_(p^1), after offset 2 (x_0 + x_1) + (x_2 + x_3) in every part); the C model
 * in tests/unit/test_flash_tiling.c combines in that same order, so both round alike. */

/* Largest of this part's scores among the first n_valid keys (-inf when it owns none). */
FLASH_HD float flash_part_max(const float *s, int part, int parts, int n_valid)
{
    float mx = -INFINITY;
    for (int j = part; j < n_valid; j += parts) mx = fmaxf(mx, s[j]);
    return mx;
}

/* In place over this part's columns of s[0..n): exp(s - m_new) for keys before n_valid, 0 for
 * the keys a tile hanging over Tk does not have. Returns the sum of what it wrote. */
FLASH_HD float flash_part_exp(float *s, int part, int parts, int n_valid, int n, float m_new)
{
    float sum = 0.0f;
    for (int j = part; j < n; j += parts) {
        const float p = j < n_valid ? expf(s[j] - m_new) : 0.0f;
        s[j] = p;
        sum += p;
    }
    return sum;
}

/* The new running maximum of a row after a tile whose scores peak at tile_max. */
FLASH_HD float flash_row_new_max(float m, float tile_max) { return fmaxf(m, tile_max); }

/* Commits a tile to the row's running state: *l = *l exp(*m - m_new) + tile_sum, *m = m_new.
 * Returns exp(m - m_new), the factor by which the caller must rescale the row's output
 * accumulator (0 on the first tile, since m = -inf). */
FLASH_HD float flash_row_commit(float *m, float *l, float m_new, float tile_sum)
{
    const float rescale = expf(*m - m_new);
    *l = *l * rescale + tile_sum;
    *m = m_new;
    return rescale;
}

/* One key tile of one row by a single thread (parts = 1), in place: s[0..n) holds the scaled
 * scores q.k/sqrt(Dh) of the tile; only the first n_valid >= 1 keys exist. On return
 * s[j] = exp(s[j] - m') (0 past n_valid), and the state is committed; returns the rescale
 * factor of the output accumulator. */
FLASH_HD float flash_row_update(float *s, int n_valid, int n, float *m, float *l)
{
    const float m_new = flash_row_new_max(*m, flash_part_max(s, 0, 1, n_valid));
    const float sum = flash_part_exp(s, 0, 1, n_valid, n, m_new);
    return flash_row_commit(m, l, m_new, sum);
}

/* After the last tile: the row's logsumexp (saved for backward) and 1/l (the output scale). */
FLASH_HD float flash_row_lse(float m, float l) { return m + logf(l); }
FLASH_HD float flash_row_inv_sum(float l) { return 1.0f / l; }

/* Backward, this part's columns of one row of one tile, in place: s[0..n) scaled scores ->
 * p = exp(s - lse); keys at or past n_valid, and every key of a padding row (row_valid = 0),
 * get p = 0. */
FLASH_HD void flash_part_recompute_p(float *s, float lse, int row_valid, int part, int parts,
                                     int n_valid, int n)
{
    const int live = row_valid ? n_valid : 0;
    for (int j = part; j < n; j += parts) s[j] = j < live ? expf(s[j] - lse) : 0.0f;
}

/* Backward, this part's columns, in place: dp[j] = dO.v_j -> dS_j = p_j (dP_j - D) (the
 * softmax backward; the 1/sqrt(Dh) of the scores is applied by the caller's GEMM alpha). */
FLASH_HD void flash_part_dscores(float *dp, const float *p, float D, int part, int parts, int n)
{
    for (int j = part; j < n; j += parts) dp[j] = p[j] * (dp[j] - D);
}

#undef FLASH_HD
#endif
