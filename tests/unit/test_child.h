/* Runs a function that should end the process (a fatal error, a configuration error) in a
 * child process, for tests of error paths. */
#ifndef ALICE_TEST_CHILD_H
#define ALICE_TEST_CHILD_H

#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* Runs fn in a child with stderr in a pipe: its exit status (-1: no normal exit) and the first
 * err_size - 1 bytes it wrote to stderr in err. */
static inline int test_child_exit(void (*fn)(void), char *err, size_t err_size)
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

#endif
