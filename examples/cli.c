#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tapegrad.h"

const char *cli_prog = "tapegrad";

/* "<prog>: <message><tail>" on one line: a control character that an
 * argument, a path or a file's metadata brought in (a newline, an escape
 * sequence) is printed as '?'. */
static void print_error(const char *tail, const char *fmt, va_list ap)
{
    char msg[2048];
    vsnprintf(msg, sizeof msg, fmt, ap);
    for (char *c = msg; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = '?';
    fprintf(stderr, "%s: %s%s\n", cli_prog, msg, tail);
}

void cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    print_error("", fmt, ap);
    va_end(ap);
}

const char *cli_rank(void)
{
    static _Thread_local char text[32];
    if (tg_dist_size() < 2)
        return "";
    snprintf(text, sizeof text, "rank %d: ", tg_dist_rank());
    return text;
}

void cli_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    print_error(" (try --help)", fmt, ap);
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

/* A number written in decimal, as the integer flags take them: not hex
 * (strtod reads 0x10 as 16), no leading space. */
static bool decimal(const char *s)
{
    return !isspace((unsigned char)s[0]) && !strpbrk(s, "xX");
}

/* The range is checked on the float the program uses: 1e-50 is a double
 * in (0, hi] but the float 0, which a learning rate or a prior's scale
 * must not be. */
float cli_float_pos(const char *flag, const char *s, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    float f = (float)v;
    if (errno || end == s || *end || !isfinite(v) || !(f > 0.0f) || v > hi ||
        !decimal(s))
        cli_usage_error("%s: expected a number in (0, %g], got '%s'%s", flag,
                        hi, s, v > 0.0 && f == 0.0f ? " (0 as a float)" : "");
    return f;
}

/* A finite number in [lo, hi], lo's sign kept by the float. */
static float cli_float_in(const char *flag, const char *s, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    float f = (float)v;
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi ||
        (double)f < lo || !decimal(s))
        cli_usage_error("%s: expected a number in [%g, %g], got '%s'", flag, lo,
                        hi, s);
    return f;
}

/* The index of s in c->names; else a usage error listing them. */
static void cli_pick(const char *flag, const char *s, cli_choice *c)
{
    int k = 0;
    while (c->names[k] && strcmp(c->names[k], s) != 0)
        k++;
    if (c->names[k]) {
        c->chosen = k;
        c->given |= (uint32_t)1 << k;
        return;
    }
    char list[256] = "";
    size_t len = 0;
    for (int i = 0; c->names[i] && len < sizeof list; i++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s",
                                i == 0            ? ""
                                : c->names[i + 1] ? ", "
                                                  : " or ",
                                c->names[i]);
    cli_usage_error("%s: expected %s, got '%s'", flag, list, s);
}

/* Reports the getopt_long failure (unknown option or missing value) as a
 * usage error. c is what getopt_long returned. A long option is at
 * argv[optind - 1]; an unknown short one (optopt) may sit inside an
 * argument getopt has not finished ("-batch" is -b -a -t ...), where
 * argv[optind - 1] is the argument before it, so that one is looked up. */
static void cli_getopt_error(int c, int argc, char **argv)
{
    const char *arg = argv[optind - 1];
    if (c == ':')
        cli_usage_error("option '%s' needs a value", arg);
    if (optopt > 0 && optopt < 256) {
        for (int i = 1; i < argc; i++)
            if (argv[i][0] == '-' && argv[i][1] != '-' &&
                strchr(argv[i] + 1, optopt)) {
                if (strlen(argv[i]) > 2)
                    cli_usage_error("unknown option '%s' (long options take "
                                    "two dashes: '-%s')",
                                    argv[i], argv[i]);
                cli_usage_error("unknown option '%s'", argv[i]);
            }
        cli_usage_error("unknown option '-%c'", optopt);
    }
    cli_usage_error("unknown option '%s'", arg);
}

/* Parses s as f's value into *f->value. */
static void set_value(const cli_flag *f, const char *s)
{
    char flag[80];
    snprintf(flag, sizeof flag, "--%s", f->name);
    switch (f->kind) {
    case CLI_INT:
        *(int *)f->value = cli_int(flag, s, f->lo, (long)f->hi);
        break;
    case CLI_U64:
        *(uint64_t *)f->value = cli_u64(flag, s);
        break;
    case CLI_FLOAT:
        *(float *)f->value = cli_float_pos(flag, s, f->hi);
        break;
    case CLI_FLOAT_IN:
        *(float *)f->value = cli_float_in(flag, s, (double)f->lo, f->hi);
        break;
    case CLI_STR: /* a path or a word: "" names nothing ("none" does) */
        if (!*s)
            cli_usage_error("%s is empty", flag);
        *(const char **)f->value = s;
        break;
    case CLI_CHOICE:
        cli_pick(flag, s, f->value);
        break;
    case CLI_BOOL:
        *(bool *)f->value = true;
        break;
    }
}

enum { HELP_WIDTH = 79 };

/* Writes the words of text (up to a newline) to f and a newline, wrapped at
 * HELP_WIDTH characters, the lines after the first indented to col; pos is
 * the column f is at. Returns the text after the newline. */
static const char *print_wrapped(FILE *f, const char *text, int pos, int col)
{
    bool first = true;
    while (*text && *text != '\n') {
        while (*text == ' ')
            text++;
        int len = (int)strcspn(text, " \n");
        if (len == 0)
            continue;
        if (!first && pos + 1 + len > HELP_WIDTH) {
            fprintf(f, "\n%*s", col, "");
            pos = col;
        } else if (!first) {
            fputc(' ', f);
            pos++;
        }
        first = false;
        fprintf(f, "%.*s", len, text);
        pos += len;
        text += len;
    }
    fputc('\n', f);
    return *text ? text + 1 : text;
}

/* Each line of text as a paragraph wrapped at HELP_WIDTH; an empty line
 * stays empty. */
static void print_paragraphs(FILE *f, const char *text)
{
    while (*text)
        text = print_wrapped(f, text, 0, 0);
}

void cli_print_flags(FILE *f, const cli_flag *flags, int n)
{
    /* the help column: after the longest "  --name ARG  ", at most MAX_COL
     * (a longer one's help follows it on its line) */
    enum { MAX_COL = 22 };
    int col = 0;
    for (int i = 0; i < n; i++) {
        int w = 2 + 2 + (int)strlen(flags[i].name) +
                (flags[i].arg ? 1 + (int)strlen(flags[i].arg) : 0) + 2;
        col = w > col ? w : col;
    }
    col = col > MAX_COL ? MAX_COL : col;
    for (int i = 0; i < n; i++) {
        const cli_flag *fl = &flags[i];
        int pos = fprintf(f, "  --%s%s%s", fl->name, fl->arg ? " " : "",
                          fl->arg ? fl->arg : "");
        pos += fprintf(f, "%*s", pos + 2 < col ? col - pos : 2, "");
        char text[1024];
        snprintf(text, sizeof text, "%s%s%s%s", fl->help,
                 fl->def ? " (default " : "", fl->def ? fl->def : "",
                 fl->def ? ")" : "");
        print_wrapped(f, text, pos, col);
    }
    fprintf(f, "  --help, --version\n");
}

/* The library ran out of memory (tg_out_of_memory, the handler set below),
 * or a call returned TG_ERR_NOMEM: a model or batch too large for this
 * machine, not a bug. One line, no temporary left behind, status 1; _exit,
 * as this may run on any thread, inside a parallel region. */
void cli_out_of_memory(const char *message)
{
    /* One line: threads of a parallel region may run out together, and
     * each had printed its line before the first _exit ended them all.
     * The first says it; the others wait for its _exit. */
    static atomic_flag said = ATOMIC_FLAG_INIT;
    if (atomic_flag_test_and_set(&said))
        for (;;)
            pause();
    tg_atomic_discard_open();
    cli_remove_new_out_dir(); /* when this run made it and wrote nothing */
    fflush(stdout);
    /* under mpirun, which rank's machine: the others may have memory */
    cli_error("%s%s (the model or the batch is too large for this machine's "
              "memory)",
              cli_rank(), message);
    _exit(1);
}

/* The values of the flags the last cli_parse_flags found in argv. */
static const void *given_values[64];
static int n_given;

bool cli_given(const void *value)
{
    for (int i = 0; i < n_given; i++)
        if (given_values[i] == value)
            return true;
    return false;
}

void cli_parse_flags(int argc, char **argv, const cli_flag *flags, int n,
                     const char *head, const char *foot)
{
    tg_set_oom_handler(cli_out_of_memory);
    /* A file-size limit (ulimit -f) reached: the write fails (EFBIG) and
     * takes the write-error path (one line, status 1, no temporary), as a
     * full disk does, instead of SIGXFSZ killing without a word. */
    signal(SIGXFSZ, SIG_IGN);
    /* A closed stdout (| head) fails a write (EPIPE), which
     * cli_flush_stdout reports, instead of SIGPIPE killing without a word
     * and losing the work not yet saved. */
    signal(SIGPIPE, SIG_IGN);
    enum { HELP = 1000, VERSION = 1001, MAX_FLAGS = 64 };
    struct option longopts[MAX_FLAGS + 3];
    if (n > MAX_FLAGS)
        n = MAX_FLAGS;
    for (int i = 0; i < n; i++) {
        longopts[i] = (struct option){
            flags[i].name,
            flags[i].kind == CLI_BOOL ? no_argument : required_argument, NULL,
            i};
        if (flags[i].def) {
            set_value(&flags[i], flags[i].def);
            if (flags[i].kind == CLI_CHOICE)
                ((cli_choice *)flags[i].value)->given = 0;
        }
    }
    n_given = 0;
    longopts[n] = (struct option){"help", no_argument, NULL, HELP};
    longopts[n + 1] = (struct option){"version", no_argument, NULL, VERSION};
    longopts[n + 2] = (struct option){NULL, 0, NULL, 0};
    opterr = 0;
    int c;
    /* --help or --version wins over a bad value before it (--epochs 0
     * --help gave the --epochs error): a first pass looks only for them,
     * up to the first unknown flag (getopt still takes each flag's value,
     * so --out --help names a folder), the second parses the values */
    for (int pass = 0; pass < 2; pass++) {
        optind = 0; /* GNU getopt: start again, from argv[1] */
        while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
            bool info = c == HELP || c == 'h' || c == VERSION;
            if (pass == 0 && (c == '?' || c == ':'))
                break; /* an unknown flag (or -batch read as -b -a ...) */
            if (pass == 0 && !info)
                continue;
            /* a rank > 0's stdout is /dev/null: without a word on stderr
             * (held, and said if rank 0 was not given it too) the job
             * stopped silently */
            if (info && tg_dist_rank() != 0) {
                fprintf(
                    stderr,
                    "%s: rank %d has %s but rank 0 has not: every rank must "
                    "run the same job; stopped\n",
                    cli_prog, tg_dist_rank(), argv[optind - 1]);
                exit(0);
            }
            if (c == HELP || c == 'h') {
                print_paragraphs(stdout, head);
                printf("\n");
                cli_print_flags(stdout, flags, n);
                if (foot) {
                    printf("\n");
                    print_paragraphs(stdout, foot);
                }
                cli_flush_stdout(true); /* the text is the output */
                exit(0);
            }
            if (c == VERSION) {
                printf("%s (tapegrad %s)\n", cli_prog, TG_VERSION);
                cli_flush_stdout(true);
                exit(0);
            }
            if (c < 0 || c >= n)
                cli_getopt_error(c, argc, argv);
            set_value(&flags[c], optarg);
            if (!cli_given(flags[c].value) &&
                n_given < (int)(sizeof given_values / sizeof *given_values))
                given_values[n_given++] = flags[c].value;
        }
    }
    if (optind < argc)
        cli_usage_error("unexpected argument '%s'", argv[optind]);
}

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

void cli_shell_word(FILE *f, const char *s)
{
    bool plain = s[0] != '\0', control = false;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (!isalnum(c) && !strchr("-_./=:,+@%", c))
            plain = false;
        control |= c < 0x20 || c == 0x7f;
    }
    if (plain) {
        fputs(s, f);
        return;
    }
    if (control) { /* $'...' keeps a line break on the line it is on */
        fputs("$'", f);
        for (const char *p = s; *p; p++) {
            unsigned char c = (unsigned char)*p;
            if (c == '\\' || c == '\'')
                fprintf(f, "\\%c", c);
            else if (c == '\n')
                fputs("\\n", f);
            else if (c == '\t')
                fputs("\\t", f);
            else if (c < 0x20 || c == 0x7f)
                fprintf(f, "\\x%02x", c);
            else
                fputc(c, f);
        }
        fputc('\'', f);
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

static void cli_parse_begin(void)
{
    if (tg_dist_rank() != 0) {
        fflush(stderr);
        held = tmpfile();
        saved_stderr = dup(STDERR_FILENO);
        int fd = held ? fileno(held) : open("/dev/null", O_WRONLY);
        dup2(fd, STDERR_FILENO);
        if (!held)
            close(fd);
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
