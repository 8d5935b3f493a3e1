/* `alice match --eval`: how well the anatomical matchers find the same body part in two
 * volumes. For every ordered pair of labelled cases, each organ present in both has its Q
 * centroid mapped into K; the table lists the distance to K's centroid in mm (mean and median
 * per organ) for the profile matcher beside the bounding-box baseline. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "core/check.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/timer.h"
#include "data/match_eval.h"
#include "data/phantom.h"
#include "train/data_source.h"

static const char *organ_name(int label)
{
    const char *name = flare_label_name(label);
    return name && label > 0 ? name : NULL;
}

static void usage(void)
{
    printf("usage: alice match --eval [--data dataset.h5 | data=synthetic] [--matcher %s|all]\n"
           "                   [--out table.md] [--config FILE] [key=value ...]\n"
           "  maps each organ centroid of every labelled case Q into every other labelled case K\n"
           "  and reports the error to K's centroid in mm (mean, median per organ), for the\n"
           "  matcher(s) chosen (default all: profile beside the bbox baseline). Organ names\n"
           "  follow the FLARE 2022 ids. --out also writes the table to a file (atomically;\n"
           "  an existing file only if it is such a table).\n",
           MATCHER_NAMES);
}

int cmd_match(int argc, char **argv)
{
    Config cfg;
    config_defaults(&cfg);
    int eval = 0;
    const char *which = "all", *out_path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_next = i + 1 < argc;
        if (cli_is_help(a)) { usage(); return 0; }
        if (!strcmp(a, "--eval")) eval = 1;
        else if (!strcmp(a, "--data") && has_next) cli_flag_override(&cfg, "data", argv[++i]);
        else if (!strcmp(a, "--matcher") && has_next) which = argv[++i];
        else if (!strcmp(a, "--out") && has_next) out_path = argv[++i];
        else if (!cli_config_arg(&cfg, argc, argv, &i))
            alice_die("alice match: unknown or incomplete argument '%s' (see alice match --help)", a);
    }
    /* the keys of the data source; the matcher is --matcher's (the key matcher is the one
     * pre-training pairs its crops with) */
    static const char *const used[] = {"data", "synthetic_cases", "seed", "num_folds", NULL};
    cli_only_keys(&cfg, "match", used);
    if (!eval) alice_die("alice match: nothing to do; add --eval (see alice match --help)");
    if (out_path) {
        cli_check_out_path("alice match", out_path, 0);
        if (!output_replaceable(out_path, MATCH_REPORT_START))
            alice_die("alice match: --out %s exists and is not a report of alice match (its first "
                      "line does not begin '%s'); choose another --out, or move the file away if "
                      "it may go", out_path, MATCH_REPORT_START);
    }
    const Matcher *methods[2];
    int num_methods = 0;
    if (!strcmp(which, "all")) {
        methods[num_methods++] = &matcher_profile;
        methods[num_methods++] = &matcher_bbox;
    } else {
        methods[num_methods] = matcher_find(which);
        if (!methods[num_methods])
            alice_die("alice match: --matcher '%s' is unknown; use %s or all", which, MATCHER_NAMES);
        num_methods++;
    }
    /* The evaluation is small (a few dozen cases): rank 0 does it, other ranks wait. */
    if (log_rank() != 0) {
        CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD));
        return 0;
    }
    double t0 = wall_seconds();
    LoaderSource src = data_source_open(&cfg);
    Volume *vols = xcalloc((size_t)(src.num_cases > 0 ? src.num_cases : 1), sizeof *vols);
    int labelled = 0;
    for (int i = 0; i < src.num_cases; i++) {
        if (!src.case_has_label(src.ctx, i)) continue;
        src.read_case(src.ctx, i, &vols[labelled++], NULL);
    }
    if (labelled < 2)
        alice_die("alice match --eval: %s has %d labelled case(s); the evaluation needs at least 2 "
                  "(pack image/label pairs, or use data=synthetic)", cfg.data, labelled);
    MatchReport r;
    match_evaluate(vols, labelled, methods, num_methods, &r);
    printf("alice match: %d labelled cases of %s, %.1f s\n", labelled, cfg.data, wall_seconds() - t0);
    match_report_print(stdout, &r, organ_name);
    fflush(stdout);
    if (out_path) {
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s.tmp", out_path);
        FILE *f = fopen(tmp, "w");
        if (!f) alice_die("alice match: cannot write %s (choose a writable --out)", tmp);
        match_report_print(f, &r, organ_name);
        commit_stream(f, tmp, out_path);
    }
    match_report_free(&r);
    for (int i = 0; i < labelled; i++) volume_free(&vols[i]);
    free(vols);
    if (src.close) src.close(src.ctx);
    CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD));
    return 0;
}
