/* Organ label sets: which uint8 id means which organ, and the NSD tolerance (mm) of each organ.
 * Tolerances follow the FLARE 2022 evaluation and are looked up by organ name, so a label set
 * that numbers the organs differently (BTCV) scores each organ at the same tolerance. */
#ifndef ALICE_LABELS_H
#define ALICE_LABELS_H

typedef struct {
    int id;                 /* value in the label volume */
    const char *name;       /* snake_case organ name, used in results files */
    double tolerance_mm;    /* NSD tolerance */
    int labelled_slices;    /* 1: the FLARE 2022 script scores it on the truth's labelled
                             * axial slices only (aorta, IVC, esophagus: long tubes that a
                             * field of view cuts; eval_protocol = flare22, eval/metrics.h) */
} OrganLabel;

typedef struct {
    const char *name;       /* config value of `label_set` */
    int count;
    const OrganLabel *organs;
} LabelSet;

/* The label set named `name` (flare | btcv), or NULL when there is none of that name. */
const LabelSet *label_set_find(const char *name);
/* "flare|btcv": for error messages. */
const char *label_set_names(void);

#endif
