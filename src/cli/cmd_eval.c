/* alice eval: per case x organ DSC and NSD of predictions (NIfTI, one per case) against the
 * truth, from the original label files (--labels DIR) or a packed data set (--data FILE). Ranks
 * take cases round-robin; rank 0 gathers, writes results.h5 + results.csv and prints means. */
#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <mpi.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/commands.h"
#include "core/check.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/strutil.h"
#include "core/timer.h"
#include "dataset.h"
#include "eval/labels.h"
#include "eval/metrics.h"
#include "eval/prediction_out.h"
#include "geometry.h"
#include "nifti_io.h"
#include "ops/backend.h"
#include "results.h"
#include "train/dist.h"
#include "train/train_common.h"

enum { PATH_LEN = 4096, NAME_LEN = 256 };

/* Where a case's truth comes from (decided on rank 0 from the headers, before any scoring). */
typedef enum {
    TRUTH_LABEL_FILE,     /* a label NIfTI: --labels, or the source label --data recorded */
    TRUTH_PACKED,         /* --data, a prediction on the packed grid: the packed label */
    TRUTH_PACKED_MAPPED,  /* --data, on the source grid but its source label unreadable: the
                           * packed label mapped back to the source grid (nearest neighbour) */
} TruthKind;

typedef struct {
    char name[NAME_LEN];
    char truth[PATH_LEN];    /* label NIfTI, or "" for a data-set case */
    char pred[PATH_LEN];     /* "" when the prediction is missing */
    int dataset_index;       /* -1 for a label-file case */
    TruthKind truth_kind;
    char truth_source[PATH_LEN + NAME_LEN + 64];  /* what it was scored against (results.h5) */
} EvalCase;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: alice eval --pred DIR (--labels DIR | --data dataset.h5) [--out STEM]\n"
            "                  [--checkpoint PATH] [--config FILE] [label_set=flare|btcv]\n"
            "                  [eval_protocol=plain|flare22] [--allow-unknown-labels]\n"
            "                  [--allow-packed-truth] [--cases fold:K|all]\n"
            "                  [key=value ...]\n"
            "Scores every case that has a prediction <pred>/<case>.nii.gz (or .nii): DSC and NSD per\n"
            "organ (FLARE 2022 tolerances; eval_protocol=flare22 also scores aorta, IVC and\n"
            "esophagus on the truth's labelled slices only, as the FLARE 2022 script does).\n"
            "--labels: truth from the original label NIfTI files <labels>/<case>.nii[.gz]\n"
            "(BTCV's labelXXXX for case imgXXXX), NSD at their voxel size. --data: the cases\n"
            "of a packed data set; a prediction on the case's source grid (alice infer's) is\n"
            "scored against its source label file (recorded at packing; when it is gone, the\n"
            "packed label mapped back, which --allow-packed-truth must allow when the packing\n"
            "resampled the case), one on the packed grid against the packed label.\n"
            "--cases fold:K (with --data): the truth is the labelled cases of fold K alone, e.g.\n"
            "the held-out fold that alice infer --cases fold:K predicted (default: all).\n"
            "Writes STEM.h5 and STEM.csv (default STEM: results; existing ones only if an\n"
            "earlier alice eval wrote them) and prints the per-organ\n"
            "means. A label id that is no organ of label_set, in a prediction or a truth, is an\n"
            "error naming the file and the ids; --allow-unknown-labels scores such voxels as\n"
            "background instead (with a warning).\n");
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Case name of a NIfTI file name, or 0 when it is not one. */
static int nifti_stem(const char *file, char *name, size_t len)
{
    const size_t stem = nifti_name_stem(file);
    if (!stem || stem >= len) return 0;
    memcpy(name, file, stem);
    name[stem] = '\0';
    return 1;
}

static void find_prediction(const char *pred_dir, EvalCase *c)
{
    const char *ext[] = {".nii.gz", ".nii"};
    c->pred[0] = '\0';
    for (int e = 0; e < 2; e++) {
        char path[PATH_LEN];
        snprintf(path, sizeof path, "%s/%s%s", pred_dir, c->name, ext[e]);
        if (file_exists(path)) { snprintf(c->pred, sizeof c->pred, "%s", path); return; }
    }
}

static int compare_cases(const void *a, const void *b)
{
    return strcmp(((const EvalCase *)a)->name, ((const EvalCase *)b)->name);
}

/* Predictions in pred_dir that name no case of the truth (another data set's, a renamed file):
 * not scored, and said, since the table would otherwise just be shorter. alice infer's
 * <case>_probs files are not predictions of labels. */
static void warn_orphan_predictions(const char *pred_dir, const EvalCase *cases, int ncases,
                                    Dataset *ds, const char *truth)
{
    DIR *d = opendir(pred_dir);
    if (!d) return;   /* found above; gone now: the scoring says so */
    struct dirent *ent;
    int orphans = 0;
    char list[512] = "";
    while ((ent = readdir(d))) {
        char name[NAME_LEN];
        if (!nifti_stem(ent->d_name, name, sizeof name)) continue;
        if (str_ends_with(name, PREDICTION_PROBS_SUFFIX)) continue;
        /* a linear search: the data set's order need not be strcmp's; a data set's unlabelled
         * cases (alice infer predicts them too) are cases, just not scored */
        int known = 0;
        for (int c = 0; c < ncases && !known; c++) known = !strcmp(cases[c].name, name);
        for (int c = 0; ds && c < dataset_num_cases(ds) && !known; c++)
            known = !strcmp(dataset_case(ds, c)->name, name);
        if (known) continue;
        if (orphans++ < 5)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s",
                     orphans > 1 ? ", " : "", ent->d_name);
    }
    closedir(d);
    if (orphans)
        log_warn("eval: %d prediction(s) in %s name no case of %s and are not scored: %s%s",
                 orphans, pred_dir, truth, list, orphans > 5 ? ", ..." : "");
}

static EvalCase *cases_from_label_dir(const char *dir, int *count)
{
    DIR *d = opendir(dir);
    if (!d) alice_die("--labels %s: cannot open the directory; give the folder of label NIfTI files", dir);
    int cap = 64, n = 0;
    EvalCase *cases = xmalloc(sizeof(EvalCase) * (size_t)cap);
    struct dirent *ent;
    while ((ent = readdir(d))) {
        char name[NAME_LEN];
        if (!nifti_stem(ent->d_name, name, sizeof name)) continue;
        if (n == cap) {
            cap *= 2;
            EvalCase *grown = xmalloc(sizeof(EvalCase) * (size_t)cap);
            memcpy(grown, cases, sizeof(EvalCase) * (size_t)n);
            free(cases);
            cases = grown;
        }
        EvalCase *c = &cases[n++];
        /* BTCV naming: labelXXXX is the truth of case imgXXXX (its image's stem, the name
         * alice pack and alice infer give the case) */
        if (!strncmp(name, "label", 5) && name[5])
            snprintf(c->name, sizeof c->name, "img%s", name + 5);
        else
            snprintf(c->name, sizeof c->name, "%s", name);
        snprintf(c->truth, sizeof c->truth, "%s/%s", dir, ent->d_name);
        c->dataset_index = -1;
    }
    closedir(d);
    if (n == 0) alice_die("--labels %s: no .nii or .nii.gz files there", dir);
    qsort(cases, (size_t)n, sizeof(EvalCase), compare_cases);
    /* A BTCV folder holds imgXXXX beside labelXXXX: the same case twice, the label wins */
    int kept = 0;
    for (int i = 0; i < n; i++) {
        if (kept > 0 && !strcmp(cases[kept - 1].name, cases[i].name)) {
            const char *base = strrchr(cases[i].truth, '/');
            if (!strncmp(base ? base + 1 : cases[i].truth, "label", 5)) cases[kept - 1] = cases[i];
            continue;
        }
        cases[kept++] = cases[i];
    }
    *count = kept;
    return cases;
}

/* The labelled cases of the data set, of fold `fold` alone when it is >= 0. */
static EvalCase *cases_from_dataset(Dataset *ds, const char *path, int fold, int *count)
{
    int total = dataset_num_cases(ds), n = 0;
    EvalCase *cases = xmalloc(sizeof(EvalCase) * (size_t)(total > 0 ? total : 1));
    for (int i = 0; i < total; i++) {
        const DatasetCase *dc = dataset_case(ds, i);
        if (!dc->has_label || (fold >= 0 && dc->fold != fold)) continue;
        EvalCase *c = &cases[n++];
        snprintf(c->name, sizeof c->name, "%s", dc->name);
        c->truth[0] = '\0';
        c->dataset_index = i;
    }
    if (n == 0 && fold >= 0)
        alice_die("--data %s: no labelled case in fold %d (the data set has %d folds); give "
                  "--cases fold:K of a fold with labels, or --cases all", path, fold,
                  dataset_num_folds(ds));
    if (n == 0) alice_die("--data %s: no case has a label, so there is nothing to score against", path);
    *count = n;
    return cases;
}

/* Reads a NIfTI label map as uint8; every voxel must be an integer in 0..255. */
static uint8_t *read_labels(const char *path, int dim[3], double affine[4][4])
{
    float *data = NULL;
    char err[1024];
    if (nifti_read_volume(path, &data, dim, affine, err, sizeof err) != 0) alice_die("%s", err);
    size_t n = (size_t)dim[0] * dim[1] * dim[2];
    uint8_t *out = xmalloc(n ? n : 1);
    for (size_t i = 0; i < n; i++) {
        float v = data[i];
        if (!(v >= 0 && v <= 255) || v != floorf(v)) {
            size_t at[3];   /* nifti_read_volume's layout: [x][y][z], z fastest */
            volume_position(dim, i, at);
            alice_die("%s: voxel (%zu, %zu, %zu) holds %g, not an organ id 0..255; give a label "
                      "map (uint8 ids), not an image or probabilities", path, at[0], at[1], at[2],
                      (double)v);
        }
        out[i] = (uint8_t)v;
    }
    free(data);
    return out;
}

static void check_same_grid(const char *pred, const int pd[3], const double pa[4][4], const char *truth,
                            const int td[3], const double ta[4][4])
{
    if (pd[0] != td[0] || pd[1] != td[1] || pd[2] != td[2])
        alice_die("prediction %s has shape %dx%dx%d but its truth %s has %dx%dx%d; predictions must be on the "
                  "truth's grid (alice infer writes them on each case's original grid; with --data they "
                  "may be on it or on the packed grid)", pred, pd[0], pd[1], pd[2], truth, td[0], td[1], td[2]);
    const int bad = geometry_grid_mismatch(ta, pa, td);
    if (bad >= 0) {
        const int r = bad / 4, c = bad % 4;
        alice_die("prediction %s and its truth %s have different affines (entry [%d][%d]: %.9g vs "
                  "%.9g, %.3g apart; a voxel may move %g of the smallest voxel size): they are not "
                  "on the same grid, so voxels would be compared at different places. Resample the "
                  "prediction onto the truth's grid", pred, truth, r, c, pa[r][c], ta[r][c],
                  fabs(pa[r][c] - ta[r][c]), GEOMETRY_GRID_TOLERANCE);
    }
}

/* Sum of the absolute differences of two affines' entries (mm): which of two grids a
 * prediction is nearer to. */
static double affine_distance(const double a[4][4], const double b[4][4])
{
    double d = 0;
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++) d += fabs(a[r][c] - b[r][c]);
    return d;
}

/* Shape and affine (geometry_grid_mismatch) both those of the grid (dim, affine). */
static int on_grid(const int pd[3], const double pa[4][4], const int dim[3],
                   const double affine[4][4])
{
    return !memcmp(pd, dim, 3 * sizeof(int)) && geometry_grid_mismatch(affine, pa, dim) < 0;
}

static void spacing_of(const double affine[4][4], double spacing[3])
{
    for (int j = 0; j < 3; j++)
        spacing[j] = sqrt(affine[0][j] * affine[0][j] + affine[1][j] * affine[1][j] + affine[2][j] * affine[2][j]);
}

/* The spacing NSD measures distances with, for a truth on the grid of the NIfTI file at path
 * (the truth's own file, or the prediction's for a truth from the data set): its header's voxel
 * size (pixdim, what the FLARE 2022 script and nibabel's get_zooms() read) where it agrees with
 * the affine's column lengths within 1e-4, else those lengths. A rotated sform's float entries
 * make its column lengths 3.0000001 mm for a 3 mm voxel, and NSD counts a distance equal to the
 * tolerance as within: one voxel at a 3 mm tolerance would fall outside. */
static void truth_spacing(const char *path, const double affine[4][4], double spacing[3])
{
    spacing_of(affine, spacing);
    double header[3];
    char err[1024];
    if (!path || nifti_read_voxel_size(path, header, err, sizeof err) != 0) return;
    for (int a = 0; a < 3; a++)
        if (fabs(header[a] - spacing[a]) > 1e-4 * spacing[a]) return;
    memcpy(spacing, header, sizeof header);
}

/* Voxels of each label value 0..255 in the volume (the whole volume, whatever the protocol). */
static void label_histogram(const uint8_t *v, const int dim[3], size_t histogram[256])
{
    memset(histogram, 0, 256 * sizeof(size_t));
    const size_t n = (size_t)dim[0] * dim[1] * dim[2];
    for (size_t i = 0; i < n; i++) histogram[v[i]]++;
}

/* Every nonzero id of a label volume (its histogram) must be an organ of `set`: a map in
 * another numbering (raw output of another tool, a 255 "ignore" value, a model of another
 * num_classes) would otherwise score its organs as misses and drop them from the means
 * without a word. With allow_unknown those voxels count as background, with a warning. */
static void check_known_ids(const size_t histogram[256], const LabelSet *set, const char *file,
                            int allow_unknown)
{
    int organ[256] = {0};
    for (int o = 0; o < set->count; o++) organ[set->organs[o].id] = 1;
    char list[512] = "";
    int unknown = 0;
    for (int id = 1; id < 256; id++) {
        if (!histogram[id] || organ[id]) continue;
        const size_t used = strlen(list);
        if (unknown++ < 8 && used < sizeof list - 64)
            snprintf(list + used, sizeof list - used, "%s%d (%zu voxel%s)", used ? ", " : "", id,
                     histogram[id], histogram[id] == 1 ? "" : "s");
    }
    if (!unknown) return;
    if (allow_unknown) {
        log_warn("eval: %s holds label ids that are no organ of label_set = %s: %s%s; scored as "
                 "background (--allow-unknown-labels)", file, set->name, list,
                 unknown > 8 ? ", ..." : "");
        return;
    }
    alice_die("eval: %s holds label ids that are no organ of label_set = %s (ids %d..%d): %s%s. "
              "Set label_set to the numbering these labels follow, or remap the ids (e.g. a "
              "model trained with another num_classes, or an 'ignore' value); "
              "--allow-unknown-labels scores them as background", file, set->name,
              set->organs[0].id, set->organs[set->count - 1].id, list, unknown > 8 ? ", ..." : "");
}

/* 1 when packing kept the source's voxels (the same spacing on every axis, each packed RAS axis
 * against the file axis it came from: only the crop and a reorientation to RAS, which
 * nearest-neighbour mapping undoes exactly), so the packed label mapped back is the source
 * label on the voxels the crop kept. */
static int packing_kept_voxels(const DatasetCase *dc)
{
    double source[3];
    spacing_of(dc->orig_affine, source);   /* in the file's voxel-axis order */
    for (int a = 0; a < 3; a++) {
        /* packed axis a (RAS) is file axis ras_axis[a]; equal to float precision (the data set
         * stores float): a step off by 1e-3 would drift half a voxel in 500 */
        const double file = source[dc->ras_axis[a]];
        if (fabs(dc->spacing[a] - file) > 1e-6 * file) return 0;
    }
    return 1;
}

/* Rank 0, from the headers: which truth case c is scored against, into c->truth_kind and
 * c->truth_source. A prediction on the source grid whose source label is unreadable would be
 * scored against the packed label mapped back; when the packing resampled the case that truth
 * is itself degraded (a perfect prediction scores below 1), so it takes allow_packed_truth. */
static void choose_truth(EvalCase *c, Dataset *ds, const char *data_path, int allow_packed_truth)
{
    if (c->dataset_index < 0) {
        c->truth_kind = TRUTH_LABEL_FILE;
        snprintf(c->truth_source, sizeof c->truth_source, "%s", c->truth);
        return;
    }
    const DatasetCase *dc = dataset_case(ds, c->dataset_index);
    int pd[3], datatype;
    double pa[4][4];
    char err[1024];
    if (nifti_read_header_info(c->pred, pd, &datatype, pa, err, sizeof err) != 0)
        alice_die("eval: %s", err);
    /* Which grid the prediction is on, by shape AND affine: a source at the packing spacing
     * whose body crop removed nothing has the packed shape, yet another orientation (not
     * RAS). Neither matching: by shape, the nearer affine where both shapes fit, and
     * check_same_grid names the mismatch (an origin a little off, not another orientation). */
    int on_packed_grid = on_grid(pd, pa, dc->dim, dc->affine);
    int on_source_grid = !on_packed_grid && on_grid(pd, pa, dc->orig_dim, dc->orig_affine);
    if (!on_packed_grid && !on_source_grid) {
        const int packed_shape = !memcmp(pd, dc->dim, sizeof pd);
        const int source_shape = !memcmp(pd, dc->orig_dim, sizeof pd);
        on_source_grid = source_shape && (!packed_shape || affine_distance(pa, dc->orig_affine) <
                                                           affine_distance(pa, dc->affine));
        on_packed_grid = packed_shape && !on_source_grid;
    }
    if (on_source_grid && dc->source_label[0] && access(dc->source_label, R_OK) == 0) {
        /* alice infer's output (the source grid): scored against the source label itself */
        c->truth_kind = TRUTH_LABEL_FILE;
        snprintf(c->truth_source, sizeof c->truth_source, "%s", dc->source_label);
        return;
    }
    if (!on_source_grid) {
        c->truth_kind = TRUTH_PACKED;
        snprintf(c->truth_source, sizeof c->truth_source, "%s (case %s" TRUTH_SOURCE_PACKED_END,
                 data_path, c->name);
        return;
    }
    c->truth_kind = TRUTH_PACKED_MAPPED;
    snprintf(c->truth_source, sizeof c->truth_source,
             "%s (case %s" TRUTH_SOURCE_MAPPED_END, data_path, c->name);
    const char *missing = dc->source_label[0] ? dc->source_label : "(none recorded)";
    if (packing_kept_voxels(dc)) {
        log_warn("eval: %s is not readable; case %s is scored against %s's packed label mapped "
                 "back to the source grid (the packing kept the source's voxels: the same "
                 "labels where the body crop kept them)", missing, c->name, data_path);
        return;
    }
    if (!allow_packed_truth)
        alice_die("eval: case %s's source label %s is not readable, and %s packed it at %g,%g,%g "
                  "mm from another spacing: its packed label mapped back differs from the source "
                  "label by the resampling (a perfect prediction would score below 1). Restore "
                  "the file at that path, or give the label folder with --labels DIR; "
                  "--allow-packed-truth scores against the packed label anyway", c->name,
                  missing, data_path, dc->spacing[0], dc->spacing[1], dc->spacing[2]);
    log_warn("eval: %s is not readable; case %s is scored against %s's packed label mapped back "
             "to the source grid, resampled by the packing (--allow-packed-truth)", missing,
             c->name, data_path);
}

/* Scores one case into dsc/nsd rows, and its truth's organ sizes into truth_voxels. */
static void score_case(const EvalCase *c, Dataset *ds, const LabelSet *set,
                       EvalProtocol protocol, int allow_unknown, double *dsc, double *nsd,
                       double *truth_voxels)
{
    int pd[3], td[3];
    double pa[4][4], ta[4][4], spacing[3];
    uint8_t *pred = read_labels(c->pred, pd, pa);
    uint8_t *truth;
    const char *truth_file = NULL;   /* the NIfTI the truth came from; NULL: a packed label */
    if (c->truth_kind == TRUTH_LABEL_FILE) {
        truth_file = c->truth_source;   /* choose_truth put the label file's path there */
        truth = read_labels(truth_file, td, ta);
    } else {
        const DatasetCase *dc = dataset_case(ds, c->dataset_index);
        Volume v;
        dataset_read_case(ds, c->dataset_index, &v);
        memcpy(td, v.dim, sizeof td);
        memcpy(ta, v.affine, sizeof ta);
        truth = v.label;
        v.label = NULL;
        volume_free(&v);
        if (c->truth_kind == TRUTH_PACKED_MAPPED) {
            const size_t n = (size_t)dc->orig_dim[0] * dc->orig_dim[1] * dc->orig_dim[2];
            uint8_t *back = xmalloc(n);
            int edge_high[3];
            geometry_source_edge_faces(dc->orig_dim, (const double (*)[4])dc->orig_affine,
                                       dc->spacing, dc->crop_hi, edge_high);
            geometry_label_to_original(truth, td, (const double (*)[4])ta, dc->orig_dim,
                                       (const double (*)[4])dc->orig_affine, edge_high, back);
            free(truth);
            truth = back;
            memcpy(td, dc->orig_dim, sizeof td);
            memcpy(ta, dc->orig_affine, sizeof ta);
        }
    }
    check_same_grid(c->pred, pd, pa, c->truth_source, td, ta);
    size_t histogram[256];
    label_histogram(pred, pd, histogram);
    check_known_ids(histogram, set, c->pred, allow_unknown);
    label_histogram(truth, td, histogram);
    check_known_ids(histogram, set, c->truth_source, allow_unknown);
    /* the truth's organ sizes, from the same pass */
    for (int o = 0; o < set->count; o++) truth_voxels[o] = (double)histogram[set->organs[o].id];
    /* A truth from the data set has no header: the prediction's, on the same grid (checked
     * above), gives the voxel size (infer writes the source's pixdim there). */
    truth_spacing(truth_file ? truth_file : c->pred, ta, spacing);
    case_scores(truth, pred, td, spacing, set, protocol, dsc, nsd);
    free(pred);
    free(truth);
}

/* BTCV's files are imgXXXX/labelXXXX and number the organs its own way (1 spleen); FLARE's
 * (and the phantoms') are NAME_0000/NAME (1 liver). Scoring one with the other's label_set
 * gives every row another organ's name and tolerance without any error: say so. */
static void warn_label_convention(const EvalCase *cases, int n, const LabelSet *set)
{
    int btcv_named = 0;
    for (int c = 0; c < n; c++) {
        const char *s = cases[c].name;
        btcv_named += !strncmp(s, "img", 3) && s[3] >= '0' && s[3] <= '9';
    }
    const int btcv_set = !strcmp(set->name, "btcv");
    if (n > 0 && btcv_named == n && !btcv_set)
        log_warn("eval: the cases are named as BTCV's (imgXXXX), but label_set = %s: BTCV numbers "
                 "its organs its own way (1 = spleen), so this table's organ names and "
                 "tolerances would be another organ's; set label_set = btcv", set->name);
    if (btcv_named == 0 && btcv_set)
        log_warn("eval: label_set = btcv, but no case is named as BTCV's (imgXXXX): FLARE-style "
                 "data (and the phantoms) number the organs FLARE's way (1 = liver), so this "
                 "table's organ names and tolerances would be another organ's; set label_set = "
                 "flare unless these labels really follow BTCV's numbering");
}

/* Per organ the mean over cases, then the mean over organs, each of the scored (non-NaN)
 * values, as analysis/tables.py takes them. */
static void print_means(const LabelSet *set, int ncases, const double *dsc, const double *nsd)
{
    printf("\n%-22s %6s %8s %8s\n", "organ", "tol_mm", "DSC", "NSD");
    double *organ_d = xmalloc(sizeof(double) * (size_t)set->count);
    double *organ_n = xmalloc(sizeof(double) * (size_t)set->count);
    const double mean_d = metrics_organ_averaged_mean(dsc, ncases, set->count, organ_d, NULL);
    const double mean_n = metrics_organ_averaged_mean(nsd, ncases, set->count, organ_n, NULL);
    for (int o = 0; o < set->count; o++)
        printf("%-22s %6.1f %8.4f %8.4f\n", set->organs[o].name, set->organs[o].tolerance_mm,
               organ_d[o], organ_n[o]);
    printf("%-22s %6s %8.4f %8.4f\n", "mean", "", mean_d, mean_n);
    fflush(stdout);
    free(organ_d);
    free(organ_n);
}

/* What made each prediction: the description alice infer records in its files ("alice infer:
 * <checkpoint> (step N)"; alice phantom's labels say "alice phantom: ..."), "" for files from
 * elsewhere (another tool's descrip names no source). malloc'd strings. */
static char **prediction_sources(const EvalCase *cases, int n)
{
    char **sources = xmalloc(sizeof(char *) * (size_t)(n > 0 ? n : 1));
    for (int c = 0; c < n; c++) {
        char text[PREDICTION_SOURCE_LEN] = "", err[512];
        if (nifti_read_description(cases[c].pred, text, sizeof text, err, sizeof err) != 0)
            alice_die("eval: %s", err);
        if (strncmp(text, PREDICTION_SOURCE_PREFIX, strlen(PREDICTION_SOURCE_PREFIX)) != 0)
            text[0] = '\0';
        sources[c] = xmalloc(strlen(text) + 1);
        memcpy(sources[c], text, strlen(text) + 1);
    }
    return sources;
}

/* The distinct non-empty strings of s[0..n-1], one per line in first-seen order (malloc'd). */
static char *distinct_lines(char *const *s, int n)
{
    size_t len = 1;
    for (int i = 0; i < n; i++) len += strlen(s[i]) + 1;
    char *out = xmalloc(len), *end = out;
    *out = '\0';
    for (int i = 0; i < n; i++) {
        int seen = !s[i][0];
        for (int j = 0; j < i && !seen; j++) seen = !strcmp(s[i], s[j]);
        if (seen) continue;
        end += sprintf(end, "%s%s", end == out ? "" : "\n", s[i]);
    }
    return out;
}

/* The distinct alice infer sources among cases[0..n-1] whose fold is `fold` (any fold when
 * ds is NULL), "; " between them, into out; returns their count. Other sources (alice
 * phantom's labels, scored as predictions in tests and demos, name their case each; another
 * tool's) do not count. */
static int infer_sources_of_fold(const EvalCase *cases, char *const *sources, int n,
                                 const Dataset *ds, int fold, char *out, size_t size)
{
    int count = 0;
    out[0] = '\0';
    for (int c = 0; c < n; c++) {
        if (strncmp(sources[c], PREDICTION_SOURCE_INFER, strlen(PREDICTION_SOURCE_INFER)) ||
            (ds && dataset_case(ds, cases[c].dataset_index)->fold != fold))
            continue;
        int seen = 0;
        for (int d = 0; d < c && !seen; d++)
            seen = !strcmp(sources[d], sources[c]) &&
                   (!ds || dataset_case(ds, cases[d].dataset_index)->fold == fold);
        if (seen) continue;
        const size_t at = strlen(out);
        snprintf(out + at, size - at, "%s%s", count ? "; " : "", sources[c]);
        count++;
    }
    return count;
}

/* Predictions of more than one model for one fold's cases (an alice infer into a reused --out
 * that stopped part-way, or of another checkpoint over some cases): its means would mix
 * models, so it is said, with each checkpoint, though the scores are still written (results.h5
 * records every case's source). A cross-validation's folder holds one checkpoint per fold by
 * design (slurm/infer.sbatch), so with --data the sources are compared fold by fold; with
 * --labels, which has no folds, several checkpoints are only listed. */
static void warn_mixed_sources(const char *pred_dir, const EvalCase *cases, char *const *sources,
                               int n, const Dataset *ds)
{
    char listed[4096];
    if (!ds) {
        const int count = infer_sources_of_fold(cases, sources, n, NULL, 0, listed,
                                                sizeof listed);
        if (count > 1)
            log_info("eval: the predictions in %s come from %d checkpoints (%s)", pred_dir,
                     count, listed);
        return;
    }
    for (int fold = 0; fold < dataset_num_folds(ds); fold++) {
        const int count = infer_sources_of_fold(cases, sources, n, ds, fold, listed,
                                                sizeof listed);
        if (count > 1)
            log_warn("eval: the predictions in %s of fold %d's cases come from %d checkpoints "
                     "(%s): their scores mix models (an alice infer into a reused --out that "
                     "stopped part-way?); predict into an empty folder to score one model",
                     pred_dir, fold, count, listed);
    }
}

int cmd_eval(int argc, char **argv)
{
    Config cfg;
    config_defaults(&cfg);
    const char *pred_dir = NULL, *labels_dir = NULL, *data_path = NULL, *out = "results", *checkpoint = "";
    const char *select = "all";
    int allow_unknown = 0, allow_packed_truth = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) { usage(stdout); return 0; }
        if (cli_config_arg(&cfg, argc, argv, &i)) continue;
        if (!strcmp(a, "--allow-unknown-labels")) { allow_unknown = 1; continue; }
        if (!strcmp(a, "--allow-packed-truth")) { allow_packed_truth = 1; continue; }
        const char **slot = !strcmp(a, "--pred") ? &pred_dir : !strcmp(a, "--labels") ? &labels_dir
                          : !strcmp(a, "--data") ? &data_path : !strcmp(a, "--out") ? &out
                          : !strcmp(a, "--checkpoint") ? &checkpoint
                          : !strcmp(a, "--cases") ? &select : NULL;
        if (!slot) { usage(stderr); alice_die("eval: unknown argument '%s'", a); }
        if (i + 1 >= argc) alice_die("eval: %s needs a value", a);
        *slot = argv[++i];
    }
    static const char *const used[] = {"label_set", "eval_protocol", "threads", NULL};
    cli_only_keys(&cfg, "eval", used);
    if (!pred_dir) { usage(stderr); alice_die("eval: --pred DIR is required (the folder alice infer wrote)"); }
    struct stat pst;
    if (stat(pred_dir, &pst) != 0 || !S_ISDIR(pst.st_mode))
        alice_die("eval: --pred %s: no such folder; give the folder alice infer wrote (its --out)",
                  pred_dir);
    if (!labels_dir == !data_path) {
        usage(stderr);
        alice_die("eval: give exactly one source of truth: --labels DIR (label NIfTI files) or --data dataset.h5");
    }
    const int fold = cli_case_fold("eval", select);
    if (fold >= 0 && !data_path)
        alice_die("eval: --cases %s needs --data dataset.h5 (the folds are the data set's); with "
                  "--labels every label file with a prediction is scored", select);
    /* before any case is scored: on real data the scoring takes minutes */
    cli_check_out_path("eval", out, 1);
    results_check_replaceable("eval", out);
    const LabelSet *set = label_set_find(cfg.label_set);
    if (!set) alice_die("eval: label_set=%s is not known; use %s", cfg.label_set, label_set_names());
    /* the registry admits only plain|flare22 (config_keys.c) */
    const EvalProtocol protocol = (EvalProtocol)eval_protocol_from_name(cfg.eval_protocol);
    cli_print_config(&cfg, "eval");

    /* the ranks of the node share its cores: threads (docs/CONFIG.md), as the training
     * commands take it; eval reduces on the host, never through NCCL */
    Dist dist;
    dist_init(&dist, backend_cpu());
    train_set_threads(&cfg, &dist);
    const int rank = dist.rank, size = dist.size;
    Dataset *ds = data_path ? dataset_open(data_path) : NULL;
    /* Rank 0 lists the cases and their predictions and sends the list: ranks that saw the
     * folders differently (files still arriving) would score different cases and reduce
     * mismatched tables. */
    int ncases = 0, nscored = 0;
    EvalCase *cases = NULL;
    char *skipped = xcalloc(1, 1);   /* rank 0: the cases without a prediction, one per line */
    size_t skipped_len = 0;
    if (rank == 0) {
        cases = ds ? cases_from_dataset(ds, data_path, fold, &ncases)
                   : cases_from_label_dir(labels_dir, &ncases);
        warn_orphan_predictions(pred_dir, cases, ncases, ds, ds ? data_path : labels_dir);
        for (int c = 0; c < ncases; c++) {
            find_prediction(pred_dir, &cases[c]);
            if (cases[c].pred[0]) {
                cases[nscored++] = cases[c];
                continue;
            }
            log_warn("eval: no prediction for case %s in %s (skipped; results.h5 lists it in "
                     "its skipped_cases attribute)", cases[c].name, pred_dir);
            const size_t add = strlen(cases[c].name) + 1;
            skipped = xrealloc(skipped, skipped_len + add + 1);
            snprintf(skipped + skipped_len, add + 1, "%s%s", skipped_len ? "\n" : "",
                     cases[c].name);
            skipped_len += skipped_len ? add : add - 1;
        }
        if (nscored < ncases)
            log_warn("eval: %d of %d cases have no prediction; scoring the other %d",
                     ncases - nscored, ncases, nscored);
        warn_label_convention(cases, nscored, set);
        for (int c = 0; c < nscored; c++)
            choose_truth(&cases[c], ds, data_path, allow_packed_truth);
    }
    CHECK_MPI(MPI_Bcast(&nscored, 1, MPI_INT, 0, MPI_COMM_WORLD));
    if (nscored == 0)
        alice_die("eval: no prediction in %s matches a case of %s; predictions are named <case>.nii.gz",
                  pred_dir, ds ? data_path : labels_dir);
    if (rank != 0) cases = xmalloc(sizeof(EvalCase) * (size_t)nscored);
    ALICE_ASSERT((double)nscored * sizeof(EvalCase) < 2147483647.0,
                 "%d cases: the case list exceeds one MPI message", nscored);
    CHECK_MPI(MPI_Bcast(cases, (int)(sizeof(EvalCase) * (size_t)nscored), MPI_BYTE, 0,
                        MPI_COMM_WORLD));
    const size_t cells = (size_t)nscored * (size_t)set->count;
    double *dsc = xcalloc(cells, sizeof(double)), *nsd = xcalloc(cells, sizeof(double));
    double *truth_voxels = xcalloc(cells, sizeof(double));
    if (rank == 0)
        log_info("eval: %d case(s) on %d rank(s) x %d OpenMP thread(s)", nscored, size,
                 omp_get_max_threads());
    double t0 = wall_seconds();
    for (int c = rank; c < nscored; c += size) {
        double tc = wall_seconds();
        score_case(&cases[c], ds, set, protocol, allow_unknown,
                   dsc + (size_t)c * set->count,
                   nsd + (size_t)c * set->count, truth_voxels + (size_t)c * set->count);
        if (size == 1) log_info("eval: %-24s %3d/%d  %.2f s", cases[c].name, c + 1, nscored, wall_seconds() - tc);
    }
    /* every cell is written by exactly one rank, zero elsewhere: a sum gathers them */
    CHECK_MPI(MPI_Reduce(rank == 0 ? MPI_IN_PLACE : dsc, dsc, (int)cells, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD));
    CHECK_MPI(MPI_Reduce(rank == 0 ? MPI_IN_PLACE : nsd, nsd, (int)cells, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD));
    CHECK_MPI(MPI_Reduce(rank == 0 ? MPI_IN_PLACE : truth_voxels, truth_voxels, (int)cells,
                         MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD));
    if (rank == 0) {
        const char **case_names = xmalloc(sizeof(char *) * (size_t)nscored);
        const char **organ_names = xmalloc(sizeof(char *) * (size_t)set->count);
        int *ids = xmalloc(sizeof(int) * (size_t)set->count);
        double *tol = xmalloc(sizeof(double) * (size_t)set->count);
        const char **truth_sources = xmalloc(sizeof(char *) * (size_t)nscored);
        for (int c = 0; c < nscored; c++) {
            case_names[c] = cases[c].name;
            truth_sources[c] = cases[c].truth_source;
        }
        for (int o = 0; o < set->count; o++) {
            organ_names[o] = set->organs[o].name;
            ids[o] = set->organs[o].id;
            tol[o] = set->organs[o].tolerance_mm;
        }
        char **sources = prediction_sources(cases, nscored);
        warn_mixed_sources(pred_dir, cases, sources, nscored, ds);
        char *checkpoints = checkpoint[0] ? NULL : distinct_lines(sources, nscored);
        char *config_text = config_to_text(&cfg);
        EvalResults r = {nscored, set->count, case_names, organ_names, ids, tol, dsc, nsd,
                         truth_voxels, set->name, config_text,
                         checkpoints ? checkpoints : checkpoint, pred_dir,
                         ds ? data_path : labels_dir, (const char *const *)sources, skipped,
                         truth_sources, select};
        results_write(out, &r);
        log_info("eval: %d cases x %d organs in %.2f s (%.2f s per case) -> %s.h5, %s.csv", nscored, set->count,
                 wall_seconds() - t0, (wall_seconds() - t0) / nscored, out, out);
        print_means(set, nscored, dsc, nsd);
        free(config_text);
        for (int c = 0; c < nscored; c++) free(sources[c]);
        free(sources);
        free(checkpoints);
        free(case_names);
        free(truth_sources);
        free(organ_names);
        free(ids);
        free(tol);
    }
    free(dsc);
    free(nsd);
    free(truth_voxels);
    free(cases);
    free(skipped);
    if (ds) dataset_close(ds);
    return 0;
}
