/* `alice pretrain`: the self-supervised training loop (MAE or Alice) over the loader, with
 * gradient averaging across ranks, AdamW, EMA, checkpoints, resume and preemption. */
#ifndef ALICE_PRETRAIN_H
#define ALICE_PRETRAIN_H

#include "core/config.h"

typedef struct {
    int resume;                   /* 1: continue from the latest checkpoint in run_dir */
    const char *resume_from;      /* explicit checkpoint, or NULL */
    long bench_steps;             /* > 0: time this many steps on random data, no files */
    long stop_after;              /* > 0: run at most this many steps now, checkpoint, exit 0
                                     (chunked jobs; the next run resumes) */
} PretrainOptions;

/* Returns the process exit status (0 done, ALICE_EXIT_REQUEUE when preempted). */
int pretrain_run(const Config *cfg, const PretrainOptions *opt);

#endif
