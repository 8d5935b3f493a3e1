#include "core/config.h"

#include <ctype.h>
#include <float.h>
#include <limits.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/check.h"
#include "core/log.h"

const ConfigKey *config_find_key(const char *name)
{
    for (int i = 0; i < config_key_count; i++)
        if (strcmp(config_keys[i].name, name) == 0) return &config_keys[i];
    return NULL;
}

static void where(char *buf, size_t n, const char *origin, int line)
{
    if (line > 0) snprintf(buf, n, "%s:%d", origin, line);
    else snprintf(buf, n, "%s", origin);
}

/* strtod and scanf's %lf read hexadecimal too (seed = 0x10 as 16, crop = 0x20): any 0x in a
 * value makes it refused, decimal only. */
static int has_hex(const char *s)
{
    for (const char *x = strpbrk(s, "xX"); x; x = strpbrk(x + 1, "xX"))
        if (x > s && x[-1] == '0') return 1;
    return 0;
}

static int parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(v)) return 0;
    if (has_hex(s)) return 0;
    *out = v;
    return 1;
}

/* An integer value: plain digits are read exactly (a seed past 2^53 kept every digit; through
 * a double it became its neighbour), other spellings (1e5) through parse_double. */
static int parse_integer(const char *s, double *out, long long *exact, int *is_exact)
{
    char *end;
    errno = 0;
    const long long v = strtoll(s, &end, 10);
    *is_exact = !errno && end != s && *end == '\0';
    if (*is_exact) {   /* base 10: no 0x prefix gets this far */
        *exact = v;
        *out = (double)v;
        return 1;
    }
    if (errno == ERANGE) return 0;
    return parse_double(s, out);
}

double config_float_decimal(float v)
{
    char text[32];
    for (int digits = 1; digits <= 9; digits++) {   /* 9 significant digits always read back */
        snprintf(text, sizeof text, "%.*g", digits, (double)v);
        if (strtof(text, NULL) == v) return strtod(text, NULL);
    }
    return (double)v;   /* NaN */
}

/* Range "min..max", either end may be empty. */
static int in_range(const char *valid, double v)
{
    if (!valid || !strstr(valid, "..")) return 1;
    char lo[64] = "", hi[64] = "";
    const char *dots = strstr(valid, "..");
    snprintf(lo, sizeof lo, "%.*s", (int)(dots - valid), valid);
    snprintf(hi, sizeof hi, "%s", dots + 2);
    if (lo[0] && v < atof(lo)) return 0;
    if (hi[0] && v > atof(hi)) return 0;
    return 1;
}

static int enum_has(const char *valid, const char *value)
{
    size_t n = strlen(value);
    for (const char *p = valid; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, value, n) == 0) return 1;
        if (!bar) break;
        p = bar + 1;
    }
    return 0;
}

#define BOOL_SPELLINGS "1|0|true|false|yes|no|on|off"

/* 1 or 0 for a spelling of a boolean value, -1 for anything else. */
static int bool_spelling(const char *v)
{
    if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on")) return 1;
    if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "off")) return 0;
    return -1;
}

/* An enum whose values include 1 and 0 is a former boolean that gained more choices (cuda_graph
 * = auto|1|0): it takes every boolean spelling for 1 and 0, so job files and checkpoints written
 * for the boolean keep working, and stores the canonical 1 or 0, which config_to_text prints
 * and parses back. */
static int enum_is_widened_bool(const char *valid)
{
    return enum_has(valid, "1") && enum_has(valid, "0");
}

static _Noreturn void unknown_key(const char *key, const char *at)
{
    /* Suggest keys that share a prefix, the usual typo. */
    char hint[1024] = "";
    size_t used = 0;
    for (int i = 0; i < config_key_count && used + 40 < sizeof hint; i++)
        if (strncmp(config_keys[i].name, key, 3) == 0)
            used += (size_t)snprintf(hint + used, sizeof hint - used, "%s%s", used ? ", " : "",
                                     config_keys[i].name);
    alice_die("%s: unknown configuration key '%s'%s%s (`alice config --keys` lists every key)",
              at, key, used ? "; did you mean: " : "", hint);
}

/* "X,Y,Z" (spaces allowed around the commas) or one number for all three axes; nothing else
 * may follow. 1 when the text is one of those. */
static int parse_triple(const char *text, double v[3])
{
    char tail;
    if (has_hex(text)) return 0;
    if (sscanf(text, "%lf , %lf , %lf %c", &v[0], &v[1], &v[2], &tail) != 3) {
        if (sscanf(text, "%lf %c", &v[0], &tail) != 1) return 0;
        v[1] = v[2] = v[0];
    }
    /* nan and inf pass every range comparison */
    return isfinite(v[0]) && isfinite(v[1]) && isfinite(v[2]);
}

/* Whether d fits the key's C type: a value past INT_MAX would wrap (batch = 3e9 read as
 * -2147483648), one past FLT_MAX become inf. */
static int fits_type(ConfigType t, double d)
{
    switch (t) {
    case CFG_T_INT: return d >= INT_MIN && d <= INT_MAX;
    case CFG_T_LONG: return d >= -9.2e18 && d <= 9.2e18;
    case CFG_T_FLOAT: return fabs(d) <= FLT_MAX;
    default: return 1;
    }
}

/* Where a comment starts in a line of configuration text: a '#' at the line's start or after
 * whitespace (so runs/exp#1 is a value); NULL when none. */
static const char *comment_start(const char *line)
{
    for (const char *h = strchr(line, '#'); h; h = strchr(h + 1, '#'))
        if (h == line || isspace((unsigned char)h[-1])) return h;
    return NULL;
}

/* A string value that reads back the same from config_to_text's line: no line break, no
 * comment start. */
static int text_safe(const char *value)
{
    return !strpbrk(value, "\n\r") && !comment_start(value);
}

void config_set(Config *c, const char *key, const char *value, const char *origin, int line)
{
    char at[512];
    where(at, sizeof at, origin, line);
    const ConfigKey *k = config_find_key(key);
    if (!k) unknown_key(key, at);
    char *field = (char *)c + k->offset;
    double d;
    switch (k->type) {
    case CFG_T_INT:
    case CFG_T_LONG: {
        long long exact = 0;
        int is_exact = 0;
        const int parsed = parse_integer(value, &d, &exact, &is_exact);
        /* a long read exactly fits by construction (fits_type's bound is a double's, short of
         * LONG_MAX: the largest seed was refused) */
        const int fits = parsed && ((k->type == CFG_T_LONG && is_exact) || fits_type(k->type, d));
        if (!parsed || d != floor(d) || !in_range(k->valid, d) || !fits)
            alice_die("%s: %s = '%s' is not valid: expected an integer in %s", at, key, value,
                      k->valid && k->valid[0] ? k->valid : "any range");
        if (k->type == CFG_T_INT) *(int *)field = (int)d;
        else *(long *)field = is_exact ? (long)exact : (long)d;
        break;
    }
    case CFG_T_FLOAT:
        if (!parse_double(value, &d) || !in_range(k->valid, d) || !fits_type(k->type, d))
            alice_die("%s: %s = '%s' is not valid: expected a number in %s", at, key, value,
                      k->valid && k->valid[0] ? k->valid : "any range");
        if (d != 0.0 && fabs(d) < FLT_MIN)   /* would be stored as 0, or lose its precision */
            alice_die("%s: %s = '%s' is below the smallest float (%g): it would be 0; give 0, "
                      "or a value of at least that size", at, key, value, (double)FLT_MIN);
        *(float *)field = (float)d;
        break;
    case CFG_T_BOOL:
        if (bool_spelling(value) < 0)
            alice_die("%s: %s = '%s' is not valid: expected one of " BOOL_SPELLINGS, at, key,
                      value);
        *(int *)field = bool_spelling(value);
        break;
    case CFG_T_ENUM:
        if (enum_is_widened_bool(k->valid) && bool_spelling(value) >= 0)
            value = bool_spelling(value) ? "1" : "0";
        if (!enum_has(k->valid, value))
            alice_die("%s: %s = '%s' is not valid: expected one of %s%s", at, key, value, k->valid,
                      enum_is_widened_bool(k->valid)
                          ? " (1 and 0 also spelt true|false, yes|no, on|off)" : "");
        /* fall through */
    case CFG_T_STRING:
        if (strlen(value) >= CFG_STR)
            alice_die("%s: %s is longer than %d characters", at, key, CFG_STR - 1);
        if (!text_safe(value))
            alice_die("%s: %s = '%s' holds a line break, or a '#' at its start or after a space, "
                      "which the configuration text (job files, checkpoints) reads as a comment: "
                      "rename it without them", at, key, value);
        snprintf(field, CFG_STR, "%s", value);
        break;
    case CFG_T_FLOAT3:
    case CFG_T_INT3: {
        double v[3];
        const int ints = k->type == CFG_T_INT3;
        int ok = parse_triple(value, v);
        for (int a = 0; a < 3 && ok; a++)
            ok = in_range(k->valid, v[a]) &&
                 (!ints || (v[a] == floor(v[a]) && fits_type(CFG_T_INT, v[a])));
        if (!ok)
            alice_die("%s: %s = '%s' is not valid: expected X,Y,Z (or one number for all three)"
                      "%s in %s", at, key, value, ints ? ", integers," : "", k->valid);
        for (int a = 0; a < 3; a++) {
            if (ints) ((int *)field)[a] = (int)v[a];
            else ((float *)field)[a] = (float)v[a];
        }
        break;
    }
    }
}

void config_defaults(Config *c)
{
    memset(c, 0, sizeof *c);
    for (int i = 0; i < config_key_count; i++)
        config_set(c, config_keys[i].name, config_keys[i].default_value, "built-in default", 0);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
    return s;
}

/* Applies `key = value` lines of text in place; line numbers count every line. With
 * skip_unknown, a key this registry lacks is skipped with a warning instead of refused (a
 * configuration stored by another alice version). */
static void apply_text(Config *c, char *text, const char *origin, int skip_unknown)
{
    int line = 0;
    int *set_at = xcalloc((size_t)config_key_count, sizeof(int));   /* line of each key's value */
    char *p = text;
    while (p && *p) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = '\0';
        line++;
        const char *hash = comment_start(p);
        if (hash) p[hash - p] = '\0';
        char *s = trim(p);
        if (*s) {
            char *eq = strchr(s, '=');
            if (!eq) alice_die("%s:%d: expected 'key = value', got '%s'", origin, line, s);
            *eq = '\0';
            const char *key = trim(s);
            if (skip_unknown && !config_find_key(key)) {
                if (log_rank() == 0)
                    log_warn("%s:%d: key '%s' is unknown to this alice (written by another "
                             "version?): ignored", origin, line, key);
            } else {
                const char *value = trim(eq + 1);
                const size_t n = strlen(value);
                /* A job file's values are taken as written: run_dir = "runs/x" would be a
                 * folder named with the quotes. Refused in job files (a stored configuration
                 * is read back as it was written, whatever it holds). */
                if (!skip_unknown && n >= 2 && (value[0] == '"' || value[0] == '\'') &&
                    value[n - 1] == value[0])
                    alice_die("%s:%d: %s = %s is quoted, but job files take values as written "
                              "(the quotes would become part of it): write %s = %.*s", origin,
                              line, key, value, key, (int)(n - 2), value + 1);
                config_set(c, key, value, origin, line);
                const int index = (int)(config_find_key(key) - config_keys);
                if (set_at[index] && log_rank() == 0)
                    log_warn("%s:%d: %s is set again (first at line %d); the later value is used",
                             origin, line, key, set_at[index]);
                set_at[index] = line;
            }
        }
        p = nl ? nl + 1 : NULL;
    }
    free(set_at);
}

void config_load_file(Config *c, const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        alice_die("job file %s is a directory; give --config a job file, e.g. "
                  "jobs/pretrain_tiny.cfg", path);
    FILE *f = fopen(path, "r");
    if (!f) alice_die("cannot open job file %s: %s (check the path given to --config)", path, strerror(errno));
    /* read to the end rather than trusting a size: pipes and process substitutions have none */
    size_t cap = 4096, used = 0, got;
    char *buf = xmalloc(cap);
    while ((got = fread(buf + used, 1, cap - 1 - used, f)) > 0) {
        used += got;
        if (used + 1 == cap) buf = xrealloc(buf, cap *= 2);
    }
    const int failed = ferror(f);
    fclose(f);
    if (failed) alice_die("cannot read job file %s: %s", path, strerror(errno));
    buf[used] = '\0';
    if (strlen(buf) != used)
        alice_die("job file %s holds a NUL byte at offset %zu: not a text file (give --config a "
                  "`key = value` job file)", path, strlen(buf));
    /* a UTF-8 byte-order mark (Windows editors) is not part of the first key */
    apply_text(c, !strncmp(buf, "\xEF\xBB\xBF", 3) ? buf + 3 : buf, path, 0);
    free(buf);
}

/* v as the shortest %g that parses back to the same float (at most 9 digits, which always
 * does): lr = 0.002 rather than 0.00200000009, still the same bits when read back; whole
 * numbers below 1e9 as integers (600, not %g's 6e+02). */
static void format_float(char *buf, size_t n, float v)
{
    if (v == floorf(v) && fabsf(v) < 1e9f) {
        snprintf(buf, n, "%.0f", (double)v);
        return;
    }
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, n, "%.*g", digits, (double)v);
        if (strtof(buf, NULL) == v || v != v) return;
    }
}

char *config_to_text(const Config *c)
{
    size_t cap = 8192, used = 0;
    char *out = xmalloc(cap);
    out[0] = '\0';
    for (int i = 0; i < config_key_count; i++) {
        const ConfigKey *k = &config_keys[i];
        const char *field = (const char *)c + k->offset;
        char val[CFG_STR + 64];
        switch (k->type) {
        case CFG_T_INT: case CFG_T_BOOL: snprintf(val, sizeof val, "%d", *(const int *)field); break;
        case CFG_T_LONG: snprintf(val, sizeof val, "%ld", *(const long *)field); break;
        case CFG_T_FLOAT: format_float(val, sizeof val, *(const float *)field); break;
        case CFG_T_STRING: case CFG_T_ENUM: snprintf(val, sizeof val, "%s", field); break;
        case CFG_T_INT3: {
            const int *v = (const int *)field;
            snprintf(val, sizeof val, "%d,%d,%d", v[0], v[1], v[2]);
            break;
        }
        case CFG_T_FLOAT3: {
            const float *v = (const float *)field;
            char x[32], y[32], z[32];
            format_float(x, sizeof x, v[0]);
            format_float(y, sizeof y, v[1]);
            format_float(z, sizeof z, v[2]);
            snprintf(val, sizeof val, "%s,%s,%s", x, y, z);
            break;
        }
        }
        size_t need = strlen(k->name) + strlen(val) + 8;
        if (used + need >= cap) {
            cap = 2 * cap + need;
            out = xrealloc(out, cap);
        }
        used += (size_t)snprintf(out + used, cap - used, "%s = %s\n", k->name, val);
    }
    return out;
}

void config_from_text(Config *c, const char *text, const char *origin)
{
    config_defaults(c);
    char *copy = strdup(text);
    ALICE_ASSERT(copy, "out of memory");
    apply_text(c, copy, origin, 1);
    free(copy);
}

/* A mask_ratio that masks k whole z columns, k nearest to ratio's (1 .. columns - 1): k /
 * columns as printed (%g) where that masks them, else half a token above it, as the masked
 * count is floor(mask_ratio * tokens) of the float mask_ratio and 26 / 36 printed as 0.722222
 * masks 103 of 144, not 104. */
static double z_tubes_ratio(float ratio, int columns, int gz, int tokens)
{
    int k = (int)(ratio * columns + 0.5f);
    if (k < 1) k = 1;
    if (k > columns - 1) k = columns - 1;
    char printed[32];
    snprintf(printed, sizeof printed, "%g", (double)k / columns);
    const float exact = strtof(printed, NULL);
    if ((int)(exact * tokens) == k * gz) return exact;
    return ((double)k * gz + 0.5) / tokens;
}

void config_validate(const Config *c)
{
    const char *axis = "XYZ";
    for (int a = 0; a < 3; a++)
        if (c->crop[a] % c->patch)
            alice_die("configuration: crop %c = %d is not divisible by patch = %d; choose a crop "
                      "that is a multiple of the patch size", axis[a], c->crop[a], c->patch);
    if (c->embed_dim % c->heads)
        alice_die("configuration: embed_dim = %d is not divisible by heads = %d", c->embed_dim, c->heads);
    /* AdamW's bias corrections divide by 1 - beta^t: a beta of 1 (also a value the float
     * rounds to 1, e.g. 0.99999999) makes the first step NaN */
    if (!(c->beta1 < 1.0f) || !(c->beta2 < 1.0f))
        alice_die("configuration: beta1 = %.9g and beta2 = %.9g must each be below 1 (stored as "
                  "float); AdamW divides by 1 - beta^t", c->beta1, c->beta2);
    if (c->window_hi <= c->window_lo)
        alice_die("configuration: window_hi = %g must be above window_lo = %g", c->window_hi, c->window_lo);
    /* a packed data set has the folds of its packing (fine-tuning checks the fold against
     * them); num_folds splits the synthetic cases only */
    if (!strcmp(c->data, "synthetic") && c->fold >= c->num_folds)
        alice_die("configuration: fold = %d but num_folds = %d (valid folds: 0..%d, or -1)",
                  c->fold, c->num_folds, c->num_folds - 1);
    /* attention holds tokens^2 scores per head: 2^24 tokens is far past any memory, and the
     * count stays an int below it (a larger crop wrapped it round to nonsense) */
    const long long grid_tokens = (long long)(c->crop[0] / c->patch) *
                                  (c->crop[1] / c->patch) * (c->crop[2] / c->patch);
    if (grid_tokens > (1LL << 24))
        alice_die("configuration: crop %d,%d,%d at patch %d makes %lld tokens, more than the "
                  "2^24 a ViT here can hold (attention keeps tokens^2 scores); use a smaller "
                  "crop or a larger patch", c->crop[0], c->crop[1], c->crop[2], c->patch,
                  grid_tokens);
}

void config_validate_pretraining(const Config *c)
{
    config_validate(c);
    if (c->dec_dim % c->dec_heads)
        alice_die("configuration: dec_dim = %d is not divisible by dec_heads = %d", c->dec_dim,
                  c->dec_heads);
    const int tokens = (c->crop[0] / c->patch) * (c->crop[1] / c->patch) *
                       (c->crop[2] / c->patch);   /* at most 2^24 (config_validate) */
    int visible = tokens - (int)(c->mask_ratio * tokens);
    if (visible < 1)
        alice_die("configuration: mask_ratio = %g leaves no visible patch of %d", c->mask_ratio, tokens);
    if (!strcmp(c->casa_layer, "transformer") && c->casa_dim % c->casa_heads != 0)
        alice_die("configuration: casa_dim = %d is not divisible by casa_heads = %d",
                  c->casa_dim, c->casa_heads);
    const int gz = c->crop[2] / c->patch, columns = tokens / gz;
    /* one column: it is masked whole or not at all, and neither leaves a visible and a masked
     * token (the ratio suggested below would be 0, itself refused) */
    if (!strcmp(c->mask_shape, "z_tubes") && columns < 2)
        alice_die("configuration: mask_shape = z_tubes masks whole (x, y) columns, and crop "
                  "%d,%d at patch %d makes one: use a crop of at least 2 patches in X or Y, or "
                  "mask_shape = tokens", c->crop[0], c->crop[1], c->patch);
    if (!strcmp(c->mask_shape, "z_tubes") && (tokens - visible) % gz != 0)
        alice_die("configuration: mask_shape = z_tubes masks whole columns of %d z tokens, but "
                  "mask_ratio = %g masks %d of %d tokens, not a multiple of %d: set mask_ratio "
                  "to k / %d for a whole k columns (e.g. %.6g)", gz, c->mask_ratio,
                  tokens - visible, tokens, gz, columns, z_tubes_ratio(c->mask_ratio, columns, gz,
                                                                       tokens));
}
