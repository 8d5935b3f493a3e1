/* The algorithm of the fused CUDA attention (cuda/cuda_flash_attention.cu), verified without a
 * GPU: the same tile loops in plain C, calling the same per-row functions the kernels call
 * (src/ops/flash_attention_math.h: online softmax update, logsumexp, recomputed P, dS) on
 * the same split of each row among 128 / tile threads combined in the same butterfly order, with
 * the kernels' zero padding of head dims to a multiple of 16, tiles of 64 (Dh <= 64) or 32
 * query rows / keys, and their three backward passes (D = rowsum(dO O); dK, dV per key tile
 * over every query tile; dQ per query tile over every key tile). Compared against the CPU
 * backend (itself checked against finite differences in test_ops_grad and a double-precision
 * reference in test_ops_forward), and lse against a double-precision logsumexp.
 * A bf16 variant rounds every tile operand to bf16 (round to nearest even) exactly where the
 * tensor-core kernels do, to back the looser bf16 tolerance used in test_backend_parity. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "ops/backend.h"
#include "ops/flash_attention_math.h"
#include "test.h"

enum { MMA_EDGE = 16, FLASH_THREADS = 128, MAX_PARTS = 32 };

typedef struct {
    int B, H, Tq, Tk, Dh, ldq, ldkv, tile, bf16;
} Shape;

static float g_amplitude = 1.0f;  /* scale of q and k/v inputs */

static int round_up(int x, int m) { return (x + m - 1) / m * m; }
static int tile_for(int dh_padded) { return dh_padded <= 64 ? 64 : 32; }

/* fp32 -> bf16 -> fp32, round to nearest even (as __float2bfloat16); finite inputs. */
static float round_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&x, &u, sizeof x);
    return x;
}
static float operand(const Shape *s, float x) { return s->bf16 ? round_bf16(x) : x; }

/* tile [tile][dhp] of rows r0.. of src (row stride ld), zero beyond valid rows and dh. */
static void load_tile(const Shape *s, float *dst, const float *src, long ld, int rows_valid,
                      int dhp)
{
    for (int r = 0; r < s->tile; r++)
        for (int c = 0; c < dhp; c++)
            dst[r * dhp + c] = operand(s, (r < rows_valid && c < s->Dh) ? src[r * ld + c] : 0.0f);
}

/* C[M][N] = alpha A B (+ C), A(m,k) = at ? A[k][m] : A[m][k], B(k,n) = bt ? B[n][k] : B[k][n];
 * every matrix dense with its own row length (lda, ldb, ldc). */
static void tile_mma(float *C, int ldc, const float *A, int lda, int at, const float *B, int ldb,
                     int bt, int M, int N, int K, float alpha, int accumulate)
{
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            float acc = 0.0f;
            for (int k = 0; k < K; k++)
                acc = fmaf(at ? A[k * lda + m] : A[m * lda + k], bt ? B[n * ldb + k] : B[k * ldb + n], acc);
            C[m * ldc + n] = accumulate ? C[m * ldc + n] + alpha * acc : alpha * acc;
        }
}

static void to_operand(const Shape *s, float *dst, const float *src, int n)
{
    for (int i = 0; i < n; i++) dst[i] = operand(s, src[i]);
}

/* Threads per row in the kernels: the block's 128 threads over the tile's rows. */
static int parts_for(int tile) { return FLASH_THREADS / tile; }

/* The kernels' warp-shuffle butterfly over the parts of a row (x[] is overwritten); every part
 * ends with the same value, part 0's is returned. */
static float combine_parts(float *x, int parts, int is_max)
{
    float y[MAX_PARTS];
    for (int o = 1; o < parts; o <<= 1) {
        for (int p = 0; p < parts; p++) y[p] = is_max ? fmaxf(x[p], x[p ^ o]) : x[p] + x[p ^ o];
        memcpy(x, y, sizeof(float) * parts);
    }
    return x[0];
}

/* One tile of one row as the forward kernel's threads do it: parts, shuffles, commit. */
static float online_softmax_row(float *srow, int keys, int n, float *m, float *l, int parts)
{
    float part_max[MAX_PARTS] = {0}, part_sum[MAX_PARTS] = {0};
    for (int p = 0; p < parts; p++) part_max[p] = flash_part_max(srow, p, parts, keys);
    const float m_new = flash_row_new_max(*m, combine_parts(part_max, parts, 1));
    for (int p = 0; p < parts; p++) part_sum[p] = flash_part_exp(srow, p, parts, keys, n, m_new);
    return flash_row_commit(m, l, m_new, combine_parts(part_sum, parts, 0));
}

static void flash_forward(const Shape *s, float *out, float *lse, const float *q, const float *k,
                          const float *v)
{
    const int T = s->tile, dhp = round_up(s->Dh, MMA_EDGE), C = s->H * s->Dh;
    const float scale = 1.0f / sqrtf((float)s->Dh);
    float *Qs = malloc(sizeof(float) * T * dhp), *Ks = malloc(sizeof(float) * T * dhp);
    float *Vs = malloc(sizeof(float) * T * dhp), *S = malloc(sizeof(float) * T * T);
    float *P = malloc(sizeof(float) * T * T), *O = malloc(sizeof(float) * T * dhp);
    float *m = malloc(sizeof(float) * T), *l = malloc(sizeof(float) * T);
    float *rescale = malloc(sizeof(float) * T);
    for (int bh = 0; bh < s->B * s->H; bh++) {
        const int b = bh / s->H, h = bh % s->H;
        for (int row0 = 0; row0 < s->Tq; row0 += T) {
            const int rows = s->Tq - row0 < T ? s->Tq - row0 : T;
            load_tile(s, Qs, q + ((long)b * s->Tq + row0) * s->ldq + h * s->Dh, s->ldq, rows, dhp);
            memset(O, 0, sizeof(float) * T * dhp);
            for (int r = 0; r < T; r++) flash_row_init(&m[r], &l[r]);
            for (int key0 = 0; key0 < s->Tk; key0 += T) {
                const int keys = s->Tk - key0 < T ? s->Tk - key0 : T;
                const long kv = ((long)b * s->Tk + key0) * s->ldkv + h * s->Dh;
                load_tile(s, Ks, k + kv, s->ldkv, keys, dhp);
                load_tile(s, Vs, v + kv, s->ldkv, keys, dhp);
                tile_mma(S, T, Qs, dhp, 0, Ks, dhp, 1, T, T, dhp, scale, 0);
                for (int r = 0; r < T; r++) {
                    rescale[r] = online_softmax_row(S + r * T, keys, T, &m[r], &l[r], parts_for(T));
                    to_operand(s, P + r * T, S + r * T, T);
                }
                for (int i = 0; i < T * dhp; i++) O[i] *= rescale[i / dhp];
                tile_mma(O, dhp, P, T, 0, Vs, dhp, 0, T, dhp, T, 1.0f, 1);
            }
            for (int r = 0; r < rows; r++) {
                lse[(long)bh * s->Tq + row0 + r] = flash_row_lse(m[r], l[r]);
                const float inv = flash_row_inv_sum(l[r]);
                for (int c = 0; c < s->Dh; c++)
                    out[((long)b * s->Tq + row0 + r) * C + h * s->Dh + c] = O[r * dhp + c] * inv;
            }
        }
    }
    free(Qs), free(Ks), free(Vs), free(S), free(P), free(O), free(m), free(l), free(rescale);
}

/* S = scale Q K^T, dP = dO V^T, then in place P and dS; P_op / dS_op: their operand copies. */
static void scores_and_dscores(const Shape *s, float *S, float *dP, float *P_op, float *dS_op,
                               const float *Qs, const float *dOs, const float *Ks,
                               const float *Vs, const float *lse, const float *D, int rows,
                               int keys, int dhp, float scale)
{
    const int T = s->tile;
    tile_mma(S, T, Qs, dhp, 0, Ks, dhp, 1, T, T, dhp, scale, 0);
    tile_mma(dP, T, dOs, dhp, 0, Vs, dhp, 1, T, T, dhp, 1.0f, 0);
    const int parts = parts_for(T);
    for (int r = 0; r < T; r++) {
        for (int p = 0; p < parts; p++) {
            flash_part_recompute_p(S + r * T, lse[r], r < rows, p, parts, keys, T);
            flash_part_dscores(dP + r * T, S + r * T, D[r], p, parts, T);
        }
        to_operand(s, P_op + r * T, S + r * T, T);
        to_operand(s, dS_op + r * T, dP + r * T, T);
    }
}

static void row_stats(float *lse_s, float *D_s, const float *lse, const float *D, long base,
                      int rows, int T)
{
    for (int r = 0; r < T; r++) {
        lse_s[r] = r < rows ? lse[base + r] : 0.0f;
        D_s[r] = r < rows ? D[base + r] : 0.0f;
    }
}

static void flash_backward(const Shape *s, float *dq, float *dk, float *dv, const float *dout,
                           const float *q, const float *k, const float *v, const float *out,
                           const float *lse)
{
    const int T = s->tile, dhp = round_up(s->Dh, MMA_EDGE), C = s->H * s->Dh;
    const float scale = 1.0f / sqrtf((float)s->Dh);
    const long nrows = (long)s->B * s->H * s->Tq;
    float *D = malloc(sizeof(float) * nrows);
    for (int b = 0; b < s->B; b++)  /* pass 1: D = rowsum(dO O) */
        for (int t = 0; t < s->Tq; t++)
            for (int h = 0; h < s->H; h++) {
                const long off = ((long)b * s->Tq + t) * C + h * s->Dh;
                float d = 0.0f;
                for (int c = 0; c < s->Dh; c++) d += dout[off + c] * out[off + c];
                D[((long)b * s->H + h) * s->Tq + t] = d;
            }
    float *Qs = malloc(sizeof(float) * T * dhp), *dOs = malloc(sizeof(float) * T * dhp);
    float *Ks = malloc(sizeof(float) * T * dhp), *Vs = malloc(sizeof(float) * T * dhp);
    float *S = malloc(sizeof(float) * T * T), *dP = malloc(sizeof(float) * T * T);
    float *P_op = malloc(sizeof(float) * T * T), *dS_op = malloc(sizeof(float) * T * T);
    float *acc1 = malloc(sizeof(float) * T * dhp), *acc2 = malloc(sizeof(float) * T * dhp);
    float *lse_s = malloc(sizeof(float) * T), *D_s = malloc(sizeof(float) * T);
    for (int bh = 0; bh < s->B * s->H; bh++) {
        const int b = bh / s->H, h = bh % s->H;
        /* pass 2: dK, dV of each key tile, accumulated over every query tile */
        for (int key0 = 0; key0 < s->Tk; key0 += T) {
            const int keys = s->Tk - key0 < T ? s->Tk - key0 : T;
            const long kv = ((long)b * s->Tk + key0) * s->ldkv + h * s->Dh;
            load_tile(s, Ks, k + kv, s->ldkv, keys, dhp);
            load_tile(s, Vs, v + kv, s->ldkv, keys, dhp);
            memset(acc1, 0, sizeof(float) * T * dhp);  /* dK */
            memset(acc2, 0, sizeof(float) * T * dhp);  /* dV */
            for (int row0 = 0; row0 < s->Tq; row0 += T) {
                const int rows = s->Tq - row0 < T ? s->Tq - row0 : T;
                load_tile(s, Qs, q + ((long)b * s->Tq + row0) * s->ldq + h * s->Dh, s->ldq, rows, dhp);
                load_tile(s, dOs, dout + ((long)b * s->Tq + row0) * C + h * s->Dh, C, rows, dhp);
                row_stats(lse_s, D_s, lse, D, (long)bh * s->Tq + row0, rows, T);
                scores_and_dscores(s, S, dP, P_op, dS_op, Qs, dOs, Ks, Vs, lse_s, D_s, rows, keys,
                                   dhp, scale);
                tile_mma(acc2, dhp, P_op, T, 1, dOs, dhp, 0, T, dhp, T, 1.0f, 1);
                tile_mma(acc1, dhp, dS_op, T, 1, Qs, dhp, 0, T, dhp, T, scale, 1);
            }
            for (int r = 0; r < keys; r++)
                for (int c = 0; c < s->Dh; c++) {
                    dk[kv + (long)r * s->ldkv + c] = acc1[r * dhp + c];
                    dv[kv + (long)r * s->ldkv + c] = acc2[r * dhp + c];
                }
        }
        /* pass 3: dQ of each query tile over every key tile */
        for (int row0 = 0; row0 < s->Tq; row0 += T) {
            const int rows = s->Tq - row0 < T ? s->Tq - row0 : T;
            const long qo = ((long)b * s->Tq + row0) * s->ldq + h * s->Dh;
            load_tile(s, Qs, q + qo, s->ldq, rows, dhp);
            load_tile(s, dOs, dout + ((long)b * s->Tq + row0) * C + h * s->Dh, C, rows, dhp);
            row_stats(lse_s, D_s, lse, D, (long)bh * s->Tq + row0, rows, T);
            memset(acc1, 0, sizeof(float) * T * dhp);
            for (int key0 = 0; key0 < s->Tk; key0 += T) {
                const int keys = s->Tk - key0 < T ? s->Tk - key0 : T;
                const long kv = ((long)b * s->Tk + key0) * s->ldkv + h * s->Dh;
                load_tile(s, Ks, k + kv, s->ldkv, keys, dhp);
                load_tile(s, Vs, v + kv, s->ldkv, keys, dhp);
                scores_and_dscores(s, S, dP, P_op, dS_op, Qs, dOs, Ks, Vs, lse_s, D_s, rows, keys,
                                   dhp, scale);
                tile_mma(acc1, dhp, dS_op, T, 0, Ks, dhp, 0, T, dhp, T, scale, 1);
            }
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < s->Dh; c++) dq[qo + (long)r * s->ldq + c] = acc1[r * dhp + c];
        }
    }
    free(D), free(Qs), free(dOs), free(Ks), free(Vs), free(S), free(dP), free(P_op);
    free(dS_op), free(acc1), free(acc2), free(lse_s), free(D_s);
}

/* Worst |got - want| / (atol + rtol |want|) over the elements picked by mask (NULL = all);
 * > 1 fails. NaN counts as a failure. */
static void compare(const char *what, const float *got, const float *want, size_t n, double rtol,
                    double atol, const unsigned char *mask)
{
    double worst = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        if (mask && !mask[i]) continue;
        double e = fabs((double)got[i] - want[i]) / (atol + rtol * fabs((double)want[i]));
        if (isnan(e) || isnan((double)got[i])) e = INFINITY;
        if (e > worst) worst = e, at = i;
    }
    TEST_CHECK(worst <= 1.0, "%s: element %zu got %.9g want %.9g (rtol %g atol %g)", what, at,
               got[at], want[at], rtol, atol);
}

/* One shape: packed = self-attention on one [B, T, 3C] buffer (Tq = Tk), else q [B, Tq, C + 5] (padded
 * rows) and kv [B, Tk, 2C]. Tolerances: fp32 rtol 1e-5 (out) / 1e-4 (gradients, sums over up
 * to Tq terms); bf16 2e-2 relative to the largest magnitude of each output. */
static void flash_case(int B, int H, int Tq, int Tk, int Dh, int packed, int tile, int bf16)
{
    const AliceBackend *cpu = backend_cpu();
    const int C = H * Dh;
    Shape s = {B, H, Tq, Tk, Dh, packed ? 3 * C : C + 5, packed ? 3 * C : 2 * C, tile, bf16};
    if (!s.tile) s.tile = tile_for(round_up(Dh, MMA_EDGE));
    const size_t nq = (size_t)B * Tq * s.ldq, nkv = packed ? nq : (size_t)B * Tk * s.ldkv;
    const size_t nout = (size_t)B * Tq * C, nrows = (size_t)B * H * Tq;
    float *qbuf = test_randn(11, (uint32_t)(Tq * 100 + Dh), nq, g_amplitude);
    float *kvbuf = packed ? qbuf : test_randn(12, (uint32_t)(Tk * 100 + Dh), nkv, g_amplitude);
    const float *q = qbuf, *k = kvbuf + (packed ? C : 0), *v = kvbuf + (packed ? 2 * C : C);
    float *dout = test_randn(13, (uint32_t)Tq, nout, 1.0f);
    float *out_ref = test_filled(nout, NAN), *probs = test_filled(nrows * Tk, NAN);
    float *out = test_filled(nout, NAN), *lse = test_filled(nrows, NAN);
    float *dq_ref = test_filled(nq, 0.0f), *dkv_ref = packed ? dq_ref : test_filled(nkv, 0.0f);
    float *dq = test_filled(nq, 0.0f), *dkv = packed ? dq : test_filled(nkv, 0.0f);
    /* every gradient element the op owns starts as NaN, so an unwritten one fails */
    unsigned char *qmask = calloc(nq, 1), *kvmask = packed ? qmask : calloc(nkv, 1);
    for (int r = 0; r < B * Tq; r++)
        for (int c = 0; c < (packed ? 3 * C : C); c++) qmask[(size_t)r * s.ldq + c] = 1;
    if (!packed)
        for (size_t i = 0; i < nkv; i++) kvmask[i] = 1;
    for (size_t i = 0; i < nq; i++) if (qmask[i]) dq[i] = NAN;
    if (!packed)
        for (size_t i = 0; i < nkv; i++) dkv[i] = NAN;

    cpu->attention_fwd(out_ref, probs, q, k, v, B, H, Tq, Tk, Dh, s.ldq, s.ldkv);
    cpu->attention_bwd(dq_ref, dkv_ref + (packed ? C : 0), dkv_ref + (packed ? 2 * C : C), dout,
                       q, k, v, out_ref, probs, B, H, Tq, Tk, Dh, s.ldq, s.ldkv);
    flash_forward(&s, out, lse, q, k, v);
    flash_backward(&s, dq, dkv + (packed ? C : 0), dkv + (packed ? 2 * C : C), dout, q, k, v, out,
                   lse);

    /* independent lse: double-precision logsumexp of the scaled scores */
    float *lse_ref = malloc(nrows * sizeof(float));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < Tq; i++) {
                double mx = -INFINITY, sum = 0.0;
                double *sc = malloc((size_t)Tk * sizeof(double));
                for (int j = 0; j < Tk; j++) {
                    double d = 0.0;
                    for (int e = 0; e < Dh; e++)
                        d += (double)q[((long)b * Tq + i) * s.ldq + h * Dh + e] *
                             k[((long)b * Tk + j) * s.ldkv + h * Dh + e];
                    sc[j] = d / sqrt((double)Dh);
                    if (sc[j] > mx) mx = sc[j];
                }
                for (int j = 0; j < Tk; j++) sum += exp(sc[j] - mx);
                lse_ref[((long)b * H + h) * Tq + i] = (float)(mx + log(sum));
                free(sc);
            }

    char what[160];
    const double r_out = bf16 ? 2e-2 : 1e-5, r_grad = bf16 ? 2e-2 : 1e-4;
    double max_out = 0.0, max_dq = 0.0, max_dkv = 0.0;
    for (size_t i = 0; i < nout; i++) max_out = fmax(max_out, fabs(out_ref[i]));
    for (size_t i = 0; i < nq; i++) if (qmask[i]) max_dq = fmax(max_dq, fabs(dq_ref[i]));
    for (size_t i = 0; i < nkv; i++) if (kvmask[i]) max_dkv = fmax(max_dkv, fabs(dkv_ref[i]));
    /* fp32: elementwise relative with a floor well below the data; bf16: against the largest
     * magnitude (bf16 keeps 8 bits: relative errors of small elements are meaningless) */
    const double a_out = bf16 ? r_out * max_out : 1e-6 * max_out;
    const double a_dq = bf16 ? r_grad * max_dq : 1e-5 * max_dq;
    const double a_dkv = bf16 ? r_grad * max_dkv : 1e-5 * max_dkv;
    snprintf(what, sizeof what, "%s B%d H%d Tq%d Tk%d Dh%d %s tile%d: out", bf16 ? "bf16" : "fp32",
             B, H, Tq, Tk, Dh, packed ? "packed" : "cross", s.tile);
    compare(what, out, out_ref, nout, r_out, a_out, NULL);
    snprintf(what, sizeof what, "%s B%d H%d Tq%d Tk%d Dh%d %s tile%d: lse", bf16 ? "bf16" : "fp32",
             B, H, Tq, Tk, Dh, packed ? "packed" : "cross", s.tile);
    compare(what, lse, lse_ref, nrows, bf16 ? 1e-2 : 1e-5, bf16 ? 2e-2 : 1e-5, NULL);
    snprintf(what, sizeof what, "%s B%d H%d Tq%d Tk%d Dh%d %s tile%d: d%s", bf16 ? "bf16" : "fp32",
             B, H, Tq, Tk, Dh, packed ? "packed" : "cross", s.tile, packed ? "qkv" : "q");
    compare(what, dq, dq_ref, nq, r_grad, a_dq, qmask);
    if (!packed) {
        snprintf(what, sizeof what, "%s B%d H%d Tq%d Tk%d Dh%d cross tile%d: dkv",
                 bf16 ? "bf16" : "fp32", B, H, Tq, Tk, Dh, s.tile);
        compare(what, dkv, dkv_ref, nkv, r_grad, a_dkv, kvmask);
    }
    /* the padding columns of q's rows belong to nobody: left as they were */
    if (!packed)
        for (size_t i = 0; i < nq; i++)
            if (!qmask[i] && dq[i] != 0.0f) {
                TEST_CHECK(0, "dq padding element %zu was written (%g)", i, dq[i]);
                break;
            }
    free(qbuf), free(dout), free(out_ref), free(probs), free(out), free(lse), free(lse_ref);
    free(dq_ref), free(dq), free(qmask);
    if (!packed) free(kvbuf), free(dkv_ref), free(dkv), free(kvmask);
}

/* The kernels' own tile sizes (64 for Dh <= 64), T not a multiple of the tile, Tq != Tk. */
static int test_flash_fp32(void)
{
    flash_case(2, 3, 70, 70, 8, 1, 0, 0);    /* packed qkv, Dh 8 padded to 16, 2 tiles */
    flash_case(2, 2, 37, 100, 24, 0, 0, 0);  /* CASA-like Tq != Tk, tiny config head width */
    flash_case(1, 4, 144, 144, 32, 1, 0, 0); /* decoder head width, masked-view token count */
    flash_case(1, 2, 130, 65, 64, 0, 0, 0);  /* ViT-B head width, Tk just past one tile */
    return 0;
}

/* Small tiles: many tiles per row and column, so rescaling across tiles is exercised hard;
 * the runtime-Dh path's 32-row tiles with a head width off the instantiated list. */
static int test_flash_many_tiles(void)
{
    flash_case(2, 2, 45, 53, 16, 0, 16, 0);
    flash_case(1, 2, 70, 70, 40, 1, 32, 0);
    /* large logits (inputs x4: scores up to ~100): exp would overflow without the running max,
     * and the maximum moves between tiles */
    g_amplitude = 4.0f;
    flash_case(1, 2, 50, 90, 16, 0, 16, 0);
    g_amplitude = 1.0f;
    return 0;
}

static int test_flash_bf16(void)
{
    flash_case(2, 3, 70, 70, 8, 1, 0, 1);
    flash_case(2, 2, 37, 100, 24, 0, 0, 1);
    flash_case(1, 2, 130, 130, 64, 1, 0, 1);
    return 0;
}

/* The online update itself on a hand-computed row: two tiles [1, 3] and [2, 5] (one padded
 * key). After tile 1: m = 3, l = e^-2 + 1. Tile 2: m' = 5, rescale e^-2, l' = (e^-2 + 1) e^-2
 * + e^-3 + 1, p = [e^-3, 1, 0]; lse = 5 + log l' = log(e^1 + e^3 + e^2 + e^5). */
static int test_online_update_by_hand(void)
{
    float m, l;
    flash_row_init(&m, &l);
    float t1[2] = {1.0f, 3.0f};
    float r1 = flash_row_update(t1, 2, 2, &m, &l);
    TEST_CLOSE(r1, 0.0, 0, 0, "first tile rescale");
    TEST_CLOSE(m, 3.0, 0, 0, "m after tile 1");
    TEST_CLOSE(l, exp(-2.0) + 1.0, 1e-6, 0, "l after tile 1");
    TEST_CLOSE(t1[0], exp(-2.0), 1e-6, 0, "p[0] after tile 1");
    float t2[3] = {2.0f, 5.0f, 123.0f};
    float r2 = flash_row_update(t2, 2, 3, &m, &l);
    TEST_CLOSE(r2, exp(-2.0), 1e-6, 0, "rescale of tile 2");
    TEST_CLOSE(t2[0], exp(-3.0), 1e-6, 0, "p[0] of tile 2");
    TEST_CLOSE(t2[1], 1.0, 1e-6, 0, "p[1] of tile 2");
    TEST_CLOSE(t2[2], 0.0, 0, 0, "padded key");
    TEST_CLOSE(flash_row_lse(m, l), log(exp(1.0) + exp(3.0) + exp(2.0) + exp(5.0)), 1e-6, 0, "lse");
    /* the same two tiles split over 2 parts (columns 0, 2 and 1): same state, same p */
    float pm, pl;
    flash_row_init(&pm, &pl);
    float u1[2] = {1.0f, 3.0f}, u2[3] = {2.0f, 5.0f, 123.0f};
    online_softmax_row(u1, 2, 2, &pm, &pl, 2);
    float r2p = online_softmax_row(u2, 2, 3, &pm, &pl, 2);
    TEST_CLOSE(r2p, r2, 0, 0, "rescale with 2 parts");
    TEST_CLOSE(pm, m, 0, 0, "m with 2 parts");
    TEST_CLOSE(pl, l, 1e-7, 0, "l with 2 parts");
    for (int j = 0; j < 3; j++) TEST_CLOSE(u2[j], t2[j], 0, 0, "p with 2 parts");
    float s[3] = {1.0f, 2.0f, 9.0f};
    flash_part_recompute_p(s, 3.0f, 1, 0, 2, 2, 3);
    flash_part_recompute_p(s, 3.0f, 1, 1, 2, 2, 3);
    TEST_CLOSE(s[0], exp(-2.0), 1e-6, 0, "recomputed p");
    TEST_CLOSE(s[1], exp(-1.0), 1e-6, 0, "recomputed p, part 1");
    TEST_CLOSE(s[2], 0.0, 0, 0, "recomputed padded key");
    float pad[2] = {4.0f, 4.0f};
    flash_part_recompute_p(pad, 3.0f, 0, 0, 1, 2, 2);
    TEST_CLOSE(pad[0] + pad[1], 0.0, 0, 0, "padding row: p = 0");
    float dp[2] = {0.5f, -1.0f}, p[2] = {0.25f, 0.75f};
    flash_part_dscores(dp, p, 0.1f, 0, 1, 2);
    TEST_CLOSE(dp[0], 0.25 * 0.4, 1e-6, 0, "dS[0]");
    TEST_CLOSE(dp[1], 0.75 * -1.1, 1e-6, 0, "dS[1]");
    return 0;
}

int main(void)
{
    TEST_RUN(test_online_update_by_hand);
    TEST_RUN(test_flash_fp32);
    TEST_RUN(test_flash_many_tiles);
    TEST_RUN(test_flash_bf16);
    return test_finish();
}
