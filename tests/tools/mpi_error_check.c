/* A failing MPI call under CHECK_MPI after alice_mpi_init: the job must end through alice's
 * error path (message with this file and line, the call, MPI's reason), not inside MPI's
 * default handler. Run by tests/integration/test_mpi_errors.sh. */
#include <mpi.h>

#include "core/check.h"

int main(int argc, char **argv)
{
    alice_mpi_init(&argc, &argv);
    double x = 1.0, y = 0.0;
    CHECK_MPI(MPI_Allreduce(&x, &y, -1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
    CHECK_MPI(MPI_Finalize());
    return 0;
}
