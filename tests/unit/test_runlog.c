/* metrics.csv (src/train/runlog.h) across crashes and resumes, on files whose contents are
 * written out by hand here:
 *  - the header is on disk as soon as the log is opened (a run killed in its first step used
 *    to leave an empty file, and its resumed run then wrote rows without a header);
 *  - a resume at step 3 keeps the header and rows 0-2, drops rows 3 and later;
 *  - a file with rows but no header (left by that crash) gets the header, keeps its rows;
 *  - a last row cut mid-write (a crash: rows are flushed, not synced) is dropped, not glued to
 *    the resumed run's first row;
 *  - a file of an older alice whose columns are the first ones of today's keeps its rows, the
 *    columns added since empty;
 *  - a file with other columns (another kind of run in the same run_dir) is an error naming
 *    both, and the file is left as it was;
 *  - no temporary file is left behind. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "test_child.h"
#include "train/runlog.h"

static char dir[256], path[512];
static const char *const cols[] = {"loss", "lr", NULL};
#define HEADER "step,loss,lr\n"

static void put(const char *text)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

/* The file's whole content (static buffer). */
static const char *content(void)
{
    static char buf[4096];
    FILE *f = fopen(path, "r");
    if (!f) return "(missing)";
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static void rows(RunLog *r, long from, long to)
{
    for (long s = from; s < to; s++) {
        double v[2] = {(double)s + 0.5, 1e-3};
        runlog_row(r, s, v, 0);
    }
}

static void open_other_columns(void)
{
    RunLog r;
    runlog_open(&r, dir, "metrics.csv", cols, 0, 10, 1);
}

static int test_runlog(void)
{
    RunLog r;
    runlog_open(&r, dir, "metrics.csv", cols, 0, 10, 1);
    TEST_CHECK(!strcmp(content(), HEADER), "header not on disk at open: '%s'", content());
    rows(&r, 0, 5);
    runlog_sync(&r);   /* what a checkpoint does first: the rows on disk, the file still open */
    TEST_CHECK(strstr(content(), "4,4.5,0.001\n") != NULL, "rows not on disk after runlog_sync: "
               "'%s'", content());
    runlog_close(&r);
    runlog_open(&r, dir, "metrics.csv", cols, 3, 10, 1);
    runlog_close(&r);
    TEST_CHECK(!strcmp(content(), HEADER "0,0.5,0.001\n1,1.5,0.001\n2,2.5,0.001\n"),
               "resume at step 3 kept: '%s'", content());

    put("0,0.5,0.001\n1,1.5,0.001\n");
    runlog_open(&r, dir, "metrics.csv", cols, 1, 10, 1);
    rows(&r, 1, 2);
    runlog_close(&r);
    TEST_CHECK(!strcmp(content(), HEADER "0,0.5,0.001\n1,1.5,0.001\n"),
               "headerless file resumed at step 1: '%s'", content());

    put(HEADER "0,0.5,0.001\n1,1.5,0.001\n2,2.");
    runlog_open(&r, dir, "metrics.csv", cols, 5, 10, 1);
    rows(&r, 5, 6);
    runlog_close(&r);
    TEST_CHECK(!strcmp(content(), HEADER "0,0.5,0.001\n1,1.5,0.001\n5,5.5,0.001\n"),
               "a row cut mid-write, resumed at step 5: '%s'", content());

    /* an older alice's file, without the last column added since: kept, that column empty */
    put("step,loss\n0,0.5\n1,1.5\n2,2.5\n");
    runlog_open(&r, dir, "metrics.csv", cols, 2, 10, 1);
    rows(&r, 2, 3);
    runlog_close(&r);
    TEST_CHECK(!strcmp(content(), HEADER "0,0.5,\n1,1.5,\n2,2.5,0.001\n"),
               "an older file with fewer columns, resumed at step 2: '%s'", content());

    const char *other = "step,loss,l_r,l_dv\n0,1,2,3\n";
    put(other);
    char err[2048];
    int status = test_child_exit(open_other_columns, err, sizeof err);
    TEST_CHECK(status != 0 && strstr(err, "holds other columns (step,loss,l_r,l_dv)") &&
               strstr(err, "(step,loss,lr)") && strstr(err, "another run_dir"),
               "other columns: status %d, message '%s'", status, err);
    TEST_CHECK(!strcmp(content(), other), "the other run's file changed: '%s'", content());
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    TEST_CHECK(access(tmp, F_OK) != 0, "%s left behind", tmp);
    return 0;
}

int main(void)
{
    snprintf(dir, sizeof dir, "%s/alice_runlog_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    snprintf(path, sizeof path, "%s/metrics.csv", dir);
    TEST_RUN(test_runlog);
    unlink(path);
    rmdir(dir);
    return test_finish();
}
