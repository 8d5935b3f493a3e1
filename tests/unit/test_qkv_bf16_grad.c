/* The qkv layer's backward without an fp32 dqkv (CPU backend, the reference):
 *  - attention_bwd_bf16_grad16 equals attention_bwd_bf16 into fp32 buffers followed by rounding
 *    to bf16, BIT FOR BIT (the rounding written here, round-to-nearest-even from the bits, not
 *    through ops/bf16.h): packed qkv, q with gaps between its rows next to a packed kv, and
 *    NULL gradients; every element outside the requested views (the gaps, a view passed as
 *    NULL) keeps its starting value;
 *  - linear_bwd_bf16_dy16 equals linear_bwd_bf16 with db NULL on dy widened to fp32, bit for
 *    bit, dW accumulating onto earlier values, dx or dW NULL;
 *  - the transformer stack: tstack_backward (attention's gradient stored as the arena's
 *    activation type, then act_linear_bwd_dy) gives every parameter gradient and dx0 bit for bit
 *    what the former sequence gives (an fp32 dqkv, then act_linear_bwd;
 *    stack_backward_former.h), with fp32 and with bf16 activations; with bf16 ones a->dqkv is
 *    bf16.
 * fp32 outputs are poisoned with NaN first, so an entry an op never writes fails. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "bf16_ref.h"
#include "nn/act.h"
#include "nn/layers.h"
#include "nn/transformer.h"
#include "ops/backend.h"
#include "stack_backward_former.h"
#include "test.h"

static const AliceBackend *be;
static uint32_t next_stream = 1;

static float *randn(size_t n, float scale) { return test_randn(6262, next_stream++, n, scale); }

static bf16_t *randn_bf16(size_t n, float scale)
{
    return test_randn_bf16(6262, next_stream++, n, scale);
}

enum { GRAD_Q = 1, GRAD_K = 2, GRAD_V = 4 };

/* Element i of a buffer with row stride ld lies in the view of C columns from col0. */
static int in_view(size_t i, int ld, int col0, int C)
{
    const int col = (int)(i % (size_t)ld);
    return col >= col0 && col < col0 + C;
}

/* The bf16 buffer got against the fp32 gradients ref rounded where a requested view (mask bit,
 * first column) owns the element, else against its starting value init. */
static void check_rounded(const char *what, const bf16_t *got, const float *ref,
                          const bf16_t *init, size_t n, int ld, int C, const int (*views)[2],
                          int n_views, int which)
{
    size_t bad = 0, first = 0, owned = 0;
    for (size_t i = 0; i < n; i++) {
        bf16_t want = init[i];
        for (int v = 0; v < n_views; v++)
            if ((which & views[v][0]) && in_view(i, ld, views[v][1], C)) {
                want = bf16_reference_round(ref[i]);
                owned++;
            }
        if (got[i] != want && bad++ == 0) first = i;
    }
    TEST_CHECK(bad == 0, "%s: %zu of %zu elements differ from the fp32 gradients rounded (first "
               "[%zu]: 0x%04x)", what, bad, n, first, n ? (unsigned)got[first] : 0u);
    TEST_CHECK(which == 0 || owned > 0, "%s: no element checked", what);
}

static void attention_case(int B, int H, int Tq, int Tk, int Dh, int packed, int which)
{
    const int C = H * Dh;
    const int ldq = packed ? 3 * C : C + 5, ldkv = packed ? 3 * C : 2 * C;
    const size_t nq = (size_t)B * Tq * ldq, nkv = packed ? nq : (size_t)B * Tk * ldkv;
    const int koff = packed ? C : 0, voff = packed ? 2 * C : C;
    bf16_t *qbuf = randn_bf16(nq, 1.0f), *kvbuf = packed ? qbuf : randn_bf16(nkv, 1.0f);
    float *dout = randn((size_t)B * Tq * C, 1.0f);
    float *probs = test_filled(be->attention_saved_floats(B, H, Tq, Tk, Dh), NAN);
    bf16_t *out = randn_bf16((size_t)B * Tq * C, 1.0f);
    be->attention_fwd_bf16(out, probs, qbuf, kvbuf + koff, kvbuf + voff, B, H, Tq, Tk, Dh, ldq,
                           ldkv);
    /* the new op into bf16 buffers holding random values */
    bf16_t *dq16 = randn_bf16(nq, 1.0f), *dkv16 = packed ? dq16 : randn_bf16(nkv, 1.0f);
    bf16_t *dq16_init = malloc(nq * sizeof(bf16_t)), *dkv16_init = malloc(nkv * sizeof(bf16_t));
    memcpy(dq16_init, dq16, nq * sizeof(bf16_t));
    memcpy(dkv16_init, dkv16, nkv * sizeof(bf16_t));
    be->attention_bwd_bf16_grad16(which & GRAD_Q ? dq16 : NULL,
                                  which & GRAD_K ? dkv16 + koff : NULL,
                                  which & GRAD_V ? dkv16 + voff : NULL, dout, qbuf, kvbuf + koff,
                                  kvbuf + voff, out, probs, B, H, Tq, Tk, Dh, ldq, ldkv);
    /* the composition it stands for */
    float *dq32 = test_filled(nq, NAN), *dkv32 = packed ? dq32 : test_filled(nkv, NAN);
    be->attention_bwd_bf16(which & GRAD_Q ? dq32 : NULL, which & GRAD_K ? dkv32 + koff : NULL,
                           which & GRAD_V ? dkv32 + voff : NULL, dout, qbuf, kvbuf + koff,
                           kvbuf + voff, out, probs, B, H, Tq, Tk, Dh, ldq, ldkv);
    char what[160];
    snprintf(what, sizeof what, "attention_bwd_bf16_grad16 %s (q %d k %d v %d) B=%d H=%d Tq=%d "
             "Tk=%d Dh=%d", packed ? "packed qkv" : "q with gaps + packed kv", !!(which & GRAD_Q),
             !!(which & GRAD_K), !!(which & GRAD_V), B, H, Tq, Tk, Dh);
    if (packed) {
        const int views[3][2] = {{GRAD_Q, 0}, {GRAD_K, C}, {GRAD_V, 2 * C}};
        check_rounded(what, dq16, dq32, dq16_init, nq, ldq, C, views, 3, which);
    } else {
        const int qviews[1][2] = {{GRAD_Q, 0}}, kvviews[2][2] = {{GRAD_K, 0}, {GRAD_V, C}};
        check_rounded(what, dq16, dq32, dq16_init, nq, ldq, C, qviews, 1, which);
        check_rounded(what, dkv16, dkv32, dkv16_init, nkv, ldkv, C, kvviews, 2, which);
    }
    free(qbuf); free(dout); free(probs); free(out); free(dq16); free(dq16_init);
    free(dkv16_init); free(dq32);
    if (!packed) { free(kvbuf); free(dkv16); free(dkv32); }
}

static int test_attention_grad16_contract(void)
{
    attention_case(2, 2, 9, 9, 8, 1, GRAD_Q | GRAD_K | GRAD_V);
    attention_case(1, 3, 7, 13, 16, 0, GRAD_Q | GRAD_K | GRAD_V);
    attention_case(2, 2, 9, 9, 8, 1, GRAD_K | GRAD_V);
    attention_case(1, 3, 7, 13, 16, 0, GRAD_Q | GRAD_V);
    attention_case(2, 2, 9, 9, 8, 1, GRAD_Q);
    attention_case(2, 2, 9, 9, 8, 1, 0);
    /* above the OpenMP threshold of the rounding loop (rows x C > 32768) */
    attention_case(2, 4, 300, 300, 32, 1, GRAD_Q | GRAD_K | GRAD_V);
    return 0;
}

static void linear_case(int rows, int in, int out, int outputs)
{
    const size_t nx = (size_t)rows * in, ny = (size_t)rows * out, nw = (size_t)out * in;
    const int want_dx = outputs & 1, want_dW = outputs & 2;
    bf16_t *x = randn_bf16(nx, 1.0f), *dy = randn_bf16(ny, 1.0f);
    float *W = randn(nw, 0.3f), *dW0 = randn(nw, 0.1f);
    float *dy32 = malloc(ny * sizeof(float));
    for (size_t i = 0; i < ny; i++) dy32[i] = (float)bf16_value(dy[i]);
    float *dx = test_filled(nx, NAN), *dx_ref = test_filled(nx, NAN);
    float *dW = malloc(nw * sizeof(float)), *dW_ref = malloc(nw * sizeof(float));
    memcpy(dW, dW0, nw * sizeof(float));
    memcpy(dW_ref, dW0, nw * sizeof(float));
    be->linear_bwd_bf16_dy16(want_dx ? dx : NULL, want_dW ? dW : NULL, dy, x, W, rows, in, out);
    be->linear_bwd_bf16(want_dx ? dx_ref : NULL, want_dW ? dW_ref : NULL, NULL, dy32, x, W, rows,
                        in, out);
    const size_t bad_dx = differing_bits(dx, dx_ref, nx), bad_dW = differing_bits(dW, dW_ref, nw);
    TEST_CHECK(bad_dx == 0 && bad_dW == 0, "linear_bwd_bf16_dy16 %dx%d->%d (dx %d, dW %d): "
               "%zu dx and %zu dW entries differ from linear_bwd_bf16 on dy widened", rows, in,
               out, !!want_dx, !!want_dW, bad_dx, bad_dW);
    TEST_CHECK(!want_dW || differing_bits(dW, dW0, nw) > nw / 2,
               "linear_bwd_bf16_dy16: dW left mostly unchanged");
    free(x); free(dy); free(W); free(dW0); free(dy32); free(dx); free(dx_ref); free(dW);
    free(dW_ref);
}

static int test_linear_dy16_contract(void)
{
    for (int outputs = 1; outputs <= 3; outputs++) linear_case(13, 24, 72, outputs);
    linear_case(300, 64, 192, 3);
    return 0;
}

/* ---- the transformer stack: new path == former sequence, bit for bit ---- */

static int test_stack_backward_unchanged(void)
{
    check_stack_backward_matches_former(be, DTYPE_F32, FORMER_GELU_FUSED, 78);
    check_stack_backward_matches_former(be, DTYPE_BF16, FORMER_GELU_FUSED, 78);
    return 0;
}

int main(void)
{
    be = backend_cpu();
    TEST_RUN(test_attention_grad16_contract);
    TEST_RUN(test_linear_dy16_contract);
    TEST_RUN(test_stack_backward_unchanged);
    return test_finish();
}
