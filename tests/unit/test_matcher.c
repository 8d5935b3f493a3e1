/* The anatomical matcher on synthetic bodies with known geometry: a partial field of view of
 * the same body is placed at its known cranio-caudal shift, and over pairs of different
 * bodies (girth, height, spacing, field of view) the profile matcher's organ-centroid error
 * beats the bounding-box-normalised baseline; the score leaves out organs a field of view cuts
 * (an exact mapping scores 0 mm). */
#include <stdlib.h>
#include <string.h>

#include "data/match_eval.h"
#include "data/matcher.h"
#include "synthetic_body.h"
#include "test.h"

static int test_known_shift_of_a_partial_view(void)
{
    /* Same body, same spacing: K covers 0..450 mm, Q only 100..250 mm. */
    BodyCase full = {1.0, 1.0, 0, 450, {5, 5, 5}, 80};
    BodyCase part = {1.0, 1.0, 100, 250, {5, 5, 5}, 80};
    Volume k, q;
    body_make(&full, &k);
    body_make(&part, &q);
    void *dq = matcher_profile.describe(&q), *dk = matcher_profile.describe(&k);
    double scale, shift;
    matcher_profile_alignment(dq, dk, &scale, &shift);
    TEST_CLOSE(scale, 1.0, 0, 1e-9, "cranio-caudal scale");
    TEST_CLOSE(shift, 100.0, 0, 2.0, "cranio-caudal shift (mm)");
    /* Points map to themselves shifted by 20 slices; X and Y are unchanged. */
    double pq[3][3] = {{40, 40, 5}, {20, 55, 15}, {60, 30, 25}}, pk[3][3];
    matcher_profile.map_points(dq, dk, 3, (const double(*)[3])pq, pk);
    for (int i = 0; i < 3; i++) {
        TEST_CLOSE(pk[i][2], pq[i][2] + 20, 0, 0.4, "z of a mapped point (voxels)");
        TEST_CLOSE(pk[i][0], pq[i][0], 0, 1.0, "x of a mapped point (voxels)");
        TEST_CLOSE(pk[i][1], pq[i][1], 0, 1.0, "y of a mapped point (voxels)");
    }
    /* The baseline stretches the partial view over the whole body: off by far more. */
    matcher_bbox.map_points(dq, dk, 3, (const double(*)[3])pq, pk);
    TEST_CHECK(fabs(pk[1][2] - (pq[1][2] + 20)) > 5, "baseline unexpectedly right: z %g", pk[1][2]);
    matcher_profile.free_description(dq);
    matcher_profile.free_description(dk);
    volume_free(&q);
    volume_free(&k);
    return 0;
}

static int test_profile_beats_bbox_baseline(void)
{
    const BodyCase bodies[] = {
        {1.00, 1.00, 0, 450, {5, 5, 5}, 96},
        {1.12, 0.92, 100, 420, {4.5, 4.5, 4}, 112},
        {0.90, 1.08, 150, 360, {5, 5, 5}, 96},
        {1.05, 1.00, 60, 300, {4, 4, 3}, 120},
        {0.95, 0.95, 180, 470, {5, 5, 6}, 96},
        {1.08, 1.05, 120, 330, {5, 5, 2.5}, 96},
    };
    enum { N = sizeof bodies / sizeof bodies[0] };
    Volume v[N];
    for (int i = 0; i < N; i++) body_make(&bodies[i], &v[i]);
    const Matcher *methods[2] = {&matcher_profile, &matcher_bbox};
    MatchReport r;
    match_evaluate(v, N, methods, 2, &r);
    match_report_print(stdout, &r, NULL);
    double pmean, pmed, bmean, bmed;
    int n;
    match_report_stats(&r, 0, -1, &pmean, &pmed, &n);
    match_report_stats(&r, 1, -1, &bmean, &bmed, &n);
    TEST_CHECK(r.pairs == N * (N - 1), "%d pairs evaluated", r.pairs);
    TEST_CHECK(pmean < bmean && pmed < bmed, "profile %.1f/%.1f mm does not beat bbox %.1f/%.1f mm",
               pmean, pmed, bmean, bmed);
    TEST_CHECK(pmean < 30, "profile matcher mean error %.1f mm", pmean);
    match_report_free(&r);
    for (int i = 0; i < N; i++) volume_free(&v[i]);
    return 0;
}

/* An oracle: every volume is the same body at one spacing, its first slice at a known offset
 * (slices) from the full view's, so a point maps exactly. */
static int g_partial_slices;   /* slice count of the partial view, offset kPartialOffset */
enum { kPartialOffset = 30 };
static void *oracle_describe(const Volume *v)
{
    double *offset = malloc(sizeof *offset);
    *offset = v->dim[2] == g_partial_slices ? kPartialOffset : 0;
    return offset;
}
static void oracle_map(const void *q, const void *k, int n, const double (*pq)[3], double (*pk)[3])
{
    for (int i = 0; i < n; i++) {
        pk[i][0] = pq[i][0];
        pk[i][1] = pq[i][1];
        pk[i][2] = pq[i][2] + *(const double *)q - *(const double *)k;
    }
}
static const Matcher matcher_oracle = {"oracle", oracle_describe, free, oracle_map};

static int test_cut_organs_left_out_of_the_score(void)
{
    /* Q shows 150..350 mm of K's 0..450: kidneys, liver and spleen whole, the aorta (90..390)
     * cut at both ends. An exact mapping scores 0 mm on every whole organ; the cut aorta's
     * centroid is that of its visible part, ~75 mm from the whole aorta's, so it is left out
     * (it had scored a perfect match tens of mm off). */
    BodyCase full = {1.0, 1.0, 0, 450, {5, 5, 5}, 80};
    BodyCase part = {1.0, 1.0, 150, 350, {5, 5, 5}, 80};
    Volume v[2];
    body_make(&full, &v[0]);
    body_make(&part, &v[1]);
    g_partial_slices = v[1].dim[2];
    const Matcher *methods[1] = {&matcher_oracle};
    MatchReport r;
    match_evaluate(v, 2, methods, 1, &r);
    match_report_print(stdout, &r, NULL);
    TEST_CHECK(r.pairs == 2, "%d pairs evaluated", r.pairs);
    TEST_CHECK(r.cut_left_out == 2, "%d cut organ pairs left out, expected the aorta's 2",
               r.cut_left_out);
    int aorta_scored = 0;
    for (int o = 0; o < r.num_organs; o++) aorta_scored |= r.organ[o] == 5;
    TEST_CHECK(!aorta_scored && r.num_organs == 4, "scored %d organs (aorta %s)", r.num_organs,
               aorta_scored ? "scored" : "left out");
    double mean, median;
    int n;
    match_report_stats(&r, 0, -1, &mean, &median, &n);
    TEST_CLOSE(mean, 0.0, 0, 1e-9, "the exact mapping's mean error (mm) over whole organs");
    TEST_CHECK(n == 8, "%d organ centroids scored, expected 4 organs x 2 pairs", n);
    match_report_free(&r);
    /* the faces of x and y cut too: an organ voxel moved onto x = 0 (or y = last) marks it */
    for (int face = 0; face < 2; face++) {
        Volume *w = &v[0];
        LabelCentroids before, after;
        label_centroids(w, &before);
        const int liver = 1;
        TEST_CHECK(!before.cut[liver], "the whole view's liver is not cut");
        const size_t at = face == 0 ? volume_index(w->dim, 0, w->dim[1] / 2, w->dim[2] / 2)
                                    : volume_index(w->dim, w->dim[0] / 2, w->dim[1] - 1,
                                                   w->dim[2] / 2);
        const uint8_t kept = w->label[at];
        w->label[at] = liver;
        label_centroids(w, &after);
        TEST_CHECK(after.cut[liver], "a liver voxel on the %s face: not marked cut",
                   face == 0 ? "x = 0" : "y = last");
        w->label[at] = kept;
    }
    volume_free(&v[0]);
    volume_free(&v[1]);
    return 0;
}

int main(void)
{
    TEST_RUN(test_known_shift_of_a_partial_view);
    TEST_RUN(test_cut_organs_left_out_of_the_score);
    TEST_RUN(test_profile_beats_bbox_baseline);
    return test_finish();
}
