/* Segmentation metrics per organ, as the FLARE 2022 evaluation computes them:
 *  - DSC = 2 |G & P| / (|G| + |P|) over voxels;
 *  - NSD (normalised surface Dice, Nikolov et al. 2021, DeepMind surface-distance
 *    `compute_surface_distances` + `compute_surface_dice_at_tolerance`): surface elements of
 *    each mask on the 2x2x2 corner grid weighted by their marching-cubes area
 *    (eval/surface_area.h); NSD = (area of G's surface within tol of P's surface + area of P's
 *    surface within tol of G's) / (area of G's surface + area of P's), distances from an exact
 *    anisotropic Euclidean distance transform (eval/edt.h).
 * Empty masks: both empty gives DSC = NSD = 1 (FLARE convention: nothing to find, nothing
 * found); exactly one empty gives 0 for both.
 * Protocols (config key eval_protocol): PLAIN scores every organ over the whole volume.
 * FLARE22 follows the FLARE 2022 evaluation script further: the organs it marks
 * (OrganLabel.labelled_slices: aorta, IVC, esophagus) present in the truth are scored, DSC and
 * NSD, on the axial slices z_lower <= z < z_upper only, z_lower and z_upper the truth's first
 * and last labelled slice (the script's gt[:, :, z_lower:z_upper], which leaves the last
 * labelled slice out); the empty-mask conventions are decided on the whole volume first, as
 * there. A truth one slice thick leaves no slice: DSC = NSD = NaN, the script's 0 / 0 (its
 * tables' means skip it, as alice eval's printed means and analysis/tables.py do), never a
 * score the prediction did not earn.
 * Volumes are uint8 label maps in C order [X, Y, Z] (Z fastest); spacing in mm per axis. */
#ifndef ALICE_METRICS_H
#define ALICE_METRICS_H

#include <stdint.h>

#include "eval/labels.h"

typedef struct {
    double dsc;
    double nsd;
    long gt_voxels;
    long pred_voxels;
    double gt_area;        /* surface area of the truth, mm^2 (0 when empty) */
    double pred_area;
} OrganScore;

/* Scores organ `label` of the prediction against the truth. Only the bounding box of the
 * union of both masks (plus the corner row the 2x2x2 code needs) is processed: every surface
 * element lies inside it, so the distances are exact. */
OrganScore organ_score(const uint8_t *gt, const uint8_t *pred, const int dim[3], const double spacing[3],
                       int label, double tolerance_mm);

/* organ_score over the axial slices z_lo <= z < z_hi only (voxels outside count as
 * background, as the cropped arrays of the FLARE script do with the surface code's padding). */
OrganScore organ_score_slices(const uint8_t *gt, const uint8_t *pred, const int dim[3],
                              const double spacing[3], int label, double tolerance_mm, int z_lo,
                              int z_hi);

typedef enum { EVAL_PROTOCOL_PLAIN, EVAL_PROTOCOL_FLARE22 } EvalProtocol;
/* The protocol named by the config key eval_protocol (plain | flare22); -1 for another name. */
int eval_protocol_from_name(const char *name);

/* Every organ of a label set under a protocol (OpenMP over organs): dsc[o], nsd[o] in the
 * set's order. */
void case_scores(const uint8_t *gt, const uint8_t *pred, const int dim[3], const double spacing[3],
                 const LabelSet *set, EvalProtocol protocol, double *dsc, double *nsd);

/* The headline score of a [cases, organs] table (row = case) that alice eval prints, alice info
 * shows and analysis/tables.py tabulates: per organ the mean over cases, then the mean over
 * organs, each of the scored cells (NaN: flare22's unscoreable ones left out). organ_means
 * (may be NULL) receives each organ's mean, NaN for an organ without a scored cell; *scored
 * (may be NULL) the count of scored cells. NaN when no cell is scored. */
double metrics_organ_averaged_mean(const double *table, int cases, int organs,
                                   double *organ_means, long *scored);

/* Total surface-element area (mm^2) of the voxels equal to `label`. */
double mask_surface_area(const uint8_t *labels, const int dim[3], const double spacing[3], int label);

#endif
