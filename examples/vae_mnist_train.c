/* vae_mnist's training: an epoch of guarded steps (tg_step_finish), and the
 * epoch's end (test -ELBO, checkpoint, then the files that describe it).
 * Setting the run up is vae_mnist_setup.c. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "vae_mnist.h"

/* Rows [first, first + n) of ds as a tape tensor [n, pixels] (a view). */
tg_tensor *rows_on_tape(tg_tape *tp, const tg_dataset *ds, int first, int n)
{
    int pixels = ds->rows * ds->cols;
    return tg_tape_view2(tp, ds->images + (size_t)first * pixels, n, pixels);
}

static double sum_rows(const tg_tensor *t)
{
    double s = 0.0;
    for (size_t i = 0; i < t->size; i++)
        s += t->data[i];
    return s;
}

/* Forward and backward of each of this rank's shards of the global batch
 * r->xbuf [n, input], with the noise one process draws for their rows
 * (the whole batch's eps ~ N(0, I), drawn row by row on every rank as
 * tg_vae_forward draws it). Backward runs on (sum over the shard's rows of
 * rec + kl) / n, and tg_step_finish sums the shards' gradients in shard
 * order: the gradient of the global batch's mean -ELBO, the same bits for
 * any rank count. Each shard's summed loss, rec (parts[0]) and kl
 * (parts[1]) go to s. */
static void shard_steps(run *r, int n, tg_step *s)
{
    const tg_vae *vae = r->vae;
    int input = vae->cfg.input, latent = vae->cfg.latent, k0;
    int mine = tg_dist_my_shards(&k0), k1 = k0 + mine;
    tg_rng_fill_normal(&r->pos.noise, r->epsbuf, (size_t)n * latent, 0.0f,
                       1.0f);
    for (int k = k0; k < k1; k++) {
        int first, rows = tg_dist_shard_rows(n, k, &first);
        /* the gradients start at zero: tg_step_shard zeroes them after
         * keeping a shard's, tg_step_finish after its step */
        tg_tape_reset(r->tp);
        if (rows > 0) {
            tg_tensor *eps = tg_tape_view2(
                r->tp, r->epsbuf + (size_t)first * latent, rows, latent);
            tg_tensor *x = tg_tape_view2(r->tp, r->xbuf + (size_t)first * input,
                                         rows, input);
            tg_vae_out out = tg_vae_forward_eps(r->tp, vae, x, eps);
            s->loss = (double)out.loss->data[0] * rows;
            if (isfinite(s->loss)) {
                tg_tensor *rows_sum =
                    tg_sum(r->tp, tg_add(r->tp, out.rec, out.kl));
                tg_backward(r->tp, tg_scale(r->tp, rows_sum, (float)(1.0 / n)));
                s->parts[0] = sum_rows(out.rec);
                s->parts[1] = sum_rows(out.kl);
            }
        }
        tg_step_shard(&r->guard, s);
    }
}

/* Test -ELBO, rec and KL in nats per sample: recording off, batches of
 * EVAL_BATCH (EVAL_BATCH_CONV), the tape rewound after each. Each batch is
 * cut into shards as training cuts its batches; each shard's sums have
 * their own slot, filled by the rank that holds it, and the slots are
 * added in order: the same bits for any rank count. */
static void evaluate(run *r, int epoch, epoch_stats *st)
{
    const tg_dataset *test = &r->test;
    bool was = tg_tape_set_recording(r->tp, false);
    tg_rng noise;
    tg_rng_seed(&noise, r->o->seed, 2000 + (uint64_t)epoch);
    int chunk = r->o->arch == TG_VAE_CONV ? EVAL_BATCH_CONV : EVAL_BATCH;
    int latent = r->o->latent, nshards = tg_dist_shards(), k0;
    int mine = tg_dist_my_shards(&k0), k1 = k0 + mine;
    size_t n_slots = (size_t)(test->n / chunk + 1) * nshards * 2;
    float *buf = malloc(sizeof(float) * (size_t)chunk * (size_t)latent);
    double *slot = calloc(n_slots, sizeof(double)); /* rec, kl per shard */
    if (!buf || !slot)
        tg_out_of_memory("evaluation", "out of memory");
    for (int i = 0, c = 0; i < test->n; i += chunk, c++) {
        int n = test->n - i < chunk ? test->n - i : chunk;
        tg_rng_fill_normal(&noise, buf, (size_t)n * latent, 0.0f, 1.0f);
        for (int k = k0; k < k1; k++) {
            int first, rows = tg_dist_shard_rows(n, k, &first);
            if (rows == 0)
                continue;
            tg_tape_reset(r->tp);
            tg_tensor *eps = tg_tape_view2(r->tp, buf + (size_t)first * latent,
                                           rows, latent);
            tg_vae_out out = tg_vae_forward_eps(
                r->tp, r->vae, rows_on_tape(r->tp, test, i + first, rows), eps);
            double *at = slot + ((size_t)c * nshards + k) * 2;
            at[0] = sum_rows(out.rec);
            at[1] = sum_rows(out.kl);
        }
    }
    free(buf);
    tg_dist_sum(slot, (int)n_slots); /* one rank per slot: exact */
    double sums[2] = {0.0, 0.0};
    for (size_t j = 0; j < n_slots; j += 2) {
        sums[0] += slot[j];
        sums[1] += slot[j + 1];
    }
    free(slot);
    tg_tape_reset(r->tp);
    tg_tape_set_recording(r->tp, was);
    st->test_rec = sums[0] / test->n;
    st->test_kl = sums[1] / test->n;
    st->test = st->test_rec + st->test_kl;
}

/* What a stop leaves behind: the checkpoint an earlier epoch (or the run
 * resumed from) wrote, or none. */
static const char *kept(const options *o)
{
    return access(cli_path(o->out, "checkpoint.safetensors"), F_OK) == 0
               ? "the last checkpoint kept"
               : "no checkpoint written";
}

/* Whether no step was taken since the run resumed: the checkpoint's
 * weights went into every step unchanged, so they may be at fault. */
static bool none_since_resume(const run *r)
{
    return r->o->resume && r->opt->step == r->first_step;
}

/* Every rank stops with one message from rank 0 and exit status 3. */
static void stop_numeric(run *r, const tg_step *s, int epoch, int batch,
                         int rows)
{
    if (tg_dist_rank() == 0) {
        /* one message through cli_error: a path with a control character
         * (--resume, --out) stays on one line */
        char why[1536];
        if (s->verdict == TG_STEP_NONFINITE && none_since_resume(r))
            /* the resumed weights went in unchanged: they may be at fault
             * (finite, as loading checks, but 1e30 overflows the loss) */
            snprintf(why, sizeof why,
                     "%s: %s at the first step from %s: its weights may be "
                     "at fault; stopped, nothing written (else try a smaller "
                     "--lr)",
                     s->bad, s->why, r->o->resume);
        else if (s->verdict == TG_STEP_NONFINITE)
            snprintf(why, sizeof why,
                     "%s: %s; stopped, no checkpoint of it written (try a "
                     "smaller --lr, or --skip-nonfinite)",
                     s->bad, s->why);
        else if (s->verdict == TG_STEP_DIVERGED)
            snprintf(why, sizeof why,
                     "the loss (%.4g per sample) stayed above %gx its lowest "
                     "running level (%.4g) for %d steps: diverged; stopped, %s "
                     "(try a smaller --lr)",
                     s->loss_sum / rows, r->guard.cfg.diverge_factor, s->level,
                     r->guard.cfg.diverge_steps, kept(r->o));
        else if (none_since_resume(r)) /* --skip-nonfinite: all skipped */
            snprintf(why, sizeof why,
                     "%s: %s at every step from %s (%d in a row, none "
                     "taken): its weights may be at fault; stopped, %s "
                     "(else try a smaller --lr)",
                     s->bad, s->why, r->o->resume, r->guard.skipped_run,
                     kept(r->o));
        else
            snprintf(why, sizeof why,
                     "%s: %s, and too many steps were skipped (%d in a row, "
                     "or more than %d of the last 100); stopped, %s (try a "
                     "smaller --lr)",
                     s->bad, s->why, r->guard.cfg.max_skipped_run,
                     r->guard.cfg.max_skipped, kept(r->o));
        cli_error("step %lld (epoch %d, batch %d): %s",
                  (long long)r->opt->step + 1, epoch, batch, why);
    }
    tg_dist_finalize();
    exit(3);
}

void train_epoch(run *r, int epoch)
{
    tg_vae_position *pos = &r->pos;
    if (pos->batch == 0) {
        *pos = (tg_vae_position){.epoch = epoch - 1};
        tg_rng_seed(&pos->noise, r->o->seed, 1000 + (uint64_t)epoch);
    }
    tg_batcher_start(&r->batcher, epoch, (int)pos->batch);
    cli_progress bar;
    cli_progress_start(&bar, r->n_batches);
    r->t0 = cli_now();
    r->wait0 = r->guard.wait_s;
    r->seen0 = pos->seen;
    r->batch0 = pos->batch;
    int n;
    for (int i = (int)pos->batch;
         i < r->n_batches &&
         (n = tg_batcher_next(&r->batcher, r->xbuf, NULL)) > 0;
         i++) {
        tg_step s = {.interrupted = cli_interrupted};
        shard_steps(r, n, &s);
        tg_step_finish(&r->guard, &s, n);
        if (s.verdict == TG_STEP_TAKEN) {
            pos->rec += s.part_sums[0];
            pos->kl += s.part_sums[1];
            pos->seen += n;
        } else if (s.verdict == TG_STEP_SKIPPED) {
            pos->skipped++;
        } else {
            cli_progress_end(&bar);
            stop_numeric(r, &s, epoch, i + 1, n);
        }
        pos->batch = i + 1;
        cli_progress_update(&bar, i + 1, (int)pos->seen,
                            (pos->rec + pos->kl) / pos->seen);
        int64_t done = (int64_t)(epoch - 1) * r->n_batches + pos->batch;
        if (r->o->checkpoint_every && done % r->o->checkpoint_every == 0 &&
            pos->batch < r->n_batches && !tg_step_suspect(&r->guard))
            save_checkpoint(r);
        /* every rank saw the same interrupted_any: all stop here */
        if (s.interrupted_any && pos->batch < r->n_batches) {
            cli_progress_end(&bar);
            stop_interrupted(r, !tg_step_suspect(&r->guard));
        }
    }
    cli_progress_end(&bar);
}

void end_epoch(run *r, int epoch)
{
    const options *o = r->o;
    double dt = cli_now() - r->t0, wait = r->guard.wait_s - r->wait0;
    int steps = (int)(r->pos.batch - r->batch0);
    tg_vae_position done = r->pos;
    r->pos = (tg_vae_position){.epoch = epoch, .noise = done.noise};
    if (done.seen == 0) {
        if (tg_dist_rank() == 0 && none_since_resume(r))
            cli_error("every step of epoch %d was skipped as non-finite, "
                      "none taken since %s: its weights may be at fault; "
                      "stopped, %s (else try a smaller --lr)",
                      epoch, o->resume, kept(o));
        else if (tg_dist_rank() == 0)
            cli_error("every step of epoch %d was skipped as "
                      "non-finite; stopped, %s (try a smaller --lr)",
                      epoch, kept(o));
        tg_dist_finalize();
        exit(3);
    }

    epoch_stats *st = &r->hist[r->n_hist++];
    st->epoch = epoch;
    st->step = r->opt->step;
    st->train_rec = done.rec / done.seen;
    st->train_kl = done.kl / done.seen;
    st->train = st->train_rec + st->train_kl;
    st->samples_per_s = (done.seen - r->seen0) / dt;
    evaluate(r, epoch, st);
    printf("epoch %d  train -ELBO %.2f (rec %.2f, KL %.2f)  test -ELBO "
           "%.2f (rec %.2f, KL %.2f)  %.0f samples/s\n",
           epoch, st->train, st->train_rec, st->train_kl, st->test,
           st->test_rec, st->test_kl, st->samples_per_s);
    if (tg_dist_size() > 1 && steps > 0)
        printf("epoch %d  %d ranks: %.2f ms per step, of which %.2f ms "
               "waiting for the other ranks and in all-reduces (rank 0)\n",
               epoch, tg_dist_size(), 1e3 * dt / steps, 1e3 * wait / steps);
    if (done.skipped)
        printf("epoch %d  skipped %lld non-finite step%s\n", epoch,
               (long long)done.skipped, done.skipped == 1 ? "" : "s");
    cli_flush_stdout(false);

    /* A diverging run's weights replace nothing: the training loss far
     * above its level, or a test loss far above it or not finite (with
     * --skip-nonfinite one wild step had wrecked the weights, every later
     * step was skipped, and the wreck, test -ELBO 3e33, was saved). The
     * last epoch's end is the last chance to recover. */
    const tg_step_guard *g = &r->guard;
    bool far = g->above > 0, wrecked = tg_step_loss_far_above(g, st->test);
    if (far || wrecked) {
        if (tg_dist_rank() == 0) {
            fprintf(stderr, "vae_mnist: %sepoch %d ends with ",
                    epoch < o->epochs ? "note: " : "", epoch);
            if (far)
                fputs("the loss far above its lowest running level", stderr);
            else
                fprintf(stderr,
                        "a test -ELBO of %.4g, far above the training loss's "
                        "lowest running level (%.4g)",
                        st->test, g->best);
            if (g->skipped_run > 0)
                fprintf(stderr, ", the last %d step%s skipped as non-finite",
                        g->skipped_run, g->skipped_run == 1 ? "" : "s");
            if (epoch < o->epochs)
                fputs(": checkpoint and outputs not replaced\n", stderr);
            else
                fprintf(stderr, "; stopped, %s (try a smaller --lr)\n",
                        kept(o));
        }
        if (epoch == o->epochs) {
            tg_dist_finalize();
            exit(3);
        }
    } else {
        /* the checkpoint first: if it cannot be saved, the files that
         * describe it are not replaced either */
        save_checkpoint(r);
        if (tg_dist_rank() == 0) {
            write_metrics(o, r->hist, r->n_hist);
            write_pictures(r->tp, r->vae, &r->test, o);
        }
    }
    /* agreed: a rank interrupted during the I/O above stops them all */
    if (!tg_dist_all_ok(!cli_interrupted) && epoch < o->epochs)
        stop_interrupted(r, !(far || wrecked));
}
