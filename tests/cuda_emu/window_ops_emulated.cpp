/* The sliding-window kernels (cuda/cuda_window.cu) on the host through emu_serial.h
 * (test_window_ops_emulated.sh cuts them into window_kernels.inc) against the CPU backend's ops
 * (src/ops/cpu_window.c, included below):
 *  - the gather: every window voxel bit for bit, on the vector path (line starts aligned) and
 *    the scalar one (an odd z origin or line length), nothing written past the window;
 *  - the blend of three overlapping windows in a row: acc and count bit for bit (one float
 *    product, one float add each, as the CPU's);
 *  - the finish: labels equal and probabilities within 1e-6 (the CPU's expf on both sides
 *    here, so in fact equal), with and without probabilities, padding offsets included;
 * grids capped at 3 blocks per axis, so every stride loop runs. */
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "emu_serial.h"
#include "emu_test_util.h"
extern "C" {
#include "ops/cpu_math.h"
}
#include "window_kernels.inc"  /* cut out of cuda/ by the .sh */
#define cpu_sw_gather_window ref_gather
#define cpu_sw_blend_window ref_blend
#define cpu_sw_finish ref_finish
#include "../../src/ops/cpu_window.c"  /* the reference, as the CPU backend runs it */

static EmuLcg rng{20261127u};
static std::vector<float> randoms(size_t n)
{
    std::vector<float> v(n);
    for (float &x : v) x = rng.uniform(-2.0f, 2.0f);
    return v;
}

static void window_case(const int pd[3], const int w[3], const int origins[3][3], int K,
                        const int dim[3], const int lo[3])
{
    const size_t pn = (size_t)pd[0] * pd[1] * pd[2], wn = (size_t)w[0] * w[1] * w[2];
    const std::vector<float> vol = randoms(pn), imp = randoms(wn);
    std::vector<float> acc_g(K * pn, 0.0f), cnt_g(pn, 0.0f), acc_c(K * pn, 0.0f), cnt_c(pn, 0.0f);
    for (int j = 0; j < 3; j++) {
        std::vector<float> win_g(wn + 4, 7.0f), win_c(wn, NAN);
        cuda_sw_gather_window(win_g.data(), vol.data(), pd, w, origins[j]);
        ref_gather(win_c.data(), vol.data(), pd, w, origins[j]);
        EMU_CHECK(std::memcmp(win_g.data(), win_c.data(), wn * sizeof(float)) == 0 &&
                      win_g[wn] == 7.0f,
              "gather window %d (origin %d,%d,%d) differs or wrote past the window", j,
              origins[j][0], origins[j][1], origins[j][2]);
        const std::vector<float> logits = randoms(K * wn);
        cuda_sw_blend_window(acc_g.data(), cnt_g.data(), logits.data(), imp.data(), K, pd, w,
                             origins[j]);
        ref_blend(acc_c.data(), cnt_c.data(), logits.data(), imp.data(), K, pd, w, origins[j]);
    }
    EMU_CHECK(std::memcmp(acc_g.data(), acc_c.data(), acc_g.size() * sizeof(float)) == 0 &&
              std::memcmp(cnt_g.data(), cnt_c.data(), cnt_g.size() * sizeof(float)) == 0,
          "blend of three windows differs from the CPU's bits (K %d)", K);
    /* every voxel of the finish's grid must have weight: fill the rest */
    for (size_t q = 0; q < pn; q++)
        if (cnt_c[q] == 0.0f) cnt_c[q] = cnt_g[q] = 1.0f;
    const size_t n = (size_t)dim[0] * dim[1] * dim[2];
    std::vector<uint8_t> lab_g(n + 1, 99), lab_c(n, 0), lab_np(n, 0);
    std::vector<float> pr_g(K * n, NAN), pr_c(K * n, NAN);
    cuda_sw_finish(lab_g.data(), pr_g.data(), acc_g.data(), cnt_g.data(), K, pd, dim, lo);
    ref_finish(lab_c.data(), pr_c.data(), acc_c.data(), cnt_c.data(), K, pd, dim, lo);
    cuda_sw_finish(lab_np.data(), nullptr, acc_g.data(), cnt_g.data(), K, pd, dim, lo);
    double worst = 0.0;
    for (size_t i = 0; i < K * n; i++) worst = std::fmax(worst, std::fabs(pr_g[i] - pr_c[i]));
    EMU_CHECK(std::memcmp(lab_g.data(), lab_c.data(), n) == 0 && lab_g[n] == 99 &&
              std::memcmp(lab_np.data(), lab_c.data(), n) == 0 && worst <= 1e-6,
          "finish K %d: labels differ or probabilities off by %.2g", K, worst);
}

int main()
{
    for (unsigned cap : {1u << 30, 3u}) {
        emu_max_grid = cap;
        const int pd[3] = {20, 18, 24}, w[3] = {8, 6, 8};
        const int aligned[3][3] = {{0, 0, 0}, {4, 6, 8}, {8, 10, 16}};   /* z origins % 4 == 0 */
        const int ragged[3][3] = {{1, 2, 3}, {5, 7, 9}, {3, 4, 5}};
        const int dim[3] = {16, 14, 20}, lo[3] = {2, 2, 2};
        window_case(pd, w, aligned, 4, dim, lo);
        window_case(pd, w, ragged, 3, dim, lo);
        const int w_odd[3] = {7, 5, 9};
        window_case(pd, w_odd, ragged, 14, pd, (const int[3]){0, 0, 0});
    }
    return emu_finish(emu_fails, "ok: sliding-window kernels on the emulation");
}
