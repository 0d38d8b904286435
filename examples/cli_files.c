/* The examples' files and stops: the output folder (made, locked, proved
 * writable, removed again when a run wrote nothing), outputs written whole,
 * standard output's failures, stop signals, and data read without labels. */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tapegrad.h"

enum { CLI_PATH_MAX = 4096, CLI_NAME_MAX = 96 }; /* cli_path's buffers */

/* mkdir -p dir, dir without trailing slashes. *made: the length of the
 * shallowest folder of dir this call created, when it created each one
 * below it as well; 0 when dir was there (or another process made part of
 * the way in the meantime: not ours to remove). */
static bool mkdir_p(const char *dir, size_t *made)
{
    char buf[CLI_PATH_MAX];
    *made = 0;
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) {
        errno = ENAMETOOLONG;
        return false;
    }
    if (!buf[0]) {
        errno = ENOENT;
        return false;
    }
    for (char *p = buf + 1;; p++) {
        bool end = *p == '\0';
        if (!end && (*p != '/' || p[-1] == '/'))
            continue;
        *p = '\0';
        if (mkdir(buf, 0777) == 0) {
            if (!*made)
                *made = (size_t)(p - buf);
        } else if (errno == EEXIST) {
            *made = 0;
        } else {
            return false;
        }
        if (end)
            return true;
        *p = '/';
    }
}

bool cli_check_out_dir(const char *dir)
{
    /* refused here, not after training when the first file is written */
    if (strlen(dir) + CLI_NAME_MAX >= CLI_PATH_MAX) {
        cli_error("output folder path is %zu characters; at most %d",
                  strlen(dir), CLI_PATH_MAX - CLI_NAME_MAX - 1);
        return false;
    }
    struct stat st;
    if (stat(dir, &st) == 0 && !S_ISDIR(st.st_mode)) {
        cli_error("output path %s is not a folder", dir);
        return false;
    }
    return true;
}

/* The folder cli_prepare_out_dir created, and the parents it made for it
 * (new_dir[0, new_dir_top) is the shallowest; 0: it created none): a stop
 * or a late refusal removes them while nothing else is in them (rmdir fails
 * otherwise), with the .lock when this run holds it (new_dir_locked), so a
 * run that wrote nothing leaves nothing. A folder that was there before is
 * never recorded: only what this process's own mkdir made. Set before the
 * handlers can read them. */
static char new_dir[CLI_PATH_MAX];
static volatile sig_atomic_t new_dir_top, new_dir_locked;

void cli_remove_new_out_dir(void) /* async-signal-safe */
{
    size_t top = (size_t)new_dir_top, n = 0;
    if (!top)
        return;
    char path[CLI_PATH_MAX];
    for (; new_dir[n]; n++)
        path[n] = new_dir[n];
    if (new_dir_locked) { /* the lock is ours: nobody else's run is here */
        const char *lock = "/.lock";
        size_t i = 0;
        for (; lock[i]; i++)
            path[n + i] = lock[i];
        path[n + i] = '\0';
        unlink(path);
    }
    path[n] = '\0';
    /* the folder, then each parent made for it, deepest first */
    while (n >= top && rmdir(path) == 0) {
        while (n > 0 && path[n - 1] != '/')
            n--;
        while (n > 1 && path[n - 1] == '/')
            n--;
        path[n] = '\0';
    }
}

bool cli_prepare_out_dir(const char *dir)
{
    if (!cli_check_out_dir(dir))
        return false;
    /* cli_check_out_dir bounded the length */
    char clean[CLI_PATH_MAX];
    snprintf(clean, sizeof clean, "%s", dir);
    for (size_t n = strlen(clean); n > 1 && clean[n - 1] == '/';)
        clean[--n] = '\0';
    size_t made;
    struct stat st;
    if (!mkdir_p(clean, &made) || stat(dir, &st) != 0) {
        cli_error("cannot create output folder %s: %s", dir, strerror(errno));
        return false;
    }
    bool ours = made && !new_dir_top; /* (a second call's: not recorded) */
    if (ours) {
        memcpy(new_dir, clean, sizeof new_dir);
        atomic_signal_fence(memory_order_seq_cst); /* the path, then the flag */
        new_dir_top = (sig_atomic_t)made;
    }
    if (!S_ISDIR(st.st_mode)) {
        cli_error("output path %s is not a folder", dir);
        return false;
    }
    if (tg_dir_lock(dir) != TG_OK) {
        fprintf(stderr, "%s: %s\n", cli_prog, tg_errmsg());
        if (ours) /* not its .lock: another run's */
            cli_remove_new_out_dir();
        return false;
    }
    new_dir_locked = ours;
    tg_remove_stale_temps(dir);
    /* The write test is a temporary of this process, made new and never
     * through a link (a plain ".write_test" had emptied the file a link of
     * that name led to, deleted a user's file of that name, and waited
     * forever on a FIFO there); a killed run's is swept as any temporary. */
    char probe[64];
    snprintf(probe, sizeof probe, ".write_test.tapegrad-tmp.%ld",
             (long)getpid());
    const char *path = cli_path(dir, probe);
    const int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    int fd = open(path, flags, 0600);
    if (fd < 0 && errno == EEXIST && unlink(path) == 0)
        fd = open(path, flags, 0600); /* our pid's: a dead process's */
    if (fd < 0 || close(fd) != 0) {
        cli_error("output folder %s is not writable: %s", dir, strerror(errno));
        if (fd >= 0)
            unlink(path);
        cli_remove_new_out_dir();
        return false;
    }
    unlink(path);
    return true;
}

bool cli_check_outputs(const char *dir, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (tg_atomic_check(cli_path(dir, names[i])) != TG_OK) {
            cli_error("%s", tg_errmsg());
            return false;
        }
    return true;
}

bool cli_remove_stale_output(const char *dir, const char *name, const char *why)
{
    const char *path = cli_path(dir, name);
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || unlink(path) == 0)
        return true;
    cli_error("cannot remove %s, %s: %s", path, why, strerror(errno));
    return false;
}

const char *cli_path(const char *dir, const char *name)
{
    static char bufs[4][CLI_PATH_MAX];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
    return b;
}

FILE *cli_out_open(tg_atomic_file *a, const char *path)
{
    if (tg_atomic_open(a, path) != TG_OK) {
        fprintf(stderr, "%s: %s\n", cli_prog, tg_errmsg());
        exit(1);
    }
    return a->f;
}

void cli_out_commit(tg_atomic_file *a, bool ok)
{
    if (tg_atomic_commit(a, ok) != TG_OK) {
        fprintf(stderr, "%s: %s\n", cli_prog, tg_errmsg());
        exit(1);
    }
}

void cli_flush_stdout(bool output)
{
    static bool noted;
    errno = 0;
    if (fflush(stdout) == 0 && !ferror(stdout))
        return;
    const char *why = errno ? strerror(errno) : "write failed";
    if (output) {
        cli_error("cannot write standard output: %s", why);
        exit(1);
    }
    if (!noted)
        cli_error("note: cannot write standard output (%s): its lines are "
                  "lost; the run goes on and writes its files",
                  why);
    noted = true;
}

volatile sig_atomic_t cli_interrupted;

/* Ends the process as sig would have, without the temporary of a file
 * being written (async-signal-safe calls only). */
static void stop_now(int sig)
{
    tg_atomic_discard_open();
    cli_remove_new_out_dir();
    signal(sig, SIG_DFL);
    raise(sig); /* blocked in the handler: delivered on return */
}

static void on_sigint(int sig)
{
    if (cli_interrupted) /* the second Ctrl-C kills */
        stop_now(sig);
    cli_interrupted = 1;
}

static void catch_stops(void (*handler)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    /* mpirun turns Ctrl-C into SIGTERM for every rank (then SIGKILL a few
     * seconds later): a rank stops the same way. */
    sigaction(SIGTERM, &sa, NULL);
    /* a closed terminal or ssh session: a stop like any other (it had
     * killed vae_mnist mid-save, leaving the temporary checkpoint), unless
     * the run was started to outlive it (nohup: SIGHUP ignored) */
    struct sigaction hup;
    if (sigaction(SIGHUP, NULL, &hup) == 0 && hup.sa_handler != SIG_IGN)
        sigaction(SIGHUP, &sa, NULL);
}

void cli_catch_sigint(void) { catch_stops(on_sigint); }

void cli_stop_cleanly(void) { catch_stops(stop_now); }

const char *cli_labels_file(const char *dir, bool train)
{
    const char *base =
        train ? "train-labels-idx1-ubyte" : "t10k-labels-idx1-ubyte";
    char gz[CLI_NAME_MAX];
    struct stat st;
    const char *raw = cli_path(dir, base);
    if (lstat(raw, &st) == 0)
        return raw;
    snprintf(gz, sizeof gz, "%s.gz", base);
    return cli_path(dir, gz);
}

bool cli_load_unlabelled(const char *dir, bool train, tg_dataset *ds)
{
    struct stat sb;
    if (stat(dir, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
        memset(ds, 0, sizeof *ds);
        tg_error(TG_ERR_IO, "%s: not a directory", dir);
        return false;
    }
    tg_status st = tg_idx_images_load(dir, train, ds);
    if (st == TG_ERR_NOMEM) /* not bad data */
        cli_out_of_memory(tg_errmsg());
    return st == TG_OK;
}

void cli_note_labels(const tg_dataset *ds, const char *dir, bool train,
                     int classes, const char *use)
{
    int bad = 0, first = -1;
    for (int i = 0; ds->labels && i < ds->n; i++)
        if (ds->labels[i] >= classes) {
            bad++;
            first = first < 0 ? i : first;
        }
    if (bad)
        fprintf(stderr,
                "%s: note: %s: %d label%s outside 0..%d (the first: image "
                "%d, label %d); %s\n",
                cli_prog, cli_labels_file(dir, train), bad, bad == 1 ? "" : "s",
                classes - 1, first, ds->labels[first], use);
}
