/* Element strides of a 5-d volume tensor {B, C, X, Y, Z} for cuDNN's Nd tensor descriptors,
 * which take int dims and strides: the batch stride C X Y Z passes 2^31 at, e.g., 48 channels
 * of a 512 x 512 x 200 CT, where int arithmetic would wrap silently into a wrong descriptor
 * (cuDNN then reads other memory, or rejects it with a status that names no shape). Plain C,
 * so cuda/cuda_conv.cu and tests/unit/test_volume_strides.c use the same arithmetic. */
#ifndef ALICE_VOLUME_STRIDES_H
#define ALICE_VOLUME_STRIDES_H

#include <limits.h>

/* Fills strides (NCDHW in memory, or NDHWC with channels_last; dims stay {B, C, X, Y, Z}) and
 * returns 1; returns 0, strides untouched, when a dimension is below 1 or a stride or the
 * batch's extent B C X Y Z does not fit in an int. */
static inline int volume_strides(int B, int C, int X, int Y, int Z, int channels_last,
                                 int strides[5])
{
    if (B < 1 || C < 1 || X < 1 || Y < 1 || Z < 1) return 0;
    const long long yz = (long long)Y * Z, xyz = X * yz, sample = C * xyz;
    if (sample * B > INT_MAX) return 0;
    if (channels_last) {
        const int s[5] = {(int)sample, 1, (int)(yz * C), Z * C, C};
        for (int i = 0; i < 5; i++) strides[i] = s[i];
    } else {
        const int s[5] = {(int)sample, (int)xyz, (int)yz, Z, 1};
        for (int i = 0; i < 5; i++) strides[i] = s[i];
    }
    return 1;
}

#endif
