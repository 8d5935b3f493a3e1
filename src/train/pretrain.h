/* `alice pretrain`: the self-supervised training loop (MAE or Alice) over the loader, with
 * gradient averaging across ranks, AdamW, EMA, checkpoints, resume and preemption. */
#ifndef ALICE_PRETRAIN_H
#define ALICE_PRETRAIN_H

#include "core/config.h"
#include "train/train_options.h"

typedef TrainOptions PretrainOptions;

/* Returns the process exit status (0 done, ALICE_EXIT_REQUEUE when preempted). */
int pretrain_run(const Config *cfg, const PretrainOptions *opt);

#endif
