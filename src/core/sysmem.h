/* Host memory available to this process now (bytes), for checks made before allocating. */
#ifndef ALICE_SYSMEM_H
#define ALICE_SYSMEM_H
#include <unistd.h>
static inline double host_available_bytes(void)
{
    return (double)sysconf(_SC_AVPHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
}
#endif
