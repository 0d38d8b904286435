/* vae_score's report: what the scores of vae_score.c say, printed (one
 * block per set, the reference statistics, a table per OOD set) and written
 * to --out: ood_metrics.csv, convergence.csv, scores.csv, ood_hist.svg,
 * uncertainty.png and, for a 2-D latent, latent.svg. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "font.h"
#include "png.h"
#include "score_plots.h"
#include "vae_score.h"

enum { UNC_SHOW = 8, UNC_AVG = 1000 };
/* posterior draws for the pictures: this far above each set's IWAE stream */
static const uint64_t PIX_OFFSET = 1ull << 41;
/* the std heat map: black at 0, pale yellow at STD_MAX and above */
#define STD_MAX 0.25f

void print_model(const options *o, const tg_vae *vae)
{
    printf("vae_score: model %s %d-%d-%d, likelihood %s, from %s, k = %d, "
           "seed %llu, %d threads, gemm %s\n",
           tg_vae_arch_name(vae->cfg.arch), vae->cfg.input, vae->cfg.hidden,
           vae->cfg.latent, tg_vae_likelihood_name(vae->cfg.likelihood),
           o->checkpoint, o->k, (unsigned long long)o->seed, tg_get_threads(),
           tg_gemm_kernel());
    cli_flush_stdout(false);
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
        /* NaN (k = 1: no standard error) stays NaN: fmax dropped it, and
         * the largest error read 0 beside a mean of nan */
        c.se_max = isnan(se) || isnan(c.se_max) ? NAN : fmax(c.se_max, se);
    }
    qsort(e, (size_t)s->n, sizeof *e, cmp_double);
    c.ess_median =
        s->n % 2 ? e[s->n / 2] : 0.5 * (e[s->n / 2 - 1] + e[s->n / 2]);
    free(e);
    return c;
}

void print_set(const scored *s, int k, double min_ess, convergence *c)
{
    *c = converge(s, k, min_ess);
    printf("%s: %d images, %s\n  ELBO %.2f  log p(x) %.2f nats "
           "(IWAE, k = %d; gap %.2f)  %.1f s, %.2f ms/image\n"
           "  convergence: ESS mean %.1f median %.1f min %.2f of k = %d; "
           "%.1f%% below ESS %g (not converged); ",
           s->name, s->n, s->desc, mean_of(s->elbo, s->n),
           mean_of(s->log_px, s->n), k,
           mean_of(s->log_px, s->n) - mean_of(s->elbo, s->n), s->seconds,
           1e3 * s->seconds / s->n, c->ess_mean, c->ess_median, c->ess_min, k,
           100.0 * c->below, min_ess);
    /* one draw has no spread to estimate an error from: said, where "mean
     * nan max nan" was printed (the CSV files keep nan) */
    if (k < 2)
        printf("no log p(x) standard error at k = 1 (it needs --iwae-k 2 "
               "or more)\n");
    else
        printf("log p(x) standard error mean %.3f max %.3f nats\n", c->se_mean,
               c->se_max);
    cli_flush_stdout(false);
}

void print_reference(const reference *rs, const scored *rset,
                     const char *train_kind, bool have_L, const tg_vae *vae,
                     int n_bg, const char *data)
{
    if (have_L)
        printf("reference (%s%s, n = %d): S mean %.6f sd %.6f; L mean %.6f "
               "sd %.6f; (-log2 p, L) mean [%.6f, %.6f] cov [[%.6f, %.6f], "
               "[%.6f, %.6f]]\n",
               train_kind ? "training images, " : "in-distribution test set",
               train_kind ? train_kind : "", rset->n, rs->S.mean[0],
               sqrt(rs->S.cov[0][0]), rs->L.mean[0], sqrt(rs->L.cov[0][0]),
               rs->joint.mean[0], rs->joint.mean[1], rs->joint.cov[0][0],
               rs->joint.cov[0][1], rs->joint.cov[1][0], rs->joint.cov[1][1]);
    else
        printf("complexity L(x): unavailable (this build has no zlib), so "
               "are S(x), the two-sided and DoSE scores\n");
    printf("background model: independent per-pixel %s fitted on "
           "training images 0..%d of %s\n",
           vae->cfg.likelihood == TG_VAE_CB ? "continuous Bernoullis"
                                            : "Bernoullis",
           n_bg - 1, data);
}

const char *write_ood_tables(const set_list *sl, const options *o,
                             double first_auc[N_SCORES])
{
    const scored *in = sl->in;
    tg_atomic_file am;
    FILE *mf = cli_out_open(&am, cli_path(o->out, "ood_metrics.csv"));
    fprintf(mf, "ood_set,score,n_in,n_ood,auroc,auroc_lo,auroc_hi,fpr95,"
                "aupr\n");
    const char *first_ood = NULL;
    for (int c = 0; c < N_SCORES; c++)
        first_auc[c] = NAN;
    for (int g = 0; g < sl->n; g++) {
        const scored *s = &sl->set[g];
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
                               o->resamples, o->seed, 0.95, &lo, &hi);
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
    return first_ood;
}

void write_convergence(const set_list *sl, const convergence *conv,
                       const options *o)
{
    tg_atomic_file ac;
    FILE *cf = cli_out_open(&ac, cli_path(o->out, "convergence.csv"));
    fprintf(cf, "set,n,k,elbo_mean,log_px_mean,ess_mean,ess_median,ess_min,"
                "min_ess,share_below_min_ess,log_px_se_mean,log_px_se_max\n");
    for (int g = 0; g < sl->n; g++) {
        const scored *s = &sl->set[g];
        fprintf(cf, "%s,%d,%d,%.4f,%.4f,%.3f,%.3f,%.3f,%g,%.6f,%.5f,%.5f\n",
                s->name, s->n, o->k, mean_of(s->elbo, s->n),
                mean_of(s->log_px, s->n), conv[g].ess_mean, conv[g].ess_median,
                conv[g].ess_min, (double)o->min_ess, conv[g].below,
                conv[g].se_mean, conv[g].se_max);
    }
    cli_out_commit(&ac, true);
}

int pictured_sets(set_list *sl, scored *shown[MAX_SETS])
{
    int n_shown = 0;
    for (int g = 0; g < sl->n && n_shown < HIST_MAX_SETS; g++)
        if (&sl->set[g] == sl->in || sl->set[g].ood)
            shown[n_shown++] = &sl->set[g];
    return n_shown;
}

/* ood_hist.svg: a panel per score (those that need L(x) only with it), the
 * pictured sets overlaid. */
void write_histograms(scored *const *shown, int n_shown, bool have_L,
                      const double first_auc[N_SCORES], const char *first_ood,
                      const options *o)
{
    hist_panel panels[N_SCORES];
    const char *set_names[HIST_MAX_SETS];
    for (int s = 0; s < n_shown; s++)
        set_names[s] = shown[s]->label;
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
                   plot_histograms(cli_out_open(&a, cli_path(o->out, "ood_hist."
                                                                     "svg")),
                                   "scores: in-distribution vs OOD test "
                                   "images (higher = more OOD)",
                                   panels, n_panels, set_names, n_shown,
                                   first_ood, 40));
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
                                  int rows, int side_r, int side_c, int samples)
{
    enum { SCALE = 3, GAP = 3, GROUP_GAP = 18, TOP = 44, BAR_W = 16 };
    static const uint8_t ink[3] = {0, 0, 0}, grey[3] = {90, 90, 90};
    int tile = side_c * SCALE, tile_h = side_r * SCALE;
    int group_w = 3 * tile + 2 * GAP;
    int bar_x = GAP + n_sets * group_w + (n_sets - 1) * GROUP_GAP + 16;
    int w = bar_x + BAR_W + 6 + font_text_width("0.25+", 2) + 8;
    char foot[160], lines[4][FONT_LINE];
    snprintf(foot, sizeof foot,
             "mean reconstruction and per-pixel std of the decoded pixels over "
             "%d draws of z from q(z|x)",
             samples);
    int n_lines = font_wrap(foot, 2, w - 2 * GAP, lines, 4);
    int h = TOP + rows * (tile_h + GAP) + 12 + n_lines * 20;
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
                int y0 = TOP + r * (tile_h + GAP);
                size_t off = (size_t)r * side_r * side_c;
                const float *src = col == 0   ? sets[g]->images + off
                                   : col == 1 ? means[g] + off
                                              : stds[g] + off;
                for (int y = 0; y < tile_h; y++)
                    for (int x = 0; x < tile; x++) {
                        float v = src[(y / SCALE) * side_c + x / SCALE];
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
    int by0 = TOP, by1 = TOP + rows * (tile_h + GAP) - GAP;
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

/* Posterior uncertainty: mean and std maps of up to UNC_AVG images of each
 * pictured set, their average std printed, and uncertainty.png of the
 * first UNC_SHOW. */
void write_uncertainty(tg_tape *tp, const tg_vae *vae, scored *const *shown,
                       int n_shown, const options *o)
{
    int input = vae->cfg.input;
    float *means[MAX_SETS] = {0}, *stds[MAX_SETS] = {0};
    for (int s = 0; s < n_shown; s++) {
        int n = shown[s]->n < UNC_AVG ? shown[s]->n : UNC_AVG;
        means[s] = xcalloc((size_t)n * input, sizeof(float));
        stds[s] = xcalloc((size_t)n * input, sizeof(float));
        shown[s]->mean_std =
            posterior_maps(tp, vae, shown[s], n, o, means[s], stds[s]);
    }
    printf("posterior pixel std (S = %d draws of z ~ q(z|x)), average over "
           "pixels and images:",
           o->samples);
    for (int s = 0; s < n_shown; s++)
        printf("%s %s %.4f", s ? "," : "",
               s ? shown[s]->name : "in-distribution", shown[s]->mean_std);
    printf("\n");
    write_uncertainty_png(
        cli_path(o->out, "uncertainty.png"), (const scored *const *)shown,
        (const float *const *)means, (const float *const *)stds, n_shown,
        UNC_SHOW, shown[0]->side_r, shown[0]->side_c, o->samples);
    for (int s = 0; s < n_shown; s++) {
        free(means[s]);
        free(stds[s]);
    }
}

/* latent.svg: posterior means of the in-distribution test set by label. */
void write_latent(tg_tape *tp, const tg_vae *vae, const scored *s,
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

void write_scores_csv(const set_list *sl, const options *o)
{
    tg_atomic_file a;
    FILE *f = cli_out_open(&a, cli_path(o->out, "scores.csv"));
    fprintf(f, "set,index,label,elbo,log_px,ess,log_px_se,L_bits,log_p_bg");
    for (int c = 0; c < N_SCORES; c++)
        fprintf(f, ",%s", SCORE_KEYS[c]);
    fprintf(f, "\n");
    for (int g = 0; g < sl->n; g++) {
        const scored *s = &sl->set[g];
        for (int i = 0; i < s->n; i++) {
            fprintf(f, "%s,%d,", s->name, i);
            if (s->labels) /* an OOD set without labels: empty */
                fprintf(f, "%d", s->labels[i]);
            fprintf(f, ",%.4f,%.4f,%.3f,%.4f,%.0f,%.4f", s->elbo[i],
                    s->log_px[i], s->ess[i], tg_iw_log_se(s->ess[i], o->k),
                    s->L[i], s->log_bg[i]);
            for (int c = 0; c < N_SCORES; c++)
                fprintf(f, ",%.4f", s->score[c][i]);
            fprintf(f, "\n");
        }
    }
    cli_out_commit(&a, true);
}
