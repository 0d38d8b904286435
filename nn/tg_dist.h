/* tapegrad dist: data-parallel training over MPI.
 *
 * N processes (ranks) hold the same model. Every global batch is cut into
 * S shards of consecutive rows (tg_dist_shards; S defaults to N), and the
 * ranks share the shards out in order. Each rank computes, shard by shard,
 * the gradient of
 *
 *     (sum over the shard's rows of the per-example loss) / (global rows)
 *
 * and the shards' gradients are summed in shard order, in double, whichever
 * rank holds each: the result is the same bits for every rank count, so a
 * model depends on the seed, the batch and S, never on N (nor on the thread
 * count). One process with S shards trains bit for bit what N ranks train
 * with S shards. The ranks then take the same optimizer step.
 *
 *     tg_dist_init(&argc, &argv);
 *     tg_dist_broadcast(ps, opt);                 // rank 0's weights
 *     tg_step_guard g; tg_step_guard_init(&g, ps, opt, NULL);
 *     for each global batch of n rows:
 *         tg_step s = {0};
 *         int k0, mine = tg_dist_my_shards(&k0), k1 = k0 + mine;
 *         for (int k = k0; k < k1; k++) {
 *             int first, rows = tg_dist_shard_rows(n, k, &first);
 *             s.loss = sum over rows [first, first + rows);
 *             tg_backward(tp, that sum / n);
 *             tg_step_shard(&g, &s);            // keeps this shard's part
 *         }
 *         tg_step_finish(&g, &s, n);   // sums, guards, steps, and zeroes
 *                                       // the gradients for the next step
 *     tg_dist_finalize();
 *
 * That holds when each row's loss depends on the global batch only:
 * randomness in the model (dropout, noise) comes from a stream keyed by
 * the step and the shard, tg_rng_seed(&r, seed, (uint64_t)step *
 * TG_DIST_MAX_SHARDS + k), or is drawn for the whole batch on every rank;
 * one generator shared by a rank's shards trains another model on each
 * rank count.
 *
 * The lower-level tg_dist_share (this rank's rows) and
 * tg_dist_allreduce_grads (sum of one gradient per rank, in rank order) do
 * the same for one shard per rank.
 *
 * Built without MPI (meson -Dmpi=disabled, or no MPI found) every function
 * is a single-process no-op: rank 0 of 1, shares are everything, reductions
 * return their input; shards still work (a rank count of 1 holds them all).
 * The calls that communicate are collective: every rank makes them, in the
 * same order (tg_dist_init and _finalize, the broadcasts, the sums,
 * tg_dist_all_ok, tg_dist_same, tg_step_finish). The rest is local: the
 * queries, the setters, the launcher's helpers, tg_dist_abort and
 * tg_step_shard. */
#ifndef TG_DIST_H
#define TG_DIST_H

#include "tg_nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* True when the library was built with MPI. */
bool tg_dist_available(void);

/* MPI_Init (when started by mpirun; harmless in a plain run) and the rank
 * queries below. Call once, first thing in main. Its first collective
 * compares every rank's program name (argv[0]'s last part), version and
 * build commit with rank 0's: a rank of another program or build stops
 * the job there, one line naming both, exit status 2. So does a process
 * that the launcher's environment counts as one of N > 1 while MPI_Init
 * finds a job of one (another MPI library's launcher): each would train
 * alone. */
void tg_dist_init(int *argc, char ***argv);
/* Before tg_dist_init: the build the program itself was compiled from
 * (any text naming it, a commit say). The identity compared above is the
 * library's: a rank whose program and library come from different builds
 * (LD_LIBRARY_PATH naming another build's library) passed it, and trained
 * with the other build's code. With this set, a program of another build
 * than its library counts as another build (the library's commit and a
 * hash of both ids). NULL or the library's own id: nothing changes. */
void tg_dist_set_program_build(const char *id);
/* MPI_Finalize. Every rank calls it, then returns from main or exits. */
void tg_dist_finalize(void);
/* Stops every rank from one rank alone (MPI_Abort), for failures the others
 * cannot know about; exit(code) in a single process. */
#if defined(__GNUC__)
__attribute__((noreturn))
#endif
void tg_dist_abort(int code);

int tg_dist_rank(void);       /* 0 .. size - 1 */
int tg_dist_size(void);       /* ranks in the job; 1 without MPI */
int tg_dist_local_rank(void); /* among the ranks on this machine */
int tg_dist_local_size(void); /* ranks on this machine */
/* Threads per rank so the ranks on a machine share its cores:
 * cores / local ranks (at least 1); 0 (all cores) with one local rank. */
int tg_dist_default_threads(void);

/* Shards: every global batch of n rows is cut into S = tg_dist_shards()
 * shards, shard k being rows [k * n / S, (k + 1) * n / S), and rank r of N
 * holds shards [r * S / N, (r + 1) * S / N) (none when N > S). S is part of
 * the model's definition, like the batch size: set it on every rank, the
 * same value, before training (1 .. TG_DIST_MAX_SHARDS; default: N). */
#define TG_DIST_MAX_SHARDS 4096
void tg_dist_set_shards(int shards);
int tg_dist_shards(void);
/* This rank's shards: [*first, *first + count); returns count. */
int tg_dist_my_shards(int *first);
/* Rows of shard k of a batch of n: [*first, *first + count); returns
 * count (0 when n < S for some shards). */
int tg_dist_shard_rows(int n, int shard, int *first);

/* This rank's rows of a batch of n: the rows of its shards,
 * [first, first + count); with S = N, first = rank * n / size (counts
 * differ by at most 1; 0 when n < size). Returns count. */
int tg_dist_share(int n, int *first);

/* Sums every rank's gradient (tg_params_grad, in place), in rank order and
 * in double, rounded once: the result, on every rank, does not depend on
 * the MPI library's reduction order. */
void tg_dist_allreduce_grads(tg_params *ps);
/* Rank 0's parameter values, and when opt is not NULL its optimizer state
 * (m, v, step), copied to every rank: at start and after a resume. */
void tg_dist_broadcast(tg_params *ps, tg_optim *opt);
/* Rank 0's n integers copied to every rank. */
void tg_dist_broadcast_i64(int64_t *x, int n);
/* x[i] = sum over ranks of x[i], on every rank (loss and count sums). */
void tg_dist_sum(double *x, int n);

/* Agreement on failure: true on every rank when ok is true on every rank.
 * A rank that failed reads, by tg_dist_first_failed, whether it is the
 * lowest failing rank, the one that prints the message, so a failure is
 * reported once and every rank then stops cleanly. */
bool tg_dist_all_ok(bool ok);
/* After tg_dist_all_ok returned false: the lowest rank that passed false. */
int tg_dist_first_failed(void);

/* Collective: true on every rank when every rank's value equals rank 0's
 * (compared up to TG_DIST_SAME_MAX - 1 bytes); rank0 gets rank 0's. When
 * false, the lowest differing rank (tg_dist_first_failed) says what
 * differs: ranks check that they run the same job (flags, data). */
#define TG_DIST_SAME_MAX 256
bool tg_dist_same(const char *value, char rank0[TG_DIST_SAME_MAX]);

/* A stalled or dead rank: every collective (tg_dist_sum, tg_dist_all_ok,
 * the broadcasts, the gradient sum, and a barrier in tg_dist_finalize
 * before MPI_Finalize) waits at most seconds for the others (0, the
 * default: forever), then stops the job (MPI_Abort, exit status 4) with a
 * line naming the rank that did not answer. Set it before the first
 * collective, the same value on every rank (ranks that differ still
 * exchange the same messages, so they can compare it); MPI_Init and the
 * inside of MPI_Finalize are not covered. Waiting sleeps between polls
 * instead of spinning. */
void tg_dist_set_timeout(double seconds);

/* The number of processes an MPI launcher (mpirun, srun) says the job has,
 * read from its environment; 0 when not started by one. A build without
 * MPI started as one of several processes refuses in tg_dist_init (a line
 * on stderr, exit status 2). */
int tg_dist_launcher_size(void);
/* This process's rank as the launcher's environment says, 0 when not
 * started by one (before tg_dist_init, or in a build without MPI: for a
 * refusal that only one process of the job should print). */
int tg_dist_launcher_rank(void);
/* For a process that refuses to run as one of a launcher's processes,
 * before its line: a rank r > 0 first waits 2 s (exit status 2 if a signal
 * ends the wait: mpirun ends a job one of whose processes failed, so in a
 * job of identical copies only rank 0 speaks, while a rank whose rank 0 is
 * another program still says why); then buf gets "rank r of" or "one of",
 * for "started ... as <buf> N processes". */
void tg_dist_refusal_prefix(char *buf, size_t n);

/* Seconds spent summing gradients across ranks so far on this rank
 * (tg_dist_allreduce_grads and tg_step_finish's sum; waiting for slower
 * ranks included), for the compute / communication split. */
double tg_dist_allreduce_seconds(void);

/* ---- the guarded step (nn/step.c) ------------------------------------------
 * What every data-parallel training step needs after backward, with every
 * decision agreed by all ranks: one small all-reduce of the losses, the
 * caller's sums and the stop flags; the gradient all-reduce; the NaN/Inf
 * guard on the summed gradients; divergence and skip limits; the optimizer
 * step. Single-process it is the same guard without communication.
 *
 *     tg_step_guard g;
 *     tg_step_guard_init(&g, ps, opt, NULL);   // NULL: tg_step_config's
 *     per global batch of n rows:              //       defaults
 *         tg_step s = {.interrupted = <signal seen>};
 *         for each of this rank's shards (tg_dist_my_shards):
 *             forward the shard's rows; s.loss = sum of their losses;
 *             s.parts[..] = the caller's own sums over them;
 *             if (isfinite(s.loss)) backward of s.loss / n;
 *             tg_step_shard(&g, &s);
 *         tg_step_finish(&g, &s, n);
 *         switch (s.verdict) ... (s.interrupted_any: stop after this step)
 *
 * (No tg_params_zero_grad in the loop: tg_step_shard zeroes the gradients
 * after keeping a shard's, and tg_step_finish after its step.)
 * A rank that holds one shard may skip tg_step_shard: tg_step_finish then
 * takes s.loss, s.parts and the gradient as that shard's. Sums over the
 * batch (loss_sum, part_sums) are taken shard by shard in shard order, so
 * they too are the same bits for every rank count.
 */
#define TG_STEP_PARTS 4

typedef enum tg_step_verdict {
    TG_STEP_TAKEN,             /* the optimizer stepped */
    TG_STEP_SKIPPED,           /* non-finite and cfg.skip_nonfinite: no step */
    TG_STEP_NONFINITE,         /* non-finite: stop (s.bad, s.why say what) */
    TG_STEP_DIVERGED,          /* the loss stayed far above its running level */
    TG_STEP_SKIPPED_TOO_OFTEN, /* too many skipped steps: stop */
} tg_step_verdict;

typedef struct tg_step {
    /* in: this rank's */
    double loss;                 /* summed over its rows; NaN/Inf allowed */
    double parts[TG_STEP_PARTS]; /* the caller's own sums (e.g. rec, kl) */
    bool interrupted;            /* this rank saw a stop signal */
    int shards;                  /* tg_step_shard calls so far (its own) */
    /* out: the same on every rank */
    tg_step_verdict verdict;
    double loss_sum; /* over all ranks' rows; a non-finite shard's loss
                      * counts as 0 (see verdict and bad: the step is then
                      * not taken) */
    double part_sums[TG_STEP_PARTS]; /* over all ranks */
    bool interrupted_any;            /* some rank saw a stop signal */
    const char *bad, *why; /* SKIPPED / NONFINITE / SKIPPED_TOO_OFTEN: what
                            * and how ("loss", "is not finite"); NULL when
                            * TAKEN or DIVERGED */
    double level;     /* the lowest running per-row loss level (DIVERGED) */
    double grad_norm; /* with cfg.clip_norm: the summed gradient's L2 norm
                         before clipping (0 otherwise) */
} tg_step;

typedef struct tg_step_config {
    bool skip_nonfinite; /* skip non-finite steps instead of stopping */
    /* DIVERGED after diverge_steps steps in a row whose per-row loss is
     * above best + (diverge_factor - 1) * max(|best|, 1e-6), best the
     * lowest running mean of the steps that were not (default 20 steps,
     * factor 10; a factor not above 1 takes the default) */
    int diverge_steps;
    double diverge_factor;
    /* SKIPPED_TOO_OFTEN after max_skipped_run skipped steps in a row, or
     * more than max_skipped of the last 100 (defaults 10 and 25) */
    int max_skipped_run, max_skipped;
    /* > 0: the summed gradient is clipped to this global L2 norm before
     * the step (tg_clip_grad_norm: the same bits on every rank, as the
     * sum is); 0: no clipping */
    float clip_norm;
} tg_step_config;

typedef struct tg_step_guard {
    tg_params *ps;
    tg_optim *opt;
    tg_step_config cfg;
    double level; /* running per-row loss; NaN before the first step */
    double best;  /* the lowest level so far */
    int above;    /* steps in a row above the level */
    int skipped_run;
    unsigned char recent[100]; /* 1: that step was skipped */
    int64_t steps;
    double wait_s; /* seconds in this guard's collectives: waiting for the
                      other ranks' compute and the all-reduces */
} tg_step_guard;

/* cfg NULL: the defaults; zero fields of cfg also take the defaults. A
 * clip_norm that is negative or not finite aborts. */
void tg_step_guard_init(tg_step_guard *g, tg_params *ps, tg_optim *opt,
                        const tg_step_config *cfg);
/* After the backward of each of this rank's shards, in shard order: keeps
 * the shard's gradient and s->loss, s->parts (then zeroes them, and the
 * gradient, for the next shard). Not collective. One step at a time in a
 * process: between a step's first tg_step_shard and its tg_step_finish, a
 * call for another guard aborts (two models, a GAN's say, take their steps
 * one after the other), and so does the step's next call after
 * tg_dist_set_shards changed the count; so does a call with a tg_step that
 * still counts the calls of a finished step. */
void tg_step_shard(tg_step_guard *g, tg_step *s);
/* Collective: every rank calls it once per step, rows = the global batch.
 * With an optimizer (the guard's opt), it leaves the gradients zero
 * afterwards, whatever the verdict: the next step's first backward then
 * starts from nothing on every rank (a summed gradient left in place would
 * be added into each rank's first shard, a model that depends on the rank
 * count); s.bad and s.why name a non-finite tensor. Without one (opt NULL)
 * the summed gradient (clipped when cfg.clip_norm asks) is left for the
 * caller to step and zero. rows < 0 aborts. */
void tg_step_finish(tg_step_guard *g, tg_step *s, int rows);
/* The guard's state (running and best loss levels, steps above them, the
 * skip history) as one metadata entry, key "guard", for a checkpoint: a
 * run resumed from it takes the verdicts one never stopped would (without
 * it a resumed diverging run started its levels afresh from the high
 * losses, went on and saved over the good checkpoint). Restore reads it
 * back into a guard made by tg_step_guard_init (same config):
 * TG_ERR_FORMAT naming the value when malformed, TG_OK and the guard as it
 * was when m has no "guard" (a file from before). */
void tg_step_guard_save(const tg_step_guard *g, tg_meta *m);
tg_status tg_step_guard_restore(tg_step_guard *g, const tg_meta *m);
/* True while the loss is above its running level (a step toward
 * TG_STEP_DIVERGED) or the last step was skipped as non-finite (these
 * weights gave a NaN/Inf loss or gradient): no checkpoint should be
 * written from such weights. */
bool tg_step_suspect(const tg_step_guard *g);
/* True when a per-row loss of the current weights (an evaluation's, say)
 * is NaN/Inf or above the divergence limit, best + (diverge_factor - 1) *
 * max(|best|, 1e-6), best the training loss's lowest running level (false
 * before the first step, unless not finite). */
bool tg_step_loss_far_above(const tg_step_guard *g, double loss);

#ifdef __cplusplus
}
#endif
#endif
