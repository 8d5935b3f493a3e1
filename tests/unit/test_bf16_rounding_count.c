/* How many fp32 -> bf16 operand roundings (to_bf16_kernel launches, cuda/cuda_weight_copy.cu)
 * one Alice pre-training step makes on the CUDA backend in bf16, COUNTED without a GPU: the
 * step runs on the CPU backend (precision = bf16: the same bf16 activations, so the model calls
 * the same table entries as on the GPU) through a copy of the CPU table whose entries that
 * round on the CUDA backend add the launches the CUDA backend's rules give for the call's
 * arguments, then run the CPU op. The rules, restated from the CUDA sources (a change there
 * must change them here):
 *  R1 fp32-entry GEMM operands (cuda/cuda_blas.cu bf16_operand): an operand inside a weight
 *     buffer (weights_hint) reads its bf16 weight copy, current after AdamW and the EMA update
 *     in every step but the first; any other operand is rounded by a launch of its own.
 *     linear_fwd rounds x; gemm rounds A and B.
 *  R2 linear backward (dy_bf16_and_bias_grad, linear_bwd_bf16_gemms): with a GEMM to run, dy is
 *     rounded by a launch of its own unless db is given (then in the bias column sum's pass,
 *     no launch); dx reads W (R1); dW rounds an fp32 x (linear_bwd; linear_bwd_bf16's x is
 *     bf16 already). linear_bwd_bf16_dx16 is linear_bwd_bf16 with dx rounded in the dx GEMM's
 *     store (no launch). linear_bwd_bf16_dy16 and _dy16_dx16 round nothing.
 *  R3 linear_gelu_bwd_bf16 and _dy16: fused (no launch) when db is given and a GEMM runs; else
 *     the GELU backward (for _dy16 after widening dy_act into dh_scratch, no rounding) and then
 *     R2 on linear_bwd_bf16.
 *  R4 to_bf16: one launch.
 *  R5 the fp32 attention entries where neither flash kernel applies (attention_choice.h; CASA's
 *     single 768-wide head): attention_fwd_rounded_once rounds q, k, v and P (4 launches);
 *     attention_bwd_rounded_once q if dk, k if dq, v if dq or dk, dout, and P if dv (dS is
 *     rounded in the softmax backward's store). Where the flash kernels apply: none.
 *  R6 the bf16 attention backward entries (attention_bwd_bf16, attention_bwd_bf16_grad16): a
 *     call cuDNN takes (attention_uses_cudnn; the arena's alignment assumed) rounds dout
 *     (cuda/cuda_attention_cudnn.cu backward); the flash kernels read the fp32 dout (none).
 *     The bf16 forward (cuDNN or flash at these head widths) rounds nothing.
 * The model: the paper preset's structure (jobs/pretrain_vitb_paper.cfg: alice, both masked
 * and both intact views, CASA and l_dv on, encoder depth 12 at head width 64, decoder depth 4
 * at head width 32, CASA's one head wider than any flash kernel's) at tiny widths: the counts
 * depend on the calls and their head widths, not on the sizes. Asserted:
 *  - attention_kernel = auto (the default, cuDNN attention): 45 launches per step: 13 from the
 *    fp32 linear layers outside the stacks (8 forward, 5 backward), 3 from CASA's q, k, v
 *    backward (dy), 13 from CASA's attention, and 16 from the stacks' attention backward
 *    (cuDNN's dout, one per student block: 12 encoder + 4 decoder). Run 8's kernel profile
 *    (H200, docs/PERFORMANCE.md) counted 57, and so did this counter on that code: since,
 *    CASA's LayerNorms store bf16 outputs with bf16 activations (src/models/casa.h), so the x
 *    of the q, k, v layers is rounded by no launch: 8 fewer (forward: q once, k and v for
 *    student and teacher, 5; the weight gradients of q, k, v, 3), 49; then the decoder's final
 *    LayerNorm stores H in bf16 (src/models/mae_decoder.h), read as it is by pred's forward and
 *    weight gradient and by phi's fc1 (no input copy): 3 fewer, 46; then the patch embeddings'
 *    inputs are stored in bf16 by their producers (src/models/vit.h, pretrain_model.h: the
 *    student's visible tokens by gather_rows_bf16, the target's patches by patchify_bf16): 3
 *    fewer (the student's forward and weight gradient, the target's forward), 43; then the
 *    teacher ran the EMA decoder (teacher_decoder = full: psi reads its bf16 H, no input
 *    copy), 42; then the heads' last layers multiply by their row-normalised weights
 *    (head_norm_last, an activation without a bf16 copy: phi's and psi's forward and phi's
 *    dx GEMM round it), 45 (with casa_kv = features, off by default, 49: H stays fp32 for
 *    CASA's LayerNorm, so pred's forward and weight gradient and both heads' fc1 round it);
 *  - attention_kernel = fused (the own flash kernels): 29, the stacks' 16 gone. */
#include <string.h>

#include "core/check.h"
#include "core/rng.h"
#include "models/pretrain_model.h"
#include "ops/attention_choice.h"
#include "test.h"

/* Where the launches come from: the entries of the table that round on the CUDA backend. */
typedef enum {
    SRC_TO_BF16, SRC_LINEAR_FWD, SRC_LINEAR_BWD, SRC_GEMM, SRC_ATTENTION_FWD, SRC_ATTENTION_BWD,
    SRC_LINEAR_BF16_BWD, SRC_ATTENTION_BF16_BWD, SRC_UNMODELLED, SRC_COUNT
} Source;

static const char *const kSourceName[SRC_COUNT] = {
    "to_bf16", "linear_fwd (fp32 entry)", "linear_bwd (fp32 entry)", "gemm (fp32 entry)",
    "attention_fwd (fp32 entry)", "attention_bwd (fp32 entry)",
    "linear_bwd_bf16 (/ _dx16) / linear_gelu_bwd_bf16 (/ _dy16)", "attention_bwd_bf16 / _grad16",
    "calls on a path no rule here covers"};

enum { MAX_WEIGHT_BUFFERS = 8 };

static struct {
    const AliceBackend *cpu;
    int kernel;  /* GpuAttentionKernel the counted CUDA backend runs with */
    long launches[SRC_COUNT];
    const float *weights[MAX_WEIGHT_BUFFERS];
    size_t weight_floats[MAX_WEIGHT_BUFFERS];
    int weight_buffers;
} g;

static void count(Source s, long n) { g.launches[s] += n; }

/* R1: 1 when the operand is NOT inside a weight buffer (it is rounded), 0 when it is. */
static int rounded(const float *p)
{
    for (int i = 0; i < g.weight_buffers; i++)
        if (p >= g.weights[i] && p < g.weights[i] + g.weight_floats[i]) return 0;
    return 1;
}

static void counting_weights_hint(const float *data, size_t n)
{
    ALICE_ASSERT(g.weight_buffers < MAX_WEIGHT_BUFFERS, "more weight buffers than counted");
    g.weights[g.weight_buffers] = data;
    g.weight_floats[g.weight_buffers++] = n;
    g.cpu->weights_hint(data, n);
}

static void counting_to_bf16(bf16_t *y, const float *x, size_t n)
{
    count(SRC_TO_BF16, n > 0);  /* R4 (no launch for nothing) */
    g.cpu->to_bf16(y, x, n);
}

static void counting_linear_fwd(float *y, const float *x, const float *W, const float *b,
                                int rows, int in, int out)
{
    count(SRC_LINEAR_FWD, rounded(x) + rounded(W));  /* R1 */
    g.cpu->linear_fwd(y, x, W, b, rows, in, out);
}

/* R2's launches for dy and W, given whether a GEMM runs (dx or dW). */
static long linear_bwd_dy_w(const void *dx, const float *dW, const float *db, const float *dy,
                            const float *W)
{
    if (!dx && !dW) return 0;
    return (db ? 0 : rounded(dy)) + (dx ? rounded(W) : 0);
}

static void counting_linear_bwd(float *dx, float *dW, float *db, const float *dy, const float *x,
                                const float *W, int rows, int in, int out)
{
    count(SRC_LINEAR_BWD, linear_bwd_dy_w(dx, dW, db, dy, W) + (dW ? rounded(x) : 0));  /* R2 */
    g.cpu->linear_bwd(dx, dW, db, dy, x, W, rows, in, out);
}

static void counting_gemm(int transA, int transB, int M, int N, int K, float alpha,
                          const float *A, int lda, long strideA, const float *B, int ldb,
                          long strideB, float beta, float *C, int ldc, long strideC, int batch)
{
    count(SRC_GEMM, rounded(A) + rounded(B));  /* R1 */
    g.cpu->gemm(transA, transB, M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc,
                strideC, batch);
}

static void counting_linear_bwd_bf16(float *dx, float *dW, float *db, const float *dy,
                                     const bf16_t *x, const float *W, int rows, int in, int out)
{
    count(SRC_LINEAR_BF16_BWD, linear_bwd_dy_w(dx, dW, db, dy, W));  /* R2, x bf16 */
    g.cpu->linear_bwd_bf16(dx, dW, db, dy, x, W, rows, in, out);
}

static void counting_linear_bwd_bf16_dx16(bf16_t *dx, float *dW, float *db, const float *dy,
                                          const bf16_t *x, const float *W, int rows, int in,
                                          int out)
{
    count(SRC_LINEAR_BF16_BWD, linear_bwd_dy_w(dx, dW, db, dy, W));  /* R2, x bf16 */
    g.cpu->linear_bwd_bf16_dx16(dx, dW, db, dy, x, W, rows, in, out);
}

/* R3 for either dy_act type: fused, or the unfused sequence whose linear_bwd_bf16 rounds
 * dh_scratch (fp32) */
static void count_linear_gelu_bwd(const float *dx, const float *dW, const float *db,
                                  const float *dh_scratch, const float *W)
{
    const int fused = db && (dx || dW);
    if (!fused) count(SRC_LINEAR_BF16_BWD, linear_bwd_dy_w(dx, dW, db, dh_scratch, W));
    else if (dx) count(SRC_LINEAR_BF16_BWD, rounded(W));
}

static void counting_linear_gelu_bwd_bf16(float *dx, float *dW, float *db, const float *dy_act,
                                          const bf16_t *h, float *dh_scratch, const bf16_t *x,
                                          const float *W, int rows, int in, int out)
{
    count_linear_gelu_bwd(dx, dW, db, dh_scratch, W);
    g.cpu->linear_gelu_bwd_bf16(dx, dW, db, dy_act, h, dh_scratch, x, W, rows, in, out);
}

static void counting_linear_gelu_bwd_bf16_dy16(float *dx, float *dW, float *db,
                                               const bf16_t *dy_act, const bf16_t *h,
                                               float *dh_scratch, const bf16_t *x,
                                               const float *W, int rows, int in, int out)
{
    count_linear_gelu_bwd(dx, dW, db, dh_scratch, W);
    g.cpu->linear_gelu_bwd_bf16_dy16(dx, dW, db, dy_act, h, dh_scratch, x, W, rows, in, out);
}

/* Whether the flash kernels (or cuDNN, with the same saved statistics) take a call of head
 * width Dh in bf16: attention_choice.h, as cuda_flash_attention_applies decides it. */
static int flash_applies(int Dh) { return attention_saves_row_stats(g.kernel, 1, Dh); }

static void counting_attention_fwd(float *out, float *saved, const float *q, const float *k,
                                   const float *v, int B, int H, int Tq, int Tk, int Dh, int ldq,
                                   int ldkv)
{
    /* R5 (the forward-only flash tile of cuda_attention_fwd needs no rounding either) */
    const int flash = flash_applies(Dh) || (!saved && attention_flash_fast(Dh));
    if (!flash) count(SRC_ATTENTION_FWD, 4);
    g.cpu->attention_fwd(out, saved, q, k, v, B, H, Tq, Tk, Dh, ldq, ldkv);
}

static void counting_attention_bwd(float *dq, float *dk, float *dv, const float *dout,
                                   const float *q, const float *k, const float *v,
                                   const float *out, const float *saved, int B, int H, int Tq,
                                   int Tk, int Dh, int ldq, int ldkv)
{
    if (!flash_applies(Dh) && (dq || dk || dv))  /* R5 */
        count(SRC_ATTENTION_BWD, (dk != NULL) + (dq != NULL) + (dq || dk) + 1 + (dv != NULL));
    g.cpu->attention_bwd(dq, dk, dv, dout, q, k, v, out, saved, B, H, Tq, Tk, Dh, ldq, ldkv);
}

/* R6: cuDNN rounds dout; the flash kernels round nothing; the GEMM path is not modelled. */
static void count_bf16_attention_bwd(int Dh)
{
    if (attention_uses_cudnn(g.kernel, 1, Dh, 1)) count(SRC_ATTENTION_BF16_BWD, 1);
    else if (!flash_applies(Dh)) count(SRC_UNMODELLED, 1);
}

static void counting_attention_bwd_bf16(float *dq, float *dk, float *dv, const float *dout,
                                        const bf16_t *q, const bf16_t *k, const bf16_t *v,
                                        const bf16_t *out, const float *saved, int B, int H,
                                        int Tq, int Tk, int Dh, int ldq, int ldkv)
{
    count_bf16_attention_bwd(Dh);
    g.cpu->attention_bwd_bf16(dq, dk, dv, dout, q, k, v, out, saved, B, H, Tq, Tk, Dh, ldq, ldkv);
}

static void counting_attention_bwd_bf16_grad16(bf16_t *dq, bf16_t *dk, bf16_t *dv,
                                               const float *dout, const bf16_t *q,
                                               const bf16_t *k, const bf16_t *v,
                                               const bf16_t *out, const float *saved, int B,
                                               int H, int Tq, int Tk, int Dh, int ldq, int ldkv)
{
    count_bf16_attention_bwd(Dh);
    g.cpu->attention_bwd_bf16_grad16(dq, dk, dv, dout, q, k, v, out, saved, B, H, Tq, Tk, Dh,
                                     ldq, ldkv);
}

static void counting_attention_fwd_bf16(bf16_t *out, float *saved, const bf16_t *q,
                                        const bf16_t *k, const bf16_t *v, int B, int H, int Tq,
                                        int Tk, int Dh, int ldq, int ldkv)
{
    /* cuDNN and both flash forwards take bf16 q, k, v as they are; the GEMM path rounds P */
    if (!attention_uses_cudnn(g.kernel, 1, Dh, 1) && !flash_applies(Dh) &&
        !(!saved && attention_flash_fast(Dh)))
        count(SRC_UNMODELLED, 1);
    g.cpu->attention_fwd_bf16(out, saved, q, k, v, B, H, Tq, Tk, Dh, ldq, ldkv);
}

static AliceBackend counting_backend(const AliceBackend *cpu)
{
    AliceBackend t = *cpu;
    t.weights_hint = counting_weights_hint;
    t.to_bf16 = counting_to_bf16;
    t.linear_fwd = counting_linear_fwd;
    t.linear_bwd = counting_linear_bwd;
    t.gemm = counting_gemm;
    t.linear_bwd_bf16 = counting_linear_bwd_bf16;
    t.linear_gelu_bwd_bf16 = counting_linear_gelu_bwd_bf16;
    t.linear_bwd_bf16_dx16 = counting_linear_bwd_bf16_dx16;
    t.linear_gelu_bwd_bf16_dy16 = counting_linear_gelu_bwd_bf16_dy16;
    t.attention_fwd = counting_attention_fwd;
    t.attention_bwd = counting_attention_bwd;
    t.attention_fwd_bf16 = counting_attention_fwd_bf16;
    t.attention_bwd_bf16 = counting_attention_bwd_bf16;
    t.attention_bwd_bf16_grad16 = counting_attention_bwd_bf16_grad16;
    return t;
}

/* The paper preset (its method, views, losses, CASA, depths) with tiny widths: head widths
 * 192 / 3 = 64 (encoder) and 96 / 3 = 32 (decoder), as the preset's 768 / 12 and 384 / 12;
 * CASA's one head 144 wide (preset: 768), wider than any flash kernel's 128 as the preset's is.
 * tests/run.sh runs the tests from the repository root, where the preset is. */
static const char *const kPaperPreset = "jobs/pretrain_vitb_paper.cfg";
static const char *const tiny_widths[][2] = {
    {"device", "cpu"}, {"crop", "16,16,8"}, {"patch", "4"}, {"embed_dim", "192"},
    {"heads", "3"}, {"mlp_dim", "96"}, {"dec_dim", "96"}, {"dec_heads", "3"},
    {"dec_mlp_dim", "64"}, {"head_hidden", "32"}, {"head_bottleneck", "16"}, {"head_out", "24"},
    {"casa_dim", "144"}, {"batch", "1"},
};

static void paper_structure(Config *cfg)
{
    config_defaults(cfg);
    config_load_file(cfg, kPaperPreset);
    for (size_t i = 0; i < sizeof tiny_widths / sizeof tiny_widths[0]; i++)
        config_set(cfg, tiny_widths[i][0], tiny_widths[i][1], "test", 0);
}

/* The launches of one step (forward and backward) with the CUDA backend's attention_kernel. */
static long count_step(int kernel, long by_source[SRC_COUNT])
{
    memset(&g, 0, sizeof g);
    g.cpu = backend_cpu();
    g.kernel = kernel;
    const AliceBackend be = counting_backend(g.cpu);
    Config cfg;
    paper_structure(&cfg);
    PretrainModel m;
    pretrain_model_init(&m, &cfg, &be, cfg.batch);
    const size_t vox = (size_t)m.B * m.dims[0] * m.dims[1] * m.dims[2];
    float *vol = xmalloc(vox * VIEW_COUNT * sizeof(float));
    RngStream rng;
    rng_init(&rng, 3, 0, 0, RNG_TEST);
    for (size_t i = 0; i < vox * VIEW_COUNT; i++) vol[i] = rng_uniform(&rng);
    const float *views[VIEW_COUNT] = {vol, vol + vox, vol + 2 * vox, vol + 3 * vox};
    pretrain_model_set_views(&m, views);
    pretrain_model_draw_masks(&m, 1, 0);
    memset(g.launches, 0, sizeof g.launches);  /* the model's set-up is no step */
    const LossTerms loss = pretrain_model_forward_backward(&m);
    TEST_CHECK(loss.loss == loss.loss, "the counted step's loss is NaN");
    long total = 0;
    for (int s = 0; s < SRC_COUNT; s++) {
        by_source[s] = g.launches[s];
        total += g.launches[s];
    }
    free(vol);
    pretrain_model_free(&m);
    return total;
}

static void report(const char *what, long total, const long by_source[SRC_COUNT])
{
    printf("  %s: %ld rounding launches per step\n", what, total);
    for (int s = 0; s < SRC_COUNT; s++)
        if (by_source[s]) printf("    %-40s %3ld\n", kSourceName[s], by_source[s]);
}

static int test_paper_step_cudnn(void)
{
    Config cfg;
    paper_structure(&cfg);
    /* what run 8 profiled; another preset changes the counts below (the stacks' term is
     * depth + dec_depth) */
    TEST_CHECK(strcmp(cfg.method, "alice") == 0 && strcmp(cfg.precision, "bf16") == 0 &&
               cfg.depth == 12 && cfg.dec_depth == 4 && cfg.use_casa && cfg.use_dv &&
               cfg.inter_volume && strcmp(cfg.teacher_decoder, "full") == 0,
               "%s is no longer the preset these counts are for (alice, bf16, depth 12, "
               "dec_depth 4, CASA, l_dv, inter-volume pairs, teacher_decoder full)",
               kPaperPreset);
    long by[SRC_COUNT];
    const long total = count_step(ATTN_KERNEL_AUTO, by);
    report("attention_kernel = auto (cuDNN)", total, by);
    /* fp32 linear layers outside the stacks: 6 forward (x of the target's and the online
     * decoder_embed, both last layers and both zetas), 4 backward (x of zeta, phi's last layer
     * and decoder_embed; dy of phi's last layer). pred and phi read the decoder's bf16 H, psi
     * the target decoder's (teacher_decoder = full; with embed psi's fp32 input took a 7th
     * copy), both patch embeddings bf16 inputs made by their producers (no launch). The
     * target decoder's blocks, forward only, add none. */
    /* head_norm_last (the default): both last layers multiply by their row-normalised
     * weight, an activation, not a weight buffer with a bf16 copy: rounded in phi's and
     * psi's forward and in phi's dx GEMM, 3 more (out x bottleneck each, 64 K values). */
    TEST_CHECK(cfg.head_norm_last, "%s no longer normalises the heads' last layers, which the "
               "counts below include", kPaperPreset);
    TEST_CHECK(by[SRC_TO_BF16] + by[SRC_LINEAR_FWD] == 8, "fp32 linear forwards: %ld launches, "
               "8 expected", by[SRC_TO_BF16] + by[SRC_LINEAR_FWD]);
    TEST_CHECK(by[SRC_LINEAR_BWD] == 5, "fp32 linear backwards: %ld launches, 5 expected",
               by[SRC_LINEAR_BWD]);
    /* CASA's q, k, v layers read their bf16 LayerNorm outputs; their backward rounds dy (no
     * bias gradient to round it in) */
    TEST_CHECK(by[SRC_LINEAR_BF16_BWD] == 3, "CASA q, k, v backward: %ld launches, 3 expected",
               by[SRC_LINEAR_BF16_BWD]);
    /* CASA's attention: student and teacher forward 4 each, the student's backward 5 */
    TEST_CHECK(by[SRC_ATTENTION_FWD] + by[SRC_ATTENTION_BWD] == 13, "CASA attention: %ld "
               "launches, 13 expected", by[SRC_ATTENTION_FWD] + by[SRC_ATTENTION_BWD]);
    /* cuDNN's dout in every student block's attention backward: 12 + 4 */
    TEST_CHECK(by[SRC_ATTENTION_BF16_BWD] == 16, "stack attention backward: %ld launches, 16 "
               "expected", by[SRC_ATTENTION_BF16_BWD]);
    TEST_CHECK(by[SRC_GEMM] == 0 && by[SRC_UNMODELLED] == 0, "launches where none were "
               "expected: gemm %ld, unmodelled %ld", by[SRC_GEMM], by[SRC_UNMODELLED]);
    TEST_CHECK(total == 45, "%ld launches per step, 45 expected (run 8's kernel profile: 57, "
               "before CASA's and the decoder's final LayerNorms and the patch embeddings' "
               "producers wrote bf16, with the teacher_decoder = embed teacher and the plain "
               "last layers)", total);
    return 0;
}

static int test_paper_step_flash(void)
{
    long by[SRC_COUNT];
    const long total = count_step(ATTN_KERNEL_FUSED, by);
    report("attention_kernel = fused (flash kernels)", total, by);
    TEST_CHECK(by[SRC_ATTENTION_BF16_BWD] == 0, "the flash kernels read fp32 dout: %ld launches",
               by[SRC_ATTENTION_BF16_BWD]);
    TEST_CHECK(total == 29, "%ld launches per step with the flash kernels, 29 expected", total);
    return 0;
}

int main(void)
{
    TEST_RUN(test_paper_step_cudnn);
    TEST_RUN(test_paper_step_flash);
    return test_finish();
}
