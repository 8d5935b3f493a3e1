/* The last step of inference: a prediction on a case's packed grid -- uint8 labels, and
 * optionally the class probabilities -- is mapped back to the case's ORIGINAL grid and affine
 * and written as NIfTI that opens aligned with the source image. Both payloads go through one
 * index map (io/geometry: nearest neighbour through the two affines), computed once per case,
 * so every original voxel takes its label and its probabilities from the same packed voxel
 * and argmax(probabilities) == label holds on the original grid too. */
#ifndef ALICE_PREDICTION_OUT_H
#define ALICE_PREDICTION_OUT_H

#include <stdint.h>

#include "dataset.h"
#include "nifti_io.h"

/* <out>/<case><PREDICTION_PROBS_SUFFIX>.nii.gz holds a case's probabilities. */
#define PREDICTION_PROBS_SUFFIX "_probs"
/* Room for a prediction's source: "alice infer: <checkpoint path> (step <n>)". Descriptions
 * alice writes start with PREDICTION_SOURCE_PREFIX; others name no source. */
enum { PREDICTION_SOURCE_LEN = 4200 };
#define PREDICTION_SOURCE_PREFIX "alice "
/* How alice infer's sources begin (other alice commands, alice phantom, name a case each). */
#define PREDICTION_SOURCE_INFER PREDICTION_SOURCE_PREFIX "infer: "

/* labels: packed grid uint8 [X, Y, Z], written to label_path (uint8, orig_dim).
 * probs: NULL, or the packed grid's class probabilities class-major [K, X, Y, Z] (K =
 * classes), written to probs_path as a 4-D NIfTI (orig_dim x K; see the .c file for the
 * layout) stored as probs_storage says (float32, or uint8 with scl_slope 1/255: io/nifti_io.h).
 * Original voxels outside the packed box (air removed by the body crop) get label 0 and
 * probability 1 for class 0, 0 for the others. source (what made the prediction, at most
 * PREDICTION_SOURCE_LEN characters) goes into both files' descriptions
 * (nifti_read_description), which alice eval records per case. */
void prediction_write_original(const DatasetCase *c, const uint8_t *labels, const float *probs,
                               int classes, const int packed_dim[3],
                               const double packed_affine[4][4], const char *label_path,
                               const char *probs_path, NiftiFrameStorage probs_storage,
                               const char *source);

#endif
