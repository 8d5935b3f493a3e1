/* alice: self-supervised pre-training (Alice, ICCV 2023) and evaluation of 3D segmentation
 * models. One binary, one subcommand per stage of the workflow (see README.md). */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "core/check.h"
#include "core/log.h"
#include "core/preempt.h"
#include "h5util.h"

static const AliceCommand commands[] = {
    {"config", cmd_config, "print the resolved configuration or the key registry", SIGNALS_DEFAULT},
    {"pretrain", cmd_pretrain, "self-supervised pre-training (method = alice | mae)",
     SIGNALS_PREEMPTION},
    {"phantom", cmd_phantom, "write synthetic abdominal CTs with 13 organ labels (NIfTI)",
     SIGNALS_DEFAULT},
    {"pack", cmd_pack, "preprocess NIfTI volumes into one dataset.h5 (MPI-parallel)",
     SIGNALS_DEFAULT},
    {"finetune", cmd_finetune,
     "UNETR fine-tuning (DiceCE) from a pre-training checkpoint or random init",
     SIGNALS_PREEMPTION},
    {"infer", cmd_infer,
     "sliding-window UNETR prediction -> NIfTI in each case's original geometry",
     SIGNALS_DEFAULT},
    {"eval", cmd_eval, "per case x organ DSC and NSD of predictions -> results.h5 + .csv",
     SIGNALS_DEFAULT},
    {"probe", cmd_probe, "k-NN probe of encoder patch features against organ labels",
     SIGNALS_DEFAULT},
    {"match", cmd_match, "anatomical matcher landmark error (--eval): profile vs bbox baseline",
     SIGNALS_DEFAULT},
    {"info", cmd_info,
     "describe a dataset.h5, checkpoint or results.h5 (folds, step, model, scores)",
     SIGNALS_DEFAULT},
};
static const int command_count = (int)(sizeof commands / sizeof commands[0]);

static void usage(FILE *out)
{
    fprintf(out, "usage: alice <command> [--config FILE] [key=value ...] [options]\n\ncommands:\n");
    for (int i = 0; i < command_count; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n`alice <command> --help` describes a command; `alice config --keys` lists "
                 "every configuration key.\nRun under mpirun/srun for several ranks.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || cli_is_help(argv[1])) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const AliceCommand *cmd = NULL;
    for (int i = 0; i < command_count; i++)
        if (!strcmp(argv[1], commands[i].name)) cmd = &commands[i];
    if (!cmd) {
        fprintf(stderr, "alice: error: unknown command '%s'\n\n", argv[1]);
        usage(stderr);
        return 2;
    }
    /* Before MPI_Init, which can take seconds at scale: a requeued job signalled again while it
     * starts must checkpoint and exit 3, not die. The mask stays the launcher's until the
     * training loop starts (train_signals); a benchmark gets the actions back. */
    if (cmd->signals == SIGNALS_PREEMPTION) preempt_install_handlers();
    alice_mpi_init(&argc, &argv);
    int rank = 0, size = 1;
    CHECK_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    CHECK_MPI(MPI_Comm_size(MPI_COMM_WORLD, &size));
    log_set_rank(rank, size);
    h5_errors_to_alice();
    int rc = cmd->run(argc - 1, argv + 1);
    CHECK_MPI(MPI_Finalize());
    return rc;
}
