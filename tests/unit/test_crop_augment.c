/* Crops and augmentations: window mapping against hand values, padding, centre clamping,
 * positive/negative centre frequencies, geometric augmentation against numpy's rot90/flip
 * definitions, labels moving with images under every flip/turn combination, intensity maths. */
#include <string.h>

#include "data/augment.h"
#include "data/crop.h"
#include "test.h"

static int test_window_hand_values(void)
{
    HuWindow w = {WINDOW_PRETRAIN_LO, WINDOW_PRETRAIN_HI};
    TEST_CLOSE(window_apply(w, -125), 0.0, 0, 1e-7, "-125 HU");
    TEST_CLOSE(window_apply(w, 225), 1.0, 0, 1e-7, "225 HU");
    TEST_CLOSE(window_apply(w, 50), 0.5, 0, 1e-7, "50 HU");
    TEST_CLOSE(window_apply(w, 0), 125.0 / 350.0, 0, 1e-7, "0 HU");
    TEST_CLOSE(window_apply(w, -1000), 0.0, 0, 0, "air clips to 0");
    TEST_CLOSE(window_apply(w, 1500), 1.0, 0, 0, "bone clips to 1");
    HuWindow f = {WINDOW_FINETUNE_LO, WINDOW_FINETUNE_HI};
    TEST_CLOSE(window_apply(f, 40), 215.0 / 425.0, 0, 1e-7, "40 HU, fine-tuning window");
    /* crop_extract applies the same mapping. */
    int16_t img[2] = {-175, 250};
    Volume v = {{1, 1, 2}, {1, 1, 1}, {{0}}, img, NULL};
    int start[3] = {0, 0, 0}, size[3] = {1, 1, 2};
    float out[2];
    crop_extract(&v, f, start, size, out, NULL);
    TEST_CLOSE(out[0], 0.0, 0, 1e-7, "crop -175 HU");
    TEST_CLOSE(out[1], 1.0, 0, 1e-7, "crop 250 HU");
    return 0;
}

/* Volume 4x5x6, HU = 100x + 10y + z (inside the window [0, 1000]), label = (x + y + z) % 3 + 1. */
static void small_volume(Volume *v, int16_t *img, uint8_t *lab)
{
    memset(v, 0, sizeof *v);
    v->dim[0] = 4; v->dim[1] = 5; v->dim[2] = 6;
    for (int x = 0; x < 4; x++)
        for (int y = 0; y < 5; y++)
            for (int z = 0; z < 6; z++) {
                img[volume_index(v->dim, x, y, z)] = (int16_t)(100 * x + 10 * y + z);
                lab[volume_index(v->dim, x, y, z)] = (uint8_t)((x + y + z) % 3 + 1);
            }
    v->image = img;
    v->label = lab;
}

static int test_crop_padding(void)
{
    int16_t img[120];
    uint8_t lab[120];
    Volume v;
    small_volume(&v, img, lab);
    HuWindow w = {0, 1000};
    int size[3] = {8, 7, 10}, center[3] = {2, 2, 3}, start[3];
    crop_start_for_center(v.dim, size, center, start);
    /* Smaller than the crop on every axis: centred, padding split floor/ceil. */
    TEST_CHECK(start[0] == -2 && start[1] == -1 && start[2] == -2, "start %d %d %d", start[0],
               start[1], start[2]);
    float out[8 * 7 * 10];
    int32_t lout[8 * 7 * 10];
    crop_extract(&v, w, start, size, out, lout);
    int bad = 0;
    for (int cx = 0; cx < 8; cx++)
        for (int cy = 0; cy < 7; cy++)
            for (int cz = 0; cz < 10; cz++) {
                int x = cx + start[0], y = cy + start[1], z = cz + start[2];
                size_t o = volume_index(size, cx, cy, cz);
                int inside = x >= 0 && x < 4 && y >= 0 && y < 5 && z >= 0 && z < 6;
                float want = inside ? (100 * x + 10 * y + z) / 1000.0f : 0.0f;
                int32_t lwant = inside ? (x + y + z) % 3 + 1 : 0;
                if (fabsf(out[o] - want) > 1e-6f || lout[o] != lwant) bad++;
            }
    TEST_CHECK(bad == 0, "%d voxels differ from the padded reference", bad);
    return 0;
}

static int test_crop_center_clamp(void)
{
    int dim[3] = {100, 80, 60}, size[3] = {32, 32, 16}, start[3];
    int c1[3] = {50, 40, 30};
    crop_start_for_center(dim, size, c1, start);
    TEST_CHECK(start[0] == 34 && start[1] == 24 && start[2] == 22, "interior %d %d %d", start[0], start[1], start[2]);
    int c2[3] = {0, 79, 2};
    crop_start_for_center(dim, size, c2, start);
    TEST_CHECK(start[0] == 0 && start[1] == 48 && start[2] == 0, "edges %d %d %d", start[0], start[1], start[2]);
    return 0;
}

static int test_posneg_frequencies(void)
{
    /* 30^3, foreground = a 6^3 cube (0.8% of voxels); HU 40 inside the body cylinder, air
     * outside: negatives must land on body background, never on air. */
    int dim[3] = {30, 30, 30};
    Volume v;
    memset(&v, 0, sizeof v);
    memcpy(v.dim, dim, sizeof dim);
    size_t n = volume_voxels(&v);
    v.image = malloc(n * sizeof *v.image);
    v.label = calloc(n, 1);
    for (int x = 0; x < 30; x++)
        for (int y = 0; y < 30; y++)
            for (int z = 0; z < 30; z++) {
                size_t i = volume_index(dim, x, y, z);
                v.image[i] = (x - 15) * (x - 15) + (y - 15) * (y - 15) < 144 ? 40 : -1000;
                if (x >= 12 && x < 18 && y >= 12 && y < 18 && z >= 5 && z < 11) v.label[i] = 4;
            }
    LabelIndex idx;
    label_index_build(&v, &idx);
    TEST_CHECK(idx.count == 216, "foreground count %zu", idx.count);
    HuWindow w = {WINDOW_FINETUNE_LO, WINDOW_FINETUNE_HI};
    const float fractions[2] = {0.5f, 0.25f};
    const int draws = 4000;
    for (int f = 0; f < 2; f++) {
        int pos = 0, wrong = 0;
        for (int k = 0; k < draws; k++) {
            RngStream r;
            rng_init(&r, 7, (uint32_t)f, (uint32_t)k, RNG_TEST);
            int c[3];
            int p = crop_posneg_center(&v, &idx, w, fractions[f], &r, c);
            size_t i = volume_index(dim, c[0], c[1], c[2]);
            pos += p;
            if (p && v.label[i] == 0) wrong++;
            if (!p && (v.label[i] != 0 || window_apply(w, v.image[i]) <= 0)) wrong++;
        }
        /* Binomial sd at 4000 draws is 0.008 at most: 4 sd. */
        TEST_CLOSE((double)pos / draws, fractions[f], 0, 0.032, "positive fraction");
        TEST_CHECK(wrong == 0, "%d centres on the wrong kind of voxel", wrong);
    }
    label_index_free(&idx);
    free(v.image);
    free(v.label);
    return 0;
}

/* numpy: np.rot90(m, 1, axes=(0,1))[i, j] = m[j, Y-1-i]; flips reverse an axis. */
static int test_geometric_matches_numpy_definition(void)
{
    int size[3] = {5, 5, 3};
    float in[75], out[75];
    for (int i = 0; i < 75; i++) in[i] = (float)i;
    AugmentDraw d;
    memset(&d, 0, sizeof d);
    d.scale = 1; d.gamma = 1;
    d.rot90 = 1;
    augment_geometric(&d, size, in, out, NULL, NULL);
    int bad = 0;
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 5; j++)
            for (int z = 0; z < 3; z++)
                bad += out[volume_index(size, i, j, z)] != in[volume_index(size, j, 4 - i, z)];
    TEST_CHECK(bad == 0, "rot90 k=1: %d voxels differ", bad);
    /* flip X then turn twice: out[i, j] = flipx(m)[4-i, 4-j] = m[i, 4-j]; flip Z reverses z. */
    d.rot90 = 2; d.flip[0] = 1; d.flip[2] = 1;
    augment_geometric(&d, size, in, out, NULL, NULL);
    bad = 0;
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 5; j++)
            for (int z = 0; z < 3; z++)
                bad += out[volume_index(size, i, j, z)] != in[volume_index(size, i, 4 - j, 2 - z)];
    TEST_CHECK(bad == 0, "flip x, z then rot90 k=2: %d voxels differ", bad);
    /* k then 4 - k turns is the identity. */
    for (int k = 1; k < 4; k++) {
        float mid[75], back[75];
        AugmentDraw a = d, b = d;
        memset(a.flip, 0, sizeof a.flip);
        memset(b.flip, 0, sizeof b.flip);
        a.rot90 = k; b.rot90 = 4 - k;
        augment_geometric(&a, size, in, mid, NULL, NULL);
        augment_geometric(&b, size, mid, back, NULL, NULL);
        TEST_CHECK(memcmp(in, back, sizeof in) == 0, "rot %d then %d is not the identity", k, 4 - k);
    }
    return 0;
}

/* For every one of the 32 flip/turn combinations: label = f(image) holds after augmentation,
 * with image and label cut from a volume where the label is a function of HU. */
static int test_labels_move_with_images(void)
{
    int dim[3] = {12, 12, 9};
    Volume v;
    memset(&v, 0, sizeof v);
    memcpy(v.dim, dim, sizeof dim);
    size_t n = volume_voxels(&v);
    v.image = malloc(n * sizeof *v.image);
    v.label = malloc(n);
    RngStream r;
    rng_init(&r, 3, 0, 0, RNG_TEST);
    for (size_t i = 0; i < n; i++) {
        v.image[i] = (int16_t)rng_below(&r, 1000);
        v.label[i] = (uint8_t)(v.image[i] % 7);
    }
    HuWindow w = {0, 1000};
    int size[3] = {8, 8, 6}, start[3] = {2, 1, 3}; /* reaches past Z: padding is label 0, HU 0 */
    size_t cn = 8 * 8 * 6;
    float img[8 * 8 * 6], aimg[8 * 8 * 6];
    int32_t lab[8 * 8 * 6], alab[8 * 8 * 6];
    crop_extract(&v, w, start, size, img, lab);
    int bad = 0, moved = 0;
    for (int combo = 0; combo < 32; combo++) {
        AugmentDraw d;
        memset(&d, 0, sizeof d);
        d.scale = 1; d.gamma = 1;
        for (int a = 0; a < 3; a++) d.flip[a] = (combo >> a) & 1;
        d.rot90 = combo >> 3;
        augment_geometric(&d, size, img, aimg, lab, alab);
        for (size_t i = 0; i < cn; i++) {
            int hu = (int)lrintf(aimg[i] * 1000.0f);
            bad += alab[i] != hu % 7;
            moved += aimg[i] != img[i];
        }
    }
    TEST_CHECK(bad == 0, "%d voxels where the label no longer matches its image", bad);
    TEST_CHECK(moved > 0, "augmentations moved nothing");
    free(v.image);
    free(v.label);
    return 0;
}

static int test_intensity_formulas(void)
{
    float x[4] = {0.0f, 0.25f, 0.5f, 1.0f};
    AugmentDraw d;
    memset(&d, 0, sizeof d);
    d.scale = 1.1f; d.shift = -0.05f; d.gamma = 1;
    augment_intensity(&d, 4, x, NULL);
    TEST_CLOSE(x[1], 0.25 * 1.1 - 0.05, 0, 1e-6, "scale then shift");
    float y[3] = {0.2f, 0.4f, 1.0f};
    d.scale = 1; d.shift = 0; d.gamma = 2;
    augment_intensity(&d, 3, y, NULL);
    /* over the crop's range [0.2, 1]: 0.2 + 0.8 * (0.2 / 0.8)^2 = 0.25 */
    TEST_CLOSE(y[1], 0.25, 0, 1e-6, "gamma 2");
    TEST_CLOSE(y[0], 0.2, 0, 1e-6, "gamma keeps the minimum");
    TEST_CLOSE(y[2], 1.0, 0, 1e-6, "gamma keeps the maximum");
    /* Noise: mean 0, sd as asked (byte-sum normal). */
    enum { N = 200000 };
    float *z = calloc(N, sizeof *z);
    d.gamma = 1; d.noise_std = 0.1f;
    RngStream r;
    rng_init(&r, 5, 0, 0, RNG_TEST);
    augment_intensity(&d, N, z, &r);
    double s = 0, ss = 0;
    for (int i = 0; i < N; i++) { s += z[i]; ss += (double)z[i] * z[i]; }
    TEST_CLOSE(s / N, 0.0, 0, 1e-3, "noise mean");
    TEST_CLOSE(sqrt(ss / N), 0.1, 0.01, 0, "noise sd");
    free(z);
    /* Draws: probability 0 never fires, probability 1 always does, within range. */
    AugmentParams p = augment_params_intact();
    p.p_flip = 1; p.p_rot90 = 0; p.p_scale = 1;
    int size[3] = {4, 6, 2};
    for (int k = 0; k < 100; k++) {
        AugmentDraw a;
        rng_init(&r, 9, 0, (uint32_t)k, RNG_TEST);
        augment_draw(&p, size, &r, &a);
        TEST_CHECK(a.flip[0] && a.flip[1] && a.flip[2] && a.rot90 == 0, "draw %d: flips/turn", k);
        TEST_CHECK(fabsf(a.scale - 1) <= p.scale_range, "scale %g out of range", (double)a.scale);
    }
    /* X != Y: odd turns are never drawn (the shape would change). */
    p.p_rot90 = 1;
    for (int k = 0; k < 100; k++) {
        AugmentDraw a;
        rng_init(&r, 9, 1, (uint32_t)k, RNG_TEST);
        augment_draw(&p, size, &r, &a);
        TEST_CHECK(!(a.rot90 & 1), "odd turn %d of a 4x6 crop", a.rot90);
    }
    return 0;
}

int main(void)
{
    TEST_RUN(test_window_hand_values);
    TEST_RUN(test_crop_padding);
    TEST_RUN(test_crop_center_clamp);
    TEST_RUN(test_posneg_frequencies);
    TEST_RUN(test_geometric_matches_numpy_definition);
    TEST_RUN(test_labels_move_with_images);
    TEST_RUN(test_intensity_formulas);
    return test_finish();
}
