/* Who reports a failed HDF5 call once h5_errors_to_alice (io/h5util.h) has run, as in every
 * alice command:
 *  - an internal error through CHECK_H5 (opening a file in a folder that does not exist): HDF5's
 *    error stack (its "HDF5-DIAG" header) first, then alice's "HDF5 call failed" naming the
 *    call; status 1;
 *  - a full disk, quota or file size limit (errno EFBIG at the failure): alice's message alone,
 *    no HDF5 stack; status 2 (before, HDF5 printed its stack at the failing call, above it);
 *  - a failure the caller handles itself (no CHECK_H5): nothing printed at all. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/check.h"
#include "h5util.h"
#include "test.h"
#include "test_child.h"

static const char *kMissing = "/nonexistent-alice-test-folder/file.h5";

static void internal_error(void)
{
    h5_errors_to_alice();
    CHECK_H5(H5Fopen(kMissing, H5F_ACC_RDONLY, H5P_DEFAULT));
}

static void disk_full(void)
{
    h5_errors_to_alice();
    if (H5Fopen(kMissing, H5F_ACC_RDONLY, H5P_DEFAULT) < 0)   /* an HDF5 stack to (not) print */
        alice_check_h5_failed(EFBIG, "H5Dclose(ds)", __FILE__, __LINE__);
}

static void handled(void)
{
    h5_errors_to_alice();
    if (H5Fopen(kMissing, H5F_ACC_RDONLY, H5P_DEFAULT) >= 0) fputs("opened?\n", stderr);
}

static int test_internal_error(void)
{
    char err[16384];
    const int rc = test_child_exit(internal_error, err, sizeof err);
    const char *stack = strstr(err, "HDF5-DIAG"), *msg = strstr(err, "alice: error:");
    TEST_CHECK(rc == 1, "status %d, want 1", rc);
    TEST_CHECK(stack != NULL, "no HDF5 stack in: %s", err);
    TEST_CHECK(msg != NULL && strstr(msg, "HDF5 call failed: H5Fopen"), "no alice message in: %s",
               err);
    TEST_CHECK(!stack || !msg || stack < msg, "the HDF5 stack does not come first: %s", err);
    return 0;
}

static int test_disk_full(void)
{
    char err[16384];
    const int rc = test_child_exit(disk_full, err, sizeof err);
    TEST_CHECK(rc == 2, "status %d, want 2", rc);
    TEST_CHECK(!strstr(err, "HDF5-DIAG"), "HDF5's stack printed for a full disk: %s", err);
    TEST_CHECK(strstr(err, "an HDF5 write failed: File too large") != NULL, "message: %s", err);
    return 0;
}

static int test_handled(void)
{
    char err[16384];
    const int rc = test_child_exit(handled, err, sizeof err);
    TEST_CHECK(rc == 0 && err[0] == '\0', "status %d, stderr: %s", rc, err);
    return 0;
}

int main(void)
{
    TEST_RUN(test_internal_error);
    TEST_RUN(test_disk_full);
    TEST_RUN(test_handled);
    return test_finish();
}
