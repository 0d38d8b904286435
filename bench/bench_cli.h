/* Flags of the benchmarks, as the example programs treat theirs: --help (or
 * -h) prints the usage on stdout and exits 0; an unknown flag, a missing
 * value or a malformed one is one line on stderr and exit 2, before any
 * work starts. Header-only: each benchmark is one file. */
#ifndef BENCH_CLI_H
#define BENCH_CLI_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline bool bench_is_help(const char *arg)
{
    return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}

/* "<prog>: <message> (try --help)" on stderr, exit 2. */
#if defined(__GNUC__)
__attribute__((noreturn, format(printf, 2, 3)))
#endif
static inline void
bench_usage_error(const char *prog, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (try --help)\n");
    exit(2);
}

/* The value after argv[*i] (a flag that takes one); advances *i. */
static inline const char *bench_value(const char *prog, int argc, char **argv,
                                      int *i)
{
    if (*i + 1 >= argc)
        bench_usage_error(prog, "%s needs a value", argv[*i]);
    return argv[++*i];
}

/* A whole-string integer in [lo, hi], else a usage error naming the flag. */
static inline long bench_long(const char *prog, const char *flag, const char *s,
                              long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || errno == ERANGE || v < lo || v > hi)
        bench_usage_error(prog, "%s: '%s' is not an integer in %ld..%ld", flag,
                          s, lo, hi);
    return v;
}

/* A whole-string number in (0, hi], else a usage error naming the flag. */
static inline double bench_pos(const char *prog, const char *flag,
                               const char *s, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || errno == ERANGE || !(v > 0) || v > hi)
        bench_usage_error(prog, "%s: '%s' is not a number in (0, %g]", flag, s,
                          hi);
    return v;
}

#endif
