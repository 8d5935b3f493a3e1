/* Logging: rank 0 prints progress; every rank may print warnings and errors, prefixed with
 * its rank when the job has more than one. */
#ifndef ALICE_LOG_H
#define ALICE_LOG_H

void log_set_rank(int rank, int size);
int log_rank(void);
/* Rank 0 only, to stdout. */
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Any rank, to stderr. */
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
