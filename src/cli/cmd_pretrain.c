/* `alice pretrain`: argument handling; the loop is src/train/pretrain.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "core/check.h"
#include "train/pretrain.h"

static void usage(void)
{
    printf("usage: alice pretrain [--config FILE] [key=value ...] [--resume CKPT | --no-resume]\n"
           "                      [--stop-after N] [--bench-steps N]\n"
           "  Self-supervised pre-training (method = alice | mae) on `data` (dataset.h5 from\n"
           "  `alice pack`, or 'synthetic'). Writes run_dir/ckpt_<step>.h5, metrics.csv and\n"
           "  config.txt; restarts resume from the latest complete checkpoint in run_dir.\n"
           "  --resume CKPT    resume from this checkpoint\n"
           "  --no-resume      start from scratch; refused when run_dir holds checkpoints (give\n"
           "                   the new run a new run_dir)\n"
           "  --stop-after N   run at most N steps now, checkpoint and exit 0 (chunked jobs)\n"
           "  --bench-steps N  time N steps on random data (no files written) and print\n"
           "                   s/step, peak memory and GFLOP/s\n"
           "  Presets: jobs/pretrain_tiny.cfg, jobs/pretrain_vitb_paper.cfg, jobs/ablation_*.cfg\n");
}

int cmd_pretrain(int argc, char **argv)
{
    Config cfg;
    config_defaults(&cfg);
    PretrainOptions opt = {1, NULL, 0, 0};
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) { usage(); return 0; }
        if (cli_config_arg(&cfg, argc, argv, &i)) continue;
        if (cli_train_option("pretrain", argc, argv, &i, &opt)) continue;
        alice_die("alice pretrain: unknown argument '%s' (see alice pretrain --help)", argv[i]);
    }
    /* Keys pre-training reads nowhere (a shared job file may set them; a command line that
     * does meant something else: pretrained = to continue a run, which --resume does). */
    static const char *const not_pretraining[] = {
        "pretrained", "num_classes", "feature_size", "layer_decay", "sw_overlap", "val_every",
        "crops_per_case", "pos_fraction", "crop_sampler", "class_ratios", "fold",
        "label_set", "eval_protocol", "spacing", NULL};
    cli_refuse_keys(&cfg, "pretrain", not_pretraining,
                    "fine-tuning, evaluation or packing (--resume CKPT continues a run)");
    config_validate_pretraining(&cfg);
    /* a mask that masks no token leaves l_r over nothing: 0 at every step (an MAE run of 100K
     * steps would finish with its weights untouched) */
    const int tokens = (cfg.crop[0] / cfg.patch) * (cfg.crop[1] / cfg.patch) *
                       (cfg.crop[2] / cfg.patch);
    const int masked = (int)(cfg.mask_ratio * tokens);
    const int reconstructs = !strcmp(cfg.method, "mae") || cfg.w_rec > 0;
    if (masked == 0 && reconstructs && !strcmp(cfg.rec_region, "masked"))
        alice_die("mask_ratio = %g masks no token of %d (crop %d,%d,%d, patch %d): l_r over the "
                  "masked tokens would be 0 at every step; raise mask_ratio, or set rec_region = "
                  "all", cfg.mask_ratio, tokens, cfg.crop[0], cfg.crop[1], cfg.crop[2], cfg.patch);
    cli_print_config(&cfg, "pretrain");
    return pretrain_run(&cfg, &opt);
}
