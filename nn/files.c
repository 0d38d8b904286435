/* The files a training program writes: whole or not at all (temporary file,
 * fsync, rename, fsync of the folder), no temporaries of dead processes
 * left behind, and one process at a time per output folder.
 *
 * A temporary is "<path>.tapegrad-tmp.<pid>", created new (O_EXCL) and
 * never through a symbolic link (the lock, which may exist already, is
 * never opened through one either): the names a stale-temp
 * sweep removes are ones no other program writes (it had removed a
 * user's "thesis.tex.tmp.20261204", and a checkpoint named "*.tmp.<n>"
 * given to --resume), and a link planted at a temporary's or the lock's
 * name cannot make a run write through it into another file. The rename
 * replaces regular files only: a link to one is written through (the
 * file it names is replaced, the link stays), anything else (/dev/null, a
 * FIFO, a folder) is refused, where it had been replaced by a file. */
#define _DEFAULT_SOURCE /* realpath */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tg_nn.h"

#define TEMP_MARK ".tapegrad-tmp."

/* The temporaries open now, for tg_atomic_discard_open from a signal
 * handler: a fixed table of (lock-free atomic) pointers, each set after its
 * name is complete and cleared before it is freed, by any thread. Past
 * OPEN_TEMPS_MAX files open at once, the others are not listed (a killed
 * run's are swept by the next one all the same). */
enum { OPEN_TEMPS_MAX = 16 };
static _Atomic(char *) open_temps[OPEN_TEMPS_MAX];

static void open_temps_add(char *tmp)
{
    for (int i = 0; i < OPEN_TEMPS_MAX; i++) {
        char *none = NULL;
        if (atomic_compare_exchange_strong(&open_temps[i], &none, tmp))
            return;
    }
}

static void open_temps_remove(char *tmp)
{
    for (int i = 0; i < OPEN_TEMPS_MAX; i++) {
        char *mine = tmp;
        atomic_compare_exchange_strong(&open_temps[i], &mine, NULL);
    }
}

void tg_atomic_discard_open(void)
{
    for (int i = 0; i < OPEN_TEMPS_MAX; i++) {
        char *t = atomic_load(&open_temps[i]);
        if (t)
            unlink(t);
    }
}

/* The folder holding path ("." when it has no slash), malloc'd. */
static char *folder_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;
    char *dir = malloc(n + 2);
    if (!dir)
        return NULL;
    if (!slash)
        strcpy(dir, ".");
    else if (n == 0)
        strcpy(dir, "/");
    else {
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    return dir;
}

/* What a file of mode m is, for a refusal ("a FIFO"). */
static const char *file_kind(mode_t m)
{
    return S_ISDIR(m)    ? "a folder"
           : S_ISFIFO(m) ? "a FIFO"
           : S_ISCHR(m)  ? "a character device"
           : S_ISBLK(m)  ? "a block device"
           : S_ISSOCK(m) ? "a socket"
                         : "not a regular file";
}

/* The path a write of path commits to, malloc'd into *target: path itself
 * when nothing is there or a regular file is; the file a symbolic link
 * leads to when it is a regular file (the link stays a link). Anything
 * else there (a folder, a FIFO, a device, a link to one of them or to
 * nothing) is refused, as a rename would replace it. */
static tg_status commit_target(const char *path, char **target)
{
    *target = NULL;
    struct stat st;
    bool exists = lstat(path, &st) == 0;
    if (!exists && errno != ENOENT)
        return tg_error(TG_ERR_IO, "cannot write %s: %s", path,
                        strerror(errno));
    if (!exists || S_ISREG(st.st_mode)) {
        *target = malloc(strlen(path) + 1);
        if (!*target)
            return tg_error(TG_ERR_NOMEM, "%s: out of memory", path);
        strcpy(*target, path);
        return TG_OK;
    }
    if (S_ISLNK(st.st_mode)) {
        char *real = realpath(path, NULL);
        if (!real)
            return tg_error(TG_ERR_IO,
                            "cannot write %s: a symbolic link %s%s; not "
                            "replaced",
                            path,
                            errno == ENOENT ? "to a missing file"
                                            : "that cannot be followed: ",
                            errno == ENOENT ? "" : strerror(errno));
        if (stat(real, &st) != 0)
            st.st_mode = 0;
        if (!S_ISREG(st.st_mode)) {
            tg_status e = tg_error(TG_ERR_IO,
                                   "cannot write %s: a symbolic link to %s, "
                                   "%s; not replaced",
                                   path, real, file_kind(st.st_mode));
            free(real);
            return e;
        }
        *target = real;
        return TG_OK;
    }
    return tg_error(TG_ERR_IO, "cannot write %s: it is %s; not replaced", path,
                    file_kind(st.st_mode));
}

tg_status tg_atomic_check(const char *path)
{
    if (!path)
        tg_fatal("atomic_check", "NULL path");
    char *target;
    tg_status st = commit_target(path, &target);
    if (st == TG_OK) { /* the temporary is made in the target's folder */
        char *dir = folder_of(target);
        if (!dir)
            st = tg_error(TG_ERR_NOMEM, "%s: out of memory", path);
        else if (access(dir, W_OK | X_OK) != 0)
            st = tg_error(TG_ERR_IO, "cannot write %s: folder %s: %s", path,
                          dir, strerror(errno));
        free(dir);
    }
    free(target);
    return st;
}

tg_status tg_atomic_open(tg_atomic_file *a, const char *path)
{
    if (!a || !path)
        tg_fatal("atomic_open", "NULL %s", a ? "path" : "file");
    memset(a, 0, sizeof *a);
    tg_status resolved = commit_target(path, &a->path);
    if (resolved != TG_OK)
        return resolved;
    path = a->path;
    size_t n = strlen(path) + 32;
    a->tmp = malloc(n);
    if (!a->tmp) {
        tg_status st = tg_error(TG_ERR_NOMEM, "%s: out of memory", path);
        free(a->path);
        a->path = NULL;
        return st;
    }
    snprintf(a->tmp, n, "%s" TEMP_MARK "%ld", path, (long)getpid());
    const int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    int fd = open(a->tmp, flags, 0644);
    if (fd < 0 && errno == EEXIST && unlink(a->tmp) == 0)
        fd = open(a->tmp, flags, 0644); /* our pid's: a dead process's */
    if (fd >= 0)
        open_temps_add(a->tmp);
    /* a file replaced keeps its permissions (a private 0600 file had come
     * back 0644, readable by all); a new one gets 0644 less the umask */
    struct stat old;
    if (fd >= 0 && stat(path, &old) == 0 && S_ISREG(old.st_mode))
        (void)fchmod(fd, old.st_mode & 07777);
    a->f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!a->f) {
        /* ENOMEM: fdopen's stream, out of memory rather than a bad path */
        tg_status st =
            fd >= 0 && errno == ENOMEM
                ? tg_error(TG_ERR_NOMEM, "%s: out of memory opening it", path)
                : tg_error(TG_ERR_IO, "cannot write %s: %s", path,
                           strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(a->tmp);
            open_temps_remove(a->tmp);
        }
        free(a->path);
        free(a->tmp);
        memset(a, 0, sizeof *a);
        return st;
    }
    return TG_OK;
}

static tg_status sync_folder(const char *path)
{
    char *dir = folder_of(path);
    if (!dir)
        return tg_error(TG_ERR_NOMEM, "%s: out of memory", path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    tg_status st = TG_OK;
    if (fd < 0 || (fsync(fd) != 0 && errno != EINVAL))
        st = tg_error(TG_ERR_IO,
                      "%s: written, but syncing folder %s failed: "
                      "%s",
                      path, dir, strerror(errno));
    if (fd >= 0)
        close(fd);
    free(dir);
    return st;
}

tg_status tg_atomic_commit(tg_atomic_file *a, bool ok)
{
    if (!a)
        tg_fatal("atomic_commit", "NULL file");
    if (!a->f)
        return tg_error(TG_ERR_ARG, "atomic file not open");
    /* The reason of a failed write: errno, when the stream saw an I/O
     * error (set to 0 first, it said "write failed" on a full disk) */
    int err = ferror(a->f) ? errno : 0;
    tg_status st = TG_OK;
    if (!ok || ferror(a->f))
        st = tg_error(TG_ERR_IO, "cannot write %s: %s", a->path,
                      err ? strerror(err) : "write failed");
    if (st == TG_OK && (fflush(a->f) != 0 || fsync(fileno(a->f)) != 0))
        st = tg_error(TG_ERR_IO, "cannot write %s: %s", a->path,
                      strerror(errno));
    if (fclose(a->f) != 0 && st == TG_OK)
        st = tg_error(TG_ERR_IO, "cannot write %s: %s", a->path,
                      strerror(errno));
    /* what is at the path may have changed while the file was written */
    struct stat there;
    if (st == TG_OK && lstat(a->path, &there) == 0 && !S_ISREG(there.st_mode))
        st = tg_error(TG_ERR_IO,
                      "cannot write %s: it became %s while being written; "
                      "not replaced",
                      a->path,
                      S_ISLNK(there.st_mode) ? "a symbolic link"
                                             : file_kind(there.st_mode));
    if (st == TG_OK && rename(a->tmp, a->path) != 0)
        st = tg_error(TG_ERR_IO, "cannot write %s: %s", a->path,
                      strerror(errno));
    if (st != TG_OK)
        unlink(a->tmp);
    open_temps_remove(a->tmp);
    if (st == TG_OK)
        st = sync_folder(a->path);
    free(a->path);
    free(a->tmp);
    memset(a, 0, sizeof *a);
    return st;
}

/* The pid of a name ending TEMP_MARK "<digits>", or 0. */
static long temp_pid(const char *name)
{
    const size_t m = strlen(TEMP_MARK);
    const char *t = strstr(name, TEMP_MARK);
    while (t && strstr(t + 1, TEMP_MARK))
        t = strstr(t + 1, TEMP_MARK);
    if (!t || !t[m] || strlen(t + m) > 18)
        return 0;
    for (const char *p = t + m; *p; p++)
        if (!isdigit((unsigned char)*p))
            return 0;
    return strtol(t + m, NULL, 10);
}

int tg_remove_stale_temps(const char *dir)
{
    if (!dir)
        tg_fatal("remove_stale_temps", "NULL folder");
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int removed = 0;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d))) {
        long pid = temp_pid(e->d_name);
        if (pid <= 0 || pid == (long)getpid())
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue; /* alive, or not ours to judge */
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) <
                (int)sizeof path &&
            unlink(path) == 0)
            removed++;
    }
    closedir(d);
    return removed;
}

tg_status tg_dir_lock(const char *dir)
{
    if (!dir)
        tg_fatal("dir_lock", "NULL folder");
    char path[4096];
    if (snprintf(path, sizeof path, "%s/.lock", dir) >= (int)sizeof path)
        return tg_error(TG_ERR_ARG, "%s: path too long", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return tg_error(TG_ERR_IO, "cannot lock output folder %s: %s%s", dir,
                        strerror(errno),
                        errno == ELOOP ? " (its .lock is a symbolic link)"
                                       : "");
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        char buf[32] = {0};
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        long pid = n > 0 ? strtol(buf, NULL, 10) : 0;
        close(fd);
        if (err == EWOULDBLOCK && pid > 0)
            return tg_error(TG_ERR_IO,
                            "output folder %s is in use by process "
                            "%ld (another run writing there); wait for it "
                            "to end or choose another folder",
                            dir, pid);
        return tg_error(TG_ERR_IO, "cannot lock output folder %s: %s", dir,
                        strerror(err));
    }
    char buf[32];
    int len = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)len, 0) != len) {
        int err = errno;
        close(fd);
        return tg_error(TG_ERR_IO, "cannot lock output folder %s: %s", dir,
                        strerror(err));
    }
    /* fd stays open: the lock lasts as long as the process */
    return TG_OK;
}
