/* vae_score: what a VAE trained by vae_mnist says about test images.
 *
 * For the in-distribution test set (--data), a held-out slice of its
 * training images (the reference), and the out-of-distribution sets (the
 * test set of --ood-data, and near-OOD sets made from the in-distribution
 * test images: rotated 90 degrees, flipped left-right) it prints the ELBO,
 * the importance-weighted log p(x) with k draws from q(z|x) and how well
 * that estimate has converged (effective sample size of the weights, the
 * delta-method standard error), and for each OOD set a table of seven
 * scores (higher = more out-of-distribution): AUROC with a bootstrap 95%
 * interval, FPR at 95% TPR, AUPR (average precision, OOD positive):
 *   -ELBO, -log p(x)     in nats
 *   S(x)                 -log2 p(x) - L(x), L the deflate size in bits
 *                        (Serra et al. 2020)
 *   |S| two-sided        |S - mean_ref(S)| / sd_ref(S)
 *   |L| two-sided        |L - mean_ref(L)| / sd_ref(L): no model at all
 *   -LR background       log p_bg(x) - log p(x), p_bg independent
 *                        per-pixel Bernoullis (continuous Bernoullis for a
 *                        --likelihood cb model) fitted on the training images
 *                        outside the reference (Ren et al. 2019's
 *                        likelihood ratio with a simple background model)
 *   DoSE (-log2 p, L)    Mahalanobis distance of (-log2 p(x), L(x)) from
 *                        their mean and covariance on the reference: DoSE
 *                        (Morningstar et al. 2021) with two statistics
 * The reference statistics come from the reference images alone (the last
 * --ref-images training images; --reference test fits them on the
 * in-distribution test set instead) and are printed. No score is tuned on
 * an OOD set.
 *
 * Writes scores.csv, ood_metrics.csv, convergence.csv, ood_hist.svg,
 * uncertainty.png and, for a 2-D latent, latent.svg to --out. Random
 * streams of --seed (each image i adds i): IWAE noise of the test set 0,
 * of --ood-data 2^40, of the reference 2^42, of rot90 2^43, of hflip
 * 3 * 2^42; posterior draws for the pictures 2^41 above each. */
#include "vae_score.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

enum { BATCH = 50 };

const char *const SCORE_NAMES[N_SCORES] = {"-ELBO",
                                           "-log p(x)",
                                           "S(x)",
                                           "|S| two-sided",
                                           "|L| two-sided",
                                           "-LR background",
                                           "DoSE (-log2 p, L)"};
const char *const SCORE_KEYS[N_SCORES] = {
    "neg_elbo",    "neg_log_px", "S",   "S_two_sided",
    "L_two_sided", "neg_lr_bg",  "dose"};

static options parse_options(int argc, char **argv)
{
    options o = {0};
    const cli_flag flags[] = {
        {"checkpoint", CLI_STR, &o.checkpoint, 0, 0, "FILE", NULL,
         "checkpoint.safetensors from vae_mnist"},
        {"data", CLI_STR, &o.data, 0, 0, "DIR", TG_DEFAULT_DATA_DIR,
         "in-distribution IDX folder (labels optional): its test set is "
         "scored, its training images give the reference and the "
         "background model"},
        {"ood-data", CLI_STR, &o.ood, 0, 0, "DIR", NULL,
         "IDX folder whose test set (labels optional) is scored as "
         "out-of-distribution, or an IDX images file itself; none (as "
         "without the flag): no such set (a folder named none: ./none)"},
        {"near-ood", CLI_STR, &o.near, 0, 0, "LIST", "rot90,hflip",
         "near-OOD sets made from the test images: rot90, hflip, "
         "comma-separated, or none"},
        {"reference", CLI_STR, &o.reference, 0, 0, "R", "train",
         "where the reference statistics come from: train, the last "
         "--ref-images training images, or test, the in-distribution test "
         "set itself"},
        {"ref-images", CLI_INT, &o.ref_images, 3, 1 << 30, "N", "1000",
         "reference images, unless the checkpoint is from vae_mnist "
         "--holdout: its held-out images; at most --max-images and half the "
         "training set"},
        {"iwae-k", CLI_INT, &o.k, 1, 10000000, "K", "100",
         "importance samples per image"},
        {"min-ess", CLI_FLOAT, &o.min_ess, 0, 1e9, "X", "10",
         "an estimate whose weights' effective sample size is below X "
         "counts as not converged"},
        {"bootstrap", CLI_INT, &o.resamples, 2, 1000000, "B", "1000",
         "bootstrap resamples of each AUROC interval"},
        {"max-images", CLI_INT, &o.max_images, 1, 1 << 30, "N", NULL,
         "score the first N images of each test set"},
        {"samples", CLI_INT, &o.samples, 1, 1000000, "S", "100",
         "posterior draws per uncertainty map"},
        CLI_FLAG_SEED(&o.seed),
        CLI_FLAG_THREADS(&o.threads),
        CLI_FLAG_OUT(&o.out, "out/vae_score"),
    };
    CLI_PARSE(argc, argv, flags,
              "usage: vae_score --checkpoint FILE [options]\n"
              "Scores test images with a VAE trained by vae_mnist: ELBO, "
              "importance-weighted log p(x) and its convergence, "
              "out-of-distribution tables (AUROC with a bootstrap 95% "
              "interval, FPR at 95% TPR, AUPR), posterior uncertainty "
              "maps.\n",
              "Exit status: 0 done; 1 an output file could not be written; "
              "2 bad flags or input (data, checkpoint). A closed standard "
              "output (| head) does not stop it: a note on stderr, the files "
              "are written to --out, exit status 0.\n");
    if (!o.checkpoint)
        cli_usage_error("--checkpoint FILE is required");
    if (!o.data[0] || !o.out[0] || (o.ood && !o.ood[0]))
        cli_usage_error("--data, --ood-data and --out need a folder name");
    if (o.ood && !strcmp(o.ood, "none")) /* as bnn_mnist takes it */
        o.ood = NULL;
    if (strcmp(o.reference, "train") && strcmp(o.reference, "test"))
        cli_usage_error("--reference: want train or test, got '%s'",
                        o.reference);
    if (strcmp(o.near, "none")) {
        /* every item is a name: an empty one ("rot90,", "rot90,,hflip",
         * "") is refused, not skipped */
        const char *p = o.near;
        for (;;) {
            size_t len = strcspn(p, ",");
            if (!((len == 5 && !strncmp(p, "rot90", 5)) ||
                  (len == 5 && !strncmp(p, "hflip", 5))))
                cli_usage_error("--near-ood: want rot90, hflip (comma-"
                                "separated) or none, got '%s'%s",
                                o.near, len ? "" : " (an empty item)");
            if (!p[len])
                break;
            p += len + 1;
        }
    }
    return o;
}

/* Bad input found after --out was prepared (a model whose ELBO is not
 * finite, a reference that cannot be fitted): exit status 2, and the
 * folder this run created is removed, so that bad input leaves no output. */
static void fail_late(void)
{
    cli_remove_new_out_dir();
    exit(2);
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p) {
        cli_error("out of memory");
        exit(1);
    }
    return p;
}

/* The background model's per-pixel logits from n training images, of the
 * model's likelihood: each pixel's mean, Laplace-smoothed to
 * (sum x + 1) / (n + 2), is lambda for a Bernoulli and the mean of a
 * continuous Bernoulli (its maximum-likelihood fit) for cb. */
static double *fit_background(const float *images, int n, int input,
                              tg_vae_likelihood lik)
{
    double *logit = xcalloc((size_t)input, sizeof(double));
    for (int i = 0; i < n; i++)
        for (int q = 0; q < input; q++)
            logit[q] += images[(size_t)i * input + q];
    for (int q = 0; q < input; q++) {
        double m = (logit[q] + 1.0) / (n + 2.0);
        logit[q] = lik == TG_VAE_CB ? tg_cb_logit_of_mean(m) : log(m / (1 - m));
    }
    return logit;
}

/* log p_bg(x) = sum_q log p(x_q | logit_q) under the VAE decoder's
 * likelihood (for the Bernoulli, the same cross-entropy on grey levels). */
static double background_logp(tg_vae_likelihood lik, const double *logit,
                              const float *x, int input)
{
    double s = 0.0;
    for (int q = 0; q < input; q++)
        s += tg_vae_pixel_loglik(lik, logit[q], x[q]);
    return s;
}

/* log p(x), ELBO and ESS of every image (batches of BATCH, a progress
 * bar), L(x) of its bytes and log p_bg(x); false when L is unavailable (no
 * zlib). */
static bool score_set(tg_tape *tp, const tg_vae *vae, scored *s,
                      const options *o, const double *bg)
{
    int input = vae->cfg.input;
    cli_progress bar;
    cli_progress_start(&bar, (s->n + BATCH - 1) / BATCH);
    double t0 = cli_now();
    for (int i0 = 0; i0 < s->n; i0 += BATCH) {
        int nb = s->n - i0 < BATCH ? s->n - i0 : BATCH;
        tg_iw_opts iw = {.k = o->k,
                         .seed = o->seed,
                         .stream = s->stream + (uint64_t)i0,
                         .ess = s->ess + i0};
        tg_vae_iwae(tp, vae, s->images + (size_t)i0 * input, nb, &iw,
                    s->log_px + i0, s->elbo + i0);
        cli_progress_update(&bar, i0 / BATCH + 1, i0 + nb, -s->log_px[i0]);
    }
    cli_progress_end(&bar);
    s->seconds = cli_now() - t0;
    for (int i = 0; i < s->n; i++)
        if (!isfinite(s->log_px[i]) || !isfinite(s->elbo[i])) {
            cli_error("%s: the model's ELBO of image %d of "
                      "%s is not finite",
                      o->checkpoint, i, s->desc);
            fail_late();
        }

    bool have_L = true;
    uint8_t *bytes = xcalloc((size_t)input, 1);
    for (int i = 0; i < s->n; i++) {
        const float *x = s->images + (size_t)i * input;
        for (int p = 0; p < input; p++)
            bytes[p] = (uint8_t)lrintf(x[p] * 255.0f);
        tg_status st =
            have_L ? tg_complexity_bits(bytes, (size_t)input, &s->L[i]) : TG_OK;
        if (st == TG_ERR_UNSUPPORTED) /* no zlib */
            have_L = false;
        else if (st != TG_OK) /* out of memory: not "this build has no zlib" */
            cli_out_of_memory(tg_errmsg());
        if (!have_L)
            s->L[i] = NAN;
        s->nll_bits[i] = -s->log_px[i] / log(2.0);
        s->log_bg[i] = background_logp(vae->cfg.likelihood, bg, x, input);
    }
    free(bytes);
    return have_L;
}

/* other: the --reference that was not used, offered as the way out */
static void fit_reference(reference *ref, const scored *r, bool have_L,
                          const char *other)
{
    memset(ref, 0, sizeof *ref);
    if (!have_L)
        return;
    double *S = xcalloc((size_t)r->n, sizeof(double));
    double *feat = xcalloc(2 * (size_t)r->n, sizeof(double));
    for (int i = 0; i < r->n; i++) {
        S[i] = r->nll_bits[i] - r->L[i];
        feat[2 * i] = r->nll_bits[i];
        feat[2 * i + 1] = r->L[i];
    }
    /* say which images, which statistic, and what to do (it read
     * "typicality: feature 0 of 20 examples is constant"; images that
     * differ can still share a statistic: 2x2 images compress to one
     * length) */
    const char *bad = NULL;
    if (tg_typical_fit(&ref->S, S, r->n, 1) != TG_OK)
        bad = "S(x) = -log2 p(x) - L(x)";
    else if (tg_typical_fit(&ref->L, r->L, r->n, 1) != TG_OK)
        bad = "the compressed length L(x)";
    else if (tg_typical_fit(&ref->joint, feat, r->n, 2) != TG_OK)
        bad = "(-log2 p(x), L(x)) together";
    if (bad) {
        free(S);
        free(feat);
        cli_error("the reference images (%s) cannot fit the typicality "
                  "scores: %s is the same for all of them (%s); it needs "
                  "images on which it varies (another --data, or "
                  "--reference %s)",
                  r->desc, bad, tg_errmsg(), other);
        fail_late();
    }
    free(S);
    free(feat);
}

/* The seven scores of s against the reference. */
static void derive_scores(scored *s, bool have_L, const reference *ref)
{
    for (int i = 0; i < s->n; i++) {
        double S = s->nll_bits[i] - s->L[i];
        double f[2] = {s->nll_bits[i], s->L[i]};
        s->score[SC_ELBO][i] = -s->elbo[i];
        s->score[SC_NLL][i] = -s->log_px[i];
        s->score[SC_S][i] = S;
        s->score[SC_S2][i] = have_L ? tg_typical_score(&ref->S, &S) : NAN;
        s->score[SC_L2][i] = have_L ? tg_typical_score(&ref->L, &s->L[i]) : NAN;
        s->score[SC_LR][i] = s->log_bg[i] - s->log_px[i];
        s->score[SC_DOSE][i] = have_L ? tg_typical_score(&ref->joint, f) : NAN;
    }
}

int main(int argc, char **argv)
{
    cli_prog = "vae_score";
    cli_one_process();
    cli_stop_cleanly();
    options o = parse_options(argc, argv);
    tg_set_threads(o.threads);
    if (!cli_check_out_dir(o.out))
        return 1;
    inputs in;
    load_inputs(&in, &o);
    set_list sl;
    make_sets(&sl, &in, &o);
    /* only now, with the inputs accepted: bad input leaves no output. An
     * output name taken by a folder, a FIFO or a dangling link is refused
     * before the scoring, not after it with the other files replaced */
    static const char *const outputs[] = {"ood_metrics.csv", "convergence.csv",
                                          "ood_hist.svg",    "uncertainty.png",
                                          "scores.csv",      "latent.svg"};
    int n_outputs = in.vae->cfg.latent == 2 ? 6 : 5;
    if (!cli_prepare_out_dir(o.out) ||
        !cli_check_outputs(o.out, outputs, n_outputs) ||
        (n_outputs == 5 &&
         !cli_remove_stale_output(o.out, "latent.svg",
                                  "an earlier run's picture (this "
                                  "checkpoint's latent is not 2-D)"))) {
        free_sets(&sl);
        free_inputs(&in);
        return 1;
    }
    print_model(&o, in.vae);

    /* score every set */
    const tg_vae *vae = in.vae;
    double *bg = fit_background(in.train.images, sl.n_bg, vae->cfg.input,
                                vae->cfg.likelihood);
    tg_tape *tp = tg_tape_new();
    bool have_L = true;
    convergence conv[MAX_SETS];
    for (int g = 0; g < sl.n; g++) {
        if (!score_set(tp, vae, &sl.set[g], &o, bg))
            have_L = false;
        print_set(&sl.set[g], o.k, o.min_ess, &conv[g]);
    }
    reference rs;
    const scored *rset = sl.ref ? sl.ref : sl.in;
    fit_reference(&rs, rset, have_L, sl.ref ? "test" : "train");
    print_reference(&rs, rset, sl.ref ? sl.ref_kind : NULL, have_L, vae,
                    sl.n_bg, o.data);
    for (int g = 0; g < sl.n; g++)
        derive_scores(&sl.set[g], have_L, &rs);

    /* the report */
    double first_auc[N_SCORES];
    const char *first_ood = write_ood_tables(&sl, &o, first_auc);
    write_convergence(&sl, conv, &o);
    scored *shown[MAX_SETS];
    int n_shown = pictured_sets(&sl, shown);
    write_histograms(shown, n_shown, have_L, first_auc, first_ood, &o);
    write_uncertainty(tp, vae, shown, n_shown, &o);
    if (vae->cfg.latent == 2)
        write_latent(tp, vae, sl.in, cli_path(o.out, "latent.svg"));
    write_scores_csv(&sl, &o);
    printf("wrote %s/{scores.csv, ood_metrics.csv, convergence.csv, "
           "ood_hist.svg, uncertainty.png%s}\n",
           o.out, vae->cfg.latent == 2 ? ", latent.svg" : "");
    cli_flush_stdout(false);

    free_sets(&sl);
    free(bg);
    tg_tape_free(tp);
    free_inputs(&in);
    return 0;
}
