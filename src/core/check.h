/* Error checking for every library call: each macro reports the file and line of the
 * failing call and ends the job (MPI_Abort when MPI is up, so no rank is left hanging). */
#ifndef ALICE_CHECK_H
#define ALICE_CHECK_H

#include <errno.h>
#include <stddef.h>

/* Prints "alice: error: <file>:<line>: <message>" and aborts every rank. */
_Noreturn void alice_fatal_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A user-facing error (bad input, bad config): "alice: error: <message>", exit status 2. */
_Noreturn void alice_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Cleanup run once when the process ends on an error (alice_die, alice_fatal_at and the CHECK
 * macros), before it exits: e.g. removing a half-written file. Returns 1 when the process must
 * then end without running atexit handlers (a library whose own exit handler would crash on
 * the state the error left, as HDF5's does on a file whose writes failed). At most
 * ALICE_FATAL_CLEANUPS; each registered once (the caller keeps a flag). */
#define ALICE_FATAL_CLEANUPS 4
typedef int (*AliceFatalCleanup)(void);
void alice_on_fatal(AliceFatalCleanup fn);

#define ALICE_FATAL(...) alice_fatal_at(__FILE__, __LINE__, __VA_ARGS__)
#define ALICE_ASSERT(cond, ...) do { if (!(cond)) ALICE_FATAL(__VA_ARGS__); } while (0)

/* MPI: any return other than MPI_SUCCESS. */
#define CHECK_MPI(call) do { int rc_ = (call); \
    if (rc_ != 0) alice_check_mpi_failed(rc_, #call, __FILE__, __LINE__); } while (0)
_Noreturn void alice_check_mpi_failed(int rc, const char *what, const char *file, int line);
/* MPI_Init_thread (FUNNELED, checked) with MPI_COMM_WORLD's errors returned to CHECK_MPI
 * rather than aborting inside the call. */
void alice_mpi_init(int *argc, char ***argv);

/* HDF5: identifiers and herr_t are negative on failure. The errno of the failed call decides
 * what it was: a full disk, a quota or a file size limit (HDF5 writes small datasets and
 * metadata at any later call, not only at H5Dwrite) is the machine's, status 2 with the
 * system's reason; anything else an internal error (status 1). */
_Noreturn void alice_check_h5_failed(int err, const char *what, const char *file, int line);
/* Prints HDF5's error stack of the failed call (io/h5util.c registers it, h5_errors_to_alice):
 * alice_check_h5_failed calls it for internal errors, never for a full disk, whose reason alice
 * words itself. NULL (the default): HDF5 printed its stack itself as the call failed. */
void alice_set_h5_stack_printer(void (*print)(void));
#define CHECK_H5(call) ({ errno = 0; __typeof__(call) rc_ = (call); \
    if (rc_ < 0) { alice_check_h5_failed(errno, #call, __FILE__, __LINE__); } \
    rc_; })

/* malloc that never returns NULL. */
void *alice_malloc_at(size_t bytes, const char *file, int line);
void *alice_calloc_at(size_t count, size_t size, const char *file, int line);
void *alice_realloc_at(void *p, size_t bytes, const char *file, int line);
#define xmalloc(bytes) alice_malloc_at((bytes), __FILE__, __LINE__)
#define xcalloc(count, size) alice_calloc_at((count), (size), __FILE__, __LINE__)
#define xrealloc(p, bytes) alice_realloc_at((p), (bytes), __FILE__, __LINE__)

#endif
