/* What every training command does around its loop: threads per rank, the run directory,
 * the resolved configuration file, memory checks, and the non-finite guard. */
#ifndef ALICE_TRAIN_COMMON_H
#define ALICE_TRAIN_COMMON_H

#include <stddef.h>

#include "core/config.h"
#include "ops/backend.h"
#include "train/dist.h"

/* OpenMP threads: cfg->threads, or the node's cores divided by the ranks on the node. */
void train_set_threads(const Config *cfg, const Dist *d);
/* Creates run_dir (and parents) on rank 0 and writes config.txt; every rank waits for it. */
void train_prepare_run_dir(const Config *cfg, const Dist *d, const char *command);
/* Ends the job before any compute when `bytes` of model state does not fit the memory of the
 * backend (host RAM per rank for cpu), naming the keys that decide the size. */
void train_check_memory(const AliceBackend *be, size_t bytes, const Dist *d, const char *what);
/* Peak resident set size of this process in MiB. */
double train_peak_rss_mib(void);
/* 1 when loss and every gradient are finite on every rank. */
int train_step_finite(const AliceBackend *be, double loss, const float *grad, size_t n);

#endif
