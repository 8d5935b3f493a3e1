/* bf16_branch_out on the CPU backend: the transformer's residual branches (attention's
 * projection, fc2) stored in bf16 and added to the fp32 residual stream by the LayerNorm after
 * them (add_layernorm_fwd).
 *  - add_layernorm_fwd against a reference written here: sum = x + the widened branch (one fp32
 *    add, exact bits), y = LayerNorm(sum) in double, within one bf16 unit (bf16 y) or 2e-5
 *    (fp32 y), mean and rstd within 1e-6 / 1e-5 relative; an overlap of sum and x is refused
 *    (death test);
 *  - a 3-block stack's forward with the arena's bf16_branches against the same blocks composed
 *    here from the backend's ops, each branch rounded to bf16 by the linear layer's store and
 *    added on the host: every block's mid and out and the final LayerNorm's output bit for bit.
 *    The stack without bf16_branches (the residual added in the GEMM's fp32 store) must differ
 *    from that composition, so the comparison tells the two paths apart. */
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

static void add_overlapping(void)
{
    float buf[16] = {0};
    bf16_t branch[8] = {0}, y[8];
    float mean[1], rstd[1];
    be->add_layernorm_fwd(buf + 4, y, DTYPE_BF16, mean, rstd, buf, branch, NULL, NULL, 1, 8, 1e-5f);
}

static int test_add_layernorm_refuses_overlap(void)
{
    char err[4096];
    const int status = test_child_exit(add_overlapping, err, sizeof err);
    TEST_CHECK(status > 0 && strstr(err, "add_layernorm_fwd: the sum overlaps"),
               "a sum overlapping x: exit %d, stderr '%s'", status, err);
    return 0;
}

enum { W = 24, HEADS = 2, M = 40, DEPTH = 3, B = 2, T = 5, ROWS = B * T };

typedef struct {
    ParamSet ps;
    TStack s;
    Arena ar;
    TStackActs a;
} Stack;

static void stack_init(Stack *st, int bf16_branches)
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
    tstack_layout(&st->s, &st->a, &st->ar, B, T, TSTACK_TRAIN);
    arena_commit(&st->ar);
    tstack_layout(&st->s, &st->a, &st->ar, B, T, TSTACK_TRAIN);
    float *x0 = test_randn(78, 1, (size_t)ROWS * W, 1.0f);
    memcpy(st->a.x0, x0, (size_t)ROWS * W * sizeof(float));
    free(x0);
}

static void stack_free(Stack *st)
{
    arena_free(&st->ar);
    params_free(&st->ps);
}

/* dst = base + widen(branch) on the host: the add the LayerNorm after a branch makes. */
static void add_widened(float *dst, const float *base, const bf16_t *branch, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = base[i] + bf16_to_float(branch[i]);
}

static int same_floats(const float *a, const float *b, size_t n)
{
    return memcmp(a, b, n * sizeof(float)) == 0;
}

/* The reference: block by block from the backend's ops with the stack's own weights, each
 * branch stored in bf16 by its linear layer and added here. Checks every block's mid and out
 * and the output of want (the stack run with bf16_branches) bit for bit. */
static void compose_and_compare(const Stack *want, int *equal_out)
{
    const size_t n = (size_t)ROWS * W;
    const ParamSet *ps = &want->ps;
    Act ln = {malloc(n * sizeof(bf16_t)), DTYPE_BF16}, att = {malloc(n * sizeof(bf16_t)),
                                                              DTYPE_BF16};
    Act qkv = {malloc(3 * n * sizeof(bf16_t)), DTYPE_BF16};
    Act h = {malloc((size_t)ROWS * M * sizeof(bf16_t)), DTYPE_BF16};
    Act hg = {malloc((size_t)ROWS * M * sizeof(bf16_t)), DTYPE_BF16};
    bf16_t *branch = malloc(n * sizeof(bf16_t));
    float *x = malloc(n * sizeof(float)), *mid = malloc(n * sizeof(float));
    float *mean = malloc(ROWS * sizeof(float)), *rstd = malloc(ROWS * sizeof(float));
    memcpy(x, want->a.x0, n * sizeof(float));
    int mids = 1, outs = 1;
    for (int i = 0; i < DEPTH; i++) {
        const BlockParams *p = &want->s.blk[i];
        act_layernorm_fwd(be, ln, mean, rstd, x, param(ps, p->norm1_w), param(ps, p->norm1_b),
                          ROWS, W, LAYERNORM_EPS);
        act_linear_fwd(ps, p->qkv_w, NO_PARAM, qkv, ln, NULL, ROWS, W, 3 * W);
        act_attention_fwd(be, att, NULL, qkv, act_offset(qkv, W), act_offset(qkv, 2 * (size_t)W),
                          B, HEADS, T, T, W / HEADS, 3 * W, 3 * W);
        act_linear_fwd(ps, p->proj_w, p->proj_b, (Act){branch, DTYPE_BF16}, att, NULL, ROWS, W, W);
        add_widened(mid, x, branch, n);
        mids &= same_floats(mid, want->a.act[i].mid, n);
        act_layernorm_fwd(be, ln, mean, rstd, mid, param(ps, p->norm2_w), param(ps, p->norm2_b),
                          ROWS, W, LAYERNORM_EPS);
        act_linear_fwd(ps, p->fc1_w, p->fc1_b, h, ln, NULL, ROWS, W, M);
        act_gelu_fwd(be, hg, h, (size_t)ROWS * M);
        act_linear_fwd(ps, p->fc2_w, p->fc2_b, (Act){branch, DTYPE_BF16}, hg, NULL, ROWS, M, W);
        add_widened(x, mid, branch, n);
        outs &= same_floats(x, want->a.act[i].out, n);
    }
    float *out = malloc(n * sizeof(float));
    act_layernorm_fwd(be, (Act){out, DTYPE_F32}, mean, rstd, x, param(ps, want->s.norm_w),
                      param(ps, want->s.norm_b), ROWS, W, LAYERNORM_EPS);
    TEST_CHECK(mids, "a block's mid differs from x + the bf16 projection");
    TEST_CHECK(outs, "a block's out differs from mid + the bf16 fc2");
    *equal_out = same_floats(out, want->a.out, n);
    free(ln.p); free(att.p); free(qkv.p); free(h.p); free(hg.p); free(branch);
    free(x); free(mid); free(mean); free(rstd); free(out);
}

static int test_stack_forward_composition(void)
{
    Stack with, without;
    stack_init(&with, 1);
    stack_init(&without, 0);
    TEST_CHECK(with.a.branch16 && !without.a.branch16, "branch16 laid out only with the flag");
    tstack_forward(&with.s, &with.a, &with.ps);
    tstack_forward(&without.s, &without.a, &without.ps);
    int equal;
    compose_and_compare(&with, &equal);
    TEST_CHECK(equal, "the stack's output differs from the composed blocks' final LayerNorm");
    /* the fp32-store path on the same weights and input: a different rounding */
    TEST_CHECK(!same_floats(without.a.out, with.a.out, (size_t)ROWS * W),
               "the stack without bf16_branches gave the same output: the test cannot tell the "
               "paths apart");
    printf("  3 blocks, W %d, %d rows: mid, out and the final LayerNorm bit for bit\n", W, ROWS);
    stack_free(&with);
    stack_free(&without);
    return 0;
}

int main(void)
{
    be = backend_cpu();
    TEST_RUN(test_add_layernorm_reference);
    TEST_RUN(test_add_layernorm_refuses_overlap);
    TEST_RUN(test_stack_forward_composition);
    return test_finish();
}
