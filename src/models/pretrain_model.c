#include "models/pretrain_model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "core/log.h"
#include "core/rng.h"
#include "nn/layers.h"

const char *const pretrain_center_names[CENTER_COUNT] = {"center.cls", "center.tokens"};

static void check_config(const Config *c)
{
    config_validate_pretraining(c);
    if (c->embed_dim % 6)
        alice_die("configuration: embed_dim = %d must be divisible by 6 (3D sin-cos position "
                  "embedding); 768, 384 and 96 are", c->embed_dim);
    if (c->dec_dim % 6)
        alice_die("configuration: dec_dim = %d must be divisible by 6 (3D sin-cos position "
                  "embedding)", c->dec_dim);
}

static void layout(PretrainModel *m, Arena *ar)
{
    const Config *c = &m->cfg;
    const int B = m->B, N = m->N, nvis = m->nvis, P = m->P, E = c->embed_dim, D = c->dec_dim;
    const size_t sample_vox = (size_t)m->dims[0] * m->dims[1] * m->dims[2];
    const size_t vox = (size_t)B * sample_vox;
    const int out = c->head_out;
    m->posE = arena_floats(ar, (size_t)N * E);
    m->posD = arena_floats(ar, (size_t)N * D);
    m->identity = arena_ints(ar, (size_t)N);
    m->loss_values = arena_floats(ar, LOSS_VALUE_COUNT);
    const int masked_views = m->alice ? MASKED_VIEWS : 1;
    MaskedBatchActs *s = &m->masked;
    const int S = s->S = masked_views * B;
    s->vol = arena_floats(ar, (size_t)masked_views * vox);
    s->perm = arena_ints(ar, (size_t)S * N);
    s->mask = arena_floats(ar, (size_t)S * N);
    s->patches = arena_floats(ar, (size_t)S * N * P);
    s->target = arena_floats(ar, (size_t)S * N * P);
    s->dpred = arena_floats(ar, (size_t)S * N * P);
    s->dV = arena_floats(ar, (size_t)S * nvis * E);
    vit_encoder_layout(&m->enc, &s->enc, ar, S, nvis, TSTACK_TRAIN);
    tstack_layout_drop_path(&m->enc.stack, &s->enc.st, ar, c->drop_path);
    mae_decoder_layout(&m->dec, &s->dec, ar, S, N, nvis, 1, m->casa_features);
    /* In the planning pass these slices are placeholders too; the second pass recomputes them. */
    for (int v = 0; v < masked_views; v++) {
        const size_t first = (size_t)v * B;   /* the view's first sample in the merged batch */
        m->mv[v] = (MaskedViewSlice){s->vol + first * sample_vox, s->perm + first * N,
                                     s->mask + first * N};
    }
    if (!m->alice) return;
    proj_head_layout_for_input(&m->head, &s->phi, ar, S * N, 1, mae_decoder_H(&s->dec).type);
    s->cls_cross = arena_floats(ar, (size_t)S * out);
    if (m->cls_encoder) {   /* cls and its gradient are phi_cls's output and output gradient */
        s->pooled = arena_floats(ar, (size_t)S * E);
        s->cls_in = arena_floats(ar, (size_t)S * D);
        s->dpooled = arena_floats(ar, (size_t)S * E);
        s->dV_cls = arena_floats(ar, (size_t)S * nvis * E);
        proj_head_layout_for_input(&m->head, &s->phi_cls, ar, S, 1, DTYPE_F32);
        s->cls = s->phi_cls.z;
        s->dcls = s->phi_cls.dz;
    } else {
        s->cls = arena_floats(ar, (size_t)S * out);
        s->dcls = arena_floats(ar, (size_t)S * out);
    }
    casa_query_layout(&m->casa, &s->cq, ar, S, nvis, 1);
    casa_kv_layout(&m->casa, &s->student, ar, S, nvis, N, 1);
    casa_kv_layout(&m->casa, &s->teacher, ar, S, nvis, N, 0);
    s->sel_s = arena_floats(ar, (size_t)S * nvis * out);
    s->sel_t = arena_floats(ar, (size_t)S * nvis * out);
    s->dsel = arena_floats(ar, (size_t)S * nvis * out);
    const int teacher_samples = MASKED_VIEWS * B;
    IntactBatchActs *t = &m->intact;
    t->vol = arena_floats(ar, MASKED_VIEWS * vox);
    t->patches = arena_act(ar, (size_t)teacher_samples * N * P, ar->act_type);
    /* all N tokens in order: the patch embedding reads t->patches, no gathered copy */
    vit_encoder_layout_all_tokens(&m->enc, &t->enc, ar, teacher_samples, N, TSTACK_FORWARD_ONLY);
    if (m->teacher_full) {
        mae_decoder_layout_features(&m->dec, &t->dec, ar, teacher_samples, N, m->casa_features);
        t->feat = mae_decoder_H(&t->dec);
    } else {
        t->yd = arena_floats(ar, (size_t)teacher_samples * N * D);
        t->feat = (Act){t->yd, DTYPE_F32};
    }
    proj_head_layout_for_input(&m->head, &t->psi, ar, teacher_samples * N, 0, t->feat.type);
    if (m->cls_encoder) {
        t->pooled = arena_floats(ar, (size_t)teacher_samples * E);
        t->cls_in = arena_floats(ar, (size_t)teacher_samples * D);
        proj_head_layout_for_input(&m->head, &t->psi_cls, ar, teacher_samples, 0, DTYPE_F32);
        t->cls = t->psi_cls.z;
    } else {
        t->cls = arena_floats(ar, (size_t)teacher_samples * out);
    }
    /* In the planning pass these slices are placeholders too; the second pass recomputes them. */
    for (int v = 0; v < MASKED_VIEWS; v++) {
        IntactViewActs *a = &m->iv[v];
        const size_t first = (size_t)v * B;   /* the view's first sample in the merged batch */
        a->vol = t->vol + first * sample_vox;
        a->patches = act_offset(t->patches, first * N * P);
        a->enc_out = t->enc.st.out + first * N * E;
        a->feat = act_offset(t->feat, first * N * D);
        a->psi = proj_head_rows(&m->head, &t->psi, first * N, (size_t)B * N);
        a->cls = t->cls + first * out;
    }
    if (m->dino) {
        m->center_batch = arena_floats(ar, (size_t)CENTER_COUNT * out);
        m->center_sum = arena_floats(ar, (size_t)CENTER_COUNT * out);
    }
}

/* Key of masked sample s (merged batch order) when the rank's first global sample is
 * first_sample: global sample g, view v -> sample word 2g + v (see docs/MODEL.md). */
static uint32_t masked_sample_word(const PretrainModel *m, long first_sample, int s)
{
    const int v = s / m->B;
    const long g = first_sample + s % m->B;
    return (uint32_t)(2 * g + v);
}

/* The student encoder's drop-path scales of the step (nothing without drop-path). */
static void draw_drop_path(PretrainModel *m, long step, long first_sample)
{
    if (!m->drop_host) return;
    const TStackActs *st = &m->masked.enc.st;
    for (int s = 0; s < m->masked.S; s++) {
        RngStream rng;
        rng_init(&rng, (uint64_t)m->cfg.seed, (uint32_t)step,
                 masked_sample_word(m, first_sample, s), RNG_DROP_PATH);
        drop_path_draw_sample(m->drop_host, st->drop_rate, m->enc.stack.depth, m->masked.S, s,
                              &rng);
    }
    m->be->upload(st->drop_scale, m->drop_host,
                  tstack_drop_scale_count(&m->enc.stack, st) * sizeof(float));
}

void pretrain_model_init(PretrainModel *m, const Config *cfg, const AliceBackend *be, int B)
{
    memset(m, 0, sizeof *m);
    check_config(cfg);
    m->cfg = *cfg;
    m->be = be;
    m->alice = strcmp(cfg->method, "alice") == 0;
    m->cls_encoder = m->alice && strcmp(cfg->cls_source, "encoder") == 0;
    if (!m->alice && cfg->freeze_last_layer > 0)
        log_warn("freeze_last_layer = %ld is ignored: method = %s has no projection head",
                 cfg->freeze_last_layer, cfg->method);
    else if (cfg->freeze_last_layer >= cfg->steps)
        log_warn("freeze_last_layer = %ld >= steps = %ld: the projection head's last layer never "
                 "trains in this run (DINO freezes it for the first epoch only)",
                 cfg->freeze_last_layer, cfg->steps);
    if (!m->alice && cfg->pair_redraws > 0)
        log_warn("pair_redraws = %d is ignored: method = %s reads no key crop", cfg->pair_redraws,
                 cfg->method);
    if (cfg->layer_decay < 1.0f)
        log_warn("layer_decay = %g is ignored: layer-wise lr decay applies to fine-tuning",
                 cfg->layer_decay);
    m->teacher_full = strcmp(cfg->teacher_decoder, "full") == 0;
    m->casa_features = m->alice && cfg->use_casa && strcmp(cfg->casa_kv, "features") == 0;
    if (m->alice && !cfg->use_casa && strcmp(cfg->casa_kv, "heads") != 0)
        log_warn("casa_kv = %s is ignored: use_casa = 0 has no CASA", cfg->casa_kv);
    m->dino = m->alice && strcmp(cfg->align_loss, "dino") == 0;
    m->teacher_temp = pretrain_teacher_temp(cfg, 0);
    m->zero_grads_in_step = 1;
    m->B = B;
    m->N = 1;
    for (int a = 0; a < 3; a++) {
        m->dims[a] = cfg->crop[a];
        m->grid[a] = cfg->crop[a] / cfg->patch;
        m->N *= m->grid[a];
    }
    m->nvis = m->N - (int)floorf(cfg->mask_ratio * (float)m->N);
    m->P = cfg->patch * cfg->patch * cfg->patch;

    ParamSet *ps = &m->online;
    params_init_registry(ps);
    vit_encoder_register(&m->enc, ps, "encoder", cfg->patch, cfg->embed_dim, cfg->heads,
                         cfg->mlp_dim, cfg->depth);
    m->decoder_params = params_range_open(ps);
    mae_decoder_register(&m->dec, ps, "decoder", cfg->embed_dim, cfg->dec_dim, cfg->dec_heads,
                         cfg->dec_mlp_dim, cfg->dec_depth, m->P);
    params_range_close(ps, &m->decoder_params);
    m->head_params = m->casa_params = params_range_open(ps);
    if (m->alice) {
        proj_head_register(&m->head, ps, "head", cfg->dec_dim, cfg->head_hidden,
                           cfg->head_bottleneck, cfg->head_out, cfg->head_norm_last,
                           strcmp(cfg->head_init, "dino") == 0);
        m->cls_proj_w = m->cls_proj_b = NO_PARAM;
        if (m->cls_encoder)
            register_linear(ps, "cls_proj", cfg->embed_dim, cfg->dec_dim, 1, &m->cls_proj_w,
                            &m->cls_proj_b);
        params_range_close(ps, &m->head_params);
        m->casa_params = params_range_open(ps);
        casa_register(&m->casa, ps, "casa", cfg->embed_dim,
                      m->casa_features ? cfg->dec_dim : cfg->head_out, cfg->casa_dim,
                      cfg->head_out, strcmp(cfg->casa_layer, "transformer") == 0,
                      cfg->casa_heads, cfg->casa_ffn_dim);
        params_range_close(ps, &m->casa_params);
    }
    params_allocate(ps, be, 1);
    params_initialize(ps, (uint64_t)cfg->seed);
    if (m->alice) {
        params_clone_layout(&m->target, ps);
        params_allocate(&m->target, be, 0);
        be->copy(m->target.data, ps->data, ps->total * sizeof(float));
    }
    params_init_registry(&m->buffers);
    if (m->dino) {
        /* DINO starts its centers at zero. */
        for (int c = 0; c < CENTER_COUNT; c++)
            m->center[c] = params_add1(&m->buffers, pretrain_center_names[c], cfg->head_out, 0,
                                       INIT_ZEROS);
        params_allocate(&m->buffers, be, 0);
        params_initialize(&m->buffers, (uint64_t)cfg->seed);
    }

    arena_plan_mixed(&m->arena, be, cfg->precision, cfg->bf16_activations,
                     cfg->bf16_branch_out);
    layout(m, &m->arena);
    arena_commit(&m->arena);
    layout(m, &m->arena);

    const int N = m->N;
    float *pos = xmalloc((size_t)N * (cfg->embed_dim > cfg->dec_dim ? cfg->embed_dim : cfg->dec_dim) * sizeof(float));
    sincos_position_embedding_3d(pos, m->grid, cfg->embed_dim);
    be->upload(m->posE, pos, (size_t)N * cfg->embed_dim * sizeof(float));
    sincos_position_embedding_3d(pos, m->grid, cfg->dec_dim);
    be->upload(m->posD, pos, (size_t)N * cfg->dec_dim * sizeof(float));
    free(pos);
    int *ident = xmalloc((size_t)N * sizeof(int));
    for (int n = 0; n < N; n++) ident[n] = n;
    be->upload(m->identity, ident, (size_t)N * sizeof(int));
    free(ident);
    m->perm_host = xmalloc((size_t)m->masked.S * N * sizeof(int));
    m->mask_host = xmalloc((size_t)m->masked.S * N * sizeof(float));
    m->column_perm = strcmp(cfg->mask_shape, "z_tubes") == 0
                         ? xmalloc((size_t)(N / m->grid[2]) * sizeof(int)) : NULL;
    const size_t drop_count = tstack_drop_scale_count(&m->enc.stack, &m->masked.enc.st);
    m->drop_host = drop_count ? xmalloc(drop_count * sizeof(float)) : NULL;
    draw_drop_path(m, 0, 0);   /* defined scales before any draw_masks (tests set masks) */
}

void pretrain_model_free(PretrainModel *m)
{
    arena_free(&m->arena);
    params_free(&m->online);
    if (m->alice) params_free(&m->target);
    if (m->dino) params_free(&m->buffers);
    free(m->perm_host);
    free(m->drop_host);
    free(m->mask_host);
    free(m->column_perm);
}

/* Uploads `samples` samples' permutations (host [samples, N]) from sample `first` of the
 * merged student batch on, with their masks. The mask is read by l_r alone: 1 on the masked
 * tokens, or on every token with rec_region = all. */
static void upload_masks(PretrainModel *m, int first, int samples, const int *perm_host)
{
    const int N = m->N, every = strcmp(m->cfg.rec_region, "all") == 0;
    for (int b = 0; b < samples; b++)
        for (int j = 0; j < N; j++)
            m->mask_host[(size_t)b * N + perm_host[(size_t)b * N + j]] =
                every || j >= m->nvis ? 1.0f : 0.0f;
    const size_t rows = (size_t)samples * N, at = (size_t)first * N;
    m->be->upload(m->masked.perm + at, perm_host, rows * sizeof(int));
    m->be->upload(m->masked.mask + at, m->mask_host, rows * sizeof(float));
}

void pretrain_model_set_masks(PretrainModel *m, int view, const int *perm_host)
{
    upload_masks(m, view * m->B, m->B, perm_host);
}

void pretrain_model_draw_masks(PretrainModel *m, long step, long first_sample)
{
    MaskedBatchActs *a = &m->masked;
    for (int s = 0; s < a->S; s++) {
        RngStream rng;
        rng_init(&rng, (uint64_t)m->cfg.seed, (uint32_t)step,
                 masked_sample_word(m, first_sample, s), RNG_MASK);
        int *perm = m->perm_host + (size_t)s * m->N;
        if (!m->column_perm) {
            rng_permutation(&rng, perm, m->N);
            continue;
        }
        /* z_tubes: a permutation of the in-plane positions (ix, iy), each expanded to its gz
         * tokens in z order; nvis is a whole number of columns (config check) */
        const int gz = m->grid[2], columns = m->N / gz;
        rng_permutation(&rng, m->column_perm, columns);
        for (int c = 0; c < columns; c++)
            for (int z = 0; z < gz; z++) perm[c * gz + z] = m->column_perm[c] * gz + z;
    }
    upload_masks(m, 0, a->S, m->perm_host);   /* every view in one upload */
    draw_drop_path(m, step, first_sample);
}

/* The model's input buffer of view v (ViewId order). */
static float *view_input(PretrainModel *m, int v)
{
    return v < VIEW_INTACT_Q ? m->mv[v].vol : m->iv[v - VIEW_INTACT_Q].vol;
}

void pretrain_model_transfer_views(PretrainModel *m, const float *const views[VIEW_COUNT],
                                   ViewTransfer from)
{
    const size_t bytes = (size_t)m->B * m->dims[0] * m->dims[1] * m->dims[2] * sizeof(float);
    for (int v = 0; v < VIEW_COUNT; v++) {
        if (!m->alice && v != VIEW_MASKED_Q) continue;   /* MAE reads one view */
        ALICE_ASSERT(views[v], "missing input view %d", v);
        if (from == VIEWS_FROM_DEVICE) m->be->copy(view_input(m, v), views[v], bytes);
        else m->be->upload(view_input(m, v), views[v], bytes);
    }
}

void pretrain_model_set_views(PretrainModel *m, const float *const views[VIEW_COUNT])
{
    pretrain_model_transfer_views(m, views, VIEWS_FROM_HOST);
}

/* Target branch of both intact views as one batch of MASKED_VIEWS x B samples (their volumes
 * lie view after view, so one patchify covers both): EMA encoder on all tokens, the EMA
 * decoder over all tokens (teacher_decoder = full: psi reads what phi reads, a final
 * LayerNorm's output) or its decoder_embed alone, psi, per-sample pooling. Every op computes
 * a sample's rows independently of the others, so each view's outputs are those of a forward
 * of that view alone. */
/* cls_source = encoder: acts->z (the [cls] rows) = head(cls_proj(mean over the T tokens of the
 * encoder output x)) for S samples, with ps's weights (the online set or the EMA target). */
static void encoder_cls_forward(const PretrainModel *m, const ParamSet *ps, ProjHeadActs *acts,
                                float *pooled, float *cls_in, const float *x, int S, int T)
{
    const Config *c = &m->cfg;
    m->be->mean_rows_fwd(pooled, x, S, T, c->embed_dim);
    linear_forward(ps, m->cls_proj_w, m->cls_proj_b, cls_in, pooled, S, c->embed_dim, c->dec_dim);
    proj_head_forward(&m->head, acts, ps, cls_in);
}

static void intact_forward(PretrainModel *m)
{
    const AliceBackend *be = m->be;
    const Config *c = &m->cfg;
    IntactBatchActs *a = &m->intact;
    const int S = MASKED_VIEWS * m->B, N = m->N;
    if (a->patches.type == DTYPE_BF16)
        be->patchify_bf16(a->patches.p, a->vol, S, m->dims[0], m->dims[1], m->dims[2], c->patch);
    else
        be->patchify(a->patches.p, a->vol, S, m->dims[0], m->dims[1], m->dims[2], c->patch);
    /* idx_ld = 0: every sample takes all N tokens in order, so identity's N entries serve all
     * S samples (the ops contract reads idx[b * idx_ld + j]). */
    vit_encoder_forward_act(&m->enc, &a->enc, &m->target, a->patches, N, m->identity, 0,
                            m->posE);
    if (m->teacher_full)
        mae_decoder_forward_features(&m->dec, &a->dec, &m->target, a->enc.st.out, m->posD,
                                     m->identity);
    else
        linear_forward(&m->target, m->dec.embed_w, m->dec.embed_b, a->yd, a->enc.st.out, S * N,
                       c->embed_dim, c->dec_dim);
    proj_head_forward_act(&m->head, &a->psi, &m->target, a->feat);
    if (m->cls_encoder)
        encoder_cls_forward(m, &m->target, &a->psi_cls, a->pooled, a->cls_in, a->enc.st.out, S, N);
    else
        be->mean_rows_fwd(a->cls, a->psi.z, S, N, c->head_out);
}

/* The student's reconstruction branch over every masked view: patchify, targets, online
 * encoder on the visible tokens, decoder, and l_r over the merged rows (each view holds the same
 * number of masked rows, so it is the mean of the per-view l_r: the 1/2 of eq. 5). */
static void masked_forward(PretrainModel *m)
{
    const AliceBackend *be = m->be;
    const Config *c = &m->cfg;
    MaskedBatchActs *a = &m->masked;
    const int S = a->S, N = m->N;
    be->patchify(a->patches, a->vol, S, m->dims[0], m->dims[1], m->dims[2], c->patch);
    if (c->norm_pix) be->normalize_rows(a->target, a->patches, S * N, m->P, 1e-6f);
    else be->copy(a->target, a->patches, (size_t)S * N * m->P * sizeof(float));
    vit_encoder_forward(&m->enc, &a->enc, &m->online, a->patches, N, a->perm, N, m->posE);
    mae_decoder_forward(&m->dec, &a->dec, &m->online, a->enc.st.out, a->perm, m->posD, m->identity);
    be->masked_mse_fwd(m->loss_values + LOSS_VALUE_REC, a->dec.pred, a->target, a->mask, S * N,
                       m->P);
}

/* The alignment loss of l_dv / l_st on rows x head_out into *loss: the paper's cosine loss, or
 * DINO's cross-entropy of the sharpened, centred teacher softmax against the student's. t is a
 * stop-gradient target either way. */
static void align_fwd(const PretrainModel *m, float *loss, const float *s, const float *t,
                      CenterId center, int rows)
{
    const Config *c = &m->cfg;
    if (!m->dino) {
        m->be->cosine_loss_fwd(loss, s, t, rows, c->head_out);
        return;
    }
    m->be->soft_ce_fwd(loss, s, t, param(&m->buffers, m->center[center]), rows, c->head_out,
                       1.0f / c->student_temp, 1.0f / m->teacher_temp);
}

static void align_bwd(const PretrainModel *m, float *ds, const float *s, const float *t,
                      CenterId center, int rows, float scale)
{
    const Config *c = &m->cfg;
    if (!m->dino) {
        m->be->cosine_loss_bwd(ds, NULL, s, t, rows, c->head_out, scale);
        return;
    }
    m->be->soft_ce_bwd(ds, s, t, param(&m->buffers, m->center[center]), rows, c->head_out,
                       1.0f / c->student_temp, 1.0f / m->teacher_temp, scale);
}

/* What CASA's keys and values read (casa_kv): the heads' outputs, phi(H) and psi(Yd), or the
 * features before them, H and Yd (fp32 then: mae_decoder_layout's h_fp32). */
static const float *casa_student_kv(const PretrainModel *m)
{
    return m->casa_features ? act_f32(mae_decoder_H(&m->masked.dec)) : m->masked.phi.z;
}

static const float *casa_teacher_kv(const PretrainModel *m)
{
    return m->casa_features ? act_f32(m->intact.feat) : m->intact.psi.z;
}

/* The Alice terms of every masked view against its intact views. Masked sample s pairs with
 * intact sample s (l_st); for l_dv, cls_cross gets the pooled teacher rows of the other crop's
 * intact view. The align ops return means over the merged rows, i.e. the mean over views of
 * the per-view terms: pretrain_model_read_losses multiplies by the views to get their sums. */
static void alice_forward(PretrainModel *m)
{
    const AliceBackend *be = m->be;
    const Config *c = &m->cfg;
    MaskedBatchActs *a = &m->masked;
    const IntactBatchActs *t = &m->intact;
    const int B = m->B, S = a->S, N = m->N, nvis = m->nvis, out = c->head_out;
    proj_head_forward_act(&m->head, &a->phi, &m->online, mae_decoder_H(&a->dec));
    if (m->cls_encoder)
        encoder_cls_forward(m, &m->online, &a->phi_cls, a->pooled, a->cls_in, a->enc.st.out, S,
                            nvis);
    else
        be->mean_rows_fwd(a->cls, a->phi.z, S, N, out);
    if (c->use_casa) {
        casa_query_forward(&m->casa, &a->cq, &m->online, a->enc.st.out);
        casa_kv_forward(&m->casa, &a->cq, &a->student, &m->online, casa_student_kv(m));
        if (!m->freeze_teacher)
            casa_kv_forward(&m->casa, &a->cq, &a->teacher, &m->online, casa_teacher_kv(m));
        align_fwd(m, m->loss_values + LOSS_VALUE_ST, a->student.out, a->teacher.out,
                  CENTER_TOKENS, S * nvis);
    } else {
        be->gather_rows(a->sel_s, a->phi.z, a->perm, N, S, N, nvis, out);
        be->gather_rows(a->sel_t, t->psi.z, a->perm, N, S, N, nvis, out);
        align_fwd(m, m->loss_values + LOSS_VALUE_ST, a->sel_s, a->sel_t, CENTER_TOKENS, S * nvis);
    }
    if (!c->use_dv) return;
    const size_t view_bytes = (size_t)B * out * sizeof(float);
    for (int v = 0; v < MASKED_VIEWS; v++)
        be->copy(a->cls_cross + (size_t)v * B * out, m->iv[CROSS_INTACT(v) - VIEW_INTACT_Q].cls,
                 view_bytes);
    align_fwd(m, m->loss_values + LOSS_VALUE_DV, a->cls, a->cls_cross, CENTER_CLS, S);
}

/* The one backward of the student over every masked view. The align ops' gradients are those
 * of the mean over merged rows; the loss sums the views' terms, hence the views factor. */
static void masked_backward(PretrainModel *m)
{
    const AliceBackend *be = m->be;
    const Config *c = &m->cfg;
    MaskedBatchActs *a = &m->masked;
    const int S = a->S, N = m->N, nvis = m->nvis, out = c->head_out;
    const float views = (float)(S / m->B);
    ParamSet *ps = &m->online;
    be->masked_mse_bwd(a->dpred, a->dec.pred, a->target, a->mask, S * N, m->P, c->w_rec);
    const float *dH_extra = NULL;
    if (m->alice) {
        /* Gradients reaching phi(H): pooled [cls] (l_dv) and CASA keys/values or the direct
         * token similarity (l_st). Targets (teacher side) are constants. */
        if (c->use_dv)
            align_bwd(m, a->dcls, a->cls, a->cls_cross, CENTER_CLS, S, views * c->w_dv);
        if (c->use_dv && !m->cls_encoder) {
            be->mean_rows_bwd(a->phi.dz, a->dcls, S, N, out);
        } else {
            be->fill(a->phi.dz, 0.0f, (size_t)S * N * out);
        }
        if (c->use_dv && m->cls_encoder) {
            /* phi_cls (its dz is dcls), cls_proj and the mean over V: their gradient joins dV
             * after the decoder's backward (which writes dV) */
            proj_head_backward(&m->head, &a->phi_cls, ps, a->cls_in);
            linear_backward(ps, m->cls_proj_w, m->cls_proj_b, a->dpooled, a->phi_cls.dx,
                            a->pooled, S, c->embed_dim, c->dec_dim);
            be->mean_rows_bwd(a->dV_cls, a->dpooled, S, nvis, c->embed_dim);
        }
        if (c->use_casa) {
            align_bwd(m, a->student.dout, a->student.out, a->teacher.out, CENTER_TOKENS,
                      S * nvis, views * c->w_st);
            casa_kv_backward(&m->casa, &a->cq, &a->student, ps, casa_student_kv(m));
            if (!m->casa_features)   /* features: the keys' gradient joins dH below */
                be->add(a->phi.dz, a->phi.dz, a->student.dfeat, (size_t)S * N * out);
        } else {
            align_bwd(m, a->dsel, a->sel_s, a->sel_t, CENTER_TOKENS, S * nvis, views * c->w_st);
            be->scatter_add_rows(a->phi.dz, a->dsel, a->perm, N, S, N, nvis, out);
        }
        proj_head_backward_act(&m->head, &a->phi, ps, mae_decoder_H(&a->dec));
        params_grads_ready(ps, m->head_params);
        if (m->casa_features)
            be->add(a->phi.dx, a->phi.dx, a->student.dfeat, (size_t)S * N * c->dec_dim);
        dH_extra = a->phi.dx;
    }
    mae_decoder_backward(&m->dec, &a->dec, ps, a->enc.st.out, a->perm, a->dpred, dH_extra, a->dV);
    params_grads_ready(ps, m->decoder_params);
    if (m->cls_encoder && c->use_dv)
        be->add(a->dV, a->dV, a->dV_cls, (size_t)S * nvis * c->embed_dim);
    if (m->alice && c->use_casa) {
        casa_query_backward(&m->casa, &a->cq, ps, a->enc.st.out);
        be->add(a->dV, a->dV, a->cq.dV, (size_t)S * nvis * c->embed_dim);
    }
    /* Without CASA its tensors get no gradient at all: final (zero) either way. */
    params_grads_ready(ps, m->casa_params);
    vit_encoder_backward(&m->enc, &a->enc, ps, a->dV);
}

void pretrain_model_enqueue_step(PretrainModel *m)
{
    if (m->zero_grads_in_step) m->be->fill(m->online.grad, 0.0f, m->online.total);
    /* Terms the configuration leaves out read 0. */
    m->be->fill(m->loss_values, 0.0f, LOSS_VALUE_COUNT);
    if (m->alice) intact_forward(m);
    masked_forward(m);
    if (m->alice) alice_forward(m);
    m->online.grads_final = 1;   /* one backward pass: every contribution is the last */
    masked_backward(m);
    m->online.grads_final = 0;
}

LossTerms pretrain_model_read_losses(const PretrainModel *m)
{
    const Config *c = &m->cfg;
    float v[LOSS_VALUE_COUNT];
    m->be->download(v, m->loss_values, sizeof v);
    /* l_dv and l_st are sums over the masked views of per-view means (eq. 5); the ops wrote
     * their mean over the merged views. */
    const double views = m->alice ? MASKED_VIEWS : 1;
    LossTerms t = {0, v[LOSS_VALUE_REC], views * v[LOSS_VALUE_DV], views * v[LOSS_VALUE_ST]};
    t.loss = c->w_rec * t.l_r + (m->alice ? c->w_dv * t.l_dv + c->w_st * t.l_st : 0.0);
    return t;
}

float pretrain_teacher_temp(const Config *cfg, long step)
{
    const long warmup = cfg->warmup_teacher_temp_steps;
    if (step >= warmup) return cfg->teacher_temp;
    if (warmup == 1) return cfg->warmup_teacher_temp;
    const double t = (double)step / (double)(warmup - 1);
    return (float)(cfg->warmup_teacher_temp + t * ((double)cfg->teacher_temp -
                                                   cfg->warmup_teacher_temp));
}

int pretrain_model_begin_step(PretrainModel *m, long step)
{
    m->teacher_temp = pretrain_teacher_temp(&m->cfg, step);
    /* read by the optimiser after the step (outside any recorded graph) */
    if (m->alice) m->online.held[m->head.last_w] = step < m->cfg.freeze_last_layer;
    return !m->dino || step >= m->cfg.warmup_teacher_temp_steps;
}

LossTerms pretrain_model_forward_backward(PretrainModel *m)
{
    pretrain_model_enqueue_step(m);
    return pretrain_model_read_losses(m);
}

/* center_batch <- the means of the teacher rows each loss compared against in the forward just
 * run: both intact views' pooled outputs (l_dv) and both masked views' T (or selected psi
 * tokens without CASA), each set one merged batch, so one mean covers every view. */
static void teacher_row_means(PretrainModel *m)
{
    const AliceBackend *be = m->be;
    const MaskedBatchActs *a = &m->masked;
    const int S = a->S, nvis = m->nvis, out = m->cfg.head_out;
    const float *tokens = m->cfg.use_casa ? a->teacher.out : a->sel_t;
    be->mean_rows_fwd(m->center_batch + (size_t)CENTER_CLS * out, m->intact.cls, 1, S, out);
    be->mean_rows_fwd(m->center_batch + (size_t)CENTER_TOKENS * out, tokens, 1, S * nvis, out);
}

void pretrain_model_collect_centers(PretrainModel *m)
{
    if (!m->dino) return;
    const size_t n = (size_t)CENTER_COUNT * m->cfg.head_out;
    teacher_row_means(m);
    if (m->centers_collected++ == 0) m->be->copy(m->center_sum, m->center_batch, n * sizeof(float));
    else m->be->add(m->center_sum, m->center_sum, m->center_batch, n);
}

void pretrain_model_update_centers(PretrainModel *m, AllreduceMeanFn allreduce_mean, void *ctx)
{
    if (!m->dino) return;
    const AliceBackend *be = m->be;
    const int out = m->cfg.head_out;
    if (m->centers_collected > 0) {   /* micro-batches: the mean of their means */
        be->axpby(m->center_batch, m->center_sum, 1.0f / (float)m->centers_collected, 0.0f,
                  (size_t)CENTER_COUNT * out);
        m->centers_collected = 0;
    } else {
        teacher_row_means(m);
    }
    allreduce_mean(m->center_batch, (size_t)CENTER_COUNT * out, ctx);
    for (int c = 0; c < CENTER_COUNT; c++)
        be->ema_update(param(&m->buffers, m->center[c]), m->center_batch + (size_t)c * out,
                       (size_t)out, m->cfg.center_momentum);
}

double pretrain_model_step_flops(const PretrainModel *m)
{
    const Config *c = &m->cfg;
    const int B = m->B, N = m->N, nvis = m->nvis;
    double student = vit_encoder_forward_flops(&m->enc, B, nvis) +
                     mae_decoder_forward_flops(&m->dec, B, N, nvis);
    /* Backward is 2x forward (weight and input gradient GEMMs) except for the patch embedding:
     * its input is data, so vit_encoder_backward runs the weight gradient only. */
    double patch_input_grad = 2.0 * B * nvis * (double)m->enc.P * m->enc.width;
    if (!m->alice) return 3.0 * student - patch_input_grad;
    const ProjHead *h = &m->head;
    const double head_per_row = 2.0 * ((double)h->in * h->hidden + (double)h->hidden * h->hidden +
                                       (double)h->hidden * h->bottleneck +
                                       (double)h->bottleneck * h->out);
    double head = B * N * head_per_row;
    /* cls_source = encoder: cls_proj and the head on one pooled row per sample, both sides */
    const double cls = m->cls_encoder
                           ? B * head_per_row + 2.0 * B * (double)c->embed_dim * c->dec_dim
                           : 0.0;
    double casa_q = casa_query_flops(&m->casa, B, nvis);
    double casa_kv = casa_kv_flops(&m->casa, B, nvis, N);
    double teacher = vit_encoder_forward_flops(&m->enc, B, N) + head + cls +
                     (m->teacher_full ? mae_decoder_features_flops(&m->dec, B, N, N)
                                      : 2.0 * B * N * (double)c->embed_dim * c->dec_dim);
    /* the student's cls rows run backward only when l_dv is on */
    double per_view = 3.0 * (student + head + (c->use_casa ? casa_q + casa_kv : 0)) +
                      (c->use_dv ? 3.0 : 1.0) * cls +
                      (c->use_casa ? casa_kv : 0) + teacher - patch_input_grad;
    return MASKED_VIEWS * per_view;
}

float pretrain_ema_momentum(const Config *cfg, long step)
{
    double s = cfg->steps > 0 ? (double)step / (double)cfg->steps : 1.0;
    return (float)(cfg->ema_end - (cfg->ema_end - cfg->ema_start) * (cos(M_PI * s) + 1.0) / 2.0);
}

int pretrain_model_feature_sums(const PretrainModel *m, double *sums)
{
    if (!m->alice) return 0;
    const int rows = m->B * m->N, dim = m->cfg.head_out;
    float *z = xmalloc((size_t)rows * dim * sizeof(float));
    m->be->download(z, m->iv[0].psi.z, (size_t)rows * dim * sizeof(float));
    double *sum = sums, *sq = sums + dim;
    for (int d = 0; d < 2 * dim; d++) sums[d] = 0.0;
    for (int r = 0; r < rows; r++) {
        const float *row = z + (size_t)r * dim;
        double norm = 0;
        for (int d = 0; d < dim; d++) norm += (double)row[d] * row[d];
        norm = sqrt(norm) + 1e-12;
        for (int d = 0; d < dim; d++) {
            double v = row[d] / norm;
            sum[d] += v;
            sq[d] += v * v;
        }
    }
    sums[2 * dim] = rows;
    free(z);
    return 2 * dim + 1;
}

double pretrain_feature_spread(const double *sums, int dim)
{
    const double rows = sums[2 * dim];
    double spread = 0;
    for (int d = 0; d < dim; d++) {
        double mean = sums[d] / rows, var = sums[dim + d] / rows - mean * mean;
        spread += sqrt(var > 0 ? var : 0);
    }
    return spread / dim * sqrt((double)dim);
}
