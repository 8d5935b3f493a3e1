/* `alice finetune`: UNETR with the pre-trained encoder (or random init) trained with DiceCE on
 * labelled crops (MONAI's BTCV protocol), validation Dice by sliding-window inference on the
 * held-out fold every val_every steps, best and last checkpoints, MPI ranks, resume and
 * preemption like pre-training. */
#ifndef ALICE_FINETUNE_H
#define ALICE_FINETUNE_H

#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "train/train_options.h"

typedef TrainOptions FinetuneOptions;

/* Config defaults of the fine-tuning protocol (MONAI UNETR BTCV): applied before job files.
 * window [-175, 250], 96^3 crops, batch 4 (4 volumes x 1 crop; MONAI 1 volume x 4), AdamW lr 1e-4,
 * weight decay 1e-5, betas (0.9, 0.999), no clipping, 25000 steps, validation every 500. */
void finetune_config_defaults(Config *cfg);
/* Those defaults as key/value pairs, i < finetune_default_count() (alice config --doc). */
int finetune_default_count(void);
const char *finetune_default_key(int i);
const char *finetune_default_value(int i);

/* Returns the process exit status (0 done, ALICE_EXIT_REQUEUE when preempted). */
int finetune_run(const Config *cfg, const FinetuneOptions *opt);

/* Mean Dice over the foreground classes 1..K-1 of one case, as MONAI's DiceMetric with
 * ignore_empty (its default): a class absent from the truth is left out, whatever the
 * prediction holds; NAN when the truth holds no foreground class (the validation mean then
 * leaves the case out). Background is not scored: the paper's organ mean. */
double case_mean_dice(const uint8_t *pred, const int32_t *truth, size_t n, int K);

#endif
