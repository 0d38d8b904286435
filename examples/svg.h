/* Line charts as SVG, drawn by the examples themselves (no plotting tool). */
#ifndef EX_SVG_H
#define EX_SVG_H

#include <stdbool.h>

typedef struct svg_series {
    const char *name;  /* legend */
    const char *color; /* CSS colour, e.g. "#1f77b4" */
    const double *x, *y;
    int n;
} svg_series;

/* One chart with axes, ticks, labels and a legend. Non-finite points are
 * skipped. Returns false with errno set when the file cannot be written. */
bool svg_line_chart(const char *path, const char *title, const char *xlabel,
                    const char *ylabel, const svg_series *series, int n_series);

#endif
