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
#include <ctype.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "font.h"
#include "png.h"
#include "score_plots.h"
#include "tapegrad.h"

#ifndef TG_DEFAULT_DATA_DIR
#define TG_DEFAULT_DATA_DIR "data/mnist"
#endif

typedef struct options {
    const char *checkpoint, *data, *ood, *out, *near, *reference;
    int k, threads, max_images, samples, ref_images, resamples;
    double min_ess;
    uint64_t seed;
} options;

enum {
    N_SCORES = 7,
    MAX_SETS = 5, /* test, reference, --ood-data, rot90, hflip */
    BATCH = 50,
    UNC_SHOW = 8,
    UNC_AVG = 1000
};
enum { SC_ELBO, SC_NLL, SC_S, SC_S2, SC_L2, SC_LR, SC_DOSE };
static const char *const SCORE_NAMES[N_SCORES] = {"-ELBO",
                                                  "-log p(x)",
                                                  "S(x)",
                                                  "|S| two-sided",
                                                  "|L| two-sided",
                                                  "-LR background",
                                                  "DoSE (-log2 p, L)"};
/* column names in scores.csv, the same order */
static const char *const SCORE_KEYS[N_SCORES] = {
    "neg_elbo",    "neg_log_px", "S",   "S_two_sided",
    "L_two_sided", "neg_lr_bg",  "dose"};
static const uint64_t STREAM_UNIT = 1ull << 40, PIX_OFFSET = 1ull << 41;
/* the std heat map: black at 0, pale yellow at STD_MAX and above */
#define STD_MAX 0.25f
/* an estimate has not converged when its weights' ESS is below this */
#define DEFAULT_MIN_ESS 10.0

/* One scored set of images; the arrays are [n]. */
typedef struct scored {
    const char *name; /* in scores.csv and the tables */
    char label[48];   /* in the pictures */
    char desc[160];   /* where the images come from */
    const float *images;
    const uint8_t *labels;
    int n, side_r, side_c;
    uint64_t stream;
    bool ood; /* scored against the in-distribution test set */
    double *log_px, *elbo, *ess, *L, *nll_bits, *log_bg;
    double *score[N_SCORES];
    double seconds, mean_std;
} scored;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vae_score --checkpoint FILE [options]\n"
            "Scores test images with a VAE trained by vae_mnist: ELBO, "
            "importance-weighted\nlog p(x) and its convergence, "
            "out-of-distribution tables (AUROC with a bootstrap\n95%% "
            "interval, FPR at 95%% TPR, AUPR), posterior uncertainty "
            "maps.\n\n"
            "  --checkpoint FILE  checkpoint.safetensors from vae_mnist\n"
            "  --data DIR         in-distribution IDX folder: its test set "
            "is scored, its\n"
            "                     training images give the reference and "
            "the background\n"
            "                     model (default %s)\n"
            "  --ood-data DIR     IDX folder whose test set is scored as "
            "out-of-distribution\n"
            "  --near-ood LIST    near-OOD sets made from the test images: "
            "rot90, hflip,\n"
            "                     comma-separated, or none (default "
            "rot90,hflip)\n"
            "  --reference R      where the reference statistics come from: "
            "train (the last\n"
            "                     --ref-images training images, default) or "
            "test (the\n"
            "                     in-distribution test set itself)\n"
            "  --ref-images N     reference images (default 1000, or a "
            "--holdout checkpoint's\n"
            "                     held-out images; at most "
            "--max-images\n"
            "                     and half the training set)\n"
            "  --iwae-k K         importance samples per image (default 100)\n"
            "  --min-ess X        an estimate whose weights' effective "
            "sample size is below X\n"
            "                     counts as not converged (default %g)\n"
            "  --bootstrap B      bootstrap resamples of each AUROC interval "
            "(default 1000)\n"
            "  --max-images N     score the first N images of each test set\n"
            "  --samples S        posterior draws per uncertainty map "
            "(default 100)\n"
            "  --seed N           seed of the noise (default 1)\n"
            "  --threads N        threads, 0 = all cores (default 0)\n"
            "  --out DIR          output folder (default out/vae_score)\n"
            "  --help, --version\n",
            TG_DEFAULT_DATA_DIR, DEFAULT_MIN_ESS);
}

static options parse_options(int argc, char **argv)
{
    options o = {.data = TG_DEFAULT_DATA_DIR,
                 .out = "out/vae_score",
                 .near = "rot90,hflip",
                 .reference = "train",
                 .k = 100,
                 .samples = 100,
                 .ref_images = 1000,
                 .resamples = 1000,
                 .seed = 1};
    float min_ess = (float)DEFAULT_MIN_ESS;
    const cli_flag flags[] = {
        {"checkpoint", CLI_STR, &o.checkpoint, 0, 0},
        {"data", CLI_STR, &o.data, 0, 0},
        {"ood-data", CLI_STR, &o.ood, 0, 0},
        {"near-ood", CLI_STR, &o.near, 0, 0},
        {"reference", CLI_STR, &o.reference, 0, 0},
        {"ref-images", CLI_INT, &o.ref_images, 2, 1 << 30},
        {"iwae-k", CLI_INT, &o.k, 1, 10000000},
        {"min-ess", CLI_FLOAT, &min_ess, 0, 1e9},
        {"bootstrap", CLI_INT, &o.resamples, 2, 1000000},
        {"max-images", CLI_INT, &o.max_images, 1, 1 << 30},
        {"samples", CLI_INT, &o.samples, 1, 1000000},
        {"seed", CLI_U64, &o.seed, 0, 0},
        {"threads", CLI_INT, &o.threads, 0, 1024},
        {"out", CLI_STR, &o.out, 0, 0},
    };
    cli_parse_flags(argc, argv, flags, sizeof flags / sizeof flags[0], usage);
    o.min_ess = min_ess;
    if (!o.checkpoint)
        cli_usage_error("--checkpoint FILE is required");
    if (!o.data[0] || !o.out[0] || (o.ood && !o.ood[0]))
        cli_usage_error("--data, --ood-data and --out need a folder name");
    if (strcmp(o.reference, "train") && strcmp(o.reference, "test"))
        cli_usage_error("--reference: want train or test, got '%s'",
                        o.reference);
    if (strcmp(o.near, "none")) {
        const char *p = o.near;
        while (*p) {
            size_t len = strcspn(p, ",");
            if (!((len == 5 && !strncmp(p, "rot90", 5)) ||
                  (len == 5 && !strncmp(p, "hflip", 5))))
                cli_usage_error("--near-ood: want rot90, hflip (comma-"
                                "separated) or none, got '%s'",
                                o.near);
            p += len + (p[len] == ',');
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

static void fail_data(void)
{
    fprintf(stderr, "vae_score: %s\n", tg_errmsg());
    exit(2);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p) {
        fprintf(stderr, "vae_score: out of memory\n");
        exit(1);
    }
    return p;
}

/* The VAE the checkpoint describes, with its weights (checked finite), and
 * how many training images vae_mnist --holdout kept out (0 if none). */
static tg_vae *load_model(const char *path, int *holdout)
{
    tg_vae *vae;
    tg_vae_info info;
    if (tg_vae_open(path, &vae, &info) != TG_OK)
        fail_data();
    int64_t h = 0;
    if (tg_meta_get_int(&info.meta, "holdout", &h) != TG_OK || h < 0 ||
        h > (1 << 30))
        h = 0;
    *holdout = (int)h;
    return vae;
}

static void load_data(tg_dataset *ds, const char *dir, bool train,
                      const tg_vae *vae)
{
    if (tg_mnist_load(dir, train, ds) != TG_OK) {
        if (train)
            fprintf(stderr,
                    "vae_score: %s (the training images give the "
                    "reference statistics and the background model)\n",
                    tg_errmsg());
        else
            fprintf(stderr, "vae_score: %s\n", tg_errmsg());
        exit(2);
    }
    if (ds->rows * ds->cols != vae->cfg.input) {
        fprintf(stderr,
                "vae_score: %s: images are %dx%d but the model takes %d "
                "pixels\n",
                dir, ds->rows, ds->cols, vae->cfg.input);
        exit(2);
    }
}

static void init_set(scored *s, const char *name, const float *images,
                     const uint8_t *labels, int n, int rows, int cols,
                     uint64_t tag, bool ood)
{
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
            fprintf(stderr,
                    "vae_score: %s: the model's ELBO of image %d of "
                    "%s is not finite\n",
                    o->checkpoint, i, s->desc);
            rmdir(o->out); /* ours if empty: no empty folder left behind */
            exit(2);
        }

    bool have_L = true;
    uint8_t *bytes = xcalloc((size_t)input, 1);
    for (int i = 0; i < s->n; i++) {
        const float *x = s->images + (size_t)i * input;
        for (int p = 0; p < input; p++)
            bytes[p] = (uint8_t)lrintf(x[p] * 255.0f);
        if (have_L &&
            tg_complexity_bits(bytes, (size_t)input, &s->L[i]) != TG_OK)
            have_L = false;
        if (!have_L)
            s->L[i] = NAN;
        s->nll_bits[i] = -s->log_px[i] / log(2.0);
        s->log_bg[i] = background_logp(vae->cfg.likelihood, bg, x, input);
    }
    free(bytes);
    return have_L;
}

static double mean_of(const double *v, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += v[i];
    return s / n;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Reference statistics, fitted on the reference set only. */
typedef struct reference {
    tg_typical S, L, joint;
} reference;

static void fit_reference(reference *ref, const scored *r, bool have_L)
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
    if (tg_typical_fit(&ref->S, S, r->n, 1) != TG_OK ||
        tg_typical_fit(&ref->L, r->L, r->n, 1) != TG_OK ||
        tg_typical_fit(&ref->joint, feat, r->n, 2) != TG_OK)
        fail_data();
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

/* Convergence of the log p(x) estimates of a set. */
typedef struct convergence {
    double ess_mean, ess_median, ess_min, below, se_mean, se_max;
} convergence;

static convergence converge(const scored *s, int k, double min_ess)
{
    convergence c = {0};
    double *e = xcalloc((size_t)s->n, sizeof(double));
    c.ess_min = INFINITY;
    for (int i = 0; i < s->n; i++) {
        e[i] = s->ess[i];
        c.ess_mean += e[i] / s->n;
        c.ess_min = fmin(c.ess_min, e[i]);
        c.below += (e[i] < min_ess) / (double)s->n;
        double se = tg_iw_log_se(e[i], k);
        c.se_mean += se / s->n;
        c.se_max = fmax(c.se_max, se);
    }
    qsort(e, (size_t)s->n, sizeof *e, cmp_double);
    c.ess_median =
        s->n % 2 ? e[s->n / 2] : 0.5 * (e[s->n / 2 - 1] + e[s->n / 2]);
    free(e);
    return c;
}

/* Mean and std maps of the first n images; returns the average std. */
static double posterior_maps(tg_tape *tp, const tg_vae *vae, const scored *s,
                             int n, const options *o, float *mean, float *std)
{
    tg_vae_posterior_pixels(tp, vae, s->images, n, o->samples, o->seed,
                            s->stream + PIX_OFFSET, mean, std);
    double sum = 0;
    for (size_t i = 0; i < (size_t)n * vae->cfg.input; i++)
        sum += std[i];
    return sum / ((double)n * vae->cfg.input);
}

/* uncertainty.png: a group of three labelled columns (input, mean
 * reconstruction, per-pixel std over the posterior draws) per set, the set
 * named above it, one image per row, and a colour bar with its scale for
 * the std maps. Each pixel drawn 3 x 3. */
static void write_uncertainty_png(const char *path, const scored *const *sets,
                                  const float *const *means,
                                  const float *const *stds, int n_sets,
                                  int rows, int side, int samples)
{
    enum { SCALE = 3, GAP = 3, GROUP_GAP = 18, TOP = 44, BAR_W = 16 };
    static const uint8_t ink[3] = {0, 0, 0}, grey[3] = {90, 90, 90};
    int tile = side * SCALE;
    int group_w = 3 * tile + 2 * GAP;
    int bar_x = GAP + n_sets * group_w + (n_sets - 1) * GROUP_GAP + 16;
    int w = bar_x + BAR_W + 6 + font_text_width("0.25+", 2) + 8;
    char foot[160], lines[4][FONT_LINE];
    snprintf(foot, sizeof foot,
             "mean reconstruction and per-pixel std of the decoded pixels over "
             "%d draws of z from q(z|x)",
             samples);
    int n_lines = font_wrap(foot, 2, w - 2 * GAP, lines, 4);
    int h = TOP + rows * (tile + GAP) + 12 + n_lines * 20;
    uint8_t *rgb = xcalloc((size_t)w * h * 3, 1);
    memset(rgb, 255, (size_t)w * h * 3);
    static const char *const heads[3] = {"input", "mean", "std"};
    for (int g = 0; g < n_sets; g++) {
        int gx = GAP + g * (group_w + GROUP_GAP);
        char label[64];
        snprintf(label, sizeof label, "%s", sets[g]->label);
        int lw = font_text_width(label, 2);
        int lx = gx + (group_w - lw) / 2;
        font_draw(rgb, w, h, lx < gx ? gx : lx, 4, label, 2, ink);
        for (int col = 0; col < 3; col++) {
            int x0 = gx + col * (tile + GAP);
            int hw = font_text_width(heads[col], 2);
            font_draw(rgb, w, h, x0 + (tile - hw) / 2, 24, heads[col], 2, grey);
        }
        for (int r = 0; r < rows && r < sets[g]->n; r++)
            for (int col = 0; col < 3; col++) {
                int x0 = gx + col * (tile + GAP);
                int y0 = TOP + r * (tile + GAP);
                size_t off = (size_t)r * side * side;
                const float *src = col == 0   ? sets[g]->images + off
                                   : col == 1 ? means[g] + off
                                              : stds[g] + off;
                for (int y = 0; y < tile; y++)
                    for (int x = 0; x < tile; x++) {
                        float v = src[(y / SCALE) * side + x / SCALE];
                        uint8_t *px = rgb + ((size_t)(y0 + y) * w + x0 + x) * 3;
                        if (col == 2) {
                            heat_rgb(v / STD_MAX, px);
                        } else {
                            v = v < 0 ? 0 : v > 1 ? 1 : v;
                            px[0] = px[1] = px[2] = (uint8_t)lrintf(v * 255);
                        }
                    }
            }
    }
    /* the colour bar: std 0 at the bottom, STD_MAX (and above) at the top */
    int by0 = TOP, by1 = TOP + rows * (tile + GAP) - GAP;
    for (int y = by0; y < by1; y++) {
        uint8_t c[3];
        heat_rgb((float)(by1 - 1 - y) / (float)(by1 - by0 - 1), c);
        for (int x = bar_x; x < bar_x + BAR_W; x++)
            memcpy(rgb + ((size_t)y * w + x) * 3, c, 3);
    }
    static const char *const ticks[3] = {"0.25+", "0.125", "0"};
    for (int t = 0; t < 3; t++) {
        int y = by0 + t * (by1 - 1 - by0) / 2;
        /* the tick left of the bar, so that it does not read as a minus */
        for (int x = bar_x - 4; x < bar_x; x++)
            memcpy(rgb + ((size_t)y * w + x) * 3, ink, 3);
        int ty = y - 7 + (t == 0 ? 7 : t == 2 ? -7 : 0);
        font_draw(rgb, w, h, bar_x + BAR_W + 6, ty, ticks[t], 2, ink);
    }
    font_draw(rgb, w, h, bar_x - 6, 12, "std", 2, ink);
    for (int l = 0; l < n_lines; l++)
        font_draw(rgb, w, h, GAP, h - 6 - (n_lines - l) * 20, lines[l], 2,
                  grey);
    tg_atomic_file a;
    cli_out_commit(&a, png_write(cli_out_open(&a, path), w, h, 3, rgb));
    free(rgb);
}

/* latent.svg: posterior means of the in-distribution test set by label. */
static void write_latent(tg_tape *tp, const tg_vae *vae, const scored *s,
                         const char *path)
{
    float *z1 = xcalloc((size_t)s->n, sizeof(float));
    float *z2 = xcalloc((size_t)s->n, sizeof(float));
    bool was = tg_tape_set_recording(tp, false);
    int input = vae->cfg.input;
    for (int i0 = 0; i0 < s->n; i0 += 1000) {
        int nb = s->n - i0 < 1000 ? s->n - i0 : 1000;
        tg_tape_reset(tp);
        tg_tensor *x = tg_tape_tensor2(tp, nb, input, false);
        memcpy(x->data, s->images + (size_t)i0 * input,
               sizeof(float) * (size_t)nb * input);
        tg_tensor *mean, *logvar;
        tg_vae_encode(tp, vae, x, &mean, &logvar);
        for (int i = 0; i < nb; i++) {
            z1[i0 + i] = mean->data[2 * i];
            z2[i0 + i] = mean->data[2 * i + 1];
        }
    }
    tg_tape_reset(tp);
    tg_tape_set_recording(tp, was);
    tg_atomic_file a;
    FILE *f = cli_out_open(&a, path);
    cli_out_commit(&a, plot_scatter(f,
                                    "posterior means of the test set by "
                                    "label",
                                    "z1", "z2", z1, z2, s->labels, s->n));
    free(z1);
    free(z2);
}

static void write_csv(const char *path, const scored *const *sets, int n_sets,
                      int k)
{
    tg_atomic_file a;
    FILE *f = cli_out_open(&a, path);
    fprintf(f, "set,index,label,elbo,log_px,ess,log_px_se,L_bits,log_p_bg");
    for (int c = 0; c < N_SCORES; c++)
        fprintf(f, ",%s", SCORE_KEYS[c]);
    fprintf(f, "\n");
    for (int g = 0; g < n_sets; g++) {
        const scored *s = sets[g];
        for (int i = 0; i < s->n; i++) {
            fprintf(f, "%s,%d,%d,%.4f,%.4f,%.3f,%.4f,%.0f,%.4f", s->name, i,
                    s->labels[i], s->elbo[i], s->log_px[i], s->ess[i],
                    tg_iw_log_se(s->ess[i], k), s->L[i], s->log_bg[i]);
            for (int c = 0; c < N_SCORES; c++)
                fprintf(f, ",%.4f", s->score[c][i]);
            fprintf(f, "\n");
        }
    }
    cli_out_commit(&a, true);
}

static void print_set(const scored *s, int k, double min_ess, convergence *c)
{
    *c = converge(s, k, min_ess);
    printf("%s: %d images, %s\n  ELBO %.2f  log p(x) %.2f nats "
           "(IWAE, k = %d; gap %.2f)  %.1f s, %.2f ms/image\n"
           "  convergence: ESS mean %.1f median %.1f min %.2f of k = %d; "
           "%.1f%% below ESS %g (not converged); log p(x) standard error "
           "mean %.3f max %.3f nats\n",
           s->name, s->n, s->desc, mean_of(s->elbo, s->n),
           mean_of(s->log_px, s->n), k,
           mean_of(s->log_px, s->n) - mean_of(s->elbo, s->n), s->seconds,
           1e3 * s->seconds / s->n, c->ess_mean, c->ess_median, c->ess_min, k,
           100.0 * c->below, min_ess, c->se_mean, c->se_max);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    cli_prog = "vae_score";
    options o = parse_options(argc, argv);
    tg_set_threads(o.threads);
    int holdout;
    tg_vae *vae = load_model(o.checkpoint, &holdout);
    bool ref_train = !strcmp(o.reference, "train");
    tg_dataset ds_in, ds_train, ds_ood = {0};
    load_data(&ds_in, o.data, false, vae);
    load_data(&ds_train, o.data, true, vae);
    cli_note_labels(&ds_in, o.data, 10,
                    "labels only colour latent.svg (modulo 10) and are "
                    "copied to scores.csv");
    if (o.ood) {
        load_data(&ds_ood, o.ood, false, vae);
        cli_note_labels(&ds_ood, o.ood, 10,
                        "labels are only copied to scores.csv");
    }
    int input = vae->cfg.input;
    int n_in = o.max_images && o.max_images < ds_in.n ? o.max_images : ds_in.n;
    /* the reference: the last n_ref training images (those vae_mnist
     * --holdout kept out of training, when it did); the background model
     * is fitted on the training images before them */
    int n_ref = holdout ? holdout : o.ref_images;
    if (o.max_images && n_ref > o.max_images)
        n_ref = o.max_images;
    if (n_ref > ds_train.n / 2)
        n_ref = ds_train.n / 2;
    if (n_ref < 3) {
        fprintf(stderr,
                "vae_score: %s: %d training images are too few for a "
                "reference and a background model\n",
                o.data, ds_train.n);
        return 2;
    }
    int n_bg = ds_train.n - n_ref;

    scored sets[MAX_SETS];
    int n_sets = 0;
    scored *in = &sets[n_sets++], *ref = NULL;
    init_set(in, "in", ds_in.images, ds_in.labels, n_in, ds_in.rows, ds_in.cols,
             0, false);
    snprintf(in->desc, sizeof in->desc, "the test set of %s", o.data);
    snprintf(in->label, sizeof in->label, "in-distribution");
    if (ref_train) {
        ref = &sets[n_sets++];
        init_set(ref, "ref", ds_train.images + (size_t)n_bg * input,
                 ds_train.labels + n_bg, n_ref, ds_in.rows, ds_in.cols, 4,
                 false);
        snprintf(ref->desc, sizeof ref->desc,
                 "training images %d..%d of %s (the reference, %s)", n_bg,
                 ds_train.n - 1, o.data,
                 holdout >= n_ref ? "held out of training"
                                  : "seen in training");
    }
    if (o.ood) {
        int n =
            o.max_images && o.max_images < ds_ood.n ? o.max_images : ds_ood.n;
        scored *s = &sets[n_sets++];
        init_set(s, "ood", ds_ood.images, ds_ood.labels, n, ds_ood.rows,
                 ds_ood.cols, 1, true);
        snprintf(s->desc, sizeof s->desc, "the test set of %s", o.ood);
        /* "ood: <the folder's last name>", letters, digits, . _ - only */
        const char *base = o.ood + strlen(o.ood);
        while (base > o.ood && base[-1] == '/')
            base--;
        const char *end = base;
        while (base > o.ood && base[-1] != '/')
            base--;
        int len = (int)(end - base) > 30 ? 30 : (int)(end - base);
        snprintf(s->label, sizeof s->label, "ood: %.*s", len, base);
        for (char *c = s->label + 5; *c; c++)
            if (!isalnum((unsigned char)*c) && !strchr("._-", *c))
                *c = '_';
    }
    float *near_img[2] = {NULL, NULL};
    static const char *const near_names[2] = {"rot90", "hflip"};
    for (int t = 0; t < 2; t++) {
        if (!strcmp(o.near, "none") || !near_wanted(&o, near_names[t]))
            continue;
        if (t == 0 && ds_in.rows != ds_in.cols) {
            fprintf(stderr,
                    "vae_score: rot90 needs square images, %s has "
                    "%dx%d (use --near-ood hflip)\n",
                    o.data, ds_in.rows, ds_in.cols);
            return 2;
        }
        near_img[t] = transformed(&ds_in, n_in, t == 0);
        scored *s = &sets[n_sets++];
        init_set(s, near_names[t], near_img[t], ds_in.labels, n_in, ds_in.rows,
                 ds_in.cols, t == 0 ? 8 : 12, true);
        snprintf(s->desc, sizeof s->desc, "the test images %s",
                 t == 0 ? "rotated 90 degrees anticlockwise"
                        : "flipped left-right");
    }
    if (!cli_prepare_out_dir(o.out))
        return 1;
    printf("vae_score: model %s %d-%d-%d, likelihood %s, from %s, k = %d, "
           "seed %llu, %d threads, gemm %s\n",
           tg_vae_arch_name(vae->cfg.arch), vae->cfg.input, vae->cfg.hidden,
           vae->cfg.latent, tg_vae_likelihood_name(vae->cfg.likelihood),
           o.checkpoint, o.k, (unsigned long long)o.seed, tg_get_threads(),
           tg_gemm_kernel());
    fflush(stdout);

    double *bg =
        fit_background(ds_train.images, n_bg, input, vae->cfg.likelihood);
    tg_tape *tp = tg_tape_new();
    bool have_L = true;
    convergence conv[MAX_SETS];
    for (int g = 0; g < n_sets; g++) {
        if (!score_set(tp, vae, &sets[g], &o, bg))
            have_L = false;
        print_set(&sets[g], o.k, o.min_ess, &conv[g]);
    }

    reference rs;
    const scored *rset = ref ? ref : in;
    fit_reference(&rs, rset, have_L);
    if (have_L)
        printf("reference (%s, n = %d): S mean %.6f sd %.6f; L mean %.6f "
               "sd %.6f; (-log2 p, L) mean [%.6f, %.6f] cov [[%.6f, %.6f], "
               "[%.6f, %.6f]]\n",
               ref ? "held-out training images" : "in-distribution test set",
               rset->n, rs.S.mean[0], sqrt(rs.S.cov[0][0]), rs.L.mean[0],
               sqrt(rs.L.cov[0][0]), rs.joint.mean[0], rs.joint.mean[1],
               rs.joint.cov[0][0], rs.joint.cov[0][1], rs.joint.cov[1][0],
               rs.joint.cov[1][1]);
    else
        printf("complexity L(x): unavailable (this build has no zlib), so "
               "are S(x), the two-sided and DoSE scores\n");
    printf("background model: independent per-pixel %s fitted on "
           "training images 0..%d of %s\n",
           vae->cfg.likelihood == TG_VAE_CB ? "continuous Bernoullis"
                                            : "Bernoullis",
           n_bg - 1, o.data);
    for (int g = 0; g < n_sets; g++)
        derive_scores(&sets[g], have_L, &rs);

    /* the OOD tables and ood_metrics.csv */
    tg_atomic_file am;
    FILE *mf = cli_out_open(&am, cli_path(o.out, "ood_metrics.csv"));
    fprintf(mf, "ood_set,score,n_in,n_ood,auroc,auroc_lo,auroc_hi,fpr95,"
                "aupr\n");
    double first_auc[N_SCORES];
    const char *first_ood = NULL;
    for (int c = 0; c < N_SCORES; c++)
        first_auc[c] = NAN;
    for (int g = 0; g < n_sets; g++) {
        const scored *s = &sets[g];
        if (!s->ood)
            continue;
        printf("OOD set %s (%s, %d images) vs in-distribution test (%d), "
               "higher score = more OOD:\n"
               "  %-20s %-6s %-17s %-6s %-6s\n",
               s->name, s->desc, s->n, in->n, "score", "AUROC",
               "[95% bootstrap]", "FPR95", "AUPR");
        for (int c = 0; c < N_SCORES; c++) {
            double auc = tg_auroc(in->score[c], in->n, s->score[c], s->n);
            if (isnan(auc))
                continue;
            double lo, hi;
            tg_auroc_bootstrap(in->score[c], in->n, s->score[c], s->n,
                               o.resamples, o.seed, 0.95, &lo, &hi);
            double fpr =
                tg_fpr_at_tpr(in->score[c], in->n, s->score[c], s->n, 0.95);
            double ap = tg_aupr(in->score[c], in->n, s->score[c], s->n);
            printf("  %-20s %.4f [%.4f, %.4f] %.4f %.4f\n", SCORE_NAMES[c], auc,
                   lo, hi, fpr, ap);
            fprintf(mf, "%s,%s,%d,%d,%.6f,%.6f,%.6f,%.6f,%.6f\n", s->name,
                    SCORE_KEYS[c], in->n, s->n, auc, lo, hi, fpr, ap);
            if (!first_ood)
                first_auc[c] = auc;
        }
        if (!first_ood)
            first_ood = s->name;
    }
    cli_out_commit(&am, true);

    tg_atomic_file ac;
    FILE *cf = cli_out_open(&ac, cli_path(o.out, "convergence.csv"));
    fprintf(cf, "set,n,k,elbo_mean,log_px_mean,ess_mean,ess_median,ess_min,"
                "min_ess,share_below_min_ess,log_px_se_mean,log_px_se_max\n");
    for (int g = 0; g < n_sets; g++)
        fprintf(cf, "%s,%d,%d,%.4f,%.4f,%.3f,%.3f,%.3f,%g,%.6f,%.5f,%.5f\n",
                sets[g].name, sets[g].n, o.k, mean_of(sets[g].elbo, sets[g].n),
                mean_of(sets[g].log_px, sets[g].n), conv[g].ess_mean,
                conv[g].ess_median, conv[g].ess_min, o.min_ess, conv[g].below,
                conv[g].se_mean, conv[g].se_max);
    cli_out_commit(&ac, true);

    /* histograms: the test set and every OOD set */
    hist_panel panels[N_SCORES];
    const char *set_names[HIST_MAX_SETS];
    const scored *shown[MAX_SETS];
    int n_shown = 0;
    for (int g = 0; g < n_sets && n_shown < HIST_MAX_SETS; g++)
        if (&sets[g] == in || sets[g].ood) {
            shown[n_shown] = &sets[g];
            set_names[n_shown++] = sets[g].label;
        }
    int n_panels = 0;
    for (int c = 0; c < N_SCORES; c++) {
        if (!have_L && c != SC_ELBO && c != SC_NLL && c != SC_LR)
            continue;
        hist_panel *hp = &panels[n_panels++];
        memset(hp, 0, sizeof *hp);
        hp->name = SCORE_NAMES[c];
        hp->auroc = first_auc[c];
        for (int s = 0; s < n_shown; s++) {
            hp->v[s] = shown[s]->score[c];
            hp->n[s] = shown[s]->n;
        }
    }
    tg_atomic_file a;
    cli_out_commit(&a,
                   plot_histograms(cli_out_open(&a, cli_path(o.out, "ood_hist."
                                                                    "svg")),
                                   "scores: in-distribution vs OOD test "
                                   "images (higher = more OOD)",
                                   panels, n_panels, set_names, n_shown,
                                   first_ood, 40));

    /* posterior uncertainty: maps of the first images, average std over up
     * to UNC_AVG images per set */
    float *means[MAX_SETS] = {0}, *stds[MAX_SETS] = {0};
    for (int s = 0; s < n_shown; s++) {
        int n = shown[s]->n < UNC_AVG ? shown[s]->n : UNC_AVG;
        means[s] = xcalloc((size_t)n * input, sizeof(float));
        stds[s] = xcalloc((size_t)n * input, sizeof(float));
        ((scored *)shown[s])->mean_std =
            posterior_maps(tp, vae, shown[s], n, &o, means[s], stds[s]);
    }
    printf("posterior pixel std (S = %d draws of z ~ q(z|x)), average over "
           "pixels and images:",
           o.samples);
    for (int s = 0; s < n_shown; s++)
        printf("%s %s %.4f", s ? "," : "",
               s ? shown[s]->name : "in-distribution", shown[s]->mean_std);
    printf("\n");
    if (in->side_r == in->side_c)
        write_uncertainty_png(cli_path(o.out, "uncertainty.png"), shown,
                              (const float *const *)means,
                              (const float *const *)stds, n_shown, UNC_SHOW,
                              in->side_r, o.samples);
    if (vae->cfg.latent == 2)
        write_latent(tp, vae, in, cli_path(o.out, "latent.svg"));
    const scored *all[MAX_SETS];
    for (int g = 0; g < n_sets; g++)
        all[g] = &sets[g];
    write_csv(cli_path(o.out, "scores.csv"), all, n_sets, o.k);
    printf("wrote %s/{scores.csv, ood_metrics.csv, convergence.csv, "
           "ood_hist.svg, uncertainty.png%s}\n",
           o.out, vae->cfg.latent == 2 ? ", latent.svg" : "");

    for (int s = 0; s < n_shown; s++) {
        free(means[s]);
        free(stds[s]);
    }
    for (int g = 0; g < n_sets; g++) {
        scored *s = &sets[g];
        free(s->log_px);
        free(s->elbo);
        free(s->ess);
        free(s->L);
        free(s->nll_bits);
        free(s->log_bg);
        for (int c = 0; c < N_SCORES; c++)
            free(s->score[c]);
    }
    free(near_img[0]);
    free(near_img[1]);
    free(bg);
    tg_dataset_free(&ds_in);
    tg_dataset_free(&ds_train);
    if (o.ood)
        tg_dataset_free(&ds_ood);
    tg_tape_free(tp);
    tg_vae_free(vae);
    return 0;
}
