/* The anatomical matcher on synthetic bodies with known geometry: a partial field of view of
 * the same body is placed at its known cranio-caudal shift, and over pairs of different
 * bodies (girth, height, spacing, field of view) the profile matcher's organ-centroid error
 * beats the bounding-box-normalised baseline. */
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

int main(void)
{
    TEST_RUN(test_known_shift_of_a_partial_view);
    TEST_RUN(test_profile_beats_bbox_baseline);
    return test_finish();
}
