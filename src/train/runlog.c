#include "train/runlog.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/check.h"
#include "core/timer.h"

/* Keeps the header and the rows before start_step of an existing file. */
static void truncate_from(const char *path, long start_step)
{
    FILE *in = fopen(path, "r");
    if (!in) return;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *out = fopen(tmp, "w");
    if (!out) alice_die("cannot write %s (is the run directory writable?)", tmp);
    char line[4096];
    int first = 1;
    while (fgets(line, sizeof line, in)) {
        if (first || atol(line) < start_step) fputs(line, out);
        first = 0;
    }
    fclose(in);
    fclose(out);
    if (rename(tmp, path) != 0) alice_die("cannot replace %s", path);
}

void runlog_open(RunLog *r, const char *run_dir, const char *file, const char *const *cols,
                 long start_step, long total_steps, int is_root)
{
    memset(r, 0, sizeof *r);
    r->total_steps = total_steps;
    r->start_step = start_step;
    r->t_start = wall_seconds();
    while (cols[r->ncols]) {
        ALICE_ASSERT(r->ncols < RUNLOG_MAX_COLS, "too many log columns");
        r->cols[r->ncols] = cols[r->ncols];
        r->ncols++;
    }
    if (!is_root) return;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", run_dir, file);
    int exists = access(path, F_OK) == 0;
    if (exists) truncate_from(path, start_step);
    r->csv = fopen(path, "a");
    if (!r->csv) alice_die("cannot open %s for writing (is the run directory writable?)", path);
    if (!exists) {
        fprintf(r->csv, "step");
        for (int i = 0; i < r->ncols; i++) fprintf(r->csv, ",%s", r->cols[i]);
        fprintf(r->csv, "\n");
    }
}

void runlog_row(RunLog *r, long step, const double *values, int print)
{
    if (!r->csv) return;
    fprintf(r->csv, "%ld", step);
    for (int i = 0; i < r->ncols; i++) {
        if (isnan(values[i])) fprintf(r->csv, ",");
        else fprintf(r->csv, ",%.9g", values[i]);
    }
    fprintf(r->csv, "\n");
    fflush(r->csv);
    if (!print) return;
    if (r->rows_printed++ % 20 == 0) {
        printf("%8s", "step");
        for (int i = 0; i < r->ncols; i++) printf(" %11s", r->cols[i]);
        printf(" %9s\n", "ETA");
    }
    double elapsed = wall_seconds() - r->t_start;
    double done = (double)(step + 1 - r->start_step);
    double eta = done > 0 ? elapsed / done * (double)(r->total_steps - step - 1) : 0;
    printf("%8ld", step);
    for (int i = 0; i < r->ncols; i++) {
        if (isnan(values[i])) printf(" %11s", "-");
        else printf(" %11.5g", values[i]);
    }
    printf(" %6.0fm%02.0fs\n", floor(eta / 60), fmod(eta, 60));
    fflush(stdout);
}

void runlog_close(RunLog *r)
{
    if (r->csv) fclose(r->csv);
    r->csv = NULL;
}
