/* bnn_mnist's pictures: a reliability diagram per method, accuracy against
 * coverage for all methods (SVG line charts), and the test digits a method
 * is most and least sure about with their predictive distributions (PNG). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnn_mnist.h"
#include "cli.h"
#include "score_plots.h"
#include "svg.h"

/* Accuracy against mean confidence per non-empty bin, and the diagonal of a
 * calibrated model. */
bool bnn_plot_reliability(const char *dir, const bnn_result *r)
{
    double x[BNN_BINS], y[BNN_BINS];
    int n = 0;
    for (int b = 0; b < BNN_BINS; b++)
        if (r->bins[b].count > 0) {
            x[n] = r->bins[b].confidence;
            y[n] = r->bins[b].accuracy;
            n++;
        }
    static const double diag[2] = {0.0, 1.0};
    svg_series s[2] = {
        {"calibrated", "#999999", diag, diag, 2},
        {r->method, "#1f77b4", x, y, n},
    };
    char name[96], title[160];
    snprintf(name, sizeof name, "reliability_%s.svg", r->method);
    snprintf(title, sizeof title,
             "Reliability: %s (ECE %.4f, %d bins, empty bins skipped)",
             r->method, r->ece, BNN_BINS);
    const char *path = cli_path(dir, name);
    return svg_line_chart(path, title, "mean confidence in bin",
                          "accuracy in bin", s, 2);
}

/* Accuracy on the most confident fraction c of the test set, c = 5%..100%. */
bool bnn_plot_coverage(const char *dir, const bnn_result *r, int n_results,
                       const int *labels, int n)
{
    enum { POINTS = 20 };
    static const char *const colors[] = {"#1f77b4", "#d62728", "#2ca02c",
                                         "#9467bd"};
    double x[POINTS], y[4][POINTS];
    svg_series s[4];
    for (int m = 0; m < n_results && m < 4; m++) {
        for (int i = 0; i < POINTS; i++) {
            x[i] = (i + 1) / (double)POINTS;
            y[m][i] = tg_metric_accuracy_at_coverage(r[m].mean, labels, n,
                                                     BNN_CLASSES, x[i]);
        }
        s[m] = (svg_series){r[m].method, colors[m], x, y[m], POINTS};
    }
    return svg_line_chart(cli_path(dir, "coverage.svg"),
                          "Accuracy on the most confident test digits",
                          "coverage (fraction kept, most confident first)",
                          "accuracy", s, n_results < 4 ? n_results : 4);
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

/* One cell: the digit (side x side, scaled) on the left, then ten bars of
 * height p_k (class 0 first), the true class's bar red, the others blue. */
static void draw_cell(uint8_t *rgb, int w, int x0, int y0, const float *img,
                      int side, const float *p, int label)
{
    int hgt = side * SCALE;
    for (int y = 0; y < hgt; y++)
        for (int x = 0; x < hgt; x++) {
            float v = img[(y / SCALE) * side + x / SCALE];
            uint8_t g = (uint8_t)(fminf(fmaxf(v, 0.0f), 1.0f) * 255.0f);
            uint8_t *px = rgb + 3 * ((size_t)(y0 + y) * w + x0 + x);
            px[0] = px[1] = px[2] = g;
        }
    int bx = x0 + hgt + GAP;
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
                   int side, const int *labels, int n)
{
    by_entropy *order = malloc(sizeof *order * (size_t)n);
    if (!order)
        return false;
    for (int i = 0; i < n; i++)
        order[i] = (by_entropy){r->u[i].total, i};
    qsort(order, (size_t)n, sizeof *order, lower_entropy_first);
    int rows = n < ROWS ? n : ROWS;
    int cell_w = side * SCALE + GAP + BNN_CLASSES * BAR_W;
    int cell_h = side * SCALE;
    int w = 2 * cell_w + 4 * GAP, h = rows * (cell_h + GAP) + GAP;
    uint8_t *rgb = malloc(3 * (size_t)w * h);
    if (!rgb) {
        free(order);
        return false;
    }
    memset(rgb, 255, 3 * (size_t)w * h);
    for (int y = 0; y < h; y++) /* a gray rule between the columns */
        memset(rgb + 3 * ((size_t)y * w + cell_w + 2 * GAP - 1), 128, 3);
    for (int row = 0; row < rows; row++)
        for (int col = 0; col < 2; col++) {
            int i = col ? order[n - 1 - row].i : order[row].i;
            draw_cell(rgb, w, GAP + col * (cell_w + 2 * GAP),
                      GAP + row * (cell_h + GAP),
                      images + (size_t)i * side * side, side,
                      r->mean + (size_t)i * BNN_CLASSES, labels[i]);
        }
    char name[96];
    snprintf(name, sizeof name, "sure_%s.png", r->method);
    bool ok = png_write_rgb(cli_path(dir, name), w, h, rgb);
    free(rgb);
    free(order);
    return ok;
}
