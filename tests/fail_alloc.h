/* Makes one heap allocation of the process fail, for tests of what running
 * out of memory does: include in exactly one file of a test. Defining
 * malloc & co. in the executable interposes them for the library, zlib and
 * libc too (glibc's __libc_* entry points do the work, as in
 * bench/count_alloc.h). fail_alloc_arm(n) makes the nth allocation from
 * then on return NULL (errno ENOMEM), once; fail_alloc_disarm() stops it
 * and says whether it came. A sweep arms n = 1, 2, ... until a call no
 * longer reaches its nth allocation. Not for sanitizer builds, which bring
 * their own allocator: FAIL_ALLOC_ACTIVE is 0 there and tests skip. */
#ifndef TG_FAIL_ALLOC_H
#define TG_FAIL_ALLOC_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TG_FAIL_ALLOC_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(TG_FAIL_ALLOC_ASAN)
#define FAIL_ALLOC_ACTIVE 0
static void fail_alloc_arm(long n) { (void)n; }
static bool fail_alloc_disarm(void) { return false; }
#else
#define FAIL_ALLOC_ACTIVE 1

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static long fail_countdown; /* 0: off; else allocations until the failure */
static bool fail_came;

static void fail_alloc_arm(long n)
{
    __atomic_store_n(&fail_came, false, __ATOMIC_SEQ_CST);
    __atomic_store_n(&fail_countdown, n, __ATOMIC_SEQ_CST);
}

static bool fail_alloc_disarm(void)
{
    __atomic_store_n(&fail_countdown, 0, __ATOMIC_SEQ_CST);
    return __atomic_load_n(&fail_came, __ATOMIC_SEQ_CST);
}

/* true: this allocation is the one to fail */
static bool fail_now(void)
{
    long left = __atomic_load_n(&fail_countdown, __ATOMIC_SEQ_CST);
    while (left > 0)
        if (__atomic_compare_exchange_n(&fail_countdown, &left, left - 1, false,
                                        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
            if (left != 1)
                return false;
            __atomic_store_n(&fail_came, true, __ATOMIC_SEQ_CST);
            errno = ENOMEM;
            return true;
        }
    return false;
}

void *malloc(size_t n) { return fail_now() ? NULL : __libc_malloc(n); }
void *calloc(size_t n, size_t size)
{
    return fail_now() ? NULL : __libc_calloc(n, size);
}
void *realloc(void *p, size_t n)
{
    return fail_now() ? NULL : __libc_realloc(p, n);
}
void *aligned_alloc(size_t align, size_t n)
{
    return fail_now() ? NULL : __libc_memalign(align, n);
}
int posix_memalign(void **p, size_t align, size_t n)
{
    if (fail_now())
        return ENOMEM;
    void *q = __libc_memalign(align, n);
    if (!q)
        return ENOMEM;
    *p = q;
    return 0;
}
#endif /* ASan */

#endif
