#include "eval/metrics.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "eval/edt.h"
#include "eval/surface_area.h"

/* Voxel counts and the bounding box of the union of both masks. */
typedef struct {
    long gt, pred, both;
    int lo[3], hi[3];   /* inclusive; lo > hi when both masks are empty */
} MaskExtent;

/* Over the slices z_lo <= z < z_hi: the rest of the volume counts as background. */
static MaskExtent mask_extent(const uint8_t *gt, const uint8_t *pred, const int dim[3], int label,
                              int z_lo, int z_hi)
{
    MaskExtent e = {0, 0, 0, {dim[0], dim[1], dim[2]}, {-1, -1, -1}};
    for (int x = 0; x < dim[0]; x++)
        for (int y = 0; y < dim[1]; y++) {
            const size_t row = ((size_t)x * (size_t)dim[1] + (size_t)y) * (size_t)dim[2];
            int first = -1, last = -1;
            for (int z = z_lo; z < z_hi; z++) {
                int g = gt ? gt[row + (size_t)z] == label : 0;
                int p = pred ? pred[row + (size_t)z] == label : 0;
                e.gt += g;
                e.pred += p;
                e.both += g & p;
                if (g | p) { if (first < 0) first = z; last = z; }
            }
            if (first < 0) continue;
            if (x < e.lo[0]) e.lo[0] = x;
            if (x > e.hi[0]) e.hi[0] = x;
            if (y < e.lo[1]) e.lo[1] = y;
            if (y > e.hi[1]) e.hi[1] = y;
            if (first < e.lo[2]) e.lo[2] = first;
            if (last > e.hi[2]) e.hi[2] = last;
        }
    return e;
}

/* Neighbour codes on the corner grid of the box: corner (i, j, k) of a grid one larger than
 * the box in every axis sees box voxels (i-1..i, j-1..j, k-1..k); outside the box is empty
 * (the box holds every voxel of the label), as DeepMind's zero padding makes it. */
static void neighbour_codes(const uint8_t *labels, const int dim[3], const MaskExtent *box, int label,
                            const int grid[3], uint8_t *code)
{
    if (!labels) {   /* an absent volume is an empty mask */
        memset(code, 0, (size_t)grid[0] * (size_t)grid[1] * (size_t)grid[2]);
        return;
    }
    for (int i = 0; i < grid[0]; i++)
        for (int j = 0; j < grid[1]; j++)
            for (int k = 0; k < grid[2]; k++) {
                int c = 0;
                for (int a = 0; a < 2; a++) {
                    int x = box->lo[0] + i + a - 1;
                    if (x < box->lo[0] || x > box->hi[0]) continue;
                    for (int b = 0; b < 2; b++) {
                        int y = box->lo[1] + j + b - 1;
                        if (y < box->lo[1] || y > box->hi[1]) continue;
                        const size_t row = ((size_t)x * (size_t)dim[1] + (size_t)y) * (size_t)dim[2];
                        for (int d = 0; d < 2; d++) {
                            int z = box->lo[2] + k + d - 1;
                            if (z < box->lo[2] || z > box->hi[2]) continue;
                            if (labels[row + (size_t)z] == label) c |= neighbour_code_bit(a, b, d);
                        }
                    }
                }
                code[((size_t)i * (size_t)grid[1] + (size_t)j) * (size_t)grid[2] + (size_t)k] = (uint8_t)c;
            }
}

static int is_surface(uint8_t code) { return code != 0 && code != NEIGHBOUR_CODES - 1; }

/* Area of the surface of `code` that lies within tolerance of the other mask's surface
 * (squared distances other_d2; NULL: just the total area). */
static double surface_area_within(const uint8_t *code, size_t n, const double area[NEIGHBOUR_CODES],
                                  const double *other_d2, double tolerance_mm, double *total)
{
    double within = 0, all = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_surface(code[i])) continue;
        double a = area[code[i]];
        all += a;
        /* sqrt, then compare, as the reference does (distances <= tolerance_mm) */
        if (other_d2 && sqrt(other_d2[i]) <= tolerance_mm) within += a;
    }
    *total = all;
    return within;
}

OrganScore organ_score(const uint8_t *gt, const uint8_t *pred, const int dim[3], const double spacing[3],
                       int label, double tolerance_mm)
{
    return organ_score_slices(gt, pred, dim, spacing, label, tolerance_mm, 0, dim[2]);
}

OrganScore organ_score_slices(const uint8_t *gt, const uint8_t *pred, const int dim[3],
                              const double spacing[3], int label, double tolerance_mm, int z_lo,
                              int z_hi)
{
    OrganScore s = {0, 0, 0, 0, 0, 0};
    /* The box lies inside the slice range, and neighbour_codes reads inside the box only. */
    MaskExtent box = mask_extent(gt, pred, dim, label, z_lo, z_hi);
    s.gt_voxels = box.gt;
    s.pred_voxels = box.pred;
    if (box.gt == 0 && box.pred == 0) { s.dsc = 1; s.nsd = 1; return s; }
    s.dsc = 2.0 * (double)box.both / (double)(box.gt + box.pred);
    const int grid[3] = {box.hi[0] - box.lo[0] + 2, box.hi[1] - box.lo[1] + 2, box.hi[2] - box.lo[2] + 2};
    const size_t n = (size_t)grid[0] * (size_t)grid[1] * (size_t)grid[2];
    double area[NEIGHBOUR_CODES];
    surface_area_table(spacing, area);
    uint8_t *code_gt = xmalloc(n), *code_pred = xmalloc(n), *border = xmalloc(n);
    neighbour_codes(gt, dim, &box, label, grid, code_gt);
    neighbour_codes(pred, dim, &box, label, grid, code_pred);
    if (box.gt == 0 || box.pred == 0) {
        /* one mask empty: no surface of it to be near, so NSD = 0 (and DSC = 0 above) */
        surface_area_within(box.gt ? code_gt : code_pred, n, area, NULL, 0, box.gt ? &s.gt_area : &s.pred_area);
        free(code_gt); free(code_pred); free(border);
        return s;
    }
    double *d2_gt = xmalloc(sizeof(double) * n), *d2_pred = xmalloc(sizeof(double) * n);
    for (size_t i = 0; i < n; i++) border[i] = (uint8_t)is_surface(code_gt[i]);
    edt_squared(border, grid, spacing, d2_gt);
    for (size_t i = 0; i < n; i++) border[i] = (uint8_t)is_surface(code_pred[i]);
    edt_squared(border, grid, spacing, d2_pred);
    double gt_near = surface_area_within(code_gt, n, area, d2_pred, tolerance_mm, &s.gt_area);
    double pred_near = surface_area_within(code_pred, n, area, d2_gt, tolerance_mm, &s.pred_area);
    double total = s.gt_area + s.pred_area;
    s.nsd = total > 0 ? (gt_near + pred_near) / total : 0.0;
    free(d2_gt); free(d2_pred);
    free(code_gt); free(code_pred); free(border);
    return s;
}

int eval_protocol_from_name(const char *name)
{
    if (!strcmp(name, "plain")) return EVAL_PROTOCOL_PLAIN;
    if (!strcmp(name, "flare22")) return EVAL_PROTOCOL_FLARE22;
    return -1;
}

/* First and last axial slice holding `label` in the truth; 0 when it holds none. */
static int labelled_slice_range(const uint8_t *gt, const int dim[3], int label, int *first,
                                int *last)
{
    *first = dim[2];
    *last = -1;
    const size_t rows = (size_t)dim[0] * (size_t)dim[1];
    for (size_t r = 0; r < rows; r++) {
        const uint8_t *row = gt + r * (size_t)dim[2];
        for (int z = 0; z < dim[2]; z++)
            if (row[z] == label) {
                if (z < *first) *first = z;
                if (z > *last) *last = z;
            }
    }
    return *last >= 0;
}

void case_scores(const uint8_t *gt, const uint8_t *pred, const int dim[3], const double spacing[3],
                 const LabelSet *set, EvalProtocol protocol, double *dsc, double *nsd)
{
    /* Organs differ a lot in size (liver vs adrenal), so hand them out one at a time. */
    #pragma omp parallel for schedule(dynamic, 1)
    for (int o = 0; o < set->count; o++) {
        const OrganLabel *organ = &set->organs[o];
        int z_lo = 0, z_hi = dim[2], first, last;
        /* FLARE 2022: the empty-mask conventions on the whole volume, then the slice range */
        if (protocol == EVAL_PROTOCOL_FLARE22 && organ->labelled_slices &&
            labelled_slice_range(gt, dim, organ->id, &first, &last)) {
            z_lo = first;
            z_hi = last;   /* exclusive, as the script's slice: the last labelled one left out */
            /* a truth one slice thick: no slice left (the script's Dice is 0/0, its surface
             * code raises an error on the empty crop): unscoreable, not a score */
            if (z_lo == z_hi) {
                dsc[o] = nsd[o] = NAN;
                continue;
            }
        }
        OrganScore s = organ_score_slices(gt, pred, dim, spacing, organ->id, organ->tolerance_mm,
                                          z_lo, z_hi);
        dsc[o] = s.dsc;
        nsd[o] = s.nsd;
    }
}

double mask_surface_area(const uint8_t *labels, const int dim[3], const double spacing[3], int label)
{
    OrganScore s = organ_score(labels, NULL, dim, spacing, label, 0.0);
    return s.gt_area;
}

/* Mean of the n values x[0], x[stride], ... that are not NaN; NaN when none is. */
static double mean_of_scored(const double *x, int n, size_t stride, long *count)
{
    double sum = 0.0;
    long k = 0;
    for (int i = 0; i < n; i++) {
        const double v = x[(size_t)i * stride];
        if (isnan(v)) continue;
        sum += v;
        k++;
    }
    if (count) *count += k;
    return k ? sum / (double)k : NAN;
}

double metrics_organ_averaged_mean(const double *table, int cases, int organs,
                                   double *organ_means, long *scored)
{
    double *means = organ_means ? organ_means
                                : xmalloc(sizeof(double) * (size_t)(organs > 0 ? organs : 1));
    if (scored) *scored = 0;
    for (int o = 0; o < organs; o++)
        means[o] = mean_of_scored(table + o, cases, (size_t)organs, scored);
    const double mean = mean_of_scored(means, organs, 1, NULL);
    if (!organ_means) free(means);
    return mean;
}
