/* SVG pictures drawn by the examples themselves (no plotting tool): the
 * one preamble every picture starts with, and line charts. */
#ifndef EX_SVG_H
#define EX_SVG_H

#include <stdbool.h>
#include <stdio.h>

/* "<svg ...>" of w x h pixels on white, with title centred at the top. */
void svg_begin(FILE *f, int w, int h, int font_size, const char *title);
/* A "nice" tick step (1, 2 or 5 times a power of ten) for about 6 ticks
 * over span. */
double svg_tick_step(double span);
/* "</svg>"; false if anything written to f failed. */
bool svg_end(FILE *f);

typedef struct svg_series {
    const char *name;  /* legend */
    const char *color; /* CSS colour, e.g. "#1f77b4" */
    const double *x, *y;
    int n;
} svg_series;

/* One chart with axes, ticks, labels and a legend, written to f. Non-finite
 * points are skipped. Returns false when something could not be written. */
bool svg_line_chart(FILE *f, const char *title, const char *xlabel,
                    const char *ylabel, const svg_series *series, int n_series);

#endif
