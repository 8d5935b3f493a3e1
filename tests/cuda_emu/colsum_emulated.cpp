/* The one-launch column sums of the CUDA backend, run on the host through emu_cuda.h (see
 * test_colsum_emulated.sh, which cuts the kernel, its launcher, LayerNorm's two-output functor
 * and the linear backward's dy rounding out of cuda/ into colsum_kernels.inc).
 *
 * Checked for rows 0, 1, 7, 128, 1000, 4607, 4608 and 70100 (chunks of rows: 1, 8, 36 and 512,
 * the most; 4607 and 70100 end in a ragged chunk of 127 and 93 rows) and cols 1, 31, 33, 768
 * (one column tile, a ragged second tile, 24 tiles):
 *  - every sum equals, BIT FOR BIT, the former two-launch algorithm (kept below, written
 *    plainly on the host: per chunk 8 strided row lanes summed in order, then the chunks in
 *    order, added to the target), and the double-precision column sum within the rounding
 *    bound of that summation tree;
 *  - targets accumulate, and calls in a row work: the arrival counters are all zero after
 *    every call (the last block of each tile resets its counter);
 *  - the partials are poisoned (NaN) before every call, so a finish reading a partial that
 *    was not written in this call fails; the blocks run in shuffled orders, so the block that
 *    finishes a tile is not always the last one launched;
 *  - the fused bf16 copy of dy equals bf16_from_float (src/ops/bf16.h) of each element bit for
 *    bit, and nothing is written past its end;
 *  - the two-output LayerNorm sums (dgamma, dbeta) equal the one-output sums bit for bit;
 *  - the linear backward's dy rounding (cuda_blas.cu): with db, one column sum writes the bf16
 *    copy into slot SCRATCH_BF16_A; without db, or when dy were a weight with a bf16 copy,
 *    today's separate rounding / the weight copy, and db the plain column sum. */
#include "emu_cuda.h"
#include "cuda/cuda_bf16.cuh"

extern "C" {
#include "ops/bf16.h"
}

/* The arrival counters, the partials' poison, CHECK, seeded draws, the bit and rounding-bound
 * comparisons (shared with linear_gelu_bwd_emulated.cpp). */
#include "emu_colsum_support.h"

/* ---- what the cut sections call outside themselves (beside cuda_colsum_arrivals) ---- */

/* cuda_weight_copy.cu: the bf16 copy when the operand lies in a weight buffer; the test can
 * pretend dy does. */
static const __nv_bfloat16 *g_weight_copy;
static const float *g_weight_base;
const __nv_bfloat16 *cuda_weight_bf16(const float *p, size_t)
{
    return p == g_weight_base ? g_weight_copy : nullptr;
}

/* cuda_blas.cu's bf16_operand with cuda_round_to_bf16 (every element rounded to nearest even). */
static int g_separate_roundings;
static const __nv_bfloat16 *bf16_operand(CudaScratchSlot slot, const float *x, size_t n)
{
    const __nv_bfloat16 *weights = cuda_weight_bf16(x, n);
    if (weights) return weights;
    __nv_bfloat16 *out = (__nv_bfloat16 *)cuda_scratch(slot, n * sizeof(__nv_bfloat16) + 256);
    for (size_t i = 0; i < n; i++) out[i] = __float2bfloat16_rn(x[i]);
    g_separate_roundings++;
    return out;
}

#include "colsum_kernels.inc"

/* ---- the reference: the former partial + finish kernels, written plainly ---- */

template <class G> static void two_launch_colsum(float *target, long rows, int cols, G g)
{
    long chunks = (rows + 127) / 128;
    if (chunks < 1) chunks = 1;
    if (chunks > 512) chunks = 512;
    const long per_chunk = (rows + chunks - 1) / chunks;
    chunks = rows > 0 ? (rows + per_chunk - 1) / per_chunk : 1;
    std::vector<float> partial((size_t)chunks * cols);
    for (long k = 0; k < chunks; k++) {
        const long r0 = k * per_chunk, r1 = std::min(rows, r0 + per_chunk);
        for (int c = 0; c < cols; c++) {
            float lane[8];
            for (int y = 0; y < 8; y++) {
                float acc = 0.0f;
                for (long r = r0 + y; r < r1; r += 8) acc += g(r, c);
                lane[y] = acc;
            }
            float t = 0.0f;
            for (int y = 0; y < 8; y++) t += lane[y];
            partial[(size_t)k * cols + c] = t;
        }
    }
    for (int c = 0; c < cols; c++) {
        float t = 0.0f;
        for (long k = 0; k < chunks; k++) t += partial[(size_t)k * cols + c];
        target[c] += t;
    }
}

/* ---- checks ---- */

static void counters_zero(const char *what, long rows, int cols)
{
    unsigned left = 0;
    const long at = arrivals_left_nonzero(&left);
    CHECK(at < 0, "%s rows %ld cols %d: arrival counter %ld left at %u", what, rows, cols, at,
          left);
}

static EmuUniform uniform(20240607u);

/* all_launches: 1, 2 and 3 (and for small cases the one-output dgamma launch); otherwise 1
 * alone (emulation time grows with the blocks launched). */
static void column_sum_case(long rows, int cols, unsigned order_seed, bool all_launches)
{
    emu_block_order_seed = order_seed;
    const size_t n = (size_t)rows * cols;
    const std::vector<float> dy = uniform(n, -1.0f, 1.0f), x = uniform(n, -2.0f, 3.0f);
    const std::vector<float> mean = uniform((size_t)rows, 0.0f, 1.0f);
    const std::vector<float> rstd = uniform((size_t)rows, 0.5f, 2.0f);
    const MatrixElement element{dy.data(), cols};
    const DyTimesXhat dgamma_term{dy.data(), x.data(), mean.data(), rstd.data(), cols};

    /* 1: the bias-style sum, accumulating into random gradients. */
    const std::vector<float> start = uniform((size_t)cols, -0.5f, 0.5f);
    std::vector<float> got = start, want = start;
    poison_partials();
    colsum_accumulate(got.data(), rows, cols, element);
    two_launch_colsum(want.data(), rows, cols, element);
    same_bits(got, want, "MatrixElement", rows, cols);
    near_double(got, start, rows, cols, element, "MatrixElement");
    counters_zero("MatrixElement", rows, cols);

    if (!all_launches) return;
    /* 2: again, into the same targets, with the fused bf16 copy (the linear backward's case):
     * the counters the first call left must serve this one. */
    const size_t guard = 64;
    const uint16_t sentinel = 0xabcd;
    std::vector<__nv_bfloat16> copy(n + guard);
    for (auto &b : copy) b.bits = sentinel;
    poison_partials();
    colsum_accumulate(got.data(), rows, cols,
                      MatrixElementRoundedCopy{dy.data(), cols, copy.data()});
    two_launch_colsum(want.data(), rows, cols, element);
    same_bits(got, want, "MatrixElementRoundedCopy (second call)", rows, cols);
    counters_zero("MatrixElementRoundedCopy", rows, cols);
    size_t wrong = 0, past = 0;
    for (size_t i = 0; i < n; i++) wrong += copy[i].bits != bf16_from_float(dy[i]);
    for (size_t i = n; i < n + guard; i++) past += copy[i].bits != sentinel;
    CHECK(wrong == 0 && past == 0, "bf16 copy rows %ld cols %d: %zu elements differ from "
          "bf16_from_float, %zu written past the end", rows, cols, wrong, past);

    /* 3: LayerNorm's dgamma and dbeta in one launch = the two one-output sums. */
    const std::vector<float> g0 = uniform((size_t)cols, -0.5f, 0.5f);
    const std::vector<float> b0 = uniform((size_t)cols, -0.5f, 0.5f);
    std::vector<float> dgamma = g0, dbeta = b0, dgamma_want = g0, dbeta_want = b0;
    poison_partials();
    colsum2_accumulate(dgamma.data(), dbeta.data(), rows, cols,
                       DyTimesXhatAndDy{dgamma_term, element});
    two_launch_colsum(dgamma_want.data(), rows, cols, dgamma_term);
    two_launch_colsum(dbeta_want.data(), rows, cols, element);
    same_bits(dgamma, dgamma_want, "LayerNorm dgamma (two outputs)", rows, cols);
    same_bits(dbeta, dbeta_want, "LayerNorm dbeta (two outputs)", rows, cols);
    near_double(dgamma, g0, rows, cols, dgamma_term, "LayerNorm dgamma");
    counters_zero("DyTimesXhatAndDy", rows, cols);
    if (n <= 40000) {  /* the one-output dgamma launch itself (smaller cases: emulation time) */
        std::vector<float> alone = g0;
        poison_partials();
        colsum_accumulate(alone.data(), rows, cols, dgamma_term);
        same_bits(alone, dgamma, "LayerNorm dgamma one output vs two", rows, cols);
        counters_zero("DyTimesXhat", rows, cols);
    }
}

/* cuda_blas.cu's dy_bf16_and_bias_grad: which path, where the copy goes, what db gets. */
static void linear_dy_case(int rows, int out)
{
    emu_block_order_seed = 7;
    const size_t n = (size_t)rows * out;
    const std::vector<float> dy = uniform(n, -3.0f, 3.0f), db0 = uniform((size_t)out, -1, 1);
    const MatrixElement element{dy.data(), out};
    std::vector<float> db = db0, want = db0;
    two_launch_colsum(want.data(), rows, out, element);

    /* With db: one column sum writes the copy into slot A; no separate rounding. */
    __nv_bfloat16 *slot = (__nv_bfloat16 *)cuda_scratch(SCRATCH_BF16_A, 2 * n + 256);
    std::fill(slot, slot + n + 128, __nv_bfloat16{0xabcd});
    g_separate_roundings = 0;
    poison_partials();
    const __nv_bfloat16 *dy16 = dy_bf16_and_bias_grad(db.data(), dy.data(), rows, out);
    slot = (__nv_bfloat16 *)cuda_scratch(SCRATCH_BF16_A, 0);
    CHECK(dy16 == slot && g_separate_roundings == 0, "linear dy %dx%d with db: the copy must "
          "come from the column sum into SCRATCH_BF16_A", rows, out);
    size_t wrong = 0, past = 0;
    for (size_t i = 0; i < n; i++) wrong += dy16[i].bits != bf16_from_float(dy[i]);
    for (size_t i = n; i < n + 128; i++) past += slot[i].bits != 0xabcd;
    CHECK(wrong == 0 && past == 0, "linear dy %dx%d with db: %zu wrong, %zu past the end", rows,
          out, wrong, past);
    same_bits(db, want, "linear db (fused)", rows, out);

    /* Without db: today's separate rounding, the same bits. */
    const std::vector<__nv_bfloat16> fused(dy16, dy16 + n);
    const __nv_bfloat16 *plain = dy_bf16_and_bias_grad(nullptr, dy.data(), rows, out);
    CHECK(g_separate_roundings == 1, "linear dy %dx%d without db: one separate rounding", rows,
          out);
    CHECK(std::memcmp(plain, fused.data(), n * sizeof(__nv_bfloat16)) == 0,
          "linear dy %dx%d: fused copy differs from the separate rounding", rows, out);

    /* dy inside a weight buffer (never in the model, kept as bf16_operand behaves): its weight
     * copy, and db the plain column sum. */
    std::vector<__nv_bfloat16> weight_copy(n, __nv_bfloat16{0x1234});
    g_weight_base = dy.data();
    g_weight_copy = weight_copy.data();
    poison_partials();
    const __nv_bfloat16 *w16 = dy_bf16_and_bias_grad(db.data(), dy.data(), rows, out);
    two_launch_colsum(want.data(), rows, out, element);
    CHECK(w16 == weight_copy.data(), "linear dy %dx%d in a weight buffer: its copy", rows, out);
    same_bits(db, want, "linear db (dy a weight)", rows, out);
    g_weight_base = nullptr;
    g_weight_copy = nullptr;
    counters_zero("linear dy", rows, out);
}

int main()
{
    const long rows_list[] = {0, 1, 7, 128, 1000, 4607, 4608, 70100};
    const int cols_list[] = {1, 31, 33, 768};
    g_partial_floats = (size_t)2 * 512 * 768;
    /* Every pair, except where the emulation's time (about 4 ms a block of 256 threads) would
     * grow past the test's budget: 512 chunks over one and two column tiles, the ragged 36
     * chunks of 4607 rows over one and two; the two largest cases (1000+ blocks a launch) run
     * the bias-style sum alone. */
    unsigned seed = 0;
    for (long rows : rows_list)
        for (int cols : cols_list) {
            if ((rows > 5000 || rows == 4607) && (cols == 31 || cols == 768)) continue;
            const long blocks = ((cols + 31) / 32) * std::min(512L, (rows + 127) / 128);
            seed++;
            column_sum_case(rows, cols, seed % 3 == 0 ? 0u : seed, blocks < 800);
        }
    linear_dy_case(37, 45);
    linear_dy_case(300, 768);
    if (fails) {
        printf("%d check(s) failed\n", fails);
        return 1;
    }
    printf("column sums: one launch equals the two-launch sums bit for bit (%zu column sizes x "
           "%zu row counts), fused bf16 copy exact, counters reset\n",
           sizeof cols_list / sizeof *cols_list, sizeof rows_list / sizeof *rows_list);
    return 0;
}
