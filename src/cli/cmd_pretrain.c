#include "cli/commands.h"
#include "core/check.h"
int cmd_pretrain(int argc, char **argv) { (void)argc; (void)argv; alice_die("pretrain: under construction"); }
