/* Per-tensor gradient clipping of the CUDA backend (cuda/cuda_optim.cu: piece_sum_squares_kernel
 * and clip_pieces_kernel through cuda_clip_segments) run on the host through emu_cuda.h, cut out
 * by test_clip_segments_emulated.sh. Layouts of segments and pieces written out here (the plan
 * itself is tests/unit/test_segment_pieces.c's), against a double reference of DINO's
 * clip_gradients: each segment's norm over ALL its pieces, its elements multiplied by
 * fl(max_norm / (norm + 1e-6)) where that is below 1, the others left bit for bit:
 *  - one segment of one piece, clipped and not; pieces shorter and longer than a block
 *    (1, 255, 256, 257, 1000 elements);
 *  - a segment of three pieces whose norm is over the clip while each piece's is under it (a
 *    factor per piece would leave it), beside a small segment under the clip;
 *  - an empty segment (no pieces) between two others, and a segment of zeros (norm 0);
 *  - max_norm 0: nothing changes.
 * The emulation's block sums add in another order than the GPU's shuffles, so the factors are
 * compared within a float rounding, not bit for bit. */
#include <cmath>
#include <cstdio>
#include <vector>

#include "emu_cuda.h"
#include "emu_test_util.h"
#include "ops/clip_math.h"
#include "ops/segment_pieces.h"
#include "clip_segments.inc"  /* cut out of cuda/ by the .sh */

static EmuLcg rng{20261127u};

/* piece_sizes[s]: the sizes of segment s's pieces (none: an empty segment) */
static void clip_case(const char *what, const std::vector<std::vector<size_t>> &piece_sizes,
                      const std::vector<float> &scale_of_segment, double max_norm)
{
    std::vector<size_t> start{0};
    std::vector<int> owner, first;
    for (size_t s = 0; s < piece_sizes.size(); s++) {
        first.push_back((int)owner.size());
        for (size_t len : piece_sizes[s]) {
            start.push_back(start.back() + len);
            owner.push_back((int)s);
        }
    }
    first.push_back((int)owner.size());
    const size_t n = start.back();
    std::vector<float> x(n);
    for (size_t s = 0, k = 0; s < piece_sizes.size(); s++)
        for (size_t p = 0; p < piece_sizes[s].size(); p++, k++)
            for (size_t i = start[k]; i < start[k + 1]; i++)
                x[i] = scale_of_segment[s] * rng.uniform(-1.0f, 1.0f);
    const std::vector<float> orig = x;
    std::vector<double> sums(owner.size() + 1, NAN);
    SegmentPieces sp = {(int)owner.size(), (int)piece_sizes.size(), start.data(), owner.data(),
                        first.data(), sums.data()};
    cuda_clip_segments(x.data(), &sp, max_norm);
    for (size_t s = 0; s < piece_sizes.size(); s++) {
        double ss = 0.0;
        for (int k = first[s]; k < first[s + 1]; k++)
            for (size_t i = start[k]; i < start[k + 1]; i++) ss += (double)orig[i] * orig[i];
        const double scale = max_norm / (std::sqrt(ss) + 1e-6);
        const bool clips = max_norm > 0 && scale < 1.0;
        size_t bad = 0;
        for (int k = first[s]; k < first[s + 1]; k++)
            for (size_t i = start[k]; i < start[k + 1]; i++) {
                const double want = clips ? orig[i] * scale : orig[i];
                bad += clips ? std::fabs(x[i] - want) > 2.4e-7 * std::fabs(want)
                             : x[i] != orig[i];
            }
        EMU_CHECK(bad == 0, "%s: segment %zu (norm %g, max_norm %g): %zu elements off", what, s,
                  std::sqrt(ss), max_norm, bad);
    }
}

int main()
{
    for (size_t len : {1, 255, 256, 257, 1000}) {
        char what[64];
        snprintf(what, sizeof what, "one piece of %zu", len);
        clip_case(what, {{len}}, {1.0f}, 0.1);   /* clipped */
        clip_case(what, {{len}}, {1.0f}, 1e3);   /* not */
    }
    /* pieces of norm ~10.0, ~10.0, ~2.9 (uniform(-1, 1) x 1: rms 0.577): the segment's ~14.4
     * is over 12, each piece under it; the small segment (~0.8) is under too */
    clip_case("three pieces over the clip, each under it", {{300, 300, 25}, {2}}, {1.0f, 1.0f},
              12.0);
    clip_case("an empty segment and one of zeros", {{500}, {}, {40}, {300, 7}},
              {1.0f, 1.0f, 0.0f, 3.0f}, 5.0);
    clip_case("max_norm 0", {{300, 300}, {5}}, {1.0f, 1.0f}, 0.0);
    return emu_finish(emu_fails, "ok: per-segment clipping (piece sums, then a factor per "
                      "segment) on the emulation");
}
