/* The examples' runs: the start of a program as one process or as one rank
 * of many (flags parsed on every rank, one message for all), the limits of
 * a model and a batch, and the progress bar. */
#define _GNU_SOURCE /* memfd_create */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "tapegrad.h"
#include "tg_build_id.h"

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
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
static FILE *held; /* a rank > 0's stderr while parsing */

/* Puts stderr back; when replay, what was held is written to it first. */
static void restore_stderr(bool replay)
{
    if (saved_stderr < 0)
        return;
    fflush(stderr);
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    saved_stderr = -1;
    if (replay && held) {
        char buf[4096];
        size_t n;
        rewind(held);
        while ((n = fread(buf, 1, sizeof buf, held)) > 0)
            fwrite(buf, 1, n, stderr);
        fflush(stderr);
    }
    if (held)
        fclose(held);
    held = NULL;
}

/* An exit while parsing (a flag error, --help): every rank learns of it in
 * cli_parse_end's agreement, so none waits for this one; the lowest rank
 * that exits says why (its held message), then MPI is finalized. */
static void finalize_if_parsing(void)
{
    if (!parsing)
        return;
    parsing = false;
    fflush(stderr);
    bool all = tg_dist_all_ok(false);
    restore_stderr(!all && tg_dist_first_failed() == tg_dist_rank());
    tg_dist_finalize();
}

/* A file in memory for a rank's held stderr (Linux: no file system
 * involved), else a temporary file. It was tmpfile() alone, in /tmp, with
 * /dev/null in its stead when that failed: a rank whose /tmp was full or
 * read-only lost its message (a flag only it had wrong stopped the job,
 * exit status 2, without a word). */
static FILE *hold_file(void)
{
#if defined(__linux__) && defined(MFD_CLOEXEC)
    int fd = memfd_create("held-stderr", MFD_CLOEXEC);
    if (fd >= 0) {
        FILE *f = fdopen(fd, "w+");
        if (f)
            return f;
        close(fd);
    }
#endif
    return tmpfile();
}

static void cli_parse_begin(void)
{
    if (tg_dist_rank() != 0) {
        fflush(stderr);
        /* nothing to hold it in: the rank speaks for itself (a line from
         * more than one rank, rather than none) */
        held = hold_file();
        if (held) {
            saved_stderr = dup(STDERR_FILENO);
            if (saved_stderr < 0) {
                fclose(held);
                held = NULL;
            } else {
                dup2(fileno(held), STDERR_FILENO);
            }
        }
    }
    parsing = true;
    atexit(finalize_if_parsing);
}

static void cli_parse_end(void)
{
    parsing = false;
    bool all = tg_dist_all_ok(true);
    restore_stderr(false);
    if (!all) { /* another rank could not parse its flags: it said why */
        tg_dist_finalize();
        exit(2);
    }
}

/* A standard stream the program was started without (">&-", "2>&-"):
 * /dev/null, read-only, takes its number. Left free, the number went to
 * the next file opened, the output folder's .lock, held for the whole
 * run: the progress lines or bnn_mnist's table were written into it, over
 * the PID that names the run to another one, and exit status 0. A write
 * now fails (EBADF) as on a closed pipe, and is reported as one. */
static void std_streams_open(void)
{
    for (int fd = STDIN_FILENO; fd <= STDERR_FILENO; fd++) {
        if (fcntl(fd, F_GETFD) != -1 || errno != EBADF)
            continue;
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0 && null != fd) {
            dup2(null, fd);
            close(null);
        }
    }
}

/* Rank 0 says why, at once; a rank r > 0 only when the job is still
 * running 2 s on (mpirun ends a job one of whose processes failed, and its
 * signal ends the wait): rank 0 is then another program, vae_mnist say,
 * waiting in MPI_Init (with rank 0 alone speaking, such a mixed job
 * stopped without a word). */
void cli_one_process(void)
{
    std_streams_open();
    int n = tg_dist_launcher_size();
    if (n <= 1)
        return;
    char as[48];
    tg_dist_refusal_prefix(as, sizeof as);
    fprintf(stderr,
            "%s: started by an MPI launcher as %s %d processes, but %s "
            "runs as one process (only vae_mnist and mlp_mnist train "
            "data-parallel): each copy would do the whole job into the same "
            "files; run it without mpirun\n",
            cli_prog, as, n, cli_prog);
    exit(2);
}

void cli_dist_start(int *argc, char ***argv)
{
    /* Before MPI_Init, which sizes a shared-memory file: past a file-size
     * limit (ulimit -f) SIGXFSZ killed the rank there without a word
     * (cli_parse_flags, which ignores it too, came too late) */
    signal(SIGXFSZ, SIG_IGN);
    std_streams_open();
    /* this program's build, which a library of another build (found
     * through LD_LIBRARY_PATH) does not share: the ranks compare both */
    tg_dist_set_program_build(TG_BUILD_ID);
    tg_dist_init(argc, argv);
    if (tg_dist_rank() != 0 && !freopen("/dev/null", "w", stdout))
        exit(1);
    cli_parse_begin();
}

void cli_dist_ready(int threads)
{
    cli_parse_end();
    tg_set_threads(threads ? threads : tg_dist_default_threads());
}

void cli_check_model_size(uint64_t numel, const char *what)
{
    if (numel <= CLI_MAX_PARAMS)
        return;
    if (tg_dist_rank() == 0)
        fprintf(stderr, "%s: %s make %llu parameters, more than %llu\n",
                cli_prog, what, (unsigned long long)numel,
                (unsigned long long)CLI_MAX_PARAMS);
    tg_dist_finalize();
    exit(2);
}

void cli_check_batch_size(int batch, int rows, int cols)
{
    uint64_t n = (uint64_t)batch * (uint64_t)rows * (uint64_t)cols;
    if (n <= CLI_MAX_BATCH_PIXELS)
        return;
    if (tg_dist_rank() == 0)
        fprintf(stderr,
                "%s: --batch %d of %dx%d images holds %llu pixels, more "
                "than %llu\n",
                cli_prog, batch, rows, cols, (unsigned long long)n,
                (unsigned long long)CLI_MAX_BATCH_PIXELS);
    tg_dist_finalize();
    exit(2);
}

void cli_same_job(const char *const *names, const char *const *values, int n)
{
    for (int i = 0; i < n; i++) {
        char rank0[TG_DIST_SAME_MAX];
        if (tg_dist_same(values[i], rank0))
            continue;
        if (tg_dist_first_failed() == tg_dist_rank())
            fprintf(stderr,
                    "%s: rank %d has %s '%s' but rank 0 has '%s': every rank "
                    "must run the same job; stopped\n",
                    cli_prog, tg_dist_rank(), names[i], values[i], rank0);
        tg_dist_finalize();
        exit(2);
    }
}
