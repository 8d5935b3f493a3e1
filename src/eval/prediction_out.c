#include "eval/prediction_out.h"

#include <nifti1.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/check.h"
#include "geometry.h"
#include "nifti_io.h"

/* The class of the voxels the body crop removed: background (as geometry_gather_labels). */
#define PREDICTION_OUTSIDE_CLASS 0

typedef struct {
    const float *probs;      /* packed [K, packed voxels] */
    size_t packed_voxels;
    const int64_t *index;    /* original voxel -> packed voxel or GEOMETRY_OUTSIDE */
    size_t orig_voxels;
} ProbsFrames;

/* Frame t of the probability file: class t's probabilities on the original grid. */
static void probs_frame(void *ctx, int t, float *frame)
{
    const ProbsFrames *p = ctx;
    const float *src = p->probs + (size_t)t * p->packed_voxels;
    const float outside = t == PREDICTION_OUTSIDE_CLASS ? 1.0f : 0.0f;
    for (size_t i = 0; i < p->orig_voxels; i++)
        frame[i] = p->index[i] == GEOMETRY_OUTSIDE ? outside : src[p->index[i]];
}

void prediction_write_original(const DatasetCase *c, const uint8_t *labels, const float *probs,
                               int classes, const int packed_dim[3],
                               const double packed_affine[4][4], const char *label_path,
                               const char *probs_path, NiftiFrameStorage probs_storage,
                               const char *source)
{
    const size_t n = (size_t)c->orig_dim[0] * c->orig_dim[1] * c->orig_dim[2];
    int64_t *index = xmalloc(n * sizeof *index);
    int edge_high[3];
    geometry_source_edge_faces(c->orig_dim, c->orig_affine, c->spacing, c->crop_hi, edge_high);
    geometry_original_index_map(packed_dim, packed_affine, c->orig_dim, c->orig_affine, edge_high,
                                index);
    uint8_t *orig = xmalloc(n);
    geometry_gather_labels(index, n, labels, orig);
    /* the source's sform/qform codes: readers place both files alike, even a source with
     * neither (pixdim alone), which each reader orients its own way */
    nifti_write_volume_codes(label_path, orig, NIFTI_TYPE_UINT8, c->orig_dim, c->orig_affine,
                             c->orig_xform_codes, c->has_orig_qform ? c->orig_qform : NULL,
                             source);
    free(orig);
    if (probs) {
        ALICE_ASSERT(probs_path && classes >= 1, "probabilities of %d classes without a path", classes);
        /* Layout: 4-D (X, Y, Z, K), intent none, one frame per class, rather than NIfTI's 5-D
         * vector convention (dim[4] = 1, dim[5] = K, NIFTI_INTENT_VECTOR): nibabel then reads
         * array[x, y, z, k] with no singleton axis (argmax(axis=-1) is the label file), and
         * viewers (ITK-SNAP, FSLeyes, 3D Slicer) show the classes as frames to step through,
         * where a 5-D vector image is shown by few. */
        ProbsFrames p = {probs, (size_t)packed_dim[0] * packed_dim[1] * packed_dim[2], index, n};
        char description[PREDICTION_SOURCE_LEN + 64];
        snprintf(description, sizeof description, "softmax of blended logits, %d classes; %s",
                 classes, source);
        nifti_write_frames(probs_path, c->orig_dim, classes, c->orig_affine, c->orig_xform_codes,
                           c->has_orig_qform ? c->orig_qform : NULL, description, probs_storage,
                           probs_frame, &p);
    }
    free(index);
}
