/* The GELU-fused fc1 bias-gradient pass of the CUDA backend (cuda/cuda_blas.cu
 * GeluBwdRoundedCopy through gelu_dh_bf16_and_bias_grad and the real colsum_kernel), run on the
 * host through emu_cuda.h (see test_linear_gelu_bwd_emulated.sh, which cuts the sources into
 * linear_gelu_bwd_kernels.inc).
 *
 * The reference is the unfused GPU sequence, emulated the same way: dh materialised with
 * gelu_bwd_kernel's formula (dy * gelu_erf_slope(widen(h)), ops/cpu_math.h, the function both
 * backends run), then the column sum with MatrixElementRoundedCopy (cuda_blas.cu's
 * dy_bf16_and_bias_grad) over that dh. For rows 0, 1, 7, 130, 300, 4607 and cols 1, 33, 45, 768
 * (one or several column tiles, ragged ones; 1 to 36 chunks of rows, a ragged last chunk):
 *  - dh's bf16 copy equals bf16_from_float(dy * gelu_erf_slope(h)) bit for bit, in slot
 *    SCRATCH_BF16_A (where the GEMMs read it), and nothing is written past rows * cols;
 *  - db (accumulating onto earlier values) equals the unfused column sum bit for bit, and the
 *    double-precision sum of the materialised dh within the summation tree's rounding bound;
 *  - the partials are poisoned (NaN) before every call and the blocks run in shuffled orders;
 *    the arrival counters are zero after every call;
 *  - all of it twice: gelu'(h) evaluated by the formula (no table: a graph recording before the
 *    tables exist) and looked up in the slope table of every bf16 value (what the device fills,
 *    cuda/cuda_elementwise.cu; here filled on the host with the same formula), by h's bits;
 *  - and all of that for both dy_act types: fp32 (linear_gelu_bwd_bf16) and bf16 (fc2's bf16
 *    input gradient, linear_gelu_bwd_bf16_dy16: GeluBwdRoundedCopy<__nv_bfloat16> widens it
 *    before the product), the bf16 case against the same formulas on the widened values, so
 *    bit for bit bf16_from_float(widen(dy16) gelu'(h)) and the unfused sum of those dh. */
#include "emu_cuda.h"
#include "cuda/cuda_bf16.cuh"

extern "C" {
#include "ops/bf16.h"
#include "ops/cpu_math.h"
}

/* The arrival counters (cuda_colsum_arrivals), the partials' poison, CHECK, seeded draws, the
 * bit and rounding-bound comparisons (shared with colsum_emulated.cpp). */
#include "emu_colsum_support.h"

#include "linear_gelu_bwd_kernels.inc"

/* ---- checks ---- */

static EmuUniform uniform(20261126u);

static bool counters_zero() { return arrivals_left_nonzero(nullptr) < 0; }

static void fused_case(long rows, int cols, unsigned order_seed, const float *slope,
                       bool bf16_dy)
{
    emu_block_order_seed = order_seed;
    const size_t n = (size_t)rows * cols, guard = 128;
    std::vector<float> dy = uniform(n, -3.0f, 3.0f);
    const std::vector<float> db0 = uniform((size_t)cols, -1, 1);
    /* a bf16 dy_act: its values drawn as above and rounded (ops/bf16.h, not the emulated
     * intrinsics); dy then holds them widened, what the references below read */
    std::vector<__nv_bfloat16> dy16(bf16_dy ? n : 0);
    for (size_t i = 0; i < dy16.size(); i++) {
        dy16[i] = __nv_bfloat16{bf16_from_float(dy[i])};
        dy[i] = bf16_to_float(dy16[i].bits);
    }
    const std::vector<float> h32 = uniform(n, -4.0f, 4.0f);
    std::vector<__nv_bfloat16> h(n);
    for (size_t i = 0; i < n; i++) h[i] = __float2bfloat16_rn(h32[i]);

    /* The unfused sequence: gelu_bwd_kernel's dh stored, then the rounding column sum. */
    std::vector<float> dh(n);
    for (size_t i = 0; i < n; i++) dh[i] = dy[i] * gelu_erf_slope(widen(h[i]));
    std::vector<float> db_want = db0;
    std::vector<__nv_bfloat16> dh16_want(n + guard);
    poison_partials();
    colsum_accumulate(db_want.data(), rows, cols,
                      MatrixElementRoundedCopy{dh.data(), cols, dh16_want.data()});
    CHECK(counters_zero(), "rows %ld cols %d: counters not reset (unfused)", rows, cols);

    /* The fused pass, its copy in slot A with sentinels past the end. */
    __nv_bfloat16 *slot =
        (__nv_bfloat16 *)cuda_scratch(SCRATCH_BF16_A, (n + guard) * sizeof(__nv_bfloat16) + 256);
    std::fill(slot, slot + n + guard, __nv_bfloat16{0xabcd});
    std::vector<float> db = db0;
    poison_partials();
    const __nv_bfloat16 *dh16 =
        bf16_dy ? gelu_dh_bf16_and_bias_grad(db.data(), dy16.data(), h.data(), (int)rows, cols,
                                             slope)
                : gelu_dh_bf16_and_bias_grad(db.data(), dy.data(), h.data(), (int)rows, cols,
                                             slope);
    CHECK(counters_zero(), "rows %ld cols %d: counters not reset (fused)", rows, cols);
    slot = (__nv_bfloat16 *)cuda_scratch(SCRATCH_BF16_A, 0);
    CHECK(dh16 == slot, "rows %ld cols %d: the copy must be in SCRATCH_BF16_A", rows, cols);

    size_t wrong = 0, unlike_unfused = 0, past = 0;
    for (size_t i = 0; i < n; i++) {
        wrong += dh16[i].bits != bf16_from_float(dy[i] * gelu_erf_slope(bf16_to_float(h[i].bits)));
        unlike_unfused += dh16[i].bits != dh16_want[i].bits;
    }
    for (size_t i = n; i < n + guard; i++) past += slot[i].bits != 0xabcd;
    CHECK(wrong == 0 && unlike_unfused == 0 && past == 0, "rows %ld cols %d (%s dy_act): bf16 "
          "copy: %zu differ from bf16_from_float(dy gelu'(h)), %zu from the unfused copy, %zu "
          "written past the end", rows, cols, bf16_dy ? "bf16" : "fp32", wrong, unlike_unfused,
          past);
    same_bits(db, db_want,
              bf16_dy ? "db, bf16 dy_act (vs the unfused column sum)"
                      : "db (vs the unfused column sum)",
              rows, cols);

    /* Against the double sum of the stored dh: rounding bound of the column sum's tree. */
    near_double(db, db0, rows, cols,
                [&](long r, int c) { return dh[(size_t)r * cols + c]; }, "db");
}

int main()
{
    const long rows_list[] = {0, 1, 7, 130, 300, 4607};
    const int cols_list[] = {1, 33, 45, 768};
    g_partial_floats = (size_t)512 * 768;
    std::vector<float> slope_table(1u << 16);
    for (unsigned b = 0; b < slope_table.size(); b++)
        slope_table[b] = gelu_erf_slope(bf16_to_float((bf16_t)b));
    unsigned seed = 0, cases = 0;
    for (bool bf16_dy : {false, true})
        for (const float *slope : {(const float *)nullptr, (const float *)slope_table.data()})
            for (long rows : rows_list)
                for (int cols : cols_list) {
                    /* emulation time grows with the blocks launched (about 4 ms each): 4607 rows
                     * (36 chunks) over one and two column tiles only; the bf16 dy_act (the same
                     * kernel, another load) over the smaller shapes */
                    if (rows == 4607 && (cols > 45 || bf16_dy)) continue;
                    seed++;
                    fused_case(rows, cols, seed % 3 == 0 ? 0u : seed, slope, bf16_dy);
                    cases++;
                }
    if (fails) {
        printf("%d check(s) failed\n", fails);
        return 1;
    }
    printf("GELU-fused fc1 bias pass: bf16 copy and db equal the unfused GPU sequence bit for bit "
           "(%u cases: fp32 and bf16 dy_act, formula and slope table), nothing written past the "
           "end, counters reset\n", cases);
    return 0;
}
