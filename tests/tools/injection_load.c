/* Loads a CUDA injection library the way the driver does (dlopen, then its
 * InitializeInjection) and prints what that returned: tests/gpu/test_kernel_profile_script.sh
 * checks that the kernel profiler exports the entry point and, on a machine where CUPTI cannot
 * record (no GPU), says so in one line and lets the program run on.
 *   injection_load LIBRARY.so */
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: injection_load LIBRARY.so\n");
        return 2;
    }
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "injection_load: dlopen %s: %s\n", argv[1], dlerror());
        return 1;
    }
    int (*init)(void) = NULL;
    *(void **)&init = dlsym(lib, "InitializeInjection");   /* POSIX's way to a function pointer */
    if (!init) {
        fprintf(stderr, "injection_load: %s has no InitializeInjection: %s\n", argv[1], dlerror());
        return 1;
    }
    printf("InitializeInjection returned %d\n", init());
    fflush(stdout);
    return 0;   /* the library's exit handler (if CUPTI recorded) runs after this */
}
