/* Run output on rank 0: a step table on stdout and <run_dir>/metrics.csv for the analysis
 * scripts. Columns are named once; a resumed run drops rows at or after its start step, so
 * the file reads as one uninterrupted run. */
#ifndef ALICE_RUNLOG_H
#define ALICE_RUNLOG_H

#include <stdio.h>

#define RUNLOG_MAX_COLS 16

typedef struct {
    FILE *csv;
    char path[4096];  /* of csv, for errors */
    int ncols;
    const char *cols[RUNLOG_MAX_COLS];
    long total_steps, start_step;
    double t_start;
    int rows_printed;
} RunLog;

/* cols: the value columns after "step" (NULL-terminated). Rank 0 only; other ranks get a
 * RunLog that ignores rows. */
void runlog_open(RunLog *r, const char *run_dir, const char *file, const char *const *cols,
                 long start_step, long total_steps, int is_root);
/* One row: values in column order; NaN prints as empty. print: also print to the table. */
void runlog_row(RunLog *r, long step, const double *values, int print);
/* Forces the rows written so far to the disk (fsync), before a checkpoint is written: rows are
 * otherwise only flushed, and a node crash could lose rows before the step a resumed run
 * starts at, a gap in metrics.csv. A failure is a warning (the log is not the run's state). */
void runlog_sync(RunLog *r);
void runlog_close(RunLog *r);

#endif
