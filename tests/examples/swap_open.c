/* An LD_PRELOAD shim for reliability tests: on the Nth open() of the path
 * in $TG_SWAP_PATH, it first renames $TG_SWAP_SRC over that path, as a
 * concurrent atomic save by another process would land between two opens
 * of one load (swap_race.sh). Other opens pass through untouched. */
#undef _FILE_OFFSET_BITS /* open and open64 as two symbols, both caught */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int (*open_fn)(const char *, int, ...);

static void maybe_swap(const char *path)
{
    static int count;
    const char *target = getenv("TG_SWAP_PATH"), *src = getenv("TG_SWAP_SRC"),
               *at = getenv("TG_SWAP_AT");
    if (target && src && at && strcmp(path, target) == 0 &&
        ++count == atoi(at) && rename(src, target) != 0)
        perror("swap_open: rename");
}

static int real_open(const char *path, int flags, mode_t mode)
{
    static open_fn real;
    if (!real) { /* POSIX's way to take a function from dlsym */
        void *sym = dlsym(RTLD_NEXT, "open");
        memcpy(&real, &sym, sizeof real);
    }
    return real(path, flags, mode);
}

int open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    maybe_swap(path);
    return real_open(path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    return open(path, flags, mode); /* the swap above, then the real one */
}
