/* Histograms and scatter as hand-written SVG (svg.h's preamble), and the
 * heat-map colour scale. */
#include "score_plots.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "svg.h"
#include "tapegrad.h"

static const char *const palette[10] = {
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The q-quantile (nearest rank) of the finite values of v, or NAN. */
static double quantile(const double *v, int n, double q)
{
    double *s = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    if (!s) /* a NaN here was left out of the range: another axis */
        tg_out_of_memory("ood_hist", "out of memory (%d scores)", n);
    int m = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(v[i]))
            s[m++] = v[i];
    double r = NAN;
    if (m > 0) {
        qsort(s, (size_t)m, sizeof(double), cmp_double);
        r = s[(int)floor(q * (m - 1) + 0.5)];
    }
    free(s);
    return r;
}

/* Fraction of v in each of bins bins over [lo, hi] (of log10 v when logx)
 * in frac[1 .. bins]; frac[0] gets the share below lo, frac[bins + 1] the
 * share above hi (the overflow bins). */
static void histogram(const double *v, int n, double lo, double hi, int bins,
                      bool logx, double *frac)
{
    memset(frac, 0, sizeof(double) * (size_t)(bins + 2));
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(v[i]))
            continue;
        double t = logx ? (v[i] > 0 ? log10(v[i]) : -INFINITY) : v[i];
        int b;
        if (t < lo)
            b = 0;
        else if (t > hi)
            b = bins + 1;
        else {
            b = 1 + (int)floor((t - lo) / (hi - lo) * bins);
            b = b > bins ? bins : b;
        }
        frac[b] += 1.0;
        m++;
    }
    for (int b = 0; b < bins + 2 && m > 0; b++)
        frac[b] /= m;
}

enum { PW = 300, PH = 170, PAD = 80, OVW = 14, COLS = 3 };

static const char *const set_colors[HIST_MAX_SETS] = {
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"};

/* A closed step outline of one histogram (frac[1 .. bins]), translucent. */
static void steps(FILE *f, const double *frac, int bins, double ymax, double x0,
                  double y0, const char *color)
{
    fprintf(f,
            "<path fill=\"%s\" fill-opacity=\"0.25\" stroke=\"%s\" d=\"M%.1f "
            "%.1f",
            color, color, x0, y0 + PH);
    for (int b = 0; b < bins; b++) {
        double y = y0 + PH - fmin(frac[b + 1] / ymax, 1.0) * PH;
        fprintf(f, " L%.1f %.1f L%.1f %.1f", x0 + (double)b * PW / bins, y,
                x0 + (double)(b + 1) * PW / bins, y);
    }
    fprintf(f, " L%.1f %.1f Z\"/>\n", x0 + PW, y0 + PH);
}

/* An overflow bin at x (width OVW): one bar per set, side by side. */
static void overflow_bin(FILE *f, double x, double y0, double ymax,
                         double frac[][2], int n_sets, int side,
                         const char *label)
{
    fprintf(f,
            "<rect x=\"%.1f\" y=\"%.1f\" width=\"%d\" height=\"%d\" "
            "fill=\"#f2f2f2\" stroke=\"#888\" stroke-dasharray=\"3,2\"/>\n",
            x, y0, OVW, PH);
    double bw = (double)OVW / n_sets;
    for (int s = 0; s < n_sets; s++) {
        double hgt = fmin(frac[s][side] / ymax, 1.0) * PH;
        if (hgt > 0)
            fprintf(f,
                    "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
                    "height=\"%.1f\" fill=\"%s\"/>\n",
                    x + s * bw, y0 + PH - hgt, bw, hgt, set_colors[s]);
    }
    fprintf(f,
            "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" "
            "font-size=\"9\">%s</text>\n",
            x + OVW / 2.0, y0 + PH + 24, label);
}

static void fmt_tick(char *buf, size_t cap, double v, bool logx)
{
    if (logx)
        snprintf(buf, cap, "%.3g", pow(10.0, v));
    else
        snprintf(buf, cap, "%.4g", fabs(v) < 1e-12 ? 0.0 : v);
}

static void x_tick(FILE *f, double x, double y0, double v)
{
    fprintf(f,
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
            "stroke=\"#444\"/><text x=\"%.1f\" y=\"%.1f\" "
            "text-anchor=\"middle\" font-size=\"10\">%.4g</text>\n",
            x, y0 + PH, x, y0 + PH + 4, x, y0 + PH + 14, v);
}

bool plot_histograms(FILE *f, const char *title, const hist_panel *panels,
                     int n_panels, const char *const *set_names, int n_sets,
                     const char *auroc_of, int bins)
{
    if (n_sets > HIST_MAX_SETS)
        n_sets = HIST_MAX_SETS;
    int rows = (n_panels + COLS - 1) / COLS;
    int w = COLS * (PW + 2 * PAD), h = 70 + rows * (PH + 2 * PAD);
    if (bins > 64 || bins < 1)
        return false;
    double(*fr)[64 + 2] = malloc(sizeof *fr * (size_t)n_sets);
    if (!fr)
        tg_out_of_memory("ood_hist", "out of memory");
    svg_begin(f, w, h, 11, title);
    /* legend */
    double lx = 20;
    for (int s = 0; s < n_sets; s++) {
        fprintf(f,
                "<rect x=\"%.0f\" y=\"32\" width=\"10\" height=\"10\" "
                "fill=\"%s\"/><text x=\"%.0f\" y=\"41\">%s</text>\n",
                lx, set_colors[s], lx + 14, set_names[s]);
        lx += 24 + 6.5 * (double)strlen(set_names[s]);
    }
    if (auroc_of)
        fprintf(f,
                "<text x=\"20\" y=\"58\" font-size=\"10\">AUROC in the "
                "titles: %s against the in-distribution test set. Dashed "
                "boxes: the shares below / above the axis range (the 1st-99th "
                "percentile of all values).</text>\n",
                auroc_of);
    for (int p = 0; p < n_panels; p++) {
        const hist_panel *hp = &panels[p];
        double lo = INFINITY, hi = -INFINITY;
        for (int s = 0; s < n_sets; s++)
            if (hp->v[s] && hp->n[s] > 0) {
                lo = fmin(lo, quantile(hp->v[s], hp->n[s], 0.01));
                hi = fmax(hi, quantile(hp->v[s], hp->n[s], 0.99));
            }
        if (!isfinite(lo) || !isfinite(hi))
            lo = 0, hi = 1;
        if (!(hi > lo))
            hi = lo + 1.0;
        /* positive scores spanning decades (a far-off OOD tail): bin their
         * logarithm, or the in-distribution set fills one bin */
        bool logx = lo > 0 && hi / lo > 20;
        double blo = logx ? log10(lo) : lo, bhi = logx ? log10(hi) : hi;
        double ymax = 1e-12;
        for (int s = 0; s < n_sets; s++) {
            if (hp->v[s] && hp->n[s] > 0)
                histogram(hp->v[s], hp->n[s], blo, bhi, bins, logx, fr[s]);
            else
                memset(fr[s], 0, sizeof fr[s]);
            for (int b = 1; b <= bins; b++)
                ymax = fmax(ymax, fr[s][b]);
        }
        /* y axis: a nice step over [0, ymax] */
        double ys = svg_tick_step(ymax);
        ymax = ceil(ymax / ys - 1e-9) * ys;
        double x0 = (p % COLS) * (PW + 2 * PAD) + PAD;
        double y0 = 70 + (p / COLS) * (PH + 2 * PAD) + 30;
        fprintf(f,
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" "
                "font-size=\"13\">%s",
                x0 + PW / 2.0, y0 - 10, hp->name);
        if (isfinite(hp->auroc))
            fprintf(f, " (AUROC %.3f)", hp->auroc);
        fprintf(f, "</text>\n");
        for (int s = 0; s < n_sets; s++)
            if (hp->v[s])
                steps(f, fr[s], bins, ymax, x0, y0, set_colors[s]);
        fprintf(f,
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"%d\" height=\"%d\" "
                "fill=\"none\" stroke=\"#444\"/>\n",
                x0, y0, PW, PH);
        /* overflow bins, with the per-set shares as bars */
        double ov[HIST_MAX_SETS][2];
        for (int s = 0; s < n_sets; s++)
            ov[s][0] = fr[s][0], ov[s][1] = fr[s][bins + 1];
        char lab[48], t1[24];
        fmt_tick(t1, sizeof t1, blo, logx);
        snprintf(lab, sizeof lab, "&lt;%s", t1);
        overflow_bin(f, x0 - OVW - 6, y0, ymax, ov, n_sets, 0, lab);
        fmt_tick(t1, sizeof t1, bhi, logx);
        snprintf(lab, sizeof lab, "&gt;%s", t1);
        overflow_bin(f, x0 + PW + 6, y0, ymax, ov, n_sets, 1, lab);
        /* x ticks: nice values of the score; on a log axis at 1, 2 and 5
         * times the powers of ten (only the powers beyond 3 decades) */
        if (logx) {
            bool few = bhi - blo <= 3.0;
            for (int d = (int)floor(blo); d <= (int)ceil(bhi); d++)
                for (int m = 1; m <= 5; m += m == 1 ? 1 : 3) {
                    if (m > 1 && !few)
                        continue;
                    double t = d + log10((double)m);
                    if (t < blo - 1e-9 || t > bhi + 1e-9)
                        continue;
                    x_tick(f, x0 + (t - blo) / (bhi - blo) * PW, y0,
                           pow(10.0, t));
                }
        } else {
            double xs = svg_tick_step(bhi - blo);
            /* counted, not accumulated: at 1e6 a step of 1e-10 would not
             * move t */
            double t0 = ceil(blo / xs - 1e-9) * xs;
            for (int i = 0; i <= 20; i++) {
                double t = t0 + i * xs;
                if (t > bhi + 1e-9 * xs)
                    break;
                x_tick(f, x0 + (t - blo) / (bhi - blo) * PW, y0,
                       fabs(t) < 1e-9 * xs ? 0.0 : t);
            }
        }
        for (double t = 0; t <= ymax + 1e-9 * ys; t += ys) {
            double y = y0 + PH - t / ymax * PH;
            fprintf(f,
                    "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                    "stroke=\"#444\"/><text x=\"%.1f\" y=\"%.1f\" "
                    "text-anchor=\"end\" font-size=\"10\">%.3g</text>\n",
                    x0 - OVW - 8, y, x0 - OVW - 12, y, x0 - OVW - 14, y + 3, t);
        }
        fprintf(f,
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s%s"
                "</text>\n"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" "
                "transform=\"rotate(-90 %.1f %.1f)\">share of images</text>\n",
                x0 + PW / 2.0, y0 + PH + 38, hp->name,
                logx ? " (log scale)" : "", x0 - PAD + 14, y0 + PH / 2.0,
                x0 - PAD + 14, y0 + PH / 2.0);
    }
    free(fr);
    return svg_end(f);
}

bool plot_scatter(FILE *f, const char *title, const char *xlabel,
                  const char *ylabel, const float *x, const float *y,
                  const uint8_t *labels, int n)
{
    enum { W = 620, H = 560, L = 60, R = 90, T = 40, B = 50 };
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int i = 0; i < n; i++)
        if (isfinite(x[i]) && isfinite(y[i])) {
            x0 = fmin(x0, x[i]), x1 = fmax(x1, x[i]);
            y0 = fmin(y0, y[i]), y1 = fmax(y1, y[i]);
        }
    if (!(x1 > x0))
        x0 = -1, x1 = 1;
    if (!(y1 > y0))
        y0 = -1, y1 = 1;
    double mx = 0.03 * (x1 - x0), my = 0.03 * (y1 - y0); /* margins */
    x0 -= mx, x1 += mx, y0 -= my, y1 += my;
    double pw = W - L - R, ph = H - T - B;
    svg_begin(f, W, H, 12, title);
    fprintf(f,
            "<rect x=\"%d\" y=\"%d\" width=\"%g\" height=\"%g\" "
            "fill=\"none\" stroke=\"#444\"/>\n"
            "<text x=\"%g\" y=\"%d\" text-anchor=\"middle\">%s</text>\n"
            "<text x=\"16\" y=\"%g\" text-anchor=\"middle\" "
            "transform=\"rotate(-90 16 %g)\">%s</text>\n"
            "<text x=\"%d\" y=\"%d\">%.3g</text><text x=\"%g\" y=\"%d\" "
            "text-anchor=\"end\">%.3g</text><text x=\"%d\" y=\"%g\" "
            "text-anchor=\"end\">%.3g</text><text x=\"%d\" y=\"%d\" "
            "text-anchor=\"end\">%.3g</text>\n",
            L, T, pw, ph, L + pw / 2, H - 10, xlabel, T + ph / 2, T + ph / 2,
            ylabel, L, T + (int)ph + 16, x0, L + pw, T + (int)ph + 16, x1,
            L - 4, T + ph, y0, L - 4, T + 10, y1);
    for (int i = 0; i < n; i++) {
        if (!isfinite(x[i]) || !isfinite(y[i]))
            continue;
        fprintf(f,
                "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2\" fill=\"%s\" "
                "fill-opacity=\"0.7\"/>\n",
                L + (x[i] - x0) / (x1 - x0) * pw,
                T + (1 - (y[i] - y0) / (y1 - y0)) * ph,
                palette[labels ? labels[i] % 10 : 0]);
    }
    for (int c = 0; labels && c < 10; c++) /* no labels: no legend */
        fprintf(f,
                "<circle cx=\"%g\" cy=\"%d\" r=\"5\" fill=\"%s\"/>"
                "<text x=\"%g\" y=\"%d\">%d</text>\n",
                L + pw + 20, T + 10 + 20 * c, palette[c], L + pw + 30,
                T + 14 + 20 * c, c);
    return svg_end(f);
}

void heat_rgb(float t, uint8_t rgb[3])
{
    static const float stops[5][3] = {{0, 0, 0},
                                      {90, 20, 120},
                                      {200, 40, 50},
                                      {250, 150, 20},
                                      {255, 250, 180}};
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    float s = t * 4;
    int i = s >= 4 ? 3 : (int)s;
    float u = s - i;
    for (int c = 0; c < 3; c++)
        rgb[c] =
            (uint8_t)(stops[i][c] + u * (stops[i + 1][c] - stops[i][c]) + 0.5f);
}
