#include "models/proj_head.h"

#include <stdio.h>

#include "core/check.h"
#include "nn/layers.h"

void proj_head_register(ProjHead *h, ParamSet *ps, const char *prefix, int in, int hidden,
                        int bottleneck, int out)
{
    h->in = in;
    h->hidden = hidden;
    h->bottleneck = bottleneck;
    h->out = out;
    char name[PARAM_NAME_MAX];
    int unused;
    snprintf(name, sizeof name, "%s.fc1", prefix);
    register_linear(ps, name, in, hidden, 1, &h->fc1_w, &h->fc1_b);
    snprintf(name, sizeof name, "%s.fc2", prefix);
    register_linear(ps, name, hidden, hidden, 1, &h->fc2_w, &h->fc2_b);
    snprintf(name, sizeof name, "%s.fc3", prefix);
    register_linear(ps, name, hidden, bottleneck, 1, &h->fc3_w, &h->fc3_b);
    snprintf(name, sizeof name, "%s.last", prefix);
    register_linear(ps, name, bottleneck, out, 0, &h->last_w, &unused);
}

void proj_head_layout(const ProjHead *h, ProjHeadActs *a, Arena *ar, int rows, int train)
{
    size_t r = (size_t)rows;
    a->rows = rows;
    a->train = train;
    a->h1 = arena_floats(ar, r * h->hidden);
    a->h1g = arena_floats(ar, r * h->hidden);
    a->h2 = arena_floats(ar, r * h->hidden);
    a->h2g = arena_floats(ar, r * h->hidden);
    a->b = arena_floats(ar, r * h->bottleneck);
    a->bn = arena_floats(ar, r * h->bottleneck);
    a->norms = arena_floats(ar, r);
    a->z = arena_floats(ar, r * h->out);
    if (!train) return;
    a->dz = arena_floats(ar, r * h->out);
    a->dbn = arena_floats(ar, r * h->bottleneck);
    a->db = arena_floats(ar, r * h->bottleneck);
    a->dh2g = arena_floats(ar, r * h->hidden);
    a->dh2 = arena_floats(ar, r * h->hidden);
    a->dh1g = arena_floats(ar, r * h->hidden);
    a->dh1 = arena_floats(ar, r * h->hidden);
    a->dx = arena_floats(ar, r * h->in);
}

void proj_head_forward(const ProjHead *h, ProjHeadActs *a, const ParamSet *ps, const float *x)
{
    const AliceBackend *be = ps->be;
    const int R = a->rows;
    linear_forward(ps, h->fc1_w, h->fc1_b, a->h1, x, R, h->in, h->hidden);
    be->gelu_fwd(a->h1g, a->h1, (size_t)R * h->hidden);
    linear_forward(ps, h->fc2_w, h->fc2_b, a->h2, a->h1g, R, h->hidden, h->hidden);
    be->gelu_fwd(a->h2g, a->h2, (size_t)R * h->hidden);
    linear_forward(ps, h->fc3_w, h->fc3_b, a->b, a->h2g, R, h->hidden, h->bottleneck);
    be->l2norm_fwd(a->bn, a->norms, a->b, R, h->bottleneck, HEAD_L2_EPS);
    linear_forward(ps, h->last_w, NO_PARAM, a->z, a->bn, R, h->bottleneck, h->out);
}

void proj_head_backward(const ProjHead *h, ProjHeadActs *a, ParamSet *ps, const float *x)
{
    const AliceBackend *be = ps->be;
    const int R = a->rows;
    linear_backward(ps, h->last_w, NO_PARAM, a->dbn, a->dz, a->bn, R, h->bottleneck, h->out);
    be->l2norm_bwd(a->db, a->dbn, a->b, a->norms, R, h->bottleneck, HEAD_L2_EPS);
    linear_backward(ps, h->fc3_w, h->fc3_b, a->dh2g, a->db, a->h2g, R, h->hidden, h->bottleneck);
    be->gelu_bwd(a->dh2, a->dh2g, a->h2, (size_t)R * h->hidden);
    linear_backward(ps, h->fc2_w, h->fc2_b, a->dh1g, a->dh2, a->h1g, R, h->hidden, h->hidden);
    be->gelu_bwd(a->dh1, a->dh1g, a->h1, (size_t)R * h->hidden);
    linear_backward(ps, h->fc1_w, h->fc1_b, a->dx, a->dh1, x, R, h->in, h->hidden);
}

ProjHeadActs proj_head_rows(const ProjHead *h, const ProjHeadActs *all, size_t first,
                            size_t rows)
{
    ALICE_ASSERT(!all->train, "a slice of training head activations would need its gradients");
    ProjHeadActs a = {0};
    a.rows = (int)rows;
    a.h1 = all->h1 + first * h->hidden;
    a.h1g = all->h1g + first * h->hidden;
    a.h2 = all->h2 + first * h->hidden;
    a.h2g = all->h2g + first * h->hidden;
    a.b = all->b + first * h->bottleneck;
    a.bn = all->bn + first * h->bottleneck;
    a.norms = all->norms + first;
    a.z = all->z + first * h->out;
    return a;
}
