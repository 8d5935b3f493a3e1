/* Drop-path's pieces (src/nn/drop_path.h, the backend op add_group_scaled) against hand values
 * and the definitions, on the CPU backend:
 *  - the rates: timm's linspace(0, r, depth): depth 5 at 0.2 gives 0, 0.05, 0.1, 0.15, 0.2;
 *    depth 1 gives 0 (no block drops);
 *  - the draws over 20000 samples at rates 0, 0.15, 0.3: each branch dropped with its block's
 *    rate (binomial standard deviation at most 0.0033; bound 0.015), the two branches of a
 *    block independent (both dropped with rate^2), block 0 never, a kept branch scaled by
 *    exactly 1 / (1 - rate) as a float;
 *  - add_group_scaled by hand, with and without base, in place;
 *  - the pre-training model's draws: sample s of the merged student batch uses sample word
 *    2g + v (global sample g, view v) and the step, as docs/MODEL.md says (recomputed here
 *    from rng.h), so a rank whose first sample is 1 draws the single-rank run's sample 1, and
 *    another step draws other scales. */
#include <mpi.h>
#include <string.h>

#include "core/check.h"
#include "models/pretrain_model.h"
#include "nn/drop_path.h"
#include "test.h"
#include "test_config.h"

static int test_rates(void)
{
    float r[5];
    drop_path_rates(r, 5, 0.2f);
    const float want[5] = {0.0f, 0.05f, 0.1f, 0.15f, 0.2f};
    for (int i = 0; i < 5; i++) TEST_CLOSE(r[i], want[i], 1e-6, 0, "rate of block i, depth 5");
    TEST_CHECK(drop_path_any(r, 5), "depth 5 at 0.2 drops");
    drop_path_rates(r, 1, 0.5f);
    TEST_CHECK(r[0] == 0.0f && !drop_path_any(r, 1), "depth 1: block 0's rate is 0, no drops");
    drop_path_rates(r, 4, 0.0f);
    TEST_CHECK(!drop_path_any(r, 4), "rate 0: no drops");
    return 0;
}

static int test_draws(void)
{
    enum { DEPTH = 3, SAMPLES = 20000 };
    float rates[DEPTH];
    drop_path_rates(rates, DEPTH, 0.3f);
    float *sc = xmalloc((size_t)DEPTH * DROP_BRANCH_COUNT * SAMPLES * sizeof(float));
    for (int s = 0; s < SAMPLES; s++) {
        RngStream rng;
        rng_init(&rng, 7, 3, (uint32_t)s, RNG_DROP_PATH);
        drop_path_draw_sample(sc, rates, DEPTH, SAMPLES, s, &rng);
    }
    for (int i = 0; i < DEPTH; i++) {
        const float keep_scale = 1.0f / (1.0f - rates[i]);
        long dropped[DROP_BRANCH_COUNT] = {0}, both = 0, bad = 0;
        for (int s = 0; s < SAMPLES; s++) {
            int d[DROP_BRANCH_COUNT];
            for (int br = 0; br < DROP_BRANCH_COUNT; br++) {
                const float v = sc[drop_path_index(i, (DropBranch)br, SAMPLES, s)];
                d[br] = v == 0.0f;
                if (!d[br] && v != keep_scale) bad++;
                dropped[br] += d[br];
            }
            both += d[DROP_BRANCH_ATTN] && d[DROP_BRANCH_MLP];
        }
        TEST_CHECK(bad == 0, "block %d: %ld kept branches not scaled by 1 / (1 - %g)", i, bad,
                   rates[i]);
        for (int br = 0; br < DROP_BRANCH_COUNT; br++)
            TEST_CLOSE((double)dropped[br] / SAMPLES, rates[i], 0, 0.015,
                       "fraction of a branch dropped = the block's rate");
        TEST_CLOSE((double)both / SAMPLES, (double)rates[i] * rates[i], 0, 0.015,
                   "both branches dropped = rate^2 (independent draws)");
        if (i == 0) TEST_CHECK(dropped[0] + dropped[1] == 0, "block 0 dropped a branch");
    }
    free(sc);
    return 0;
}

static int test_add_group_scaled(void)
{
    const AliceBackend *be = backend_cpu();
    const float base[6] = {1, 2, 3, 4, 5, 6}, y[6] = {10, 20, 30, 40, 50, 60}, scale[2] = {0, 2};
    float out[6];
    be->add_group_scaled(out, base, y, scale, 2, 3);
    const float want[6] = {1, 2, 3, 84, 105, 126};
    TEST_CHECK(memcmp(out, want, sizeof want) == 0, "base + scale y: %g %g %g %g %g %g", out[0],
               out[1], out[2], out[3], out[4], out[5]);
    be->add_group_scaled(out, NULL, y, scale, 2, 3);
    const float want_scaled[6] = {0, 0, 0, 80, 100, 120};
    TEST_CHECK(memcmp(out, want_scaled, sizeof want_scaled) == 0, "scale y without base");
    float inplace[6];
    memcpy(inplace, y, sizeof y);
    be->add_group_scaled(inplace, base, inplace, scale, 2, 3);
    TEST_CHECK(memcmp(inplace, want, sizeof want) == 0, "in place on y");
    memcpy(inplace, base, sizeof base);
    be->add_group_scaled(inplace, inplace, y, scale, 2, 3);
    TEST_CHECK(memcmp(inplace, want, sizeof want) == 0, "in place on base");
    return 0;
}

static const char *const tiny[][2] = {
    {"crop", "16,16,8"}, {"patch", "4"}, {"embed_dim", "24"}, {"depth", "3"}, {"heads", "2"},
    {"mlp_dim", "48"}, {"dec_dim", "12"}, {"dec_depth", "1"}, {"dec_heads", "2"},
    {"dec_mlp_dim", "24"}, {"head_hidden", "16"}, {"head_bottleneck", "8"}, {"head_out", "16"},
    {"casa_dim", "12"}, {"batch", "2"}, {"drop_path", "0.4"},
};

/* The model's staged scales of merged sample s, against a draw keyed as documented. */
static int model_sample_matches(const PretrainModel *m, int s, long step, uint32_t word)
{
    const int depth = m->enc.stack.depth, S = m->masked.S;
    float *want = xmalloc((size_t)depth * DROP_BRANCH_COUNT * S * sizeof(float));
    RngStream rng;
    rng_init(&rng, (uint64_t)m->cfg.seed, (uint32_t)step, word, RNG_DROP_PATH);
    drop_path_draw_sample(want, m->masked.enc.st.drop_rate, depth, S, s, &rng);
    int same = 1;
    for (int i = 0; i < depth; i++)
        for (int br = 0; br < DROP_BRANCH_COUNT; br++) {
            const long k = drop_path_index(i, (DropBranch)br, S, s);
            same &= want[k] == m->drop_host[k];
        }
    free(want);
    return same;
}

static int test_model_keys(void)
{
    Config cfg;
    TEST_CONFIG(&cfg, tiny);
    PretrainModel one, two;
    pretrain_model_init(&one, &cfg, backend_cpu(), 2);   /* one rank, global samples 0, 1 */
    pretrain_model_init(&two, &cfg, backend_cpu(), 1);   /* the second rank: global sample 1 */
    TEST_CHECK(one.drop_host && one.masked.enc.st.drop_scale, "drop_path = 0.4 lays out scales");
    pretrain_model_draw_masks(&one, 5, 0);
    pretrain_model_draw_masks(&two, 5, 1);
    /* merged order: [view 0's samples][view 1's samples] */
    for (int v = 0; v < MASKED_VIEWS; v++)
        for (int b = 0; b < 2; b++)
            TEST_CHECK(model_sample_matches(&one, v * 2 + b, 5, (uint32_t)(2 * b + v)),
                       "1 rank: view %d sample %d not keyed by word 2g + v", v, b);
    for (int v = 0; v < MASKED_VIEWS; v++)
        TEST_CHECK(model_sample_matches(&two, v, 5, (uint32_t)(2 * 1 + v)),
                   "rank with first sample 1: view %d not keyed by global sample 1", v);
    const size_t n = tstack_drop_scale_count(&one.enc.stack, &one.masked.enc.st);
    TEST_CHECK(n == (size_t)3 * DROP_BRANCH_COUNT * 4, "scales: %zu floats", n);
    float *step5 = xmalloc(n * sizeof(float));
    memcpy(step5, one.drop_host, n * sizeof(float));
    pretrain_model_draw_masks(&one, 6, 0);
    TEST_CHECK(memcmp(step5, one.drop_host, n * sizeof(float)) != 0, "step 6 drew step 5's scales");
    TEST_CHECK(model_sample_matches(&one, 3, 6, 2 * 1 + 1), "step 6 not keyed by its step");
    /* what the stack reads is what was staged */
    float *dev = xmalloc(n * sizeof(float));
    backend_cpu()->download(dev, one.masked.enc.st.drop_scale, n * sizeof(float));
    TEST_CHECK(memcmp(dev, one.drop_host, n * sizeof(float)) == 0, "scales not uploaded");
    free(dev);
    free(step5);
    pretrain_model_free(&one);
    pretrain_model_free(&two);
    /* off: nothing laid out */
    config_set(&cfg, "drop_path", "0", "test", 0);
    PretrainModel off;
    pretrain_model_init(&off, &cfg, backend_cpu(), 2);
    TEST_CHECK(!off.drop_host && !off.masked.enc.st.drop_scale, "drop_path = 0 lays out scales");
    pretrain_model_free(&off);
    return 0;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    TEST_RUN(test_rates);
    TEST_RUN(test_draws);
    TEST_RUN(test_add_group_scaled);
    TEST_RUN(test_model_keys);
    MPI_Finalize();
    return test_finish();
}
