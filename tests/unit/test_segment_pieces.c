/* ops/segment_pieces.h and the backend op clip_segments (per-tensor gradient clipping), on the
 * CPU backend:
 *  - the plan of a hand-worked case: segments of 5, 0, 12 and 23 elements in pieces of at most
 *    8: piece starts 0 5 13 17 25 33 | 40, owners 0 2 2 3 3 3, first pieces 0 1 1 3 | 6;
 *  - clipping by hand: segments (3, 4), (1), (0, 0) with max_norm 2: the first (norm 5) scaled
 *    by fl(2 / (5 + 1e-6)), the others untouched; max_norm 0 clips nothing;
 *  - a segment of several pieces (SEGMENT_PIECE_MAX + 5 elements) scaled by the factor of its
 *    whole norm (a factor per piece would leave each piece below the clip), against double. */
#include <math.h>
#include <stdlib.h>

#include "ops/backend.h"
#include "ops/segment_pieces.h"
#include "test.h"

static int test_plan_by_hand(void)
{
    const size_t seg[] = {0, 5, 5, 17, 40};
    size_t *start;
    int *owner, *first;
    const int pieces = segment_pieces_plan(seg, 4, 8, &start, &owner, &first);
    const size_t want_start[] = {0, 5, 13, 17, 25, 33, 40};
    const int want_owner[] = {0, 2, 2, 3, 3, 3}, want_first[] = {0, 1, 1, 3, 6};
    TEST_CHECK(pieces == 6, "%d pieces, expected 6", pieces);
    for (int k = 0; pieces == 6 && k <= 6; k++) {
        TEST_CHECK(start[k] == want_start[k], "piece %d starts at %zu, expected %zu", k,
                   start[k], want_start[k]);
        if (k < 6)
            TEST_CHECK(owner[k] == want_owner[k], "piece %d in segment %d, expected %d", k,
                       owner[k], want_owner[k]);
    }
    for (int s = 0; s <= 4; s++)
        TEST_CHECK(first[s] == want_first[s], "segment %d's first piece %d, expected %d", s,
                   first[s], want_first[s]);
    free(start), free(owner), free(first);
    return 0;
}

/* clip_segments of x over the given segment starts on the CPU backend, in place. */
static void clip_on_cpu(float *x, const size_t *seg, int segments, double max_norm)
{
    const AliceBackend *be = backend_cpu();
    SegmentPieces sp;
    segment_pieces_build(&sp, be, seg, segments);
    float *dev = be->alloc(seg[segments] * sizeof(float));
    be->upload(dev, x, seg[segments] * sizeof(float));
    be->clip_segments(dev, &sp, max_norm);
    be->download(x, dev, seg[segments] * sizeof(float));
    be->release(dev);
    segment_pieces_free(&sp, be);
}

static int test_clip_by_hand(void)
{
    const size_t seg[] = {0, 2, 3, 5};
    float x[] = {3, 4, 1, 0, 0};
    clip_on_cpu(x, seg, 3, 2.0);
    const float f = (float)(2.0 / (5.0 + 1e-6));
    TEST_CHECK(x[0] == 3 * f && x[1] == 4 * f, "norm-5 segment: %.9g %.9g, expected %.9g %.9g",
               x[0], x[1], 3 * f, 4 * f);
    TEST_CHECK(x[2] == 1 && x[3] == 0 && x[4] == 0, "segments within the clip changed");
    float y[] = {3, 4, 1, 0, 0};
    clip_on_cpu(y, seg, 3, 0.0);
    TEST_CHECK(y[0] == 3 && y[1] == 4, "max_norm 0 clipped");
    return 0;
}

static int test_segment_of_several_pieces(void)
{
    const size_t n = SEGMENT_PIECE_MAX + 5;
    const size_t seg[] = {0, 7, 7 + n};
    float *x = test_randn(3, 1, 7 + n, 1.0f);
    float *orig = malloc((7 + n) * sizeof(float));
    memcpy(orig, x, (7 + n) * sizeof(float));
    double ss = 0.0;
    for (size_t i = 7; i < 7 + n; i++) ss += (double)x[i] * x[i];
    /* the clip between the whole norm (~181) and each piece's (~181 and ~2) */
    const double clip = 0.5 * sqrt(ss);
    clip_on_cpu(x, seg, 2, clip);
    const double f = clip / (sqrt(ss) + 1e-6);
    size_t bad = 0;
    for (size_t i = 7; i < 7 + n; i++) bad += fabs(x[i] - orig[i] * f) > 1e-6 * fabs(orig[i]);
    TEST_CHECK(bad == 0, "%zu of %zu elements not scaled by the whole segment's factor %g", bad,
               n, f);
    double ss0 = 0.0;
    for (size_t i = 0; i < 7; i++) ss0 += (double)orig[i] * orig[i];
    TEST_CHECK(sqrt(ss0) < clip && !memcmp(x, orig, 7 * sizeof(float)),
               "the small segment (norm %g, clip %g) changed", sqrt(ss0), clip);
    free(x), free(orig);
    return 0;
}

int main(void)
{
    TEST_RUN(test_plan_by_hand);
    TEST_RUN(test_clip_by_hand);
    TEST_RUN(test_segment_of_several_pieces);
    return test_finish();
}
