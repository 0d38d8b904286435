/* vae_mnist's set-up: the run made ready to train (data, the same-job check
 * across ranks, model, --resume, shards, the output folder), and freed. The
 * epochs themselves are vae_mnist_train.c. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "vae_mnist.h"

/* Reads the data; a rank that cannot stops every rank, the lowest such rank
 * saying why. */
static void load_data(run *r)
{
    const options *o = r->o;
    /* labels are not used: read when there (the data's fingerprint covers
     * them), not required */
    bool loaded = cli_load_unlabelled(o->data, true, &r->train) &&
                  cli_load_unlabelled(o->data, false, &r->test);
    if (loaded &&
        (r->test.rows != r->train.rows || r->test.cols != r->train.cols))
        loaded =
            tg_error(TG_ERR_MISMATCH, "%s: train images are %dx%d, test %dx%d",
                     o->data, r->train.rows, r->train.cols, r->test.rows,
                     r->test.cols) == TG_OK;
    if (!tg_dist_all_ok(loaded)) {
        /* named: rank 0's machine may well hold the data */
        if (tg_dist_first_failed() == tg_dist_rank())
            cli_error("%s%s", cli_rank(), tg_errmsg());
        tg_dist_finalize();
        exit(2);
    }
    if (tg_dist_rank() == 0) {
        const char *use = "vae_mnist does not use labels";
        cli_note_labels(&r->train, o->data, true, 10, use);
        cli_note_labels(&r->test, o->data, false, 10, use);
    }
    /* --holdout: the last images are never trained on (the fingerprint
     * covers what is, so a resume with another --holdout is refused) */
    bool kept = o->holdout < r->train.n; /* one line, from the first rank */
    if (!tg_dist_all_ok(kept)) {
        char who[32] = "";
        if (tg_dist_size() > 1)
            snprintf(who, sizeof who, "rank %d's ", tg_dist_rank());
        if (tg_dist_first_failed() == tg_dist_rank())
            cli_error("%s--holdout %d leaves no training images of the %d "
                      "in %s",
                      who, o->holdout, r->train.n, o->data);
        tg_dist_finalize();
        exit(2);
    }
    r->train.n -= o->holdout;
    char train_fp[TG_FINGERPRINT_MAX], test_fp[TG_FINGERPRINT_MAX];
    tg_dataset_fingerprint(&r->train, train_fp);
    tg_dataset_fingerprint(&r->test, test_fp);
    snprintf(r->data_fp, sizeof r->data_fp, "train %s; test %s", train_fp,
             test_fp);
}

/* Under mpirun: the ranks must train the same model on the same data. */
static void check_same_job(const run *r)
{
    const options *o = r->o;
    char v[10][48];
    snprintf(v[0], sizeof v[0], "%d", o->epochs);
    snprintf(v[1], sizeof v[1], "%d", o->batch);
    snprintf(v[2], sizeof v[2], "%d", o->hidden);
    snprintf(v[3], sizeof v[3], "%d", o->latent);
    snprintf(v[4], sizeof v[4], "%.9g", (double)o->lr);
    snprintf(v[5], sizeof v[5], "%llu", (unsigned long long)o->seed);
    snprintf(v[6], sizeof v[6], "%d", o->max_batches);
    snprintf(v[7], sizeof v[7], "%d", o->checkpoint_every);
    snprintf(v[8], sizeof v[8], "%d", o->skip_nonfinite);
    snprintf(v[9], sizeof v[9], "%d", o->allow_data_change);
    char timeout[32], holdout[32], shards[32];
    /* the fingerprint covers the labels when there are labels files, which
     * vae_mnist does not need: a rank without them is told from one with
     * other images (two fingerprints of the same sizes said nothing) */
    char data[sizeof r->data_fp + 40];
    snprintf(data, sizeof data, "%s (labels: train %s, test %s)", r->data_fp,
             r->train.labels ? "yes" : "no", r->test.labels ? "yes" : "no");
    snprintf(timeout, sizeof timeout, "%d", o->rank_timeout);
    snprintf(shards, sizeof shards, "%d", o->shards);
    snprintf(holdout, sizeof holdout, "%d", o->holdout);
    /* --arch first: it sets --hidden's default (a rank started with --arch
     * conv was reported as a --hidden mismatch) */
    const char *names[] = {"--arch",
                           "--epochs",
                           "--batch",
                           "--hidden",
                           "--latent",
                           "--lr",
                           "--seed",
                           "--max-batches",
                           "--checkpoint-every",
                           "--skip-nonfinite",
                           "--allow-data-change",
                           "--rank-timeout",
                           "--likelihood",
                           "--holdout",
                           "--shards",
                           "the GEMM (TG_GEMM_KERNEL, TG_GEMM_BLOCKS)",
                           "--resume",
                           "data (--data)"};
    /* --resume too: rank 0 alone reads the file and sends the position, so
     * a rank started without it (or with it alone) waited for ever */
    const char *values[] = {tg_vae_arch_name(o->arch),
                            v[0],
                            v[1],
                            v[2],
                            v[3],
                            v[4],
                            v[5],
                            v[6],
                            v[7],
                            v[8],
                            v[9],
                            timeout,
                            tg_vae_likelihood_name(o->likelihood),
                            holdout,
                            shards,
                            tg_gemm_numerics(),
                            o->resume ? o->resume : "(none)",
                            data};
    /* --rank-timeout is armed since main read the flags (the default
     * before): these comparisons, and load_data's agreement before them,
     * are under it too */
    cli_same_job(names, values, 18);
}

/* The shards: --shards, else the checkpoint's (rank 0 read it), else the
 * rank count. More ranks than shards: the extra ranks have no rows. */
static void set_shards(run *r)
{
    int64_t shards = r->shards;
    tg_dist_broadcast_i64(&shards, 1);
    if (r->o->shards)
        shards = r->o->shards;
    /* A checkpoint from before the shards were recorded was trained with
     * as many as it had ranks, which it does not say: one process takes
     * it as one shard, but N ranks would silently go on with N (another
     * model, unless it came from N ranks) */
    if (!shards && r->o->resume && tg_dist_size() > 1) {
        if (tg_dist_rank() == 0)
            cli_error("%s does not record its shards (a file from before "
                      "they were): pass --shards N, N the ranks it was "
                      "trained with (1: one process)",
                      r->o->resume);
        tg_dist_finalize();
        exit(2);
    }
    if (!shards)
        shards = tg_dist_size();
    tg_dist_set_shards((int)shards);
    if (tg_dist_rank() == 0 && shards < tg_dist_size())
        cli_error("note: %d ranks but %lld shard%s (--shards%s): "
                  "ranks %lld..%d have no rows to compute",
                  tg_dist_size(), (long long)shards, shards == 1 ? "" : "s",
                  r->o->shards ? "" : ", kept from the checkpoint",
                  (long long)shards, tg_dist_size() - 1);
}

/* Locks --out (made if need be) and checks that every output this run
 * writes there can be replaced: an output name taken by what a run cannot
 * replace (a FIFO, a folder) is refused before anything is written. */
static bool out_ready(const options *o)
{
    static const char *const outputs[] = {
        "checkpoint.safetensors", "metrics.csv", "loss.svg",
        "reconstructions.png",    "samples.png", "manifold.png"};
    return cli_prepare_out_dir(o->out) &&
           cli_check_outputs(o->out, outputs, o->latent == 2 ? 6 : 5) &&
           (o->latent == 2 ||
            cli_remove_stale_output(o->out, "manifold.png",
                                    "an earlier run's picture (this run's "
                                    "latent is not 2-D)"));
}

/* A resume with nothing to train from the checkpoint of --out itself,
 * whose metrics.csv lacks the checkpoint's last epoch, or whose loss.svg
 * or pictures are not the checkpoint's: the run that saved it was stopped
 * (killed, or ended by mpirun) before or while writing the files that
 * describe it, and a resume said "nothing to train" and left them an epoch
 * behind for good (a kill after metrics.csv too: it was the only file
 * looked at). They are written from the checkpoint (a missing row with
 * samples/s 0.0). True when written. */
static bool repair_outputs(run *r)
{
    const options *o = r->o;
    const epoch_stats *last = &r->resumed_row;
    struct stat a, b;
    if (r->pos.batch != 0 || last->epoch != r->pos.epoch || last->epoch < 1 ||
        stat(o->resume, &a) != 0 ||
        stat(cli_path(o->out, "checkpoint.safetensors"), &b) != 0 ||
        a.st_dev != b.st_dev || a.st_ino != b.st_ino)
        return false;
    epoch_stats *hist = calloc((size_t)last->epoch + 1, sizeof *hist);
    if (!hist)
        tg_out_of_memory("metrics", "out of memory for %d epochs", last->epoch);
    int n = read_metrics(o, hist, last->epoch + 1, last->epoch + 1, last);
    bool stale = n == 0 || hist[n - 1].epoch < last->epoch;
    if (stale)
        hist[n++] = *last;
    r->tp = tg_tape_new();
    stale = stale || outputs_differ(r->tp, r->vae, &r->test, o, hist, n);
    if (stale && out_ready(o)) {
        write_metrics(o, hist, n);
        write_pictures(r->tp, r->vae, &r->test, o);
    } else {
        stale = false;
    }
    free(hist);
    return stale;
}

void run_setup(run *r, const options *o, const char *argv0)
{
    memset(r, 0, sizeof *r);
    r->o = o;
    r->argv0 = argv0;
    load_data(r);
    check_same_job(r);
    int input = r->train.rows * r->train.cols;
    if (o->arch == TG_VAE_CONV &&
        (r->train.rows != r->train.cols || r->train.rows % 4 != 0)) {
        /* after check_same_job: every rank has these flags and data */
        if (tg_dist_rank() == 0)
            cli_error("%s: --arch conv needs square images with a side "
                      "that is a multiple of 4, not %dx%d",
                      o->data, r->train.rows, r->train.cols);
        tg_dist_finalize();
        exit(2);
    }
    tg_vae_config cfg = {.input = input,
                         .hidden = o->hidden,
                         .latent = o->latent,
                         .arch = o->arch,
                         .likelihood = o->likelihood};
    /* each size within its limit, the model still too large (--hidden
     * 65536 --latent 4096): was an abort in tg_vae_new */
    if (tg_vae_numel(cfg) > TG_VAE_MAX_PARAMS) {
        if (tg_dist_rank() == 0)
            cli_error("--hidden %d and --latent %d on %dx%d images "
                      "make %llu parameters, more than %llu",
                      o->hidden, o->latent, r->train.rows, r->train.cols,
                      (unsigned long long)tg_vae_numel(cfg),
                      (unsigned long long)TG_VAE_MAX_PARAMS);
        tg_dist_finalize();
        exit(2);
    }
    cli_check_batch_size(o->batch, r->train.rows, r->train.cols);
    r->vae = tg_vae_new(cfg, o->seed);
    r->ps = tg_vae_params(r->vae);
    r->opt = tg_adam_new(r->ps, o->lr);
    tg_step_guard_init(&r->guard, r->ps, r->opt,
                       &(tg_step_config){.skip_nonfinite = o->skip_nonfinite});
    tg_batcher_init(&r->batcher, &r->train, o->batch, o->seed);
    r->n_batches = tg_batcher_count(&r->batcher);
    if (o->max_batches && o->max_batches < r->n_batches)
        r->n_batches = o->max_batches;
    /* Rank 0 reads the checkpoint (and stops the job if it cannot) and
     * sends weights, Adam state and position to the others. */
    if (o->resume && tg_dist_rank() == 0)
        resume(r);
    tg_dist_broadcast(r->ps, r->opt);
    r->first_step = r->opt->step;
    if (o->resume) {
        broadcast_pos(&r->pos);
        broadcast_guard(&r->guard);
    }
    set_shards(r);
    if (r->pos.epoch >= o->epochs) {
        bool repaired = tg_dist_rank() == 0 && repair_outputs(r);
        printf("vae_mnist: %s has trained %lld epoch%s%s, --epochs is %d: "
               "nothing to train, %s (pass a larger --epochs to go on)\n",
               o->resume, (long long)r->pos.epoch, r->pos.epoch == 1 ? "" : "s",
               r->pos.batch ? " and part of the next" : "", o->epochs,
               repaired ? "its metrics.csv and pictures written"
                        : "nothing written");
        cli_flush_stdout(false);
        tg_dist_finalize();
        exit(0);
    }
    /* Only now, with the data and checkpoint accepted: bad input leaves no
     * output behind, and outputs that cannot be replaced are refused before
     * training, not after it. */
    if (!tg_dist_all_ok(tg_dist_rank() != 0 || out_ready(o))) {
        tg_dist_finalize();
        exit(1);
    }
    r->hist = calloc(2 * (size_t)o->epochs + 1, sizeof *r->hist);
    if (!r->hist) /* before read_metrics fills it */
        tg_out_of_memory("metrics", "out of memory for %d epochs", o->epochs);
    r->n_hist = read_metrics(o, r->hist, (int)r->pos.epoch + 1, o->epochs,
                             &r->resumed_row);
    /* the checkpoint's last epoch, when metrics.csv lacks it (the run that
     * saved the checkpoint stopped before writing metrics.csv) */
    const epoch_stats *last = &r->resumed_row;
    if (last->epoch > 0 &&
        (r->n_hist == 0 || r->hist[r->n_hist - 1].epoch < last->epoch))
        r->hist[r->n_hist++] = *last;
    r->tp = tg_tape_new();
    r->xbuf = malloc(sizeof(float) * (size_t)o->batch * input);
    r->epsbuf = malloc(sizeof(float) * (size_t)o->batch * o->latent);
    if (!r->xbuf || !r->epsbuf)
        tg_out_of_memory("training batch", "out of memory for --batch %d",
                         o->batch);

    printf("vae_mnist: %d train / %d test images of %dx%d from %s\n",
           r->train.n, r->test.n, r->train.rows, r->train.cols, o->data);
    printf("model %s %d-%d-%d, likelihood %s, %zu parameters, batch %d, "
           "Adam lr %g, seed %llu, %d threads, gemm %s\n",
           tg_vae_arch_name(o->arch), input, o->hidden, o->latent,
           tg_vae_likelihood_name(o->likelihood), tg_params_numel(r->ps),
           o->batch, (double)o->lr, (unsigned long long)o->seed,
           tg_get_threads(), tg_gemm_kernel());
    if (o->resume)
        printf("resumed from %s after epoch %lld, batch %lld (step %lld)\n",
               o->resume, (long long)r->pos.epoch, (long long)r->pos.batch,
               (long long)r->opt->step);
    cli_flush_stdout(false);
}

void run_free(run *r)
{
    free(r->xbuf);
    free(r->epsbuf);
    free(r->hist);
    tg_batcher_free(&r->batcher);
    tg_tape_free(r->tp);
    tg_optim_free(r->opt);
    tg_vae_free(r->vae);
    tg_dataset_free(&r->train);
    tg_dataset_free(&r->test);
}
