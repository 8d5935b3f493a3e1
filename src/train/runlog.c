#include "train/runlog.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/check.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/timer.h"

/* Columns `header` adds after the ones of `old` (both "step,...\n" lines) when old's are its
 * first ones: the file of an older alice, which logged fewer columns (columns are only ever
 * appended); -1 otherwise. */
static int columns_added(const char *old, const char *header)
{
    const size_t n = strcspn(old, "\n");
    if (strncmp(old, header, n) != 0 || header[n] != ',') return -1;
    int added = 0;
    for (const char *c = header + n; *c && *c != '\n'; c++) added += *c == ',';
    return added;
}

/* Writes path anew (through path.tmp and a rename, so a crash leaves the old file or the new
 * one): the header, then the rows of the existing file, if any, for steps before start_step.
 * A file without a header (the first run died before its header reached the disk) keeps its
 * rows; one of an older alice that logged fewer columns keeps them with the new columns empty
 * (the way a missing value is written); a header naming other columns (another kind of run) is
 * an error. */
static void rewrite_from(const char *path, const char *header, long start_step)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *out = fopen(tmp, "w");
    if (!out)
        alice_die("cannot write %s: %s (is the run directory writable?)", tmp, strerror(errno));
    fputs(header, out);
    FILE *in = fopen(path, "r");
    if (in) {
        char line[8192];
        int first = 1, pad = 0;
        while (fgets(line, sizeof line, in)) {
            const int row = isdigit((unsigned char)line[0]);
            if (first && !row && strcmp(line, header) != 0) {
                pad = columns_added(line, header);
                if (pad < 0) {
                    fclose(in);
                    fclose(out);
                    unlink(tmp);
                    alice_die("%s holds other columns (%.*s) than this run logs (%.*s): it "
                              "belongs to another kind of run; use another run_dir", path,
                              (int)strcspn(line, "\n"), line, (int)strcspn(header, "\n"),
                              header);
                }
                log_warn("%s was begun by an older alice, which logged fewer columns: its rows "
                         "keep the new ones (%.*s) empty", path,
                         (int)strcspn(header + strcspn(line, "\n") + 1, "\n"),
                         header + strcspn(line, "\n") + 1);
            }
            first = 0;
            /* a last row without its newline is what a crash mid-write leaves: dropped, or the
             * resumed run's first row would be glued onto it */
            const size_t len = strlen(line);
            const int complete = len > 0 && line[len - 1] == '\n';
            if (row && complete && atol(line) < start_step) {
                fprintf(out, "%.*s", (int)(len - 1), line);
                for (int c = 0; c < pad; c++) fputc(',', out);
                fputc('\n', out);
            }
        }
        fclose(in);
    }
    commit_stream(out, tmp, path);
}

void runlog_open(RunLog *r, const char *run_dir, const char *file, const char *const *cols,
                 long start_step, long total_steps, int is_root)
{
    memset(r, 0, sizeof *r);
    r->total_steps = total_steps;
    r->start_step = start_step;
    r->t_start = wall_seconds();
    char header[RUNLOG_MAX_COLS * 64 + 8] = "step";
    while (cols[r->ncols]) {
        ALICE_ASSERT(r->ncols < RUNLOG_MAX_COLS, "too many log columns");
        r->cols[r->ncols] = cols[r->ncols];
        size_t used = strlen(header);
        snprintf(header + used, sizeof header - used, ",%s", cols[r->ncols]);
        r->ncols++;
    }
    strncat(header, "\n", sizeof header - strlen(header) - 1);
    if (!is_root) return;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", run_dir, file);
    rewrite_from(path, header, start_step);
    snprintf(r->path, sizeof r->path, "%s", path);
    r->csv = fopen(path, "a");
    if (!r->csv) alice_die("cannot open %s for writing (is the run directory writable?)", path);
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
    if (fflush(r->csv) != 0)
        alice_die("cannot write %s: %s (disk full?)", r->path, strerror(errno));
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

void runlog_sync(RunLog *r)
{
    if (!r->csv) return;
    if (fflush(r->csv) != 0 || fsync(fileno(r->csv)) != 0)
        log_warn("cannot force %s to the disk: %s (a crash now could lose its last rows)",
                 r->path, strerror(errno));
}

void runlog_close(RunLog *r)
{
    if (r->csv) fclose(r->csv);
    r->csv = NULL;
}
