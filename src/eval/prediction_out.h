/* The last step of inference: a label volume on a case's packed grid is mapped back to the
 * case's ORIGINAL grid and affine (nearest neighbour through io/geometry) and written as a
 * uint8 NIfTI that opens aligned with the source image. */
#ifndef ALICE_PREDICTION_OUT_H
#define ALICE_PREDICTION_OUT_H

#include <stdint.h>

#include "dataset.h"

void prediction_write_original(const DatasetCase *c, const uint8_t *packed, const int packed_dim[3],
                               const double packed_affine[4][4], const char *path);

#endif
