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

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

enum { BATCH = 50 };
static const uint64_t STREAM_UNIT = 1ull << 40;

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

static bool near_wanted(const options *o, const char *name)
{
    const char *p = o->near;
    size_t n = strlen(name);
    while (*p) {
        size_t len = strcspn(p, ",");
        if (len == n && !strncmp(p, name, n))
            return true;
        p += len + (p[len] == ',');
    }
    return false;
}

/* Bad input found after --out was prepared (a model whose ELBO is not
 * finite, a reference that cannot be fitted): exit status 2, and the
 * folder this run created is removed, so that bad input leaves no output. */
static void fail_late(void)
{
    cli_remove_new_out_dir();
    exit(2);
}

static void fail_data(void)
{
    cli_error("%s", tg_errmsg());
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

/* What vae_score reads: the model, and the images of --data (test and
 * training sets) and --ood-data (its test set; ood.n == 0 without it). */
typedef struct inputs {
    tg_vae *vae;
    int holdout;    /* training images vae_mnist --holdout kept out, or 0 */
    int rows, cols; /* the images it was trained on, or 0 if unknown */
    /* the checkpoint's training images against --data's (its fingerprint
     * of what it trained on: the training set less the held-out images) */
    enum { DATA_UNKNOWN, DATA_SAME, DATA_OTHER } data;
    tg_dataset test, train, ood;
} inputs;

/* The VAE the checkpoint describes, with its weights (checked finite), how
 * many training images vae_mnist --holdout kept out (0 if none), and the
 * geometry of the images it was trained on: its data fingerprint's ("train
 * NxRxC ..."), else a conv model's side (else 0, unknown). */
static tg_vae *load_model(const char *path, int *holdout, int *rows, int *cols,
                          char train_fp[TG_FINGERPRINT_MAX])
{
    tg_vae *vae;
    tg_vae_info info;
    tg_status st = tg_vae_open(path, &vae, &info);
    if (st == TG_ERR_NOMEM) /* not a bad checkpoint */
        cli_out_of_memory(tg_errmsg());
    if (st != TG_OK)
        fail_data();
    /* An absent 'likelihood' means a Bernoulli only in files from before
     * it; vae_mnist's files with 'shards' (newer) all have it, as its
     * --resume requires (a continuous Bernoulli model whose key was lost
     * was scored as a Bernoulli one) */
    if (tg_meta_get(&info.meta, "shards") &&
        !tg_meta_get(&info.meta, "likelihood")) {
        cli_error("%s: metadata 'likelihood' is missing (every file with "
                  "'shards' has it)",
                  path);
        exit(2);
    }
    /* absent (vae_mnist before --holdout): 0; present, it must be a count
     * (a damaged value read as 0 silently changed the reference images) */
    int64_t h = 0;
    const char *v = tg_meta_get(&info.meta, "holdout");
    if (v && (tg_meta_get_int(&info.meta, "holdout", &h) != TG_OK || h < 0 ||
              h > (1 << 30))) {
        cli_error("%s: metadata 'holdout' is '%.40s', not a number "
                  "of images in 0..%d",
                  path, v, 1 << 30);
        exit(2);
    }
    *holdout = (int)h;
    const char *fp = tg_meta_get(&info.meta, "data");
    /* "train <fingerprint>; test <fingerprint>" */
    train_fp[0] = '\0';
    const char *end = fp ? strstr(fp, "; test ") : NULL;
    if (fp && !strncmp(fp, "train ", 6) && end &&
        end - (fp + 6) < TG_FINGERPRINT_MAX) {
        memcpy(train_fp, fp + 6, (size_t)(end - (fp + 6)));
        train_fp[end - (fp + 6)] = '\0';
    }
    *rows = *cols = 0;
    if (!fp || sscanf(fp, "train %*dx%9dx%9d", rows, cols) != 2 || *rows < 1 ||
        *cols < 1 || (long long)*rows * *cols != vae->cfg.input) {
        int side = (int)lround(sqrt((double)vae->cfg.input));
        *rows = *cols = vae->cfg.arch == TG_VAE_CONV ? side : 0;
    }
    return vae;
}

static void load_data(tg_dataset *ds, const char *dir, bool train, bool ood,
                      const inputs *in, const char *checkpoint)
{
    const tg_vae *vae = in->vae;
    /* no set needs labels; an OOD set may be an images file */
    bool loaded;
    if (ood) {
        tg_status st = tg_idx_images_load(dir, false, ds);
        if (st == TG_ERR_NOMEM) /* not bad data */
            cli_out_of_memory(tg_errmsg());
        loaded = st == TG_OK;
    } else {
        loaded = cli_load_unlabelled(dir, train, ds);
    }
    if (!loaded) {
        if (train)
            cli_error("%s (the training images give the "
                      "reference statistics and the background model)",
                      tg_errmsg());
        else
            cli_error("%s", tg_errmsg());
        exit(2);
    }
    if (ds->rows * ds->cols != vae->cfg.input) {
        cli_error("%s: images are %dx%d but the model takes %d "
                  "pixels",
                  dir, ds->rows, ds->cols, vae->cfg.input);
        exit(2);
    }
    /* the same pixels in another geometry (14x56 for 28x28) scored without
     * a word: a conv model read them as 28 rows of 28 */
    if (in->rows && (ds->rows != in->rows || ds->cols != in->cols)) {
        cli_error("%s: images are %dx%d but %s was trained on %dx%d "
                  "images",
                  dir, ds->rows, ds->cols, checkpoint, in->rows, in->cols);
        exit(2);
    }
}

/* A set scored beside the in-distribution test set has its geometry, not
 * only its number of pixels (14x56 is not 28x28). */
static void same_geometry(const tg_dataset *ds, const char *dir,
                          const char *what, const tg_dataset *test)
{
    if (ds->rows != test->rows || ds->cols != test->cols) {
        cli_error("%s: %s images are %dx%d, the in-distribution "
                  "test images %dx%d",
                  dir, what, ds->rows, ds->cols, test->rows, test->cols);
        exit(2);
    }
}

static void load_inputs(inputs *in, const options *o)
{
    memset(in, 0, sizeof *in);
    char trained_fp[TG_FINGERPRINT_MAX];
    in->vae = load_model(o->checkpoint, &in->holdout, &in->rows, &in->cols,
                         trained_fp);
    load_data(&in->test, o->data, false, false, in, o->checkpoint);
    load_data(&in->train, o->data, true, false, in, o->checkpoint);
    if (in->holdout >= in->train.n) {
        cli_error("%s: metadata 'holdout' says %d training images "
                  "were kept out of training, but %s has only %d: not the data "
                  "it was trained on",
                  o->checkpoint, in->holdout, o->data, in->train.n);
        exit(2);
    }
    /* the images it trained on: --data's training set less the held-out
     * ones. Other data is scored (how a model sees another set is a fair
     * question), but its images are not called held out or seen. */
    in->data = DATA_UNKNOWN;
    char here[TG_FINGERPRINT_MAX];
    if (trained_fp[0]) {
        tg_dataset trained = in->train;
        trained.n -= in->holdout;
        tg_dataset_fingerprint(&trained, here);
        in->data = strcmp(here, trained_fp) ? DATA_OTHER : DATA_SAME;
    }
    if (in->data == DATA_OTHER) {
        /* on stdout, with the report (stderr keeps one line for a
         * failure) */
        printf("note: %s was trained on other data (%s) than those of %s "
               "(%s): its reference images are not from the data it was "
               "trained on\n",
               o->checkpoint, trained_fp, o->data, here);
        in->holdout = 0; /* not these images' */
    }
    cli_note_labels(&in->test, o->data, false, 10,
                    "labels only colour latent.svg (modulo 10) and are "
                    "copied to scores.csv");
    same_geometry(&in->train, o->data, "training", &in->test);
    if (o->ood) {
        load_data(&in->ood, o->ood, false, true, in, o->checkpoint);
        same_geometry(&in->ood, o->ood, "test", &in->test);
        cli_note_labels(&in->ood, o->ood, false, 10,
                        "labels are only copied to scores.csv");
    }
}

static void free_inputs(inputs *in)
{
    tg_dataset_free(&in->test);
    tg_dataset_free(&in->train);
    tg_dataset_free(&in->ood);
    tg_vae_free(in->vae);
}

static scored *add_set(set_list *sl, const char *name, const float *images,
                       const uint8_t *labels, int n, int rows, int cols,
                       uint64_t tag, bool ood)
{
    scored *s = &sl->set[sl->n++];
    memset(s, 0, sizeof *s);
    s->name = name;
    snprintf(s->label, sizeof s->label, "%s", name);
    s->images = images;
    s->labels = labels;
    s->n = n;
    s->side_r = rows;
    s->side_c = cols;
    s->stream = tag * STREAM_UNIT;
    s->ood = ood;
    double **arrays[] = {&s->log_px, &s->elbo,     &s->ess,
                         &s->L,      &s->nll_bits, &s->log_bg};
    for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; i++)
        *arrays[i] = xcalloc((size_t)n, sizeof(double));
    for (int i = 0; i < N_SCORES; i++)
        s->score[i] = xcalloc((size_t)n, sizeof(double));
    return s;
}

/* The near-OOD images: each test image rotated 90 degrees anticlockwise
 * (square images) or flipped left-right. */
static float *transformed(const tg_dataset *ds, int n, bool rot)
{
    int r = ds->rows, c = ds->cols;
    float *out = xcalloc((size_t)n * r * c, sizeof(float));
    for (int i = 0; i < n; i++) {
        const float *src = ds->images + (size_t)i * r * c;
        float *dst = out + (size_t)i * r * c;
        for (int y = 0; y < r; y++)
            for (int x = 0; x < c; x++)
                dst[y * c + x] =
                    rot ? src[x * c + (c - 1 - y)] : src[y * c + (c - 1 - x)];
    }
    return out;
}

/* The reference: the last n_ref training images (those vae_mnist --holdout
 * kept out of training, when it did); the background model is fitted on
 * the training images before them. */
static void add_reference(set_list *sl, const inputs *in, const options *o)
{
    const tg_dataset *train = &in->train;
    int n_ref = in->holdout ? in->holdout : o->ref_images;
    /* what set n_ref, named when it is too small (the message blamed the
     * training set, 256 images, for --max-images 2) */
    char why[64];
    snprintf(why, sizeof why,
             in->holdout ? "the checkpoint's --holdout %d" : "--ref-images %d",
             n_ref);
    if (o->max_images && n_ref > o->max_images) {
        n_ref = o->max_images;
        snprintf(why, sizeof why, "--max-images %d", n_ref);
    }
    if (n_ref < 3 && n_ref <= train->n / 2) {
        cli_error("%s leaves %d reference images, fewer than 3", why, n_ref);
        exit(2);
    }
    if (n_ref > train->n / 2)
        n_ref = train->n / 2;
    if (n_ref < 3) {
        cli_error("%s: %d training images are too few for a "
                  "reference and a background model",
                  o->data, train->n);
        exit(2);
    }
    sl->n_bg = train->n - n_ref;
    if (strcmp(o->reference, "train")) {
        /* the reference is the scored test set: too few images were found
         * after scoring every set, blaming images "that differ" */
        if (sl->in->n < 3) {
            cli_error("--reference test: the test set of %s has %d "
                      "images, fewer than 3",
                      o->data, sl->in->n);
            exit(2);
        }
        return;
    }
    int n_bg = sl->n_bg, input = in->vae->cfg.input;
    sl->ref = add_set(sl, "ref", train->images + (size_t)n_bg * input,
                      train->labels ? train->labels + n_bg : NULL, n_ref,
                      in->test.rows, in->test.cols, 4, false);
    sl->ref_kind = in->data == DATA_OTHER ? "not the checkpoint's training data"
                   : in->holdout >= n_ref ? "held out of training"
                                          : "seen in training";
    snprintf(sl->ref->desc, sizeof sl->ref->desc,
             "training images %d..%d of %s (the reference, %s)", n_bg,
             train->n - 1, o->data, sl->ref_kind);
}

/* The test set of --ood-data (or the images of the file it names),
 * labelled "ood: <the last name of its path>" in the pictures (letters,
 * digits, . _ - only). */
static void add_ood(set_list *sl, const tg_dataset *ds, const options *o)
{
    int n = o->max_images && o->max_images < ds->n ? o->max_images : ds->n;
    scored *s = add_set(sl, "ood", ds->images, ds->labels, n, ds->rows,
                        ds->cols, 1, true);
    struct stat st;
    bool file = stat(o->ood, &st) == 0 && !S_ISDIR(st.st_mode);
    snprintf(s->desc, sizeof s->desc, "the %s of %s",
             file ? "images" : "test set", o->ood);
    const char *base = o->ood + strlen(o->ood);
    while (base > o->ood && base[-1] == '/')
        base--;
    const char *end = base;
    while (base > o->ood && base[-1] != '/')
        base--;
    int len = (int)(end - base) > 30 ? 30 : (int)(end - base);
    snprintf(s->label, sizeof s->label, "ood: %.*s", len, base);
    for (char *c = s->label + 5; *c; c++)
        if (!isalnum((unsigned char)*c) && !strchr("._-", *c))
            *c = '_';
}

/* The near-OOD sets --near-ood asks for, from the first n test images. */
static void add_near(set_list *sl, const tg_dataset *test, int n,
                     const options *o)
{
    static const char *const near_names[2] = {"rot90", "hflip"};
    for (int t = 0; t < 2; t++) {
        if (!strcmp(o->near, "none") || !near_wanted(o, near_names[t]))
            continue;
        if (t == 0 && test->rows != test->cols) {
            cli_error("rot90 needs square images, %s has "
                      "%dx%d (use --near-ood hflip)",
                      o->data, test->rows, test->cols);
            exit(2);
        }
        sl->near_img[t] = transformed(test, n, t == 0);
        scored *s = add_set(sl, near_names[t], sl->near_img[t], test->labels, n,
                            test->rows, test->cols, t == 0 ? 8 : 12, true);
        snprintf(s->desc, sizeof s->desc, "the test images %s",
                 t == 0 ? "rotated 90 degrees anticlockwise"
                        : "flipped left-right");
    }
}

/* The sets to score, in order: in, ref, ood, rot90, hflip. */
static void make_sets(set_list *sl, const inputs *in, const options *o)
{
    memset(sl, 0, sizeof *sl);
    const tg_dataset *test = &in->test;
    int n_in =
        o->max_images && o->max_images < test->n ? o->max_images : test->n;
    sl->in = add_set(sl, "in", test->images, test->labels, n_in, test->rows,
                     test->cols, 0, false);
    snprintf(sl->in->desc, sizeof sl->in->desc, "the test set of %s", o->data);
    snprintf(sl->in->label, sizeof sl->in->label, "in-distribution");
    add_reference(sl, in, o);
    if (o->ood)
        add_ood(sl, &in->ood, o);
    add_near(sl, test, n_in, o);
}

static void free_sets(set_list *sl)
{
    for (int g = 0; g < sl->n; g++) {
        scored *s = &sl->set[g];
        free(s->log_px);
        free(s->elbo);
        free(s->ess);
        free(s->L);
        free(s->nll_bits);
        free(s->log_bg);
        for (int c = 0; c < N_SCORES; c++)
            free(s->score[c]);
    }
    free(sl->near_img[0]);
    free(sl->near_img[1]);
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
