/* Runs the segmentation ops of the CPU backend (conv3d, conv_transpose3d, instnorm,
 * leaky_relu, dicece) forward and backward on inputs drawn from the project RNG and writes
 * inputs, outputs and gradients to an HDF5 file, one group per case, for
 * tests/reference/test_seg_ops_torch.py to recompute with PyTorch.
 * Every backward takes dy = the group's "dy" dataset, i.e. the gradient of sum(y * dy).
 * usage: seg_ops_dump OUT.h5 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "core/rng.h"
#include "h5util.h"
#include "ops/backend.h"

static const AliceBackend *be;
static uint32_t next_stream = 1;

static float *randn(size_t n, float scale)
{
    RngStream s;
    rng_init(&s, 5150, 0, next_stream++, RNG_TEST);
    float *x = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = scale * rng_normal(&s);
    return x;
}

static float *zeros(size_t n) { return xcalloc(n, sizeof(float)); }

static hid_t group(hid_t f, const char *name)
{
    return CHECK_H5(H5Gcreate2(f, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
}

static void dump_conv3d(hid_t f, int k, int s, int pad)
{
    const int B = 2, Cin = 3, Cout = 4, X = 6, Y = 5, Z = 7;
    int Ox = (X + 2 * pad - k) / s + 1, Oy = (Y + 2 * pad - k) / s + 1, Oz = (Z + 2 * pad - k) / s + 1;
    size_t nx = (size_t)B * Cin * X * Y * Z, nw = (size_t)Cout * Cin * k * k * k;
    size_t ny = (size_t)B * Cout * Ox * Oy * Oz;
    float *x = randn(nx, 1), *W = randn(nw, 0.3f), *b = randn(Cout, 1), *dy = randn(ny, 1);
    float *y = zeros(ny), *dx = zeros(nx), *dW = zeros(nw), *db = zeros(Cout);
    be->conv3d_fwd(y, x, W, b, B, Cin, Cout, X, Y, Z, k, s, pad);
    be->conv3d_bwd(dx, dW, db, dy, x, W, B, Cin, Cout, X, Y, Z, k, s, pad);
    char name[64];
    snprintf(name, sizeof name, "conv3d_k%d_s%d_p%d", k, s, pad);
    hid_t g = group(f, name);
    h5_attr_long(g, "k", k), h5_attr_long(g, "stride", s), h5_attr_long(g, "pad", pad);
    int xd[] = {B, Cin, X, Y, Z}, wd[] = {Cout, Cin, k, k, k}, bd[] = {Cout}, yd[] = {B, Cout, Ox, Oy, Oz};
    h5_write_floats(g, "x", 5, xd, x), h5_write_floats(g, "W", 5, wd, W);
    h5_write_floats(g, "b", 1, bd, b), h5_write_floats(g, "dy", 5, yd, dy);
    h5_write_floats(g, "y", 5, yd, y), h5_write_floats(g, "dx", 5, xd, dx);
    h5_write_floats(g, "dW", 5, wd, dW), h5_write_floats(g, "db", 1, bd, db);
    CHECK_H5(H5Gclose(g));
    free(x), free(W), free(b), free(dy), free(y), free(dx), free(dW), free(db);
}

static void dump_conv_transpose3d(hid_t f)
{
    const int B = 2, Cin = 4, Cout = 3, X = 3, Y = 4, Z = 2, k = 2;
    size_t nx = (size_t)B * Cin * X * Y * Z, nw = (size_t)Cin * Cout * k * k * k;
    size_t ny = (size_t)B * Cout * k * X * k * Y * k * Z;
    float *x = randn(nx, 1), *W = randn(nw, 0.3f), *b = randn(Cout, 1), *dy = randn(ny, 1);
    float *y = zeros(ny), *dx = zeros(nx), *dW = zeros(nw), *db = zeros(Cout);
    be->conv_transpose3d_fwd(y, x, W, b, B, Cin, Cout, X, Y, Z, k);
    be->conv_transpose3d_bwd(dx, dW, db, dy, x, W, B, Cin, Cout, X, Y, Z, k);
    hid_t g = group(f, "conv_transpose3d_k2");
    h5_attr_long(g, "k", k);
    int xd[] = {B, Cin, X, Y, Z}, wd[] = {Cin, Cout, k, k, k}, bd[] = {Cout};
    int yd[] = {B, Cout, k * X, k * Y, k * Z};
    h5_write_floats(g, "x", 5, xd, x), h5_write_floats(g, "W", 5, wd, W);
    h5_write_floats(g, "b", 1, bd, b), h5_write_floats(g, "dy", 5, yd, dy);
    h5_write_floats(g, "y", 5, yd, y), h5_write_floats(g, "dx", 5, xd, dx);
    h5_write_floats(g, "dW", 5, wd, dW), h5_write_floats(g, "db", 1, bd, db);
    CHECK_H5(H5Gclose(g));
    free(x), free(W), free(b), free(dy), free(y), free(dx), free(dW), free(db);
}

static void dump_instnorm(hid_t f, int affine)
{
    const int B = 2, C = 3, X = 5, Y = 4, Z = 6;
    const long V = (long)X * Y * Z;
    const float eps = 1e-5f;
    size_t n = (size_t)B * C * V;
    float *x = randn(n, 2), *dy = randn(n, 1), *gamma = randn(C, 1), *beta = randn(C, 1);
    for (size_t i = 0; i < n; i++) x[i] += 1.5f;
    float *y = zeros(n), *dx = zeros(n), *dg = zeros(C), *dbeta = zeros(C);
    float *mean = zeros((size_t)B * C), *rstd = zeros((size_t)B * C);
    be->instnorm_fwd(y, mean, rstd, x, affine ? gamma : NULL, affine ? beta : NULL, B, C, V, eps);
    be->instnorm_bwd(dx, affine ? dg : NULL, affine ? dbeta : NULL, dy, x, mean, rstd,
                     affine ? gamma : NULL, B, C, V);
    hid_t g = group(f, affine ? "instnorm_affine" : "instnorm");
    h5_attr_double(g, "eps", eps);
    int xd[] = {B, C, X, Y, Z}, cd[] = {C};
    h5_write_floats(g, "x", 5, xd, x), h5_write_floats(g, "dy", 5, xd, dy);
    h5_write_floats(g, "y", 5, xd, y), h5_write_floats(g, "dx", 5, xd, dx);
    if (affine) {
        h5_write_floats(g, "gamma", 1, cd, gamma), h5_write_floats(g, "beta", 1, cd, beta);
        h5_write_floats(g, "dgamma", 1, cd, dg), h5_write_floats(g, "dbeta", 1, cd, dbeta);
    }
    CHECK_H5(H5Gclose(g));
    free(x), free(dy), free(gamma), free(beta), free(y), free(dx), free(dg), free(dbeta);
    free(mean), free(rstd);
}

static void dump_leaky_relu(hid_t f)
{
    const int n = 1000;
    const float slope = 0.01f;
    float *x = randn(n, 1), *dy = randn(n, 1), *y = zeros(n), *dx = zeros(n);
    be->leaky_relu_fwd(y, x, n, slope);
    be->leaky_relu_bwd(dx, dy, x, n, slope);
    hid_t g = group(f, "leaky_relu");
    h5_attr_double(g, "slope", slope);
    int d[] = {n};
    h5_write_floats(g, "x", 1, d, x), h5_write_floats(g, "dy", 1, d, dy);
    h5_write_floats(g, "y", 1, d, y), h5_write_floats(g, "dx", 1, d, dx);
    CHECK_H5(H5Gclose(g));
    free(x), free(dy), free(y), free(dx);
}

static void dump_dicece(hid_t f)
{
    const int B = 2, K = 4, X = 6, Y = 5, Z = 4;
    const long V = (long)X * Y * Z;
    const float w_ce = 0.7f, w_dice = 1.3f;
    size_t n = (size_t)B * K * V;
    float *logits = randn(n, 2), *probs = zeros(n), *dl = zeros(n), v[SEG_LOSS_VALUE_COUNT];
    int *labels = xmalloc((size_t)B * V * sizeof(int));
    RngStream s;
    rng_init(&s, 5150, 0, next_stream++, RNG_TEST);
    /* class K-1 never occurs in the second volume: the empty-class Dice term is exercised */
    for (long i = 0; i < B * V; i++) labels[i] = (int)rng_below(&s, i < V ? K : K - 1);
    be->dicece_fwd(probs, v, logits, labels, B, K, V);   /* CPU backend: host memory */
    be->dicece_bwd(dl, probs, labels, B, K, V, w_ce, w_dice);
    hid_t g = group(f, "dicece");
    h5_attr_double(g, "w_ce", w_ce), h5_attr_double(g, "w_dice", w_dice);
    h5_attr_double(g, "ce", v[SEG_LOSS_CE]), h5_attr_double(g, "dice", v[SEG_LOSS_DICE]);
    int ld[] = {B, K, X, Y, Z}, yd[] = {B, X, Y, Z};
    h5_write_floats(g, "logits", 5, ld, logits), h5_write_ints(g, "labels", 4, yd, labels);
    h5_write_floats(g, "probs", 5, ld, probs), h5_write_floats(g, "dlogits", 5, ld, dl);
    CHECK_H5(H5Gclose(g));
    free(logits), free(probs), free(dl), free(labels);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: seg_ops_dump OUT.h5\n");
        return 2;
    }
    be = backend_cpu();
    hid_t f = h5_create_tmp(argv[1]);
    static const int conv_configs[][3] = {{3, 1, 1}, {3, 2, 1}, {2, 2, 0}, {1, 1, 0}, {3, 1, 0}};
    for (size_t i = 0; i < sizeof conv_configs / sizeof conv_configs[0]; i++)
        dump_conv3d(f, conv_configs[i][0], conv_configs[i][1], conv_configs[i][2]);
    dump_conv_transpose3d(f);
    dump_instnorm(f, 0);
    dump_instnorm(f, 1);
    dump_leaky_relu(f);
    dump_dicece(f);
    h5_commit(f, argv[1]);
    return 0;
}
