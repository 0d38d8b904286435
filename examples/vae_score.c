/* vae_score: what a VAE trained by vae_mnist says about test images.
 *
 * For the in-distribution test set (--data) and optionally a second IDX set
 * (--ood-data) it prints the average ELBO and the importance-weighted
 * log p(x) with k draws from q(z|x), and the AUROC of five scores for telling
 * the second set from the first (higher = more out-of-distribution):
 *   -ELBO, -log p(x)     in nats
 *   S(x)                 -log2 p(x) - L(x), L the deflate size in bits
 *                        (Serra et al. 2020)
 *   |S| two-sided        |S - mean_in(S)| / sd_in(S)
 *   typicality (ours)    Mahalanobis distance of (-log2 p(x), L(x)) from
 *                        their mean and covariance on the in-distribution
 *                        test set: atypical in any direction, on either
 *                        axis or off the in-distribution relation between
 *                        likelihood and complexity
 * The reference statistics come from the in-distribution test set alone and
 * are printed, so a run with and without --ood-data can be compared.
 *
 * Writes scores.csv, ood_hist.svg, uncertainty.png and, for a 2-D latent,
 * latent.svg to --out. Random streams of --seed: IWAE noise of in-
 * distribution image i is stream i, of OOD image i stream 2^40 + i;
 * posterior draws 2^41 + i and 3 * 2^40 + i. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "png.h"
#include "score_plots.h"
#include "tapegrad.h"

#ifndef TG_DEFAULT_DATA_DIR
#define TG_DEFAULT_DATA_DIR "data/mnist"
#endif

typedef struct options {
    const char *checkpoint, *data, *ood, *out;
    int k, threads, max_images, samples;
    uint64_t seed;
} options;

/* One scored test set; the score arrays are [n]. */
typedef struct scored {
    const char *dir;
    tg_dataset ds;
    int n;
    double *log_px, *elbo, *L, *nll_bits;
    double *score[5]; /* SCORE_NAMES order */
    double seconds, mean_std;
} scored;

enum { N_SCORES = 5, BATCH = 50, UNC_SHOW = 8, UNC_AVG = 1000 };
static const char *const SCORE_NAMES[N_SCORES] = {
    "-ELBO", "-log p(x)", "S(x)", "|S| two-sided", "typicality (ours)"};
static const uint64_t OOD_STREAM = 1ull << 40, PIX_STREAM = 1ull << 41;
/* the std heat map: black at 0, pale yellow at STD_MAX and above */
#define STD_MAX 0.25f

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vae_score --checkpoint FILE [options]\n"
            "Scores test images with a VAE trained by vae_mnist: ELBO, "
            "importance-weighted\nlog p(x), out-of-distribution AUROC, "
            "posterior uncertainty maps.\n\n"
            "  --checkpoint FILE  checkpoint.safetensors from vae_mnist\n"
            "  --data DIR         in-distribution IDX folder, test set scored\n"
            "                     (default %s)\n"
            "  --ood-data DIR     IDX folder whose test set is scored as "
            "out-of-distribution\n"
            "  --iwae-k K         importance samples per image (default 100)\n"
            "  --max-images N     score the first N images of each test set\n"
            "  --samples S        posterior draws per uncertainty map "
            "(default 100)\n"
            "  --seed N           seed of the noise (default 1)\n"
            "  --threads N        threads, 0 = all cores (default 0)\n"
            "  --out DIR          output folder (default out/vae_score)\n"
            "  --help, --version\n",
            TG_DEFAULT_DATA_DIR);
}

static options parse_options(int argc, char **argv)
{
    options o = {.data = TG_DEFAULT_DATA_DIR,
                 .out = "out/vae_score",
                 .k = 100,
                 .samples = 100,
                 .seed = 1};
    const cli_flag flags[] = {
        {"checkpoint", CLI_STR, &o.checkpoint, 0, 0},
        {"data", CLI_STR, &o.data, 0, 0},
        {"ood-data", CLI_STR, &o.ood, 0, 0},
        {"iwae-k", CLI_INT, &o.k, 1, 10000000},
        {"max-images", CLI_INT, &o.max_images, 1, 1 << 30},
        {"samples", CLI_INT, &o.samples, 1, 1000000},
        {"seed", CLI_U64, &o.seed, 0, 0},
        {"threads", CLI_INT, &o.threads, 0, 1024},
        {"out", CLI_STR, &o.out, 0, 0},
    };
    cli_parse_flags(argc, argv, flags, sizeof flags / sizeof flags[0], usage);
    if (!o.checkpoint)
        cli_usage_error("--checkpoint FILE is required");
    if (!o.data[0] || !o.out[0] || (o.ood && !o.ood[0]))
        cli_usage_error("--data, --ood-data and --out need a folder name");
    return o;
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

/* The VAE the checkpoint describes, with its weights (checked finite). */
static tg_vae *load_model(const char *path)
{
    tg_vae *vae;
    if (tg_vae_open(path, &vae, NULL) != TG_OK)
        fail_data();
    return vae;
}

static void load_set(scored *s, const char *dir, const tg_vae *vae,
                     int max_images)
{
    memset(s, 0, sizeof *s);
    s->dir = dir;
    if (tg_mnist_load(dir, false, &s->ds) != TG_OK)
        fail_data();
    if (s->ds.rows * s->ds.cols != vae->cfg.input) {
        fprintf(stderr,
                "vae_score: %s: images are %dx%d but the model takes %d "
                "pixels\n",
                dir, s->ds.rows, s->ds.cols, vae->cfg.input);
        exit(2);
    }
    cli_note_labels(&s->ds, dir, 10,
                    "labels only colour latent.svg (modulo 10) and are "
                    "copied to scores.csv");
    s->n = max_images && max_images < s->ds.n ? max_images : s->ds.n;
    s->log_px = xcalloc((size_t)s->n, sizeof(double));
    s->elbo = xcalloc((size_t)s->n, sizeof(double));
    s->L = xcalloc((size_t)s->n, sizeof(double));
    s->nll_bits = xcalloc((size_t)s->n, sizeof(double));
    for (int i = 0; i < N_SCORES; i++)
        s->score[i] = xcalloc((size_t)s->n, sizeof(double));
}

/* log p(x) and ELBO of every image (batches of BATCH, a progress bar), and
 * L(x) of its bytes; false when L is unavailable (no zlib). */
static bool score_set(tg_tape *tp, const tg_vae *vae, scored *s,
                      const options *o, uint64_t stream)
{
    int input = vae->cfg.input;
    cli_progress bar;
    cli_progress_start(&bar, (s->n + BATCH - 1) / BATCH);
    double t0 = cli_now();
    for (int i0 = 0; i0 < s->n; i0 += BATCH) {
        int nb = s->n - i0 < BATCH ? s->n - i0 : BATCH;
        tg_iw_opts iw = {.k = o->k, .seed = o->seed, .stream = stream + i0};
        tg_vae_iwae(tp, vae, s->ds.images + (size_t)i0 * input, nb, &iw,
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
                    o->checkpoint, i, s->dir);
            rmdir(o->out); /* ours if empty: no empty folder left behind */
            exit(2);
        }

    bool have_L = true;
    uint8_t *bytes = xcalloc((size_t)input, 1);
    for (int i = 0; i < s->n; i++) {
        for (int p = 0; p < input; p++)
            bytes[p] =
                (uint8_t)lrintf(s->ds.images[(size_t)i * input + p] * 255.0f);
        if (have_L &&
            tg_complexity_bits(bytes, (size_t)input, &s->L[i]) != TG_OK)
            have_L = false;
        if (!have_L)
            s->L[i] = NAN;
        s->nll_bits[i] = -s->log_px[i] / log(2.0);
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

/* The five scores of s against the in-distribution references. */
static void derive_scores(scored *s, bool have_L, const tg_typical *ref_s,
                          const tg_typical *ref_joint)
{
    for (int i = 0; i < s->n; i++) {
        double S = s->nll_bits[i] - s->L[i];
        double f[2] = {s->nll_bits[i], s->L[i]};
        s->score[0][i] = -s->elbo[i];
        s->score[1][i] = -s->log_px[i];
        s->score[2][i] = S;
        s->score[3][i] = have_L ? tg_typical_score(ref_s, &S) : NAN;
        s->score[4][i] = have_L ? tg_typical_score(ref_joint, f) : NAN;
    }
}

/* Mean and std maps of the first n images; returns the average std. */
static double posterior_maps(tg_tape *tp, const tg_vae *vae, const scored *s,
                             int n, const options *o, uint64_t stream,
                             float *mean, float *std)
{
    tg_vae_posterior_pixels(tp, vae, s->ds.images, n, o->samples, o->seed,
                            stream, mean, std);
    double sum = 0;
    for (size_t i = 0; i < (size_t)n * vae->cfg.input; i++)
        sum += std[i];
    return sum / ((double)n * vae->cfg.input);
}

/* uncertainty.png: one row per image, input | mean | std heat map, the
 * in-distribution images on the left, OOD (when given) on the right. Each
 * pixel drawn 3 x 3. */
static void write_uncertainty_png(const char *path, const scored *sets[2],
                                  const float *means[2], const float *stds[2],
                                  int n_sets, int rows, int side)
{
    enum { SCALE = 3, GAP = 2, GROUP_GAP = 12 };
    int tile = side * SCALE;
    int group_w = 3 * tile + 2 * GAP;
    int w = GAP + n_sets * group_w + (n_sets - 1) * GROUP_GAP + GAP;
    int h = GAP + rows * (tile + GAP);
    uint8_t *rgb = xcalloc((size_t)w * h * 3, 1);
    memset(rgb, 255, (size_t)w * h * 3);
    for (int g = 0; g < n_sets; g++)
        for (int r = 0; r < rows && r < sets[g]->n; r++)
            for (int col = 0; col < 3; col++) {
                int x0 = GAP + g * (group_w + GROUP_GAP) + col * (tile + GAP);
                int y0 = GAP + r * (tile + GAP);
                size_t off = (size_t)r * side * side;
                const float *src = col == 0   ? sets[g]->ds.images + off
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
        memcpy(x->data, s->ds.images + (size_t)i0 * input,
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
                                    "z1", "z2", z1, z2, s->ds.labels, s->n));
    free(z1);
    free(z2);
}

static void write_csv(const char *path, const scored *sets[2], int n_sets)
{
    tg_atomic_file a;
    FILE *f = cli_out_open(&a, path);
    fprintf(f, "set,index,label,elbo,log_px,L_bits,S,S_two_sided,"
               "typicality\n");
    for (int g = 0; g < n_sets; g++)
        for (int i = 0; i < sets[g]->n; i++)
            fprintf(f, "%s,%d,%d,%.4f,%.4f,%.0f,%.4f,%.4f,%.4f\n",
                    g ? "ood" : "in", i, sets[g]->ds.labels[i],
                    sets[g]->elbo[i], sets[g]->log_px[i], sets[g]->L[i],
                    sets[g]->score[2][i], sets[g]->score[3][i],
                    sets[g]->score[4][i]);
    cli_out_commit(&a, true);
}

static void print_set(const char *what, const scored *s, int k)
{
    printf("%s: %d images from %s\n  ELBO %.2f  log p(x) %.2f nats "
           "(IWAE, k = %d; gap %.2f)  %.1f s, %.2f ms/image\n",
           what, s->n, s->dir, mean_of(s->elbo, s->n), mean_of(s->log_px, s->n),
           k, mean_of(s->log_px, s->n) - mean_of(s->elbo, s->n), s->seconds,
           1e3 * s->seconds / s->n);
}

int main(int argc, char **argv)
{
    cli_prog = "vae_score";
    options o = parse_options(argc, argv);
    tg_set_threads(o.threads);
    tg_vae *vae = load_model(o.checkpoint);
    scored in, ood = {0};
    load_set(&in, o.data, vae, o.max_images);
    if (o.ood)
        load_set(&ood, o.ood, vae, o.max_images);
    if (!cli_prepare_out_dir(o.out))
        return 1;
    printf("vae_score: model %s %d-%d-%d, likelihood %s, from %s, k = %d, "
           "seed %llu, %d threads, gemm %s\n",
           tg_vae_arch_name(vae->cfg.arch), vae->cfg.input, vae->cfg.hidden,
           vae->cfg.latent, tg_vae_likelihood_name(vae->cfg.likelihood),
           o.checkpoint, o.k, (unsigned long long)o.seed, tg_get_threads(),
           tg_gemm_kernel());
    fflush(stdout);

    tg_tape *tp = tg_tape_new();
    bool have_L = score_set(tp, vae, &in, &o, 0);
    print_set("in-distribution test", &in, o.k);
    fflush(stdout);
    if (o.ood) {
        score_set(tp, vae, &ood, &o, OOD_STREAM);
        print_set("out-of-distribution test", &ood, o.k);
    }

    /* reference statistics: the in-distribution test set only */
    tg_typical ref_s = {0}, ref_joint = {0};
    if (have_L) {
        double *feat = xcalloc(2 * (size_t)in.n, sizeof(double));
        for (int i = 0; i < in.n; i++) {
            feat[2 * i] = in.nll_bits[i];
            feat[2 * i + 1] = in.L[i];
            in.score[2][i] = in.nll_bits[i] - in.L[i];
        }
        if (tg_typical_fit(&ref_s, in.score[2], in.n, 1) != TG_OK ||
            tg_typical_fit(&ref_joint, feat, in.n, 2) != TG_OK)
            fail_data();
        free(feat);
        printf("reference (in-distribution test only, n = %d): S mean %.6f "
               "sd %.6f; (-log2 p, L) mean [%.6f, %.6f] cov [[%.6f, %.6f], "
               "[%.6f, %.6f]]\n",
               in.n, ref_s.mean[0], sqrt(ref_s.cov[0][0]), ref_joint.mean[0],
               ref_joint.mean[1], ref_joint.cov[0][0], ref_joint.cov[0][1],
               ref_joint.cov[1][0], ref_joint.cov[1][1]);
    } else {
        printf("complexity L(x): unavailable (this build has no zlib), so "
               "are S(x) and the typicality scores\n");
    }
    derive_scores(&in, have_L, &ref_s, &ref_joint);
    if (o.ood)
        derive_scores(&ood, have_L, &ref_s, &ref_joint);

    hist_panel panels[N_SCORES];
    int n_panels = have_L ? N_SCORES : 2;
    if (o.ood)
        printf("AUROC, %s (positive) vs %s, higher score = more OOD:\n", o.ood,
               o.data);
    for (int c = 0; c < n_panels; c++) {
        double auc =
            o.ood ? tg_auroc(in.score[c], in.n, ood.score[c], ood.n) : NAN;
        if (o.ood)
            printf("  %-20s %.4f\n", SCORE_NAMES[c], auc);
        panels[c] = (hist_panel){
            SCORE_NAMES[c], in.score[c],       o.ood ? ood.score[c] : NULL,
            in.n,           o.ood ? ood.n : 0, auc};
    }
    const char *path = cli_path(o.out, "ood_hist.svg");
    tg_atomic_file a;
    cli_out_commit(&a, plot_histograms(cli_out_open(&a, path),
                                       "scores: in-distribution vs OOD test "
                                       "images",
                                       panels, n_panels, 40));

    /* posterior uncertainty: maps of the first images, average std over up
     * to UNC_AVG images per set */
    const scored *sets[2] = {&in, &ood};
    int n_sets = o.ood ? 2 : 1, input = vae->cfg.input;
    float *means[2], *stds[2];
    for (int g = 0; g < n_sets; g++) {
        int n = sets[g]->n < UNC_AVG ? sets[g]->n : UNC_AVG;
        means[g] = xcalloc((size_t)n * input, sizeof(float));
        stds[g] = xcalloc((size_t)n * input, sizeof(float));
        ((scored *)sets[g])->mean_std = posterior_maps(
            tp, vae, sets[g], n, &o, PIX_STREAM + (g ? OOD_STREAM : 0),
            means[g], stds[g]);
    }
    printf("posterior pixel std (S = %d draws of z ~ q(z|x)), average over "
           "pixels and images: in-distribution %.4f",
           o.samples, in.mean_std);
    if (o.ood)
        printf(", OOD %.4f", ood.mean_std);
    printf("\n");
    if (in.ds.rows == in.ds.cols)
        write_uncertainty_png(cli_path(o.out, "uncertainty.png"), sets,
                              (const float **)means, (const float **)stds,
                              n_sets, UNC_SHOW, in.ds.rows);
    if (vae->cfg.latent == 2)
        write_latent(tp, vae, &in, cli_path(o.out, "latent.svg"));
    write_csv(cli_path(o.out, "scores.csv"), sets, n_sets);
    printf("wrote %s/{scores.csv, ood_hist.svg, uncertainty.png%s}\n", o.out,
           vae->cfg.latent == 2 ? ", latent.svg" : "");

    for (int g = 0; g < n_sets; g++) {
        scored *s = (scored *)sets[g];
        free(means[g]);
        free(stds[g]);
        free(s->log_px);
        free(s->elbo);
        free(s->L);
        free(s->nll_bits);
        for (int c = 0; c < N_SCORES; c++)
            free(s->score[c]);
        tg_dataset_free(&s->ds);
    }
    tg_tape_free(tp);
    tg_vae_free(vae);
    return 0;
}
