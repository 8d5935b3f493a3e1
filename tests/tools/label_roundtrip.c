/* Maps every labelled case's PACKED label of a data set back to its original grid through the
 * inference output path (prediction_write_original) and writes <out_dir>/<case>.nii.gz.
 * usage: label_roundtrip dataset.h5 OUT_DIR */
#include <mpi.h>
#include <stdio.h>

#include "core/check.h"
#include "dataset.h"
#include "eval/prediction_out.h"

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    if (argc != 3) { fprintf(stderr, "usage: label_roundtrip dataset.h5 OUT_DIR\n"); return 2; }
    Dataset *ds = dataset_open(argv[1]);
    int written = 0;
    for (int i = 0; i < dataset_num_cases(ds); i++) {
        const DatasetCase *c = dataset_case(ds, i);
        if (!c->has_label) continue;
        Volume v;
        dataset_read_case(ds, i, &v);
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.nii.gz", argv[2], c->name);
        prediction_write_original(c, v.label, NULL, 0, v.dim, (const double (*)[4])v.affine, path, NULL,
                                  NIFTI_FRAMES_FLOAT32, "label_roundtrip: the packed label");
        volume_free(&v);
        written++;
    }
    printf("label_roundtrip: %d cases -> %s\n", written, argv[2]);
    dataset_close(ds);
    MPI_Finalize();
    return 0;
}
