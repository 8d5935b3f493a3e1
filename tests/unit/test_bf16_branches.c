/* bf16_branch_out on the CPU backend: the transformer's residual branches (attention's
 * projection, fc2) stored in bf16 and added to the fp32 residual stream by the LayerNorm after
 * them (add_layernorm_fwd).
 *  - add_layernorm_fwd against a reference written here: sum = x + the widened branch (one fp32
 *    add, exact bits), y = LayerNorm(sum) in double, within one bf16 unit (bf16 y) or 2e-5
 *    (fp32 y), mean and rstd within 1e-6 / 1e-5 relative; an overlap of sum and x is refused,
 *    and an overlap of sum and the branch (death tests);
 *  - a 5-block stack's forward with the arena's bf16_branches against the same blocks composed
 *    here from the backend's ops, each branch rounded to bf16 by the linear layer's store and
 *    added on the host (a dropping block: the fp32 branch scaled per sample), bit for bit, in
 *    every layout the models use: training (every block's mid and out too), forward only (two
 *    alternating buffer sets: the EMA teacher), forward with taps (UNETR's skips), the bf16
 *    final output (the MAE decoder), and training with drop-path (block 0 on the bf16 branches,
 *    the others dropping). The stack without bf16_branches (the residual added in the GEMM's
 *    fp32 store) must differ from the composition, so the comparison tells the paths apart;
 *  - the arena's flag: set only with bf16 activations. */
#include <math.h>
#include <string.h>

#include "core/rng.h"
#include "bf16_ref.h"
#include "nn/act.h"
#include "nn/layers.h"
#include "nn/transformer.h"
#include "ops/backend.h"
#include "test.h"
#include "test_child.h"

static const AliceBackend *be;

static int test_add_layernorm_reference(void)
{
    const int rows = 5, dim = 24;
    const size_t n = (size_t)rows * dim;
    float *x = test_randn(77, 1, n, 1.5f), *gamma = test_randn(77, 2, dim, 0.3f);
    float *beta = test_randn(77, 3, dim, 0.2f);
    for (int d = 0; d < dim; d++) gamma[d] += 1.0f;
    bf16_t *branch = test_randn_bf16(77, 4, n, 2.0f);
    for (int typ = 0; typ < 2; typ++) {
        const DType yt = typ ? DTYPE_BF16 : DTYPE_F32;
        float *sum = malloc(n * sizeof(float)), *mean = malloc(rows * sizeof(float));
        float *rstd = malloc(rows * sizeof(float)), *yf = malloc(n * sizeof(float));
        bf16_t *yb = malloc(n * sizeof(bf16_t));
        be->add_layernorm_fwd(sum, typ ? (void *)yb : (void *)yf, yt, mean, rstd, x, branch, gamma,
                              beta, rows, dim, 1e-5f);
        for (int r = 0; r < rows; r++) {
            double s1 = 0.0, s2 = 0.0;
            for (int d = 0; d < dim; d++) {
                const size_t i = (size_t)r * dim + d;
                const float want = x[i] + bf16_to_float(branch[i]);
                TEST_CHECK(memcmp(&sum[i], &want, sizeof want) == 0, "sum[%zu] = %.9g, expected "
                           "x + widened branch = %.9g", i, sum[i], want);
                s1 += want;
            }
            const double mu = s1 / dim;
            for (int d = 0; d < dim; d++) {
                const double t = sum[(size_t)r * dim + d] - mu;
                s2 += t * t;
            }
            const double rs = 1.0 / sqrt(s2 / dim + 1e-5);
            TEST_CLOSE(mean[r], mu, 0.0, 1e-6, "a row's mean");
            TEST_CLOSE(rstd[r], rs, 1e-5, 0.0, "a row's rstd");
            for (int d = 0; d < dim; d++) {
                const size_t i = (size_t)r * dim + d;
                const double want = (sum[i] - mu) * rs * gamma[d] + beta[d];
                const double got = typ ? bf16_to_float(yb[i]) : yf[i];
                const double tol = typ ? fabs(want) / 256 + 1e-5 : 2e-5;
                TEST_CHECK(fabs(got - want) <= tol, "%s y[%zu] = %.9g, expected %.9g",
                           typ ? "bf16" : "fp32", i, got, want);
            }
        }
        free(sum); free(mean); free(rstd); free(yf); free(yb);
    }
    free(x); free(gamma); free(beta); free(branch);
    return 0;
}

static void sum_overlapping_x(void)
{
    float buf[16] = {0};
    bf16_t branch[8] = {0}, y[8];
    float mean[1], rstd[1];
    be->add_layernorm_fwd(buf + 4, y, DTYPE_BF16, mean, rstd, buf, branch, NULL, NULL, 1, 8, 1e-5f);
}

static void sum_overlapping_branch(void)
{
    float sum[8] = {0}, x[8] = {0}, mean[1], rstd[1];
    bf16_t y[8];
    be->add_layernorm_fwd(sum, y, DTYPE_BF16, mean, rstd, x, (const bf16_t *)sum + 2, NULL, NULL,
                          1, 8, 1e-5f);
}

static int test_add_layernorm_refuses_overlap(void)
{
    void (*const calls[2])(void) = {sum_overlapping_x, sum_overlapping_branch};
    for (int c = 0; c < 2; c++) {
        char err[4096];
        const int status = test_child_exit(calls[c], err, sizeof err);
        TEST_CHECK(status > 0 && strstr(err, "add_layernorm_fwd: the sum overlaps"),
                   "a sum overlapping %s: exit %d, stderr '%s'", c ? "the branch" : "x", status,
                   err);
    }
    return 0;
}

enum { W = 24, HEADS = 2, M = 40, DEPTH = 5, B = 2, T = 5, ROWS = B * T };
#define N_ACT ((size_t)ROWS * W)

typedef struct {
    ParamSet ps;
    TStack s;
    Arena ar;
    TStackActs a;
} Stack;

/* A DEPTH-block stack on the CPU backend with bf16 activations, laid out in mode (gemm_out:
 * tstack_layout_gemm_output, the final LayerNorm in bf16), drop_rate > 0: drop-path with
 * per-sample scales 0 or 1.5. The same weights and input in every stack. */
static void stack_init(Stack *st, int bf16_branches, TStackMode mode, int gemm_out,
                       float drop_rate)
{
    params_init_registry(&st->ps);
    tstack_register(&st->s, &st->ps, "enc", W, HEADS, M, DEPTH);
    params_allocate(&st->ps, be, 1);
    params_initialize(&st->ps, 31);
    /* LayerNorm's defaults (gamma 1, beta 0) and zero biases would hide a mixed-up tensor */
    RngStream rng;
    rng_init(&rng, 5, 0, 0, RNG_TEST);
    for (size_t i = 0; i < st->ps.total; i++) st->ps.data[i] += 0.05f * rng_normal(&rng);
    arena_plan_mixed(&st->ar, be, "bf16", 1, bf16_branches);
    for (int pass = 0; pass < 2; pass++) {   /* planning, then the committed layout */
        if (gemm_out) tstack_layout_gemm_output(&st->s, &st->a, &st->ar, B, T, mode);
        else tstack_layout(&st->s, &st->a, &st->ar, B, T, mode);
        if (drop_rate > 0) tstack_layout_drop_path(&st->s, &st->a, &st->ar, drop_rate);
        if (pass == 0) arena_commit(&st->ar);
    }
    float *x0 = test_randn(78, 1, N_ACT, 1.0f);
    memcpy(st->a.x0, x0, N_ACT * sizeof(float));
    free(x0);
    const size_t scales = tstack_drop_scale_count(&st->s, &st->a);
    for (size_t i = 0; i < scales; i++) st->a.drop_scale[i] = i % 3 == 0 ? 0.0f : 1.5f;
}

static void stack_free(Stack *st)
{
    arena_free(&st->ar);
    params_free(&st->ps);
}

static int same_floats(const float *a, const float *b, size_t n)
{
    return memcmp(a, b, n * sizeof(float)) == 0;
}

/* y = base + the branch of linear layer (w, b) on x, as the reference makes it: a block that
 * drops adds the fp32 branch scaled per sample (add_group_scaled); any other stores the branch
 * in bf16 and adds it widened, here on the host. */
static void branch_add(const Stack *st, const float *scales, int w, int b, float *y,
                       const float *base, Act x, int in, float *f32_tmp, bf16_t *b16_tmp)
{
    const ParamSet *ps = &st->ps;
    if (scales) {
        act_linear_fwd(ps, w, b, (Act){f32_tmp, DTYPE_F32}, x, NULL, ROWS, in, W);
        be->add_group_scaled(y, base, f32_tmp, scales, B, (size_t)T * W);
        return;
    }
    act_linear_fwd(ps, w, b, (Act){b16_tmp, DTYPE_BF16}, x, NULL, ROWS, in, W);
    for (size_t i = 0; i < N_ACT; i++) y[i] = base[i] + bf16_to_float(b16_tmp[i]);
}

/* The reference: block by block from the backend's ops with st's weights, input and drop-path
 * draws. mids, outs: every block's mid and out ([DEPTH][N_ACT]); out: the final LayerNorm's
 * fp32 output. */
static void compose(const Stack *st, float *mids, float *outs, float *out)
{
    const ParamSet *ps = &st->ps;
    Act ln = {malloc(N_ACT * sizeof(bf16_t)), DTYPE_BF16};
    Act att = {malloc(N_ACT * sizeof(bf16_t)), DTYPE_BF16};
    Act qkv = {malloc(3 * N_ACT * sizeof(bf16_t)), DTYPE_BF16};
    Act h = {malloc((size_t)ROWS * M * sizeof(bf16_t)), DTYPE_BF16};
    Act hg = {malloc((size_t)ROWS * M * sizeof(bf16_t)), DTYPE_BF16};
    bf16_t *b16 = malloc(N_ACT * sizeof(bf16_t));
    float *f32 = malloc(N_ACT * sizeof(float));
    float *mean = malloc(ROWS * sizeof(float)), *rstd = malloc(ROWS * sizeof(float));
    const float *x = st->a.x0;
    for (int i = 0; i < DEPTH; i++) {
        const BlockParams *p = &st->s.blk[i];
        const int drops = st->a.drop_scale && st->a.drop_rate[i] > 0;
        float *mid = mids + i * N_ACT, *o = outs + i * N_ACT;
        act_layernorm_fwd(be, ln, mean, rstd, x, param(ps, p->norm1_w), param(ps, p->norm1_b),
                          ROWS, W, LAYERNORM_EPS);
        act_linear_fwd(ps, p->qkv_w, NO_PARAM, qkv, ln, NULL, ROWS, W, 3 * W);
        act_attention_fwd(be, att, NULL, qkv, act_offset(qkv, W), act_offset(qkv, 2 * N_ACT / ROWS),
                          B, HEADS, T, T, W / HEADS, 3 * W, 3 * W);
        branch_add(st, drops ? st->a.drop_scale + drop_path_index(i, DROP_BRANCH_ATTN, B, 0) : NULL,
                   p->proj_w, p->proj_b, mid, x, att, W, f32, b16);
        act_layernorm_fwd(be, ln, mean, rstd, mid, param(ps, p->norm2_w), param(ps, p->norm2_b),
                          ROWS, W, LAYERNORM_EPS);
        act_linear_fwd(ps, p->fc1_w, p->fc1_b, h, ln, NULL, ROWS, W, M);
        act_gelu_fwd(be, hg, h, (size_t)ROWS * M);
        branch_add(st, drops ? st->a.drop_scale + drop_path_index(i, DROP_BRANCH_MLP, B, 0) : NULL,
                   p->fc2_w, p->fc2_b, o, mid, hg, M, f32, b16);
        x = o;
    }
    act_layernorm_fwd(be, (Act){out, DTYPE_F32}, mean, rstd, x, param(ps, st->s.norm_w),
                      param(ps, st->s.norm_b), ROWS, W, LAYERNORM_EPS);
    free(ln.p); free(att.p); free(qkv.p); free(h.p); free(hg.p); free(b16); free(f32);
    free(mean); free(rstd);
}

/* Runs st's forward and checks it against the composition: the final output (fp32, or out16
 * against the composition's output rounded), every block's mid with check_mids and every
 * block's out with check_outs (the layouts that keep them). Returns whether the final output
 * matched. */
static int forward_matches(Stack *st, const char *what, int check_mids, int check_outs)
{
    const size_t bytes = DEPTH * N_ACT * sizeof(float);
    float *mids = malloc(bytes), *outs = malloc(bytes), *out = malloc(N_ACT * sizeof(float));
    compose(st, mids, outs, out);
    tstack_forward(&st->s, &st->a, &st->ps);
    int equal = 1;
    if (st->a.out16) {
        for (size_t i = 0; i < N_ACT; i++) equal &= st->a.out16[i] == bf16_from_float(out[i]);
    } else {
        equal = same_floats(st->a.out, out, N_ACT);
    }
    for (int i = 0; i < DEPTH; i++) {
        TEST_CHECK(!check_mids || same_floats(st->a.act[i].mid, mids + i * N_ACT, N_ACT),
                   "%s: block %d's mid differs from the composition", what, i);
        TEST_CHECK(!check_outs || same_floats(st->a.act[i].out, outs + i * N_ACT, N_ACT),
                   "%s: block %d's out differs from the composition", what, i);
    }
    free(mids); free(outs); free(out);
    return equal;
}

/* Every layout the models use: training (every block's mid and out kept), forward only (two
 * alternating sets: the EMA teacher), forward with taps (every out kept: UNETR's skips), the
 * bf16 final output (the MAE decoder), and a training stack whose blocks 1.. drop-path while
 * block 0 takes the bf16 branches. */
static int test_stack_forward_composition(void)
{
    static const struct {
        const char *what;
        TStackMode mode;
        int gemm_out, check_mids, check_outs;
        float drop;
    } cases[] = {
        {"training", TSTACK_TRAIN, 0, 1, 1, 0.0f},
        {"forward only", TSTACK_FORWARD_ONLY, 0, 0, 0, 0.0f},
        {"forward with taps", TSTACK_FORWARD_TAPS, 0, 0, 1, 0.0f},
        {"forward only, bf16 output", TSTACK_FORWARD_ONLY, 1, 0, 0, 0.0f},
        {"training with drop-path", TSTACK_TRAIN, 0, 1, 1, 0.5f},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        Stack st;
        stack_init(&st, 1, cases[c].mode, cases[c].gemm_out, cases[c].drop);
        TEST_CHECK(st.a.branch16 != NULL, "%s: no branch16 laid out", cases[c].what);
        TEST_CHECK(cases[c].drop == 0 || (st.a.drop_scale && st.a.drop_rate[0] == 0 &&
                                          st.a.drop_rate[1] > 0),
                   "%s: expected block 0 on the branch path, the others dropping", cases[c].what);
        TEST_CHECK(forward_matches(&st, cases[c].what, cases[c].check_mids, cases[c].check_outs),
                   "%s: the output differs from the composed blocks' final LayerNorm",
                   cases[c].what);
        printf("  %s: %d blocks, bit for bit\n", cases[c].what, DEPTH);
        stack_free(&st);
    }
    /* the fp32-store path on the same weights and input: a different rounding, so the
     * comparisons above tell the two paths apart */
    Stack without;
    stack_init(&without, 0, TSTACK_TRAIN, 0, 0.0f);
    TEST_CHECK(!without.a.branch16, "branch16 laid out without the flag");
    TEST_CHECK(!forward_matches(&without, "without bf16 branches", 0, 0),
               "the stack without bf16_branches matched the composition: the test cannot tell "
               "the paths apart");
    stack_free(&without);
    return 0;
}

/* The flag counts only with bf16 activations. */
static int test_arena_flag(void)
{
    static const struct {
        const char *precision;
        int activations, branch_out, want;
    } cases[] = {{"fp32", 1, 1, 0}, {"bf16", 0, 1, 0}, {"bf16", 1, 0, 0}, {"bf16", 1, 1, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        Arena a;
        arena_plan_mixed(&a, be, cases[c].precision, cases[c].activations, cases[c].branch_out);
        TEST_CHECK(a.bf16_branches == cases[c].want, "precision %s, bf16_activations %d, "
                   "bf16_branch_out %d: bf16_branches %d, expected %d", cases[c].precision,
                   cases[c].activations, cases[c].branch_out, a.bf16_branches, cases[c].want);
    }
    return 0;
}

int main(void)
{
    be = backend_cpu();
    TEST_RUN(test_add_layernorm_reference);
    TEST_RUN(test_add_layernorm_refuses_overlap);
    TEST_RUN(test_stack_forward_composition);
    TEST_RUN(test_arena_flag);
    return test_finish();
}
