/* Pictures for vae_score: overlaid score histograms and a labelled scatter
 * (SVG) written to f, and the colour scale of its heat maps. Each returns
 * false when something could not be written. */
#ifndef EX_SCORE_PLOTS_H
#define EX_SCORE_PLOTS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* One panel per score: the scores of up to HIST_MAX_SETS sets of images,
 * set 0 the in-distribution test set (higher = more out-of-distribution). */
#define HIST_MAX_SETS 6
typedef struct hist_panel {
    const char *name;
    const double *v[HIST_MAX_SETS];
    int n[HIST_MAX_SETS];
    double auroc; /* shown in the panel's title when finite */
} hist_panel;

/* Overlaid histograms of each panel's sets (set_names for the legend) over
 * the 1st to 99th percentile of all its values, on a log axis when the
 * values are positive and span more than a factor of 20. Values below or
 * above that range are counted in two marked overflow bins beside the axis
 * ("< lo", "> hi"). Ticks on both axes, axis labels, AUROC in the title. */
bool plot_histograms(FILE *f, const char *title, const hist_panel *panels,
                     int n_panels, const char *const *set_names, int n_sets,
                     const char *auroc_of, int bins);

/* n points (x, y) coloured by label (0..9 get distinct colours), with a
 * legend; labels NULL: one colour, no legend. */
bool plot_scatter(FILE *f, const char *title, const char *xlabel,
                  const char *ylabel, const float *x, const float *y,
                  const uint8_t *labels, int n);

/* t in [0, 1] (clamped) to black - purple - red - orange - pale yellow. */
void heat_rgb(float t, uint8_t rgb[3]);

#endif
