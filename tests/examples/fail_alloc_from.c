/* An LD_PRELOAD shim for out-of-memory tests: a malloc, calloc or realloc
 * called directly from a shared object whose path contains
 * $TG_FAIL_ALLOC_FROM ("libz.so": zlib's inflate and deflate state), or of
 * exactly $TG_FAIL_ALLOC_SIZE bytes (one buffer a flag sizes), returns NULL
 * with errno ENOMEM, as it would on a machine out of memory; the others are
 * served by glibc (oom_paths.sh). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

static __thread bool inside; /* dladdr may allocate */

static bool refused(const void *caller, size_t bytes)
{
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
