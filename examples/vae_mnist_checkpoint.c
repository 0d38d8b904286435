/* vae_mnist's checkpoints (tg_vae_save / tg_vae_load) with this program's
 * own entries (batch, seed, lr), the checks of a checkpoint against the
 * run, and the SIGINT stop that saves and prints how to go on. */
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "vae_mnist.h"

static void fail_resume(const options *o, const char *fmt, long long a,
                        long long b)
{
    char what[512];
    snprintf(what, sizeof what, fmt, a, b);
    cli_error("%s: %s", o->resume, what);
    exit(2);
}

/* The data the checkpoint was trained on must be this run's, unless
 * --allow-data-change. */
static void check_data(const run *r, const tg_meta *m)
{
    const options *o = r->o;
    const char *fp = tg_meta_get(m, "data");
    if (!fp && !o->allow_data_change) {
        cli_error("%s: checkpoint does not say what data it was trained on "
                  "(metadata 'data'); pass --allow-data-change to resume on "
                  "%s anyway",
                  o->resume, o->data);
        exit(2);
    }
    if (fp && strcmp(fp, r->data_fp) != 0 && !o->allow_data_change) {
        cli_error("%s: checkpoint was trained on other data (%s) than %s "
                  "holds (%s); pass --allow-data-change if that is intended",
                  o->resume, fp, o->data, r->data_fp);
        exit(2);
    }
}

/* Exits 2 naming the key: the checkpoint's value is not one a run of
 * this program could have written. */
static void bad_meta(const char *path, const char *key, const char *value,
                     const char *what)
{
    cli_error("%s: metadata '%s' is '%.40s', not %s", path, key,
              value ? value : "(missing)", what);
    exit(2);
}

/* An integer entry in lo..hi, else exit 2. */
static int64_t meta_int(const char *path, const tg_meta *m, const char *key,
                        int64_t lo, int64_t hi)
{
    int64_t v;
    if (tg_meta_get_int(m, key, &v) != TG_OK || v < lo || v > hi) {
        char what[80];
        snprintf(what, sizeof what, "an integer in %lld..%lld", (long long)lo,
                 (long long)hi);
        bad_meta(path, key, tg_meta_get(m, key), what);
    }
    return v;
}

/* The most batches an epoch of the checkpoint's training had (each run's
 * epoch, after --max-batches, on its data): written by every checkpoint whose
 * runs all recorded it, so that a step count is bounded from above even
 * after --allow-data-change from larger data. */
#define EPOCH_BATCHES_MAX "epoch_batches_max"

/* Keys a checkpoint of this program carries together. A file from before
 * mid-epoch checkpoints has 'epoch' alone (it starts the next epoch), and
 * one from before --shards lacks 'shards' (or has 'ranks'), --holdout,
 * --likelihood or --arch their keys: those resume as they did. But every
 * file written since has the whole position, and one with 'shards' has the
 * keys that came before it: a file without them lost them (a mid-epoch
 * checkpoint without 'batch_in_epoch' restarted its epoch at batch 0). */
static void check_keys(const char *path, const tg_meta *m)
{
    static const char *const need_pos[] = {
        "epoch_seen", "epoch_skipped", "epoch_rec", "epoch_kl", "noise_rng",
        "arch",       "likelihood",    "holdout",   "shards",   "ranks"};
    static const char *const need_shards[] = {"holdout", "likelihood", "arch"};
    /* keys written only since 'shards' was: a file with one lacks none */
    static const char *const after_shards[] = {"guard", EPOCH_BATCHES_MAX};
    static const char *const always[] = {"step", "optim.step"};
    char what[96];
    for (size_t i = 0; i < sizeof always / sizeof always[0]; i++)
        if (!tg_meta_get(m, always[i]))
            bad_meta(path, always[i], NULL,
                     "optional (every checkpoint of vae_mnist has it)");
    for (size_t i = 0; i < sizeof need_pos / sizeof need_pos[0]; i++)
        if (!tg_meta_get(m, "batch_in_epoch") && tg_meta_get(m, need_pos[i])) {
            snprintf(what, sizeof what, "optional in a file with '%s'",
                     need_pos[i]);
            bad_meta(path, "batch_in_epoch", NULL, what);
        }
    for (size_t i = 0; i < sizeof need_shards / sizeof need_shards[0]; i++)
        if (tg_meta_get(m, "shards") && !tg_meta_get(m, need_shards[i]))
            bad_meta(path, need_shards[i], NULL,
                     "optional in a file with 'shards'");
    for (size_t i = 0; i < sizeof after_shards / sizeof after_shards[0]; i++)
        if (tg_meta_get(m, after_shards[i]) && !tg_meta_get(m, "shards")) {
            snprintf(what, sizeof what, "optional in a file with '%s'",
                     after_shards[i]);
            bad_meta(path, "shards", NULL, what);
        }
}

/* Exits 2 naming key when v is outside lo..hi (what says why the bound
 * holds). */
static void in_range(const char *path, const tg_meta *m, const char *key,
                     double v, double lo, double hi, const char *why)
{
    if (v >= lo && v <= hi)
        return;
    char what[320];
    snprintf(what, sizeof what, "in %.15g..%.15g (%s)", lo, hi, why);
    bad_meta(path, key, tg_meta_get(m, key), what);
}

/* The checkpoint's position, checked against what this run can do and
 * against what a run of this program writes (each relation holds for every
 * checkpoint one saves: at an epoch's end, every --checkpoint-every
 * batches, on SIGINT/SIGTERM/SIGHUP, for any rank or shard count, whatever
 * --max-batches or data each run had). */
static void check_position(const run *r, const tg_vae_info *info,
                           int64_t batches_max)
{
    const options *o = r->o;
    const char *path = o->resume;
    const tg_meta *m = &info->meta;
    const tg_vae_position *pos = &info->pos;
    if (pos->batch > r->n_batches)
        fail_resume(o,
                    "checkpoint is at batch %lld of an epoch, but an epoch "
                    "of this run has %lld batches (resume with the data and "
                    "--max-batches it was trained with)",
                    (long long)pos->batch, r->n_batches);
    /* A checkpoint is saved after the epoch's last batch (position batch
     * 0, sums 0) or before it (batch < that run's batches per epoch): the
     * batches counted are whole, each taken step adds --batch samples. */
    int64_t taken = pos->batch - pos->skipped;
    in_range(path, m, "epoch_seen", (double)pos->seen,
             (double)(taken * o->batch), (double)(taken * o->batch),
             "(batch_in_epoch - epoch_skipped) x batch: each step trained on "
             "a whole batch");
    /* The sums of rows' rec and kl, each a finite float: KL >= 0 (a slightly
     * negative row once rounded), rec >= 0 for a Bernoulli, above -89 nats
     * per pixel for a continuous Bernoulli (log C < log FLT_MAX). */
    double seen = (double)pos->seen, most = 2.0 * FLT_MAX * seen;
    double rec_lo = info->cfg.likelihood == TG_VAE_CB
                        ? -100.0 * info->cfg.input * seen
                        : 0.0;
    in_range(path, m, "epoch_rec", pos->rec, rec_lo, most,
             "what epoch_seen samples' reconstruction terms sum to");
    in_range(path, m, "epoch_kl", pos->kl, -1e-3 * info->cfg.latent * seen,
             most, "what epoch_seen samples' KL terms sum to");
    /* One optimizer step per batch taken: every finished epoch took at
     * least one (an epoch with none stops the run) and at most its batches;
     * this epoch's, batch_in_epoch - epoch_skipped. */
    char why[200];
    snprintf(why, sizeof why,
             "epoch %lld, batch_in_epoch %lld, epoch_skipped %lld: a "
             "step per batch taken, at least one per finished epoch%s",
             (long long)pos->epoch, (long long)pos->batch,
             (long long)pos->skipped,
             batches_max > 0 ? ", at most " EPOCH_BATCHES_MAX : "");
    double step_hi = batches_max > 0
                         ? (double)(pos->epoch * batches_max + taken)
                         : (double)TG_OPTIM_MAX_STEP;
    in_range(path, m, "step", (double)info->step, (double)(pos->epoch + taken),
             step_hi, why);
    if (batches_max > 0 && pos->batch > 0)
        in_range(path, m, "batch_in_epoch", (double)pos->batch, 0.0,
                 (double)(batches_max - 1),
                 "a mid-epoch checkpoint is saved before the epoch's last "
                 "batch");
    /* Mid-epoch, the noise stream is epoch + 1's after batch_in_epoch
     * batches, each drawing batch x latent normals (on every rank). */
    if (pos->batch > 0) {
        size_t n = (size_t)o->batch * (size_t)info->cfg.latent;
        float *buf = malloc(n * sizeof *buf);
        if (!buf)
            tg_out_of_memory("resume", "out of memory");
        tg_rng want;
        tg_rng_seed(&want, o->seed, 1000 + (uint64_t)(pos->epoch + 1));
        for (int64_t b = 0; b < pos->batch; b++)
            tg_rng_fill_normal(&want, buf, n, 0.0f, 1.0f);
        free(buf);
        if (memcmp(want.s, pos->noise.s, sizeof want.s) != 0) {
            snprintf(why, sizeof why,
                     "epoch %lld's noise generator after %lld batches",
                     (long long)pos->epoch + 1, (long long)pos->batch);
            bad_meta(path, "noise_rng", tg_meta_get(m, "noise_rng"), why);
        }
    }
}

/* The seed, any 64-bit unsigned value (files from before it was written
 * unsigned hold seeds of 2^63 and more as negative integers). */
static uint64_t meta_seed(const char *path, const tg_meta *m)
{
    const char *v = tg_meta_get(m, "seed");
    char *end = NULL;
    errno = 0;
    uint64_t seed = 0;
    if (v && *v == '-') {
        long long s = strtoll(v, &end, 10);
        seed = (uint64_t)s;
    } else if (v && *v >= '0' && *v <= '9') {
        seed = (uint64_t)strtoull(v, &end, 10);
    }
    if (!v || !end || end == v || *end || errno)
        bad_meta(path, "seed", v, "a 64-bit unsigned integer");
    return seed;
}

/* The learning rate: a positive finite float, as --lr takes. */
static float meta_lr(const char *path, const tg_meta *m)
{
    double lr;
    if (tg_meta_get_double(m, "lr", &lr) != TG_OK || !((float)lr > 0.0f) ||
        !(lr <= 1e6))
        bad_meta(path, "lr", tg_meta_get(m, "lr"), "a number in (0, 1e6]");
    return (float)lr;
}

/* lr as the shortest text that reads back as the same float. */
static void lr_text(float lr, char *buf, size_t size)
{
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(buf, size, "%.*g", digits, (double)lr);
        if ((float)strtod(buf, NULL) == lr)
            break;
    }
}

/* Exits 2, naming the flag, when the checkpoint's value of a flag (as
 * text) is not this run's. */
static void same_flag(const char *path, const char *flag, const char *theirs,
                      const char *ours)
{
    if (!strcmp(theirs, ours))
        return;
    cli_error("%s: checkpoint has %s %s but this run has %s (pass "
              "--%s %s)",
              path, flag, theirs, ours, flag, theirs);
    exit(2);
}

static void read_last_row(run *r, const tg_vae_info *info);

/* The GEMM numerics (tg_gemm_numerics: kernel and K blocks) of the process
 * that saved the checkpoint. */
#define GEMM_NUMERICS "gemm_numerics"

/* A resume under other GEMM numerics (another CPU class, TG_GEMM_KERNEL,
 * TG_GEMM_BLOCKS) trains the same model, its floats rounded otherwise: a
 * note says so, since the run will not end with the bits of one that
 * stayed where it began. Files from before the key say nothing. */
static void note_numerics(const char *path, const tg_meta *m)
{
    const char *theirs = tg_meta_get(m, GEMM_NUMERICS);
    if (!theirs || !strcmp(theirs, tg_gemm_numerics()) || tg_dist_rank() != 0)
        return;
    cli_error("note: %s was saved under GEMM numerics '%.64s', this process "
              "computes with '%s': the same model trains on, its floats "
              "rounded otherwise (not the bits of a run that stayed under "
              "the first)",
              path, theirs, tg_gemm_numerics());
}

/* Loads --resume into r's model and optimizer; the run's config must be
 * the file's. Sets r->pos to where training stands. */
void resume(run *r)
{
    const options *o = r->o;
    tg_vae *vae = r->vae;
    /* The metadata first, so a config mismatch is reported as a flag. */
    tg_vae_info info;
    fail_read(tg_vae_read_info(o->resume, &info));
    /* A model other than this run's: its flags are named below, but only
     * once the file's tensors are that model's (metadata saying hidden 32
     * over tensors of 64 had this run advised to pass --hidden 32, which
     * the tensors then refused) */
    if (info.cfg.input != vae->cfg.input || info.cfg.arch != vae->cfg.arch ||
        info.cfg.hidden != vae->cfg.hidden ||
        info.cfg.latent != vae->cfg.latent) {
        tg_vae *theirs;
        fail_read(tg_vae_open(o->resume, &theirs, NULL));
        tg_vae_free(theirs);
    }
    if (info.cfg.input != vae->cfg.input) {
        cli_error("%s: checkpoint has input %d pixels but "
                  "the images in %s have %d",
                  o->resume, info.cfg.input, o->data, vae->cfg.input);
        exit(2);
    }
    same_flag(o->resume, "arch", tg_vae_arch_name(info.cfg.arch),
              tg_vae_arch_name(o->arch));
    same_flag(o->resume, "likelihood",
              tg_vae_likelihood_name(info.cfg.likelihood),
              tg_vae_likelihood_name(o->likelihood));
    /* Every flag that shapes the model or its trajectory is the file's:
     * each value checked to be one this program writes, then compared (a
     * run at another --lr went on silently). */
    const tg_meta *m = &info.meta;
    char theirs[32], ours[32];
    const struct {
        const char *key;
        int64_t have, want;
    } ints[] = {
        {"hidden", info.cfg.hidden, o->hidden},
        {"latent", info.cfg.latent, o->latent},
        {"batch", meta_int(o->resume, m, "batch", 1, MAX_BATCH), o->batch},
        /* absent in files from before --holdout: none held out */
        {"holdout",
         tg_meta_get(m, "holdout")
             ? meta_int(o->resume, m, "holdout", 0, MAX_HOLDOUT)
             : 0,
         o->holdout},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        snprintf(theirs, sizeof theirs, "%lld", (long long)ints[i].have);
        snprintf(ours, sizeof ours, "%lld", (long long)ints[i].want);
        same_flag(o->resume, ints[i].key, theirs, ours);
    }
    snprintf(theirs, sizeof theirs, "%llu",
             (unsigned long long)meta_seed(o->resume, m));
    snprintf(ours, sizeof ours, "%llu", (unsigned long long)o->seed);
    same_flag(o->resume, "seed", theirs, ours);
    lr_text(meta_lr(o->resume, m), theirs, sizeof theirs);
    lr_text(o->lr, ours, sizeof ours);
    same_flag(o->resume, "lr", theirs, ours);
    if (!info.has_position) {
        cli_error("%s: checkpoint has no training position "
                  "(metadata 'epoch')",
                  o->resume);
        exit(2);
    }
    check_keys(o->resume, m);
    r->epoch_batches_max =
        tg_meta_get(m, EPOCH_BATCHES_MAX)
            ? meta_int(o->resume, m, EPOCH_BATCHES_MAX, 1, INT32_MAX)
            : -1; /* a run from before it was recorded: not known */
    check_position(r, &info, r->epoch_batches_max);
    check_data(r, &info.meta);
    /* the shards are part of the model: kept, whatever the rank count (a
     * checkpoint from before they were recorded summed one per rank) */
    const char *key = tg_meta_get(m, "shards") ? "shards" : "ranks";
    int64_t shards = tg_meta_get(m, key)
                         ? meta_int(o->resume, m, key, 1, TG_DIST_MAX_SHARDS)
                         : 0;
    if (shards && o->shards && shards != o->shards) {
        snprintf(theirs, sizeof theirs, "%lld", (long long)shards);
        snprintf(ours, sizeof ours, "%d", o->shards);
        same_flag(o->resume, "shards", theirs, ours);
    }
    r->shards = (int)shards;
    tg_meta checked = info.meta; /* what the checks above read */
    fail_read(tg_vae_load(o->resume, vae, r->opt, &info));
    if (!tg_meta_equal(&checked, &info.meta)) {
        cli_error("%s: changed while it was being read (another process "
                  "saving it?): try again",
                  o->resume);
        exit(2);
    }
    r->pos = info.pos;
    note_numerics(o->resume, &info.meta);
    /* the guard's levels and skip history: the verdicts of a run never
     * stopped (a resumed diverging run had started them afresh, trained
     * on and saved over the good checkpoint) */
    if (tg_step_guard_restore(&r->guard, &info.meta) != TG_OK) {
        cli_error("%s: %s", o->resume, tg_errmsg());
        exit(2);
    }
    read_last_row(r, &info);
}

/* The last finished epoch's row of metrics.csv as that file has it, less
 * the timing: "epoch,step,train,rec,kl,test,rec,kl". */
#define LAST_ROW "metrics_last_epoch"

/* A checkpoint is saved before the metrics.csv that describes it: a run
 * stopped between the two (killed, or ended by mpirun when another rank
 * died) left metrics.csv without the epoch, and a run resumed from it wrote
 * its metrics.csv without that row for good. The checkpoint carries the
 * row (read_last_row puts it back). */
static void save_last_row(const run *r, tg_meta *extra)
{
    if (r->n_hist == 0 || r->hist[r->n_hist - 1].epoch != r->pos.epoch)
        return;
    const epoch_stats *s = &r->hist[r->n_hist - 1];
    char row[256];
    metrics_row(s, row, sizeof row);
    tg_meta_set(extra, LAST_ROW, row);
}

/* The row of LAST_ROW, which must be the checkpoint's last finished epoch
 * (a file from before it was kept has none). */
static void read_last_row(run *r, const tg_vae_info *info)
{
    const char *v = tg_meta_get(&info->meta, LAST_ROW);
    if (!v)
        return;
    epoch_stats s = {0};
    long long step;
    int used = 0;
    if (sscanf(v, "%d,%lld,%lf,%lf,%lf,%lf,%lf,%lf%n", &s.epoch, &step,
               &s.train, &s.train_rec, &s.train_kl, &s.test, &s.test_rec,
               &s.test_kl, &used) != 8 ||
        v[used] != '\0' || s.epoch != info->pos.epoch || s.epoch < 1 ||
        step < s.epoch || step > info->step || !isfinite(s.train) ||
        !isfinite(s.test))
        bad_meta(r->o->resume, LAST_ROW, v,
                 "the metrics.csv row of the checkpoint's last epoch");
    s.step = step;
    r->resumed_row = s;
}

/* Saves the checkpoint at r->pos, refusing to write a non-finite one. */
void save_checkpoint(const run *r)
{
    if (tg_dist_rank() != 0)
        return; /* the ranks hold the same weights: rank 0 writes */
    const options *o = r->o;
    tg_meta extra = {0};
    tg_meta_set(&extra, "data", r->data_fp);
    /* the shards, not the ranks: the file is the same bytes for any rank
     * count */
    tg_meta_set_int(&extra, "shards", tg_dist_shards());
    tg_meta_set_int(&extra, "batch", o->batch);
    char seed[24]; /* unsigned: all 64 bits */
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)o->seed);
    tg_meta_set(&extra, "seed", seed);
    tg_meta_set_int(&extra, "holdout", o->holdout);
    char lr[32];
    snprintf(lr, sizeof lr, "%.9g", (double)o->lr);
    tg_meta_set(&extra, "lr", lr);
    /* what decided the float results (a resume elsewhere notes it) */
    tg_meta_set(&extra, GEMM_NUMERICS, tg_gemm_numerics());
    tg_step_guard_save(&r->guard, &extra);
    save_last_row(r, &extra);
    /* a fresh run: its own; a resumed one: the larger of the file's and its
     * own, unless the file's was not known */
    if (r->epoch_batches_max >= 0)
        tg_meta_set_int(&extra, EPOCH_BATCHES_MAX,
                        r->epoch_batches_max > r->n_batches
                            ? r->epoch_batches_max
                            : r->n_batches);
    const char *ck = cli_path(o->out, "checkpoint.safetensors");
    tg_status st = tg_vae_save(ck, r->vae, r->opt, &r->pos, &extra);
    if (st == TG_ERR_ARG) {
        cli_error("%s after step %lld (try a smaller --lr)", tg_errmsg(),
                  (long long)r->opt->step);
        exit(3);
    }
    if (st != TG_OK) {
        cli_error("%s", tg_errmsg());
        exit(1);
    }
}

/* Writes the command that continues this run from checkpoint ck. */
static void print_resume_command(FILE *f, const char *argv0, const options *o,
                                 const char *ck)
{
    if (tg_dist_size() > 1)
        fprintf(f, "mpirun -np %d ", tg_dist_size());
    cli_shell_word(f, argv0);
    fputs(" --data ", f);
    cli_shell_word(f, o->data);
    fputs(" --out ", f);
    cli_shell_word(f, o->out);
    char lr[32];
    lr_text(o->lr, lr, sizeof lr);
    fprintf(f,
            " --epochs %d --batch %d --hidden %d --latent %d --lr %s "
            "--seed %llu",
            o->epochs, o->batch, o->hidden, o->latent, lr,
            (unsigned long long)o->seed);
    if (o->arch != TG_VAE_MLP)
        fprintf(f, " --arch %s", tg_vae_arch_name(o->arch));
    if (o->likelihood != TG_VAE_BERNOULLI)
        fprintf(f, " --likelihood %s", tg_vae_likelihood_name(o->likelihood));
    if (o->threads)
        fprintf(f, " --threads %d", o->threads);
    if (o->max_batches)
        fprintf(f, " --max-batches %d", o->max_batches);
    if (o->checkpoint_every)
        fprintf(f, " --checkpoint-every %d", o->checkpoint_every);
    if (o->holdout)
        fprintf(f, " --holdout %d", o->holdout);
    if (o->skip_nonfinite)
        fputs(" --skip-nonfinite", f);
    if (o->allow_data_change)
        fputs(" --allow-data-change", f);
    if (o->rank_timeout != 300)
        fprintf(f, " --rank-timeout %d", o->rank_timeout);
    fputs(" --resume ", f);
    cli_shell_word(f, ck);
}

/* After SIGINT, SIGTERM or SIGHUP, between steps: save where training stands
 * (unless save is false: a diverging run, whose weights replace nothing),
 * say how to go on, exit 130. */
void stop_interrupted(const run *r, bool save)
{
    const options *o = r->o;
    const tg_vae_position *pos = &r->pos;
    if (save)
        save_checkpoint(r); /* rank 0 writes */
    /* every rank waits for the save: a rank that exited first could make
     * mpirun kill rank 0 mid-save (the old checkpoint would stay, whole) */
    tg_dist_all_ok(true);
    const char *ck = cli_path(o->out, "checkpoint.safetensors");
    if (tg_dist_rank() == 0) {
        fprintf(stderr,
                "vae_mnist: interrupted after step %lld (epoch %lld, batch "
                "%lld); ",
                (long long)r->opt->step,
                (long long)(pos->batch ? pos->epoch + 1 : pos->epoch),
                (long long)pos->batch);
        /* a Ctrl-C as the loss blows up had saved the blown-up weights over
         * the last good checkpoint */
        bool have = save || access(ck, F_OK) == 0;
        if (save) { /* paths quoted as in the command: one line always */
            fputs("saved ", stderr);
            cli_shell_word(stderr, ck);
            fputs(" (the resumed run saves over it: copy it to keep it)",
                  stderr);
        } else {
            fprintf(stderr,
                    "the run was diverging (the loss far above its "
                    "level, or steps skipped as non-finite): its "
                    "weights not saved, %s",
                    have ? "the last checkpoint kept"
                         : "no checkpoint written");
        }
        if (have) {
            fputs("; resume with: ", stderr);
            print_resume_command(stderr, r->argv0, o, ck);
        }
        fputc('\n', stderr);
    }
    tg_dist_finalize();
    exit(130);
}

/* Rank 0's guard state (from the checkpoint), copied to every rank: each
 * takes the step's verdicts itself. */
void broadcast_guard(tg_step_guard *g)
{
    int64_t v[8] = {0, 0, g->above, g->skipped_run, g->steps};
    memcpy(v, &g->level, sizeof g->level);
    memcpy(v + 1, &g->best, sizeof g->best);
    for (int i = 0; i < 100; i++)
        v[5 + i / 50] |= (int64_t)(g->recent[i] != 0) << (i % 50);
    tg_dist_broadcast_i64(v, 8);
    memcpy(&g->level, v, sizeof g->level);
    memcpy(&g->best, v + 1, sizeof g->best);
    g->above = (int)v[2];
    g->skipped_run = (int)v[3];
    g->steps = v[4];
    for (int i = 0; i < 100; i++)
        g->recent[i] = (unsigned char)((v[5 + i / 50] >> (i % 50)) & 1);
}

/* Rank 0's training position, copied to every rank after a resume. */
void broadcast_pos(tg_vae_position *pos)
{
    int64_t v[10] = {pos->epoch, pos->batch, pos->seen, pos->skipped};
    memcpy(v + 4, pos->noise.s, sizeof pos->noise.s);
    memcpy(v + 8, &pos->rec, sizeof pos->rec);
    memcpy(v + 9, &pos->kl, sizeof pos->kl);
    tg_dist_broadcast_i64(v, 10);
    pos->epoch = v[0];
    pos->batch = v[1];
    pos->seen = v[2];
    pos->skipped = v[3];
    memcpy(pos->noise.s, v + 4, sizeof pos->noise.s);
    memcpy(&pos->rec, v + 8, sizeof pos->rec);
    memcpy(&pos->kl, v + 9, sizeof pos->kl);
}
