/* An LD_PRELOAD shim for reliability tests: on the Nth open() of the path
 * in $TG_SWAP_PATH, it first renames $TG_SWAP_SRC over that path, as a
 * concurrent atomic save by another process would land between two opens
 * of one load (swap_race.sh). Other opens pass through untouched. With
 * $TG_SWAP_AFTER_STAT set, the rename comes right after the Nth stat() of
 * the path instead (what was checked is then not what is opened). */
#undef _FILE_OFFSET_BITS /* open and open64 as two symbols, both caught */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef int (*open_fn)(const char *, int, ...);

static void maybe_swap(const char *path, bool after_stat)
{
    static int count;
    const char *target = getenv("TG_SWAP_PATH"), *src = getenv("TG_SWAP_SRC"),
               *at = getenv("TG_SWAP_AT");
    if (after_stat != (getenv("TG_SWAP_AFTER_STAT") != NULL))
        return;
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
    maybe_swap(path, false);
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

int stat(const char *path, struct stat *st)
{
    int (*real)(const char *, struct stat *);
    void *sym = dlsym(RTLD_NEXT, "stat");
    memcpy(&real, &sym, sizeof real);
    int r = real(path, st);
    maybe_swap(path, true);
    return r;
}

int stat64(const char *path, struct stat64 *st)
{
    int (*real)(const char *, struct stat64 *);
    void *sym = dlsym(RTLD_NEXT, "stat64");
    memcpy(&real, &sym, sizeof real);
    int r = real(path, st);
    maybe_swap(path, true);
    return r;
}
