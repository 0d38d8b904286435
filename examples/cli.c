/* The examples' words: one-line messages, strict flag values, the flag
 * table and its --help, running out of memory, and shell quoting. */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
