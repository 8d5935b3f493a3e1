/* `alice finetune`: argument handling; the loop is src/train/finetune.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "core/check.h"
#include "train/finetune.h"

static void usage(void)
{
    printf("usage: alice finetune [--config FILE] [pretrained=CKPT] [fold=K] [key=value ...]\n"
           "                      [--resume CKPT | --no-resume] [--stop-after N]\n"
           "                      [--bench-steps N]\n"
           "  UNETR fine-tuning (DiceCE) on the labelled cases of `data` (dataset.h5 from\n"
           "  `alice pack`, or 'synthetic'), holding out fold K for validation Dice (sliding\n"
           "  window) every val_every steps. pretrained = a pre-training checkpoint whose\n"
           "  encoder.* tensors initialise the UNETR's vit.* (random init when empty).\n"
           "  Defaults follow MONAI's UNETR BTCV protocol: window [-175, 250], 96^3 crops\n"
           "  (pos/neg 1:1), 4 crops per step (each from its own volume; crops_per_case = 4\n"
           "  takes them from one, as MONAI and jobs/finetune_btcv.cfg do), flips, rotations,\n"
           "  intensity shift, AdamW lr 1e-4,\n"
           "  weight decay 1e-5, warm-up + cosine; job files and key=value override them.\n"
           "  Writes run_dir/ckpt_<step>.h5, ckpt_best.h5, metrics.csv, val.csv, config.txt;\n"
           "  restarts resume from the latest complete checkpoint in run_dir.\n"
           "  --resume CKPT    resume from this checkpoint\n"
           "  --no-resume      start from scratch; refused when run_dir holds checkpoints (give\n"
           "                   the new run a new run_dir)\n"
           "  --stop-after N   run at most N steps now, checkpoint and exit 0 (chunked jobs)\n"
           "  --bench-steps N  time the training step instead of training: the UNETR of the\n"
           "                   configuration (precision, cuda_graph, kernels as configured) on\n"
           "                   random crops and labels of crop x batch (no data, no files\n"
           "                   written), one warm-up step, then N timed steps; prints the\n"
           "                   median s/step, peak memory and GFLOP/s (alice_step line)\n"
           "  Presets: jobs/finetune_tiny.cfg, jobs/finetune_btcv.cfg\n");
}

int cmd_finetune(int argc, char **argv)
{
    Config cfg;
    config_defaults(&cfg);
    finetune_config_defaults(&cfg);
    FinetuneOptions opt = {1, NULL, 0, 0};
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) { usage(); return 0; }
        if (cli_config_arg(&cfg, argc, argv, &i)) continue;
        if (cli_train_option("finetune", argc, argv, &i, &opt)) continue;
        const int fold = !strcmp(argv[i], "--fold");
        if (!fold && strcmp(argv[i], "--pretrained"))
            alice_die("alice finetune: unknown argument '%s' (see alice finetune --help)", argv[i]);
        if (i + 1 >= argc)
            alice_die("alice finetune: %s needs a value (see alice finetune --help)", argv[i]);
        cli_flag_override(&cfg, fold ? "fold" : "pretrained", argv[++i]);
    }
    /* Keys fine-tuning reads nowhere: the pre-training method's (the encoder's come from the
     * pretrained checkpoint, checked against this run's keys), evaluation's and packing's. */
    static const char *const eval_or_pack[] = {"label_set", "eval_protocol", "spacing", NULL};
    cli_refuse_keys(&cfg, "finetune", cli_pretraining_keys, "pre-training");
    cli_refuse_keys(&cfg, "finetune", eval_or_pack, "evaluation or packing");
    config_validate(&cfg);
    cli_print_config(&cfg, "finetune");
    return finetune_run(&cfg, &opt);
}
