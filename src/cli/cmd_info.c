/* `alice info FILE...`: what a data set, checkpoint or results file holds, read from its own
 * attributes and index (no voxels, no tensors): the questions asked before submitting a job
 * (how many folds, which model, which step, how it was run) without h5py or h5dump. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "core/check.h"
#include "core/config.h"
#include "core/strutil.h"
#include "dataset.h"
#include "eval/metrics.h"
#include "h5util.h"
#include "results.h"
#include "train/checkpoint.h"

static void usage(void)
{
    printf("usage: alice info FILE [FILE ...]\n"
           "  Describes each file by its format attribute: a data set (alice pack: cases, folds\n"
           "  with their labelled cases, spacing, grid sizes), a checkpoint (alice pretrain /\n"
           "  finetune: kind, method, step, model keys, tensors, the ranks, threads and backend\n"
           "  that wrote it) or evaluation results (alice eval: cases, organs, mean DSC and NSD\n"
           "  as eval prints them, where the predictions came from, what they were scored\n"
           "  against, the case selection and the cases without a prediction). Reads no voxels;\n"
           "  runs on a login node.\n");
}

static void describe_dataset(const char *path)
{
    Dataset *ds = dataset_open(path);
    const int n = dataset_num_cases(ds), folds = dataset_num_folds(ds);
    float sp[3];
    dataset_spacing(ds, sp);
    int labelled = 0, lo[3] = {1 << 30, 1 << 30, 1 << 30}, hi[3] = {0, 0, 0};
    int *per_fold = xcalloc((size_t)(folds > 0 ? folds : 1) * 2, sizeof(int));
    for (int i = 0; i < n; i++) {
        const DatasetCase *c = dataset_case(ds, i);
        labelled += c->has_label;
        if (c->fold >= 0 && c->fold < folds) {
            per_fold[2 * c->fold]++;
            per_fold[2 * c->fold + 1] += c->has_label;
        }
        for (int a = 0; a < 3; a++) {
            if (c->dim[a] < lo[a]) lo[a] = c->dim[a];
            if (c->dim[a] > hi[a]) hi[a] = c->dim[a];
        }
    }
    printf("%s: data set (alice pack)\n", path);
    printf("  cases      %d (%d with a label)\n", n, labelled);
    printf("  spacing    %g x %g x %g mm\n", sp[0], sp[1], sp[2]);
    if (n > 0)
        printf("  grids      %d..%d x %d..%d x %d..%d voxels\n", lo[0], hi[0], lo[1], hi[1], lo[2],
               hi[2]);
    printf("  num_folds  %d\n", folds);
    for (int f = 0; f < folds; f++)
        printf("    fold %-3d %d cases, %d with a label\n", f, per_fold[2 * f], per_fold[2 * f + 1]);
    free(per_fold);
    dataset_close(ds);
}

/* Count and floats of the datasets directly under a group (by index: the same calls in
 * every HDF5 release, unlike the link iterators' callback types). */
typedef struct {
    long tensors;
    double floats;
} TensorCount;

static TensorCount count_group(hid_t f, const char *group)
{
    TensorCount t = {0, 0};
    if (!h5_exists(f, group)) return t;
    hid_t g = CHECK_H5(H5Gopen2(f, group, H5P_DEFAULT));
    H5G_info_t info;
    CHECK_H5(H5Gget_info(g, &info));
    for (hsize_t i = 0; i < info.nlinks; i++) {
        char name[512];
        CHECK_H5(H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name,
                                    H5P_DEFAULT));
        long long dims[8];
        const int nd = h5_shape(g, name, 8, dims);
        double numel = 1;
        for (int d = 0; d < nd; d++) numel *= (double)dims[d];
        t.tensors++;
        t.floats += numel;
    }
    CHECK_H5(H5Gclose(g));
    return t;
}

static void describe_checkpoint(const char *path, hid_t f)
{
    char *kind = h5_attr_read_string(f, "kind");
    const TensorCount params = count_group(f, "params"), target = count_group(f, "target");
    double metric = NAN;
    h5_attr_read_double(f, "metric", &metric);
    Config c;
    const long step = checkpoint_stored_config(path, &c);
    CheckpointRunShape shape;
    const int shape_known = checkpoint_run_shape(path, &shape);
    printf("%s: checkpoint of alice %s\n", path, kind ? kind : "(kindless)");
    printf("  step       %ld of steps = %ld\n", step, c.steps);
    if (kind && !strcmp(kind, "finetune"))
        printf("  model      UNETR on ViT %dx%d (heads %d, mlp %d, patch %d), feature size %d, "
               "%d classes, crop %dx%dx%d, fold %d\n", c.depth, c.embed_dim, c.heads, c.mlp_dim,
               c.patch, c.feature_size, c.num_classes, c.crop[0], c.crop[1], c.crop[2], c.fold);
    else
        printf("  model      method %s, ViT %dx%d (heads %d, mlp %d, patch %d), decoder %dx%d, "
               "crop %dx%dx%d, teacher_decoder %s\n", c.method, c.depth, c.embed_dim, c.heads,
               c.mlp_dim, c.patch, c.dec_depth, c.dec_dim, c.crop[0], c.crop[1], c.crop[2],
               c.teacher_decoder);
    printf("  tensors    %ld parameter tensors, %.0f floats stored%s\n", params.tensors,
           params.floats, target.tensors ? " (and the EMA target)" : "");
    if (isfinite(metric) && metric < 0)
        printf("  metric     no best yet (no validation before this step, or the best "
               "restarted where a resume set a later ckpt_best.h5 aside)\n");
    else if (isfinite(metric))
        printf("  metric     best validation mean Dice up to this step %.4f\n", metric);
    if (shape_known)
        printf("  written by %ld rank(s) x %ld thread(s), backend %s, batch %d per rank\n",
               shape.ranks, shape.threads, shape.backend, c.batch);
    double spacing[3];
    if (h5_attr_read_doubles(f, "data_spacing", spacing, 3))
        printf("  data       %s, packed at %g,%g,%g mm (alice infer wants that spacing)\n", c.data,
               spacing[0], spacing[1], spacing[2]);
    else
        printf("  data       %s\n", c.data);
    char absent[1024];
    checkpoint_keys_absent(path, absent, sizeof absent);
    if (absent[0])
        printf("  older      written before the keys %s: shown at today's defaults, which its "
               "run may not have used\n", absent);
    free(kind);
}

/* The headline mean of a [cases, organs] score table (metrics_organ_averaged_mean: alice
 * eval's and tables.py's number); the scored cells counted in *n. */
static double table_mean(hid_t f, const char *name, long *n)
{
    long long dims[2] = {0, 0};
    const int nd = h5_shape(f, name, 2, dims);
    const size_t count = nd == 2 ? (size_t)(dims[0] * dims[1]) : 0;
    *n = 0;
    if (!count) return NAN;
    double *v = xmalloc(count * sizeof(double));
    hid_t d = CHECK_H5(H5Dopen2(f, name, H5P_DEFAULT));
    CHECK_H5(H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v));
    CHECK_H5(H5Dclose(d));
    const double mean = metrics_organ_averaged_mean(v, (int)dims[0], (int)dims[1], NULL, n);
    free(v);
    return mean;
}

/* What the cases were scored against (/truth_sources, in alice eval's wording): source label
 * files, packed labels, or packed labels mapped back to the source grid (the fallback that a
 * resampling pack makes inexact). Older results without the dataset print nothing. */
static void describe_truth_sources(const char *path, hid_t f)
{
    if (!h5_exists(f, "truth_sources")) return;
    hid_t d = CHECK_H5(H5Dopen2(f, "truth_sources", H5P_DEFAULT));
    hid_t file_type = CHECK_H5(H5Dget_type(d));
    const int fixed = H5Tget_class(file_type) == H5T_STRING && H5Tis_variable_str(file_type) == 0;
    const size_t width = fixed ? H5Tget_size(file_type) + 1 : 0;
    CHECK_H5(H5Tclose(file_type));
    long long n = 0;
    h5_shape(f, "truth_sources", 1, &n);
    if (!width || n <= 0) {
        CHECK_H5(H5Dclose(d));
        if (!width)
            printf("  against    ? (%s: /truth_sources is not fixed-length strings)\n", path);
        return;
    }
    char *buf = xcalloc((size_t)n, width);
    hid_t mem = CHECK_H5(H5Tcopy(H5T_C_S1));
    CHECK_H5(H5Tset_size(mem, width));
    CHECK_H5(H5Tset_strpad(mem, H5T_STR_NULLTERM));
    CHECK_H5(H5Dread(d, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf));
    CHECK_H5(H5Tclose(mem));
    CHECK_H5(H5Dclose(d));
    long files = 0, packed = 0, mapped = 0;
    for (long long i = 0; i < n; i++) {
        const char *src = buf + (size_t)i * width;
        if (str_ends_with(src, TRUTH_SOURCE_MAPPED_END)) mapped++;
        else if (str_ends_with(src, TRUTH_SOURCE_PACKED_END)) packed++;
        else files++;
    }
    free(buf);
    printf("  against    %ld label file(s)", files);
    if (packed) printf(", %ld packed label(s) (predictions on the packed grid)", packed);
    if (mapped) printf(", %ld packed label(s) mapped back to the source grid (inexact where "
                       "packing resampled)", mapped);
    printf("\n");
}

static void describe_results(const char *path, hid_t f)
{
    long long cases = 0, organs = 0, dsc_dims[2] = {0, 0}, nsd_dims[2] = {0, 0};
    h5_shape(f, "case_names", 1, &cases);
    h5_shape(f, "organ_names", 1, &organs);
    const int dsc_rank = h5_shape(f, "dsc", 2, dsc_dims);
    const int nsd_rank = h5_shape(f, "nsd", 2, nsd_dims);
    for (int t = 0; t < 2; t++) {
        const long long *dims = t ? nsd_dims : dsc_dims;
        if ((t ? nsd_rank : dsc_rank) != 2 || dims[0] != cases || dims[1] != organs)
            alice_die("%s: %s is not a table of %lld cases x %lld organs (case_names x "
                      "organ_names); the results file is damaged or was edited: evaluate again "
                      "with alice eval", path, t ? "nsd" : "dsc", cases, organs);
    }
    char *set = h5_attr_read_string(f, "label_set"), *ckpt = h5_attr_read_string(f, "checkpoint");
    char *pred = h5_attr_read_string(f, "prediction_dir"), *truth = h5_attr_read_string(f, "truth");
    long nd = 0, nn = 0;
    const double dsc = table_mean(f, "dsc", &nd), nsd = table_mean(f, "nsd", &nn);
    printf("%s: evaluation results (alice eval)\n", path);
    printf("  scored     %lld cases x %lld organs (label_set %s)\n", cases, organs,
           set ? set : "?");
    printf("  mean       DSC %.4f over %ld scores, NSD %.4f over %ld\n", dsc, nd, nsd, nn);
    printf("  pred_dir   %s\n  truth      %s\n", pred ? pred : "?", truth ? truth : "?");
    describe_truth_sources(path, f);
    char *selection = h5_attr_read_string(f, "case_selection");
    if (selection && strcmp(selection, "all") != 0) printf("  cases      %s\n", selection);
    free(selection);
    char *skipped = h5_attr_read_string(f, "skipped_cases");
    if (skipped && skipped[0]) {
        long count = 1;
        for (const char *p = skipped; *p; p++) count += *p == '\n';
        printf("  skipped    %ld case(s) of the truth without a prediction, in no mean\n", count);
    }
    free(skipped);
    /* one source per line (alice eval: the distinct prediction sources without --checkpoint) */
    if (ckpt && ckpt[0]) {
        printf("  from       ");
        for (const char *p = ckpt; *p; p++) {
            putchar(*p);
            if (*p == '\n') printf("             ");
        }
        printf("\n");
    }
    free(set);
    free(ckpt);
    free(pred);
    free(truth);
}

int cmd_info(int argc, char **argv)
{
    int described = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            usage();
            return 0;
        }
        const char *path = argv[i];
        hid_t f = h5_open_read(path, "file to describe");
        char *format = h5_attr_read_string(f, "format");
        if (format && !strcmp(format, DATASET_FORMAT_NAME)) {
            CHECK_H5(H5Fclose(f));
            describe_dataset(path);
        } else if (format && !strcmp(format, CHECKPOINT_FORMAT_NAME)) {
            describe_checkpoint(path, f);
            CHECK_H5(H5Fclose(f));
        } else if (format && !strcmp(format, RESULTS_FORMAT_NAME)) {
            describe_results(path, f);
            CHECK_H5(H5Fclose(f));
        } else {
            alice_die("%s: an HDF5 file, but not one alice wrote (format attribute '%s'; expected "
                      "%s, %s or %s)", path, format ? format : "absent", DATASET_FORMAT_NAME,
                      CHECKPOINT_FORMAT_NAME, RESULTS_FORMAT_NAME);
        }
        free(format);
        described++;
    }
    if (!described) {
        usage();
        alice_die("alice info: give at least one file (dataset.h5, ckpt_<step>.h5 or results.h5)");
    }
    return 0;
}
