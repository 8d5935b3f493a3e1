/* `alice probe`: k-NN probe of encoder patch features against organ labels, for a pre-training
 * checkpoint beside the same encoder at random initialisation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "core/check.h"
#include "core/log.h"
#include "eval/probe.h"
#include "train/checkpoint.h"

int cmd_probe(int argc, char **argv)
{
    Config cfg;
    config_defaults(&cfg);
    const char *ckpt = NULL;
    int cases = 6, crops = 4, k = 5;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: alice probe --checkpoint CKPT [--cases N] [--crops M] [--k K] [data=...] [key=value]\n"
                   "  k-NN probe (leave one case out, cosine similarity) of the encoder's patch features\n"
                   "  against the organ labels of N labelled cases (M random crops each): prints the\n"
                   "  balanced accuracy of the checkpoint's encoder and of the same encoder at random\n"
                   "  initialisation. Model keys come from the checkpoint; data, crop and window may be\n"
                   "  overridden.\n");
            return 0;
        }
        if (!strcmp(argv[i], "--checkpoint") && i + 1 < argc) {
            ckpt = argv[++i];
            char *text = checkpoint_config_text(ckpt);
            config_from_text(&cfg, text, ckpt);
            free(text);
        } else if (!strcmp(argv[i], "--cases") && i + 1 < argc) cases = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--crops") && i + 1 < argc) crops = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--k") && i + 1 < argc) k = atoi(argv[++i]);
        else if (!cli_config_arg(&cfg, argc, argv, &i))
            alice_die("alice probe: unknown argument '%s' (see alice probe --help)", argv[i]);
    }
    if (!ckpt) alice_die("alice probe: --checkpoint is required");
    /* the encoder of a pre-training run (a fine-tuned UNETR keeps it under other names: the
     * probe would compare the random encoder with itself) */
    checkpoint_check_encoder_source(ckpt, &cfg);
    if (k < 1 || k > 64) alice_die("alice probe: --k must be in 1..64");
    ProbeResult a = probe_knn(&cfg, ckpt, cases, crops, k);
    ProbeResult r = probe_knn(&cfg, NULL, cases, crops, k);
    log_info("k-NN probe (k=%d, %ld tokens, %d classes, leave one case out):", k, a.tokens, a.classes);
    log_info("  pre-trained encoder: balanced accuracy %.4f, accuracy %.4f", a.balanced_accuracy, a.accuracy);
    log_info("  random-init encoder: balanced accuracy %.4f, accuracy %.4f", r.balanced_accuracy, r.accuracy);
    log_info("probe_result pretrained=%.4f random=%.4f", a.balanced_accuracy, r.balanced_accuracy);
    return 0;
}
