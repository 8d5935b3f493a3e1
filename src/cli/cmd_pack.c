/* `alice pack`: NIfTI volumes -> one dataset.h5 (docs/FORMAT.md). Ranks preprocess cases in
 * rounds (case r * ranks + rank in round r), then write them together with parallel HDF5.
 * Output goes to <out>.tmp.<host>.<pid> (this job's own name: two packs of one --out never
 * write one file) and is renamed when complete. */
#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/pack_discover.h"
#include "core/check.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/sysmem.h"
#include "core/timer.h"
#include "dataset_write.h"
#include "geometry.h"
#include "h5util.h"
#include "nifti_io.h"

/* Room for a message naming a case, two paths and the problem; the longest temporary suffix,
 * ".tmp." and a host name and pid. */
enum { ERR_LEN = 4096, TMP_SUFFIX_MAX = 96 };
/* The intensity range below which an image is not taken for CT in HU (air to soft tissue
 * alone spans about 1000). */
static const float MIN_HU_SPAN = 100.0f;

/* <out>.tmp.<host>.<pid> of rank 0, the same on every rank: each job writes a file of its own,
 * so a second pack of the same --out (a resubmitted sbatch) can neither truncate this one's
 * file mid-write nor remove it on its error; the renames are atomic, the last one wins. */
static void host_tag(char host[64])
{
    if (gethostname(host, 64) != 0) snprintf(host, 64, "host");
    host[63] = '\0';
    for (char *c = host; *c; c++)   /* one path component whatever the host calls itself */
        if (*c == '/' || *c == ' ') *c = '_';
}

static void job_tmp_name(char *tmp, size_t size, const char *out, int rank)
{
    char suffix[TMP_SUFFIX_MAX] = "";
    if (rank == 0) {
        char host[64];
        host_tag(host);
        snprintf(suffix, sizeof suffix, ".tmp.%s.%ld", host, (long)getpid());
    }
    CHECK_MPI(MPI_Bcast(suffix, (int)sizeof suffix, MPI_CHAR, 0, MPI_COMM_WORLD));
    snprintf(tmp, size, "%s%s", out, suffix);
}

/* Folds without a labelled case, when some case has a label (a data set for pre-training alone
 * has none, and needs none): alice finetune refuses such a fold, which a chain of Slurm jobs
 * would find out only after the whole pre-training. Said now, with the fix. */
static void warn_unlabelled_folds(const int *fold_labelled, int num_folds, int skipped,
                                  const char *out)
{
    int labelled = 0, empty = 0;
    char list[256] = "";
    for (int k = 0; k < num_folds; k++) {
        labelled += fold_labelled[k];
        if (fold_labelled[k]) continue;
        const size_t used = strlen(list);
        if (used + 16 < sizeof list)
            snprintf(list + used, sizeof list - used, "%s%d", empty ? ", " : "", k);
        empty++;
    }
    if (labelled == 0 || empty == 0) return;
    char fix[200];
    if (labelled < 2)   /* one fold validates while the others train */
        snprintf(fix, sizeof fix, "fine-tuning needs 2 labelled cases at the least (one fold "
                 "to validate, the others to train): add labelled cases");
    else if (labelled < num_folds)   /* labelled cases are dealt round the folds first */
        snprintf(fix, sizeof fix, "pack again with num_folds = %d%s, or with more labelled "
                 "cases", labelled, skipped ? " once the skipped cases are fixed or removed" : "");
    else   /* enough labelled cases: the skipped ones held the empty folds' places in the deal */
        snprintf(fix, sizeof fix, "fix or remove the %d skipped case(s), whose places in the "
                 "deal those folds had, and pack again", skipped);
    log_warn("alice pack: %d of the %d folds of %s hold no labelled case (folds %s; %d labelled "
             "case(s) in all): alice finetune refuses those folds; %s, if you will fine-tune on "
             "every fold", empty, num_folds, out, list, labelled, fix);
}

/* 1 when temporary file name `name` (<base>.tmp.<host>.<pid>) is a pack's of this host whose
 * process is gone (killed before its rename: SIGTERM, SIGKILL, a time limit), so nobody
 * writes it; a pack of another host, or one still running here, may be writing it. */
static int tmp_of_dead_pack_here(const char *name, const char *prefix)
{
    char host[64], want[80];
    host_tag(host);
    snprintf(want, sizeof want, ".%s.", host);
    const char *rest = name + strlen(prefix);
    if (strncmp(rest, want, strlen(want)) != 0) return 0;
    char *end = NULL;
    const long pid = strtol(rest + strlen(want), &end, 10);
    if (!end || *end || pid <= 0) return 0;
    return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* Temporary files of earlier packs of `out` left in its folder (a pack killed before its
 * rename), or of one writing it now: those of dead packs on this host removed, the others
 * named with their sizes, so the space can be reclaimed. Called before this job creates its
 * own. */
static void report_leftover_tmp(const char *out)
{
    char dir_buf[DATASET_PATH_LEN], base_buf[DATASET_PATH_LEN];
    snprintf(dir_buf, sizeof dir_buf, "%s", out);
    snprintf(base_buf, sizeof base_buf, "%s", out);
    const char *dir = dirname(dir_buf), *base = basename(base_buf);
    char prefix[DATASET_PATH_LEN + 8];
    snprintf(prefix, sizeof prefix, "%s.tmp", base);
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0) continue;
        char path[2 * DATASET_PATH_LEN + 2];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) != 0) continue;
        if (tmp_of_dead_pack_here(e->d_name, prefix) && unlink(path) == 0) {
            log_warn("alice pack: removed %s (%.1f MiB), the temporary file of a pack of %s on "
                     "this host that was killed before it finished", path,
                     st.st_size / 1048576.0, out);
            continue;
        }
        log_warn("alice pack: %s (%.1f MiB) is a temporary file of another pack of %s, killed "
                 "before it finished or running now; remove it when no pack of %s runs", path,
                 st.st_size / 1048576.0, out, out);
    }
    closedir(d);
}

/* Outcome of one case on its rank, exchanged every round. */
typedef struct {
    int index;                 /* case index, -1 when the rank had none */
    int ok;
    char error[ERR_LEN];
} CaseStatus;

/* The resampled grid of a case must be a volume (2 voxels per axis at least) that fits in
 * memory with the source-grid copies packing holds: a target spacing typed 10x too fine
 * (spacing=0.05), a header's voxel size in the wrong unit, or too little memory per rank
 * ended in an allocation failure naming no case. */
static int resampled_grid_problem(const PackInput *in, const int dim[3], const double affine[4][4],
                                  const float spacing[3], char *err, size_t errlen)
{
    int rd[3];
    geometry_pack_resampled_dim(dim, affine, spacing, rd);
    float sp[3];
    geometry_spacing(affine, sp);
    for (int a = 0; a < 3; a++)
        if (rd[a] < 2) {
            snprintf(err, errlen, "case %s: %s resampled to spacing %g,%g,%g mm keeps %d voxel(s) "
                     "along RAS axis %d (its voxels are %g x %g x %g mm, %dx%dx%d): check the "
                     "header's voxel size and unit, or the spacing key", in->name, in->image,
                     spacing[0], spacing[1], spacing[2], rd[a], a, sp[0], sp[1], sp[2], dim[0],
                     dim[1], dim[2]);
            return -1;
        }
    /* Beside the image already read (n floats): the label as floats and both reoriented to RAS
     * (geometry_pack_case holds all four at once), then the resampled image and label (fp32
     * each while resampling) and the packed uint8 label. */
    const double n = (double)dim[0] * dim[1] * dim[2];
    const double need = n * sizeof(float) * (in->label[0] ? 3 : 1) +
                        (double)rd[0] * rd[1] * rd[2] * (2 * sizeof(float) + 1);
    const double room = host_available_bytes();
    if (need > room) {
        snprintf(err, errlen, "case %s: %s resampled to spacing %g,%g,%g mm is a %dx%dx%d grid "
                 "needing %.1f GiB, more than the %.1f GiB this process may use (the memory "
                 "available, the job's cgroup limit or ulimit -v; its voxels are %g x %g x %g "
                 "mm): check the spacing key (a typo?), or pack with fewer ranks per node",
                 in->name, in->image, spacing[0], spacing[1], spacing[2], rd[0], rd[1], rd[2],
                 need / 1073741824.0, room / 1073741824.0, sp[0], sp[1], sp[2]);
        return -1;
    }
    return 0;
}

/* Reads, checks and preprocesses one case. Returns 0, or -1 with the reason in err. */
static int prepare_case(const PackInput *in, const float spacing[3], int max_label, DatasetCase *meta,
                        float **image_out, uint8_t **label_out, char *err, size_t errlen)
{
    float *image = NULL, *label = NULL;
    int dim[3], ldim[3];
    double affine[4][4], laffine[4][4];
    char msg[2 * DATASET_PATH_LEN];
    if (nifti_read_volume(in->image, &image, dim, affine, msg, sizeof msg) != 0) {
        snprintf(err, errlen, "case %s: %s", in->name, msg);
        return -1;
    }
    const size_t n = (size_t)dim[0] * dim[1] * dim[2];
    /* one pass: non-finite voxels, and the range the HU check below reads */
    size_t bad = 0, first_bad = 0;
    float lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(image[i])) {
            if (bad++ == 0) first_bad = i;
            continue;
        }
        if (image[i] < lo) lo = image[i];
        if (image[i] > hi) hi = image[i];
    }
    if (bad) {
        size_t at[3];
        volume_position(dim, first_bad, at);
        snprintf(err, errlen, "case %s: %s holds %zu NaN/inf voxels (the first at voxel (%zu, %zu, "
                 "%zu)); fix or exclude the image", in->name, in->image, bad, at[0], at[1], at[2]);
        free(image);
        return -1;
    }
    /* The data set stores int16 HU: an image in other units (a [0, 1] float normalisation, a
     * MR scan) is rounded to a few values, its signal gone. CT spans about -1000..+1000 HU. */
    if (hi - lo < MIN_HU_SPAN)
        log_warn("case %s: %s spans only %g..%g, not CT in Hounsfield units (about -1000 in "
                 "air to +1000 in bone)? it is stored rounded to int16 HU", in->name, in->image,
                 lo, hi);
    if (resampled_grid_problem(in, dim, affine, spacing, err, errlen) != 0) {
        free(image);
        return -1;
    }
    int xform_codes[3];   /* its predictions carry them */
    if (nifti_read_xform_codes(in->image, xform_codes, msg, sizeof msg) != 0) {
        snprintf(err, errlen, "case %s: %s", in->name, msg);
        free(image);
        return -1;
    }
    double qform[NIFTI_QFORM_PARAMS];   /* and its own qform, unchanged */
    const int has_qform = nifti_read_qform_params(in->image, qform, msg, sizeof msg);
    if (has_qform < 0) {
        snprintf(err, errlen, "case %s: %s", in->name, msg);
        free(image);
        return -1;
    }
    if (xform_codes[0] == 0 && xform_codes[1] == 0)
        log_warn("case %s: %s has neither sform nor qform (NIfTI method 1): read as the standard "
                 "says, voxel axes along RAS from pixdim alone, where nibabel (and so MONAI) "
                 "reads it x flipped; left and right are not in the file: check them, or give it "
                 "an orientation (nibabel: img.set_qform(affine, code=1))", in->name, in->image);
    if (in->label[0]) {
        if (nifti_read_volume(in->label, &label, ldim, laffine, msg, sizeof msg) != 0) {
            snprintf(err, errlen, "case %s: %s", in->name, msg);
            free(image);
            return -1;
        }
        const char *problem = NULL;
        char detail[256] = "";
        if (memcmp(dim, ldim, sizeof dim) != 0) {
            problem = "shape";
            snprintf(detail, sizeof detail, "image %dx%dx%d, label %dx%dx%d", dim[0], dim[1], dim[2],
                     ldim[0], ldim[1], ldim[2]);
        } else if (geometry_grid_mismatch(affine, laffine, dim) >= 0) {
            /* name the entry that differs: an origin, or a direction/spacing column */
            const int e = geometry_grid_mismatch(affine, laffine, dim), r = e / 4, c = e % 4;
            problem = "affine";
            snprintf(detail, sizeof detail, "entry [%d][%d] (%s): image %.9g, label %.9g, %.3g "
                     "apart", r, c, c == 3 ? "origin, mm" : "direction x spacing", affine[r][c],
                     laffine[r][c], fabs(affine[r][c] - laffine[r][c]));
        }
        if (problem) {
            snprintf(err, errlen, "case %s: label %s does not match the image %s (%s); the label must "
                     "be on the image's grid", in->name, in->label, problem, detail);
            free(image);
            free(label);
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            float v = label[i];
            if (!(v >= 0 && v <= max_label && v == floorf(v))) {
                size_t at[3];
                volume_position(dim, i, at);
                if (v >= 0 && v <= max_label)   /* in range: a label resampled with interpolation */
                    snprintf(err, errlen, "case %s: label %s holds value %.9g at voxel (%zu, %zu, "
                             "%zu), which is not an integer class id (was it resampled with linear "
                             "interpolation? resample labels with nearest neighbour)", in->name,
                             in->label, (double)v, at[0], at[1], at[2]);
                else
                    snprintf(err, errlen, "case %s: label %s holds value %g at voxel (%zu, %zu, "
                             "%zu), outside the label set 0..%d (check the label convention or "
                             "num_classes)", in->name, in->label, (double)v, at[0], at[1], at[2],
                             max_label);
                free(image);
                free(label);
                return -1;
            }
        }
    }
    PackGeometry g;
    float *packed = NULL;
    geometry_pack_case(image, label, dim, (const double (*)[4])affine, spacing, &g, &packed, label_out);
    free(image);
    free(label);
    memset(meta, 0, sizeof *meta);
    snprintf(meta->name, sizeof meta->name, "%s", in->name);
    memcpy(meta->dim, g.dim, sizeof meta->dim);
    memcpy(meta->spacing, g.spacing, sizeof meta->spacing);
    memcpy(meta->affine, g.affine, sizeof meta->affine);
    meta->has_label = in->label[0] != '\0';
    memcpy(meta->orig_dim, g.orig_dim, sizeof meta->orig_dim);
    memcpy(meta->orig_affine, g.orig_affine, sizeof meta->orig_affine);
    memcpy(meta->orig_xform_codes, xform_codes, sizeof meta->orig_xform_codes);
    _Static_assert(sizeof meta->orig_qform == sizeof qform, "the qform's parameter count");
    meta->has_orig_qform = has_qform;
    if (has_qform) memcpy(meta->orig_qform, qform, sizeof meta->orig_qform);
    memcpy(meta->crop_lo, g.crop_lo, sizeof meta->crop_lo);
    memcpy(meta->crop_hi, g.crop_hi, sizeof meta->crop_hi);
    memcpy(meta->ras_axis, g.ras_axis, sizeof meta->ras_axis);
    memcpy(meta->ras_flip, g.ras_flip, sizeof meta->ras_flip);
    /* absolute: alice eval --data reads the source label back, from wherever it is run */
    absolute_path(in->image, meta->source_image, sizeof meta->source_image);
    absolute_path(in->label, meta->source_label, sizeof meta->source_label);
    *image_out = packed;
    return 0;
}

/* Round to int16 HU; values beyond int16 (rare calibration junk) are clamped, and counted in
 * *clamped so the case can say so (a scan stored with another scaling would lose its range). */
static int16_t *to_int16(const float *v, const int dim[3], size_t *clamped)
{
    const size_t n = (size_t)dim[0] * dim[1] * dim[2];
    int16_t *out = xmalloc(n * sizeof(int16_t));
    size_t beyond = 0;
    for (size_t i = 0; i < n; i++) {
        /* clamped as float first: lrintf of a value beyond long (1e20) is LONG_MIN */
        const float c = v[i] < -32768.0f ? -32768.0f : v[i] > 32767.0f ? 32767.0f : v[i];
        beyond += v[i] < -32768.5f || v[i] > 32767.5f;   /* beyond what rounding reaches */
        out[i] = (int16_t)lrintf(c);
    }
    *clamped = beyond;
    return out;
}

static void usage(void)
{
    printf("usage: alice pack (--input DIR | --list FILE) --out dataset.h5 [--force] [--keep-going]\n"
           "                  [spacing=X,Y,Z] [num_folds=K] [seed=S] [num_classes=N] [--config FILE]\n"
           "  Reads NIfTI images (and labels where present), reorients them to RAS, resamples to\n"
           "  `spacing` (trilinear image, nearest label), crops to the body and writes one HDF5\n"
           "  data set (docs/FORMAT.md). Cases are found by FLARE 2022 naming (NAME_0000.nii.gz +\n"
           "  NAME.nii.gz beside it or in ../labelsTr), BTCV naming (imgX.nii.gz + labelX.nii.gz)\n"
           "  or a list file of 'image [label]' lines (paths relative to the list file; separate\n"
           "  them with a tab when they hold spaces; '#' comments). Folds are assigned from\n"
           "  `seed`.\n"
           "  --force overwrites an existing output; --keep-going skips bad cases and lists them.\n"
           "  Run under mpirun for several ranks: each preprocesses a share of the cases.\n");
}

int cmd_pack(int argc, char **argv)
{
    Config cfg;
    config_defaults(&cfg);
    const char *input = NULL, *list = NULL, *out = NULL;
    int force = 0, keep_going = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_next = i + 1 < argc;
        if (cli_is_help(a)) { usage(); return 0; }
        if (!strcmp(a, "--input") && has_next) input = argv[++i];
        else if (!strcmp(a, "--list") && has_next) list = argv[++i];
        else if (!strcmp(a, "--out") && has_next) out = argv[++i];
        else if (!strcmp(a, "--force")) force = 1;
        else if (!strcmp(a, "--keep-going")) keep_going = 1;
        else if (!cli_config_arg(&cfg, argc, argv, &i))
            alice_die("alice pack: unknown or incomplete argument '%s' (see alice pack --help)", a);
    }
    /* the keys this command reads (threads: the Slurm script passes the task's cores) */
    static const char *const used[] = {"spacing", "num_folds", "seed", "num_classes", "threads",
                                       NULL};
    cli_only_keys(&cfg, "pack", used);
    if (!input == !list) alice_die("alice pack: give exactly one of --input DIR or --list FILE");
    if (!out || !out[0]) alice_die("alice pack: --out dataset.h5 is required");
    /* the data set is written to a temporary name first (job_tmp_name): a name cut to fit
     * would be another file, perhaps --out itself, truncated by the create */
    if (strlen(out) + TMP_SUFFIX_MAX > DATASET_PATH_LEN)
        alice_die("alice pack: --out %s is longer than %d characters; use a shorter path", out,
                  (int)(DATASET_PATH_LEN - TMP_SUFFIX_MAX));
    char out_target[DATASET_PATH_LEN];
    if (output_link_target(out, out_target, sizeof out_target - TMP_SUFFIX_MAX)) {
        log_info("alice pack: --out %s is a symbolic link: writing its target %s", out,
                 out_target);
        out = out_target;
    }
    const float *spacing = cfg.spacing;   /* validated by the key's type and range */
    const int max_label = cfg.num_classes - 1;

    int rank = 0, nranks = 1;
    CHECK_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    CHECK_MPI(MPI_Comm_size(MPI_COMM_WORLD, &nranks));
    struct stat out_st;
    if (stat(out, &out_st) == 0 && S_ISDIR(out_st.st_mode))
        alice_die("alice pack: --out %s is a directory; name the data set file, e.g. "
                  "--out %s/dataset.h5", out, out);
    if (access(out, F_OK) == 0 && !force)
        alice_die("%s already exists; pass --force to overwrite it, or choose another --out", out);

    /* Rank 0 scans the inputs and sends the list: ranks that saw a shared folder differently
     * (files still arriving, client caches) would run different rounds of the collective
     * writes and hang or write a wrong index. */
    PackInput *cases = NULL;
    int n = 0;
    if (rank == 0) n = input ? pack_discover_dir(input, &cases) : pack_discover_list(list, &cases);
    CHECK_MPI(MPI_Bcast(&n, 1, MPI_INT, 0, MPI_COMM_WORLD));
    if (rank != 0) cases = xmalloc(sizeof(PackInput) * (size_t)n);
    ALICE_ASSERT((double)n * sizeof(PackInput) < 2147483647.0,
                 "%d cases: the case list exceeds one MPI message", n);
    CHECK_MPI(MPI_Bcast(cases, (int)(sizeof(PackInput) * (size_t)n), MPI_BYTE, 0, MPI_COMM_WORLD));
    int *fold = xmalloc(sizeof(int) * (size_t)n), *perm = xmalloc(sizeof(int) * (size_t)n);
    RngStream fs;
    rng_init(&fs, (uint64_t)cfg.seed, 0, 0, RNG_FOLD);
    rng_permutation(&fs, perm, n);
    /* Dealt in the shuffled order, the labelled cases round the folds first and the unlabelled
     * ones on their own: dealt together, labelled cases could bunch and leave a fold without
     * one (which fine-tuning refuses) although there are as many as folds. With every case
     * labelled this is the plain deal. */
    int found_labelled = 0;
    for (int i = 0; i < n; i++) found_labelled += cases[i].label[0] != '\0';
    /* the unlabelled ones go on round from where the labelled left off: the folds' sizes stay
     * as even as one deal over all cases makes them */
    int dealt_labelled = 0, dealt_unlabelled = found_labelled;
    for (int i = 0; i < n; i++) {
        const int c = perm[i];
        fold[c] = (cases[c].label[0] ? dealt_labelled++ : dealt_unlabelled++) % cfg.num_folds;
    }
    free(perm);

    char tmp[DATASET_PATH_LEN];
    job_tmp_name(tmp, sizeof tmp, out, rank);
    if (rank == 0) report_leftover_tmp(out);
    char err[ERR_LEN];
    DatasetWriter *w = dataset_writer_create(tmp, MPI_COMM_WORLD, spacing, cfg.num_folds, err, sizeof err);
    if (!w) alice_die("%s", err);
    h5_pending_tmp(tmp, out);   /* a write failing on any rank removes it (io/h5util.h) */
    int labelled = 0;
    for (int i = 0; i < n; i++) labelled += cases[i].label[0] != '\0';
    /* a label that was not found packs its case unlabelled: say how many have one */
    log_info("alice pack: %d case(s), %d with a label, from %s -> %s on %d rank(s); spacing "
             "%g,%g,%g mm, %d folds", n, labelled, input ? input : list, out, nranks, spacing[0],
             spacing[1], spacing[2], cfg.num_folds);

    const double t0 = wall_seconds();
    CaseStatus *status = xmalloc(sizeof(CaseStatus) * (size_t)nranks);
    char **skipped = xcalloc((size_t)n, sizeof(char *));
    int nskipped = 0, failed = 0;
    int *fold_labelled = xcalloc((size_t)cfg.num_folds, sizeof(int));   /* written, labelled */
    for (int base = 0; base < n && !failed; base += nranks) {
        const int c = base + rank;
        CaseStatus mine = {.index = -1, .ok = 0, .error = ""};
        DatasetCase meta;
        float *image = NULL;
        uint8_t *label = NULL;
        if (c < n) {
            mine.index = c;
            mine.ok = prepare_case(&cases[c], spacing, max_label, &meta, &image, &label, mine.error,
                                   sizeof mine.error) == 0;
            meta.fold = fold[c];
        }
        CHECK_MPI(MPI_Allgather(&mine, (int)sizeof mine, MPI_BYTE, status, (int)sizeof mine, MPI_BYTE,
                                MPI_COMM_WORLD));
        for (int r = 0; r < nranks; r++)
            if (status[r].index >= 0 && status[r].ok && cases[status[r].index].label[0])
                fold_labelled[fold[status[r].index]]++;
        for (int r = 0; r < nranks; r++) {
            if (status[r].index < 0 || status[r].ok) continue;
            if (rank == 0) fprintf(stderr, "alice: %s: %s\n", keep_going ? "skipping" : "error", status[r].error);
            if (keep_going) skipped[nskipped++] = strdup(status[r].error);
            else failed = 1;
        }
        if (failed) {
            free(image);
            free(label);
            break;
        }
        size_t clamped = 0;
        int16_t *image16 = mine.ok ? to_int16(image, meta.dim, &clamped) : NULL;
        if (clamped)
            log_warn("case %s: %zu voxel(s) beyond the int16 range -32768..32767 (HU) clamped to "
                     "it; check the image's scaling (scl_slope, scl_inter) if it is not in HU",
                     meta.name, clamped);
        free(image);
        dataset_writer_round(w, mine.ok ? &meta : NULL, image16, label);
        free(image16);
        free(label);
        const int done = base + nranks < n ? base + nranks : n;
        log_info("  [%d/%d] %s%s  %.1f s", done, n, cases[base].name, nranks > 1 ? " ..." : "",
                 wall_seconds() - t0);
    }
    free(status);
    int rc = 0;
    /* the count is the same on every rank: each round's statuses are shared */
    const int written = failed ? 0 : dataset_writer_count(w);
    if (failed || written == 0) {
        /* Nothing to commit: --out (with --force, an existing data set) stays as it was. */
        dataset_writer_abort(w);
        h5_pending_done(tmp);
        if (rank == 0) {
            unlink(tmp);
            if (failed)
                fprintf(stderr, "alice: error: alice pack stopped; nothing was written to %s (fix "
                        "the case above, or pass --keep-going to pack the rest)\n", out);
            else
                fprintf(stderr, "alice: error: alice pack skipped every case (%d, each named "
                        "above); nothing was written to %s: fix the inputs\n", nskipped, out);
        }
        rc = 2;
    } else {
        dataset_writer_finish(w);
        CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD));
        if (rank == 0) {
            durable_replace(tmp, out);
            struct stat st;
            double mb = stat(out, &st) == 0 ? st.st_size / 1048576.0 : 0;
            log_info("alice pack: wrote %d case(s) to %s (%.1f MiB) in %.1f s", written, out, mb,
                     wall_seconds() - t0);
            if (nskipped) {
                log_info("alice pack: skipped %d case(s):", nskipped);
                for (int i = 0; i < nskipped; i++) log_info("  %s", skipped[i]);
            }
            warn_unlabelled_folds(fold_labelled, cfg.num_folds, nskipped, out);
        }
    }
    h5_pending_done(tmp);   /* renamed by rank 0 (or removed above) */
    for (int i = 0; i < nskipped; i++) free(skipped[i]);
    free(skipped);
    free(fold);
    free(fold_labelled);
    free(cases);
    CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD));
    return rc;
}
