/* results.h5 and results.csv of `alice eval` (layout: docs/FORMAT.md, "Evaluation results").
 * Both are written under a temporary name and renamed. */
#ifndef ALICE_RESULTS_H
#define ALICE_RESULTS_H

/* Format identity, stored as root attributes "format" and "format_version". */
#define RESULTS_FORMAT_NAME "alice-eval-results"
#define RESULTS_FORMAT_VERSION 1

/* How /truth_sources ends for a case scored against a data set's packed label, on the packed
 * grid or mapped back to the source grid (alice eval writes them, alice info counts them). */
#define TRUTH_SOURCE_PACKED_END ", packed label)"
#define TRUTH_SOURCE_MAPPED_END ", packed label mapped back to the source grid)"

typedef struct {
    int num_cases, num_organs;
    const char *const *case_names;     /* [num_cases] */
    const char *const *organ_names;    /* [num_organs] */
    const int *organ_ids;              /* [num_organs] label values */
    const double *tolerance_mm;        /* [num_organs] */
    const double *dsc;                 /* [num_cases * num_organs], row = case */
    const double *nsd;
    const double *truth_voxels;        /* [num_cases * num_organs] organ sizes in the truth */
    const char *label_set;
    const char *config_text;           /* resolved configuration */
    const char *checkpoint;            /* "" when not given */
    const char *prediction_dir;
    const char *truth;                 /* dataset.h5 or label directory */
    const char *const *prediction_sources;   /* [num_cases] what made each prediction, or "" */
    const char *skipped_cases;         /* cases of the truth without a prediction, one per
                                        * line ("" when none) */
    const char *const *truth_sources;  /* [num_cases] the label file or packed label scored
                                        * against */
    const char *case_selection;        /* eval's --cases: "all" or "fold:K" */
} EvalResults;

/* The first line of <stem>.csv; alice eval replaces a CSV that begins with its first four
 * columns (older results lack truth_voxels, a spreadsheet may end lines with \r\n). */
#define RESULTS_CSV_COLUMNS "case,organ,dsc,nsd"
#define RESULTS_CSV_HEADER RESULTS_CSV_COLUMNS ",truth_voxels\n"

/* Writes <stem>.h5 and <stem>.csv (case,organ,dsc,nsd,truth_voxels). */
void results_write(const char *stem, const EvalResults *r);
/* Ends the job unless <stem>.h5 and <stem>.csv are absent or results an earlier alice eval
 * wrote (which a new evaluation replaces): `--out dataset` beside `--data dataset.h5`, or a
 * checkpoint's stem, would otherwise replace the data set or the checkpoint. */
void results_check_replaceable(const char *command, const char *stem);

#endif
