/* bnn_mnist: what the program's two files share (bnn_mnist.c trains and
 * scores, bnn_plots.c draws). */
#ifndef EX_BNN_MNIST_H
#define EX_BNN_MNIST_H

#include <stdbool.h>
#include <stdint.h>

#include "tapegrad.h"

enum { BNN_CLASSES = 10, BNN_BINS = 15 };

/* One method's scores: the predictive mean and its uncertainty on the test
 * set, the reliability bins, and the table row. */
typedef struct bnn_result {
    const char *method;
    float *mean;       /* [n_test, 10] */
    tg_uncertainty *u; /* [n_test] */
    tg_reliability_bin bins[BNN_BINS];
    double acc, nll, brier, ece, acc90, acc80;
    double auroc_entropy, auroc_mi, auroc_msp; /* NaN without OOD data */
    double train_per_s, infer_per_s;
    bool has_mi; /* false when S = 1 (mutual information is 0) */
} bnn_result;

/* reliability_<method>.svg, coverage.svg and sure_<method>.png in dir;
 * images [n, 784] are the test digits. false (errno set) on a write error. */
bool bnn_plot_reliability(const char *dir, const bnn_result *r);
bool bnn_plot_coverage(const char *dir, const bnn_result *r, int n_results,
                       const int *labels, int n);
bool bnn_plot_sure(const char *dir, const bnn_result *r, const float *images,
                   int side, const int *labels, int n);

#endif
