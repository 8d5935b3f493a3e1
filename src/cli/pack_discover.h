/* Finding the image/label pairs `alice pack` reads: FLARE 2022 naming (NAME_0000.nii.gz with
 * NAME.nii.gz beside it or in a labelsTr/ sibling), BTCV naming (imgXXXX.nii.gz with
 * labelXXXX.nii.gz), or a list file of "image [label]" lines. */
#ifndef ALICE_PACK_DISCOVER_H
#define ALICE_PACK_DISCOVER_H

#include "dataset.h"

typedef struct {
    char name[DATASET_NAME_LEN];
    char image[DATASET_PATH_LEN];
    char label[DATASET_PATH_LEN];   /* "" when there is none */
} PackInput;

/* Both end the job with a clear message when nothing usable is found; results sorted by
 * name, names unique. Caller frees *out. */
int pack_discover_dir(const char *dir, PackInput **out);
int pack_discover_list(const char *list_file, PackInput **out);

#endif
