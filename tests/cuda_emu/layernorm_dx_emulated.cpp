/* LayerNorm backward of the CUDA backend (cuda/cuda_norm.cu, its section "LayerNorm backward":
 * the one-pass kernel that forms dx and the per-block column sums of dy xhat and dy, the dx
 * kernel alone, and cuda_layernorm_bwd, which picks between them and finishes dgamma and dbeta
 * through colsum_kernel of cuda/cuda_kernels.cuh) runs WITHOUT a GPU:
 * test_layernorm_dx_emulated.sh cuts that source out, rewrites the <<<...>>> launches into
 * emu_launch, and this file runs it through emu_cuda.h (a std::thread per CUDA thread,
 * barriers, warp sums through per-warp barriers; the blocks of every grid in a shuffled order).
 * The fused kernel's grid cap is emu_ln_bwd_max_blocks here (the script's cut reads it): every
 * case runs with the source's kLnBwdMaxBlocks (one row per warp at these sizes), the cases of
 * more than 24 rows again with 3 blocks (2 to 6 rows per warp, ragged, empty warps in the last
 * block).
 *
 * Every case (rows not filling the last block, widths 1, 31, 32, 37, 70, 384, 768 and one past
 * kLnBwdFusedMaxDim, with and without gamma, with and without dx_residual):
 *  - dx of the one-pass kernel (dx, dgamma and dbeta asked) equals BIT FOR BIT the former dx
 *    kernel's arithmetic, written plainly below (each lane's sums over its 4-element chunks
 *    and then its tail elements, summing_lane, the 32 lanes in order as emu_cuda.h's warp_sum
 *    adds them, then rstd (g - mean(g) - xhat mean(g xhat)),
 *    g = dy gamma, and the residual added last); and that value is within 1e-5 scale + 1e-6 of
 *    the double formula (scale: the sum of the magnitudes of its terms);
 *  - dgamma and dbeta accumulate into random starting values (a kernel that overwrites fails),
 *    within (rows per warp + 8 warps + blocks + 20) 2^-24 (|start| + sum |terms|) of the double
 *    sum: a bound of the fp32 tree (a warp's rows in order, the 8 warps in order, the column
 *    sum's lanes and chunks over the blocks' partials, the term's 3 roundings; it bounds the
 *    former column sum over the rows too);
 *  - deterministic: the same call again from the same start, the blocks in another order,
 *    gives the same bits in dx, dgamma and dbeta;
 *  - dx alone, then dgamma and dbeta alone (the former two-launch sequence, still what those
 *    calls run): dx the same bits, dgamma and dbeta within the same bound;
 *  - with dx, dgamma alone and dbeta alone each equal, bit for bit, that output of the call
 *    with both (the same partials; one-output and two-output column sums add alike);
 *  - dbeta alone with x, mean, rstd and gamma NULL (the plain column sum of dy that
 *    tests/bench/bench_colsum.c times) equals the dbeta of the two-output column sum;
 *  - rows = 0 touches nothing;
 *  - layernorm_bwd_dx16 (the next linear layer's dy in bf16, dx16, and its bias gradient, dx's
 *    column sums accumulated into dxsum): dx, dgamma and dbeta keep the bits of the call
 *    without them; dx16 is the call's dx rounded to nearest even, every element; dxsum within
 *    the same fp32 bound of the double column sums of the stored dx (a third partial of the
 *    fused kernel) and deterministic; dxsum alone, dx16 alone and dx16 with the parameter
 *    gradients give the same bits as the call with all, untouched outputs untouched; at
 *    kLnBwdFusedMaxDimWithDx + 1 and wider (the former sequence) dxsum has the bits of the
 *    column sum over the stored dx that linear_bwd_bf16 ran;
 *  - poison: dx and the scratch partials (the kernel's and the column sum's) are NaN before
 *    every call and the kernel's shared memory is NaN at every block's start, so an element
 *    never written or a partial never formed fails; nothing is written past the end of dx,
 *    dgamma or dbeta; the column sum's arrival counters are zero after every call. */
#include "emu_cuda.h"

extern "C" {
#include "ops/backend.h"
}
#include "cuda/cuda_bf16.cuh" /* as_nv (the script's empty cuda_bf16.h stands in for CUDA's) */
#include "ops/cpu_math.h"     /* MATH_MUL / MATH_SUB: layernorm_dx_value rounds each operation */

/* CUDA's round-to-nearest add, never contracted into an FMA (the host build has no FMA). */
inline float __fadd_rn(float a, float b) { return a + b; }

/* The arrival counters, the column sum's poison, CHECK, seeded draws, bit comparisons. */
#include "emu_colsum_support.h"

/* src/ops/backend.c's check, as the CUDA backend calls it: fatal on an overlap. */
extern "C" void backend_check_residual(const char *op, const void *out, DType out_type,
                                       const float *residual, size_t n)
{
    if (!residual) return;
    const char *o = (const char *)out, *r = (const char *)residual;
    const size_t out_bytes = n * (out_type == DTYPE_F32 ? sizeof(float) : sizeof(uint16_t));
    if (out_type != DTYPE_F32 || (o < r + n * sizeof(float) && r < o + out_bytes))
        alice_fatal_at(__FILE__, __LINE__, "%s: residual overlaps out or out is not fp32", op);
}

/* cuda/cuda_weight_copy.cu's rounding kernel, element by element (the fallback's bf16 copy of
 * dx when no column sum of dx is asked). */
void cuda_round_to_bf16(__nv_bfloat16 *out, const float *in, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = __float2bfloat16_rn(in[i]);
}

/* The fused kernel's grid cap: the script's cut reads this instead of kLnBwdMaxBlocks, so one
 * build runs with the source's value and with a grid of a few blocks (many rows per warp). */
static int emu_ln_bwd_max_blocks;

#include "layernorm_bwd.inc" /* cut out of cuda/cuda_kernels.cuh and cuda/cuda_norm.cu */

static EmuUniform uniform(20261126u);
static unsigned next_block_order = 1;

enum { kTail = 40 }; /* guard elements past the end of every output */

/* The lane that sums element d of a row in the kernels: lanes own the row's 4-element chunks
 * in turn (chunk c: lane c % 32), then the elements past the last whole chunk in turn; each
 * lane adds its elements in ascending order. */
static int summing_lane(int d, int dim)
{
    const int tail = dim / 4 * 4;
    return d < tail ? (d / 4) % 32 : (d - tail) % 32;
}

/* The former layernorm_dx_kernel's arithmetic, one row after another on the host. */
static void former_dx(std::vector<float> &dx, const float *res, const std::vector<float> &dy,
                      const std::vector<float> &x, const std::vector<float> &mean,
                      const std::vector<float> &rstd, const float *gamma, int rows, int dim)
{
    for (int r = 0; r < rows; r++) {
        const size_t o = (size_t)r * dim;
        const float mu = mean[r], rs = rstd[r];
        float lane_g[32] = {0}, lane_gx[32] = {0};
        for (int d = 0; d < dim; d++) {
            const float g = dy[o + d] * (gamma ? gamma[d] : 1.0f);
            lane_g[summing_lane(d, dim)] += g;
            lane_gx[summing_lane(d, dim)] += g * (x[o + d] - mu) * rs;
        }
        float sg = 0.0f, sgx = 0.0f;
        for (int l = 0; l < 32; l++) sg += lane_g[l], sgx += lane_gx[l];
        const float mean_g = sg / dim, mean_gx = sgx / dim;
        for (int d = 0; d < dim; d++) {
            const float g = dy[o + d] * (gamma ? gamma[d] : 1.0f);
            const float v = rs * (g - mean_g - (x[o + d] - mu) * rs * mean_gx);
            dx[o + d] = res ? res[o + d] + v : v;
        }
    }
}

struct Inputs {
    int rows, dim;
    std::vector<float> x, dy, res, gamma, mean, rstd, dgamma0, dbeta0, dxsum0;
};

static Inputs make_inputs(int rows, int dim)
{
    Inputs in{rows, dim, {}, {}, {}, {}, {}, {}, {}, {}, {}};
    const size_t n = (size_t)rows * dim;
    in.x = uniform(n, -2.0f, 3.0f);
    in.dy = uniform(n, -1.0f, 1.0f);
    in.res = uniform(n, -4.0f, 4.0f);
    in.gamma = uniform((size_t)dim, -1.5f, 1.5f);
    in.dgamma0 = uniform((size_t)dim, -0.5f, 0.5f);
    in.dbeta0 = uniform((size_t)dim, -0.5f, 0.5f);
    in.dxsum0 = uniform((size_t)dim, -0.5f, 0.5f);
    in.mean.resize((size_t)rows);
    in.rstd.resize((size_t)rows);
    for (int r = 0; r < rows; r++) {
        double s = 0, q = 0;
        for (int d = 0; d < dim; d++) s += in.x[(size_t)r * dim + d];
        const double mu = s / dim;
        for (int d = 0; d < dim; d++) {
            const double t = in.x[(size_t)r * dim + d] - mu;
            q += t * t;
        }
        in.mean[r] = (float)mu;
        in.rstd[r] = (float)(1.0 / std::sqrt(q / dim + 1e-5));
    }
    return in;
}

/* The outputs of one call, each with kTail guard elements: dx, dgamma, dbeta, and
 * layernorm_bwd_dx16's two for the next linear layer, dx16 (dx in bf16) and dxsum (its bias
 * gradient: += dx's column sums). */
struct Outputs {
    std::vector<float> dx, dgamma, dbeta, dxsum;
    std::vector<uint16_t> dx16;
};

/* A bf16 NaN no rounding of these finite values gives: an element never written shows. */
constexpr uint16_t kUnwritten16 = 0x7fa5;

static Outputs fresh_outputs(const Inputs &in)
{
    Outputs o;
    o.dx.assign((size_t)in.rows * in.dim + kTail, NAN);
    o.dgamma = in.dgamma0;
    o.dbeta = in.dbeta0;
    o.dxsum = in.dxsum0;
    o.dgamma.resize((size_t)in.dim + kTail, 7.0f);
    o.dbeta.resize((size_t)in.dim + kTail, 7.0f);
    o.dxsum.resize((size_t)in.dim + kTail, 7.0f);
    o.dx16.assign((size_t)in.rows * in.dim + kTail, kUnwritten16);
    return o;
}

/* NaN over the scratch the call may read before writing (the kernel's partials: at most
 * LN_TERM_COUNT x one block per kRowsPerBlock rows x dim; the column sum's), in a new block
 * order. */
static void poison_scratch(const Inputs &in)
{
    const size_t blocks = ((size_t)in.rows + kRowsPerBlock - 1) / kRowsPerBlock;
    const size_t floats = LN_TERM_COUNT * blocks * in.dim + 64;
    float *stats = (float *)cuda_scratch(SCRATCH_STATS, floats * sizeof(float));
    std::fill(stats, stats + floats, NAN);
    poison_partials();
    emu_block_order_seed = next_block_order++;
}

/* One call of cuda_layernorm_bwd (or, with dx16 or dxsum asked, cuda_layernorm_bwd_dx16)
 * with the asked outputs (the others NULL). */
static void call(const Inputs &in, Outputs &o, bool want_dx, bool want_dgamma, bool want_dbeta,
                 bool with_gamma, bool with_res, bool want_dx16 = false, bool want_dxsum = false)
{
    poison_scratch(in);
    float *dx = want_dx ? o.dx.data() : nullptr;
    const float *res = want_dx && with_res ? in.res.data() : nullptr;
    float *dgamma = want_dgamma ? o.dgamma.data() : nullptr;
    float *dbeta = want_dbeta ? o.dbeta.data() : nullptr;
    const float *gamma = with_gamma ? in.gamma.data() : nullptr;
    if (want_dx16 || want_dxsum)
        cuda_layernorm_bwd_dx16(dx, res, dgamma, dbeta, want_dx16 ? o.dx16.data() : nullptr,
                                want_dxsum ? o.dxsum.data() : nullptr, in.dy.data(),
                                in.x.data(), in.mean.data(), in.rstd.data(), gamma, in.rows,
                                in.dim);
    else
        cuda_layernorm_bwd(dx, res, dgamma, dbeta, in.dy.data(), in.x.data(), in.mean.data(),
                           in.rstd.data(), gamma, in.rows, in.dim);
    unsigned left = 0;
    const long at = arrivals_left_nonzero(&left);
    CHECK(at < 0, "rows %d dim %d: arrival counter %ld left at %u", in.rows, in.dim, at, left);
}

template <typename T> static bool bits_equal(const std::vector<T> &a, const std::vector<T> &b)
{
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

/* The grid the source picks (the launch's arithmetic), for the tolerance's depth. */
static void fused_grid(int rows, int *blocks, int *rows_per_warp)
{
    const int rows_per_launch = kRowsPerBlock * emu_ln_bwd_max_blocks;
    *rows_per_warp = (rows + rows_per_launch - 1) / rows_per_launch;
    *blocks = (rows + kRowsPerBlock * *rows_per_warp - 1) / (kRowsPerBlock * *rows_per_warp);
}

/* dgamma and dbeta after one call against the double sums; the guards unchanged. */
static void check_param_grads(const Inputs &in, const Outputs &o, const char *what)
{
    int blocks = 0, rows_per_warp = 0;
    fused_grid(in.rows, &blocks, &rows_per_warp);
    /* Adds in a row of the deepest path to the sum, the term's 3 roundings included. One
     * pass: the warp's rows (rows_per_warp), its 8 warps, then the column sum over the blocks'
     * partials (its 8 lanes' shares of at most ceil(blocks / 8), their 8, the chunks, the
     * target) and 3: rows_per_warp + blocks + 21 at most. The former column sum over the rows:
     * at most 16 + 8 + chunks + 1 + 3, chunks <= blocks. */
    const double depth = rows_per_warp + kRowsPerBlock + blocks + 20;
    for (int c = 0; c < in.dim; c++) {
        double sg = in.dgamma0[c], sb = in.dbeta0[c];
        double ag = std::fabs(in.dgamma0[c]), ab = std::fabs(in.dbeta0[c]);
        for (int r = 0; r < in.rows; r++) {
            const size_t i = (size_t)r * in.dim + c;
            const double tg = (double)in.dy[i] * ((double)in.x[i] - in.mean[r]) * in.rstd[r];
            sg += tg, ag += std::fabs(tg);
            sb += in.dy[i], ab += std::fabs(in.dy[i]);
        }
        const double u = std::ldexp(1.0, -24);
        CHECK(std::fabs(o.dgamma[c] - sg) <= depth * u * ag + 1e-30,
              "%s rows %d dim %d: dgamma[%d] %.9g vs double %.12g", what, in.rows, in.dim, c,
              o.dgamma[c], sg);
        CHECK(std::fabs(o.dbeta[c] - sb) <= depth * u * ab + 1e-30,
              "%s rows %d dim %d: dbeta[%d] %.9g vs double %.12g", what, in.rows, in.dim, c,
              o.dbeta[c], sb);
    }
    for (int k = 0; k < kTail; k++) {
        CHECK(o.dgamma[(size_t)in.dim + k] == 7.0f && o.dbeta[(size_t)in.dim + k] == 7.0f,
              "%s rows %d dim %d: written past the end of dgamma or dbeta", what, in.rows, in.dim);
    }
}

/* dx against the former kernel's bits and the double formula; nothing past the end. */
static void check_dx(const Inputs &in, const Outputs &o, bool with_gamma, bool with_res,
                     const char *what)
{
    const int rows = in.rows, dim = in.dim;
    const size_t n = (size_t)rows * dim;
    const float *g = with_gamma ? in.gamma.data() : nullptr;
    const float *res = with_res ? in.res.data() : nullptr;
    std::vector<float> want(n + kTail, NAN);
    former_dx(want, res, in.dy, in.x, in.mean, in.rstd, g, rows, dim);
    size_t differ = 0, first = n;
    for (size_t i = 0; i < n + kTail; i++) {
        const bool tail_untouched = i >= n && std::isnan(o.dx[i]);
        if (std::memcmp(&o.dx[i], &want[i], sizeof(float)) != 0 && !tail_untouched)
            differ++, first = std::min(first, i);
    }
    const float got_first = first < n + kTail ? o.dx[first] : 0.0f;
    const float want_first = first < n + kTail ? want[first] : 0.0f;
    CHECK(differ == 0, "%s rows %d dim %d gamma %d residual %d: %zu dx elements differ in bits "
          "from the former kernel's (or were written past the end), first [%zu] %.9g vs %.9g",
          what, rows, dim, with_gamma, with_res, differ, first, got_first, want_first);
    for (int r = 0; r < rows; r++) {
        double sg = 0, sgx = 0, ag = 0, agx = 0;
        for (int d = 0; d < dim; d++) {
            const size_t i = (size_t)r * dim + d;
            const double gg = (double)in.dy[i] * (g ? g[d] : 1.0);
            const double xh = (in.x[i] - (double)in.mean[r]) * in.rstd[r];
            sg += gg, sgx += gg * xh, ag += std::fabs(gg), agx += std::fabs(gg * xh);
        }
        for (int d = 0; d < dim; d++) {
            const size_t i = (size_t)r * dim + d;
            const double gg = (double)in.dy[i] * (g ? g[d] : 1.0);
            const double xh = (in.x[i] - (double)in.mean[r]) * in.rstd[r];
            const double v = in.rstd[r] * (gg - sg / dim - xh * sgx / dim);
            const double scale =
                in.rstd[r] * (std::fabs(gg) + ag / dim + std::fabs(xh) * agx / dim);
            const double got = res ? (double)o.dx[i] - res[i] : o.dx[i];
            /* with the residual: one more rounding, of the sum */
            const double sum_rounding = res ? std::ldexp(std::fabs(o.dx[i]), -24) : 0.0;
            const double tol = 1e-5 * scale + 1e-6 + sum_rounding;
            CHECK(std::fabs(got - v) <= tol, "%s rows %d dim %d: dx[%zu] %.9g vs double %.9g",
                  what, rows, dim, i, got, v);
        }
    }
}

/* dx16 is the call's dx rounded to bf16 (nearest even), every element, nothing past the end. */
static void check_dx16(const Inputs &in, const Outputs &o, const char *what)
{
    const size_t n = (size_t)in.rows * in.dim;
    size_t differ = 0, first = n;
    for (size_t i = 0; i < n; i++)
        if (o.dx16[i] != bf16_from_float(o.dx[i])) differ++, first = std::min(first, i);
    CHECK(differ == 0, "%s rows %d dim %d: %zu of %zu dx16 are not dx rounded to bf16, first "
          "[%zu] 0x%04x for dx %.9g", what, in.rows, in.dim, differ, n, first,
          first < n ? o.dx16[first] : 0u, first < n ? o.dx[first] : 0.0f);
    for (int k = 0; k < kTail; k++)
        CHECK(o.dx16[n + k] == kUnwritten16, "%s rows %d dim %d: dx16 written past the end",
              what, in.rows, in.dim);
}

/* dxsum = its start + the column sums of the call's dx, against the double sum of the stored
 * dx within the fused tree's bound (as check_param_grads: the terms are the stored values,
 * no rounding of their own); the guards unchanged. */
static void check_dxsum(const Inputs &in, const Outputs &o, const char *what)
{
    int blocks = 0, rows_per_warp = 0;
    fused_grid(in.rows, &blocks, &rows_per_warp);
    const double depth = rows_per_warp + kRowsPerBlock + blocks + 20;
    for (int c = 0; c < in.dim; c++) {
        double s = in.dxsum0[c], a = std::fabs(in.dxsum0[c]);
        for (int r = 0; r < in.rows; r++) {
            const double v = o.dx[(size_t)r * in.dim + c];
            s += v, a += std::fabs(v);
        }
        CHECK(std::fabs(o.dxsum[c] - s) <= depth * std::ldexp(1.0, -24) * a + 1e-30,
              "%s rows %d dim %d: dxsum[%d] %.9g vs double %.12g", what, in.rows, in.dim, c,
              o.dxsum[c], s);
    }
    for (int k = 0; k < kTail; k++)
        CHECK(o.dxsum[(size_t)in.dim + k] == 7.0f, "%s rows %d dim %d: dxsum written past the "
              "end", what, in.rows, in.dim);
}

/* layernorm_bwd_dx16: dx, dgamma and dbeta keep the bits of the call without the next linear
 * layer's outputs (ref), dx16 is dx rounded, dxsum within the bound, a second call (the blocks
 * in another order) gives the same bits. Where the fused kernel cannot take dx's column sums
 * (wider than kLnBwdFusedMaxDimWithDx), dxsum has the bits of the former sequence's column
 * sum over the stored dx (linear_bwd_bf16's MatrixElementRoundedCopy pass over its fp32 dy). */
static void check_next_layer_outputs(const Inputs &in, const Outputs &ref, bool with_gamma,
                                     bool with_res)
{
    const int rows = in.rows, dim = in.dim;
    char what[96];
    snprintf(what, sizeof what, "dx16 and dxsum (gamma %d, residual %d)", with_gamma, with_res);
    Outputs all = fresh_outputs(in);
    call(in, all, true, true, true, with_gamma, with_res, true, true);
    CHECK(bits_equal(all.dx, ref.dx) && bits_equal(all.dgamma, ref.dgamma) &&
              bits_equal(all.dbeta, ref.dbeta),
          "%s rows %d dim %d: dx, dgamma or dbeta differ in bits from the call without them",
          what, rows, dim);
    check_dx16(in, all, what);
    check_dxsum(in, all, what);
    Outputs again = fresh_outputs(in);
    call(in, again, true, true, true, with_gamma, with_res, true, true);
    CHECK(bits_equal(again.dx16, all.dx16) && bits_equal(again.dxsum, all.dxsum),
          "%s rows %d dim %d: a second call gives other bits", what, rows, dim);
    if (dim > kLnBwdFusedMaxDimWithDx) {
        std::vector<float> former = in.dxsum0;
        former.resize((size_t)dim + kTail, 7.0f);
        poison_partials();
        colsum_accumulate(former.data(), rows, dim, MatrixElement{all.dx.data(), dim});
        CHECK(bits_equal(all.dxsum, former), "%s rows %d dim %d (too wide for the fused "
              "kernel): dxsum differs in bits from the column sum over the stored dx", what,
              rows, dim);
    }
    if (!with_res) return; /* the remaining checks do not depend on the residual */
    /* dxsum without the parameter gradients, dx16 without dxsum (with and without them): the
     * same bits as in the call with all */
    Outputs sum_only = fresh_outputs(in), copy_with_params = fresh_outputs(in);
    Outputs copy_only = fresh_outputs(in);
    call(in, sum_only, true, false, false, with_gamma, with_res, false, true);
    call(in, copy_with_params, true, true, true, with_gamma, with_res, true, false);
    call(in, copy_only, true, false, false, with_gamma, with_res, true, false);
    CHECK(bits_equal(sum_only.dxsum, all.dxsum) && bits_equal(sum_only.dx, all.dx) &&
              bits_equal(sum_only.dgamma, fresh_outputs(in).dgamma) &&
              std::all_of(sum_only.dx16.begin(), sum_only.dx16.end(),
                          [](uint16_t v) { return v == kUnwritten16; }),
          "%s rows %d dim %d: dxsum alone differs from the call with all, or an output not "
          "asked for was written", what, rows, dim);
    CHECK(bits_equal(copy_with_params.dx16, all.dx16) &&
              bits_equal(copy_with_params.dgamma, all.dgamma) &&
              bits_equal(copy_with_params.dbeta, all.dbeta) &&
              bits_equal(copy_with_params.dxsum, fresh_outputs(in).dxsum),
          "%s rows %d dim %d: dx16 with dgamma and dbeta differs from the call with all, or "
          "dxsum was touched", what, rows, dim);
    CHECK(bits_equal(copy_only.dx16, all.dx16) && bits_equal(copy_only.dx, all.dx),
          "%s rows %d dim %d: dx16 alone differs from the call with all", what, rows, dim);
    /* rows = 0: nothing touched */
    const Inputs none = make_inputs(0, dim);
    Outputs untouched = fresh_outputs(none);
    call(none, untouched, true, true, true, with_gamma, with_res, true, true);
    CHECK(bits_equal(untouched.dxsum, fresh_outputs(none).dxsum) &&
              untouched.dx16[0] == kUnwritten16,
          "rows 0 dim %d: dx16 or dxsum was touched", dim);
}

static void run_case(int rows, int dim, bool with_gamma, bool with_res)
{
    const Inputs in = make_inputs(rows, dim);
    char what[96];
    snprintf(what, sizeof what, "one pass (gamma %d, residual %d)", with_gamma, with_res);

    /* dx, dgamma and dbeta in one call */
    Outputs both = fresh_outputs(in);
    call(in, both, true, true, true, with_gamma, with_res);
    check_dx(in, both, with_gamma, with_res, what);
    check_param_grads(in, both, what);
    check_next_layer_outputs(in, both, with_gamma, with_res);

    /* the same call again, the blocks in another order: the same bits */
    Outputs again = fresh_outputs(in);
    call(in, again, true, true, true, with_gamma, with_res);
    CHECK(bits_equal(again.dx, both.dx) && bits_equal(again.dgamma, both.dgamma) &&
              bits_equal(again.dbeta, both.dbeta),
          "%s rows %d dim %d: a second call gives other bits", what, rows, dim);

    /* the former sequence: dx alone, then the two-output column sum over dy and x */
    Outputs former = fresh_outputs(in);
    call(in, former, true, false, false, with_gamma, with_res);
    CHECK(bits_equal(former.dgamma, fresh_outputs(in).dgamma) &&
              bits_equal(former.dbeta, fresh_outputs(in).dbeta),
          "rows %d dim %d: dx alone touched dgamma or dbeta", rows, dim);
    call(in, former, false, true, true, with_gamma, with_res);
    CHECK(bits_equal(former.dx, both.dx), "rows %d dim %d: dx alone differs in bits from dx of "
          "the one-pass call", rows, dim);
    check_param_grads(in, former, "dx, then dgamma and dbeta");

    if (!with_res) return; /* the remaining checks do not depend on the residual */
    /* with dx, one parameter gradient: that output of the call with both, bit for bit */
    Outputs only_dgamma = fresh_outputs(in), only_dbeta = fresh_outputs(in);
    call(in, only_dgamma, true, true, false, with_gamma, with_res);
    call(in, only_dbeta, true, false, true, with_gamma, with_res);
    CHECK(bits_equal(only_dgamma.dx, both.dx) && bits_equal(only_dbeta.dx, both.dx),
          "rows %d dim %d: dx with one parameter gradient differs", rows, dim);
    CHECK(bits_equal(only_dgamma.dgamma, both.dgamma) &&
              bits_equal(only_dgamma.dbeta, fresh_outputs(in).dbeta),
          "rows %d dim %d: dgamma alone (with dx) differs from the call with both, or dbeta "
          "was touched", rows, dim);
    CHECK(bits_equal(only_dbeta.dbeta, both.dbeta) &&
              bits_equal(only_dbeta.dgamma, fresh_outputs(in).dgamma),
          "rows %d dim %d: dbeta alone (with dx) differs from the call with both, or dgamma "
          "was touched", rows, dim);

    /* dbeta alone, x, mean, rstd and gamma NULL: the column sum of dy */
    Outputs plain = fresh_outputs(in);
    poison_scratch(in);
    cuda_layernorm_bwd(nullptr, nullptr, nullptr, plain.dbeta.data(), in.dy.data(), nullptr,
                       nullptr, nullptr, nullptr, rows, dim);
    CHECK(bits_equal(plain.dbeta, former.dbeta), "rows %d dim %d: dbeta alone without x differs "
          "from the two-output column sum's", rows, dim);
    CHECK(arrivals_left_nonzero(nullptr) < 0, "rows %d dim %d: arrival counter left", rows, dim);

    /* no rows: nothing touched */
    const Inputs none = make_inputs(0, dim);
    Outputs untouched = fresh_outputs(none);
    call(none, untouched, true, true, true, with_gamma, with_res);
    CHECK(std::isnan(untouched.dx[0]) && bits_equal(untouched.dgamma, fresh_outputs(none).dgamma) &&
              bits_equal(untouched.dbeta, fresh_outputs(none).dbeta),
          "rows 0 dim %d: an output was touched", dim);
}

int main()
{
    /* rows x width: rows never a multiple of the 8-row block but in the 9-row case; widths
     * below, at and above the warp size and not multiples of it, the decoder's (384) and the
     * encoder's (768), and one past kLnBwdFusedMaxDim (the two-launch path) */
    const int shapes[][2] = {{1, 1},     {3, 31},    {9, 32},
                             {19, 70},   {45, 37},   {130, 384},
                             {37, 768},  {5, kLnBwdFusedMaxDimWithDx},
                             {3, kLnBwdFusedMaxDimWithDx + 1},  {3, kLnBwdFusedMaxDim + 1}};
    g_partial_floats = (size_t)LN_TERM_COUNT * 512 * (kLnBwdFusedMaxDim + 1);
    /* the source's grid cap (one row per warp here): every case */
    const int caps[] = {kLnBwdMaxBlocks, 3};
    emu_ln_bwd_max_blocks = caps[0];
    for (const auto &s : shapes)
        for (int with_gamma = 0; with_gamma < 2; with_gamma++)
            for (int with_res = 0; with_res < 2; with_res++)
                run_case(s[0], s[1], with_gamma != 0, with_res != 0);
    /* 3 blocks (up to 6 rows per warp): the shapes with more rows than 3 blocks of one row per
     * warp, with gamma and residual (every check runs; emulation time) */
    emu_ln_bwd_max_blocks = caps[1];
    for (const auto &s : shapes)
        if (s[0] > kRowsPerBlock * caps[1] && s[1] <= kLnBwdFusedMaxDim)
            run_case(s[0], s[1], true, true);
    if (fails) {
        fprintf(stderr, "%d failures\n", fails);
        return 1;
    }
    printf("layernorm backward (emulated, grid caps %d and %d blocks): one pass equals the "
           "former dx bit for bit, dgamma/dbeta within the fp32 bound, deterministic; with the "
           "next linear layer's outputs dx16 = bf16(dx) bit for bit and dx's column sums "
           "within the bound (the former bits where too wide); %zu shapes x gamma x residual: "
           "ok\n",
           caps[0], caps[1], sizeof shapes / sizeof shapes[0]);
    return 0;
}
