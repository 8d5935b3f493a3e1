/* Anatomical matcher: given a point in volume Q, the same anatomical location in volume K.
 *
 * A matcher is a table of functions so that a learned embedding matcher can fill the same
 * slots later: `describe` summarises one volume once (the loader caches the result per case),
 * `map_points` maps voxel coordinates of Q to voxel coordinates of K from the two summaries.
 *
 * Methods without learned weights:
 *  - "profile": body-mask normalised coordinates. The cranio-caudal axis is aligned by
 *    cross-correlating axial slice profiles in mm (body area, air fraction inside the body
 *    -- the lungs --, bone fraction) over shifts and a small range of scales, so partial
 *    fields of view land where they belong; X and Y are normalised by the body's extent
 *    around the matched level.
 *  - "bbox": the plain baseline, coordinates normalised by the body's 3D bounding box. */
#ifndef ALICE_MATCHER_H
#define ALICE_MATCHER_H

#include "volume.h"

typedef struct Matcher Matcher;
struct Matcher {
    const char *name;
    /* Summary of one volume (owned by the caller, released with free_description). */
    void *(*describe)(const Volume *v);
    void (*free_description)(void *description);
    /* Maps n points pq (continuous voxel coordinates of Q) to pk (voxel coordinates of K;
     * may fall outside K where K does not show that anatomy). */
    void (*map_points)(const void *q, const void *k, int n, const double (*pq)[3], double (*pk)[3]);
};

extern const Matcher matcher_profile;
extern const Matcher matcher_bbox;

/* "profile" | "bbox"; NULL for an unknown name. */
const Matcher *matcher_find(const char *name);
/* The names, "a|b", for error messages and the config registry. */
#define MATCHER_NAMES "profile|bbox"

/* Cranio-caudal alignment found by the profile matcher: z_K(mm) = scale * z_Q(mm) + shift_mm,
 * both measured from the centre of slice 0. Exposed for tests and the --eval report. */
void matcher_profile_alignment(const void *q, const void *k, double *scale, double *shift_mm);

#endif
