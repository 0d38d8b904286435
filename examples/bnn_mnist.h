/* bnn_mnist: what the program's files share (bnn_mnist.c: flags, scoring,
 * the table; bnn_nets.c: the networks, training, prediction; bnn_plots.c:
 * the pictures). */
#ifndef EX_BNN_MNIST_H
#define EX_BNN_MNIST_H

#include <stdbool.h>
#include <stdint.h>

#include "tapegrad.h"

enum { BNN_CLASSES = 10, BNN_BINS = 15 };

enum { DET, MCDROPOUT, BBB, ENSEMBLE, N_METHODS };
/* rows per prediction pass; the largest ensemble */
enum { EVAL_ROWS = 1000, MAX_MEMBERS = 32 };

typedef struct options {
    const char *data, *ood, *out;
    bool ood_given;
    bool no_ood; /* --ood-data none */
    bool run[N_METHODS];
    int epochs, batch, hidden, samples, members, threads, max_batches, max_eval;
    int kl_warmup, train_samples;
    float lr, dropout, prior_scale, rho_init;
    uint64_t seed;
} options;

/* ---- bnn_nets.c ---------------------------------------------------------- */

typedef struct net {
    tg_params *ps;
    tg_dense_layer fc[3];
    tg_bayes_dense bfc[3]; /* bbb */
    bool bayes;
    float dropout; /* mcdropout: drop probability after each hidden ReLU */
} net;

/* The network for method, weights drawn from (seed, stream 0). */
void net_init(net *m, int method, const options *o, int input, uint64_t seed);
/* logits [B, 10]. rng is the noise (bbb's eps, dropout's masks); NULL gives
 * the deterministic pass (posterior means, no dropout). When kl is not NULL
 * (bbb training) it gets the sum of the layers' KL to the prior. */
tg_tensor *net_logits(tg_tape *tp, const net *m, tg_tensor *x, tg_rng *rng,
                      tg_tensor **kl);
/* Trains one network (Adam, data order from seed, noise from (seed, 1));
 * returns seconds spent and adds the images it saw to *seen. Exits 3 on a
 * NaN/Inf loss. */
double train(net *m, const options *o, const tg_dataset *train_set,
             uint64_t seed, const char *what, long *seen);
/* samples [S, n, 10] of softmax probabilities: sample s of row i from net s
 * (n_nets = S > 1, the ensemble), or pass s of nets[0] with noise from rng
 * (S passes), or the deterministic pass (S = 1, rng NULL). */
void predict(tg_tape *tp, const net *nets, int n_nets, int S, tg_rng *rng,
             const float *images, int n, int input, float *samples);

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
 * images [n, side_r * side_c] are the test digits. false (errno set) on a write
 * error. */
bool bnn_plot_reliability(const char *dir, const bnn_result *r);
bool bnn_plot_coverage(const char *dir, const bnn_result *r, int n_results,
                       const int *labels, int n);
bool bnn_plot_sure(const char *dir, const bnn_result *r, const float *images,
                   int side_r, int side_c, const int *labels, int n);

#endif
