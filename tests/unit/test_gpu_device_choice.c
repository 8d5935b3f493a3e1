/* The rule by which a rank picks one of its visible GPUs (src/ops/gpu_device_choice.h), on the
 * launch layouts of a cluster, each against the devices a correct run must use: every rank of
 * a node on a different device whenever there are enough, and ranks sharing a device flagged.
 *  - mpirun, all 4 GPUs visible to 4 ranks: node rank r takes device r;
 *  - Slurm one GPU per task (--gpus-per-task=1 with binding): each rank sees one, takes it;
 *  - --gpu-bind=closest with block:cyclic tasks on 8 GPUs: ranks 0, 2, 4, 6 see GPUs 0-3 and
 *    ranks 1, 3, 5, 7 see 4-7; each group spreads over its four (node rank modulo the device
 *    count, the former rule, put ranks 0 and 4 both on device 0);
 *  - 2 ranks per GPU (tests on one GPU): both on it, 2 peers for 1 device;
 *  - 3 ranks on 2 GPUs: 0, 1, 0. */
#include <string.h>

#include "ops/gpu_device_choice.h"
#include "test.h"

enum { KEY = 32 };

/* keys[r] = sets[r], zero-padded records */
static void fill(char *keys, const char *const *sets, int n)
{
    memset(keys, 0, (size_t)n * KEY);
    for (int r = 0; r < n; r++) strncpy(keys + (size_t)r * KEY, sets[r], KEY - 1);
}

static void expect(const char *layout, const char *const *sets, int n, int count,
                   const int *index, const int *peers)
{
    char keys[16 * KEY];
    fill(keys, sets, n);
    for (int r = 0; r < n; r++) {
        GpuDeviceChoice c = gpu_device_choice(keys, KEY, n, r, count);
        TEST_CHECK(c.index == index[r] && c.peers == peers[r],
                   "%s: node rank %d took device %d with %d peers, expected %d with %d", layout,
                   r, c.index, c.peers, index[r], peers[r]);
        TEST_CHECK(c.order < c.peers, "%s: order %d of %d peers", layout, c.order, c.peers);
    }
}

static int test_layouts(void)
{
    const char *all4[] = {"A,B,C,D", "A,B,C,D", "A,B,C,D", "A,B,C,D"};
    expect("mpirun, all visible", all4, 4, 4, (int[]){0, 1, 2, 3}, (int[]){4, 4, 4, 4});
    const char *bound[] = {"A", "B", "C", "D"};
    expect("one GPU per task", bound, 4, 1, (int[]){0, 0, 0, 0}, (int[]){1, 1, 1, 1});
    const char *closest[] = {"A,B,C,D", "E,F,G,H", "A,B,C,D", "E,F,G,H",
                             "A,B,C,D", "E,F,G,H", "A,B,C,D", "E,F,G,H"};
    expect("gpu-bind=closest, block:cyclic", closest, 8, 4, (int[]){0, 0, 1, 1, 2, 2, 3, 3},
           (int[]){4, 4, 4, 4, 4, 4, 4, 4});
    const char *shared[] = {"A", "A"};
    expect("2 ranks per GPU", shared, 2, 1, (int[]){0, 0}, (int[]){2, 2});
    const char *three[] = {"A,B", "A,B", "A,B"};
    expect("3 ranks on 2 GPUs", three, 3, 2, (int[]){0, 1, 0}, (int[]){3, 3, 3});
    /* a prefix is another set: "A" and "A,B" do not share */
    const char *prefix[] = {"A", "A,B"};
    expect("a set and its prefix", prefix, 2, 1, (int[]){0, 0}, (int[]){1, 1});
    return 0;
}

int main(void)
{
    TEST_RUN(test_layouts);
    return test_finish();
}
