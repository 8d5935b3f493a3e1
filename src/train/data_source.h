/* Where training cases come from: a packed dataset.h5 (`data = path`) or, with
 * `data = synthetic`, phantoms generated in memory (the embedded default, no files needed). */
#ifndef ALICE_DATA_SOURCE_H
#define ALICE_DATA_SOURCE_H

#include "core/config.h"
#include "loader.h"

LoaderSource data_source_open(const Config *cfg);
/* The voxel spacing (mm) of cfg->data's packed data set (0,0,0 for synthetic data: phantoms
 * of several spacings) and its folds (num_folds of the packing; cfg->num_folds for synthetic
 * data). */
void data_source_describe(const Config *cfg, double spacing[3], int *num_folds);
/* Largest grid per axis over the cases of a source from data_source_open (for checks made
 * before any compute, e.g. a pre-training crop larger than every volume). */
void data_source_largest_dims(const LoaderSource *src, int max_dim[3]);

#endif
