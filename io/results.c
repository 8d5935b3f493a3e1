#include "results.h"

#include <errno.h>
#include <unistd.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "core/fsutil.h"
#include "h5util.h"

/* Fixed-length string dataset (h5py reads it as bytes; .astype(str) decodes). */
static void write_strings(hid_t file, const char *name, int n, const char *const *s)
{
    size_t width = 1;
    for (int i = 0; i < n; i++)
        if (strlen(s[i]) + 1 > width) width = strlen(s[i]) + 1;
    char *buf = xcalloc((size_t)(n > 0 ? n : 1), width);
    for (int i = 0; i < n; i++) memcpy(buf + (size_t)i * width, s[i], strlen(s[i]));
    hid_t type = CHECK_H5(H5Tcopy(H5T_C_S1));
    CHECK_H5(H5Tset_size(type, width));
    CHECK_H5(H5Tset_strpad(type, H5T_STR_NULLPAD));
    hsize_t dims[1] = {(hsize_t)n};
    hid_t space = CHECK_H5(H5Screate_simple(1, dims, NULL));
    hid_t ds = CHECK_H5(H5Dcreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    if (n > 0) h5_write_dataset(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf, name);
    CHECK_H5(H5Dclose(ds));
    CHECK_H5(H5Sclose(space));
    CHECK_H5(H5Tclose(type));
    free(buf);
}

static void write_h5(const char *path, const EvalResults *r)
{
    hid_t f = h5_create_tmp(path);
    h5_attr_string(f, "format", RESULTS_FORMAT_NAME);
    h5_attr_long(f, "format_version", RESULTS_FORMAT_VERSION);
    h5_attr_string(f, "label_set", r->label_set);
    h5_attr_string(f, "config", r->config_text);
    h5_attr_string(f, "checkpoint", r->checkpoint);
    h5_attr_string(f, "prediction_dir", r->prediction_dir);
    h5_attr_string(f, "truth", r->truth);
    h5_attr_string(f, "skipped_cases", r->skipped_cases ? r->skipped_cases : "");
    h5_attr_string(f, "case_selection", r->case_selection ? r->case_selection : "all");
    write_strings(f, "case_names", r->num_cases, r->case_names);
    write_strings(f, "prediction_sources", r->num_cases, r->prediction_sources);
    write_strings(f, "truth_sources", r->num_cases, r->truth_sources);
    write_strings(f, "organ_names", r->num_organs, r->organ_names);
    const int shape[2] = {r->num_cases, r->num_organs};
    h5_write_doubles(f, "dsc", 2, shape, r->dsc);
    h5_write_doubles(f, "nsd", 2, shape, r->nsd);
    h5_write_doubles(f, "truth_voxels", 2, shape, r->truth_voxels);
    h5_write_doubles(f, "tolerance_mm", 1, &r->num_organs, r->tolerance_mm);
    h5_write_ints(f, "organ_ids", 1, &r->num_organs, r->organ_ids);
    h5_commit(f, path);
}

/* One CSV field (RFC 4180): quoted, with quotes doubled, when it holds a comma, a quote or a line
 * break, so a case named "pt,01" stays one field for csv readers. */
static void write_csv_field(FILE *out, const char *text)
{
    if (!text[strcspn(text, ",\"\r\n")]) {
        fputs(text, out);
        return;
    }
    fputc('"', out);
    for (const char *c = text; *c; c++) {
        if (*c == '"') fputc('"', out);
        fputc(*c, out);
    }
    fputc('"', out);
}

static void write_csv(const char *path, const EvalResults *r)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) alice_die("%s: path too long", path);
    FILE *out = fopen(tmp, "w");
    if (!out) alice_die("%s: cannot create the results table: %s; check that the directory exists "
                        "and is writable", tmp, strerror(errno));
    fputs(RESULTS_CSV_HEADER, out);
    for (int c = 0; c < r->num_cases; c++)
        for (int o = 0; o < r->num_organs; o++) {
            const size_t cell = (size_t)c * r->num_organs + o;
            write_csv_field(out, r->case_names[c]);
            fputc(',', out);
            write_csv_field(out, r->organ_names[o]);
            fprintf(out, ",%.9g,%.9g,%.0f\n", r->dsc[cell], r->nsd[cell], r->truth_voxels[cell]);
        }
    commit_stream(out, tmp, path);
}

void results_write(const char *stem, const EvalResults *r)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s.h5", stem) >= (int)sizeof path) alice_die("%s: path too long", stem);
    write_h5(path, r);
    snprintf(path, sizeof path, "%s.csv", stem);
    write_csv(path, r);
}

/* 1 when path opens as HDF5 with format = RESULTS_FORMAT_NAME; else 0, with what it holds
 * instead (its format attribute, when it has one) in found. */
static int is_results_h5(const char *path, char *found, size_t n)
{
    snprintf(found, n, "no alice eval format attribute");
    h5_lock();
    hid_t f;
    H5E_BEGIN_TRY { f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT); } H5E_END_TRY;
    int ours = 0;
    if (f < 0) {
        snprintf(found, n, "not a readable HDF5 file");
    } else {
        char *format = h5_attr_read_string(f, "format");
        ours = format && !strcmp(format, RESULTS_FORMAT_NAME);
        if (format && !ours) snprintf(found, n, "format = '%s'", format);
        free(format);
        CHECK_H5(H5Fclose(f));
    }
    h5_unlock();
    return ours;
}

void results_check_replaceable(const char *command, const char *stem)
{
    char path[4096], found[160];
    snprintf(path, sizeof path, "%s.h5", stem);
    const int h5_foreign = !output_replaceable(path, NULL) &&
                           !is_results_h5(path, found, sizeof found);
    if (!h5_foreign) {
        snprintf(path, sizeof path, "%s.csv", stem);
        if (output_replaceable(path, RESULTS_CSV_COLUMNS)) return;
        snprintf(found, sizeof found, "its first line does not begin '%s'", RESULTS_CSV_COLUMNS);
    }
    alice_die("%s: --out %s would replace %s, which is not results of alice eval (%s); "
              "choose another --out (a stem: it writes STEM.h5 and STEM.csv), or move the file "
              "away if it may go", command, stem, path, found);
}
