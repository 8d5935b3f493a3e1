/* Landmark evaluation of anatomical matchers: for every ordered pair (Q, K) of labelled
 * volumes and every organ present in both, map Q's organ centroid into K and measure the
 * distance to K's centroid in mm. Used by `alice match --eval`, its tests and the benchmark. */
#ifndef ALICE_MATCH_EVAL_H
#define ALICE_MATCH_EVAL_H

#include <stdio.h>

#include "data/matcher.h"
#include "volume.h"

enum { MATCH_LABELS = 256 };

/* Centroid (voxel coordinates) and voxel count of every label value 1..255. */
typedef struct {
    double centroid[MATCH_LABELS][3];
    long count[MATCH_LABELS];
    /* 1 when the organ has a voxel on a face of the volume: the field of view cuts it, so its
     * centroid is that of its visible part, not of the organ */
    int cut[MATCH_LABELS];
} LabelCentroids;

void label_centroids(const Volume *v, LabelCentroids *out);

typedef struct {
    int num_methods;
    const char *method[4];
    int num_organs;
    int organ[MATCH_LABELS];             /* label values seen in at least one pair */
    /* errors[m][o]: n[o] distances in mm, pair-major order */
    double *errors[4][MATCH_LABELS];
    int n[MATCH_LABELS];
    int pairs;
    /* organ centroids left out because the field of view cuts the organ in Q or in K (the
     * visible parts' centroids are not the same anatomy: a perfect match scored ~10 mm off) */
    int cut_left_out;
} MatchReport;

/* Evaluates up to 4 matchers over all ordered pairs of the labelled volumes in vols.
 * Volumes without a label are ignored. */
void match_evaluate(const Volume *vols, int count, const Matcher *const *methods, int num_methods,
                    MatchReport *report);
void match_report_free(MatchReport *report);

/* Mean and median of method m over organ index o (o = -1: over every organ and pair). */
void match_report_stats(const MatchReport *r, int m, int o, double *mean, double *median, int *n);

/* Markdown table: one row per organ (plus "all"), mean and median mm per method.
 * organ_name(label) may return NULL (the label number is printed). */
void match_report_print(FILE *out, const MatchReport *r, const char *(*organ_name)(int label));
/* How a report match_report_print wrote begins (alice match --out replaces only such files). */
#define MATCH_REPORT_START "landmark error (mm):"

#endif
