/* An LD_PRELOAD shim for out-of-memory tests: a malloc, calloc or realloc
 * called directly from a shared object whose path contains
 * $TG_FAIL_ALLOC_FROM ("libz.so": zlib's inflate and deflate state), or of
 * exactly $TG_FAIL_ALLOC_SIZE bytes (one buffer a flag sizes), or the first
 * one after a read-only open() of a path ending in $TG_FAIL_ALLOC_AFTER_OPEN
 * (the FILE of an fdopen that follows), returns NULL with errno ENOMEM, as
 * it would on a machine out of memory; the others are served by glibc
 * (oom_paths.sh). */
#undef _FILE_OFFSET_BITS /* open and open64 as two symbols, both caught */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

static __thread bool inside;    /* dladdr may allocate */
static __thread bool fail_next; /* set by open() of the path */

static bool refused(const void *caller, size_t bytes)
{
    if (fail_next) {
        fail_next = false;
        errno = ENOMEM;
        return true;
    }
    const char *size = getenv("TG_FAIL_ALLOC_SIZE");
    if (size && *size && strtoull(size, NULL, 10) == bytes) {
        errno = ENOMEM;
        return true;
    }
    const char *from = getenv("TG_FAIL_ALLOC_FROM");
    if (!from || !*from || inside)
        return false;
    inside = true;
    Dl_info info;
    bool hit =
        dladdr(caller, &info) && info.dli_fname && strstr(info.dli_fname, from);
    inside = false;
    if (hit)
        errno = ENOMEM;
    return hit;
}

void *malloc(size_t n)
{
    return refused(__builtin_return_address(0), n) ? NULL : __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    /* n * size: an overflowing product is glibc's to refuse */
    return refused(__builtin_return_address(0), n * size)
               ? NULL
               : __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    return refused(__builtin_return_address(0), n) ? NULL
                                                   : __libc_realloc(p, n);
}

typedef int (*open_fn)(const char *, int, ...);

static bool named(const char *path)
{
    const char *tail = getenv("TG_FAIL_ALLOC_AFTER_OPEN");
    size_t n = strlen(path), k = tail ? strlen(tail) : 0;
    return k && n >= k && strcmp(path + n - k, tail) == 0;
}

static int open_then_fail(const char *name, const char *path, int flags,
                          va_list ap)
{
    mode_t mode = flags & (O_CREAT | O_TMPFILE) ? va_arg(ap, mode_t) : 0;
    open_fn real;
    void *sym = dlsym(RTLD_NEXT, name);
    memcpy(&real, &sym, sizeof real);
    int fd = real(path, flags, mode);
    if (fd >= 0 && named(path) && (flags & O_ACCMODE) == O_RDONLY)
        fail_next = true;
    return fd;
}

int open(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    int fd = open_then_fail("open", path, flags, ap);
    va_end(ap);
    return fd;
}

int open64(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    int fd = open_then_fail("open64", path, flags, ap);
    va_end(ap);
    return fd;
}
