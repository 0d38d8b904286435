/* Counts every heap allocation of the process: include in exactly one file
 * of a program. Defining malloc & co. in the executable interposes them for
 * the library, libgomp and libc too; glibc's __libc_* entry points do the
 * work. Not for sanitizer builds, which bring their own allocator. Used by
 * bench/vae_step and tests/models/test_step_alloc. */
#ifndef TG_COUNT_ALLOC_H
#define TG_COUNT_ALLOC_H

#include <stddef.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TG_COUNT_ALLOC_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(TG_COUNT_ALLOC_ASAN)
/* ASan's allocator must not be replaced (the program would die at start):
 * nothing is counted, and COUNT_ALLOC_ACTIVE says so. */
#define COUNT_ALLOC_ACTIVE 0
static long allocs_so_far(void) { return 0; }
#else
#define COUNT_ALLOC_ACTIVE 1

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static long n_allocs;

static long allocs_so_far(void)
{
    return __atomic_load_n(&n_allocs, __ATOMIC_RELAXED);
}

void *malloc(size_t n)
{
    __atomic_add_fetch(&n_allocs, 1, __ATOMIC_RELAXED);
    return __libc_malloc(n);
}
void *calloc(size_t n, size_t size)
{
    __atomic_add_fetch(&n_allocs, 1, __ATOMIC_RELAXED);
    return __libc_calloc(n, size);
}
void *realloc(void *p, size_t n)
{
    __atomic_add_fetch(&n_allocs, 1, __ATOMIC_RELAXED);
    return __libc_realloc(p, n);
}
void *aligned_alloc(size_t align, size_t n)
{
    __atomic_add_fetch(&n_allocs, 1, __ATOMIC_RELAXED);
    return __libc_memalign(align, n);
}
int posix_memalign(void **p, size_t align, size_t n)
{
    __atomic_add_fetch(&n_allocs, 1, __ATOMIC_RELAXED);
    *p = __libc_memalign(align, n);
    return *p ? 0 : 12; /* ENOMEM */
}
#endif /* ASan */

#endif
