/* Pictures for vae_score: overlaid score histograms and a labelled scatter
 * (SVG) written to f, and the colour scale of its heat maps. Each returns
 * false when something could not be written. */
#ifndef EX_SCORE_PLOTS_H
#define EX_SCORE_PLOTS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* One panel: the in-distribution scores and (when ood is not NULL) the
 * out-of-distribution ones, drawn as overlaid normalised histograms. */
typedef struct hist_panel {
    const char *name;
    const double *in, *ood;
    int n_in, n_ood;
    double auroc; /* shown in the panel's title when finite */
} hist_panel;

bool plot_histograms(FILE *f, const char *title, const hist_panel *panels,
                     int n_panels, int bins);

/* n points (x, y) coloured by label (0..9 get distinct colours). */
bool plot_scatter(FILE *f, const char *title, const char *xlabel,
                  const char *ylabel, const float *x, const float *y,
                  const uint8_t *labels, int n);

/* t in [0, 1] (clamped) to black - purple - red - orange - pale yellow. */
void heat_rgb(float t, uint8_t rgb[3]);

#endif
