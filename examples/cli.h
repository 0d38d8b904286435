/* What the example programs share: strict flag values, the output folder,
 * and a progress bar. Errors print one line "<prog>: ..." to stderr. */
#ifndef EX_CLI_H
#define EX_CLI_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* The program name used in messages ("vae_mnist"). */
extern const char *cli_prog;

/* Prints "<prog>: <message> (try --help)" and exits with status 2. */
#if defined(__GNUC__)
__attribute__((noreturn, format(printf, 1, 2)))
#endif
void cli_usage_error(const char *fmt, ...);

/* Whole-string parses; a value out of [lo, hi] or with trailing junk is a
 * usage error naming the flag. */
int cli_int(const char *flag, const char *s, long lo, long hi);
uint64_t cli_u64(const char *flag, const char *s);
float cli_float_pos(const char *flag, const char *s, double hi); /* (0, hi] */

/* A program's flags as a table: cli_parse_flags parses argv against it
 * (with --help: usage(stdout), exit 0; --version: exit 0), each value by
 * cli_int / cli_u64 / cli_float_pos; an unknown flag, a missing value or a
 * stray argument is a usage error (exit 2). */
typedef enum cli_kind {
    CLI_INT,      /* int *, in [lo, hi] */
    CLI_U64,      /* uint64_t * */
    CLI_FLOAT,    /* float *, in (0, hi] */
    CLI_FLOAT_IN, /* float *, finite, in [lo, hi] */
    CLI_STR,      /* const char ** */
    CLI_BOOL,     /* bool *, set by the flag alone */
    CLI_CHOICE,   /* cli_choice *: one of its names */
} cli_kind;

/* A flag whose value is one of a few words: chosen is the index of the last
 * one given (left as initialised when the flag is absent), given has bit k
 * set when names[k] was given (a flag given more than once). */
typedef struct cli_choice {
    const char *const *names; /* NULL-terminated, at most 32 */
    int chosen;
    uint32_t given;
} cli_choice;

typedef struct cli_flag {
    const char *name; /* without the leading "--" */
    cli_kind kind;
    void *value;
    long lo;
    double hi;
} cli_flag;

void cli_parse_flags(int argc, char **argv, const cli_flag *flags, int n,
                     void (*usage)(FILE *f));

/* cli_parse_flags over a whole array. */
#define CLI_PARSE(argc, argv, flags, usage)                                    \
    cli_parse_flags(argc, argv, flags, (int)(sizeof flags / sizeof flags[0]),  \
                    usage)

/* Flags several programs share, with the same meaning and range in each. */
/* clang-format off */
#define CLI_FLAG_SEED(p) {"seed", CLI_U64, (p), 0, 0}
#define CLI_FLAG_THREADS(p) {"threads", CLI_INT, (p), 0, 1024}
#define CLI_FLAG_BATCH(p) {"batch", CLI_INT, (p), 1, 65536}
#define CLI_FLAG_MAX_BATCHES(p) {"max-batches", CLI_INT, (p), 1, 1 << 30}
/* clang-format on */

/* mkdir -p dir, locks it for this process (tg_dir_lock: a second run
 * writing there is refused, naming the first one's PID), removes the
 * temporaries of killed runs, and proves it is writable. On failure prints
 * "<prog>: ..." and returns false. */
bool cli_prepare_out_dir(const char *dir);

/* "<dir>/<name>" in a static buffer that is reused after 4 calls. */
const char *cli_path(const char *dir, const char *name);

double cli_now(void); /* seconds, monotonic */

/* Around flag parsing, under mpirun: every rank parses its own flags, and
 * every rank learns whether all succeeded (so a rank whose flags are bad
 * never leaves the others waiting): a rank > 0's messages are held, and
 * shown only when it is the lowest rank that failed (one message, not N).
 * Single-process: no effect. */
void cli_parse_begin(void);
void cli_parse_end(void);
/* Collective, under mpirun: every rank's values[i] must equal rank 0's
 * (flags, a data fingerprint); else the lowest differing rank names
 * itself, names[i] and both values, and every rank exits with status 2. */
void cli_same_job(const char *const *names, const char *const *values, int n);

/* Output files appear whole or not at all (tg_atomic_open / commit):
 *     tg_atomic_file a;
 *     cli_out_commit(&a, write_it(cli_out_open(&a, path), ...));
 * Either failing prints "<prog>: cannot write <path>: <reason>" and exits
 * with status 1. */
struct tg_atomic_file;
FILE *cli_out_open(struct tg_atomic_file *a, const char *path);
void cli_out_commit(struct tg_atomic_file *a, bool ok);

/* SIGINT (Ctrl-C) or SIGTERM (what mpirun sends every rank on Ctrl-C) sets
 * cli_interrupted instead of killing; a second one kills as usual. Training
 * loops poll it between steps. */
extern volatile sig_atomic_t cli_interrupted;
void cli_catch_sigint(void);

/* For programs that do not need labels: a note on stderr when some of ds's
 * labels are outside 0..classes-1, ending with use (how the program treats
 * labels). */
struct tg_dataset;
void cli_note_labels(const struct tg_dataset *ds, const char *dir, int classes,
                     const char *use);

/* Writes s to f quoted for a POSIX shell when it needs quoting. */
void cli_shell_word(FILE *f, const char *s);

/* A one-line progress bar redrawn on stderr by rank 0 when stderr is a
 * terminal, or under mpirun when mpirun's is; does nothing otherwise. */
typedef struct cli_progress {
    bool tty;
    int total;
    double t0;
    double last_draw;
} cli_progress;

void cli_progress_start(cli_progress *p, int total);
void cli_progress_update(cli_progress *p, int done, int samples, double loss);
void cli_progress_end(cli_progress *p); /* clears the line */

#endif
