#include "svg.h"

#include <math.h>
#include <stdio.h>

enum { W = 640, H = 420, LEFT = 70, RIGHT = 20, TOP = 40, BOTTOM = 50 };

/* A "nice" tick step (1, 2 or 5 times a power of ten) for about 6 ticks. */
double svg_tick_step(double span)
{
    double raw = span / 6.0, p = pow(10.0, floor(log10(raw)));
    double f = raw / p;
    return (f < 1.5 ? 1.0 : f < 3.5 ? 2.0 : f < 7.5 ? 5.0 : 10.0) * p;
}

void svg_begin(FILE *f, int w, int h, int font_size, const char *title)
{
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
            "height=\"%d\" font-family=\"sans-serif\" font-size=\"%d\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
            "<text x=\"%d\" y=\"22\" text-anchor=\"middle\" "
            "font-size=\"15\">%s</text>\n",
            w, h, font_size, w / 2, title);
}

bool svg_end(FILE *f)
{
    fprintf(f, "</svg>\n");
    return !ferror(f);
}

bool svg_line_chart(FILE *f, const char *title, const char *xlabel,
                    const char *ylabel, const svg_series *series, int n_series)
{
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int s = 0; s < n_series; s++)
        for (int i = 0; i < series[s].n; i++) {
            double x = series[s].x[i], y = series[s].y[i];
            if (!isfinite(x) || !isfinite(y))
                continue;
            x0 = fmin(x0, x), x1 = fmax(x1, x);
            y0 = fmin(y0, y), y1 = fmax(y1, y);
        }
    if (!(x0 <= x1))
        x0 = 0, x1 = 1, y0 = 0, y1 = 1;
    if (x1 - x0 < 1e-9)
        x0 -= 0.5, x1 += 0.5;
    if (y1 - y0 < 1e-9)
        y0 -= 0.5, y1 += 0.5;
    double pad = 0.05 * (y1 - y0);
    y0 -= pad, y1 += pad;
    const double pw = W - LEFT - RIGHT, ph = H - TOP - BOTTOM;
#define PX(x) (LEFT + ((x)-x0) / (x1 - x0) * pw)
#define PY(y) (TOP + (1.0 - ((y)-y0) / (y1 - y0)) * ph)

    svg_begin(f, W, H, 12, title);
    fprintf(f,
            "<rect x=\"%d\" y=\"%d\" width=\"%g\" height=\"%g\" fill=\"none\" "
            "stroke=\"#444\"/>\n",
            LEFT, TOP, pw, ph);

    double ys = svg_tick_step(y1 - y0);
    for (double y = ceil(y0 / ys) * ys; y <= y1; y += ys)
        fprintf(f,
                "<line x1=\"%d\" x2=\"%g\" y1=\"%.1f\" y2=\"%.1f\" "
                "stroke=\"#ddd\"/><text x=\"%d\" y=\"%.1f\" "
                "text-anchor=\"end\">%g</text>\n",
                LEFT, LEFT + pw, PY(y), PY(y), LEFT - 6, PY(y) + 4, y);
    double xs = svg_tick_step(x1 - x0);
    if (xs < 1.0 && x1 - x0 >= 1.0)
        xs = 1.0;
    for (double x = ceil(x0 / xs) * xs; x <= x1 + 1e-9; x += xs)
        fprintf(f,
                "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%g\" "
                "stroke=\"#ddd\"/><text x=\"%.1f\" y=\"%g\" "
                "text-anchor=\"middle\">%g</text>\n",
                PX(x), PX(x), TOP, TOP + ph, PX(x), TOP + ph + 16, x);
    fprintf(f,
            "<text x=\"%g\" y=\"%d\" text-anchor=\"middle\">%s</text>\n"
            "<text x=\"16\" y=\"%g\" text-anchor=\"middle\" "
            "transform=\"rotate(-90 16 %g)\">%s</text>\n",
            LEFT + pw / 2, H - 12, xlabel, TOP + ph / 2, TOP + ph / 2, ylabel);

    for (int s = 0; s < n_series; s++) {
        const svg_series *sr = &series[s];
        fprintf(f,
                "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" "
                "points=\"",
                sr->color);
        for (int i = 0; i < sr->n; i++)
            if (isfinite(sr->x[i]) && isfinite(sr->y[i]))
                fprintf(f, "%.1f,%.1f ", PX(sr->x[i]), PY(sr->y[i]));
        fprintf(f, "\"/>\n");
        for (int i = 0; i < sr->n; i++)
            if (isfinite(sr->x[i]) && isfinite(sr->y[i]))
                fprintf(f,
                        "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" "
                        "fill=\"%s\"/>\n",
                        PX(sr->x[i]), PY(sr->y[i]), sr->color);
        double ly = TOP + 16 + 18 * s;
        fprintf(f,
                "<line x1=\"%g\" x2=\"%g\" y1=\"%g\" y2=\"%g\" stroke=\"%s\" "
                "stroke-width=\"3\"/><text x=\"%g\" y=\"%g\">%s</text>\n",
                LEFT + pw - 130, LEFT + pw - 110, ly, ly, sr->color,
                LEFT + pw - 104, ly + 4, sr->name);
    }
#undef PX
#undef PY
    return svg_end(f);
}
