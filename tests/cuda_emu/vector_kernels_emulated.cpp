/* The 16-byte vectorised elementwise kernels of the CUDA backend (add, add_group_scaled, gelu
 * fwd/bwd in fp32 and bf16, leaky_relu fwd/bwd, fp32 -> bf16 rounding, channel concat/split,
 * patchify/unpatchify, gather_rows, their
 * bf16-output variants patchify_bf16 and gather_rows_bf16, masked_mse_bwd) run WITHOUT a
 * GPU: test_vector_kernels_emulated.sh cuts their source out of the cuda/ sources (and the launch
 * helpers out of cuda/cuda_kernels.cuh), rewrites <<<...>>> into emu_launch, and this file runs
 * them on the host, one CUDA thread after another (they have no barriers or shuffles, so the
 * serial order is a valid schedule; emu_cuda.h's thread-per-CUDA-thread emulation would be
 * needlessly slow here). Every result must equal, bit for bit, the per-element formula of the
 * scalar kernels they replaced (for patches: the previous patch_voxel index math, kept below),
 * for sizes around the vector width, pointers shifted by 0, 1 and 4 elements (vector path, scalar
 * path, and for bf16 a misaligned 8-byte shift), and grids capped at 3 blocks so every thread
 * of a grid-stride loop runs several chunks. Nothing may be written past n. */
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "emu_serial.h"
#include "cuda/cuda_bf16.cuh"  /* widen, narrow_to, as_nv: compiled against emu_serial.h's bf16 */
extern "C" {
#include "ops/cpu_math.h"
}
#define ALICE_FATAL(...) do { fprintf(stderr, __VA_ARGS__); abort(); } while (0)
#include "vector_kernels.inc"  /* cut out of cuda/ by the .sh */

static int fails = 0;
/* Counts every failure, prints the first 20. */
#define CHECK(c, ...) do { if (!(c)) { if (fails++ < 20) { printf("FAIL: "); printf(__VA_ARGS__); \
    printf("\n"); } } } while (0)
static uint64_t rs = 88172645463325252ull;
static float urand() { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return (float)((rs >> 11) * (1.0 / 9007199254740992.0)) * 8.0f - 4.0f; }

/* 16-byte aligned storage with room for an offset in elements */
template <typename T> struct Buf {
    std::vector<unsigned char> raw; T *p;
    Buf(size_t n, int off) : raw((n + 64) * sizeof(T) + 64) {
        uintptr_t a = ((uintptr_t)raw.data() + 63) & ~(uintptr_t)63;
        p = (T *)a + off;
        for (size_t i = 0; i < n; i++) { float v = urand(); std::memcpy(&p[i], &v, sizeof(T) == 4 ? 4 : 0); if (sizeof(T) == 2) { uint16_t h = bf16_from_float(v); std::memcpy(&p[i], &h, 2); } }
    }
};

/* The scalar kernels' patch index math (before the row-per-block kernels) as the reference. */
static size_t patch_voxel_ref(size_t i, int X, int Y, int Z, int p)
{
    const int p3 = p * p * p, gy = Y / p, gz = Z / p;
    const int N = (X / p) * gy * gz;
    const size_t e = i % p3, bn = i / p3;
    const int n = (int)(bn % N);
    const size_t b = bn / N;
    const int ix = n / (gy * gz), iy = (n / gz) % gy, iz = n % gz;
    const int px = (int)(e / (p * p)), py = (int)(e / p) % p, pz = (int)(e % p);
    return ((b * X + (size_t)(ix * p + px)) * Y + (iy * p + py)) * Z + (iz * p + pz);
}

int main()
{
    const int offs[3] = {0, 1, 4};
    for (unsigned cap : {1u << 30, 3u}) { /* uncapped, then 3 blocks: every thread strides */
    emu_max_grid = cap;
    for (size_t n : {(size_t)1, (size_t)3, (size_t)4, (size_t)7, (size_t)8, (size_t)9, (size_t)1003, (size_t)4099})
    for (int oo : offs) for (int oa : offs) {
        Buf<float> a(n, oa), b(n, 0), o(n, oo), x(n, oa), dx(n, oo);
        std::vector<float> before(o.p, o.p + n);
        cuda_add(o.p, a.p, b.p, n);
        for (size_t i = 0; i < n; i++) CHECK(o.p[i] == a.p[i] + b.p[i], "add n %zu off %d/%d i %zu", n, oo, oa, i);
        o.p[n] = 12345.0f; cuda_gelu_fwd(o.p, x.p, n);
        for (size_t i = 0; i < n; i++) CHECK(o.p[i] == gelu_erf(x.p[i]), "gelu n %zu i %zu", n, i);
        CHECK(o.p[n] == 12345.0f, "gelu wrote past n");
        cuda_gelu_bwd(dx.p, b.p, x.p, n);
        for (size_t i = 0; i < n; i++) CHECK(dx.p[i] == b.p[i] * gelu_erf_slope(x.p[i]), "gelu_bwd n %zu i %zu", n, i);
        Buf<uint16_t> hx(n, oa), hy(n, oo);
        hy.p[n] = 777;
        /* the formula kernel (cuda_gelu_fwd_bf16's table kernel: gelu_table_emulated.cpp) */
        launch_gelu_fwd(as_nv(hy.p), as_nv(hx.p), n);
        for (size_t i = 0; i < n; i++) CHECK(hy.p[i] == bf16_from_float(gelu_erf(bf16_to_float(hx.p[i]))), "gelu bf16 n %zu i %zu", n, i);
        CHECK(hy.p[n] == 777, "gelu bf16 wrote past n");
        cuda_gelu_bwd_bf16(dx.p, b.p, hx.p, n);
        for (size_t i = 0; i < n; i++) CHECK(dx.p[i] == b.p[i] * gelu_erf_slope(bf16_to_float(hx.p[i])), "gelu_bwd bf16 n %zu i %zu", n, i);
        const float slope = 0.01f;  /* UNETR's negative slope */
        o.p[n] = 12345.0f;
        cuda_leaky_relu_fwd(o.p, x.p, n, slope);
        for (size_t i = 0; i < n; i++)
            CHECK(o.p[i] == (x.p[i] > 0.0f ? x.p[i] : slope * x.p[i]),
                  "leaky_relu_fwd n %zu off %d/%d i %zu", n, oo, oa, i);
        CHECK(o.p[n] == 12345.0f, "leaky_relu_fwd wrote past n");
        dx.p[n] = 12345.0f;
        cuda_leaky_relu_bwd(dx.p, b.p, x.p, n, slope);
        for (size_t i = 0; i < n; i++)
            CHECK(dx.p[i] == (x.p[i] > 0.0f ? b.p[i] : slope * b.p[i]),
                  "leaky_relu_bwd n %zu off %d/%d i %zu", n, oo, oa, i);
        CHECK(dx.p[n] == 12345.0f, "leaky_relu_bwd wrote past n");
        cuda_round_to_bf16(as_nv(hy.p), x.p, n);
        for (size_t i = 0; i < n; i++) CHECK(hy.p[i] == bf16_from_float(x.p[i]), "to_bf16 n %zu i %zu", n, i);
        CHECK(hy.p[n] == 777, "to_bf16 wrote past n");
        cuda_to_bf16(hy.p, b.p, n);  /* the backend op to_bf16: the same kernel, through bf16_t */
        for (size_t i = 0; i < n; i++) CHECK(hy.p[i] == bf16_from_float(b.p[i]), "backend to_bf16 n %zu i %zu", n, i);
        CHECK(hy.p[n] == 777, "backend to_bf16 wrote past n");
    }
    /* add_group_scaled (drop-path): base + scale[g] y per group, or scale[g] y without base,
     * in place on y or base too; scales 0 (a dropped branch), 2 and 1 / 0.7 */
    for (int G : {1, 3, 5})
    for (size_t n : {(size_t)1, (size_t)3, (size_t)4, (size_t)7, (size_t)1003})
    for (int oo : offs) for (int oa : offs)
    for (int alias : {0, 1, 2}) for (int with_base : {0, 1}) {
        if (alias == 2 && !with_base) continue;
        const size_t total = (size_t)G * n;
        Buf<float> base(total, oa), y(total, oo), o(total, oo), sc(G, 0);
        for (int g = 0; g < G; g++) sc.p[g] = g % 3 == 0 ? 0.0f : (g % 3 == 1 ? 2.0f : 1.0f / 0.7f);
        const std::vector<float> y0(y.p, y.p + total), b0(base.p, base.p + total);
        float *out = alias == 1 ? y.p : (alias == 2 ? base.p : o.p);
        out[total] = 5.0f;
        cuda_add_group_scaled(out, with_base ? base.p : nullptr, y.p, sc.p, G, n);
        for (size_t i = 0; i < total; i++) {
            const float s = sc.p[i / n], prod = s * y0[i];
            const float want = with_base ? b0[i] + prod : prod;
            CHECK(std::memcmp(&out[i], &want, 4) == 0,
                  "add_group_scaled G %d n %zu off %d/%d alias %d base %d i %zu: %g vs %g", G, n,
                  oo, oa, alias, with_base, i, out[i], want);
        }
        CHECK(out[total] == 5.0f, "add_group_scaled wrote past the groups");
    }
    /* channel concat and split: plane copies over plane_grid */
    for (int B : {1, 3}) for (int C1 : {1, 3}) for (int C2 : {2, 5})
    for (long V : {1L, 5L, 8L, 1003L}) for (int oo : offs) for (int oa : offs) {
        const size_t na = (size_t)B * C1 * V, nb = (size_t)B * C2 * V, n = na + nb;
        Buf<float> a(na, oa), b(nb, 0), o(n, oo), da(na, oa), db(nb, oo);
        o.p[n] = 5.0f;
        cuda_concat_channels(o.p, a.p, b.p, B, C1, C2, V);
        for (size_t i = 0; i < n; i++) {
            const size_t v = i % V, bc = i / V, bb = bc / (C1 + C2);
            const int c = (int)(bc % (C1 + C2));
            const float want = c < C1 ? a.p[(bb * C1 + c) * V + v]
                                      : b.p[(bb * C2 + (c - C1)) * V + v];
            CHECK(o.p[i] == want, "concat B %d C %d+%d V %ld off %d/%d i %zu", B, C1, C2, V, oo,
                  oa, i);
        }
        CHECK(o.p[n] == 5.0f, "concat wrote past n");
        da.p[na] = 5.0f; db.p[nb] = 5.0f;
        cuda_split_channels(da.p, db.p, o.p, B, C1, C2, V);
        for (size_t i = 0; i < na; i++)
            CHECK(da.p[i] == a.p[i], "split da B %d V %ld i %zu", B, V, i);
        for (size_t i = 0; i < nb; i++)
            CHECK(db.p[i] == b.p[i], "split db B %d V %ld i %zu", B, V, i);
        CHECK(da.p[na] == 5.0f && db.p[nb] == 5.0f, "split wrote past the ends");
        Buf<float> only_b(nb, oo);
        only_b.p[nb] = 5.0f;
        cuda_split_channels(nullptr, only_b.p, o.p, B, C1, C2, V);
        for (size_t i = 0; i < nb; i++)
            CHECK(only_b.p[i] == b.p[i], "split without da: db i %zu", i);
    }
    struct PC { int B, X, Y, Z, p; } pcs[] = {{2, 8, 12, 16, 4}, {3, 16, 24, 32, 8}, {2, 6, 9, 12, 3}, {1, 4, 4, 4, 4}, {2, 32, 16, 16, 16}, {1, 2, 2, 2, 1}};
    for (auto c : pcs) for (int ov : offs) for (int op : offs) {
        const size_t n = (size_t)c.B * c.X * c.Y * c.Z;
        Buf<float> vol(n, ov), pat(n, op), back(n, ov);
        pat.p[n] = 5.0f;
        cuda_patchify(pat.p, vol.p, c.B, c.X, c.Y, c.Z, c.p);
        for (size_t i = 0; i < n; i++) CHECK(pat.p[i] == vol.p[patch_voxel_ref(i, c.X, c.Y, c.Z, c.p)], "patchify p %d i %zu", c.p, i);
        CHECK(pat.p[n] == 5.0f, "patchify wrote past n");
        cuda_unpatchify(back.p, pat.p, c.B, c.X, c.Y, c.Z, c.p);
        for (size_t i = 0; i < n; i++) CHECK(back.p[i] == vol.p[i], "unpatchify p %d i %zu", c.p, i);
        /* patchify_bf16: every value the nearest-even rounding of the fp32 patch value */
        Buf<uint16_t> pat16(n, op);
        pat16.p[n] = 777;
        cuda_patchify_bf16(pat16.p, vol.p, c.B, c.X, c.Y, c.Z, c.p);
        for (size_t i = 0; i < n; i++) CHECK(pat16.p[i] == bf16_from_float(vol.p[patch_voxel_ref(i, c.X, c.Y, c.Z, c.p)]), "patchify_bf16 p %d off %d/%d i %zu", c.p, ov, op, i);
        CHECK(pat16.p[n] == 777, "patchify_bf16 wrote past n");
    }
    for (int C : {1, 4, 19, 20, 4096 / 8, 1027}) for (int oo : offs) for (int oi : offs) {
        const int B = 3, N = 40, nsel = 13, idx_ld = 41;
        std::vector<int> idx(B * idx_ld);
        for (int b = 0; b < B; b++) for (int j = 0; j < idx_ld; j++) idx[b * idx_ld + j] = (j * 7 + b * 3) % N;
        Buf<float> in((size_t)B * N * C, oi), out((size_t)B * nsel * C, oo);
        cuda_gather_rows(out.p, in.p, idx.data(), idx_ld, B, N, nsel, C);
        for (size_t i = 0; i < (size_t)B * nsel * C; i++) {
            const int c = (int)(i % C); const size_t bj = i / C; const int j = (int)(bj % nsel), b = (int)(bj / nsel);
            CHECK(out.p[i] == in.p[((size_t)b * N + idx[(size_t)b * idx_ld + j]) * C + c], "gather C %d i %zu", C, i);
        }
        /* gather_rows_bf16: the fp32 gather's values, each rounded to nearest even */
        Buf<uint16_t> out16((size_t)B * nsel * C, oo);
        out16.p[(size_t)B * nsel * C] = 777;
        cuda_gather_rows_bf16(out16.p, in.p, idx.data(), idx_ld, B, N, nsel, C);
        for (size_t i = 0; i < (size_t)B * nsel * C; i++) CHECK(out16.p[i] == bf16_from_float(out.p[i]), "gather_rows_bf16 C %d off %d/%d i %zu", C, oo, oi, i);
        CHECK(out16.p[(size_t)B * nsel * C] == 777, "gather_rows_bf16 wrote past the rows");
        const int rows = 29, dim = C;
        Buf<float> pr((size_t)rows * dim, oi), tg((size_t)rows * dim, oo), dp((size_t)rows * dim, oo), mask(rows, 0);
        for (int r = 0; r < rows; r++) mask.p[r] = r % 3 ? 1.0f : 0.0f;
        float coef = 0.0123f;
        const size_t rws = rows;
        constexpr int W = 4;
        const bool vec = dim % W == 0 && aligned16(dp.p, pr.p, tg.p);
        emu_launch(masked_mse_bwd_kernel, dim3(grid_for_rows(rws)), threads_for_row(dim, vec, W), 0, 0,
                   dp.p, (const float *)pr.p, (const float *)tg.p, (const float *)mask.p, (const float *)&coef, dim, rws, vec);
        for (size_t i = 0; i < (size_t)rows * dim; i++) CHECK(dp.p[i] == coef * mask.p[i / dim] * (pr.p[i] - tg.p[i]), "mse dim %d i %zu", dim, i);
    }
    }
    printf("%s (%d failures, %ld thread runs)\n", fails ? "FAILED" : "all ok", fails, emu_thread_runs);
    return fails != 0;
}
