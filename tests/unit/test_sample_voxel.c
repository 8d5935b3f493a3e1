/* The per-voxel crop formula shared by the CPU loader and the CUDA crop kernel
 * (data/sample_voxel.h, core/philox.h), against hand-computed cases:
 *  - Philox4x32-10 known-answer vectors of Random123 (kat_vectors), and random access
 *    philox_word_at equal to walking the rng.h stream;
 *  - an identity recipe reproduces a plain crop (HU written as a known function of position,
 *    window computed in double);
 *  - a quarter turn / flips map known voxels where np.rot90(np.flip(m), k, axes=(0, 1)) puts them;
 *  - voxels outside the volume are 0 with label 0;
 *  - scale/shift, gamma and noise values computed by hand.
 * (The geometric augmentation of this code base is flips and quarter turns, no resampling,
 * so there is no interpolation to check.) */
#include <string.h>

#include "core/philox.h"
#include "data/sample_voxel.h"
#include "test.h"

enum { VX = 6, VY = 5, VZ = 4 };

/* HU of voxel (x, y, z) of the test volume: distinct for every voxel, inside [-100, 200). */
static int hu_at(int x, int y, int z) { return 40 * x + 7 * y + z - 100; }

static int16_t g_image[VX * VY * VZ];
static uint8_t g_label[VX * VY * VZ];

static void make_volume(void)
{
    for (int x = 0; x < VX; x++)
        for (int y = 0; y < VY; y++)
            for (int z = 0; z < VZ; z++) {
                g_image[(x * VY + y) * VZ + z] = (int16_t)hu_at(x, y, z);
                g_label[(x * VY + y) * VZ + z] = (uint8_t)(x + 10 * y + z);
            }
}

/* Window [-100, 200] in double: the independent reference. */
static double windowed(int hu)
{
    double t = (hu + 100.0) / 300.0;
    return t < 0 ? 0 : (t > 1 ? 1 : t);
}

static CropRecipe plain_recipe(const int start[3], const int size[3], float *out, int32_t *lab)
{
    CropRecipe r;
    memset(&r, 0, sizeof r);
    r.image = g_image;
    r.label = g_label;
    r.dim[0] = VX; r.dim[1] = VY; r.dim[2] = VZ;
    for (int a = 0; a < 3; a++) { r.start[a] = start[a]; r.size[a] = size[a]; }
    r.window_lo = -100.0f;
    r.window_scale = 1.0f / 300.0f;
    r.scale = 1.0f;
    r.gamma = 1.0f;
    r.out = out;
    r.out_label = lab;
    return r;
}

static void render(const CropRecipe *r)
{
    for (int x = 0; x < r->size[0]; x++)
        for (int y = 0; y < r->size[1]; y++)
            for (int z = 0; z < r->size[2]; z++) sv_render_voxel(r, x, y, z);
}

static int test_philox_known_answers(void)
{
    /* Random123 kat_vectors, philox4x32 10 rounds. */
    const struct { uint32_t ctr[4], key[2], out[4]; } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
        {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu},
         {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
        {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u},
         {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
    };
    for (size_t k = 0; k < sizeof kat / sizeof kat[0]; k++) {
        uint32_t out[4];
        philox4x32_10_block(kat[k].ctr, kat[k].key, out);
        for (int i = 0; i < 4; i++)
            TEST_CHECK(out[i] == kat[k].out[i], "KAT %zu word %d: %08x, expected %08x", k, i,
                       out[i], kat[k].out[i]);
    }
    return 0;
}

static int test_word_at_equals_stream(void)
{
    RngStream s;
    rng_init(&s, 0x123456789abcULL, 17, 4242, RNG_AUG_NOISE);
    const uint32_t ctr[3] = {s.ctr[0], s.ctr[1], s.ctr[2]};
    for (uint32_t w = 0; w < 1000; w++) {
        uint32_t walked = rng_u32(&s), direct = philox_word_at(s.key, ctr, w);
        TEST_CHECK(walked == direct, "word %u: stream %08x, random access %08x", w, walked, direct);
        if (walked != direct) break;
    }
    return 0;
}

static int test_identity_is_plain_crop(void)
{
    make_volume();
    const int start[3] = {1, 2, 0}, size[3] = {3, 2, 4};
    float out[24];
    int32_t lab[24];
    CropRecipe r = plain_recipe(start, size, out, lab);
    render(&r);
    for (int x = 0; x < 3; x++)
        for (int y = 0; y < 2; y++)
            for (int z = 0; z < 4; z++) {
                int o = (x * 2 + y) * 4 + z;
                TEST_CLOSE(out[o], windowed(hu_at(1 + x, 2 + y, z)), 0, 1e-6, "identity voxel");
                TEST_CHECK(lab[o] == (1 + x) + 10 * (2 + y) + z, "identity label at %d", o);
            }
    return 0;
}

static int test_quarter_turn_and_flips(void)
{
    make_volume();
    /* A 4x4x2 crop at the origin. np.rot90(m, 1, axes=(0, 1))[i, j] = m[j, 3 - i]:
     * output (1, 2) shows source (2, 2); output (0, 0) shows source (0, 3). */
    const int start[3] = {0, 0, 1}, size[3] = {4, 4, 2};
    float out[32];
    CropRecipe r = plain_recipe(start, size, out, NULL);
    r.rot90 = 1;
    render(&r);
    TEST_CLOSE(out[(1 * 4 + 2) * 2 + 0], windowed(hu_at(2, 2, 1)), 0, 1e-6, "rot90 (1,2)");
    TEST_CLOSE(out[(0 * 4 + 0) * 2 + 1], windowed(hu_at(0, 3, 2)), 0, 1e-6, "rot90 (0,0)");
    TEST_CLOSE(out[(3 * 4 + 1) * 2 + 0], windowed(hu_at(1, 0, 1)), 0, 1e-6, "rot90 (3,1)");
    /* Three turns: rot90(m, 3)[i, j] = m[3 - j, i]. */
    r.rot90 = 3;
    render(&r);
    TEST_CLOSE(out[(1 * 4 + 2) * 2 + 0], windowed(hu_at(1, 1, 1)), 0, 1e-6, "rot270 (1,2)");
    /* Flip X then a half turn is a flip of Y: output (x, y) shows source (x, 3 - y). */
    r.rot90 = 2;
    r.flip[0] = 1;
    render(&r);
    TEST_CLOSE(out[(2 * 4 + 0) * 2 + 1], windowed(hu_at(2, 3, 2)), 0, 1e-6, "flip x + rot180");
    /* Z flip alone: output z shows source 1 - z. */
    r.rot90 = 0;
    r.flip[0] = 0;
    r.flip[2] = 1;
    render(&r);
    TEST_CLOSE(out[(3 * 4 + 1) * 2 + 0], windowed(hu_at(3, 1, 2)), 0, 1e-6, "flip z");
    return 0;
}

static int test_outside_is_zero(void)
{
    make_volume();
    /* Starts one voxel before the volume along X and reaches past its end along Z. */
    const int start[3] = {-1, 0, 2}, size[3] = {2, 1, 4};
    float out[8];
    int32_t lab[8];
    CropRecipe r = plain_recipe(start, size, out, lab);
    render(&r);
    for (int z = 0; z < 4; z++) {
        TEST_CHECK(out[z] == 0.0f && lab[z] == 0, "x outside: voxel %d is %g / %d", z, out[z], lab[z]);
        int inside = 2 + z < VZ;
        double want = inside ? windowed(hu_at(0, 0, 2 + z)) : 0.0;
        TEST_CLOSE(out[4 + z], want, 0, 1e-6, "z partly outside");
        TEST_CHECK(lab[4 + z] == (inside ? 2 + z : 0), "label at z %d: %d", z, lab[4 + z]);
    }
    return 0;
}

static int test_intensity_by_hand(void)
{
    CropRecipe r;
    memset(&r, 0, sizeof r);
    r.scale = 1.1f;
    r.shift = -0.05f;
    r.gamma = 1.0f;
    TEST_CLOSE(sv_intensity(&r, 0.25f, 0), 0.25 * 1.1 - 0.05, 0, 1e-7, "scale then shift");
    /* Gamma 2 over the range [0.2, 0.2 + 0.5]: 0.45 -> 0.2 + 0.5 * 0.5^2. */
    r.scale = 1.0f;
    r.shift = 0.0f;
    r.gamma = 2.0f;
    r.gamma_lo = 0.2f;
    r.gamma_range = 0.5f;
    TEST_CLOSE(sv_intensity(&r, 0.45f, 0), 0.325, 0, 1e-7, "gamma");
    /* A flat crop keeps its value. */
    r.gamma_range = 0.0f;
    TEST_CHECK(sv_intensity(&r, 0.45f, 0) == 0.45f, "gamma over a flat crop changed the value");
    /* Noise: bytes 0x00, 0xff, 0x80, 0x7f sum to 510 (the mean) -> no change; all 0xff ->
     * +510 / sqrt(4 (256^2 - 1) / 12) sigma. */
    TEST_CLOSE(sv_byte_normal(0x7f80ff00u), 0.0, 0, 0, "byte normal at its mean");
    TEST_CLOSE(sv_byte_normal(0xffffffffu), 510.0 / sqrt(4.0 * 65535.0 / 12.0), 1e-6, 0, "byte normal max");
    TEST_CLOSE(sv_add_noise(0.5f, 0.1f, 0xffffffffu), 0.5 + 0.1 * 510.0 / sqrt(4.0 * 65535.0 / 12.0),
               1e-6, 0, "noise added");
    return 0;
}

int main(void)
{
    TEST_RUN(test_philox_known_answers);
    TEST_RUN(test_word_at_equals_stream);
    TEST_RUN(test_identity_is_plain_crop);
    TEST_RUN(test_quarter_turn_and_flips);
    TEST_RUN(test_outside_is_zero);
    TEST_RUN(test_intensity_by_hand);
    return test_finish();
}
