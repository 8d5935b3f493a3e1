/* A test's configuration: the defaults with a table of {key, value} overrides applied, so a
 * test states only what differs from the defaults. */
#ifndef ALICE_TEST_CONFIG_H
#define ALICE_TEST_CONFIG_H

#include <stddef.h>

#include "core/config.h"

static inline void test_config_from_table(Config *cfg, const char *const pairs[][2], size_t n)
{
    config_defaults(cfg);
    for (size_t i = 0; i < n; i++) config_set(cfg, pairs[i][0], pairs[i][1], "test", 0);
}

/* pairs: a static array of {key, value}. */
#define TEST_CONFIG(cfg, pairs) test_config_from_table((cfg), (pairs), sizeof(pairs) / sizeof((pairs)[0]))

#endif
