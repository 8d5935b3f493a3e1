/* AdamW over a whole ParamSet in one backend call (train/optim.c adamw_step), the per-tensor
 * weight-decay flags carried by the set's decay bitmask (ops/decay_mask.h), on the CPU backend:
 *  - the mask params_allocate builds has exactly the bits of info[].decay (hand-written words
 *    for a tiny set; bit by bit against info[] for a larger one), and untrainable sets get none;
 *  - three adamw_step calls on a set of odd-sized tensors with mixed flags and padding follow
 *    per-tensor AdamW written out here in double from PyTorch's formula (torch.optim.AdamW:
 *    decoupled decay, bias corrections), with a weight decay large enough that a flag read
 *    wrong is 1e3 times the tolerance;
 *    The calls are at steps 1, 3 and 4 of the schedules, step 2 skipped (on_nonfinite = skip):
 *    the bias corrections count the updates applied (1, 2, 3), as PyTorch's per-tensor step does;
 *  - the padding between tensors (param, gradient, both moments) stays exactly zero;
 *  - the one call gives the same bits as the former per-tensor calls (weight_decay or 0 per
 *    tensor, no mask), so nothing moved beyond the call count;
 *  - clip_mode = per_tensor (DINO's clip_gradients): three updates equal AdamW on gradients
 *    each tensor of which was scaled on the host by clip / (its norm + 1e-6) where below 1,
 *    norms in double; some tensors clipped, some not, and global clipping ends elsewhere. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/check.h"
#include "nn/params.h"
#include "ops/decay_mask.h"
#include "test.h"
#include "test_config.h"
#include "train/optim.h"

static const AliceBackend *be;

/* The mask of ps as the host sees it (words malloc'd). */
static uint32_t *mask_download(const ParamSet *ps)
{
    const size_t words = decay_mask_words(ps->total);
    uint32_t *host = xmalloc((words ? words : 1) * sizeof(uint32_t));
    be->download(host, ps->decay_mask, words * sizeof(uint32_t));
    return host;
}

static int test_mask_tiny_by_hand(void)
{
    ParamSet ps;
    params_init_registry(&ps);
    /* offsets (PARAM_ALIGN_FLOATS = 32: each tensor on a mask word): a 0, b 32, c 64, d 96,
     * e 128; total 160 = 5 words */
    params_add1(&ps, "a", 3, 1, INIT_ZEROS);
    params_add1(&ps, "b", 5, 0, INIT_ZEROS);
    params_add2(&ps, "c", 4, 5, 1, INIT_ZEROS);
    params_add1(&ps, "d", 1, 0, INIT_ZEROS);
    params_add1(&ps, "e", 1, 1, INIT_ZEROS);
    params_allocate(&ps, be, 1);
    TEST_CHECK(ps.total == 160, "total %zu, expected 160", ps.total);
    TEST_CHECK(ps.decay_mask != NULL, "a trainable set has a decay mask");
    if (!ps.decay_mask) return 0;
    /* a: bits 0-2 of word 0; b (32-36) clear; c: bits 64-83 = word 2 bits 0-19; d (bit 96)
     * clear; e: bit 128 = word 4 bit 0. */
    const uint32_t expected[5] = {0x00000007u, 0u, 0x000fffffu, 0u, 0x00000001u};
    uint32_t *got = mask_download(&ps);
    for (int w = 0; w < 5; w++)
        TEST_CHECK(got[w] == expected[w], "mask word %d: 0x%08x, expected 0x%08x", w, got[w],
                   expected[w]);
    /* decay_bit reads the same layout */
    const int bits[][2] = {{0, 1}, {2, 1}, {3, 0}, {31, 0}, {32, 0}, {36, 0}, {63, 0}, {64, 1},
                           {83, 1}, {84, 0}, {96, 0}, {127, 0}, {128, 1}, {129, 0}, {159, 0}};
    for (size_t k = 0; k < sizeof bits / sizeof bits[0]; k++)
        TEST_CHECK(decay_bit(got, (size_t)bits[k][0]) == bits[k][1], "decay_bit(%d) = %d",
                   bits[k][0], decay_bit(got, (size_t)bits[k][0]));
    TEST_CHECK(decay_bits(got, 64, 4) == 0xfu && decay_bits(got, 32, 4) == 0u &&
               decay_bits(got, 0, 4) == 0x7u && decay_bits(got, 128, 4) == 0x1u &&
               decay_bits(got, 80, 4) == 0xfu && decay_bits(got, 84, 4) == 0u,
               "decay_bits of 4 elements");
    TEST_CHECK(decay_bit(NULL, 12345) == 1 && decay_bits(NULL, 8, 4) == 0xfu,
               "a NULL mask means every element decays");
    free(got);
    params_free(&ps);

    /* An untrainable set (EMA target, frozen weights) has no moments and no mask. */
    params_init_registry(&ps);
    params_add1(&ps, "w", 7, 1, INIT_ZEROS);
    params_allocate(&ps, be, 0);
    TEST_CHECK(ps.decay_mask == NULL, "an untrainable set has no decay mask");
    params_free(&ps);
    return 0;
}

/* Odd sizes, mixed flags, padding after every tensor but the 16-multiple; the two large ones
 * take the total past CPU_OMP_MIN_ELEMENTS, so the OpenMP path runs. */
static void build_set(ParamSet *ps)
{
    static const struct { const char *name; int ndim; int shape[4]; int decay; } t[] = {
        {"w0", 1, {7}, 1},          {"b0", 2, {3, 11}, 0},    {"w1", 1, {1}, 1},
        {"norm", 1, {50}, 0},       {"w2", 1, {17}, 1},       {"conv", 3, {5, 5, 5}, 1},
        {"b1", 1, {64}, 0},         {"w3", 4, {2, 3, 5, 7}, 1}, {"big", 2, {201, 203}, 1},
        {"big_bias", 1, {30011}, 0}, {"last", 1, {1}, 0},
    };
    params_init_registry(ps);
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        params_add(ps, t[i].name, t[i].ndim, t[i].shape, t[i].decay, INIT_ZEROS);
    params_allocate(ps, be, 1);
}

static int test_mask_matches_info(void)
{
    ParamSet ps;
    build_set(&ps);
    uint32_t *mask = mask_download(&ps);
    size_t bad = 0, set = 0;
    char *want = xcalloc(ps.total, 1);
    for (int i = 0; i < ps.count; i++)
        for (size_t k = 0; k < ps.info[i].numel; k++) want[ps.info[i].offset + k] = (char)ps.info[i].decay;
    for (size_t e = 0; e < ps.total; e++) {
        const int bit = (int)((mask[e / 32] >> (e % 32)) & 1u);
        bad += bit != want[e];
        set += (size_t)bit;
    }
    /* and no bit past the end in the last word */
    const size_t words = decay_mask_words(ps.total);
    for (size_t e = ps.total; e < words * 32; e++) bad += (mask[e / 32] >> (e % 32)) & 1u;
    TEST_CHECK(bad == 0, "decay mask: %zu of %zu bits differ from info[].decay", bad, ps.total);
    TEST_CHECK(set > 0 && set < ps.total, "both bit values present (%zu set)", set);
    free(want);
    free(mask);
    params_free(&ps);
    return 0;
}

static const char *const optim_keys[][2] = {
    {"lr", "0.02"}, {"weight_decay", "0.5"}, {"beta1", "0.9"}, {"beta2", "0.95"},
    {"adam_eps", "1e-8"},
};

/* Random values into the tensors of a host image of a flat buffer (padding left 0). */
static void fill_tensors(const ParamSet *ps, float *host, uint32_t stream, float scale)
{
    memset(host, 0, ps->total * sizeof(float));
    for (int i = 0; i < ps->count; i++) {
        float *x = test_randn(77, stream * 1000u + (uint32_t)i, ps->info[i].numel, scale);
        memcpy(host + ps->info[i].offset, x, ps->info[i].numel * sizeof(float));
        free(x);
    }
}

static size_t nonzero_padding(const ParamSet *ps, const float *host)
{
    char *inside = xcalloc(ps->total, 1);
    for (int i = 0; i < ps->count; i++) memset(inside + ps->info[i].offset, 1, ps->info[i].numel);
    size_t bad = 0;
    for (size_t e = 0; e < ps->total; e++) bad += !inside[e] && host[e] != 0.0f;
    free(inside);
    return bad;
}

/* torch.optim.AdamW on tensor t in double, its step t_step (1-based): p *= 1 - lr wd (decay
 * tensors), the moments, the bias-corrected update; grad the host image of the gradients. */
static void adamw_tensor_double(const Config *cfg, const ParamInfo *t, const float *grad,
                                double *p, double *m, double *v, long t_step)
{
    const double lr = cfg->lr, b1 = cfg->beta1, b2 = cfg->beta2, eps = cfg->adam_eps;
    const double wd = t->decay ? cfg->weight_decay : 0.0;
    const double bc1 = 1.0 - pow(b1, (double)t_step), bc2 = 1.0 - pow(b2, (double)t_step);
    for (size_t k = 0; k < t->numel; k++) {
        const size_t e = t->offset + k;
        const double g = grad[e];
        p[e] *= 1.0 - lr * wd;
        m[e] = b1 * m[e] + (1.0 - b1) * g;
        v[e] = b2 * v[e] + (1.0 - b2) * g * g;
        p[e] -= lr * (m[e] / bc1) / (sqrt(v[e] / bc2) + eps);
    }
}

static int test_step_matches_pytorch_formula(void)
{
    Config cfg;
    TEST_CONFIG(&cfg, optim_keys);
    ParamSet ps;
    build_set(&ps);
    const size_t n = ps.total, bytes = n * sizeof(float);
    float *host = xmalloc(bytes), *hm = xmalloc(bytes), *hv = xmalloc(bytes);
    double *p = xcalloc(n, sizeof(double)), *m = xcalloc(n, sizeof(double));
    double *v = xcalloc(n, sizeof(double));
    fill_tensors(&ps, host, 1, 0.5f);
    be->upload(ps.data, host, bytes);
    for (size_t e = 0; e < n; e++) p[e] = host[e];
    /* A copy of the set's state, stepped by the former per-tensor calls (bitwise check). */
    float *old_p = be->alloc(bytes), *old_m = be->alloc(bytes), *old_v = be->alloc(bytes);
    be->upload(old_p, host, bytes);
    be->fill(old_m, 0.0f, n);
    be->fill(old_v, 0.0f, n);
    const long schedule_steps[3] = {1, 3, 4};
    for (long step = 1; step <= 3; step++) {
        fill_tensors(&ps, host, 1 + (uint32_t)step, 1.0f);
        be->upload(ps.grad, host, bytes);
        adamw_step(&ps, &cfg, cfg.lr, schedule_steps[step - 1]);
        TEST_CHECK(ps.adam_steps == step, "after %ld updates adam_steps = %ld", step,
                   ps.adam_steps);
        for (int i = 0; i < ps.count; i++) {
            const ParamInfo *t = &ps.info[i];
            const AdamwHyper h = {cfg.lr, cfg.beta1, cfg.beta2, cfg.adam_eps,
                                  t->decay ? cfg.weight_decay : 0.0f, step, 1.0f};
            be->adamw(old_p + t->offset, ps.grad + t->offset, old_m + t->offset,
                      old_v + t->offset, NULL, t->numel, h, NULL, 0.0f);
            adamw_tensor_double(&cfg, t, host, p, m, v, step);
        }
        char what[80];
        be->download(host, ps.data, bytes);
        snprintf(what, sizeof what, "step %ld: parameters vs per-tensor AdamW in double", step);
        /* float rounding of a few operations: 1e-6 relative to |p| plus 1e-7; a decay flag
         * read wrong moves p by lr wd |p| = 1e-2 |p|. */
        test_compare_ref(what, host, p, NULL, n, 1e-6, 1e-7);
        be->download(hm, ps.m, bytes);
        be->download(hv, ps.v, bytes);
        snprintf(what, sizeof what, "step %ld: first moment", step);
        test_compare_ref(what, hm, m, NULL, n, 1e-6, 1e-7); /* |g| ~ 1: m may cancel */
        snprintf(what, sizeof what, "step %ld: second moment", step);
        test_compare_ref(what, hv, v, NULL, n, 1e-6, 1e-12);
        size_t pad = nonzero_padding(&ps, host) + nonzero_padding(&ps, hm) + nonzero_padding(&ps, hv);
        TEST_CHECK(pad == 0, "step %ld: %zu padding elements of param/m/v not exactly 0", step, pad);
    }
    float *grad = xmalloc(bytes), *oldh = xmalloc(bytes);
    be->download(grad, ps.grad, bytes);
    TEST_CHECK(nonzero_padding(&ps, grad) == 0, "gradient padding not 0");
    /* Bitwise: one pass with the mask == the former per-tensor passes, on every tensor. */
    size_t differ = 0;
    be->download(host, ps.data, bytes);
    be->download(oldh, old_p, bytes);
    for (int i = 0; i < ps.count; i++)
        differ += memcmp(host + ps.info[i].offset, oldh + ps.info[i].offset,
                         ps.info[i].numel * sizeof(float)) != 0;
    TEST_CHECK(differ == 0, "%zu tensors differ bitwise from the per-tensor AdamW calls", differ);
    free(grad);
    free(oldh);
    be->release(old_p);
    be->release(old_m);
    be->release(old_v);
    free(host), free(hm), free(hv), free(p), free(m), free(v);
    params_free(&ps);
    return 0;
}

/* freeze_last_layer's held tensors (ParamSet.held): a held tensor takes no update (values and
 * moments bit-identical), its EMA target still follows it, and once released its AdamW t counts
 * only the updates it took, as torch.optim.AdamW counts steps per tensor when a gradient is
 * None. Reference: per-tensor AdamW and EMA in double, each tensor with its own step count. The
 * tensors never held match, bit for bit, a set stepped without any hold (same t, elementwise). */
static int test_held_tensors(void)
{
    Config cfg;
    TEST_CONFIG(&cfg, optim_keys);
    ParamSet ps, plain, target;
    build_set(&ps);
    build_set(&plain);
    params_clone_layout(&target, &ps);
    params_allocate(&target, be, 0);
    const size_t n = ps.total, bytes = n * sizeof(float);
    float *host = xmalloc(bytes), *hm = xmalloc(bytes), *other = xmalloc(bytes);
    double *p = xcalloc(n, sizeof(double)), *m = xcalloc(n, sizeof(double));
    double *v = xcalloc(n, sizeof(double)), *tgt = xcalloc(n, sizeof(double));
    long *t_of = xcalloc((size_t)ps.count, sizeof(long));
    fill_tensors(&ps, host, 1, 0.5f);
    be->upload(ps.data, host, bytes);
    be->upload(plain.data, host, bytes);
    fill_tensors(&ps, hm, 2, 0.5f);
    be->upload(target.data, hm, bytes);
    for (size_t e = 0; e < n; e++) p[e] = host[e], tgt[e] = hm[e];
    const int conv = params_find(&ps, "conv"), w3 = params_find(&ps, "w3");
    const int big = params_find(&ps, "big");
    /* conv and w3 (not adjacent: several runs) held for steps 1-2, big for step 2 only */
    const double mom = 0.9;
    for (long step = 1; step <= 4; step++) {
        for (int i = 0; i < ps.count; i++) ps.held[i] = 0;
        ps.held[conv] = ps.held[w3] = step <= 2;
        ps.held[big] = step == 2;
        fill_tensors(&ps, host, 10 + (uint32_t)step, 1.0f);
        be->upload(ps.grad, host, bytes);
        be->upload(plain.grad, host, bytes);
        const EmaUpdate ema = {&target, (float)mom};
        optimizer_update(&ps, &cfg, cfg.lr, step, 0.0, &ema);
        adamw_step(&plain, &cfg, cfg.lr, step);
        for (int i = 0; i < ps.count; i++) {
            const ParamInfo *t = &ps.info[i];
            if (!ps.held[i]) adamw_tensor_double(&cfg, t, host, p, m, v, ++t_of[i]);
        }
        char what[96];
        be->download(host, ps.data, bytes);
        /* the EMA from the online values the step wrote (AdamW's own rounding checked below) */
        for (size_t e = 0; e < n; e++) tgt[e] = mom * tgt[e] + (1.0 - mom) * host[e];
        snprintf(what, sizeof what, "step %ld: parameters vs per-tensor AdamW, own t", step);
        test_compare_ref(what, host, p, NULL, n, 1e-6, 1e-7);
        be->download(hm, ps.m, bytes);
        snprintf(what, sizeof what, "step %ld: first moment", step);
        test_compare_ref(what, hm, m, NULL, n, 1e-6, 1e-7);
        be->download(hm, target.data, bytes);
        snprintf(what, sizeof what, "step %ld: EMA target (held tensors included)", step);
        /* absolute: the float EMA rounds at the operands' size (~1), not the result's; a held
         * tensor's target left alone would be off by (1 - mom) |p - target| ~ 0.05 */
        test_compare_ref(what, hm, tgt, NULL, n, 1e-6, 1e-6);
        TEST_CHECK(nonzero_padding(&ps, host) == 0, "step %ld: padding not 0", step);
    }
    TEST_CHECK(ps.adam_steps == 4 && ps.held_updates[conv] == 2 && ps.held_updates[w3] == 2 &&
               ps.held_updates[big] == 1 && ps.held_updates[0] == 0,
               "adam_steps %ld, held_updates conv %ld w3 %ld big %ld", ps.adam_steps,
               ps.held_updates[conv], ps.held_updates[w3], ps.held_updates[big]);
    be->download(host, ps.data, bytes);
    be->download(other, plain.data, bytes);
    int differ = 0, held_same = 0;
    for (int i = 0; i < ps.count; i++) {
        const int same = !memcmp(host + ps.info[i].offset, other + ps.info[i].offset,
                                 ps.info[i].numel * sizeof(float));
        if (i == conv || i == w3 || i == big) held_same += same;
        else differ += !same;
    }
    TEST_CHECK(differ == 0, "%d never-held tensors differ bitwise from a set without holds",
               differ);
    TEST_CHECK(held_same == 0, "%d held tensors ended equal to the unheld run's", held_same);
    free(host), free(hm), free(other), free(p), free(m), free(v), free(tgt), free(t_of);
    params_free(&ps);
    params_free(&plain);
    params_free(&target);
    return 0;
}

/* The host reference of per-tensor clipping: each tensor of g scaled by clip_grad_scale of its
 * norm (in double); returns how many were scaled. */
static int clip_host(const ParamSet *ps, float *g, double clip)
{
    int clipped = 0;
    for (int i = 0; i < ps->count; i++) {
        float *x = g + ps->info[i].offset;
        double ss = 0.0;
        for (size_t k = 0; k < ps->info[i].numel; k++) ss += (double)x[k] * x[k];
        const float f = clip_grad_scale(sqrt(ss), clip);
        if (f >= 1.0f) continue;
        clipped++;
        for (size_t k = 0; k < ps->info[i].numel; k++) x[k] *= f;
    }
    return clipped;
}

static int test_clip_per_tensor(void)
{
    Config cfg;
    TEST_CONFIG(&cfg, optim_keys);
    ParamSet per, ref, glob;
    build_set(&per);
    build_set(&ref);
    build_set(&glob);
    const size_t n = per.total, bytes = n * sizeof(float);
    float *host = xmalloc(bytes), *g = xmalloc(bytes), *a = xmalloc(bytes), *b = xmalloc(bytes);
    fill_tensors(&per, host, 1, 0.5f);
    const ParamSet *sets[3] = {&per, &ref, &glob};
    for (int s = 0; s < 3; s++) be->upload(sets[s]->data, host, bytes);
    /* the clip: the median tensor norm of the first gradients (randn: about sqrt(numel)) */
    fill_tensors(&per, g, 11, 1.0f);
    double *norms = xmalloc((size_t)per.count * sizeof(double));
    for (int i = 0; i < per.count; i++) {
        double ss = 0.0;
        for (size_t k = 0; k < per.info[i].numel; k++) {
            const double x = g[per.info[i].offset + k];
            ss += x * x;
        }
        norms[i] = sqrt(ss);
    }
    for (int i = 1; i < per.count; i++)   /* insertion sort: a handful of tensors */
        for (int j = i; j > 0 && norms[j] < norms[j - 1]; j--) {
            const double t = norms[j]; norms[j] = norms[j - 1]; norms[j - 1] = t;
        }
    cfg.clip = (float)norms[per.count / 2];
    free(norms);
    int clipped = 0, kept = 0;
    /* gradient scales 1, 0.05, 1: the moments mix steps whose clipping differs */
    const float scales[3] = {1.0f, 0.05f, 1.0f};
    for (long step = 1; step <= 3; step++) {
        fill_tensors(&per, g, 10 + (uint32_t)step, scales[step - 1]);
        be->upload(glob.grad, g, bytes);
        be->upload(per.grad, g, bytes);
        snprintf(cfg.clip_mode, sizeof cfg.clip_mode, "global");
        optimizer_update(&glob, &cfg, cfg.lr, step, grad_global_norm(&glob), NULL);
        snprintf(cfg.clip_mode, sizeof cfg.clip_mode, "per_tensor");
        optimizer_update(&per, &cfg, cfg.lr, step, grad_global_norm(&per), NULL);
        const int c = clip_host(&per, g, cfg.clip);
        clipped += c;
        kept += per.count - c;
        be->upload(ref.grad, g, bytes);
        adamw_step(&ref, &cfg, cfg.lr, step);
    }
    TEST_CHECK(clipped > 0 && kept > 0, "per-tensor clipping scaled %d and kept %d tensors: the "
               "test needs both", clipped, kept);
    be->download(a, per.data, bytes);
    be->download(b, ref.data, bytes);
    double *want = xmalloc(n * sizeof(double));
    for (size_t e = 0; e < n; e++) want[e] = b[e];
    /* a clipping factor may differ in its last bit (the backend sums squares in its order) */
    test_compare_ref("per_tensor clipping vs AdamW on host-clipped gradients", a, want, NULL, n,
                     1e-5, 1e-7);
    be->download(b, glob.data, bytes);
    double far = 0.0;
    for (size_t e = 0; e < n; e++) far = fmax(far, fabs((double)a[e] - b[e]));
    TEST_CHECK(far > 1e-3, "global and per-tensor clipping end within %g of each other", far);
    free(want);
    free(host), free(g), free(a), free(b);
    params_free(&per);
    params_free(&ref);
    params_free(&glob);
    return 0;
}

int main(void)
{
    be = backend_cpu();
    TEST_RUN(test_mask_tiny_by_hand);
    TEST_RUN(test_held_tensors);
    TEST_RUN(test_mask_matches_info);
    TEST_RUN(test_step_matches_pytorch_formula);
    TEST_RUN(test_clip_per_tensor);
    return test_finish();
}
