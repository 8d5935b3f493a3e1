/* DSC / NSD / surface areas / distance transform against hand-computed values. The numeric
 * agreement with an independent implementation (scipy) is tests/reference/test_metrics_ref.py. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "eval/edt.h"
#include "eval/labels.h"
#include "eval/metrics.h"
#include "eval/surface_area.h"
#include "test.h"

typedef struct { int dim[3]; uint8_t *v; } Grid;

static Grid grid_new(int x, int y, int z)
{
    Grid g = {{x, y, z}, calloc((size_t)x * y * z, 1)};
    return g;
}
static uint8_t *at(Grid *g, int x, int y, int z) { return &g->v[((size_t)x * g->dim[1] + y) * g->dim[2] + z]; }

static void fill_box(Grid *g, const int lo[3], const int size[3], uint8_t label)
{
    for (int x = lo[0]; x < lo[0] + size[0]; x++)
        for (int y = lo[1]; y < lo[1] + size[1]; y++)
            for (int z = lo[2]; z < lo[2] + size[2]; z++) *at(g, x, y, z) = label;
}

static void fill_ball(Grid *g, const double c[3], double r, uint8_t label)
{
    for (int x = 0; x < g->dim[0]; x++)
        for (int y = 0; y < g->dim[1]; y++)
            for (int z = 0; z < g->dim[2]; z++) {
                double dx = x - c[0], dy = y - c[1], dz = z - c[2];
                if (dx * dx + dy * dy + dz * dz <= r * r) *at(g, x, y, z) = label;
            }
}

/* Marching-cubes area of a voxelised box of size a[] voxels: flat faces between the outer
 * voxel centres, chamfer strips along the 12 edges, a triangle at each of the 8 corners. */
static double box_area(const int a[3], const double s[3])
{
    double faces = 2 * ((a[1] - 1) * s[1] * (a[2] - 1) * s[2] + (a[0] - 1) * s[0] * (a[2] - 1) * s[2] +
                        (a[0] - 1) * s[0] * (a[1] - 1) * s[1]);
    double edges = 4 * ((a[0] - 1) * s[0] * hypot(s[1] / 2, s[2] / 2) + (a[1] - 1) * s[1] * hypot(s[0] / 2, s[2] / 2) +
                        (a[2] - 1) * s[2] * hypot(s[0] / 2, s[1] / 2));
    double cx = s[1] * s[2] / 4, cy = s[0] * s[2] / 4, cz = s[0] * s[1] / 4;
    double corners = 8 * 0.5 * sqrt(cx * cx + cy * cy + cz * cz);
    return faces + edges + corners;
}

static int test_area_table(void)
{
    const double iso[3] = {1, 1, 1}, aniso[3] = {0.7, 1.3, 2.9};
    double a[NEIGHBOUR_CODES], b[NEIGHBOUR_CODES];
    surface_area_table(iso, a);
    surface_area_table(aniso, b);
    TEST_CLOSE(a[0], 0, 0, 1e-12, "empty cube");
    TEST_CLOSE(a[255], 0, 0, 1e-12, "full cube");
    TEST_CLOSE(a[1], sqrt(3.0) / 8, 1e-12, 0, "one corner: equilateral triangle of side 1/sqrt2");
    TEST_CLOSE(a[0x0F], 1.0, 1e-12, 0, "half cube: unit square");
    TEST_CLOSE(a[0x03], sqrt(0.5), 1e-12, 0, "edge pair: 1 x 1/sqrt2 rectangle");
    /* a corner and its three neighbours: regular hexagon of side 1/sqrt2 */
    TEST_CLOSE(a[0x17], 3 * sqrt(3.0) / 4, 1e-12, 0, "hexagon");
    /* half cube split across axis 0 has area s1*s2 */
    TEST_CLOSE(b[0x0F], 1.3 * 2.9, 1e-12, 0, "anisotropic half cube");
    int sym = 1;
    for (int c = 0; c < NEIGHBOUR_CODES; c++) sym &= fabs(b[c] - b[255 - c]) < 1e-12;
    TEST_CHECK(sym, "table is not symmetric under complement");
    return 0;
}

static int test_edt_brute_force(void)
{
    const int dim[3] = {7, 9, 6};
    const double sp[3] = {0.8, 1.7, 2.5};
    const size_t n = (size_t)dim[0] * dim[1] * dim[2];
    uint8_t *f = calloc(n, 1);
    double *d2 = malloc(sizeof(double) * n);
    unsigned state = 12345;
    for (size_t i = 0; i < n; i++) { state = state * 1103515245u + 12345u; f[i] = (state >> 16) % 23 == 0; }
    edt_squared(f, dim, sp, d2);
    double worst = 0;
    for (int x = 0; x < dim[0]; x++)
        for (int y = 0; y < dim[1]; y++)
            for (int z = 0; z < dim[2]; z++) {
                double best = INFINITY;
                for (int i = 0; i < dim[0]; i++)
                    for (int j = 0; j < dim[1]; j++)
                        for (int k = 0; k < dim[2]; k++)
                            if (f[((size_t)i * dim[1] + j) * dim[2] + k]) {
                                double dx = (x - i) * sp[0], dy = (y - j) * sp[1], dz = (z - k) * sp[2];
                                double d = dx * dx + dy * dy + dz * dz;
                                if (d < best) best = d;
                            }
                double e = fabs(d2[((size_t)x * dim[1] + y) * dim[2] + z] - best);
                if (e > worst) worst = e;
            }
    TEST_CLOSE(worst, 0, 0, 1e-9, "max |EDT - brute force| (mm^2)");
    memset(f, 0, n);
    edt_squared(f, dim, sp, d2);
    TEST_CHECK(isinf(d2[0]) && isinf(d2[n - 1]), "no feature must give infinite distance");
    free(f);
    free(d2);
    return 0;
}

static int test_identical_and_empty(void)
{
    Grid g = grid_new(20, 18, 16);
    fill_box(&g, (int[]){3, 4, 5}, (int[]){8, 6, 7}, 2);
    const double sp[3] = {1, 1, 1};
    OrganScore s = organ_score(g.v, g.v, g.dim, sp, 2, 1.0);
    TEST_CLOSE(s.dsc, 1, 1e-12, 0, "identical DSC");
    TEST_CLOSE(s.nsd, 1, 1e-12, 0, "identical NSD");
    Grid e = grid_new(20, 18, 16);
    s = organ_score(e.v, e.v, e.dim, sp, 2, 1.0);
    TEST_CHECK(s.dsc == 1 && s.nsd == 1, "both empty: DSC %g NSD %g, want 1 1", s.dsc, s.nsd);
    s = organ_score(g.v, e.v, g.dim, sp, 2, 1.0);
    TEST_CHECK(s.dsc == 0 && s.nsd == 0, "prediction empty: DSC %g NSD %g, want 0 0", s.dsc, s.nsd);
    s = organ_score(e.v, g.v, g.dim, sp, 2, 1.0);
    TEST_CHECK(s.dsc == 0 && s.nsd == 0, "truth empty: DSC %g NSD %g, want 0 0", s.dsc, s.nsd);
    /* other labels do not count */
    s = organ_score(g.v, g.v, g.dim, sp, 3, 1.0);
    TEST_CHECK(s.dsc == 1 && s.nsd == 1 && s.gt_voxels == 0, "absent label must score as both empty");
    free(g.v);
    free(e.v);
    return 0;
}

static int test_disjoint_far(void)
{
    Grid a = grid_new(40, 12, 12), b = grid_new(40, 12, 12);
    fill_box(&a, (int[]){1, 2, 2}, (int[]){6, 6, 6}, 1);
    fill_box(&b, (int[]){30, 2, 2}, (int[]){6, 6, 6}, 1);
    OrganScore s = organ_score(a.v, b.v, a.dim, (double[]){1, 1, 1}, 1, 5.0);
    TEST_CHECK(s.dsc == 0 && s.nsd == 0, "disjoint far masks: DSC %g NSD %g", s.dsc, s.nsd);
    free(a.v);
    free(b.v);
    return 0;
}

static int test_shifted_cube(void)
{
    const int a = 10;
    Grid g = grid_new(16, 14, 14), p = grid_new(16, 14, 14);
    fill_box(&g, (int[]){2, 2, 2}, (int[]){a, a, a}, 1);
    fill_box(&p, (int[]){3, 2, 2}, (int[]){a, a, a}, 1);
    const double iso[3] = {1, 1, 1};
    OrganScore s = organ_score(g.v, p.v, g.dim, iso, 1, 0.5);
    TEST_CLOSE(s.dsc, (double)(a - 1) / a, 1e-12, 0, "DSC of a cube shifted by one voxel");
    TEST_CHECK(s.nsd < 1 && s.nsd > 0.5, "NSD below one voxel: %g", s.nsd);
    s = organ_score(g.v, p.v, g.dim, iso, 1, 1.0);
    TEST_CLOSE(s.nsd, 1, 1e-12, 0, "NSD at a tolerance of the shift");
    /* anisotropy: the same shift along a 2.5 mm axis needs a 2.5 mm tolerance, and the
     * result is the same whichever array axis carries it */
    const double sp_x[3] = {2.5, 1.5, 1.0};
    OrganScore sx = organ_score(g.v, p.v, g.dim, sp_x, 1, 2.0);
    OrganScore sx_ok = organ_score(g.v, p.v, g.dim, sp_x, 1, 2.5);
    TEST_CHECK(sx.nsd < 1, "shift of 2.5 mm at tolerance 2 mm: NSD %g", sx.nsd);
    TEST_CLOSE(sx_ok.nsd, 1, 1e-12, 0, "shift of 2.5 mm at tolerance 2.5 mm");
    Grid gz = grid_new(14, 14, 16), pz = grid_new(14, 14, 16);
    fill_box(&gz, (int[]){2, 2, 2}, (int[]){a, a, a}, 1);
    fill_box(&pz, (int[]){2, 2, 3}, (int[]){a, a, a}, 1);
    const double sp_z[3] = {1.0, 1.5, 2.5};
    OrganScore sz = organ_score(gz.v, pz.v, gz.dim, sp_z, 1, 2.0);
    TEST_CLOSE(sz.nsd, sx.nsd, 1e-12, 0, "NSD invariant under swapping axes and spacings");
    TEST_CLOSE(sz.gt_area, sx.gt_area, 1e-9, 0, "area invariant under swapping axes and spacings");
    free(g.v); free(p.v); free(gz.v); free(pz.v);
    return 0;
}

static int test_box_area(void)
{
    const int a[3] = {12, 7, 9};
    Grid g = grid_new(16, 11, 13);
    fill_box(&g, (int[]){2, 2, 2}, a, 4);
    const double iso[3] = {1, 1, 1}, aniso[3] = {0.75, 1.25, 3.0};
    TEST_CLOSE(mask_surface_area(g.v, g.dim, iso, 4), box_area(a, iso), 1e-12, 0, "box area, isotropic");
    TEST_CLOSE(mask_surface_area(g.v, g.dim, aniso, 4), box_area(a, aniso), 1e-12, 0, "box area, anisotropic");
    /* cube of side c: 6(c-1)^2 + 6 sqrt2 (c-1) + sqrt3, close to the exact 6 c^2 */
    Grid c = grid_new(24, 24, 24);
    fill_box(&c, (int[]){2, 2, 2}, (int[]){20, 20, 20}, 1);
    double area = mask_surface_area(c.v, c.dim, iso, 1);
    TEST_CLOSE(area, 6 * 19.0 * 19 + 6 * sqrt(2.0) * 19 + sqrt(3.0), 1e-12, 0, "cube, closed form");
    TEST_CLOSE(area, 6 * 20.0 * 20, 0.06, 0, "cube vs 6 a^2");
    free(g.v);
    free(c.v);
    return 0;
}

static int test_sphere(void)
{
    const double r = 18;
    Grid g = grid_new(44, 44, 44), p = grid_new(44, 44, 44);
    const double c[3] = {21.5, 21.5, 21.5};
    fill_ball(&g, c, r, 1);
    fill_ball(&p, c, r + 1, 1);
    const double iso[3] = {1, 1, 1};
    double area = mask_surface_area(g.v, g.dim, iso, 1);
    /* Binary marching cubes overestimates smooth surfaces: the staircase is chamfered, not
     * smoothed, giving about +9% on average over orientations (Lindblad 2005, Image Vis.
     * Comput. 23:111). NSD is a ratio of such areas, so the bias cancels there. */
    double ratio = area / (4 * M_PI * r * r);
    TEST_CHECK(ratio > 1.06 && ratio < 1.11, "voxelised sphere area / 4 pi r^2 = %.4f, want ~1.09", ratio);
    OrganScore self = organ_score(g.v, g.v, g.dim, iso, 1, 0.1);
    TEST_CLOSE(self.nsd, 1, 1e-12, 0, "sphere vs itself");
    OrganScore above = organ_score(g.v, p.v, g.dim, iso, 1, 2.0);
    OrganScore below = organ_score(g.v, p.v, g.dim, iso, 1, 0.9);
    TEST_CLOSE(above.nsd, 1, 1e-12, 0, "sphere vs radius+1, tolerance 2 voxels");
    TEST_CHECK(below.nsd < 0.35, "sphere vs radius+1, tolerance 0.9 voxel: NSD %g", below.nsd);
    /* DSC from the voxel counts */
    TEST_CLOSE(above.dsc, 2.0 * above.gt_voxels / (double)(above.gt_voxels + above.pred_voxels), 1e-12, 0,
               "nested spheres DSC");
    /* halving every spacing halves distances: tolerance 1 mm then covers the 0.5 mm gap */
    const double half[3] = {0.5, 0.5, 0.5};
    OrganScore fine = organ_score(g.v, p.v, g.dim, half, 1, 1.0);
    TEST_CLOSE(fine.nsd, above.nsd, 1e-12, 0, "scale invariance");
    TEST_CLOSE(fine.gt_area, area / 4, 1e-12, 0, "area scales with spacing^2");
    free(g.v);
    free(p.v);
    return 0;
}

static int test_label_sets(void)
{
    const LabelSet *f = label_set_find("flare"), *b = label_set_find("btcv");
    TEST_CHECK(f && b && !label_set_find("nope"), "label set lookup");
    if (!f || !b) return 0;
    TEST_CHECK(f->count == 13 && b->count == 13, "13 organs each");
    TEST_CHECK(f->organs[0].id == 1 && f->organs[0].tolerance_mm == 5, "FLARE 1 = liver, 5 mm");
    TEST_CHECK(f->organs[11].tolerance_mm == 7, "FLARE duodenum 7 mm");
    TEST_CHECK(b->organs[5].id == 6 && b->organs[5].tolerance_mm == 5, "BTCV 6 = liver, 5 mm");
    TEST_CHECK(b->organs[9].tolerance_mm == 3, "BTCV portal vein 3 mm");
    return 0;
}

/* The FLARE 2022 protocol, against hand counts: aorta (FLARE id 5, a labelled-slices organ) as
 * a 4 x 4 tube, the truth on slices 10..20 (11 slices); under flare22 only slices 10..19 count
 * (the script's z_lower:z_upper leaves the last one out). The liver (id 1) is scored alike by
 * both protocols; the empty-mask conventions come from the whole volume. */
static double organ_dsc(const Grid *gt, const Grid *pred, EvalProtocol protocol, int organ_index,
                        double *nsd)
{
    const LabelSet *f = label_set_find("flare");
    double dsc[13], nsds[13];
    case_scores(gt->v, pred->v, gt->dim, (double[]){1, 1, 1}, f, protocol, dsc, nsds);
    *nsd = nsds[organ_index];
    return dsc[organ_index];
}

static int test_flare22_labelled_slices(void)
{
    enum { AORTA = 5, AORTA_INDEX = 4, LIVER = 1, LIVER_INDEX = 0 };
    const LabelSet *f = label_set_find("flare");
    TEST_CHECK(f->organs[AORTA_INDEX].id == AORTA && f->organs[AORTA_INDEX].labelled_slices &&
                   !f->organs[LIVER_INDEX].labelled_slices && f->organs[5].labelled_slices &&
                   f->organs[9].labelled_slices,
               "FLARE labelled-slices organs: aorta, ivc, esophagus only");
    Grid gt = grid_new(16, 16, 30), pred = grid_new(16, 16, 30);
    fill_box(&gt, (int[]){5, 5, 10}, (int[]){4, 4, 11}, AORTA);    /* z 10..20 */
    fill_box(&pred, (int[]){5, 5, 4}, (int[]){4, 4, 23}, AORTA);   /* z 4..26 */
    fill_box(&gt, (int[]){0, 0, 0}, (int[]){3, 3, 5}, LIVER);
    fill_box(&pred, (int[]){0, 0, 0}, (int[]){3, 3, 8}, LIVER);
    double nsd_plain, nsd_flare;
    TEST_CLOSE(organ_dsc(&gt, &pred, EVAL_PROTOCOL_PLAIN, AORTA_INDEX, &nsd_plain), 22.0 / 34.0,
               1e-12, 0, "plain: aorta DSC over every slice, 2 x 11 / (11 + 23) slices");
    TEST_CLOSE(organ_dsc(&gt, &pred, EVAL_PROTOCOL_FLARE22, AORTA_INDEX, &nsd_flare), 1.0, 1e-12,
               0, "flare22: aorta DSC on slices 10..19 only");
    TEST_CHECK(nsd_plain < 0.9 && nsd_flare == 1.0, "aorta NSD: plain %g (< 0.9), flare22 %g (1)",
               nsd_plain, nsd_flare);
    double liver_plain, liver_flare;
    const double dl = organ_dsc(&gt, &pred, EVAL_PROTOCOL_PLAIN, LIVER_INDEX, &liver_plain);
    TEST_CHECK(dl == organ_dsc(&gt, &pred, EVAL_PROTOCOL_FLARE22, LIVER_INDEX, &liver_flare) &&
                   liver_plain == liver_flare && fabs(dl - 10.0 / 13.0) < 1e-12,
               "liver: the same under both protocols, DSC 2 x 5 / (5 + 8) slices (got %g)", dl);
    /* the last labelled slice left out: a prediction missing only it is perfect under flare22 */
    memset(pred.v, 0, (size_t)16 * 16 * 30);
    fill_box(&pred, (int[]){5, 5, 10}, (int[]){4, 4, 10}, AORTA);   /* z 10..19 */
    TEST_CLOSE(organ_dsc(&gt, &pred, EVAL_PROTOCOL_PLAIN, AORTA_INDEX, &nsd_plain), 20.0 / 21.0,
               1e-12, 0, "plain: the prediction lacks the truth's last slice");
    TEST_CLOSE(organ_dsc(&gt, &pred, EVAL_PROTOCOL_FLARE22, AORTA_INDEX, &nsd_flare), 1.0, 1e-12,
               0, "flare22: the truth's last slice is outside the scored range");
    /* no truth aorta, a predicted one: 0 under both (decided on the whole volume) */
    memset(gt.v, 0, (size_t)16 * 16 * 30);
    TEST_CHECK(organ_dsc(&gt, &pred, EVAL_PROTOCOL_FLARE22, AORTA_INDEX, &nsd_flare) == 0 &&
                   nsd_flare == 0, "flare22: a predicted aorta absent from the truth scores 0");
    /* a truth one slice thick leaves no slice: the script's 0 / 0, NaN, whatever the
     * prediction (here the tube on z 10..19 around it; a perfect one alike) */
    fill_box(&gt, (int[]){5, 5, 12}, (int[]){4, 4, 1}, AORTA);
    TEST_CHECK(isnan(organ_dsc(&gt, &pred, EVAL_PROTOCOL_FLARE22, AORTA_INDEX, &nsd_flare)) &&
                   isnan(nsd_flare), "flare22: a one-slice truth is not scored (NaN)");
    TEST_CHECK(isnan(organ_dsc(&gt, &gt, EVAL_PROTOCOL_FLARE22, AORTA_INDEX, &nsd_flare)) &&
                   isnan(nsd_flare), "flare22: a one-slice truth predicted exactly: NaN too");
    TEST_CLOSE(organ_dsc(&gt, &pred, EVAL_PROTOCOL_PLAIN, AORTA_INDEX, &nsd_plain),
               2.0 * 16 / (16 + 160), 1e-12, 0, "plain: the one-slice aorta in the 10-slice tube");
    TEST_CHECK(eval_protocol_from_name("flare22") == EVAL_PROTOCOL_FLARE22 &&
                   eval_protocol_from_name("plain") == EVAL_PROTOCOL_PLAIN &&
                   eval_protocol_from_name("flare") == -1, "eval_protocol names");
    free(gt.v);
    free(pred.v);
    return 0;
}

int main(void)
{
    TEST_RUN(test_area_table);
    TEST_RUN(test_edt_brute_force);
    TEST_RUN(test_identical_and_empty);
    TEST_RUN(test_disjoint_far);
    TEST_RUN(test_shifted_cube);
    TEST_RUN(test_box_area);
    TEST_RUN(test_sphere);
    TEST_RUN(test_label_sets);
    TEST_RUN(test_flare22_labelled_slices);
    return test_finish();
}
