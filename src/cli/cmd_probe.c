/* `alice probe`: k-NN probe of encoder patch features against organ labels, for a pre-training
 * checkpoint beside the same encoder at random initialisation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "core/check.h"
#include "core/log.h"
#include "eval/probe.h"
#include "ops/backend.h"
#include "train/checkpoint.h"
#include "train/dist.h"
#include "train/train_common.h"

/* The probe's own flags, each followed by a value. */
static int is_probe_flag(const char *a)
{
    return !strcmp(a, "--checkpoint") || !strcmp(a, "--cases") || !strcmp(a, "--crops") ||
           !strcmp(a, "--k");
}

int cmd_probe(int argc, char **argv)
{
    const char *ckpt = NULL;
    int cases = 6, crops = 4, k = 5;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            printf("usage: alice probe --checkpoint CKPT [--cases N] [--crops M] [--k K] [data=...] [key=value]\n"
                   "  k-NN probe (leave one case out, cosine similarity) of the encoder's patch features\n"
                   "  against the organ labels of N labelled cases (M random crops each): prints the\n"
                   "  balanced accuracy of the checkpoint's encoder and of the same encoder at random\n"
                   "  initialisation. Model keys come from the checkpoint; data, crop and window may be\n"
                   "  overridden (key=value or --config, anywhere on the line).\n");
            return 0;
        }
        if (is_probe_flag(a)) {
            if (i + 1 >= argc)
                alice_die("alice probe: %s needs a value (see alice probe --help)", a);
            const char *v = argv[++i];
            if (!strcmp(a, "--checkpoint")) ckpt = v;
            else if (!strcmp(a, "--cases")) cases = (int)cli_int_flag("probe", a, v, 2, 100000);
            else if (!strcmp(a, "--crops")) crops = (int)cli_int_flag("probe", a, v, 1, 10000);
            else k = (int)cli_int_flag("probe", a, v, 1, 64);
        } else if (!strcmp(a, "--config") || !strcmp(a, "-c")) {
            i++;   /* applied below, once the checkpoint's keys are in */
        } else if (strncmp(a, "--config=", 9) != 0 && !(a[0] != '-' && strchr(a, '='))) {
            alice_die("alice probe: unknown argument '%s' (see alice probe --help)", a);
        }
    }
    if (!ckpt) alice_die("alice probe: --checkpoint is required");
    /* The checkpoint's keys first, then the command line's job files and key=value in their
     * order (with key=value winning), wherever they stood against --checkpoint. */
    Config cfg;
    checkpoint_stored_config(ckpt, &cfg);
    for (int i = 1; i < argc; i++) {
        if (is_probe_flag(argv[i])) {
            i++;
            continue;
        }
        cli_config_arg(&cfg, argc, argv, &i);
    }
    /* the encoder of a pre-training run (a fine-tuned UNETR keeps it under other names: the
     * probe would compare the random encoder with itself) */
    /* the model keys are the checkpoint's; data, crops and windows may change */
    static const char *const used[] = {"data", "synthetic_cases", "seed", "num_folds", "crop",
                                       "window_lo", "window_hi", "threads", NULL};
    cli_only_keys(&cfg, "probe", used);
    /* the crop and windows it reads (checked here rather than by config_validate, which would
     * also judge keys of the checkpoint's run that the probe never uses) */
    for (int a = 0; a < 3; a++)
        if (cfg.crop[a] < cfg.patch || cfg.crop[a] % cfg.patch)
            alice_die("alice probe: crop %c = %d is not a multiple of patch = %d; choose a crop "
                      "that is", "XYZ"[a], cfg.crop[a], cfg.patch);
    if (cfg.window_hi <= cfg.window_lo)
        alice_die("alice probe: window_hi = %g must be above window_lo = %g", cfg.window_hi,
                  cfg.window_lo);
    Dist dist;   /* OpenMP threads: the threads key, or the node's cores over its ranks */
    dist_init(&dist, backend_cpu());
    train_set_threads(&cfg, &dist);
    ProbeResult a = probe_knn(&cfg, ckpt, cases, crops, k);
    ProbeResult r = probe_knn(&cfg, NULL, cases, crops, k);
    log_info("k-NN probe (k=%d, %ld tokens, %d classes, leave one case out):", k, a.tokens, a.classes);
    log_info("  pre-trained encoder: balanced accuracy %.4f, accuracy %.4f", a.balanced_accuracy, a.accuracy);
    log_info("  random-init encoder: balanced accuracy %.4f, accuracy %.4f", r.balanced_accuracy, r.accuracy);
    log_info("probe_result pretrained=%.4f random=%.4f", a.balanced_accuracy, r.balanced_accuracy);
    return 0;
}
