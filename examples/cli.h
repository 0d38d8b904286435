/* What the example programs share: strict flag values and messages
 * (cli.c), the output folder and stop signals (cli_files.c), the start
 * under mpirun or alone and a progress bar (cli_run.c). Errors print one
 * line "<prog>: ..." to stderr. */
#ifndef EX_CLI_H
#define EX_CLI_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* The program name used in messages ("vae_mnist"). */
extern const char *cli_prog;

/* Prints "<prog>: <message>" on one line, any control character in it
 * (from an argument, a path, a file) as '?'. */
#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
void cli_error(const char *fmt, ...);

/* "rank R: " under mpirun with more than one rank, else "": the start of a
 * line about what this rank alone met (its data, its memory), which the
 * others' machines may not show. */
const char *cli_rank(void);

/* As cli_error, with " (try --help)", then exits with status 2. */
#if defined(__GNUC__)
__attribute__((noreturn, format(printf, 1, 2)))
#endif
void cli_usage_error(const char *fmt, ...);

/* Running out of memory: "<prog>: <message> (the model or the batch is too
 * large for this machine's memory)", under mpirun "<prog>: rank R:
 * <message> ...", the temporaries open removed (and the folder
 * cli_prepare_out_dir made, when it holds nothing else), exit
 * status 1. The library's out-of-memory handler (set by cli_parse_flags),
 * and the way out for a call that returned TG_ERR_NOMEM (message:
 * tg_errmsg()), which is not bad input. */
#if defined(__GNUC__)
__attribute__((noreturn))
#endif
void cli_out_of_memory(const char *message);

/* Whole-string parses; a value out of [lo, hi] or with trailing junk is a
 * usage error naming the flag. */
int cli_int(const char *flag, const char *s, long lo, long hi);
uint64_t cli_u64(const char *flag, const char *s);
float cli_float_pos(const char *flag, const char *s, double hi); /* (0, hi] */

/* A program's flags as a table, each flag written once: its name, kind,
 * range, default and --help line. cli_parse_flags first stores every flag's
 * default into its value, then parses argv against the table, each value by
 * cli_int / cli_u64 / cli_float_pos; an unknown flag, a missing value or a
 * stray argument is a usage error (exit 2). --help prints head, a blank
 * line, the flag lines (cli_print_flags) and, unless foot is NULL, a blank
 * line and foot, on stdout, and exits 0: head and foot are paragraphs, one a
 * line, each wrapped at 79 characters. --version prints the version and
 * exits 0. It also makes the library's running out of memory (a model or
 * batch too large for the machine) "<prog>: OP: out of memory ..." on one
 * line and exit status 1, not an abort, and ignores SIGXFSZ: a file-size
 * limit (ulimit -f) fails the write instead ("<prog>: cannot write PATH:
 * File too large", status 1). SIGPIPE is ignored too: see
 * cli_flush_stdout. */
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
 * one given (its default's when the flag is absent), given has bit k set
 * when names[k] was given (a flag given more than once). */
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
    const char *arg; /* the value in --help ("N", "DIR"); NULL for CLI_BOOL */
    /* The default as it would be given ("10", "1e-3", "out/vae_mnist"),
     * parsed into *value before the flags and shown in --help as
     * "(default ...)". NULL: the value is left as initialised and --help
     * shows no default (the help says what the flag's absence means). */
    const char *def;
    const char *help; /* what the flag does */
} cli_flag;

void cli_parse_flags(int argc, char **argv, const cli_flag *flags, int n,
                     const char *head, const char *foot);

/* After cli_parse_flags: whether the flag whose value is value was given
 * on the command line (its default alone was not). */
bool cli_given(const void *value);

/* cli_parse_flags over a whole array. */
#define CLI_PARSE(argc, argv, flags, head, foot)                               \
    cli_parse_flags(argc, argv, flags, (int)(sizeof flags / sizeof flags[0]),  \
                    head, foot)

/* One line a flag, "  --name ARG  help (default ...)", the help in one
 * column and wrapped to 79 characters, then "  --help, --version". */
void cli_print_flags(FILE *f, const cli_flag *flags, int n);

#ifndef TG_DEFAULT_DATA_DIR
#define TG_DEFAULT_DATA_DIR "data/mnist"
#endif

enum { CLI_MAX_BATCH = 65536 }; /* --batch's largest value */

/* Flags several programs share, with the same meaning, range, default and
 * help in each. */
/* clang-format off */
#define CLI_FLAG_SEED(p) {"seed", CLI_U64, (p), 0, 0, "N", "1", \
    "seed of every random stream"}
#define CLI_FLAG_THREADS(p) {"threads", CLI_INT, (p), 0, 1024, "N", "0", \
    "threads, 0 = all cores (OMP_NUM_THREADS when set)"}
#define CLI_FLAG_BATCH(p, def) {"batch", CLI_INT, (p), 1, CLI_MAX_BATCH, "N", \
    (def), "batch size"}
#define CLI_FLAG_MAX_BATCHES(p) {"max-batches", CLI_INT, (p), 1, 1 << 30, \
    "N", NULL, "stop each epoch after N batches (quick runs)"}
#define CLI_FLAG_DATA(p) {"data", CLI_STR, (p), 0, 0, "DIR", \
    TG_DEFAULT_DATA_DIR, "folder with the 4 IDX files, raw or .gz"}
#define CLI_FLAG_DATA_IMAGES(p) {"data", CLI_STR, (p), 0, 0, "DIR", \
    TG_DEFAULT_DATA_DIR, "folder with the IDX train and t10k images, raw " \
    "or .gz (labels files optional: not used)"}
#define CLI_FLAG_OUT(p, dir) {"out", CLI_STR, (p), 0, 0, "DIR", (dir), \
    "output folder"}
/* clang-format on */

/* Before the inputs are read, what can be said of --out without creating
 * anything: its path fits, and it is not an existing file. On failure
 * prints "<prog>: ..." and returns false. */
bool cli_check_out_dir(const char *dir);

/* mkdir -p dir, locks it for this process (tg_dir_lock: a second run
 * writing there is refused, naming the first one's PID), removes the
 * temporaries of killed runs, and proves it is writable. On failure prints
 * "<prog>: ..." and returns false. */
bool cli_prepare_out_dir(const char *dir);
/* When cli_prepare_out_dir created its folder (and parents, as mkdir -p)
 * and nothing but the .lock is in it yet, removes the folder and those
 * parents left empty (async-signal-safe); otherwise does nothing.
 * For bad input found after the folder was prepared; a stop signal
 * (cli_stop_cleanly, the second Ctrl-C of cli_catch_sigint) and running out
 * of memory (cli_out_of_memory) do it too. */
void cli_remove_new_out_dir(void);

/* After cli_prepare_out_dir, before the work: each of the n names in dir
 * that is there must be a file the run can replace (a regular file, or a
 * symbolic link to one, which is written through): a FIFO, a folder, a
 * device or a link to one of them or to nothing is refused
 * (tg_atomic_check), "<prog>: cannot write <path>: it is a FIFO; not
 * replaced", and it returns false. */
bool cli_check_outputs(const char *dir, const char *const *names, int n);

/* An output of an earlier run that this run does not write (vae_mnist's
 * manifold.png, vae_score's latent.svg when the latent is not 2-D) is
 * removed from dir: next to this run's files it passed for this run's.
 * Only a regular file or a link to one (the link, not the file it names)
 * goes. On failure prints "<prog>: cannot remove <path>, <why>: ..." and
 * returns false. */
bool cli_remove_stale_output(const char *dir, const char *name,
                             const char *why);

/* "<dir>/<name>" in a static buffer that is reused after 4 calls. */
const char *cli_path(const char *dir, const char *name);

double cli_now(void); /* seconds, monotonic */

/* The start of a program that runs as one process (bnn_mnist, vae_score,
 * char_rnn): started by an MPI launcher as one of several processes, each
 * copy would do the whole job and write the same files, so it refuses
 * (a line on stderr, exit status 2). Both starts (this and
 * cli_dist_start) first put /dev/null, read-only, in place of a standard
 * stream the program was started without (">&-"), so that no file the
 * program opens takes its number; writing to it fails as to a closed
 * pipe. */
void cli_one_process(void);

/* The start of a data-parallel program (vae_mnist, mlp_mnist), around its
 * flag parsing:
 *     cli_dist_start(&argc, &argv);
 *     options o = parse_options(argc, argv);
 *     cli_dist_ready(o.threads);
 * cli_dist_start does tg_dist_init (under mpirun the ranks find each
 * other) and keeps stdout for rank 0 alone (progress and results).
 * Between the two, under mpirun, every rank parses its own flags, and
 * every rank learns whether all succeeded (so a rank whose flags are bad
 * never leaves the others waiting): a rank > 0's messages are held, and
 * shown only when it is the lowest rank that failed (one message, not N).
 * cli_dist_ready then sets the thread count: threads, or if 0 the
 * machine's cores divided among its ranks (tg_dist_default_threads). */
void cli_dist_start(int *argc, char ***argv);
void cli_dist_ready(int threads);
/* Collective, under mpirun: every rank's values[i] must equal rank 0's
 * (flags, a data fingerprint); else the lowest differing rank names
 * itself, names[i] and both values, and every rank exits with status 2. */
void cli_same_job(const char *const *names, const char *const *values, int n);

/* The most parameters a network of the examples may have (vae_mnist's
 * TG_VAE_MAX_PARAMS): past the reservation of a tg_params (512 M floats)
 * tg_params_add aborts. */
#define CLI_MAX_PARAMS ((uint64_t)1 << 28)
/* When numel > CLI_MAX_PARAMS: "<prog>: <what> make[s] N parameters, more
 * than M" on stderr (rank 0), and every rank exits with status 2. what
 * names the flags and the data that make the model ("--hidden 64 on
 * 4096x4096 images"). */
void cli_check_model_size(uint64_t numel, const char *what);
/* The most pixels of one batch (its buffer, 4 GiB of floats): --batch
 * 65536 of 4096x4096 images asked malloc for 4 TiB (ASan's abort, or a
 * NULL buffer written to). Past it, "<prog>: --batch B of RxC images holds
 * N pixels, more than M" (rank 0), and every rank exits with status 2. */
#define CLI_MAX_BATCH_PIXELS ((uint64_t)1 << 30)
void cli_check_batch_size(int batch, int rows, int cols);

/* Flushes stdout after a program's lines. When that fails (a closed pipe,
 * as with "| head": SIGPIPE is ignored; a full disk): if output, stdout is
 * the program's result (mlp_mnist, char_rnn, bnn_mnist without --out):
 * "<prog>: cannot write standard output: Broken pipe" and exit status 1,
 * at once rather than after the work; else its lines only show progress
 * and the result is in files: a note on stderr, once, and the run goes on
 * (its exit status is its work's). */
void cli_flush_stdout(bool output);

/* Output files appear whole or not at all (tg_atomic_open / commit):
 *     tg_atomic_file a;
 *     cli_out_commit(&a, write_it(cli_out_open(&a, path), ...));
 * Either failing prints "<prog>: cannot write <path>: <reason>" and exits
 * with status 1. */
struct tg_atomic_file;
FILE *cli_out_open(struct tg_atomic_file *a, const char *path);
void cli_out_commit(struct tg_atomic_file *a, bool ok);

/* SIGINT (Ctrl-C), SIGTERM (what mpirun sends every rank on Ctrl-C) or
 * SIGHUP (the terminal or ssh session closed; left ignored when it is, as
 * under nohup) sets cli_interrupted instead of killing; a second one kills as
 * usual, first removing the temporary of a file being written. Training loops
 * poll it between steps. */
extern volatile sig_atomic_t cli_interrupted;
void cli_catch_sigint(void);
/* For programs with nothing to save on a stop (vae_score, bnn_mnist):
 * SIGINT, SIGTERM or SIGHUP kills as usual, but first removes the temporary
 * of a file being written, so an output folder holds whole files only. */
void cli_stop_cleanly(void);

/* The labels file of folder dir's training (train) or test set, as
 * tg_mnist_load picks it: <dir>/<prefix>-labels-idx1-ubyte when that name
 * is there, else its .gz; in cli_path's buffers. What a message about the
 * labels' values names (not the folder). */
const char *cli_labels_file(const char *dir, bool train);

/* For programs that do not need labels: dir's training (train) or test set
 * as tg_idx_images_load reads a folder, the labels file read when it is
 * there (ds->labels NULL otherwise). dir must be a folder: an images file
 * named itself would be both sets. False on failure, with tg_errmsg()
 * saying why; out of memory ends the process (cli_out_of_memory). */
struct tg_dataset;
bool cli_load_unlabelled(const char *dir, bool train, struct tg_dataset *ds);

/* For programs that do not need labels: a note on stderr when some of ds's
 * labels are outside 0..classes-1, naming its labels file (dir's training
 * or test set, cli_labels_file) and ending with use (how the program treats
 * labels); nothing when ds has no labels. */
void cli_note_labels(const struct tg_dataset *ds, const char *dir, bool train,
                     int classes, const char *use);

/* Writes s to f quoted for a POSIX shell when it needs quoting; a word
 * with control characters (a line break in a path) as $'...' with
 * escapes (bash, zsh, ksh, POSIX.1-2024 sh), so that it stays on one
 * line. */
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
