/* How `alice pretrain` and `alice finetune` run: their options besides the configuration
 * (parsed by cli_train_option, src/cli/cli_common.c). */
#ifndef ALICE_TRAIN_OPTIONS_H
#define ALICE_TRAIN_OPTIONS_H

typedef struct {
    int resume;                   /* 1: continue from the latest checkpoint in run_dir */
    const char *resume_from;      /* explicit checkpoint, or NULL */
    long bench_steps;             /* > 0: time this many steps on random data, no files */
    long stop_after;              /* > 0: run at most this many steps now, checkpoint, exit 0
                                     (chunked jobs; the next run resumes) */
} TrainOptions;

#endif
