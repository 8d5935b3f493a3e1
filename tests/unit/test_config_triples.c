/* The X,Y,Z configuration keys: crop (integers, CFG_T_INT3) and spacing (millimetres,
 * CFG_T_FLOAT3; a string checked only when `alice pack` ran, until session 10), one parser:
 *  - three numbers, or one for all three axes, parse to the values written;
 *  - config_to_text prints them so that parsing the text back gives the same bits;
 *  - every float key is printed as the shortest decimal that reads back as the same float
 *    (lr = 0.002, not 0.00200000009; 1/3 needs 8 digits; whole numbers as integers: 600, not
 *    6e+02), the same bits through the text;
 *  - a value out of the key's range, a wrong count, a non-number, trailing text, or (crop) a
 *    fraction ends the process with exit 2 (a user error) and a message naming the origin, the
 *    key, the value and the range;
 *  - the default spacing is 1.5,1.5,2.0 mm, what data sets packed before the change used. */
#include <string.h>

#include "core/config.h"
#include "test.h"
#include "test_child.h"

static int test_values(void)
{
    Config c;
    config_defaults(&c);
    TEST_CHECK(c.spacing[0] == 1.5f && c.spacing[1] == 1.5f && c.spacing[2] == 2.0f,
               "default spacing %g,%g,%g, expected 1.5,1.5,2", c.spacing[0], c.spacing[1],
               c.spacing[2]);
    config_set(&c, "spacing", "0.8, 0.75,3", "test", 0);
    TEST_CHECK(c.spacing[0] == 0.8f && c.spacing[1] == 0.75f && c.spacing[2] == 3.0f,
               "spacing = 0.8, 0.75,3 parsed as %g,%g,%g", c.spacing[0], c.spacing[1],
               c.spacing[2]);
    config_set(&c, "spacing", "2.5", "test", 0);
    TEST_CHECK(c.spacing[0] == 2.5f && c.spacing[1] == 2.5f && c.spacing[2] == 2.5f,
               "spacing = 2.5 parsed as %g,%g,%g", c.spacing[0], c.spacing[1], c.spacing[2]);
    config_set(&c, "crop", "64", "test", 0);
    TEST_CHECK(c.crop[0] == 64 && c.crop[1] == 64 && c.crop[2] == 64, "crop = 64 parsed as "
               "%d,%d,%d", c.crop[0], c.crop[1], c.crop[2]);
    return 0;
}

static int test_text_round_trip(void)
{
    Config c, back;
    config_defaults(&c);
    config_set(&c, "spacing", "0.1,0.7,1.3", "test", 0);
    config_set(&c, "crop", "96,80,32", "test", 0);
    char *text = config_to_text(&c);
    config_defaults(&back);
    /* each line "key = value" applied as one setting */
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *eq = strstr(line, " = ");
        if (!eq) continue;
        *eq = '\0';
        config_set(&back, line, eq + 3, "round trip", 0);
    }
    free(text);
    TEST_CHECK(!memcmp(back.spacing, c.spacing, sizeof c.spacing), "spacing after the text: "
               "%.9g,%.9g,%.9g, before %.9g,%.9g,%.9g", back.spacing[0], back.spacing[1],
               back.spacing[2], c.spacing[0], c.spacing[1], c.spacing[2]);
    TEST_CHECK(!memcmp(back.crop, c.crop, sizeof c.crop), "crop changed through the text");
    return 0;
}

/* value of key in config_to_text's output, or "" */
static void text_value(const char *text, const char *key, char *out, size_t n)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\n%s = ", key);
    const char *at = strstr(text, pat);
    out[0] = '\0';
    if (at) snprintf(out, n, "%.*s", (int)strcspn(at + strlen(pat), "\n"), at + strlen(pat));
}

static int test_float_text(void)
{
    Config c;
    config_defaults(&c);
    config_set(&c, "lr", "0.002", "test", 0);
    config_set(&c, "drop_path", "0.1", "test", 0);
    config_set(&c, "spacing", "0.7,0.8,1.25", "test", 0);
    c.min_lr = 1.0f / 3.0f;   /* a float no short decimal reads back as */
    config_set(&c, "window_lo", "-1000", "test", 0);
    char *text = config_to_text(&c), v[64];
    text_value(text, "lr", v, sizeof v);
    TEST_CHECK(!strcmp(v, "0.002"), "lr printed as %s, expected 0.002", v);
    text_value(text, "drop_path", v, sizeof v);
    TEST_CHECK(!strcmp(v, "0.1"), "drop_path printed as %s, expected 0.1", v);
    text_value(text, "spacing", v, sizeof v);
    TEST_CHECK(!strcmp(v, "0.7,0.8,1.25"), "spacing printed as %s", v);
    text_value(text, "min_lr", v, sizeof v);
    TEST_CHECK(!strcmp(v, "0.33333334"), "min_lr = 1/3 printed as %s, expected 8 digits", v);
    text_value(text, "window_lo", v, sizeof v);
    TEST_CHECK(!strcmp(v, "-1000"), "window_lo = -1000 printed as %s", v);
    text_value(text, "nccl_timeout_s", v, sizeof v);
    TEST_CHECK(!strcmp(v, "600"), "nccl_timeout_s = 600 printed as %s", v);
    Config back;
    config_defaults(&back);
    config_from_text(&back, text, "round trip");
    free(text);
    TEST_CHECK(back.lr == c.lr && back.drop_path == c.drop_path && back.min_lr == c.min_lr &&
               back.window_lo == c.window_lo &&
               !memcmp(back.spacing, c.spacing, sizeof c.spacing), "floats changed through the text");
    return 0;
}

/* The key and value a child process sets (set before fork). */
static const char *g_key, *g_bad_value;
static void set_bad_value(void)
{
    Config c;
    config_defaults(&c);
    config_set(&c, g_key, g_bad_value, "job.cfg", 12);
}

static int test_bad_values(void)
{
    /* crop: whole numbers of voxels, at least 1 (96.5 and 64,x,2 were once read as 96 and 64) */
    static const struct { const char *key, *value, *message_names; } bad[] = {
        {"spacing", "0,1,1", "0.01..100"}, {"spacing", "1,1", "0.01..100"},
        {"spacing", "1,1,1,1", "0.01..100"}, {"spacing", "abc", "0.01..100"},
        {"spacing", "1.5,x,2", "0.01..100"}, {"spacing", "150", "0.01..100"},
        {"spacing", "-1", "0.01..100"}, {"crop", "96.5", "integers"},
        {"crop", "64,x,2", "integers"}, {"crop", "0,32,32", "integers"},
        {"crop", "32,32", "integers"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        g_key = bad[i].key;
        g_bad_value = bad[i].value;
        char err[1024], said[96];
        const int rc = test_child_exit(set_bad_value, err, sizeof err);
        snprintf(said, sizeof said, "%s = '%s' is not valid", g_key, g_bad_value);
        TEST_CHECK(rc == 2 && strstr(err, "job.cfg") && strstr(err, said) &&
                       strstr(err, bad[i].message_names),
                   "%s = %s: exit %d (expected 2) with a message naming the file, the key, the "
                   "value and %s: %s", g_key, g_bad_value, rc, bad[i].message_names, err);
    }
    return 0;
}

int main(void)
{
    TEST_RUN(test_values);
    TEST_RUN(test_text_round_trip);
    TEST_RUN(test_float_text);
    TEST_RUN(test_bad_values);
    return test_finish();
}
