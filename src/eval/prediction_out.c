#include "eval/prediction_out.h"

#include <nifti1.h>
#include <stdlib.h>

#include "core/check.h"
#include "geometry.h"
#include "nifti_io.h"

void prediction_write_original(const DatasetCase *c, const uint8_t *packed, const int packed_dim[3],
                               const double packed_affine[4][4], const char *path)
{
    size_t n = (size_t)c->orig_dim[0] * c->orig_dim[1] * c->orig_dim[2];
    uint8_t *orig = xmalloc(n);
    geometry_label_to_original(packed, packed_dim, packed_affine, c->orig_dim, c->orig_affine, orig);
    nifti_write_volume(path, orig, NIFTI_TYPE_UINT8, c->orig_dim, c->orig_affine);
    free(orig);
}
