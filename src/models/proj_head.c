#include "models/proj_head.h"

#include <stdio.h>

#include "core/check.h"
#include "nn/layers.h"

void proj_head_register(ProjHead *h, ParamSet *ps, const char *prefix, int in, int hidden,
                        int bottleneck, int out, int norm_last, int dino_init)
{
    /* DINOHead: trunc_normal_(std=.02) on the MLP's weights (self.apply(_init_weights) runs
     * before the last layer exists, which keeps nn.Linear's default) */
    const ParamInit mlp_init = dino_init ? INIT_NORMAL_002 : INIT_XAVIER_UNIFORM;
    const ParamInit last_init = dino_init ? INIT_TORCH_LINEAR : INIT_XAVIER_UNIFORM;
    h->norm_last = norm_last;
    h->in = in;
    h->hidden = hidden;
    h->bottleneck = bottleneck;
    h->out = out;
    char name[PARAM_NAME_MAX];
    int unused;
    snprintf(name, sizeof name, "%s.fc1", prefix);
    register_linear_init(ps, name, in, hidden, 1, mlp_init, &h->fc1_w, &h->fc1_b);
    snprintf(name, sizeof name, "%s.fc2", prefix);
    register_linear_init(ps, name, hidden, hidden, 1, mlp_init, &h->fc2_w, &h->fc2_b);
    snprintf(name, sizeof name, "%s.fc3", prefix);
    register_linear_init(ps, name, hidden, bottleneck, 1, mlp_init, &h->fc3_w, &h->fc3_b);
    snprintf(name, sizeof name, "%s.last", prefix);
    register_linear_init(ps, name, bottleneck, out, 0, last_init, &h->last_w, &unused);
}

/* With bf16 activations fc1 needs a bf16 input (act_linear_fwd: an fp32 x gives an fp32 y). */
static int keeps_bf16_input(const ProjHeadActs *a) { return a->h1.type == DTYPE_BF16; }

void proj_head_layout(const ProjHead *h, ProjHeadActs *a, Arena *ar, int rows, int train)
{
    proj_head_layout_for_input(h, a, ar, rows, train, DTYPE_F32);
}

void proj_head_layout_for_input(const ProjHead *h, ProjHeadActs *a, Arena *ar, int rows,
                                int train, DType input_type)
{
    const DType t = ar->act_type;
    const size_t r = (size_t)rows, hidden = (size_t)h->hidden;
    a->rows = rows;
    a->train = train;
    /* an fp32 input feeding bf16 GEMMs is rounded once, into x16; a bf16 input needs no copy */
    a->x16 = t == DTYPE_BF16 && input_type == DTYPE_F32 ? arena_act(ar, r * h->in, t)
                                                         : (Act){NULL, DTYPE_F32};
    a->h1 = arena_act(ar, r * hidden, t);
    a->h1g = arena_act(ar, r * hidden, t);
    if (train) {
        a->h2 = arena_act(ar, r * hidden, t);
        a->h2g = arena_act(ar, r * hidden, t);
    } else {
        /* Forward only: fc2 reads h1g and writes h2 over the dead h1; the second GELU reads h2
         * and writes h2g over the dead h1g. Two hidden-size tensors instead of four. */
        a->h2 = a->h1;
        a->h2g = a->h1g;
    }
    a->b = arena_floats(ar, r * h->bottleneck);
    a->bn = arena_floats(ar, r * h->bottleneck);
    a->norms = arena_floats(ar, r);
    a->z = arena_floats(ar, r * h->out);
    const size_t last_size = (size_t)h->out * h->bottleneck;
    a->w_unit = h->norm_last ? arena_floats(ar, last_size) : NULL;
    a->w_norms = h->norm_last ? arena_floats(ar, (size_t)h->out) : NULL;
    if (!train) return;
    a->dw_unit = h->norm_last ? arena_floats(ar, last_size) : NULL;
    a->dw_last = h->norm_last ? arena_floats(ar, last_size) : NULL;
    a->dz = arena_floats(ar, r * h->out);
    a->dbn = arena_floats(ar, r * h->bottleneck);
    a->db = arena_floats(ar, r * h->bottleneck);
    a->dh2g = arena_floats(ar, r * hidden);
    a->dh1g = arena_floats(ar, r * hidden);
    a->dh_scratch = arena_floats(ar, r * hidden);
    a->dx = arena_floats(ar, r * h->in);
}

/* fc1's input: a bf16 x itself; an fp32 x itself (fp32 activations), or its bf16 copy x16,
 * made when `round` is set (the forward; the backward reads the copy the forward made). */
static Act fc1_input(const AliceBackend *be, const ProjHead *h, const ProjHeadActs *a, Act x,
                     int round)
{
    if (x.type == DTYPE_BF16 || !keeps_bf16_input(a)) return x;
    ALICE_ASSERT(a->x16.p, "projection head laid out for a bf16 input given an fp32 one");
    if (round) be->to_bf16(a->x16.p, act_f32(x), (size_t)a->rows * h->in);
    return a->x16;
}

void proj_head_forward(const ProjHead *h, ProjHeadActs *a, const ParamSet *ps, const float *x)
{
    proj_head_forward_act(h, a, ps, (Act){(void *)x, DTYPE_F32});
}

void proj_head_forward_act(const ProjHead *h, ProjHeadActs *a, const ParamSet *ps, Act x)
{
    const AliceBackend *be = ps->be;
    const int R = a->rows;
    const size_t n_hidden = (size_t)R * h->hidden;
    const Act xin = fc1_input(be, h, a, x, 1);
    act_linear_fwd(ps, h->fc1_w, h->fc1_b, a->h1, xin, NULL, R, h->in, h->hidden);
    act_gelu_fwd(be, a->h1g, a->h1, n_hidden);
    act_linear_fwd(ps, h->fc2_w, h->fc2_b, a->h2, a->h1g, NULL, R, h->hidden, h->hidden);
    act_gelu_fwd(be, a->h2g, a->h2, n_hidden);
    /* b stays fp32: the l2 normalisation and its backward read it */
    act_linear_fwd(ps, h->fc3_w, h->fc3_b, (Act){a->b, DTYPE_F32}, a->h2g, NULL, R, h->hidden,
                   h->bottleneck);
    be->l2norm_fwd(a->bn, a->norms, a->b, R, h->bottleneck, HEAD_L2_EPS);
    if (!h->norm_last) {
        linear_forward(ps, h->last_w, NO_PARAM, a->z, a->bn, R, h->bottleneck, h->out);
        return;
    }
    /* the rows of W are last's input-side vectors: the same l2 normalisation as bn's rows */
    be->l2norm_fwd(a->w_unit, a->w_norms, param(ps, h->last_w), h->out, h->bottleneck,
                   HEAD_L2_EPS);
    be->linear_fwd(a->z, a->bn, a->w_unit, NULL, R, h->bottleneck, h->out);
}

/* last's backward: dbn, and W's gradient accumulated (through the row normalisation when
 * norm_last, whose backward writes rather than adds: scratch, then one add). */
static void last_backward(const ProjHead *h, ProjHeadActs *a, ParamSet *ps)
{
    const AliceBackend *be = ps->be;
    const int R = a->rows;
    if (!h->norm_last) {
        linear_backward(ps, h->last_w, NO_PARAM, a->dbn, a->dz, a->bn, R, h->bottleneck,
                        h->out);
        return;
    }
    const size_t n = (size_t)h->out * h->bottleneck;
    be->fill(a->dw_unit, 0.0f, n);   /* linear_bwd accumulates its weight gradient */
    be->linear_bwd(a->dbn, a->dw_unit, NULL, a->dz, a->bn, a->w_unit, R, h->bottleneck, h->out);
    float *grad = param_grad(ps, h->last_w);
    be->l2norm_bwd(a->dw_last, a->dw_unit, param(ps, h->last_w), a->w_norms, h->out,
                   h->bottleneck, HEAD_L2_EPS);
    be->add(grad, grad, a->dw_last, n);
}

void proj_head_backward(const ProjHead *h, ProjHeadActs *a, ParamSet *ps, const float *x)
{
    proj_head_backward_act(h, a, ps, (Act){(void *)x, DTYPE_F32});
}

void proj_head_backward_act(const ProjHead *h, ProjHeadActs *a, ParamSet *ps, Act x)
{
    ALICE_ASSERT(a->train, "backward through a projection head laid out forward only");
    const AliceBackend *be = ps->be;
    const int R = a->rows;
    last_backward(h, a, ps);
    be->l2norm_bwd(a->db, a->dbn, a->b, a->norms, R, h->bottleneck, HEAD_L2_EPS);
    act_linear_bwd(ps, h->fc3_w, h->fc3_b, a->dh2g, a->db, a->h2g, R, h->hidden, h->bottleneck);
    /* fc2 and fc1 through their GELUs (bf16: fused, dh never stored on the GPU); fc1's
     * scratch is dh2g, which fc2's backward was the last to read. */
    act_linear_gelu_bwd(ps, h->fc2_w, h->fc2_b, a->dh1g, a->dh2g, a->h2, a->dh_scratch, a->h1g,
                        R, h->hidden, h->hidden);
    act_linear_gelu_bwd(ps, h->fc1_w, h->fc1_b, a->dx, a->dh1g, a->h1, a->dh2g,
                        fc1_input(be, h, a, x, 0), R, h->in, h->hidden);
}

ProjHeadActs proj_head_rows(const ProjHead *h, const ProjHeadActs *all, size_t first,
                            size_t rows)
{
    ALICE_ASSERT(!all->train, "a slice of training head activations would need its gradients");
    ProjHeadActs a = {0};
    a.rows = (int)rows;
    const size_t hidden_at = first * h->hidden;   /* elements: act_offset scales by the type */
    a.x16 = all->x16.p ? act_offset(all->x16, first * h->in) : all->x16;
    a.h1 = act_offset(all->h1, hidden_at);
    a.h1g = act_offset(all->h1g, hidden_at);
    a.h2 = act_offset(all->h2, hidden_at);
    a.h2g = act_offset(all->h2g, hidden_at);
    a.b = all->b + first * h->bottleneck;
    a.bn = all->bn + first * h->bottleneck;
    a.norms = all->norms + first;
    a.z = all->z + first * h->out;
    a.w_unit = all->w_unit;
    a.w_norms = all->w_norms;
    return a;
}
