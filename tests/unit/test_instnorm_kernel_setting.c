/* Config key instnorm_kernel (cuda instance norm: own | cudnn) and its setter, in any build:
 *  - the default is "own", "cudnn" and "own" parse;
 *  - a bad value ends the process with exit 2 (a user error) and a message naming the key, the
 *    value and the valid ones;
 *  - train_apply_device_math hands the choice to gpu_set_instnorm (read back through
 *    gpu_instnorm_kernel: the CUDA backend's setting, or the record the CPU-only stub keeps,
 *    src/ops/gpu_stub.c);
 *  - gpu_set_instnorm with a value outside GpuInstnormKernel is a fatal error (exit 1).
 * The kernels themselves are compared in test_backend_parity (GPU). */
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/config.h"
#include "ops/gpu_device.h"
#include "test.h"
#include "test_config.h"
#include "train/train_common.h"

static int test_default_and_values(void)
{
    Config cfg;
    config_defaults(&cfg);
    TEST_CHECK(!strcmp(cfg.instnorm_kernel, "own"), "default instnorm_kernel is '%s', expected "
               "'own' (the GPU-verified kernels, until a GPU run measures cuDNN faster)",
               cfg.instnorm_kernel);
    config_set(&cfg, "instnorm_kernel", "cudnn", "test", 0);
    TEST_CHECK(!strcmp(cfg.instnorm_kernel, "cudnn"), "instnorm_kernel = cudnn parsed as '%s'",
               cfg.instnorm_kernel);
    config_set(&cfg, "instnorm_kernel", "own", "test", 0);
    TEST_CHECK(!strcmp(cfg.instnorm_kernel, "own"), "instnorm_kernel = own parsed as '%s'",
               cfg.instnorm_kernel);
    const ConfigKey *k = config_find_key("instnorm_kernel");
    TEST_CHECK(k && k->help && strstr(k->help, "bench_instnorm"),
               "instnorm_kernel is not in the key registry with a help text naming its benchmark");
    return 0;
}

/* Runs fn in a child with stderr in a pipe: its exit status (-1: no normal exit) and the first
 * bytes it wrote to stderr. */
static int child_exit(void (*fn)(void), char *err, size_t err_size)
{
    int fds[2];
    if (pipe(fds) != 0) return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        fn();
        _exit(0);
    }
    close(fds[1]);
    size_t got = 0;
    ssize_t r;
    while (got + 1 < err_size && (r = read(fds[0], err + got, err_size - 1 - got)) > 0)
        got += (size_t)r;
    err[got] = '\0';
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void set_bad_value(void)
{
    Config cfg;
    config_defaults(&cfg);
    config_set(&cfg, "instnorm_kernel", "fast", "job.cfg", 7);
}

static void set_bad_kernel(void) { gpu_set_instnorm(INSTNORM_KERNEL_CUDNN + 1); }

static int test_bad_value(void)
{
    char err[1024];
    int rc = child_exit(set_bad_value, err, sizeof err);
    TEST_CHECK(rc == 2, "instnorm_kernel = fast: exit %d, expected 2 (a user error)", rc);
    TEST_CHECK(strstr(err, "job.cfg") && strstr(err, "instnorm_kernel = 'fast' is not valid") &&
               strstr(err, "own|cudnn"),
               "instnorm_kernel = fast: the message does not name the file, the key and value, "
               "and the valid values: %s", err);
    rc = child_exit(set_bad_kernel, err, sizeof err);
    TEST_CHECK(rc == 1 && strstr(err, "gpu_set_instnorm"),
               "gpu_set_instnorm(%d): exit %d, expected 1 with a message naming it: %s",
               INSTNORM_KERNEL_CUDNN + 1, rc, err);
    return 0;
}

static int test_applied(void)
{
    static const char *const cudnn[][2] = {{"instnorm_kernel", "cudnn"}};
    static const char *const own[][2] = {{"instnorm_kernel", "own"}};
    Config cfg;
    TEST_CONFIG(&cfg, cudnn);
    train_apply_device_math(&cfg);
    TEST_CHECK(gpu_instnorm_kernel() == INSTNORM_KERNEL_CUDNN,
               "instnorm_kernel = cudnn set kernel %d, expected INSTNORM_KERNEL_CUDNN (%d)",
               gpu_instnorm_kernel(), INSTNORM_KERNEL_CUDNN);
    TEST_CONFIG(&cfg, own);
    train_apply_device_math(&cfg);
    TEST_CHECK(gpu_instnorm_kernel() == INSTNORM_KERNEL_OWN,
               "instnorm_kernel = own set kernel %d, expected INSTNORM_KERNEL_OWN (%d)",
               gpu_instnorm_kernel(), INSTNORM_KERNEL_OWN);
    return 0;
}

int main(void)
{
    TEST_RUN(test_default_and_values);
    TEST_RUN(test_bad_value);
    TEST_RUN(test_applied);
    return test_finish();
}
