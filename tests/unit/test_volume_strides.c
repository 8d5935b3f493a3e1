/* The strides cuda/cuda_conv.cu hands cuDNN's int tensor descriptors (src/ops/volume_strides.h),
 * against the element offsets they must give, computed independently here in 64-bit:
 *  - NCDHW: element (b, c, x, y, z) at ((((b C + c) X + x) Y + y) Z + z);
 *  - NDHWC (channels-last): at ((((b X + x) Y + y) Z + z) C + c);
 *  - a tensor of 2^31 - 1 elements fits; one more element (48 channels of a 512 x 512 x 200
 *    CT: 2516582400) or a batch that carries it past the limit is refused, where int
 *    arithmetic would have wrapped to a negative or small stride; dimensions below 1 too. */
#include <limits.h>

#include "ops/volume_strides.h"
#include "test.h"

static long long offset(const int s[5], int b, int c, int x, int y, int z)
{
    return (long long)b * s[0] + (long long)c * s[1] + (long long)x * s[2] +
           (long long)y * s[3] + (long long)z * s[4];
}

static int test_offsets(void)
{
    const int B = 2, C = 3, X = 4, Y = 5, Z = 6;
    int ncdhw[5], ndhwc[5];
    TEST_CHECK(volume_strides(B, C, X, Y, Z, 0, ncdhw), "a small tensor refused (NCDHW)");
    TEST_CHECK(volume_strides(B, C, X, Y, Z, 1, ndhwc), "a small tensor refused (NDHWC)");
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
            for (int x = 0; x < X; x++)
                for (int y = 0; y < Y; y++)
                    for (int z = 0; z < Z; z++) {
                        const long long want_ncdhw = (((b * C + c) * X + x) * Y + y) * Z + z;
                        const long long want_ndhwc = (((b * X + x) * Y + y) * Z + z) * C + c;
                        TEST_CHECK(offset(ncdhw, b, c, x, y, z) == want_ncdhw,
                                   "NCDHW offset of (%d,%d,%d,%d,%d): %lld, expected %lld", b, c,
                                   x, y, z, offset(ncdhw, b, c, x, y, z), want_ncdhw);
                        TEST_CHECK(offset(ndhwc, b, c, x, y, z) == want_ndhwc,
                                   "NDHWC offset of (%d,%d,%d,%d,%d): %lld, expected %lld", b, c,
                                   x, y, z, offset(ndhwc, b, c, x, y, z), want_ndhwc);
                    }
    return 0;
}

static int test_limits(void)
{
    int s[5] = {7, 7, 7, 7, 7};
    /* 2^31 - 1 is prime: a tensor of exactly that many elements is 1 x 1 x 1 x 1 x INT_MAX */
    TEST_CHECK(volume_strides(1, 1, 1, 1, INT_MAX, 0, s) && s[0] == INT_MAX,
               "a tensor of 2^31 - 1 elements refused or wrong (batch stride %d)", s[0]);
    int t[5] = {7, 7, 7, 7, 7};
    TEST_CHECK(!volume_strides(1, 48, 512, 512, 200, 0, t), "48 x 512 x 512 x 200 accepted");
    TEST_CHECK(!volume_strides(1, 48, 512, 512, 200, 1, t), "the same channels-last accepted");
    TEST_CHECK(t[0] == 7 && t[4] == 7, "a refused shape wrote its strides");
    /* one sample fits (32 x 512 x 512 x 200 = 1677721600), two do not */
    TEST_CHECK(volume_strides(1, 32, 512, 512, 200, 0, t) && t[0] == 1677721600,
               "one sample of 1677721600 elements: refused or batch stride %d", t[0]);
    TEST_CHECK(!volume_strides(2, 32, 512, 512, 200, 0, t), "a batch of 2^31.6 elements accepted");
    TEST_CHECK(!volume_strides(0, 1, 1, 1, 1, 0, t) && !volume_strides(1, 1, 1, -1, 1, 0, t),
               "a dimension below 1 accepted");
    return 0;
}

int main(void)
{
    TEST_RUN(test_offsets);
    TEST_RUN(test_limits);
    return test_finish();
}
