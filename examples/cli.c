#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tapegrad.h"

const char *cli_prog = "tapegrad";

void cli_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", cli_prog);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (try --help)\n");
    va_end(ap);
    exit(2);
}

int cli_int(const char *flag, const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi ||
        !(isdigit((unsigned char)s[0]) || s[0] == '-'))
        cli_usage_error("%s: expected an integer in [%ld, %ld], got '%s'", flag,
                        lo, hi, s);
    return (int)v;
}

uint64_t cli_u64(const char *flag, const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || !isdigit((unsigned char)s[0]))
        cli_usage_error("%s: expected a non-negative integer, got '%s'", flag,
                        s);
    return (uint64_t)v;
}

float cli_float_pos(const char *flag, const char *s, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || !(v > 0.0) || v > hi ||
        isspace((unsigned char)s[0]))
        cli_usage_error("%s: expected a number in (0, %g], got '%s'", flag, hi,
                        s);
    return (float)v;
}

void cli_getopt_error(int c, char **argv)
{
    const char *arg = argv[optind - 1];
    if (c == ':')
        cli_usage_error("option '%s' needs a value", arg);
    cli_usage_error("unknown option '%s'", arg);
}

static bool mkdir_p(const char *dir)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) {
        errno = ENAMETOOLONG;
        return false;
    }
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return false;
        *p = '/';
    }
    return mkdir(buf, 0777) == 0 || errno == EEXIST;
}

bool cli_prepare_out_dir(const char *dir)
{
    struct stat st;
    if (!mkdir_p(dir) || stat(dir, &st) != 0) {
        fprintf(stderr, "%s: cannot create output folder %s: %s\n", cli_prog,
                dir, strerror(errno));
        return false;
    }
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "%s: output path %s is not a folder\n", cli_prog, dir);
        return false;
    }
    if (tg_dir_lock(dir) != TG_OK) {
        fprintf(stderr, "%s: %s\n", cli_prog, tg_errmsg());
        return false;
    }
    tg_remove_stale_temps(dir);
    const char *probe = cli_path(dir, ".write_test");
    FILE *f = fopen(probe, "w");
    if (!f || fclose(f) != 0) {
        fprintf(stderr, "%s: output folder %s is not writable: %s\n", cli_prog,
                dir, strerror(errno));
        return false;
    }
    remove(probe);
    return true;
}

const char *cli_path(const char *dir, const char *name)
{
    static char bufs[4][4096];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
    return b;
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
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

volatile sig_atomic_t cli_interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    cli_interrupted = 1;
}

void cli_catch_sigint(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sa.sa_flags = SA_RESETHAND; /* the second Ctrl-C kills */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    /* mpirun turns Ctrl-C into SIGTERM for every rank (then SIGKILL a few
     * seconds later): a rank stops the same way. */
    sigaction(SIGTERM, &sa, NULL);
}

void cli_note_labels(const tg_dataset *ds, const char *dir, int classes,
                     const char *use)
{
    int bad = 0, first = -1;
    for (int i = 0; i < ds->n; i++)
        if (ds->labels[i] >= classes) {
            bad++;
            first = first < 0 ? i : first;
        }
    if (bad)
        fprintf(stderr,
                "%s: note: %s: %d label%s outside 0..%d (the first: image "
                "%d, label %d); %s\n",
                cli_prog, dir, bad, bad == 1 ? "" : "s", classes - 1, first,
                ds->labels[first], use);
}

void cli_shell_word(FILE *f, const char *s)
{
    bool plain = s[0] != '\0';
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("-_./=:,+@%", *p))
            plain = false;
    if (plain) {
        fputs(s, f);
        return;
    }
    fputc('\'', f);
    for (const char *p = s; *p; p++)
        if (*p == '\'')
            fputs("'\\''", f);
        else
            fputc(*p, f);
    fputc('\'', f);
}

/* Under mpirun a rank's stderr is a pipe to the launcher, which copies it to
 * its own stderr: the bar is drawn when that (rank 0's parent's, read from
 * /proc on Linux) is a terminal. Only under a launcher: a program whose
 * stderr a shell redirects to a file must not draw into it. */
static bool launcher_stderr_is_tty(void)
{
    if (tg_dist_size() < 2 && !getenv("OMPI_COMM_WORLD_SIZE") &&
        !getenv("PMI_SIZE"))
        return false;
    char link[64], target[64];
    snprintf(link, sizeof link, "/proc/%ld/fd/2", (long)getppid());
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0)
        return false;
    target[n] = '\0';
    return strncmp(target, "/dev/pts/", 9) == 0 ||
           strncmp(target, "/dev/tty", 8) == 0;
}

void cli_progress_start(cli_progress *p, int total)
{
    p->tty = tg_dist_rank() == 0 &&
             (isatty(STDERR_FILENO) || launcher_stderr_is_tty());
    p->total = total;
    p->t0 = cli_now();
    p->last_draw = 0.0;
}

void cli_progress_update(cli_progress *p, int done, int samples, double loss)
{
    if (!p->tty)
        return;
    double now = cli_now(), dt = now - p->t0;
    if (done < p->total && now - p->last_draw < 0.1)
        return;
    p->last_draw = now;
    enum { WIDTH = 30 };
    int fill = p->total > 0 ? (int)((long)WIDTH * done / p->total) : WIDTH;
    char bar[WIDTH + 1];
    for (int i = 0; i < WIDTH; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[WIDTH] = '\0';
    double rate = dt > 0 ? samples / dt : 0.0;
    double eta = done > 0 ? dt * (p->total - done) / done : 0.0;
    fprintf(stderr, "\r[%s] %d/%d  loss %.2f  %.0f samples/s  ETA %.0fs  ", bar,
            done, p->total, loss, rate, eta);
    fflush(stderr);
}

void cli_progress_end(cli_progress *p)
{
    if (p->tty)
        fprintf(stderr, "\r\033[K");
}

static bool parsing;
static int saved_stderr = -1;

static void finalize_if_parsing(void)
{
    if (parsing)
        tg_dist_finalize();
}

void cli_parse_begin(void)
{
    if (tg_dist_rank() != 0) {
        fflush(stderr);
        saved_stderr = dup(STDERR_FILENO);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, STDERR_FILENO);
        close(null);
    }
    parsing = true;
    atexit(finalize_if_parsing);
}

void cli_parse_end(void)
{
    parsing = false;
    if (saved_stderr >= 0) {
        dup2(saved_stderr, STDERR_FILENO);
        close(saved_stderr);
        saved_stderr = -1;
    }
}
