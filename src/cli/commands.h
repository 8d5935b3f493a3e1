/* Subcommands of the alice binary. Each lives in its own file (src/cli/cmd_<name>.c) and is
 * listed once in the command table of src/main.c. MPI is initialised before a command runs. */
#ifndef ALICE_COMMANDS_H
#define ALICE_COMMANDS_H

#include "core/config.h"
#include "train/train_options.h"

/* How a command takes SIGTERM and SIGUSR1 (core/preempt.h). */
typedef enum {
    SIGNALS_DEFAULT,     /* the default action: the process ends */
    SIGNALS_PREEMPTION   /* a training run: checkpoint at the next step boundary, exit 3; the
                          * handlers go in before MPI_Init, so no part of start-up is exposed */
} CommandSignals;

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
    CommandSignals signals;
} AliceCommand;

int cmd_config(int argc, char **argv);
int cmd_pretrain(int argc, char **argv);
int cmd_probe(int argc, char **argv);
int cmd_phantom(int argc, char **argv);
int cmd_pack(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_finetune(int argc, char **argv);
int cmd_infer(int argc, char **argv);
int cmd_match(int argc, char **argv);
int cmd_info(int argc, char **argv);

/* Shared argument handling: consumes `--config FILE` and `key=value` at argv[*i]; returns 1
 * when it consumed something. Job files apply in command-line order; key=value arguments win
 * over every job file, before or after them (a file loaded later applies them again). */
int cli_config_arg(Config *cfg, int argc, char **argv, int *i);
/* A command's flag that sets a key (`alice finetune --fold 2`): key=value on the command line,
 * winning over every job file as those do. */
void cli_flag_override(Config *cfg, const char *key, const char *value);
/* Ends the job when a key=value argument of the command line (given to cfg) names a key outside
 * `used` (NULL-terminated): the command would accept it and do nothing with it, e.g. label_set
 * given to alice pack, which records no label set. Job files are not checked (one file may
 * serve several commands). */
void cli_only_keys(const Config *cfg, const char *command, const char *const *used);
/* The same for commands that use most keys: ends the job when a key=value argument of the
 * command line names one of `unused` (NULL-terminated), keys of `whose` (e.g. "fine-tuning")
 * that the command would accept and ignore (pretrained = given to alice pretrain started
 * from random weights, silently). */
void cli_refuse_keys(const Config *cfg, const char *command, const char *const *unused,
                     const char *whose);
/* Keys of the pre-training method alone (its masks, heads, CASA, losses, teacher, matcher and
 * MAE decoder): fine-tuning and inference read none of them. NULL-terminated. */
extern const char *const cli_pretraining_keys[];
/* 1 when argv[i] is -h or --help. */
int cli_is_help(const char *arg);
/* The step count given to `flag` of `command` (--stop-after, --bench-steps); anything but a
 * positive integer ends the job naming both. */
long cli_step_count(const char *command, const char *flag, const char *value);
/* A training command's own option at argv[*i] (--resume CKPT, --no-resume, --bench-steps N,
 * --stop-after N) into o: 1, *i past its value, when it is one. A flag without its value, a
 * bad step count, or --resume beside --no-resume ends the job naming them. */
int cli_train_option(const char *command, int argc, char **argv, int *i, TrainOptions *o);
/* The whole number given to `flag` of `command`, in min..max; anything else (text after the
 * digits, "1e3", out of range) ends the job naming the flag, the value and the range. */
long cli_int_flag(const char *command, const char *flag, const char *value, long min, long max);
/* The fold a `--cases` value of `command` selects: "all" gives -1, "fold:K" gives K (0..99);
 * anything else ends the job naming the flag and the accepted forms. */
int cli_case_fold(const char *command, const char *select);
/* The output path of --out (a file, or, with stem, eval's STEM of STEM.h5 and STEM.csv):
 * refused before any work when empty, when a file path is a folder, or when its folder is
 * missing or not writable, naming the folder and the fix (writing it would otherwise fail
 * only at the end, or, for "", write into / or make hidden files). */
void cli_check_out_path(const char *command, const char *path, int stem);
/* Prints the resolved configuration (rank 0) under a heading. */
void cli_print_config(const Config *cfg, const char *command);

#endif
