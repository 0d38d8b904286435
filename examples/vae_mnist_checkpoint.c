/* vae_mnist's checkpoints (tg_vae_save / tg_vae_load) with this program's
 * own entries (batch, seed, lr), the checks of a checkpoint against the
 * run, and the SIGINT stop that saves and prints how to go on. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "vae_mnist.h"

static void fail_resume(const options *o, const char *fmt, long long a,
                        long long b)
{
    fprintf(stderr, "vae_mnist: %s: ", o->resume);
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    exit(2);
}

/* The checkpoint's position, checked against what this run can do. */
static void check_position(const options *o, const tg_vae_position *pos,
                           int n_batches)
{
    if (pos->batch > n_batches)
        fail_resume(o,
                    "checkpoint is at batch %lld of an epoch, but an epoch "
                    "of this run has %lld batches (resume with the data and "
                    "--max-batches it was trained with)",
                    (long long)pos->batch, n_batches);
    if (pos->seen > pos->batch * o->batch)
        fail_resume(o,
                    "checkpoint says %lld samples were seen in the epoch, "
                    "more than its batches hold (%lld): not a position "
                    "training can reach",
                    (long long)pos->seen, (long long)pos->batch * o->batch);
}

/* The data the checkpoint was trained on must be this run's, unless
 * --allow-data-change. */
static void check_data(const run *r, const tg_meta *m)
{
    const options *o = r->o;
    const char *fp = tg_meta_get(m, "data");
    if (!fp && !o->allow_data_change) {
        fprintf(stderr,
                "vae_mnist: %s: checkpoint does not say what data it was "
                "trained on (metadata 'data'); pass --allow-data-change to "
                "resume on %s anyway\n",
                o->resume, o->data);
        exit(2);
    }
    if (fp && strcmp(fp, r->data_fp) != 0 && !o->allow_data_change) {
        fprintf(stderr,
                "vae_mnist: %s: checkpoint was trained on other data (%s) "
                "than %s holds (%s); pass --allow-data-change if that is "
                "intended\n",
                o->resume, fp, o->data, r->data_fp);
        exit(2);
    }
}

/* Exits 2 naming the key: the checkpoint's value is not one a run of
 * this program could have written. */
static void bad_meta(const char *path, const char *key, const char *value,
                     const char *what)
{
    fprintf(stderr, "vae_mnist: %s: metadata '%s' is '%.40s', not %s\n", path,
            key, value ? value : "(missing)", what);
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
    if (tg_meta_get_double(m, "lr", &lr) != TG_OK || !(lr > 0.0) ||
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
    fprintf(stderr,
            "vae_mnist: %s: checkpoint has %s %s but this run has %s (pass "
            "--%s %s)\n",
            path, flag, theirs, ours, flag, theirs);
    exit(2);
}

/* Loads --resume into r's model and optimizer; the run's config must be
 * the file's. Sets r->pos to where training stands. */
void resume(run *r)
{
    const options *o = r->o;
    tg_vae *vae = r->vae;
    /* The metadata first, so a config mismatch is reported as a flag. */
    tg_vae_info info;
    if (tg_vae_read_info(o->resume, &info) != TG_OK)
        fail_data();
    if (info.cfg.input != vae->cfg.input) {
        fprintf(stderr,
                "vae_mnist: %s: checkpoint has input %d pixels but "
                "the images in %s have %d\n",
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
        fprintf(stderr,
                "vae_mnist: %s: checkpoint has no training position "
                "(metadata 'epoch')\n",
                o->resume);
        exit(2);
    }
    check_position(o, &info.pos, r->n_batches);
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
    if (tg_vae_load(o->resume, vae, r->opt, &info) != TG_OK)
        fail_data();
    r->pos = info.pos;
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
    const char *ck = cli_path(o->out, "checkpoint.safetensors");
    tg_status st = tg_vae_save(ck, r->vae, r->opt, &r->pos, &extra);
    if (st == TG_ERR_ARG) {
        fprintf(stderr, "vae_mnist: %s after step %lld (try a smaller --lr)\n",
                tg_errmsg(), (long long)r->opt->step);
        exit(3);
    }
    if (st != TG_OK) {
        fprintf(stderr, "vae_mnist: %s\n", tg_errmsg());
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

/* After SIGINT, between steps: save where training stands, say how to go
 * on, exit 130. */
void stop_interrupted(const run *r)
{
    const options *o = r->o;
    const tg_vae_position *pos = &r->pos;
    save_checkpoint(r); /* rank 0 writes */
    /* every rank waits for the save: a rank that exited first could make
     * mpirun kill rank 0 mid-save (the old checkpoint would stay, whole) */
    tg_dist_all_ok(true);
    const char *ck = cli_path(o->out, "checkpoint.safetensors");
    if (tg_dist_rank() == 0) {
        fprintf(stderr,
                "vae_mnist: interrupted after step %lld (epoch %lld, batch "
                "%lld); saved %s (the resumed run saves over it: copy it to "
                "keep it); resume with: ",
                (long long)r->opt->step,
                (long long)(pos->batch ? pos->epoch + 1 : pos->epoch),
                (long long)pos->batch, ck);
        print_resume_command(stderr, r->argv0, o, ck);
        fputc('\n', stderr);
    }
    tg_dist_finalize();
    exit(130);
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
