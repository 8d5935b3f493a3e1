/* The config keys that choose a CUDA kernel path, and their setters, in any build:
 *  - instnorm_kernel (cuda instance norm: own | cudnn) -> gpu_set_instnorm;
 *  - conv_wgrad_layout (cuda convolution weight gradients: ncdhw | ndhwc)
 *    -> gpu_set_conv_wgrad_layout;
 *  - conv_wgrad_kernel (cuda 3x3x3 weight gradients with few channels: own | cudnn)
 *    -> gpu_set_conv_wgrad_kernel;
 *  - pointwise_conv (cuda 1x1x1 convolutions with few channels: cudnn | own)
 *    -> gpu_set_pointwise_conv.
 * For each: the default is the GPU-verified path and both values parse; a bad value ends the
 * process with exit 2 (a user error) and a message naming the file, the key, the value and the
 * valid ones; the key's help names the benchmark that measures the choice;
 * train_apply_device_math hands the choice to the setter (read back through the getter: the
 * CUDA backend's setting, or the record the CPU-only build keeps); a setter given a value
 * outside its enum is a fatal error (exit 1) naming the setter. The paths themselves are
 * compared in test_backend_parity and test_conv_autotune_gpu (GPU). */
#include <stdio.h>
#include <string.h>

#include "core/config.h"
#include "ops/gpu_device.h"
#include "test.h"
#include "test_child.h"
#include "test_config.h"
#include "train/train_common.h"

typedef struct KernelChoiceKey {
    const char *key, *values[2];  /* values[0]: the default */
    int enums[2];                 /* the setter's value for each */
    const char *help_names;       /* what the key's help must mention */
    void (*set)(int);
    int (*get)(void);
    const char *setter;
} KernelChoiceKey;

static const KernelChoiceKey kKeys[] = {
    {"instnorm_kernel", {"own", "cudnn"}, {INSTNORM_KERNEL_OWN, INSTNORM_KERNEL_CUDNN},
     "bench_instnorm", gpu_set_instnorm, gpu_instnorm_kernel, "gpu_set_instnorm"},
    {"conv_wgrad_layout", {"ncdhw", "ndhwc"}, {CONV_WGRAD_NCDHW, CONV_WGRAD_NDHWC},
     "tests/gpu/run.sh", gpu_set_conv_wgrad_layout, gpu_conv_wgrad_layout,
     "gpu_set_conv_wgrad_layout"},
    {"conv_wgrad_kernel", {"own", "cudnn"}, {CONV_WGRAD_KERNEL_OWN, CONV_WGRAD_KERNEL_CUDNN},
     "tests/gpu/run.sh", gpu_set_conv_wgrad_kernel, gpu_conv_wgrad_kernel,
     "gpu_set_conv_wgrad_kernel"},
    {"pointwise_conv", {"cudnn", "own"}, {POINTWISE_CONV_CUDNN, POINTWISE_CONV_OWN},
     "tests/gpu/run.sh", gpu_set_pointwise_conv, gpu_pointwise_conv, "gpu_set_pointwise_conv"},
};
enum { kKeyCount = (int)(sizeof kKeys / sizeof kKeys[0]) };

/* The key a child process works on (set before fork). */
static const KernelChoiceKey *g_child_key;

static const char *value_of(const Config *cfg, const char *key)
{
    return !strcmp(key, "instnorm_kernel")     ? cfg->instnorm_kernel
           : !strcmp(key, "conv_wgrad_layout") ? cfg->conv_wgrad_layout
           : !strcmp(key, "conv_wgrad_kernel") ? cfg->conv_wgrad_kernel
                                               : cfg->pointwise_conv;
}

static int test_default_and_values(void)
{
    for (int i = 0; i < kKeyCount; i++) {
        const KernelChoiceKey *k = &kKeys[i];
        Config cfg;
        config_defaults(&cfg);
        TEST_CHECK(!strcmp(value_of(&cfg, k->key), k->values[0]), "default %s is '%s', expected "
                   "'%s' (the GPU-verified path, until a GPU run measures the other faster)",
                   k->key, value_of(&cfg, k->key), k->values[0]);
        for (int v = 1; v >= 0; v--) {
            config_set(&cfg, k->key, k->values[v], "test", 0);
            TEST_CHECK(!strcmp(value_of(&cfg, k->key), k->values[v]), "%s = %s parsed as '%s'",
                       k->key, k->values[v], value_of(&cfg, k->key));
        }
        const ConfigKey *entry = config_find_key(k->key);
        TEST_CHECK(entry && entry->help && strstr(entry->help, k->help_names),
                   "%s is not in the key registry with a help text naming %s", k->key,
                   k->help_names);
    }
    return 0;
}

static void set_bad_value(void)
{
    Config cfg;
    config_defaults(&cfg);
    config_set(&cfg, g_child_key->key, "fast", "job.cfg", 7);
}

static void set_bad_enum(void) { g_child_key->set(g_child_key->enums[1] + 1); }

static int test_bad_value(void)
{
    for (int i = 0; i < kKeyCount; i++) {
        const KernelChoiceKey *k = &kKeys[i];
        g_child_key = k;
        char err[1024], said[96], valid[64];
        int rc = test_child_exit(set_bad_value, err, sizeof err);
        snprintf(said, sizeof said, "%s = 'fast' is not valid", k->key);
        snprintf(valid, sizeof valid, "%s|%s", k->values[0], k->values[1]);
        TEST_CHECK(rc == 2, "%s = fast: exit %d, expected 2 (a user error)", k->key, rc);
        TEST_CHECK(strstr(err, "job.cfg") && strstr(err, said) && strstr(err, valid),
                   "%s = fast: the message does not name the file, the key and value, and the "
                   "valid values: %s", k->key, err);
        rc = test_child_exit(set_bad_enum, err, sizeof err);
        TEST_CHECK(rc == 1 && strstr(err, k->setter), "%s(%d): exit %d, expected 1 with a "
                   "message naming it: %s", k->setter, k->enums[1] + 1, rc, err);
    }
    return 0;
}

static int test_applied(void)
{
    for (int i = 0; i < kKeyCount; i++) {
        const KernelChoiceKey *k = &kKeys[i];
        for (int v = 1; v >= 0; v--) {
            const char *const set[][2] = {{k->key, k->values[v]}};
            Config cfg;
            TEST_CONFIG(&cfg, set);
            train_apply_device_math(&cfg);
            TEST_CHECK(k->get() == k->enums[v], "%s = %s set %d, expected %d", k->key,
                       k->values[v], k->get(), k->enums[v]);
        }
    }
    return 0;
}

int main(void)
{
    TEST_RUN(test_default_and_values);
    TEST_RUN(test_bad_value);
    TEST_RUN(test_applied);
    return test_finish();
}
