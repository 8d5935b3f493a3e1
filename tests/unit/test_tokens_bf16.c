/* The producers that store a GEMM operand in bf16 themselves, so that no rounding launch
 * follows them (precision = bf16 with bf16 activations), on the CPU backend:
 *  - patchify_bf16 (the EMA target's patches) and gather_rows_bf16 (the student's visible
 *    tokens) against references written here: the patch layout of backend.h by its own index
 *    formula, the gather by its definition, each value rounded by bf16_ref.h's independent
 *    nearest-even rounding (ties to even included, written into the inputs on purpose, and a
 *    value past the largest bf16, which rounds to infinity);
 *  - a transformer stack laid out by tstack_layout_gemm_output (the MAE decoder's H): its bf16
 *    output is, bit for bit, the nearest-even rounding of the fp32 output the same stack
 *    gives laid out by tstack_layout, i.e. exactly the operand the pred layer's and phi's
 *    GEMMs rounded before; with fp32 activations the output stays fp32.
 * The CUDA kernels of the two ops run on the host in tests/cuda_emu (vector_kernels_emulated)
 * and against this backend on a GPU in test_backend_parity. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16_ref.h"
#include "nn/transformer.h"
#include "ops/backend.h"
#include "test.h"

static const bf16_t kPoison = 0x7fc0;  /* quiet NaN: an element never written fails */

/* n normals; every 5th value's low half set to 0x8000 (an exact tie between two bf16
 * values), and one value past the largest finite bf16. */
static float *inputs_with_ties(uint32_t stream, size_t n)
{
    float *x = test_randn(77, stream, n, 3.0f);
    for (size_t i = 0; i < n; i += 5) x[i] = bits_float((float_bits(x[i]) & 0xffff0000u) | 0x8000u);
    if (n > 3) x[3] = 3.3961e38f;
    return x;
}

static bf16_t *poisoned(size_t n)
{
    bf16_t *y = malloc((n ? n : 1) * sizeof(bf16_t));
    for (size_t i = 0; i < n; i++) y[i] = kPoison;
    return y;
}

/* Volume offset of element e of token n of sample b (backend.h: token n = (ix*gy + iy)*gz +
 * iz, element e = (px*p + py)*p + pz). */
static size_t patch_voxel(int b, int n, int e, int X, int Y, int Z, int p)
{
    const int gy = Y / p, gz = Z / p;
    const int ix = n / (gy * gz), iy = n / gz % gy, iz = n % gz;
    const int px = e / (p * p), py = e / p % p, pz = e % p;
    return (((size_t)b * X + ix * p + px) * Y + iy * p + py) * Z + iz * p + pz;
}

static void check_patchify_bf16(const AliceBackend *be, int B, int X, int Y, int Z, int p)
{
    const size_t n = (size_t)B * X * Y * Z;
    const int N = (X / p) * (Y / p) * (Z / p), P = p * p * p;
    float *vol = inputs_with_ties(1, n);
    bf16_t *got = poisoned(n);
    be->patchify_bf16(got, vol, B, X, Y, Z, p);
    size_t bad = 0, ties = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < N; t++)
            for (int e = 0; e < P; e++) {
                const size_t i = ((size_t)b * N + t) * P + e;
                const float v = vol[patch_voxel(b, t, e, X, Y, Z, p)];
                bad += got[i] != bf16_reference_round(v);
                ties += (float_bits(v) & 0xffffu) == 0x8000u;
            }
    TEST_CHECK(bad == 0, "patchify_bf16 B %d %dx%dx%d p %d: %zu of %zu values are not the "
               "rounded patch values", B, X, Y, Z, p, bad, n);
    TEST_CHECK(ties > 0, "the input holds no rounding ties");
    free(vol);
    free(got);
}

static int test_patchify_bf16(void)
{
    const AliceBackend *be = backend_cpu();
    check_patchify_bf16(be, 2, 8, 12, 16, 4);
    check_patchify_bf16(be, 1, 6, 9, 12, 3);
    check_patchify_bf16(be, 3, 4, 4, 4, 2);
    /* hand-computed: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: to the even, 1 (0x3f80);
     * 1 + 3 * 2^-8 halfway between 1 + 2^-7 (odd) and 1 + 2^-6: to 0x3f82 */
    float vol[8] = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, -2.0f, 0.0f, 1.0f, 1.0f, 1.0f, 1.0f};
    bf16_t got[8];
    be->patchify_bf16(got, vol, 1, 2, 2, 2, 2);  /* one 2^3 patch: the volume in order */
    TEST_CHECK(got[0] == 0x3f80 && got[1] == 0x3f82 && got[2] == 0xc000 && got[3] == 0,
               "hand cases: %04x %04x %04x %04x", got[0], got[1], got[2], got[3]);
    return 0;
}

static void check_gather_rows_bf16(const AliceBackend *be, int C)
{
    const int B = 3, N = 11, nsel = 5, idx_ld = 7;
    int idx[3 * 7];
    for (int b = 0; b < B; b++)
        for (int j = 0; j < idx_ld; j++) idx[b * idx_ld + j] = (j * 4 + b * 3 + 1) % N;
    float *in = inputs_with_ties(2, (size_t)B * N * C);
    const size_t n = (size_t)B * nsel * C;
    bf16_t *got = poisoned(n + 1);
    be->gather_rows_bf16(got, in, idx, idx_ld, B, N, nsel, C);
    size_t bad = 0;
    for (int b = 0; b < B; b++)
        for (int j = 0; j < nsel; j++)
            for (int c = 0; c < C; c++) {
                const float v = in[((size_t)b * N + idx[b * idx_ld + j]) * C + c];
                bad += got[((size_t)b * nsel + j) * C + c] != bf16_reference_round(v);
            }
    TEST_CHECK(bad == 0, "gather_rows_bf16 C %d: %zu of %zu values are not the rounded "
               "gathered values", C, bad, n);
    TEST_CHECK(got[n] == kPoison, "gather_rows_bf16 C %d wrote past its rows", C);
    free(in);
    free(got);
}

static int test_gather_rows_bf16(void)
{
    const AliceBackend *be = backend_cpu();
    for (int C = 1; C <= 9; C += 4) check_gather_rows_bf16(be, C);
    check_gather_rows_bf16(be, 64);
    return 0;
}

/* A stack laid out twice in one arena of act_type: by tstack_layout and by
 * tstack_layout_gemm_output, the same x0 through both. */
static int check_gemm_output(DType act_type)
{
    const AliceBackend *be = backend_cpu();
    const int W = 24, heads = 2, M = 40, depth = 2, B = 2, T = 5;
    const size_t n = (size_t)B * T * W;
    ParamSet ps;
    params_init_registry(&ps);
    TStack s;
    tstack_register(&s, &ps, "dec", W, heads, M, depth);
    params_allocate(&ps, be, 0);
    params_initialize(&ps, 5);
    float *noise = test_randn(5, 3, ps.total, 0.05f);  /* LayerNorm affines off 1 and 0 */
    for (size_t i = 0; i < ps.total; i++) ps.data[i] += noise[i];
    free(noise);
    Arena ar;
    TStackActs plain, gemm;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 0) arena_plan(&ar, be, act_type);
        else arena_commit(&ar);
        tstack_layout(&s, &plain, &ar, B, T, TSTACK_FORWARD_ONLY);
        tstack_layout_gemm_output(&s, &gemm, &ar, B, T, TSTACK_FORWARD_ONLY);
    }
    const Act out = tstack_output(&gemm);
    TEST_CHECK(out.type == act_type && tstack_output(&plain).type == DTYPE_F32,
               "output types: gemm layout %d (%d expected), plain %d", (int)out.type,
               (int)act_type, (int)tstack_output(&plain).type);
    TEST_CHECK((act_type == DTYPE_BF16) == (gemm.out == NULL && gemm.out16 != NULL),
               "a bf16 output lives in out16 alone");
    float *x0 = test_randn(5, 4, n, 1.0f);
    memcpy(plain.x0, x0, n * sizeof(float));
    memcpy(gemm.x0, x0, n * sizeof(float));
    tstack_forward(&s, &plain, &ps);
    tstack_forward(&s, &gemm, &ps);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (act_type == DTYPE_BF16) bad += gemm.out16[i] != bf16_reference_round(plain.out[i]);
        else bad += float_bits(gemm.out[i]) != float_bits(plain.out[i]);
    }
    TEST_CHECK(bad == 0, "%s: %zu of %zu outputs are not the plain layout's (rounded to bf16 "
               "with bf16 activations)", act_type == DTYPE_BF16 ? "bf16" : "fp32", bad, n);
    free(x0);
    arena_free(&ar);
    params_free(&ps);
    return 0;
}

static int test_stack_gemm_output_bf16(void) { return check_gemm_output(DTYPE_BF16); }
static int test_stack_gemm_output_fp32(void) { return check_gemm_output(DTYPE_F32); }

int main(void)
{
    TEST_RUN(test_patchify_bf16);
    TEST_RUN(test_gather_rows_bf16);
    TEST_RUN(test_stack_gemm_output_bf16);
    TEST_RUN(test_stack_gemm_output_fp32);
    return test_finish();
}
