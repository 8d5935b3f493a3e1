/* `alice phantom`: writes synthetic abdominal CTs as NIfTI in the FLARE 2022 layout,
 * OUT/imagesTr/caseNNNN_0000.nii.gz and OUT/labelsTr/caseNNNN.nii.gz. Ranks split the cases. */
#include <errno.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <nifti1.h>

#include "cli/commands.h"
#include "core/check.h"
#include "core/log.h"
#include "core/fsutil.h"
#include "core/timer.h"
#include "data/phantom.h"
#include "nifti_io.h"

/* Voxel order on disk: RAS as generated, or LPS (x and y reversed, as DICOM converters often
 * store), so that readers meet both. The affine follows, world positions are unchanged. */
static void to_lps(Volume *v)
{
    const int nx = v->dim[0], ny = v->dim[1], nz = v->dim[2];
    const size_t n = volume_voxels(v);
    int16_t *img = xmalloc(n * sizeof(int16_t));
    uint8_t *lab = xmalloc(n);
    for (int x = 0; x < nx; x++)
        for (int y = 0; y < ny; y++) {
            size_t src = volume_index(v->dim, nx - 1 - x, ny - 1 - y, 0);
            size_t dst = volume_index(v->dim, x, y, 0);
            memcpy(img + dst, v->image + src, sizeof(int16_t) * nz);
            memcpy(lab + dst, v->label + src, (size_t)nz);
        }
    free(v->image);
    free(v->label);
    v->image = img;
    v->label = lab;
    for (int r = 0; r < 3; r++) {
        v->affine[r][3] += v->affine[r][0] * (nx - 1) + v->affine[r][1] * (ny - 1);
        v->affine[r][0] = -v->affine[r][0];
        v->affine[r][1] = -v->affine[r][1];
    }
}

static const char *const phase_names[] = {"non-contrast", "arterial", "portal-venous"};
static const char *const coverage_names[] = {"full", "upper", "lower"};

int cmd_phantom(int argc, char **argv)
{
    Config cfg;
    config_defaults(&cfg);
    const char *out = NULL;
    long cases = -1, first = 0;
    PhantomSize size = PHANTOM_SMALL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            printf("usage: alice phantom --out DIR --cases N [--seed S] [--size %s] [--first K]\n"
                   "  writes N synthetic abdominal CTs (int16 HU) with 13 FLARE organ labels as\n"
                   "  DIR/imagesTr/caseNNNN_0000.nii.gz and DIR/labelsTr/caseNNNN.nii.gz\n"
                   "  (cases K..K+N-1). Same seed, same files. small: 128x128 at 2.6-3 mm, about\n"
                   "  80 slices; medium: 192x192 at ~1.9 mm; large: 256x256 at ~1.4 mm.\n"
                   "  Ranks split the cases (mpirun -np R alice phantom ...).\n", PHANTOM_SIZE_NAMES);
            return 0;
        }
        int has_next = i + 1 < argc;
        if (!strcmp(a, "--out") && has_next) out = argv[++i];
        else if (!strcmp(a, "--cases") && has_next)
            cases = cli_int_flag("phantom", a, argv[++i], 1, 9999);
        else if (!strcmp(a, "--first") && has_next)
            first = cli_int_flag("phantom", a, argv[++i], 0, 9999);
        else if (!strcmp(a, "--seed") && has_next) cli_flag_override(&cfg, "seed", argv[++i]);
        else if (!strcmp(a, "--size") && has_next) {
            if (phantom_size_from_name(argv[++i], &size) != 0)
                alice_die("alice phantom: --size '%s' is not one of %s", argv[i], PHANTOM_SIZE_NAMES);
        } else if (!cli_config_arg(&cfg, argc, argv, &i))
            alice_die("alice phantom: unknown or incomplete argument '%s' (see alice phantom --help)", a);
    }
    static const char *const used[] = {"seed", NULL};   /* the rest is --size's */
    cli_only_keys(&cfg, "phantom", used);
    if (!out || !out[0]) alice_die("alice phantom: --out DIR is required (see alice phantom --help)");
    if (cases == -1)
        alice_die("alice phantom: --cases N is required (1..9999; see alice phantom --help)");
    if (first + cases > 10000) alice_die("alice phantom: --first + --cases must stay below 10000");

    int rank = 0, nranks = 1;
    CHECK_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    CHECK_MPI(MPI_Comm_size(MPI_COMM_WORLD, &nranks));
    char images[4096], labels[4096];
    snprintf(images, sizeof images, "%s/imagesTr", out);
    snprintf(labels, sizeof labels, "%s/labelsTr", out);
    if (rank == 0) {
        make_dirs(images, "choose a writable --out");
        make_dirs(labels, "choose a writable --out");
    }
    CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD));
    log_info("alice phantom: %ld cases (seed %ld, size %s) into %s on %d rank(s)", cases, cfg.seed,
             phantom_size_name(size), out, nranks);
    const double t0 = wall_seconds();
    for (long c = first + rank; c < first + cases; c += nranks) {
        Volume v;
        PhantomInfo info;
        phantom_generate((uint64_t)cfg.seed, (int)c, size, &v, &info);
        if (info.store_lps) to_lps(&v);
        char path[4200], description[128];
        snprintf(description, sizeof description, "alice phantom: synthetic CT, seed %ld, size %s, "
                 "case %ld", cfg.seed, phantom_size_name(size), c);
        snprintf(path, sizeof path, "%s/case%04ld_0000.nii.gz", images, c);
        nifti_write_volume(path, v.image, NIFTI_TYPE_INT16, v.dim, (const double (*)[4])v.affine,
                           description);
        snprintf(path, sizeof path, "%s/case%04ld.nii.gz", labels, c);
        nifti_write_volume(path, v.label, NIFTI_TYPE_UINT8, v.dim, (const double (*)[4])v.affine,
                           description);
        log_info("  case%04ld  %dx%dx%d  %.2fx%.2fx%.2f mm  %s, %s coverage, noise %.0f HU%s", c,
                 v.dim[0], v.dim[1], v.dim[2], v.spacing[0], v.spacing[1], v.spacing[2],
                 phase_names[info.phase], coverage_names[info.coverage], info.noise_hu,
                 info.store_lps ? ", stored LPS" : "");
        volume_free(&v);
    }
    CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD));
    log_info("alice phantom: done in %.1f s", wall_seconds() - t0);
    return 0;
}
