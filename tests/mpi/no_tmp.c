/* LD_PRELOAD shim: no temporary file can be made (a full or read-only
 * /tmp), and with TG_NO_MEMFD set no file in memory either. */
#undef _FILE_OFFSET_BITS /* tmpfile and tmpfile64 both defined below */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

FILE *tmpfile(void)
{
    errno = ENOSPC;
    return NULL;
}

FILE *tmpfile64(void)
{
    errno = ENOSPC;
    return NULL;
}

int memfd_create(const char *name, unsigned int flags)
{
    if (getenv("TG_NO_MEMFD")) {
        errno = ENOMEM;
        return -1;
    }
    return (int)syscall(SYS_memfd_create, name, flags);
}
