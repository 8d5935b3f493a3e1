#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "core/check.h"
#include "core/log.h"

int cli_is_help(const char *arg) { return !strcmp(arg, "-h") || !strcmp(arg, "--help"); }

int cli_config_arg(Config *cfg, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    if (!strcmp(a, "--config") || !strcmp(a, "-c")) {
        if (*i + 1 >= argc) alice_die("%s needs a job file, e.g. --config jobs/pretrain_tiny.cfg", a);
        config_load_file(cfg, argv[++*i]);
        return 1;
    }
    if (!strncmp(a, "--config=", 9)) { config_load_file(cfg, a + 9); return 1; }
    const char *eq = strchr(a, '=');
    if (a[0] != '-' && eq) {
        char key[128];
        size_t n = (size_t)(eq - a);
        if (n >= sizeof key) alice_die("command line: key too long in '%s'", a);
        memcpy(key, a, n);
        key[n] = '\0';
        config_set(cfg, key, eq + 1, "command line", 0);
        return 1;
    }
    return 0;
}

void cli_print_config(const Config *cfg, const char *command)
{
    if (log_rank() != 0) return;
    char *text = config_to_text(cfg);
    printf("# alice %s: resolved configuration\n", command);
    for (char *p = text; *p;) {
        char *nl = strchr(p, '\n');
        printf("#   %.*s\n", (int)(nl ? nl - p : (long)strlen(p)), p);
        if (!nl) break;
        p = nl + 1;
    }
    fflush(stdout);
    free(text);
}
