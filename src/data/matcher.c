#include "data/matcher.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "data/crop.h"

/* Profiles are resampled to one bin per BIN_MM along Z so volumes of any slice spacing
 * compare directly. */
#define BIN_MM 2.0
/* HU above which a body voxel counts as bone (cortical and dense trabecular bone; contrast
 * enhanced vessels and kidneys stay mostly below). */
#define BONE_HU 300
/* The shorter of the two scans must overlap the other by this fraction at least: a partial
 * field of view lies inside the full one, and tiny overlaps correlate by chance. */
#define MIN_OVERLAP_FRACTION 0.7
/* Cranio-caudal scales tried (patients differ in height) and the penalty per unit of
 * |scale - 1| that makes an uninformative profile fall back to scale 1. */
static const double z_scales[] = {0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15};
#define SCALE_PENALTY 0.2
/* Profiles are smoothed along Z before correlation: the ribs (and vertebrae) repeat every
 * 25-30 mm, and unsmoothed they let the correlation lock onto the neighbouring rib. A
 * Gaussian of this sigma keeps the large-scale shape (lung bases, pelvis) and damps that
 * period to a few percent. */
#define PROFILE_SMOOTH_MM 12.0
/* Half height of the slab whose body extent normalises X and Y. */
#define XY_WINDOW_MM 15.0

enum { FEATURE_AREA, FEATURE_AIR, FEATURE_BONE, FEATURE_COUNT };

typedef struct {
    int dim[3];
    float spacing[3];
    int *x0, *x1, *y0, *y1;       /* per slice body extent; x0 < 0 when the slice has no body */
    int nbins;
    float *feature[FEATURE_COUNT]; /* per BIN_MM bin */
    int box_lo[3], box_hi[3];      /* 3D body bounding box (the baseline) */
} ProfileDescription;

/* Gaussian smoothing in place, the kernel renormalised where it meets the ends. */
static void smooth_profile(float *f, int n)
{
    const double sigma = PROFILE_SMOOTH_MM / BIN_MM;
    const int radius = (int)ceil(3 * sigma);
    float *out = xmalloc((size_t)n * sizeof *out);
    for (int i = 0; i < n; i++) {
        double sum = 0, weight = 0;
        for (int j = i - radius; j <= i + radius; j++) {
            if (j < 0 || j >= n) continue;
            double w = exp(-0.5 * (j - i) * (j - i) / (sigma * sigma));
            sum += w * f[j];
            weight += w;
        }
        out[i] = (float)(sum / weight);
    }
    memcpy(f, out, (size_t)n * sizeof *f);
    free(out);
}

static void *describe(const Volume *v)
{
    const int X = v->dim[0], Y = v->dim[1], Z = v->dim[2];
    ProfileDescription *d = xcalloc(1, sizeof *d);
    memcpy(d->dim, v->dim, sizeof d->dim);
    memcpy(d->spacing, v->spacing, sizeof d->spacing);
    d->x0 = xmalloc((size_t)Z * sizeof(int));
    d->x1 = xmalloc((size_t)Z * sizeof(int));
    d->y0 = xmalloc((size_t)Z * sizeof(int));
    d->y1 = xmalloc((size_t)Z * sizeof(int));
    double *area = xcalloc((size_t)Z, sizeof(double));
    double *air = xcalloc((size_t)Z, sizeof(double));
    double *bone = xcalloc((size_t)Z, sizeof(double));
    int *first = xmalloc((size_t)Z * sizeof(int)), *last = xmalloc((size_t)Z * sizeof(int));
    for (int z = 0; z < Z; z++) d->x0[z] = d->x1[z] = d->y0[z] = d->y1[z] = -1;

    /* The body of a slice is filled along Y (from the first to the last body voxel of each
     * X row), so air inside it -- lungs, bowel gas -- counts as inside. */
    for (int x = 0; x < X; x++) {
        for (int z = 0; z < Z; z++) first[z] = last[z] = -1;
        for (int y = 0; y < Y; y++) {
            const int16_t *col = v->image + volume_index(v->dim, x, y, 0);
            for (int z = 0; z < Z; z++) {
                if (col[z] <= BODY_HU_THRESHOLD) continue;
                if (first[z] < 0) first[z] = y;
                last[z] = y;
                bone[z] += col[z] > BONE_HU;
            }
        }
        for (int z = 0; z < Z; z++) {
            if (first[z] < 0) continue;
            area[z] += last[z] - first[z] + 1;
            if (d->x0[z] < 0) d->x0[z] = x;
            d->x1[z] = x;
            if (d->y0[z] < 0 || first[z] < d->y0[z]) d->y0[z] = first[z];
            if (last[z] > d->y1[z]) d->y1[z] = last[z];
        }
        for (int y = 0; y < Y; y++) {
            const int16_t *col = v->image + volume_index(v->dim, x, y, 0);
            for (int z = 0; z < Z; z++)
                air[z] += first[z] >= 0 && y > first[z] && y < last[z] && col[z] <= BODY_HU_THRESHOLD;
        }
    }

    for (int a = 0; a < 3; a++) { d->box_lo[a] = 0; d->box_hi[a] = v->dim[a] - 1; }
    int any = 0;
    for (int z = 0; z < Z; z++) {
        if (d->x0[z] < 0) continue;
        if (!any) {
            d->box_lo[0] = d->x0[z]; d->box_hi[0] = d->x1[z];
            d->box_lo[1] = d->y0[z]; d->box_hi[1] = d->y1[z];
            d->box_lo[2] = z;
            any = 1;
        }
        if (d->x0[z] < d->box_lo[0]) d->box_lo[0] = d->x0[z];
        if (d->x1[z] > d->box_hi[0]) d->box_hi[0] = d->x1[z];
        if (d->y0[z] < d->box_lo[1]) d->box_lo[1] = d->y0[z];
        if (d->y1[z] > d->box_hi[1]) d->box_hi[1] = d->y1[z];
        d->box_hi[2] = z;
    }

    /* Features in physical units: area in cm^2, air and bone as fractions of the body. */
    double pixel_cm2 = (double)v->spacing[0] * v->spacing[1] / 100.0;
    double length_mm = (double)(Z - 1) * v->spacing[2];
    d->nbins = (int)floor(length_mm / BIN_MM) + 1;
    for (int f = 0; f < FEATURE_COUNT; f++) d->feature[f] = xmalloc((size_t)d->nbins * sizeof(float));
    for (int b = 0; b < d->nbins; b++) {
        double s = b * BIN_MM / v->spacing[2];
        int s0 = (int)floor(s);
        if (s0 > Z - 1) s0 = Z - 1;
        int s1 = s0 + 1 < Z ? s0 + 1 : s0;
        double t = s - s0;
        double a0 = area[s0], a1 = area[s1];
        double fa0 = a0 > 0 ? air[s0] / a0 : 0, fa1 = a1 > 0 ? air[s1] / a1 : 0;
        double fb0 = a0 > 0 ? bone[s0] / a0 : 0, fb1 = a1 > 0 ? bone[s1] / a1 : 0;
        d->feature[FEATURE_AREA][b] = (float)(((1 - t) * a0 + t * a1) * pixel_cm2);
        d->feature[FEATURE_AIR][b] = (float)((1 - t) * fa0 + t * fa1);
        d->feature[FEATURE_BONE][b] = (float)((1 - t) * fb0 + t * fb1);
    }
    for (int f = 0; f < FEATURE_COUNT; f++) smooth_profile(d->feature[f], d->nbins);
    free(area); free(air); free(bone); free(first); free(last);
    return d;
}

static void free_description(void *p)
{
    ProfileDescription *d = p;
    if (!d) return;
    free(d->x0); free(d->x1); free(d->y0); free(d->y1);
    for (int f = 0; f < FEATURE_COUNT; f++) free(d->feature[f]);
    free(d);
}

static double profile_at(const float *f, int n, double bin)
{
    if (bin <= 0) return f[0];
    if (bin >= n - 1) return f[n - 1];
    int b = (int)bin;
    double t = bin - b;
    return (1 - t) * f[b] + t * f[b + 1];
}

static int edge_margin_bins(int nbins)
{
    int m = (int)ceil(2.0 * PROFILE_SMOOTH_MM / BIN_MM);
    return m < nbins / 4 ? m : nbins / 4;
}

/* Mean over features of the normalised cross-correlation of Q's profile with K's profile at
 * z_K = a z_Q + t, over the Q bins that land inside K. -2 when the overlap is too short. */
static double alignment_score(const ProfileDescription *q, const ProfileDescription *k, double a,
                              double t)
{
    double len_q = (q->nbins - 1) * BIN_MM, len_k = (k->nbins - 1) * BIN_MM;
    double lo = fmax(t, 0.0), hi = fmin(a * len_q + t, len_k);
    double shorter = fmin(a * len_q, len_k);
    if (hi - lo < MIN_OVERLAP_FRACTION * shorter || hi - lo < BIN_MM) return -2.0;
    /* Near the ends of a scan the smoothing kernel is cut off, so the smoothed values there
     * differ from the same anatomy's values inside a longer scan: leave those bins out. */
    int q_margin = edge_margin_bins(q->nbins), k_margin = edge_margin_bins(k->nbins);
    double k_margin_mm = k_margin * BIN_MM;
    double score = 0, weight_sum = 0;
    int used = 0;
    for (int f = 0; f < FEATURE_COUNT; f++) {
        double sq = 0, sk = 0, sqq = 0, skk = 0, sqk = 0;
        int n = 0;
        for (int b = q_margin; b < q->nbins - q_margin; b++) {
            double zk = a * b * BIN_MM + t;
            if (zk < k_margin_mm - 1e-9 || zk > len_k - k_margin_mm + 1e-9) continue;
            double vq = q->feature[f][b], vk = profile_at(k->feature[f], k->nbins, zk / BIN_MM);
            sq += vq; sk += vk; sqq += vq * vq; skk += vk * vk; sqk += vq * vk;
            n++;
        }
        if (n < 2) continue;
        double cq = sqq - sq * sq / n, ck = skk - sk * sk / n, cqk = sqk - sq * sk / n;
        /* A flat profile (e.g. no bone anywhere) says nothing about the shift. */
        if (cq <= 1e-9 * (sqq + 1e-12) || ck <= 1e-9 * (skk + 1e-12)) continue;
        /* Weighted by how much the feature varies along Q (coefficient of variation, capped
         * at 1): the body area of an abdomen changes by a few percent and its correlation is
         * mostly noise, while the air (lung bases) and bone (ribs, pelvis) fractions swing
         * from near zero to large values. */
        double mean = fabs(sq / n) + 1e-12;
        double weight = fmin(1.0, sqrt(cq / n) / mean);
        score += weight * cqk / sqrt(cq * ck);
        weight_sum += weight;
        used++;
    }
    if (!used) return 0.0;
    return score / weight_sum - SCALE_PENALTY * fabs(a - 1.0);
}

static void align(const ProfileDescription *q, const ProfileDescription *k, double *scale,
                  double *shift)
{
    double len_q = (q->nbins - 1) * BIN_MM, len_k = (k->nbins - 1) * BIN_MM;
    /* Uninformative default: centres aligned at scale 1. */
    double best = 0.0, best_a = 1.0, best_t = 0.5 * (len_k - len_q);
    for (size_t s = 0; s < sizeof z_scales / sizeof z_scales[0]; s++) {
        double a = z_scales[s];
        for (double t = -a * len_q; t <= len_k + 1e-9; t += BIN_MM) {
            double sc = alignment_score(q, k, a, t);
            if (sc > best + 1e-12) { best = sc; best_a = a; best_t = t; }
        }
    }
    /* Sub-bin refinement: parabola through the best shift and its neighbours. */
    double sm = alignment_score(q, k, best_a, best_t - BIN_MM);
    double s0 = alignment_score(q, k, best_a, best_t);
    double sp = alignment_score(q, k, best_a, best_t + BIN_MM);
    double curvature = sm - 2 * s0 + sp;
    if (sm > -2 && sp > -2 && curvature < -1e-12) {
        double offset = 0.5 * (sm - sp) / curvature;
        if (fabs(offset) <= 1.0) best_t += offset * BIN_MM;
    }
    *scale = best_a;
    *shift = best_t;
}

void matcher_profile_alignment(const void *q, const void *k, double *scale, double *shift_mm)
{
    align(q, k, scale, shift_mm);
}

/* Mean body extent (x0, x1, y0, y1) over the slices whose centres lie in [lo_mm, hi_mm]; when
 * none there has body, that of the nearest slice with body. Returns 0 when no slice has. */
static int slab_extent(const ProfileDescription *d, double lo_mm, double hi_mm, double e[4])
{
    double sum[4] = {0, 0, 0, 0};
    int n = 0, nearest = -1;
    double nearest_dist = 1e300, mid = 0.5 * (lo_mm + hi_mm);
    for (int z = 0; z < d->dim[2]; z++) {
        if (d->x0[z] < 0) continue;
        double zm = z * (double)d->spacing[2];
        if (zm >= lo_mm - 1e-9 && zm <= hi_mm + 1e-9) {
            sum[0] += d->x0[z]; sum[1] += d->x1[z]; sum[2] += d->y0[z]; sum[3] += d->y1[z];
            n++;
        }
        if (fabs(zm - mid) < nearest_dist) { nearest_dist = fabs(zm - mid); nearest = z; }
    }
    if (n) {
        for (int i = 0; i < 4; i++) e[i] = sum[i] / n;
        return 1;
    }
    if (nearest < 0) return 0;
    e[0] = d->x0[nearest]; e[1] = d->x1[nearest]; e[2] = d->y0[nearest]; e[3] = d->y1[nearest];
    return 1;
}

/* Voxel coordinate c inside [lo, hi] (voxel indices) as a fraction of the extent (edges of
 * the end voxels), and back. */
static double to_unit(double c, double lo, double hi) { return (c - lo + 0.5) / (hi - lo + 1.0); }
static double from_unit(double u, double lo, double hi) { return lo - 0.5 + u * (hi - lo + 1.0); }

static void profile_map(const void *qv, const void *kv, int n, const double (*pq)[3], double (*pk)[3])
{
    const ProfileDescription *q = qv, *k = kv;
    double a, t;
    align(q, k, &a, &t);
    double len_q = (q->dim[2] - 1) * (double)q->spacing[2];
    for (int i = 0; i < n; i++) {
        double zq = pq[i][2] * q->spacing[2];
        double zk = a * zq + t;
        /* The same anatomy on both sides: Q's slab, clipped to Q, and its image in K. */
        double lo = fmax(zq - XY_WINDOW_MM, 0.0), hi = fmin(zq + XY_WINDOW_MM, len_q);
        double eq[4], ek[4];
        if (slab_extent(q, lo, hi, eq) && slab_extent(k, a * lo + t, a * hi + t, ek)) {
            pk[i][0] = from_unit(to_unit(pq[i][0], eq[0], eq[1]), ek[0], ek[1]);
            pk[i][1] = from_unit(to_unit(pq[i][1], eq[2], eq[3]), ek[2], ek[3]);
        } else {
            pk[i][0] = from_unit(to_unit(pq[i][0], 0, q->dim[0] - 1), 0, k->dim[0] - 1);
            pk[i][1] = from_unit(to_unit(pq[i][1], 0, q->dim[1] - 1), 0, k->dim[1] - 1);
        }
        pk[i][2] = zk / k->spacing[2];
    }
}

static void bbox_map(const void *qv, const void *kv, int n, const double (*pq)[3], double (*pk)[3])
{
    const ProfileDescription *q = qv, *k = kv;
    for (int i = 0; i < n; i++)
        for (int a = 0; a < 3; a++)
            pk[i][a] = from_unit(to_unit(pq[i][a], q->box_lo[a], q->box_hi[a]), k->box_lo[a], k->box_hi[a]);
}

const Matcher matcher_profile = {"profile", describe, free_description, profile_map};
const Matcher matcher_bbox = {"bbox", describe, free_description, bbox_map};

const Matcher *matcher_find(const char *name)
{
    if (!strcmp(name, matcher_profile.name)) return &matcher_profile;
    if (!strcmp(name, matcher_bbox.name)) return &matcher_bbox;
    return NULL;
}
