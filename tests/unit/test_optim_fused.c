/* Clipping and the EMA target update inside AdamW's pass (backend op adamw with grad_scale and
 * ema_target; train/optim.h optimizer_update), on the CPU backend, BIT FOR BIT against the
 * sequences they replace:
 *  - the op: adamw(grad_scale s, ema_target t) equals scale(grad, s); adamw(grad_scale 1);
 *    ema_update(t, param) in param, both moments and the target, over three steps, at odd
 *    sizes (1 .. 40009: the OpenMP path included), buffers shifted by one element, a random
 *    decay mask and a NULL one, factors 1 (no clipping), 0.37 and one a gradient norm gives;
 *    the gradients are left exactly as they were;
 *  - the EMA target alone and the clipping factor alone (ema_target NULL; factor 1 with the
 *    target);
 *  - optimizer_update on a ParamSet with odd tensors, mixed decay flags and padding, with the
 *    clip threshold below the gradient norm (clipping active) and above it (inactive), with
 *    and without the EMA target (a params_clone_layout copy, as the pre-training's target),
 *    against the former clip_grad_norm (scale by (float)(clip / (norm + 1e-6)) where that is
 *    below 1, torch's clamp), adamw_step, ema_step; padding stays +0;
 *  - clip_grad_scale at hand-computed cases.
 * The CUDA kernel's bits: tests/cuda_emu/test_adamw_emulated.sh (host emulation) and
 * test_backend_parity (on a GPU). */
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

/* Elements whose bits differ between a and b (n floats, host). */
static size_t bits_differ(const float *a, const float *b, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return bad;
}

/* A backend buffer of n floats (+ 1, so a view shifted by one element fits) from host values. */
static float *upload_new(const float *host, size_t n)
{
    float *d = be->alloc((n + 1) * sizeof(float));
    be->fill(d, 0.0f, n + 1);
    be->upload(d, host, n * sizeof(float));
    return d;
}

static float *download_new(const float *d, size_t n)
{
    float *host = xmalloc((n ? n : 1) * sizeof(float));
    be->download(host, d, n * sizeof(float));
    return host;
}

/* The state one run of a case works on: param, grad, m, v, target. */
enum { BUF_P, BUF_G, BUF_M, BUF_V, BUF_T, BUF_COUNT };
static const char *const kBufName[BUF_COUNT] = {"param", "grad", "m", "v", "EMA target"};

typedef struct {
    float *buf[BUF_COUNT];
} State;

static State state_new(float *const host[BUF_COUNT], size_t n)
{
    State s;
    for (int b = 0; b < BUF_COUNT; b++) s.buf[b] = upload_new(host[b], n);
    return s;
}

static void state_free(State *s)
{
    for (int b = 0; b < BUF_COUNT; b++) be->release(s->buf[b]);
}

/* One op-level case: three steps of the fused call on state `fused` against the former
 * sequence on state `old`, both over [shift, shift + n) of their buffers. */
static void op_case(size_t n, int shift, int null_mask, float grad_scale, int with_ema)
{
    const size_t total = n + (size_t)shift;
    float *host[BUF_COUNT];
    host[BUF_P] = test_randn(31, (uint32_t)n, total, 1.0f);
    host[BUF_G] = test_randn(32, (uint32_t)n, total, 1.0f);
    host[BUF_M] = test_randn(33, (uint32_t)n, total, 0.1f);
    host[BUF_V] = test_randn(34, (uint32_t)n, total, 0.01f);
    host[BUF_T] = test_randn(35, (uint32_t)n, total, 1.0f);
    for (size_t i = 0; i < total; i++) host[BUF_V][i] = fabsf(host[BUF_V][i]);
    /* the mask of the range the call sees (indexed from its first element) */
    const size_t words = decay_mask_words(n);
    uint32_t *mask_host = xcalloc(words ? words : 1, sizeof(uint32_t));
    RngStream rs;
    rng_init(&rs, 36, 0, (uint32_t)n, RNG_TEST);
    for (size_t w = 0; w < words; w++) mask_host[w] = rng_u32(&rs);
    uint32_t *mask = be->alloc((words ? words : 1) * sizeof(uint32_t));
    be->upload(mask, mask_host, words * sizeof(uint32_t));
    const uint32_t *mk = null_mask ? NULL : mask;

    State fused = state_new(host, total), old = state_new(host, total);
    const float momentum = 0.99f;
    for (long step = 1; step <= 3; step++) {
        AdamwHyper h = {0.02f, 0.9f, 0.95f, 1e-8f, 0.5f, step, grad_scale};
        float *const *f = fused.buf, *const *o = old.buf;
        be->adamw(f[BUF_P] + shift, f[BUF_G] + shift, f[BUF_M] + shift, f[BUF_V] + shift, mk, n,
                  h, with_ema ? f[BUF_T] + shift : NULL, momentum);
        /* the former sequence: clip_grad_norm's scaling pass (only when clipping), AdamW on
         * the scaled gradients, then the EMA from the new parameters */
        if (grad_scale != 1.0f) be->scale(o[BUF_G] + shift, grad_scale, n);
        h.grad_scale = 1.0f;
        be->adamw(o[BUF_P] + shift, o[BUF_G] + shift, o[BUF_M] + shift, o[BUF_V] + shift, mk, n,
                  h, NULL, 0.0f);
        if (with_ema) be->ema_update(o[BUF_T] + shift, o[BUF_P] + shift, n, momentum);
        /* the former sequence's gradients are scaled in place: start the next step from the
         * same gradients as the fused run, which leaves its own untouched */
        be->copy(o[BUF_G], f[BUF_G], total * sizeof(float));
    }
    for (int b = 0; b < BUF_COUNT; b++) {
        float *got = download_new(fused.buf[b], total + 1), *want = download_new(old.buf[b], total + 1);
        const size_t bad = bits_differ(got, want, total + 1);
        TEST_CHECK(bad == 0, "n %zu shift %d mask %s scale %g ema %d: %zu %s elements differ "
                   "from the former sequence", n, shift, null_mask ? "NULL" : "random",
                   grad_scale, with_ema, bad, kBufName[b]);
        free(got);
        free(want);
    }
    /* The fused call only reads the gradients: bit for bit the values uploaded. */
    float *g = download_new(fused.buf[BUF_G], total);
    TEST_CHECK(bits_differ(g, host[BUF_G], total) == 0, "n %zu: the fused call wrote the "
               "gradients", n);
    free(g);
    /* Without the EMA the target must be untouched; with it, it must have moved. */
    float *t = download_new(fused.buf[BUF_T] + shift, n);
    const size_t moved = bits_differ(t, host[BUF_T] + shift, n);
    TEST_CHECK(with_ema ? moved > 0 : moved == 0, "n %zu: EMA target %s", n,
               with_ema ? "never updated" : "written without an EMA");
    free(t);
    state_free(&fused);
    state_free(&old);
    for (int b = 0; b < BUF_COUNT; b++) free(host[b]);
    be->release(mask);
    free(mask_host);
}

static int test_op_matches_former_sequence(void)
{
    /* the factor clip_grad_scale gives a norm of 7.3 at threshold 3 */
    const float from_norm = (float)(3.0 / (7.3 + 1e-6));
    const size_t sizes[] = {1, 3, 5, 17, 33, 1001, 40009};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
        for (int shift = 0; shift <= 1; shift++) {
            op_case(sizes[k], shift, 0, 0.37f, 1);     /* clipping and EMA, decay mask */
            op_case(sizes[k], shift, 1, from_norm, 1); /* every element decays */
            op_case(sizes[k], shift, 0, 1.0f, 1);      /* no clipping, EMA */
            op_case(sizes[k], shift, 0, from_norm, 0); /* clipping alone */
            op_case(sizes[k], shift, 0, 1.0f, 0);      /* plain AdamW */
        }
    return 0;
}

static int test_clip_grad_scale_by_hand(void)
{
    TEST_CHECK(clip_grad_scale(2.0, 3.0) == 1.0f, "norm below the threshold: factor 1");
    /* torch clamps max_norm / (norm + 1e-6) at 1: at the threshold, and within 1e-6 below it,
     * the factor is just below 1 (the C code once returned 1 for every norm <= threshold) */
    TEST_CHECK(clip_grad_scale(3.0, 3.0) == (float)(3.0 / 3.000001) &&
                   clip_grad_scale(3.0, 3.0) < 1.0f, "norm at the threshold: %.9g",
               clip_grad_scale(3.0, 3.0));
    TEST_CHECK(clip_grad_scale(3.0 - 5e-7, 3.0) == (float)(3.0 / (3.0 + 5e-7)) &&
                   clip_grad_scale(3.0 - 5e-7, 3.0) < 1.0f,
               "norm 5e-7 below the threshold: %.9g", clip_grad_scale(3.0 - 5e-7, 3.0));
    TEST_CHECK(clip_grad_scale(3.0 - 2e-6, 3.0) == 1.0f, "norm 2e-6 below the threshold: 1");
    TEST_CHECK(clip_grad_scale(1e6, 0.0) == 1.0f, "threshold 0: no clipping");
    TEST_CHECK(clip_grad_scale(0.0, 3.0) == 1.0f, "zero gradient: factor 1");
    TEST_CHECK(clip_grad_scale(1e6, -1.0) == 1.0f, "negative threshold: no clipping");
    /* torch.nn.utils.clip_grad_norm_: max_norm / (total_norm + 1e-6) */
    TEST_CHECK(clip_grad_scale(6.0, 3.0) == (float)(3.0 / 6.000001), "norm 6, threshold 3: %.9g",
               clip_grad_scale(6.0, 3.0));
    TEST_CLOSE(clip_grad_scale(6.0, 3.0), 0.5, 1e-6, 0, "norm 6, threshold 3 is about 1/2");
    TEST_CHECK(clip_grad_scale(30.0, 3.0) == (float)(3.0 / 30.000001), "norm 30, threshold 3");
    return 0;
}

/* Odd sizes, mixed flags, padding after every tensor but the 16-multiple; the large ones take
 * the total past CPU_OMP_MIN_ELEMENTS, so the OpenMP path runs. */
static void build_set(ParamSet *ps)
{
    static const struct { const char *name; int ndim; int shape[4]; int decay; } t[] = {
        {"w0", 1, {7}, 1},     {"b0", 2, {3, 11}, 0},      {"w1", 1, {1}, 1},
        {"norm", 1, {50}, 0},  {"w2", 4, {2, 3, 5, 7}, 1}, {"big", 2, {151, 203}, 1},
        {"big_bias", 1, {20011}, 0}, {"last", 1, {1}, 0},
    };
    params_init_registry(ps);
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        params_add(ps, t[i].name, t[i].ndim, t[i].shape, t[i].decay, INIT_XAVIER_UNIFORM);
    params_allocate(ps, be, 1);
}

static const char *const optim_keys[][2] = {
    {"lr", "0.02"}, {"weight_decay", "0.5"}, {"beta1", "0.9"}, {"beta2", "0.95"},
    {"adam_eps", "1e-8"},
};

/* Random gradients into the tensors of ps (padding 0), as backward leaves them. */
static void set_gradients(const ParamSet *ps, uint32_t stream)
{
    float *host = xcalloc(ps->total, sizeof(float));
    for (int i = 0; i < ps->count; i++) {
        float *x = test_randn(41, stream * 100u + (uint32_t)i, ps->info[i].numel, 0.05f);
        memcpy(host + ps->info[i].offset, x, ps->info[i].numel * sizeof(float));
        free(x);
    }
    be->upload(ps->grad, host, ps->total * sizeof(float));
    free(host);
}

/* Two identical trainable sets (and EMA targets), one stepped by optimizer_update, one by the
 * former clip_grad_norm + adamw_step + ema_step; clip is the threshold, whose relation to the
 * norm decides whether clipping is active. */
static void set_case(double clip, int clipping_active, int with_ema)
{
    Config cfg;
    TEST_CONFIG(&cfg, optim_keys);
    cfg.clip = (float)clip;
    ParamSet a, b, ta, tb;
    build_set(&a);
    build_set(&b);
    params_initialize(&a, 5);
    params_initialize(&b, 5);
    params_clone_layout(&ta, &a);
    params_clone_layout(&tb, &b);
    params_allocate(&ta, be, 0);
    params_allocate(&tb, be, 0);
    params_initialize(&ta, 6);
    params_initialize(&tb, 6);
    int clipped = 0, unclipped = 0;
    const float positive_zero = 0.0f;
    for (long s = 0; s < 3; s++) {
        set_gradients(&a, (uint32_t)s);
        set_gradients(&b, (uint32_t)s);
        const double norm = grad_global_norm(&a);
        /* train/optim.h clip_grad_scale: torch's clamp of clip / (norm + 1e-6) at 1 */
        const int clips = clip > 0 && clip / (norm + 1e-6) < 1.0;
        clipped += clips, unclipped += !clips;
        const float momentum = 0.99f - 0.01f * (float)s, lr = cfg.lr * (float)(s + 1) / 3.0f;
        const EmaUpdate ema = {&ta, momentum};
        optimizer_update(&a, &cfg, lr, s + 1, norm, with_ema ? &ema : NULL);
        /* the former train_optimizer_step: clip_grad_norm, then adamw_step; then ema_step */
        const double norm_b = grad_global_norm(&b);
        if (clip > 0 && clip / (norm_b + 1e-6) < 1.0)
            be->scale(b.grad, (float)(clip / (norm_b + 1e-6)), b.total);
        adamw_step(&b, &cfg, lr, s + 1);
        if (with_ema) ema_step(&tb, &b, momentum);
    }
    TEST_CHECK(clipping_active ? clipped == 3 : unclipped == 3,
               "clip %g: the case meant to %s clipping clipped %d of 3 steps", clip,
               clipping_active ? "exercise" : "avoid", clipped);
    const float *pairs[][2] = {{a.data, b.data}, {a.m, b.m}, {a.v, b.v}, {ta.data, tb.data}};
    const char *names[] = {"param", "m", "v", "EMA target"};
    for (int k = 0; k < 4; k++) {
        float *x = download_new(pairs[k][0], a.total), *y = download_new(pairs[k][1], a.total);
        const size_t bad = bits_differ(x, y, a.total);
        TEST_CHECK(bad == 0, "clip %g ema %d: %zu of %zu %s elements differ from clip_grad_norm "
                   "+ adamw_step + ema_step", clip, with_ema, bad, a.total, names[k]);
        /* padding stays +0 (bits) in the trainable state */
        if (k < 3) {
            size_t pad_bad = 0;
            char *inside = xcalloc(a.total, 1);
            for (int i = 0; i < a.count; i++) memset(inside + a.info[i].offset, 1, a.info[i].numel);
            for (size_t e = 0; e < a.total; e++)
                pad_bad += !inside[e] && bits_differ(&x[e], &positive_zero, 1);
            TEST_CHECK(pad_bad == 0, "%s: %zu padding elements not +0", names[k], pad_bad);
            free(inside);
        }
        free(x);
        free(y);
    }
    params_free(&a);
    params_free(&b);
    params_free(&ta);
    params_free(&tb);
}

static int test_param_set_matches_former_sequence(void)
{
    /* gradients of 0.05 sigma over ~50k elements: norm about 11 */
    set_case(0.5, 1, 1);  /* clipping active, EMA */
    set_case(0.5, 1, 0);  /* clipping active, no EMA */
    set_case(1e3, 0, 1);  /* threshold above the norm: inactive */
    set_case(0.0, 0, 1);  /* clip = 0: off */
    return 0;
}

int main(void)
{
    be = backend_cpu();
    TEST_RUN(test_clip_grad_scale_by_hand);
    TEST_RUN(test_op_matches_former_sequence);
    TEST_RUN(test_param_set_matches_former_sequence);
    return test_finish();
}
