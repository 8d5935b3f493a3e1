#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/commands.h"
#include "core/check.h"
#include "core/fsutil.h"
#include "core/log.h"

int cli_is_help(const char *arg) { return !strcmp(arg, "-h") || !strcmp(arg, "--help"); }

long cli_int_flag(const char *command, const char *flag, const char *value, long min, long max)
{
    char *end = NULL;
    errno = 0;
    const long n = strtol(value, &end, 10);
    if (errno || end == value || *end || n < min || n > max)
        alice_die("alice %s: %s '%s' is not a whole number in %ld..%ld", command, flag, value,
                  min, max);
    return n;
}

void cli_check_out_path(const char *command, const char *path, int stem)
{
    if (!path[0]) alice_die("%s: --out is empty; give a file path (an unset variable?)", command);
    struct stat st;
    if (!stem && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        alice_die("%s: --out %s is a folder; give a file path in it", command, path);
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    const char *dir = dirname(buf);
    const FolderState folder = folder_state(dir);
    if (folder == FOLDER_MISSING || folder == FOLDER_NOT_DIR)
        alice_die("%s: --out %s: the folder %s does not exist; create it, or give a path in an "
                  "existing folder", command, path, dir);
    if (folder == FOLDER_NOT_WRITABLE)
        alice_die("%s: --out %s: cannot write into %s (%s); give a path in a writable folder",
                  command, path, dir, strerror(errno));
}

int cli_case_fold(const char *command, const char *select)
{
    if (!strcmp(select, "all")) return -1;
    if (strncmp(select, "fold:", 5) != 0)
        alice_die("alice %s: --cases '%s' is not understood; use fold:K (K >= 0) or all", command,
                  select);
    return (int)cli_int_flag(command, "--cases fold:K", select + 5, 0, 99);
}

long cli_step_count(const char *command, const char *flag, const char *value)
{
    char *end = NULL;
    errno = 0;
    const long n = strtol(value, &end, 10);
    if (errno || end == value || *end || n <= 0)
        alice_die("alice %s: %s '%s' is not a positive step count (e.g. %s 5)", command, flag,
                  value, flag);
    return n;
}

int cli_train_option(const char *command, int argc, char **argv, int *i, TrainOptions *o)
{
    const char *a = argv[*i];
    const int no_resume = !strcmp(a, "--no-resume");
    const int takes_value = !strcmp(a, "--resume") || !strcmp(a, "--bench-steps") ||
                            !strcmp(a, "--stop-after");
    if (!no_resume && !takes_value) return 0;
    if (takes_value && *i + 1 >= argc)
        alice_die("alice %s: %s needs a value (see alice %s --help)", command, a, command);
    if (no_resume) o->resume = 0;
    else if (!strcmp(a, "--resume")) o->resume_from = argv[++*i];
    else if (!strcmp(a, "--bench-steps")) o->bench_steps = cli_step_count(command, a, argv[++*i]);
    else o->stop_after = cli_step_count(command, a, argv[++*i]);
    /* the explicit checkpoint would win in silence */
    if (!o->resume && o->resume_from)
        alice_die("alice %s: --resume %s and --no-resume contradict each other: give one", command,
                  o->resume_from);
    return 1;
}

/* The key=value arguments met so far for one Config: a job file given after them (`alice
 * pretrain lr=1e-3 --config job.cfg`) must not undo them, so each file load applies them again.
 * The command line wins over every job file, wherever it stands. */
static struct {
    const Config *cfg;
    int count;
    const char *args[256];
} g_overrides;

static void apply_override(Config *cfg, const char *a)
{
    const char *eq = strchr(a, '=');
    char key[128];
    size_t n = (size_t)(eq - a);
    if (n >= sizeof key) alice_die("command line: key too long in '%s'", a);
    memcpy(key, a, n);
    key[n] = '\0';
    config_set(cfg, key, eq + 1, "command line", 0);
}

/* Applies key=value argument a now and again after every job file loaded later. */
static void remember_override(Config *cfg, const char *a)
{
    apply_override(cfg, a);
    if (g_overrides.cfg != cfg) g_overrides.cfg = cfg, g_overrides.count = 0;
    if (g_overrides.count == (int)(sizeof g_overrides.args / sizeof g_overrides.args[0]))
        alice_die("command line: more than %d key=value arguments",
                  (int)(sizeof g_overrides.args / sizeof g_overrides.args[0]));
    g_overrides.args[g_overrides.count++] = a;
}

static void load_job_file(Config *cfg, const char *path)
{
    config_load_file(cfg, path);
    if (g_overrides.cfg != cfg) return;
    for (int k = 0; k < g_overrides.count; k++) apply_override(cfg, g_overrides.args[k]);
}

/* 1 when key=value argument a names one of list's keys (NULL-terminated). */
static int names_key_of(const char *a, const char *const *list)
{
    const size_t n = (size_t)(strchr(a, '=') - a);
    for (int u = 0; list[u]; u++)
        if (strlen(list[u]) == n && !strncmp(a, list[u], n)) return 1;
    return 0;
}

void cli_only_keys(const Config *cfg, const char *command, const char *const *used)
{
    if (g_overrides.cfg != cfg) return;
    for (int k = 0; k < g_overrides.count; k++) {
        const char *a = g_overrides.args[k];
        if (names_key_of(a, used)) continue;
        char list[512] = "";
        for (int u = 0; used[u]; u++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", u ? ", " : "",
                     used[u]);
        alice_die("alice %s: '%s' sets a key alice %s does not use (it reads %s); give it to "
                  "the command that does (alice config --keys describes every key)", command, a,
                  command, list);
    }
}

const char *const cli_pretraining_keys[] = {
    "method", "mask_ratio", "rec_region", "mask_shape", "norm_pix", "head_hidden",
    "head_bottleneck", "head_out", "head_norm_last", "head_init", "freeze_last_layer",
    "casa_dim", "inter_volume", "key_jitter", "intact_aug", "pair_redraws", "key_crop",
    "use_dv", "use_casa", "cls_source", "casa_layer", "casa_kv", "casa_heads", "casa_ffn_dim",
    "w_rec", "w_dv", "w_st", "ema_start", "ema_end", "teacher_decoder", "align_loss",
    "teacher_temp", "student_temp", "warmup_teacher_temp", "warmup_teacher_temp_steps",
    "center_momentum", "matcher", "dec_dim", "dec_depth", "dec_heads", "dec_mlp_dim", NULL};

void cli_refuse_keys(const Config *cfg, const char *command, const char *const *unused,
                     const char *whose)
{
    if (g_overrides.cfg != cfg) return;
    for (int k = 0; k < g_overrides.count; k++)
        if (names_key_of(g_overrides.args[k], unused))
            alice_die("alice %s: '%s' sets a key of %s, which alice %s does not use; give it "
                      "to the command that does (alice config --keys describes every key)",
                      command, g_overrides.args[k], whose, command);
}

int cli_config_arg(Config *cfg, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    if (!strcmp(a, "--config") || !strcmp(a, "-c")) {
        if (*i + 1 >= argc) alice_die("%s needs a job file, e.g. --config jobs/pretrain_tiny.cfg", a);
        load_job_file(cfg, argv[++*i]);
        return 1;
    }
    if (!strncmp(a, "--config=", 9)) { load_job_file(cfg, a + 9); return 1; }
    if (a[0] != '-' && strchr(a, '=')) {
        remember_override(cfg, a);
        return 1;
    }
    return 0;
}

void cli_flag_override(Config *cfg, const char *key, const char *value)
{
    const size_t n = strlen(key) + strlen(value) + 2;
    char *a = xmalloc(n);   /* kept for the process's life, as argv's strings are */
    snprintf(a, n, "%s=%s", key, value);
    remember_override(cfg, a);
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
