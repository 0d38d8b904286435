/* An LD_PRELOAD shim for reliability tests: right after the program's
 * first fstat() of the file $TG_SHRINK_PATH, that file is truncated to
 * $TG_SHRINK_SIZE bytes, as another process rewriting it would while it
 * is read; the caller sees the size it had (run_char_rnn.sh). Other
 * fstat calls pass through untouched. */
#undef _FILE_OFFSET_BITS /* fstat and fstat64 as two symbols, both caught */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* After a successful fstat of the file of device dev and inode ino. */
static void maybe_shrink(dev_t dev, ino_t ino)
{
    static int done;
    const char *path = getenv("TG_SHRINK_PATH"),
               *size = getenv("TG_SHRINK_SIZE");
    struct stat there;
    if (!done && path && size && stat(path, &there) == 0 &&
        there.st_dev == dev && there.st_ino == ino) {
        done = 1;
        if (truncate(path, atol(size)) != 0)
            _exit(99);
    }
}

static void *real(const char *name) { return dlsym(RTLD_NEXT, name); }

int fstat(int fd, struct stat *st)
{
    int (*f)(int, struct stat *);
    void *sym = real("fstat"); /* POSIX's way to take a function */
    memcpy(&f, &sym, sizeof f);
    int r = f(fd, st);
    if (r == 0)
        maybe_shrink(st->st_dev, st->st_ino);
    return r;
}

int fstat64(int fd, struct stat64 *st)
{
    int (*f)(int, struct stat64 *);
    void *sym = real("fstat64");
    memcpy(&f, &sym, sizeof f);
    int r = f(fd, st);
    if (r == 0)
        maybe_shrink(st->st_dev, st->st_ino);
    return r;
}
