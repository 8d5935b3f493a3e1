/* The EMA teacher of Alice pre-training runs both intact views as one forward over
 * MASKED_VIEWS x B samples. This checks, on the CPU backend, that every teacher output the
 * losses read (and the tensors leading to them) equals, bit for bit, the per-view forward of
 * B samples written out here from the public module APIs: patchify, the target ViT encoder on
 * all N tokens (identity index, idx_ld = N), then either the whole target decoder over all
 * tokens (teacher_decoder = full; here through the student's masked-decoder path with nothing
 * masked: identity perm, nvis = N, so the mask-token insertion the model's teacher skips is a
 * copy) or its decoder_embed linear alone (embed), the projection head psi and the per-sample
 * mean of its rows. Bit equality holds because every op of that
 * path computes each sample's rows with the same reduction order whatever the batch (GEMM rows
 * are independent dot products over the same K; LayerNorm, GELU, l2-norm and pooling are per
 * row or per sample; attention is per (sample, head)).
 * The model's teacher encoder is laid out for all tokens (vit_encoder_layout_all_tokens: its
 * patch embedding reads the patches themselves), the per-view one here gathers them through an
 * identity index first: the equality covers that the copy it no longer makes changed nothing.
 * With bf16 activations the model's teacher patches are bf16 (patchify_bf16) and the per-view
 * encoder gathers into bf16 (gather_rows_bf16): the patches compare as the rounding of the
 * per-view fp32 ones, everything after them bit for bit.
 *
 * Since the masked views, CASA, losses and backward read the teacher only through these
 * outputs, equal outputs give equal losses and gradients; the step's loss terms and a gradient
 * checksum are printed (hex floats) so a change of the teacher's batching can be compared
 * before/after. Run in fp32 and with bf16 activations (precision = bf16), for both
 * teacher_decoder modes. */
#include <mpi.h>
#include <string.h>

#include "core/check.h"
#include "core/rng.h"
#include "models/pretrain_model.h"
#include "nn/act.h"
#include "nn/layers.h"
#include "bf16_ref.h"
#include "test.h"
#include "test_config.h"

static const char *const tiny[][2] = {
    {"method", "alice"}, {"crop", "16,16,8"}, {"patch", "4"}, {"embed_dim", "24"},
    {"depth", "2"}, {"heads", "2"}, {"mlp_dim", "40"}, {"dec_dim", "12"}, {"dec_depth", "1"},
    {"dec_heads", "2"}, {"dec_mlp_dim", "16"}, {"head_hidden", "20"},
    {"head_bottleneck", "6"}, {"head_out", "10"}, {"casa_dim", "6"}, {"batch", "2"},
    {"mask_ratio", "0.5"},
};

/* The per-view teacher of B samples, in its own arena. */
typedef struct {
    Arena arena;
    int *identity;
    float *vol, *patches, *yd, *cls;
    VitEncoderActs enc;
    MaeDecoderActs dec;   /* teacher_decoder = full */
    Act feat;             /* psi's input */
    ProjHeadActs psi;
} OneViewTeacher;

static void one_view_layout(const PretrainModel *m, OneViewTeacher *t)
{
    const int B = m->B, N = m->N;
    Arena *ar = &t->arena;
    t->identity = arena_ints(ar, (size_t)B * N);
    t->vol = arena_floats(ar, (size_t)B * m->dims[0] * m->dims[1] * m->dims[2]);
    t->patches = arena_floats(ar, (size_t)B * N * m->P);
    vit_encoder_layout(&m->enc, &t->enc, ar, B, N, TSTACK_FORWARD_ONLY);
    if (m->teacher_full) {
        mae_decoder_layout(&m->dec, &t->dec, ar, B, N, N, 0, m->casa_features);
        t->feat = mae_decoder_H(&t->dec);
    } else {
        t->yd = arena_floats(ar, (size_t)B * N * m->cfg.dec_dim);
        t->feat = (Act){t->yd, DTYPE_F32};
    }
    proj_head_layout_for_input(&m->head, &t->psi, ar, B * N, 0, t->feat.type);
    t->cls = arena_floats(ar, (size_t)B * m->cfg.head_out);
}

static void one_view_init(const PretrainModel *m, OneViewTeacher *t)
{
    arena_plan_mixed(&t->arena, m->be, m->cfg.precision, m->cfg.bf16_activations,
                     m->cfg.bf16_branch_out);
    one_view_layout(m, t);
    arena_commit(&t->arena);
    one_view_layout(m, t);
    int *ident = xmalloc((size_t)m->B * m->N * sizeof(int));
    for (int b = 0; b < m->B; b++)
        for (int n = 0; n < m->N; n++) ident[(size_t)b * m->N + n] = n;
    m->be->upload(t->identity, ident, (size_t)m->B * m->N * sizeof(int));
    free(ident);
}

static void one_view_forward(const PretrainModel *m, OneViewTeacher *t, const float *vol_host)
{
    const AliceBackend *be = m->be;
    const Config *c = &m->cfg;
    const int B = m->B, N = m->N;
    be->upload(t->vol, vol_host, (size_t)B * m->dims[0] * m->dims[1] * m->dims[2] * sizeof(float));
    be->patchify(t->patches, t->vol, B, m->dims[0], m->dims[1], m->dims[2], c->patch);
    vit_encoder_forward(&m->enc, &t->enc, &m->target, t->patches, N, t->identity, N, m->posE);
    if (m->teacher_full)
        mae_decoder_forward(&m->dec, &t->dec, &m->target, t->enc.st.out, t->identity, m->posD,
                            m->identity);
    else
        linear_forward(&m->target, m->dec.embed_w, m->dec.embed_b, t->yd, t->enc.st.out, B * N,
                       c->embed_dim, c->dec_dim);
    proj_head_forward_act(&m->head, &t->psi, &m->target, t->feat);
    be->mean_rows_fwd(t->cls, t->psi.z, B, N, c->head_out);
}

/* Bit equality of n elements of type t of backend memory; reports the first difference. */
static int same_act_bits(const AliceBackend *be, Act got, Act want, size_t n, const char *what,
                         int view)
{
    TEST_CHECK(got.type == want.type, "intact view %d %s: element types differ", view, what);
    const size_t size = dtype_bytes(got.type);
    unsigned char *g = xmalloc(n * size), *w = xmalloc(n * size);
    be->download(g, got.p, n * size);
    be->download(w, want.p, n * size);
    size_t first = n, differ = 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp(g + i * size, w + i * size, size)) {
            if (first == n) first = i;
            differ++;
        }
    TEST_CHECK(differ == 0, "intact view %d %s: %zu of %zu values differ from the per-view "
               "forward (first at %zu)", view, what, differ, n, first);
    free(g);
    free(w);
    return differ == 0;
}

static int same_bits(const AliceBackend *be, const float *got, const float *want, size_t n,
                     const char *what, int view)
{
    return same_act_bits(be, (Act){(void *)got, DTYPE_F32}, (Act){(void *)want, DTYPE_F32}, n,
                         what, view);
}

/* The model's intact patches (fp32, or with bf16 activations stored in bf16 by patchify_bf16)
 * against the per-view fp32 patchify: equal, or each its nearest-even rounding (bf16_ref.h's,
 * written independently of the backends'). */
static void same_patches(const AliceBackend *be, Act got, const float *want, size_t n, int view)
{
    if (got.type == DTYPE_F32) {
        same_bits(be, got.p, want, n, "patches", view);
        return;
    }
    bf16_t *g = xmalloc(n * sizeof(bf16_t));
    float *w = xmalloc(n * sizeof(float));
    be->download(g, got.p, n * sizeof(bf16_t));
    be->download(w, want, n * sizeof(float));
    size_t differ = 0;
    for (size_t i = 0; i < n; i++) differ += g[i] != bf16_reference_round(w[i]);
    TEST_CHECK(differ == 0, "intact view %d bf16 patches: %zu of %zu values are not the "
               "nearest-even rounding of the per-view fp32 patches", view, differ, n);
    free(g);
    free(w);
}

static int check_precision(const char *precision, const char *teacher_decoder)
{
    Config cfg;
    TEST_CONFIG(&cfg, tiny);
    config_set(&cfg, "precision", precision, "test", 0);
    config_set(&cfg, "teacher_decoder", teacher_decoder, "test", 0);
    const AliceBackend *be = backend_cpu();
    PretrainModel m;
    pretrain_model_init(&m, &cfg, be, cfg.batch);
    const size_t vox = (size_t)m.B * m.dims[0] * m.dims[1] * m.dims[2];
    float *vol = xmalloc(vox * VIEW_COUNT * sizeof(float));
    RngStream rng;
    rng_init(&rng, 11, 0, 0, RNG_TEST);
    for (size_t i = 0; i < vox * VIEW_COUNT; i++) vol[i] = rng_normal(&rng);
    const float *views[VIEW_COUNT] = {vol, vol + vox, vol + 2 * vox, vol + 3 * vox};
    pretrain_model_set_views(&m, views);
    pretrain_model_draw_masks(&m, 5, 0);
    /* A teacher different from the student, so its outputs are not the student's. */
    float *target = xmalloc(m.target.total * sizeof(float));
    be->download(target, m.target.data, m.target.total * sizeof(float));
    for (size_t i = 0; i < m.target.total; i++) target[i] += 0.05f * rng_normal(&rng);
    be->upload(m.target.data, target, m.target.total * sizeof(float));
    free(target);

    LossTerms t = pretrain_model_forward_backward(&m);

    OneViewTeacher ref;
    one_view_init(&m, &ref);
    const int B = m.B, N = m.N;
    for (int v = 0; v < MASKED_VIEWS; v++) {
        const IntactViewActs *a = &m.iv[v];
        one_view_forward(&m, &ref, views[VIEW_INTACT_Q + v]);
        same_patches(be, a->patches, ref.patches, (size_t)B * N * m.P, v);
        same_bits(be, a->enc_out, ref.enc.st.out, (size_t)B * N * cfg.embed_dim,
                  "encoder output", v);
        same_act_bits(be, a->feat, ref.feat, (size_t)B * N * cfg.dec_dim,
                      m.teacher_full ? "decoder output H" : "decoder_embed output", v);
        same_bits(be, a->psi.z, ref.psi.z, (size_t)B * N * cfg.head_out, "psi.z", v);
        same_bits(be, a->cls, ref.cls, (size_t)B * cfg.head_out, "pooled cls", v);
    }

    /* Gradient checksum: sum and sum of |g| in double over every online gradient. */
    float *grad = xmalloc(m.online.total * sizeof(float));
    be->download(grad, m.online.grad, m.online.total * sizeof(float));
    double sum = 0, sum_abs = 0;
    for (size_t i = 0; i < m.online.total; i++) {
        sum += grad[i];
        sum_abs += fabs(grad[i]);
    }
    printf("  %s, teacher_decoder %s: loss %a l_r %a l_dv %a l_st %a | grad sum %a sum|g| %a | activations %zu bytes\n",
           precision, teacher_decoder, t.loss, t.l_r, t.l_dv, t.l_st, sum, sum_abs, m.arena.cap);
    TEST_CHECK(isfinite(t.loss) && sum_abs > 0, "degenerate step: loss %g, sum|g| %g", t.loss,
               sum_abs);
    free(grad);
    arena_free(&ref.arena);
    free(vol);
    pretrain_model_free(&m);
    return 0;
}

static int test_fp32(void) { return check_precision("fp32", "full"); }
static int test_bf16(void) { return check_precision("bf16", "full"); }
static int test_fp32_embed(void) { return check_precision("fp32", "embed"); }
static int test_bf16_embed(void) { return check_precision("bf16", "embed"); }

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    TEST_RUN(test_fp32);
    TEST_RUN(test_bf16);
    TEST_RUN(test_fp32_embed);
    TEST_RUN(test_bf16_embed);
    MPI_Finalize();
    return test_finish();
}
