/* Histograms and scatter as hand-written SVG (svg.h's preamble), and the
 * heat-map colour scale. */
#include "score_plots.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "svg.h"

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
    int m = 0;
    for (int i = 0; s && i < n; i++)
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

/* Fraction of v in each of bins bins over [lo, hi] (of log10 v when logx);
 * values outside land in the edge bins, so the tails stay visible. */
static void histogram(const double *v, int n, double lo, double hi, int bins,
                      bool logx, double *frac)
{
    memset(frac, 0, sizeof(double) * (size_t)bins);
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(v[i]))
            continue;
        double t = logx ? (v[i] > 0 ? log10(v[i]) : lo) : v[i];
        int b = (int)floor((t - lo) / (hi - lo) * bins);
        frac[b < 0 ? 0 : b >= bins ? bins - 1 : b] += 1.0;
        m++;
    }
    for (int b = 0; b < bins && m > 0; b++)
        frac[b] /= m;
}

enum { PW = 300, PH = 190, PAD = 45, COLS = 3 };

/* A closed step outline of one histogram, filled translucent. */
static void steps(FILE *f, const double *frac, int bins, double ymax, double x0,
                  double y0, const char *color)
{
    fprintf(f,
            "<path fill=\"%s\" fill-opacity=\"0.35\" stroke=\"%s\" d=\"M%.1f "
            "%.1f",
            color, color, x0, y0 + PH);
    for (int b = 0; b < bins; b++) {
        double y = y0 + PH - frac[b] / ymax * PH;
        fprintf(f, " L%.1f %.1f L%.1f %.1f", x0 + (double)b * PW / bins, y,
                x0 + (double)(b + 1) * PW / bins, y);
    }
    fprintf(f, " L%.1f %.1f Z\"/>\n", x0 + PW, y0 + PH);
}

bool plot_histograms(FILE *f, const char *title, const hist_panel *panels,
                     int n_panels, int bins)
{
    int rows = (n_panels + COLS - 1) / COLS;
    int w = COLS * (PW + 2 * PAD), h = 50 + rows * (PH + 2 * PAD);
    double *fi = malloc(sizeof(double) * (size_t)bins);
    double *fo = malloc(sizeof(double) * (size_t)bins);
    if (!fi || !fo) {
        free(fi);
        free(fo);
        return false;
    }
    svg_begin(f, w, h, 11, title);
    fprintf(f,
            "<rect x=\"%d\" y=\"32\" width=\"10\" height=\"10\" "
            "fill=\"#1f77b4\"/><text x=\"%d\" y=\"41\">in-distribution "
            "test</text><rect x=\"%d\" y=\"32\" width=\"10\" height=\"10\" "
            "fill=\"#ff7f0e\"/><text x=\"%d\" y=\"41\">out-of-distribution"
            "</text>\n",
            w / 2 - 200, w / 2 - 186, w / 2 + 20, w / 2 + 34);
    for (int p = 0; p < n_panels; p++) {
        const hist_panel *hp = &panels[p];
        /* range: 1st to 99th percentile of both sets together */
        double lo = quantile(hp->in, hp->n_in, 0.01);
        double hi = quantile(hp->in, hp->n_in, 0.99);
        if (hp->ood) {
            lo = fmin(lo, quantile(hp->ood, hp->n_ood, 0.01));
            hi = fmax(hi, quantile(hp->ood, hp->n_ood, 0.99));
        }
        if (!(hi > lo))
            hi = lo + 1.0;
        /* positive scores spanning decades (a far-off OOD tail): bin their
         * logarithm, or the in-distribution set fills one bin */
        bool logx = lo > 0 && hi / lo > 20;
        double blo = logx ? log10(lo) : lo, bhi = logx ? log10(hi) : hi;
        histogram(hp->in, hp->n_in, blo, bhi, bins, logx, fi);
        if (hp->ood)
            histogram(hp->ood, hp->n_ood, blo, bhi, bins, logx, fo);
        double ymax = 1e-12;
        for (int b = 0; b < bins; b++)
            ymax = fmax(ymax, fmax(fi[b], hp->ood ? fo[b] : 0));
        double x0 = (p % COLS) * (PW + 2 * PAD) + PAD;
        double y0 = 50 + (p / COLS) * (PH + 2 * PAD) + PAD;
        fprintf(f,
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" "
                "font-size=\"13\">%s",
                x0 + PW / 2.0, y0 - 10, hp->name);
        if (isfinite(hp->auroc))
            fprintf(f, " (AUROC %.3f)", hp->auroc);
        fprintf(f, "</text>\n");
        steps(f, fi, bins, ymax, x0, y0, "#1f77b4");
        if (hp->ood)
            steps(f, fo, bins, ymax, x0, y0, "#ff7f0e");
        fprintf(f,
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"%d\" height=\"%d\" "
                "fill=\"none\" stroke=\"#444\"/>\n"
                "<text x=\"%.1f\" y=\"%.1f\">%.4g</text>"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.4g</text>"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.2f</text>\n",
                x0, y0, PW, PH, x0, y0 + PH + 14, lo, x0 + PW, y0 + PH + 14, hi,
                x0 - 4, y0 + 10, ymax);
        if (logx)
            fprintf(f,
                    "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">"
                    "log scale</text>\n",
                    x0 + PW / 2.0, y0 + PH + 14);
    }
    free(fi);
    free(fo);
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
                palette[labels[i] % 10]);
    }
    for (int c = 0; c < 10; c++)
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
