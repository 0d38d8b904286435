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
#ifdef COUNT_ALLOC_OMP_APART
static long omp_allocs_so_far(void) { return 0; }
#endif
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

/* With COUNT_ALLOC_OMP_APART defined before this header (and _GNU_SOURCE
 * before any header), an allocation called for directly from LLVM's OpenMP
 * runtime (libomp, what clang's -fopenmp links) is counted in
 * omp_allocs_so_far() instead: libomp allocates and frees a small block in
 * every parallel region that runs on one thread (__kmpc_serialized_parallel:
 * the regions whose if clause keeps small loops serial) and in some loop
 * schedules, which no code of ours can avoid. GCC's libgomp does not, and
 * is counted as any other code. */
#ifdef COUNT_ALLOC_OMP_APART
#include <dlfcn.h>
#include <string.h>

static long n_omp_allocs;

static long omp_allocs_so_far(void)
{
    return __atomic_load_n(&n_omp_allocs, __ATOMIC_RELAXED);
}

static void count_alloc(const void *caller)
{
    Dl_info info;
    if (dladdr(caller, &info) && info.dli_fname &&
        strstr(info.dli_fname, "/libomp"))
        __atomic_add_fetch(&n_omp_allocs, 1, __ATOMIC_RELAXED);
    else
        __atomic_add_fetch(&n_allocs, 1, __ATOMIC_RELAXED);
}
#else
static void count_alloc(const void *caller)
{
    (void)caller;
    __atomic_add_fetch(&n_allocs, 1, __ATOMIC_RELAXED);
}
#endif

void *malloc(size_t n)
{
    count_alloc(__builtin_return_address(0));
    return __libc_malloc(n);
}
void *calloc(size_t n, size_t size)
{
    count_alloc(__builtin_return_address(0));
    return __libc_calloc(n, size);
}
void *realloc(void *p, size_t n)
{
    count_alloc(__builtin_return_address(0));
    return __libc_realloc(p, n);
}
void *aligned_alloc(size_t align, size_t n)
{
    count_alloc(__builtin_return_address(0));
    return __libc_memalign(align, n);
}
int posix_memalign(void **p, size_t align, size_t n)
{
    count_alloc(__builtin_return_address(0));
    *p = __libc_memalign(align, n);
    return *p ? 0 : 12; /* ENOMEM */
}
#endif /* ASan */

#endif
