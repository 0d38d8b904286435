/* vae_mnist's checkpoints: what a checkpoint's metadata holds (config and
 * the exact training position), saving (never a non-finite one), resuming,
 * and the SIGINT stop that saves and prints how to go on. */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "vae_mnist.h"

/* A double as C99 hex ("%a"), so it reads back bit for bit. */
static void meta_set_exact(tg_meta *m, const char *key, double v)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%a", v);
    tg_meta_set(m, key, buf);
}

static void set_meta(tg_meta *m, const options *o, const tg_vae *vae,
                     const train_pos *pos, int64_t step)
{
    m->n = 0;
    tg_meta_set(m, "model", "vae");
    tg_meta_set_int(m, "input", vae->cfg.input);
    tg_meta_set_int(m, "hidden", vae->cfg.hidden);
    tg_meta_set_int(m, "latent", vae->cfg.latent);
    tg_meta_set_int(m, "epoch", pos->epoch);
    tg_meta_set_int(m, "step", step);
    /* mid-epoch position: batches done in epoch + 1, its noise stream
     * (xoshiro256** state, 4 x 64 bits in hex) and running sums */
    tg_meta_set_int(m, "batch_in_epoch", pos->batch);
    char rng[4 * 16 + 1];
    for (int i = 0; i < 4; i++)
        snprintf(rng + 16 * i, 17, "%016llx",
                 (unsigned long long)pos->noise.s[i]);
    tg_meta_set(m, "noise_rng", rng);
    tg_meta_set_int(m, "epoch_seen", pos->seen);
    meta_set_exact(m, "epoch_rec", pos->rec);
    meta_set_exact(m, "epoch_kl", pos->kl);
    tg_meta_set_int(m, "epoch_skipped", pos->skipped);
    tg_meta_set_int(m, "batch", o->batch);
    tg_meta_set_int(m, "seed", (int64_t)o->seed);
    char lr[32];
    snprintf(lr, sizeof lr, "%.9g", (double)o->lr);
    tg_meta_set(m, "lr", lr);
    tg_meta_set(m, "weight_layout", "[out, in] (torch.nn.Linear)");
}

static void fail_meta(const options *o, const char *key, const char *what)
{
    fprintf(stderr, "vae_mnist: %s: metadata '%s' %s\n", o->resume, key, what);
    exit(2);
}

static int64_t meta_int(const options *o, const tg_meta *m, const char *key,
                        int64_t lo, int64_t hi)
{
    int64_t v;
    if (tg_meta_get_int(m, key, &v) != TG_OK)
        fail_meta(o, key, "is missing or not an integer");
    if (v < lo || v > hi)
        fail_meta(o, key, "is out of range");
    return v;
}

static double meta_exact(const options *o, const tg_meta *m, const char *key)
{
    const char *s = tg_meta_get(m, key);
    char *end;
    double v = s ? strtod(s, &end) : 0.0;
    if (!s || end == s || *end || !isfinite(v))
        fail_meta(o, key, "is missing or not a finite number");
    return v;
}

/* The training position of a checkpoint. Files written before mid-epoch
 * checkpoints existed have only "epoch" (finished) and start the next. */
static train_pos meta_position(const options *o, const tg_meta *m)
{
    train_pos pos = {0};
    pos.epoch = (int)meta_int(o, m, "epoch", 0, MAX_EPOCHS);
    if (!tg_meta_get(m, "batch_in_epoch"))
        return pos;
    pos.batch = (int)meta_int(o, m, "batch_in_epoch", 0, 1 << 30);
    pos.seen = (int)meta_int(o, m, "epoch_seen", 0, 1 << 30);
    pos.skipped = meta_int(o, m, "epoch_skipped", 0, 1 << 30);
    pos.rec = meta_exact(o, m, "epoch_rec");
    pos.kl = meta_exact(o, m, "epoch_kl");
    const char *rng = tg_meta_get(m, "noise_rng");
    bool ok = rng && strlen(rng) == 4 * 16;
    for (int i = 0; ok && i < 4; i++) {
        char part[17];
        memcpy(part, rng + 16 * i, 16);
        part[16] = '\0';
        for (int k = 0; k < 16; k++)
            ok = ok && isxdigit((unsigned char)part[k]);
        pos.noise.s[i] = strtoull(part, NULL, 16);
    }
    if (!ok ||
        !(pos.noise.s[0] | pos.noise.s[1] | pos.noise.s[2] | pos.noise.s[3]))
        fail_meta(o, "noise_rng", "is not a generator state (64 hex digits)");
    return pos;
}

/* Loads --resume into vae and opt; the run's config must be the file's.
 * Returns where training stands. */
train_pos resume(const options *o, tg_vae *vae, tg_optim *opt)
{
    /* The metadata first, so a config mismatch is reported as such rather
     * than as a tensor shape. */
    tg_meta m = {0};
    if (tg_checkpoint_read_meta(o->resume, &m) != TG_OK)
        fail_data();
    struct {
        const char *key;
        int64_t want;
    } keys[] = {{"input", vae->cfg.input},
                {"hidden", o->hidden},
                {"latent", o->latent},
                {"batch", o->batch},
                {"seed", (int64_t)o->seed}};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        int64_t v = meta_int(o, &m, keys[i].key, INT64_MIN, INT64_MAX);
        if (v != keys[i].want && i == 0) {
            fprintf(stderr,
                    "vae_mnist: %s: checkpoint has input %lld pixels but the "
                    "images in %s have %lld\n",
                    o->resume, (long long)v, o->data, (long long)keys[i].want);
            exit(2);
        }
        if (v != keys[i].want) {
            fprintf(stderr,
                    "vae_mnist: %s: checkpoint has %s %lld but this run has "
                    "%lld (pass --%s %lld)\n",
                    o->resume, keys[i].key, (long long)v,
                    (long long)keys[i].want, keys[i].key, (long long)v);
            exit(2);
        }
    }
    train_pos pos = meta_position(o, &m);
    int64_t step = meta_int(o, &m, "step", 0, INT64_MAX);
    if (tg_checkpoint_load(o->resume, vae->params, opt, &m) != TG_OK)
        fail_data();
    const char *why, *bad = cli_nonfinite(vae->params, &why);
    for (size_t i = 0, n = tg_params_numel(vae->params); i < n && !bad; i++)
        if (!isfinite(opt->m[i]) || !isfinite(opt->v[i]))
            bad = "the Adam state", why = "is not finite";
    if (bad) {
        fprintf(stderr, "vae_mnist: %s: %s: %s\n", o->resume, bad, why);
        exit(2);
    }
    opt->step = step;
    return pos;
}

/* Saves the checkpoint at pos, refusing to write a non-finite one. */
void save_checkpoint(const options *o, tg_vae *vae, tg_optim *opt,
                     const train_pos *pos)
{
    if (tg_dist_rank() != 0)
        return; /* the ranks hold the same weights: rank 0 writes */
    tg_params *ps = tg_vae_params(vae);
    tg_params_zero_grad(ps); /* a skipped step's grads are not state */
    const char *bad = NULL;
    size_t n = tg_params_numel(ps);
    if (tg_params_finite(ps, &bad))
        for (size_t i = 0; i < n && !bad; i++)
            if (!isfinite(opt->m[i]) || !isfinite(opt->v[i]))
                bad = "the Adam state";
    if (bad) {
        fprintf(stderr,
                "vae_mnist: %s is not finite after step %lld; not saving "
                "a checkpoint (try a smaller --lr)\n",
                bad, (long long)opt->step);
        exit(3);
    }
    tg_meta meta;
    set_meta(&meta, o, vae, pos, opt->step);
    const char *ck = cli_path(o->out, "checkpoint.safetensors");
    if (tg_checkpoint_save(ck, ps, opt, &meta) != TG_OK) {
        fprintf(stderr, "vae_mnist: %s\n", tg_errmsg());
        exit(1);
    }
}

/* Writes the command that continues this run from checkpoint ck. */
static void print_resume_command(FILE *f, const char *argv0, const options *o,
                                 const char *ck)
{
    cli_shell_word(f, argv0);
    fputs(" --data ", f);
    cli_shell_word(f, o->data);
    fputs(" --out ", f);
    cli_shell_word(f, o->out);
    char lr[32]; /* the shortest form that reads back as the same float */
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(lr, sizeof lr, "%.*g", digits, (double)o->lr);
        if ((float)strtod(lr, NULL) == o->lr)
            break;
    }
    fprintf(f,
            " --epochs %d --batch %d --hidden %d --latent %d --lr %s "
            "--seed %llu",
            o->epochs, o->batch, o->hidden, o->latent, lr,
            (unsigned long long)o->seed);
    if (o->threads)
        fprintf(f, " --threads %d", o->threads);
    if (o->max_batches)
        fprintf(f, " --max-batches %d", o->max_batches);
    if (o->checkpoint_every)
        fprintf(f, " --checkpoint-every %d", o->checkpoint_every);
    if (o->skip_nonfinite)
        fputs(" --skip-nonfinite", f);
    fputs(" --resume ", f);
    cli_shell_word(f, ck);
}

/* After SIGINT, between steps: save where training stands, say how to go
 * on, exit 130. */
void stop_interrupted(const options *o, const char *argv0, tg_vae *vae,
                      tg_optim *opt, const train_pos *pos)
{
    save_checkpoint(o, vae, opt, pos); /* rank 0 writes */
    /* every rank waits for the save: a rank that exited first could make
     * mpirun kill rank 0 mid-save (the old checkpoint would stay, whole) */
    tg_dist_all_ok(true);
    const char *ck = cli_path(o->out, "checkpoint.safetensors");
    if (tg_dist_rank() == 0) {
        fprintf(stderr,
                "vae_mnist: interrupted after step %lld (epoch %d, batch %d); "
                "saved %s (the resumed run saves over it: copy it to keep "
                "it); resume with: ",
                (long long)opt->step, pos->batch ? pos->epoch + 1 : pos->epoch,
                pos->batch, ck);
        print_resume_command(stderr, argv0, o, ck);
        fputc('\n', stderr);
    }
    tg_dist_finalize();
    exit(130);
}

/* Rank 0's training position, copied to every rank after a resume. */
void broadcast_pos(train_pos *pos)
{
    int64_t v[10] = {pos->epoch, pos->batch, pos->seen, pos->skipped};
    memcpy(v + 4, pos->noise.s, sizeof pos->noise.s);
    memcpy(v + 8, &pos->rec, sizeof pos->rec);
    memcpy(v + 9, &pos->kl, sizeof pos->kl);
    tg_dist_broadcast_i64(v, 10);
    pos->epoch = (int)v[0];
    pos->batch = (int)v[1];
    pos->seen = (int)v[2];
    pos->skipped = v[3];
    memcpy(pos->noise.s, v + 4, sizeof pos->noise.s);
    memcpy(&pos->rec, v + 8, sizeof pos->rec);
    memcpy(&pos->kl, v + 9, sizeof pos->kl);
}
