/* geometry_label_to_original undoes geometry_pack_case: a phantom label stored in LPS order
 * is packed (reorient, resample, body crop) and mapped back. At the source spacing the round
 * trip is exact; at 1.5 x 1.5 x 2 mm each organ's Dice stays high (nearest-neighbour
 * resampling error only), and a volume labelled to its edges keeps its last slices; past a face
 * the body crop cut, source voxels map to nothing. */
#include <stdlib.h>
#include <string.h>

#include "data/phantom.h"
#include "geometry.h"
#include "test.h"

static Volume v;
static float *img, *lab;
static double lps[4][4];

/* The phantom (RAS) rewritten in LPS voxel order, with its affine. */
static void make_lps_case(void)
{
    phantom_generate(99, 2, PHANTOM_SMALL, &v, NULL);
    const int *d = v.dim;
    const size_t n = volume_voxels(&v);
    img = malloc(n * sizeof(float));
    lab = malloc(n * sizeof(float));
    for (int x = 0; x < d[0]; x++)
        for (int y = 0; y < d[1]; y++)
            for (int z = 0; z < d[2]; z++) {
                size_t dst = volume_index(d, x, y, z), src = volume_index(d, d[0] - 1 - x, d[1] - 1 - y, z);
                img[dst] = v.image[src];
                lab[dst] = v.label[src];
            }
    memcpy(lps, v.affine, sizeof lps);
    for (int r = 0; r < 3; r++) {
        lps[r][3] += v.affine[r][0] * (d[0] - 1) + v.affine[r][1] * (d[1] - 1);
        lps[r][0] = -v.affine[r][0];
        lps[r][1] = -v.affine[r][1];
    }
}

static int roundtrip(const float spacing[3], double min_dice, long *mismatch_out)
{
    PackGeometry g;
    float *pimg;
    uint8_t *plab;
    geometry_pack_case(img, lab, v.dim, (const double (*)[4])lps, spacing, &g, &pimg, &plab);
    const size_t n = volume_voxels(&v);
    uint8_t *back = malloc(n);
    int edge_high[3];
    geometry_source_edge_faces(v.dim, (const double (*)[4])lps, spacing, g.crop_hi, edge_high);
    geometry_label_to_original(plab, g.dim, (const double (*)[4])g.affine, v.dim,
                               (const double (*)[4])lps, edge_high, back);
    long mismatch = 0, inter[FLARE_LABEL_COUNT] = {0}, a[FLARE_LABEL_COUNT] = {0}, b[FLARE_LABEL_COUNT] = {0};
    for (size_t i = 0; i < n; i++) {
        int t = (int)lab[i], p = back[i];
        mismatch += t != p;
        a[t]++;
        b[p]++;
        if (t == p) inter[t]++;
    }
    for (int k = 1; k < FLARE_LABEL_COUNT; k++)
        if (a[k] >= 500) {
            double dice = 2.0 * inter[k] / (double)(a[k] + b[k]);
            TEST_CHECK(dice >= min_dice, "organ %d: Dice %.4f after the round trip (< %.3f)", k, dice, min_dice);
        }
    TEST_CHECK(g.ras_flip[0] == 1 && g.ras_flip[1] == 1 && g.ras_flip[2] == 0, "LPS storage detected");
    free(back);
    free(pimg);
    free(plab);
    *mismatch_out = mismatch;
    return 0;
}

static int test_exact_at_source_spacing(void)
{
    long mismatch;
    roundtrip(v.spacing, 1.0, &mismatch);
    TEST_CHECK(mismatch == 0, "%ld voxels differ after packing at the source spacing", mismatch);
    return 0;
}

static int test_close_at_target_spacing(void)
{
    const float sp[3] = {1.5f, 1.5f, 2.0f};
    long mismatch;
    return roundtrip(sp, 0.9, &mismatch);
}

/* A volume that is body and organ everywhere, at 0.8 x 0.8 x 1.0 mm, packed at 1.5 x 1.5 x 2:
 * round(100 * 0.8 / 1.5) = 53 voxels end 0.8 packed voxels short of the source's last X slice,
 * 300 slices at 1 -> 2 mm half a voxel short of its last Z slice. Mapped back, every voxel must
 * be labelled: no background on the last slices. */
static int test_edges_after_downsampling(void)
{
    const int d[3] = {100, 40, 300};
    const size_t n = (size_t)d[0] * d[1] * d[2];
    float *body = malloc(n * sizeof(float)), *organ = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) body[i] = 40.0f, organ[i] = 1.0f;
    double aff[4][4] = {{0.8, 0, 0, -40}, {0, 0.8, 0, -16}, {0, 0, 1.0, -150}, {0, 0, 0, 1}};
    const float sp[3] = {1.5f, 1.5f, 2.0f};
    PackGeometry g;
    float *pimg;
    uint8_t *plab;
    geometry_pack_case(body, organ, d, (const double (*)[4])aff, sp, &g, &pimg, &plab);
    uint8_t *back = malloc(n);
    int edge_high[3];
    geometry_source_edge_faces(d, (const double (*)[4])aff, sp, g.crop_hi, edge_high);
    TEST_CHECK(edge_high[0] && edge_high[1] && edge_high[2], "a volume that is body to its edges "
               "has no cropped face (edge faces %d %d %d)", edge_high[0], edge_high[1],
               edge_high[2]);
    geometry_label_to_original(plab, g.dim, (const double (*)[4])g.affine, d, (const double (*)[4])aff,
                               edge_high, back);
    long background = 0, last_x = 0, last_z = 0;
    for (int x = 0; x < d[0]; x++)
        for (int y = 0; y < d[1]; y++)
            for (int z = 0; z < d[2]; z++)
                if (back[volume_index(d, x, y, z)] == 0) {
                    background++;
                    last_x += x == d[0] - 1;
                    last_z += z == d[2] - 1;
                }
    TEST_CHECK(background == 0, "%ld voxels mapped back as background (%ld on the last X slice, "
               "%ld on the last Z slice; packed grid %d x %d x %d)", background, last_x, last_z,
               g.dim[0], g.dim[1], g.dim[2]);
    free(back);
    free(pimg);
    free(plab);
    free(body);
    free(organ);
    return 0;
}

/* Body only in the middle of X (air on both sides), packed at 1.5 mm: the body crop cuts both
 * X faces. Source voxels past a cut face, even within a packed voxel of it, map to nothing
 * (the crop removed air there), while the uncropped Z axis keeps its snap at the high end.
 * The snap had applied to every face: such voxels took the face voxel's prediction. */
static int test_cropped_faces_stay_outside(void)
{
    const int d[3] = {100, 40, 300};
    const size_t n = (size_t)d[0] * d[1] * d[2];
    float *body = malloc(n * sizeof(float));
    for (int x = 0; x < d[0]; x++)
        for (int y = 0; y < d[1]; y++)
            for (int z = 0; z < d[2]; z++)
                body[volume_index(d, x, y, z)] = x >= 30 && x < 70 ? 40.0f : -1000.0f;
    double aff[4][4] = {{0.8, 0, 0, -40}, {0, 0.8, 0, -16}, {0, 0, 1.0, -150}, {0, 0, 0, 1}};
    const float sp[3] = {1.5f, 1.5f, 2.0f};
    PackGeometry g;
    float *pimg;
    uint8_t *plab;
    geometry_pack_case(body, NULL, d, (const double (*)[4])aff, sp, &g, &pimg, &plab);
    int edge_high[3];
    geometry_source_edge_faces(d, (const double (*)[4])aff, sp, g.crop_hi, edge_high);
    TEST_CHECK(g.crop_lo[0] > 0 && g.crop_hi[0] < g.resampled_dim[0], "X not cropped: %d..%d of %d",
               g.crop_lo[0], g.crop_hi[0], g.resampled_dim[0]);
    TEST_CHECK(!edge_high[0] && edge_high[2], "edge faces %d %d %d, want X cropped, Z not",
               edge_high[0], edge_high[1], edge_high[2]);
    int64_t *index = malloc(n * sizeof *index);
    geometry_original_index_map(g.dim, (const double (*)[4])g.affine, d, (const double (*)[4])aff,
                                edge_high, index);
    double inv[4][4], m[4][4];
    affine_invert((const double (*)[4])g.affine, inv);
    affine_multiply((const double (*)[4])inv, (const double (*)[4])aff, m);
    long shell = 0, leaked = 0, z_snapped = 0;
    for (int x = 0; x < d[0]; x++)
        for (int y = 0; y < d[1]; y++)
            for (int z = 0; z < d[2]; z++) {
                const double cx = m[0][0] * x + m[0][1] * y + m[0][2] * z + m[0][3];
                const double cz = m[2][0] * x + m[2][1] * y + m[2][2] * z + m[2][3];
                const int64_t at = index[volume_index(d, x, y, z)];
                if ((cx >= -1.5 && cx < -0.5) || (cx >= g.dim[0] - 0.5 && cx < g.dim[0] + 0.5)) {
                    shell++;   /* within a packed voxel past a cut X face */
                    leaked += at != GEOMETRY_OUTSIDE;
                }
                const int inside_x = cx >= -0.5 && cx < g.dim[0] - 0.5;
                if (inside_x && cz >= g.dim[2] - 0.5 && at != GEOMETRY_OUTSIDE)
                    z_snapped++;   /* past the resampled grid's Z end, inside the source */
            }
    TEST_CHECK(shell > 0, "no source voxel within a packed voxel past the cut X faces");
    TEST_CHECK(leaked == 0, "%ld of the %ld source voxels past a cut X face took a packed voxel",
               leaked, shell);
    TEST_CHECK(z_snapped > 0, "no source voxel past the Z end kept a packed voxel");
    free(index);
    free(pimg);
    free(body);
    return 0;
}

int main(void)
{
    make_lps_case();
    TEST_RUN(test_exact_at_source_spacing);
    TEST_RUN(test_close_at_target_spacing);
    TEST_RUN(test_edges_after_downsampling);
    TEST_RUN(test_cropped_faces_stay_outside);
    volume_free(&v);
    free(img);
    free(lab);
    return test_finish();
}
