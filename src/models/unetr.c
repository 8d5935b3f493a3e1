#include "models/unetr.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "nn/layers.h"
#include "train/checkpoint.h"

/* ---- registration ----------------------------------------------------------------------- */

static int add_conv(ParamSet *ps, const char *prefix, const char *what, int cout, int cin, int k)
{
    char name[PARAM_NAME_MAX];
    snprintf(name, sizeof name, "%s.%s", prefix, what);
    int shape[5] = {cout, cin, k, k, k};
    return params_add(ps, name, 5, shape, 1, INIT_XAVIER_UNIFORM);
}

static void res_register(ResBlock *r, ParamSet *ps, const char *prefix, int cin, int cout)
{
    r->cin = cin;
    r->cout = cout;
    r->conv1 = add_conv(ps, prefix, "conv1.conv.weight", cout, cin, 3);
    r->conv2 = add_conv(ps, prefix, "conv2.conv.weight", cout, cout, 3);
    /* MONAI's UnetResBlock adds conv3/norm3 on the residual only when the channels differ
     * (stride is always 1 here). */
    r->conv3 = cin != cout ? add_conv(ps, prefix, "conv3.conv.weight", cout, cin, 1) : NO_PARAM;
}

static void up_register(UpConv *u, ParamSet *ps, const char *name, int cin, int cout)
{
    u->cin = cin;
    u->cout = cout;
    /* ConvTranspose3d weight layout [cin, cout, k, k, k]. */
    int shape[5] = {cin, cout, 2, 2, 2};
    u->w = params_add(ps, name, 5, shape, 1, INIT_XAVIER_UNIFORM);
}

static void prup_register(PrUpBlock *p, ParamSet *ps, const char *prefix, int E, int cout, int layers)
{
    char name[PARAM_NAME_MAX];
    p->layers = layers;
    p->level_in = 0;
    snprintf(name, sizeof name, "%s.transp_conv_init.conv.weight", prefix);
    up_register(&p->init, ps, name, E, cout);
    for (int i = 0; i < layers; i++) {
        snprintf(name, sizeof name, "%s.blocks.%d.0.conv.weight", prefix, i);
        up_register(&p->up[i], ps, name, cout, cout);
        snprintf(name, sizeof name, "%s.blocks.%d.1", prefix, i);
        res_register(&p->res[i], ps, name, cout, cout);
    }
}

static void upblock_register(UpBlock *u, ParamSet *ps, const char *prefix, int cin, int cout, int level_out)
{
    char name[PARAM_NAME_MAX];
    snprintf(name, sizeof name, "%s.transp_conv.conv.weight", prefix);
    up_register(&u->up, ps, name, cin, cout);
    snprintf(name, sizeof name, "%s.conv_block", prefix);
    res_register(&u->res, ps, name, 2 * cout, cout);
    u->level_out = level_out;
}

/* ---- activations ------------------------------------------------------------------------ */

static void res_layout(const ResBlock *r, ResBlockActs *a, Arena *ar, int B, long V)
{
    const size_t n = (size_t)B * r->cout * V;
    a->c1 = arena_floats(ar, n);
    a->a1 = arena_floats(ar, n);
    a->c2 = arena_floats(ar, n);
    a->c3 = r->conv3 != NO_PARAM ? arena_floats(ar, n) : NULL;
    a->out = arena_floats(ar, n);
    for (int i = 0; i < 3; i++) {
        a->mean[i] = arena_floats(ar, (size_t)B * r->cout);
        a->rstd[i] = arena_floats(ar, (size_t)B * r->cout);
    }
}

/* Largest B * max(cin, cout) * V over the res blocks: the backward scratch size. */
static size_t res_scratch(const ResBlock *r, int B, long V)
{
    return (size_t)B * (r->cin > r->cout ? r->cin : r->cout) * V;
}

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

static void layout(UnetrModel *m, Arena *ar)
{
    const int B = m->B, E = m->E, N = m->N, K = m->K;
    const long D = m->level_vox[UNETR_LEVELS - 1];
    m->pos = arena_floats(ar, (size_t)N * E);
    m->identity = arena_ints(ar, (size_t)B * N);
    m->image = arena_floats(ar, (size_t)B * D);
    m->label = arena_ints(ar, (size_t)B * D);
    m->patches = arena_floats(ar, (size_t)B * N * m->P);
    /* The skips read the outputs of intermediate blocks, so inference keeps every block's out
     * apart (and nothing for backward: no saved attention, no gradient buffers). */
    vit_encoder_layout(&m->vit, &m->va, ar, B, N, m->train ? TSTACK_TRAIN : TSTACK_FORWARD_TAPS);
    if (m->train) tstack_layout_drop_path(&m->vit.stack, &m->va.st, ar, m->cfg.drop_path);
    res_layout(&m->enc1, &m->enc1_a, ar, B, D);
    size_t scratch = res_scratch(&m->enc1, B, D), chain = 0;
    for (int k = 0; k < UNETR_SKIPS; k++) {
        const PrUpBlock *p = &m->enc[k];
        PrUpActs *a = &m->enc_a[k];
        a->feat = arena_floats(ar, (size_t)B * E * N);
        long V = m->level_vox[1];
        a->init_out = arena_floats(ar, (size_t)B * p->init.cout * V);
        a->out = a->init_out;
        chain = max_size(chain, (size_t)B * p->init.cout * V);
        for (int i = 0; i < p->layers; i++) {
            V = m->level_vox[2 + i];
            a->up_out[i] = arena_floats(ar, (size_t)B * p->up[i].cout * V);
            res_layout(&p->res[i], &a->res[i], ar, B, V);
            a->out = a->res[i].out;
            scratch = max_size(scratch, res_scratch(&p->res[i], B, V));
            chain = max_size(chain, (size_t)B * p->up[i].cout * V);
        }
    }
    m->xfeat = arena_floats(ar, (size_t)B * E * N);
    size_t cat = 0;
    for (int d = 0; d < UNETR_DECODERS; d++) {
        const UpBlock *u = &m->dec[d];
        UpBlockActs *a = &m->dec_a[d];
        const long V = m->level_vox[u->level_out];
        a->up_out = arena_floats(ar, (size_t)B * u->up.cout * V);
        a->cat = arena_floats(ar, (size_t)B * 2 * u->up.cout * V);
        res_layout(&u->res, &a->res, ar, B, V);
        scratch = max_size(scratch, res_scratch(&u->res, B, V));
        cat = max_size(cat, (size_t)B * 2 * u->up.cout * V);
    }
    m->logits = arena_floats(ar, (size_t)B * K * D);
    m->probs = arena_floats(ar, (size_t)B * K * D);
    if (!m->train) return;
    m->dlogits = arena_floats(ar, (size_t)B * K * D);
    m->loss_values = arena_floats(ar, SEG_LOSS_VALUE_COUNT);
    for (int i = 0; i < 3; i++) m->scratch[i] = arena_floats(ar, scratch);
    m->dcat = arena_floats(ar, cat);
    m->dup = arena_floats(ar, cat / 2);
    for (int i = 0; i < 2; i++) m->chain[i] = arena_floats(ar, chain);
    for (int d = 0; d < UNETR_DECODERS; d++)
        m->ddec[d] = arena_floats(ar, (size_t)B * m->dec[d].up.cout * m->level_vox[m->dec[d].level_out]);
    m->denc1 = arena_floats(ar, (size_t)B * m->F * D);
    for (int k = 0; k < UNETR_SKIPS; k++) {
        const PrUpBlock *p = &m->enc[k];
        m->denc[k] = arena_floats(ar, (size_t)B * p->init.cout * m->level_vox[1 + p->layers]);
        m->dtaps[k] = arena_floats(ar, (size_t)B * N * E);
    }
    m->dfeat = arena_floats(ar, (size_t)B * E * N);
    m->dvit_out = arena_floats(ar, (size_t)B * N * E);
}

/* ---- forward / backward of the blocks ---------------------------------------------------- */

static void res_forward(const UnetrModel *m, const ResBlock *r, ResBlockActs *a, const float *x, int level)
{
    const AliceBackend *be = m->be;
    const ParamSet *ps = &m->ps;
    const int *d = m->level_dim[level];
    const long V = m->level_vox[level];
    const int B = m->B, C = r->cout;
    be->conv3d_fwd(a->c1, x, param(ps, r->conv1), NULL, B, r->cin, C, d[0], d[1], d[2], 3, 1, 1);
    be->instnorm_lrelu_fwd(a->a1, a->mean[0], a->rstd[0], a->c1, NULL, NULL, NULL, B, C, V,
                           UNETR_NORM_EPS, UNETR_LEAKY_SLOPE);
    be->conv3d_fwd(a->c2, a->a1, param(ps, r->conv2), NULL, B, C, C, d[0], d[1], d[2], 3, 1, 1);
    /* out = lrelu(norm2(c2) + residual), the residual being norm3(c3) (staged in out, which the
     * fused op reads before it writes) or the block's input. */
    const float *residual = x;
    if (r->conv3 != NO_PARAM) {
        be->conv3d_fwd(a->c3, x, param(ps, r->conv3), NULL, B, r->cin, C, d[0], d[1], d[2], 1, 1, 0);
        be->instnorm_fwd(a->out, a->mean[2], a->rstd[2], a->c3, NULL, NULL, B, C, V,
                         UNETR_NORM_EPS);
        residual = a->out;
    }
    be->instnorm_lrelu_fwd(a->out, a->mean[1], a->rstd[1], a->c2, NULL, NULL, residual, B, C, V,
                           UNETR_NORM_EPS, UNETR_LEAKY_SLOPE);
}

/* dout: gradient w.r.t. a->out; dx (overwritten; NULL = not needed) w.r.t. the input x. */
static void res_backward(UnetrModel *m, const ResBlock *r, ResBlockActs *a, const float *x, int level,
                         const float *dout, float *dx)
{
    const AliceBackend *be = m->be;
    ParamSet *ps = &m->ps;
    const int *d = m->level_dim[level];
    const long V = m->level_vox[level];
    const int B = m->B, C = r->cout;
    const size_t n = (size_t)B * C * V;
    float *s0 = m->scratch[0], *s1 = m->scratch[1], *s2 = m->scratch[2];
    /* The LeakyReLUs' gradients from their outputs (backend.h leaky_relu_bwd): out, a1. */
    if (r->conv3 != NO_PARAM) {
        /* d(sum) feeds both norms: made once. The residual branch first: it writes dx, the
         * main branch adds to it. */
        be->leaky_relu_bwd(s0, dout, a->out, n, UNETR_LEAKY_SLOPE);
        be->instnorm_bwd(s1, NULL, NULL, s0, a->c3, a->mean[2], a->rstd[2], NULL, B, C, V);
        be->conv3d_bwd(dx, param_grad(ps, r->conv3), NULL, s1, x, param(ps, r->conv3), B, r->cin,
                       C, d[0], d[1], d[2], 1, 1, 0);
        be->instnorm_bwd(s1, NULL, NULL, s0, a->c2, a->mean[1], a->rstd[1], NULL, B, C, V);
    } else if (dx) {
        /* The identity residual's gradient is d(sum) itself: made in dx directly. */
        be->leaky_relu_bwd(dx, dout, a->out, n, UNETR_LEAKY_SLOPE);
        be->instnorm_bwd(s1, NULL, NULL, dx, a->c2, a->mean[1], a->rstd[1], NULL, B, C, V);
    } else {
        be->instnorm_lrelu_bwd(s1, NULL, NULL, dout, a->out, UNETR_LEAKY_SLOPE, a->c2, a->mean[1],
                               a->rstd[1], NULL, B, C, V);
    }
    be->conv3d_bwd(s2, param_grad(ps, r->conv2), NULL, s1, a->a1, param(ps, r->conv2), B, C, C,
                   d[0], d[1], d[2], 3, 1, 1);                              /* d a1 */
    be->instnorm_lrelu_bwd(s1, NULL, NULL, s2, a->a1, UNETR_LEAKY_SLOPE, a->c1, a->mean[0],
                           a->rstd[0], NULL, B, C, V);                      /* d c1 */
    be->conv3d_bwd(dx ? s2 : NULL, param_grad(ps, r->conv1), NULL, s1, x, param(ps, r->conv1), B,
                   r->cin, C, d[0], d[1], d[2], 3, 1, 1);
    if (dx) be->add(dx, dx, s2, (size_t)B * r->cin * V);
}

static void up_forward(const UnetrModel *m, const UpConv *u, float *y, const float *x, int level_in)
{
    const int *d = m->level_dim[level_in];
    m->be->conv_transpose3d_fwd(y, x, param(&m->ps, u->w), NULL, m->B, u->cin, u->cout, d[0], d[1],
                                d[2], 2);
}

static void up_backward(UnetrModel *m, const UpConv *u, float *dx, const float *dy, const float *x,
                        int level_in)
{
    const int *d = m->level_dim[level_in];
    m->be->conv_transpose3d_bwd(dx, param_grad(&m->ps, u->w), NULL, dy, x, param(&m->ps, u->w),
                                m->B, u->cin, u->cout, d[0], d[1], d[2], 2);
}

static void prup_forward(const UnetrModel *m, const PrUpBlock *p, PrUpActs *a, const float *tokens)
{
    /* MONAI proj_feat: [B, N, E] -> view [B, gx, gy, gz, E] -> permute to [B, E, gx, gy, gz]. */
    m->be->transpose_tokens(a->feat, tokens, m->B, m->N, m->E);
    up_forward(m, &p->init, a->init_out, a->feat, 0);
    const float *x = a->init_out;
    for (int i = 0; i < p->layers; i++) {
        up_forward(m, &p->up[i], a->up_out[i], x, 1 + i);
        res_forward(m, &p->res[i], &a->res[i], a->up_out[i], 2 + i);
        x = a->res[i].out;
    }
}

/* dout: gradient w.r.t. the block's output; dtok [B, N, E] receives the gradient w.r.t. the
 * hidden state (overwritten). */
static void prup_backward(UnetrModel *m, const PrUpBlock *p, PrUpActs *a, const float *dout, float *dtok)
{
    const float *g = dout;
    for (int i = p->layers - 1; i >= 0; i--) {
        /* Two buffers alternate: the block's output gradient g is dead once the res block's
         * input gradient is written, so the up-conv's input gradient may take its place. */
        float *dup_out = g == m->chain[0] ? m->chain[1] : m->chain[0];
        res_backward(m, &p->res[i], &a->res[i], a->up_out[i], 2 + i, g, dup_out);
        float *dx = dup_out == m->chain[0] ? m->chain[1] : m->chain[0];
        up_backward(m, &p->up[i], dx, dup_out, i ? a->res[i - 1].out : a->init_out, 1 + i);
        g = dx;
    }
    up_backward(m, &p->init, m->dfeat, g, a->feat, 0);
    m->be->transpose_tokens(dtok, m->dfeat, m->B, m->E, m->N);
}

static void upblock_forward(const UnetrModel *m, const UpBlock *u, UpBlockActs *a, const float *x,
                            const float *skip)
{
    const int C = u->up.cout;
    up_forward(m, &u->up, a->up_out, x, u->level_out - 1);
    m->be->concat_channels(a->cat, a->up_out, skip, m->B, C, C, m->level_vox[u->level_out]);
    res_forward(m, &u->res, &a->res, a->cat, u->level_out);
}

/* dx: w.r.t. the up-sampled input; dskip: w.r.t. the skip (both overwritten). */
static void upblock_backward(UnetrModel *m, const UpBlock *u, UpBlockActs *a, const float *x,
                             const float *dout, float *dx, float *dskip)
{
    const int C = u->up.cout;
    res_backward(m, &u->res, &a->res, a->cat, u->level_out, dout, m->dcat);
    m->be->split_channels(m->dup, dskip, m->dcat, m->B, C, C, m->level_vox[u->level_out]);
    up_backward(m, &u->up, dx, m->dup, x, u->level_out - 1);
}

/* ---- the model ----------------------------------------------------------------------------- */

static void check_config(const Config *c)
{
    config_validate(c);
    if (c->patch != UNETR_PATCH)
        alice_die("configuration: UNETR needs patch = %d (MONAI's UNETR up-samples the token grid "
                  "four times by 2), got patch = %d; set patch = 16 (and pre-train with it)",
                  UNETR_PATCH, c->patch);
    for (int a = 0; a < 3; a++)
        if (c->crop[a] % UNETR_PATCH)
            alice_die("configuration: crop = %d,%d,%d must be divisible by %d on every axis for "
                      "UNETR (e.g. 96,96,96 or 32,32,32)", c->crop[0], c->crop[1], c->crop[2],
                      UNETR_PATCH);
    if (c->embed_dim % 6)
        alice_die("configuration: embed_dim = %d must be divisible by 6 (3D sin-cos position "
                  "embedding); 768, 384 and 96 are", c->embed_dim);
    if (c->depth < 3)
        alice_die("configuration: UNETR needs depth >= 3 (its three skips read blocks depth/4, "
                  "depth/2 and 3*depth/4, which must differ), got depth = %d", c->depth);
    if (c->depth > TSTACK_MAX_DEPTH)
        alice_die("configuration: depth = %d exceeds the supported %d", c->depth, TSTACK_MAX_DEPTH);
}

long unetr_crop_voxels(const UnetrModel *m) { return m->level_vox[UNETR_LEVELS - 1]; }

/* ---- FLOP count (unetr.h unetr_step_flops) ------------------------------------------------ */

static double conv_flops(int B, int cin, int cout, int k, long out_vox)
{
    return 2.0 * B * (double)k * k * k * cin * cout * (double)out_vox;
}

static double up_flops(int B, const UpConv *u, long in_vox)
{
    return conv_flops(B, u->cin, u->cout, 2, in_vox);
}

static double res_flops(int B, const ResBlock *r, long V)
{
    return conv_flops(B, r->cin, r->cout, 3, V) + conv_flops(B, r->cout, r->cout, 3, V) +
           (r->conv3 != NO_PARAM ? conv_flops(B, r->cin, r->cout, 1, V) : 0.0);
}

double unetr_step_flops(const UnetrModel *m)
{
    const int B = m->B;
    const long D = unetr_crop_voxels(m);
    double fwd = vit_encoder_forward_flops(&m->vit, B, m->N) + res_flops(B, &m->enc1, D);
    for (int k = 0; k < UNETR_SKIPS; k++) {
        const PrUpBlock *p = &m->enc[k];
        fwd += up_flops(B, &p->init, m->level_vox[p->level_in]);
        for (int i = 0; i < p->layers; i++)
            fwd += up_flops(B, &p->up[i], m->level_vox[p->level_in + 1 + i]) +
                   res_flops(B, &p->res[i], m->level_vox[p->level_in + 2 + i]);
    }
    for (int d = 0; d < UNETR_DECODERS; d++) {
        const UpBlock *u = &m->dec[d];
        fwd += up_flops(B, &u->up, m->level_vox[u->level_out - 1]) +
               res_flops(B, &u->res, m->level_vox[u->level_out]);
    }
    fwd += conv_flops(B, m->F, m->K, 1, D);
    /* The layers whose input is the image compute no input gradient (vit.c passes none to
     * the patch embedding; res_backward gets dx = NULL for encoder1). */
    const ResBlock *e1 = &m->enc1;
    double data_input = 2.0 * B * m->N * (double)m->P * m->E + conv_flops(B, e1->cin, e1->cout, 3, D) +
                        (e1->conv3 != NO_PARAM ? conv_flops(B, e1->cin, e1->cout, 1, D) : 0.0);
    return 3.0 * fwd - data_input;
}

void unetr_init(UnetrModel *m, const Config *cfg, const AliceBackend *be, int B, int train)
{
    memset(m, 0, sizeof *m);
    check_config(cfg);
    m->cfg = *cfg;
    m->be = be;
    m->B = B;
    m->train = train;
    m->zero_grads_in_step = 1;
    m->E = cfg->embed_dim;
    m->F = cfg->feature_size;
    m->K = cfg->num_classes;
    m->P = UNETR_PATCH * UNETR_PATCH * UNETR_PATCH;
    m->N = 1;
    for (int a = 0; a < 3; a++) {
        m->grid[a] = cfg->crop[a] / UNETR_PATCH;
        m->N *= m->grid[a];
    }
    for (int l = 0; l < UNETR_LEVELS; l++) {
        m->level_vox[l] = 1;
        for (int a = 0; a < 3; a++) {
            m->level_dim[l][a] = m->grid[a] << l;
            m->level_vox[l] *= m->level_dim[l][a];
        }
    }
    for (int k = 0; k < UNETR_SKIPS; k++) m->skip_block[k] = (k + 1) * cfg->depth / 4;

    const int E = m->E, F = m->F;
    ParamSet *ps = &m->ps;
    params_init_registry(ps);
    vit_encoder_register(&m->vit, ps, "vit", UNETR_PATCH, E, cfg->heads, cfg->mlp_dim, cfg->depth);
    m->cnn_params = params_range_open(ps);
    res_register(&m->enc1, ps, "encoder1.layer", 1, F);
    static const char *const enc_names[UNETR_SKIPS] = {"encoder2", "encoder3", "encoder4"};
    for (int k = 0; k < UNETR_SKIPS; k++)
        prup_register(&m->enc[k], ps, enc_names[k], E, F << (k + 1), UNETR_PRUP_MAX_LAYERS - k);
    static const char *const dec_names[UNETR_DECODERS] = {"decoder5", "decoder4", "decoder3", "decoder2"};
    for (int d = 0; d < UNETR_DECODERS; d++) {
        int cout = F << (UNETR_DECODERS - 1 - d);       /* 8F, 4F, 2F, F */
        int cin = d == DEC5 ? E : 2 * cout;
        upblock_register(&m->dec[d], ps, dec_names[d], cin, cout, d + 1);
    }
    m->out_w = add_conv(ps, "out", "conv.conv.weight", m->K, F, 1);
    m->out_b = params_add1(ps, "out.conv.conv.bias", m->K, 0, INIT_ZEROS);
    params_range_close(ps, &m->cnn_params);
    params_allocate(ps, be, train);
    params_initialize(ps, (uint64_t)cfg->seed);
    if (train && cfg->layer_decay < 1.0f)
        for (int t = 0; t < ps->count; t++)
            ps->lr_scale[t] = unetr_layer_lr_scale(m, t, cfg->layer_decay);

    arena_plan_mixed(&m->arena, be, cfg->precision, cfg->bf16_activations,
                     cfg->bf16_branch_out);
    layout(m, &m->arena);
    arena_commit(&m->arena);
    layout(m, &m->arena);

    float *pos = xmalloc((size_t)m->N * E * sizeof(float));
    sincos_position_embedding_3d(pos, m->grid, E);
    be->upload(m->pos, pos, (size_t)m->N * E * sizeof(float));
    free(pos);
    int *ident = xmalloc((size_t)B * m->N * sizeof(int));
    for (int b = 0; b < B; b++)
        for (int n = 0; n < m->N; n++) ident[(size_t)b * m->N + n] = n;
    be->upload(m->identity, ident, (size_t)B * m->N * sizeof(int));
    free(ident);
    for (int i = 0; i < TSTACK_MAX_DEPTH; i++) m->taps[i] = NULL;
    if (train)
        for (int k = 0; k < UNETR_SKIPS; k++) m->taps[m->skip_block[k]] = m->dtaps[k];
    const size_t drop_count = tstack_drop_scale_count(&m->vit.stack, &m->va.st);
    m->drop_host = drop_count ? xmalloc(drop_count * sizeof(float)) : NULL;
    unetr_draw_drop_path(m, 0, 0);   /* defined scales before the loop's first draw */
}

void unetr_draw_drop_path(UnetrModel *m, long step, long first_sample)
{
    if (!m->drop_host) return;
    const TStackActs *st = &m->va.st;
    for (int b = 0; b < m->B; b++) {
        RngStream rng;
        rng_init(&rng, (uint64_t)m->cfg.seed, (uint32_t)step, (uint32_t)(first_sample + b),
                 RNG_DROP_PATH);
        drop_path_draw_sample(m->drop_host, st->drop_rate, m->vit.stack.depth, m->B, b, &rng);
    }
    m->be->upload(st->drop_scale, m->drop_host,
                  tstack_drop_scale_count(&m->vit.stack, st) * sizeof(float));
}

/* MAE's get_layer_id_for_vit over this model's tensor ranges. */
static int vit_layer_of_tensor(const UnetrModel *m, int t)
{
    const TStack *s = &m->vit.stack;
    if (t >= m->vit.pe_params.first && t < m->vit.pe_params.end) return 0;
    for (int i = 0; i < s->depth; i++)
        if (t >= s->blk_params[i].first && t < s->blk_params[i].end) return i + 1;
    return s->depth + 1;
}

float unetr_layer_lr_scale(const UnetrModel *m, int t, float decay)
{
    const int layers = m->vit.stack.depth + 1;
    return (float)pow((double)decay, (double)(layers - vit_layer_of_tensor(m, t)));
}

void unetr_free(UnetrModel *m)
{
    free(m->drop_host);
    arena_free(&m->arena);
    params_free(&m->ps);
}

int unetr_load_pretrained(UnetrModel *m, const char *path)
{
    return checkpoint_load_encoder(path, &m->ps, "vit.", &m->cfg);
}

void unetr_set_batch(UnetrModel *m, const float *image, const int32_t *label)
{
    const size_t n = (size_t)m->B * unetr_crop_voxels(m);
    m->be->upload(m->image, image, n * sizeof(float));
    if (label) m->be->upload(m->label, label, n * sizeof(int32_t));
}

/* training: the ViT drops branches (drop-path, when laid out); else inference. */
static const float *forward(UnetrModel *m, int training)
{
    m->va.st.drop_enabled = training && m->va.st.drop_scale;
    const AliceBackend *be = m->be;
    const int B = m->B, N = m->N;
    const int *crop = m->level_dim[UNETR_LEVELS - 1];
    be->patchify(m->patches, m->image, B, crop[0], crop[1], crop[2], UNETR_PATCH);
    vit_encoder_forward(&m->vit, &m->va, &m->ps, m->patches, N, m->identity, N, m->pos);
    res_forward(m, &m->enc1, &m->enc1_a, m->image, UNETR_LEVELS - 1);
    for (int k = 0; k < UNETR_SKIPS; k++)
        prup_forward(m, &m->enc[k], &m->enc_a[k], m->va.st.act[m->skip_block[k]].out);
    be->transpose_tokens(m->xfeat, m->va.st.out, B, N, m->E);
    /* decoder5 pairs with encoder4, decoder4 with encoder3, decoder3 with encoder2, decoder2
     * with encoder1. */
    const float *x = m->xfeat;
    for (int d = 0; d < UNETR_DECODERS; d++) {
        const float *skip = d == DEC2 ? m->enc1_a.out : m->enc_a[UNETR_SKIPS - 1 - d].out;
        upblock_forward(m, &m->dec[d], &m->dec_a[d], x, skip);
        x = m->dec_a[d].res.out;
    }
    be->conv3d_fwd(m->logits, x, param(&m->ps, m->out_w), param(&m->ps, m->out_b), B, m->F, m->K,
                   crop[0], crop[1], crop[2], 1, 1, 0);
    return m->logits;
}

const float *unetr_forward(UnetrModel *m) { return forward(m, 0); }

void unetr_enqueue_step(UnetrModel *m)
{
    ALICE_ASSERT(m->train, "unetr_enqueue_step on a model laid out for inference");
    const AliceBackend *be = m->be;
    ParamSet *ps = &m->ps;
    const int B = m->B, N = m->N;
    const long D = unetr_crop_voxels(m);
    const int *crop = m->level_dim[UNETR_LEVELS - 1];
    if (m->zero_grads_in_step) be->fill(ps->grad, 0.0f, ps->total);
    forward(m, 1);
    be->dicece_fwd(m->probs, m->loss_values, m->logits, m->label, B, m->K, D);
    be->dicece_bwd(m->dlogits, m->probs, m->label, B, m->K, D, 1.0f, 1.0f);
    const float *x = m->dec_a[DEC2].res.out;
    be->conv3d_bwd(m->ddec[DEC2], param_grad(ps, m->out_w), param_grad(ps, m->out_b), m->dlogits, x,
                   param(ps, m->out_w), B, m->F, m->K, crop[0], crop[1], crop[2], 1, 1, 0);
    for (int d = DEC2; d >= DEC5; d--) {
        const float *in = d == DEC5 ? m->xfeat : m->dec_a[d - 1].res.out;
        float *dskip = d == DEC2 ? m->denc1 : m->denc[UNETR_SKIPS - 1 - d];
        float *dx = d == DEC5 ? m->dfeat : m->ddec[d - 1];
        upblock_backward(m, &m->dec[d], &m->dec_a[d], in, m->ddec[d], dx, dskip);
    }
    be->transpose_tokens(m->dvit_out, m->dfeat, B, m->E, N);
    res_backward(m, &m->enc1, &m->enc1_a, m->image, UNETR_LEVELS - 1, m->denc1, NULL);
    for (int k = 0; k < UNETR_SKIPS; k++)
        prup_backward(m, &m->enc[k], &m->enc_a[k], m->denc[k], m->dtaps[k]);
    /* One backward pass: each module's gradients are final once its backward is done. */
    ps->grads_final = 1;
    params_grads_ready(ps, m->cnn_params);
    vit_encoder_backward_taps(&m->vit, &m->va, ps, m->dvit_out, m->taps);
    ps->grads_final = 0;
}

SegLoss unetr_read_losses(const UnetrModel *m)
{
    float v[SEG_LOSS_VALUE_COUNT];
    m->be->download(v, m->loss_values, sizeof v);
    if (v[SEG_LOSS_BAD_LABELS] > 0.0f)
        alice_die("segmentation loss: %.0f label voxels lie outside 0..%d (the network predicts "
                  "%d classes); make the model's class count (num_classes) match the data set's "
                  "label set", v[SEG_LOSS_BAD_LABELS], m->K - 1, m->K);
    return (SegLoss){(double)v[SEG_LOSS_CE] + (double)v[SEG_LOSS_DICE], v[SEG_LOSS_CE],
                     v[SEG_LOSS_DICE]};
}

SegLoss unetr_forward_backward(UnetrModel *m)
{
    unetr_enqueue_step(m);
    return unetr_read_losses(m);
}

const float *unetr_predict(void *ctx, const float *windows, int n)
{
    UnetrModel *m = ctx;
    ALICE_ASSERT(n >= 1 && n <= m->B, "%d windows for a model of batch %d", n, m->B);
    /* The model always runs its full batch; the caller zero-fills unused window slots. */
    m->be->copy(m->image, windows, (size_t)m->B * unetr_crop_voxels(m) * sizeof(float));
    return unetr_forward(m);
}
