/* Writing dataset.h5 from several MPI ranks at once (parallel HDF5, collective I/O).
 *
 * Parallel HDF5 1.10 needs every rank in every metadata operation (creating a group, a
 * dataset, an attribute) with identical arguments, and collective transfers for chunked,
 * filtered datasets. So cases are written in rounds: in each round every rank brings at most
 * one preprocessed case, the descriptions are exchanged (MPI_Allgather), every rank creates
 * every case's datasets and attributes, and each case's voxels are written by its owner while
 * the other ranks join the transfer with an empty selection. Memory stays one case per rank. */
#ifndef ALICE_DATASET_WRITE_H
#define ALICE_DATASET_WRITE_H

#include <mpi.h>
#include <stdint.h>

#include "dataset.h"

typedef struct DatasetWriter DatasetWriter;

/* Collective. Creates path (truncating) with the root attributes. Returns NULL on every rank,
 * with the reason in err on rank 0, when the file cannot be created. */
DatasetWriter *dataset_writer_create(const char *path, MPI_Comm comm, const float spacing[3],
                                     int num_folds, char *err, size_t errlen);
/* Collective. meta/image/label: this rank's case of the round, or meta == NULL for none. */
void dataset_writer_round(DatasetWriter *w, const DatasetCase *meta, const int16_t *image,
                          const uint8_t *label);
/* Collective. Writes the index table of the cases written so far and closes the file. */
void dataset_writer_finish(DatasetWriter *w);
/* Collective. Closes without an index (the caller deletes the file). */
void dataset_writer_abort(DatasetWriter *w);
/* Cases written so far. */
int dataset_writer_count(const DatasetWriter *w);

/* Attribute and dataset names, shared by the reader. */
#define DS_GROUP_CASES "cases"
#define DS_GROUP_INDEX "index"
#define DS_IMAGE "image"
#define DS_LABEL "label"

#endif
