/* Maps every labelled case's PACKED label of a data set back to its original grid through the
 * inference output path (prediction_write_original) and writes <out_dir>/<case>.nii.gz; with
 * --probs also the label one-hot as probabilities of 2 classes (organ or not),
 * <out_dir>/<case>_probs.nii.gz, through the same path's 4-D writer.
 * usage: label_roundtrip dataset.h5 OUT_DIR [--probs] */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "dataset.h"
#include "eval/prediction_out.h"

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    const int probs = argc == 4 && !strcmp(argv[3], "--probs");
    if (argc != 3 && !probs) {
        fprintf(stderr, "usage: label_roundtrip dataset.h5 OUT_DIR [--probs]\n");
        return 2;
    }
    Dataset *ds = dataset_open(argv[1]);
    int written = 0;
    for (int i = 0; i < dataset_num_cases(ds); i++) {
        const DatasetCase *c = dataset_case(ds, i);
        if (!c->has_label) continue;
        Volume v;
        dataset_read_case(ds, i, &v);
        char path[4096], probs_path[4200];
        snprintf(path, sizeof path, "%s/%s.nii.gz", argv[2], c->name);
        snprintf(probs_path, sizeof probs_path, "%s/%s_probs.nii.gz", argv[2], c->name);
        const size_t n = (size_t)v.dim[0] * v.dim[1] * v.dim[2];
        float *onehot = probs ? xmalloc(2 * n * sizeof(float)) : NULL;   /* [class, voxel] */
        for (size_t j = 0; probs && j < n; j++) {
            onehot[j] = v.label[j] ? 0.0f : 1.0f;
            onehot[n + j] = v.label[j] ? 1.0f : 0.0f;
        }
        prediction_write_original(c, v.label, onehot, probs ? 2 : 0, v.dim,
                                  (const double (*)[4])v.affine, path, probs ? probs_path : NULL,
                                  NIFTI_FRAMES_FLOAT32, "label_roundtrip: the packed label");
        free(onehot);
        volume_free(&v);
        written++;
    }
    printf("label_roundtrip: %d cases -> %s\n", written, argv[2]);
    dataset_close(ds);
    MPI_Finalize();
    return 0;
}
