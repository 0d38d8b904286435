/* bnn_mnist's pictures: a reliability diagram per method, accuracy against
 * coverage for all methods (SVG line charts), and the test digits a method
 * is most and least sure about with their predictive distributions (PNG). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnn_mnist.h"
#include "cli.h"
#include "png.h"
#include "svg.h"

/* A chart frame: x in [0, 1], y in [y0, y1], ticks every 0.1 on x and
 * every ystep on y, title and axis labels. PX/PY map data to pixels. */
enum { W = 640, H = 440, LEFT = 70, RIGHT = 20, TOP = 40, BOTTOM = 55 };
#define PW ((double)(W - LEFT - RIGHT))
#define PH ((double)(H - TOP - BOTTOM))
#define PX(x) (LEFT + (x)*PW)
#define PY(y, y0, y1) (TOP + (1.0 - ((y) - (y0)) / ((y1) - (y0))) * PH)

static void frame(FILE *f, const char *title, const char *xlabel,
                  const char *ylabel, double y0, double y1, double ystep)
{
    svg_begin(f, W, H, 12, title);
    for (int i = 0; i <= 10; i++)
        fprintf(f,
                "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%.1f\" "
                "stroke=\"#eee\"/><text x=\"%.1f\" y=\"%.1f\" "
                "text-anchor=\"middle\">%.1f</text>\n",
                PX(i / 10.0), PX(i / 10.0), TOP, TOP + PH, PX(i / 10.0),
                TOP + PH + 16, i / 10.0);
    int ny = (int)lround((y1 - y0) / ystep);
    for (int i = 0; i <= ny; i++) {
        double y = y0 + i * ystep;
        fprintf(f,
                "<line x1=\"%d\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" "
                "stroke=\"#eee\"/><text x=\"%d\" y=\"%.1f\" "
                "text-anchor=\"end\">%.*f</text>\n",
                LEFT, LEFT + PW, PY(y, y0, y1), PY(y, y0, y1), LEFT - 6,
                PY(y, y0, y1) + 4, ystep < 0.1 ? 2 : 1, y);
    }
    fprintf(f,
            "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" "
            "fill=\"none\" stroke=\"#444\"/>\n"
            "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n"
            "<text x=\"16\" y=\"%.1f\" text-anchor=\"middle\" "
            "transform=\"rotate(-90 16 %.1f)\">%s</text>\n",
            LEFT, TOP, PW, PH, LEFT + PW / 2, H - 14, xlabel, TOP + PH / 2,
            TOP + PH / 2, ylabel);
}

/* Legend entries stack up from the bottom-left corner, or down from the
 * top-left one (top). */
static void legend(FILE *f, int slot, bool top, const char *color,
                   const char *name)
{
    double x = LEFT + 16;
    double y = top ? TOP + 22 + 18.0 * slot : TOP + PH - 16 - 18.0 * slot;
    fprintf(f,
            "<rect x=\"%.1f\" y=\"%.1f\" width=\"14\" height=\"10\" "
            "fill=\"%s\"/><text x=\"%.1f\" y=\"%.1f\">%s</text>\n",
            x, y - 9, color, x + 20, y, name);
}

/* The classic reliability diagram: one bar per bin at the bin's accuracy,
 * the gap to the bin's mean confidence shaded red, the diagonal of a
 * calibrated model, and each bin's share of the test set as a thin gray
 * bar at the bottom. */
bool bnn_plot_reliability(const char *dir, const bnn_result *r)
{
    char name[96], title[160];
    snprintf(name, sizeof name, "reliability_%s.svg", r->method);
    snprintf(title, sizeof title, "Reliability: %s (ECE %.4f, %d bins)",
             r->method, r->ece, BNN_BINS);
    tg_atomic_file a;
    if (tg_atomic_open(&a, cli_path(dir, name)) != TG_OK)
        return false;
    FILE *f = a.f;
    frame(f, title, "confidence (largest predictive probability)", "accuracy",
          0.0, 1.0, 0.1);
    int most = 1;
    for (int b = 0; b < BNN_BINS; b++)
        most = r->bins[b].count > most ? r->bins[b].count : most;
    for (int b = 0; b < BNN_BINS; b++) {
        const tg_reliability_bin *bin = &r->bins[b];
        double x = PX(bin->lo), w = PX(bin->hi) - x;
        if (bin->count) {
            double acc = bin->accuracy, conf = bin->confidence;
            fprintf(f,
                    "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
                    "height=\"%.1f\" fill=\"#1f77b4\" stroke=\"white\"/>\n",
                    x, PY(acc, 0, 1), w, TOP + PH - PY(acc, 0, 1));
            double hi = fmax(acc, conf), lo = fmin(acc, conf);
            fprintf(
                f,
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
                "height=\"%.1f\" fill=\"#d62728\" fill-opacity=\"0.45\"/>\n",
                x, PY(hi, 0, 1), w, PY(lo, 0, 1) - PY(hi, 0, 1));
        }
        double share = (double)bin->count / most;
        fprintf(f,
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                "fill=\"#555\" fill-opacity=\"0.6\"/>\n",
                x + w * 0.3, TOP + PH - share * PH * 0.25, w * 0.4,
                share * PH * 0.25);
    }
    fprintf(f,
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
            "stroke=\"#444\" stroke-dasharray=\"5,4\"/>\n",
            PX(0), PY(0, 0, 1), PX(1), PY(1, 0, 1));
    legend(f, 0, true, "#1f77b4", "accuracy in bin");
    legend(f, 1, true, "#d62728", "gap to mean confidence");
    legend(f, 2, true, "#555", "test digits in bin (largest = 1/4 height)");
    legend(f, 3, true, "#444", "calibrated (dashed diagonal)");
    return tg_atomic_commit(&a, svg_end(f)) == TG_OK;
}

/* Accuracy on the most confident fraction c of the test set, c = 5%..100%,
 * one line per method; y from just below the lowest point to 1. */
bool bnn_plot_coverage(const char *dir, const bnn_result *r, int n_results,
                       const int *labels, int n)
{
    enum { POINTS = 20 };
    static const char *const colors[] = {"#1f77b4", "#d62728", "#2ca02c",
                                         "#9467bd"};
    double y[4][POINTS], lowest = 1.0;
    n_results = n_results < 4 ? n_results : 4;
    for (int m = 0; m < n_results; m++)
        for (int i = 0; i < POINTS; i++) {
            y[m][i] = tg_metric_accuracy_at_coverage(
                r[m].mean, labels, n, BNN_CLASSES, (i + 1) / (double)POINTS);
            lowest = fmin(lowest, y[m][i]);
        }
    double step = 1.0 - lowest > 0.2 ? 0.1 : 1.0 - lowest > 0.05 ? 0.02 : 0.01;
    double y0 = floor((lowest - 1e-9) / step) * step;
    y0 = y0 < 0.0 ? 0.0 : y0;
    tg_atomic_file a;
    if (tg_atomic_open(&a, cli_path(dir, "coverage.svg")) != TG_OK)
        return false;
    FILE *f = a.f;
    frame(f, "Accuracy on the most confident test images",
          "coverage (fraction kept, most confident first)", "accuracy", y0, 1.0,
          step);
    for (int m = 0; m < n_results; m++) {
        fprintf(f,
                "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" "
                "points=\"",
                colors[m]);
        for (int i = 0; i < POINTS; i++)
            fprintf(f, "%.1f,%.1f ", PX((i + 1) / (double)POINTS),
                    PY(y[m][i], y0, 1.0));
        fprintf(f, "\"/>\n");
        legend(f, n_results - 1 - m, false, colors[m], r[m].method);
    }
    return tg_atomic_commit(&a, svg_end(f)) == TG_OK;
}

typedef struct by_entropy {
    double h;
    int i;
} by_entropy;

static int lower_entropy_first(const void *a, const void *b)
{
    const by_entropy *x = a, *y = b;
    if (x->h != y->h)
        return x->h < y->h ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

enum { ROWS = 8, SCALE = 2, BAR_W = 6, GAP = 6 };

/* One cell: the digit (rows x cols, scaled) on the left, then ten bars of
 * height p_k (class 0 first), the true class's bar red, the others blue. */
static void draw_cell(uint8_t *rgb, int w, int x0, int y0, const float *img,
                      int rows, int cols, const float *p, int label)
{
    int hgt = rows * SCALE, wid = cols * SCALE;
    for (int y = 0; y < hgt; y++)
        for (int x = 0; x < wid; x++) {
            float v = img[(y / SCALE) * cols + x / SCALE];
            uint8_t g = (uint8_t)(fminf(fmaxf(v, 0.0f), 1.0f) * 255.0f);
            uint8_t *px = rgb + 3 * ((size_t)(y0 + y) * w + x0 + x);
            px[0] = px[1] = px[2] = g;
        }
    int bx = x0 + wid + GAP;
    for (int k = 0; k < BNN_CLASSES; k++) {
        int top = hgt - (int)lroundf(p[k] * (float)(hgt - 1)) - 1;
        for (int y = 0; y < hgt; y++)
            for (int x = 0; x < BAR_W - 1; x++) {
                uint8_t *px =
                    rgb + 3 * ((size_t)(y0 + y) * w + bx + k * BAR_W + x);
                if (y >= top) {
                    px[0] = k == label ? 214 : 31;
                    px[1] = k == label ? 39 : 119;
                    px[2] = k == label ? 40 : 180;
                } else if (y == hgt - 1 || k == label) {
                    px[0] = px[1] = px[2] = k == label ? 235 : 200;
                }
            }
    }
}

/* Left column: the ROWS lowest predictive entropies; right column: the ROWS
 * highest. */
bool bnn_plot_sure(const char *dir, const bnn_result *r, const float *images,
                   int side_r, int side_c, const int *labels, int n)
{
    by_entropy *order = malloc(sizeof *order * (size_t)n);
    if (!order)
        return tg_error(TG_ERR_NOMEM, "sure_%s.png: out of memory",
                        r->method) == TG_OK;
    for (int i = 0; i < n; i++)
        order[i] = (by_entropy){r->u[i].total, i};
    qsort(order, (size_t)n, sizeof *order, lower_entropy_first);
    int rows = n < ROWS ? n : ROWS;
    int cell_w = side_c * SCALE + GAP + BNN_CLASSES * BAR_W;
    int cell_h = side_r * SCALE;
    int w = 2 * cell_w + 4 * GAP, h = rows * (cell_h + GAP) + GAP;
    uint8_t *rgb = malloc(3 * (size_t)w * h);
    if (!rgb) {
        free(order);
        return tg_error(TG_ERR_NOMEM, "sure_%s.png: out of memory",
                        r->method) == TG_OK;
    }
    memset(rgb, 255, 3 * (size_t)w * h);
    for (int y = 0; y < h; y++) /* a gray rule between the columns */
        memset(rgb + 3 * ((size_t)y * w + cell_w + 2 * GAP - 1), 128, 3);
    for (int row = 0; row < rows; row++)
        for (int col = 0; col < 2; col++) {
            int i = col ? order[n - 1 - row].i : order[row].i;
            draw_cell(rgb, w, GAP + col * (cell_w + 2 * GAP),
                      GAP + row * (cell_h + GAP),
                      images + (size_t)i * side_r * side_c, side_r, side_c,
                      r->mean + (size_t)i * BNN_CLASSES, labels[i]);
        }
    char name[96];
    snprintf(name, sizeof name, "sure_%s.png", r->method);
    tg_atomic_file a;
    bool ok = tg_atomic_open(&a, cli_path(dir, name)) == TG_OK &&
              tg_atomic_commit(&a, png_write(a.f, w, h, 3, rgb)) == TG_OK;
    free(rgb);
    free(order);
    return ok;
}
