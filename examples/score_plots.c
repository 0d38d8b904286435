/* Histograms and scatter as hand-written SVG; an RGB PNG with stored
 * deflate blocks (checksums from png.h). */
#include "score_plots.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "png.h"

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

bool plot_histograms(const char *path, const char *title,
                     const hist_panel *panels, int n_panels, int bins)
{
    int rows = (n_panels + COLS - 1) / COLS;
    int w = COLS * (PW + 2 * PAD), h = 50 + rows * (PH + 2 * PAD);
    double *fi = malloc(sizeof(double) * (size_t)bins);
    double *fo = malloc(sizeof(double) * (size_t)bins);
    FILE *f = fopen(path, "w");
    if (!f || !fi || !fo) {
        if (f)
            fclose(f);
        free(fi);
        free(fo);
        return false;
    }
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
            "height=\"%d\" font-family=\"sans-serif\" font-size=\"11\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
            "<text x=\"%d\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">"
            "%s</text>\n<rect x=\"%d\" y=\"32\" width=\"10\" height=\"10\" "
            "fill=\"#1f77b4\"/><text x=\"%d\" y=\"41\">in-distribution "
            "test</text><rect x=\"%d\" y=\"32\" width=\"10\" height=\"10\" "
            "fill=\"#ff7f0e\"/><text x=\"%d\" y=\"41\">out-of-distribution"
            "</text>\n",
            w, h, w / 2, title, w / 2 - 200, w / 2 - 186, w / 2 + 20,
            w / 2 + 34);
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
    fprintf(f, "</svg>\n");
    free(fi);
    free(fo);
    bool ok = !ferror(f);
    return (fclose(f) == 0) && ok;
}

bool plot_scatter(const char *path, const char *title, const char *xlabel,
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
    FILE *f = fopen(path, "w");
    if (!f)
        return false;
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
            "height=\"%d\" font-family=\"sans-serif\" font-size=\"12\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
            "<text x=\"%d\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">"
            "%s</text>\n<rect x=\"%d\" y=\"%d\" width=\"%g\" height=\"%g\" "
            "fill=\"none\" stroke=\"#444\"/>\n"
            "<text x=\"%g\" y=\"%d\" text-anchor=\"middle\">%s</text>\n"
            "<text x=\"16\" y=\"%g\" text-anchor=\"middle\" "
            "transform=\"rotate(-90 16 %g)\">%s</text>\n"
            "<text x=\"%d\" y=\"%d\">%.3g</text><text x=\"%g\" y=\"%d\" "
            "text-anchor=\"end\">%.3g</text><text x=\"%d\" y=\"%g\" "
            "text-anchor=\"end\">%.3g</text><text x=\"%d\" y=\"%d\" "
            "text-anchor=\"end\">%.3g</text>\n",
            W, H, W / 2, title, L, T, pw, ph, L + pw / 2, H - 10, xlabel,
            T + ph / 2, T + ph / 2, ylabel, L, T + (int)ph + 16, x0, L + pw,
            T + (int)ph + 16, x1, L - 4, T + ph, y0, L - 4, T + 10, y1);
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
    fprintf(f, "</svg>\n");
    bool ok = !ferror(f);
    return (fclose(f) == 0) && ok;
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

static void be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static bool chunk(FILE *f, const char *type, const uint8_t *data, size_t n)
{
    uint8_t head[8], tail[4];
    be32(head, (uint32_t)n);
    memcpy(head + 4, type, 4);
    be32(tail, png_crc32(png_crc32(0, head + 4, 4), data, n));
    return fwrite(head, 1, 8, f) == 8 &&
           (n == 0 || fwrite(data, 1, n, f) == n) && fwrite(tail, 1, 4, f) == 4;
}

/* IDAT = zlib header 78 01, stored deflate blocks of at most 65535 bytes
 * ([BFINAL] LEN NLEN data), Adler-32 of the filtered scanlines. */
bool png_write_rgb(const char *path, int w, int h, const uint8_t *rgb)
{
    if (w <= 0 || h <= 0) {
        errno = EINVAL;
        return false;
    }
    size_t stride = 3 * (size_t)w + 1, n = stride * (size_t)h;
    uint8_t *raw = malloc(n), *z = malloc(2 + (n / 65535 + 1) * 5 + n + 4);
    if (!raw || !z) {
        free(raw);
        free(z);
        return false;
    }
    for (int y = 0; y < h; y++) {
        raw[(size_t)y * stride] = 0; /* filter: none */
        memcpy(raw + (size_t)y * stride + 1, rgb + (size_t)y * 3 * w,
               3 * (size_t)w);
    }
    size_t o = 0, pos = 0;
    z[o++] = 0x78, z[o++] = 0x01;
    do {
        size_t len = n - pos < 65535 ? n - pos : 65535;
        z[o++] = pos + len == n;
        z[o++] = (uint8_t)len, z[o++] = (uint8_t)(len >> 8);
        z[o++] = (uint8_t)~len, z[o++] = (uint8_t)(~len >> 8);
        memcpy(z + o, raw + pos, len);
        o += len, pos += len;
    } while (pos < n);
    be32(z + o, png_adler32(1, raw, n));
    o += 4;
    uint8_t ihdr[13] = {0};
    be32(ihdr, (uint32_t)w);
    be32(ihdr + 4, (uint32_t)h);
    ihdr[8] = 8; /* bits per channel */
    ihdr[9] = 2; /* colour type: RGB */
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    FILE *f = fopen(path, "wb");
    bool ok = f && fwrite(sig, 1, 8, f) == 8 && chunk(f, "IHDR", ihdr, 13) &&
              chunk(f, "IDAT", z, o) && chunk(f, "IEND", NULL, 0);
    if (f && fclose(f) != 0)
        ok = false;
    free(raw);
    free(z);
    return ok;
}
