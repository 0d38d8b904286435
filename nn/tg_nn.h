/* tapegrad nn: what a model is built from. Seeded RNG, parameter sets,
 * layers (Dense, Conv1d and Conv2d and their transposes, LayerNorm,
 * GroupNorm, Embedding, GRU and LSTM cells, variational Dense and Conv2d,
 * dropout), losses, optimizers (SGD/Nesterov, Adam, AdamW, RMSprop),
 * gradient clipping, learning-rate schedules, metrics of predictive
 * distributions and OOD scores, the reparameterization trick and one-hot,
 * checkpoints (safetensors, whole or by name prefix), atomic output files,
 * IDX data and batchers.
 *
 * Bad data (files, arguments) is reported, never aborted on: functions that
 * read or write return a tg_status and leave a one-line message for
 * tg_errmsg(). */
#ifndef TG_NN_H
#define TG_NN_H

#include "tg_autograd.h"

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status -------------------------------------------------------------- */

typedef enum tg_status {
    TG_OK = 0,
    TG_ERR_IO,       /* could not open, read, write or rename a file */
    TG_ERR_FORMAT,   /* the file is not what it claims (magic, sizes, JSON) */
    TG_ERR_MISMATCH, /* a valid file that does not fit (shapes, names) */
    TG_ERR_ARG,      /* a bad argument value */
    TG_ERR_NOMEM,
    TG_ERR_UNSUPPORTED, /* e.g. .gz without zlib */
} tg_status;

/* The message of the last error on this thread ("" if none): one line that
 * names the file or value and what is wrong. */
const char *tg_errmsg(void);
/* Sets the message (printf-style) and returns status, for one-line returns:
 * return tg_error(TG_ERR_FORMAT, "%s: bad magic 0x%08x", path, magic); */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
tg_status
tg_error(tg_status status, const char *fmt, ...);

/* ---- random numbers ---------------------------------------------------------
 * xoshiro256** seeded through splitmix64 from (seed, stream): one stream per
 * purpose (init, data order, noise) so each is reproducible on its own. */
typedef struct tg_rng {
    uint64_t s[4];
} tg_rng;

void tg_rng_seed(tg_rng *r, uint64_t seed, uint64_t stream);
uint64_t tg_rng_u64(tg_rng *r);
uint32_t tg_rng_below(tg_rng *r, uint32_t n); /* uniform in [0, n), unbiased */
float tg_rng_uniform(tg_rng *r);              /* uniform in [0, 1) */
float tg_rng_normal(tg_rng *r);               /* N(0, 1) */
/* lo + (hi - lo) * u, u uniform in [0, 1): in [lo, hi], hi itself possible
 * through the float rounding (7 in 82 million draws in [1, 2]). */
void tg_rng_fill_uniform(tg_rng *r, float *x, size_t n, float lo, float hi);
void tg_rng_fill_normal(tg_rng *r, float *x, size_t n, float mean, float std);
/* N(0, 1) in bulk, vectorised and threaded (about 20x tg_rng_fill_normal
 * on one core): takes exactly one draw from r (the key) whatever n is, then
 * fills x in fixed blocks, each from its own stream seeded (key, block), so
 * the values are the same for any thread count. A different sequence from
 * tg_rng_fill_normal's; |x| <= 6.56 (the tail beyond, probability 5e-11, is
 * cut). */
void tg_rng_fill_normal_bulk(tg_rng *r, float *x, size_t n);

/* ---- dropout ---------------------------------------------------------------
 * Inverted dropout: each element of x is zeroed with probability p and the
 * survivors are scaled by 1 / (1 - p), so the expected value is unchanged.
 * Whether it drops is the mode's choice, never the tape's alone:
 *   TG_DROPOUT_TRAIN  always drops: training, and MC dropout at test time
 *                     (recording off, S passes with dropout on);
 *   TG_DROPOUT_EVAL   never: returns x itself (evaluation);
 *   TG_DROPOUT_AUTO   drops while tp records, returns x when recording is
 *                     off (inference under tg_tape_set_recording(tp, false)).
 * When it drops it takes one draw from rng (a key) and fills the mask in
 * fixed blocks from streams seeded (key, block), on threads (a seed gives
 * the same mask on any thread count); when it does not, or p = 0, rng is not
 * touched and may be NULL. p = 1 zeroes everything. The mask is saved for
 * backward on the tape. */
typedef enum tg_dropout_mode {
    TG_DROPOUT_AUTO = 0,
    TG_DROPOUT_TRAIN,
    TG_DROPOUT_EVAL,
} tg_dropout_mode;

tg_tensor *tg_dropout(tg_tape *tp, tg_tensor *x, float p, tg_rng *rng,
                      tg_dropout_mode mode);

/* ---- parameter sets ---------------------------------------------------------
 * Named long-lived tensors ("encoder.fc1.weight"). Every parameter's data
 * lives in one contiguous buffer and every grad in another, in the order
 * added: one all-reduce syncs them all, an optimizer sees one array.
 *
 * Pointer stability: a parameter's tg_tensor, its data and its grad pointers
 * are final from tg_params_add on (the set reserves address space up front
 * and never moves storage); keeping `float *w = layer.W->data` is safe for
 * the set's life. A parameter requires grad from the start, so a layer can be
 * used on a tape (forward and backward) before anything seals the set.
 * Sealing (tg_params_seal, or the first optimizer, checkpoint or zero_grad
 * call) only closes the set: tg_params_add afterwards aborts. A set holds up
 * to 512 M floats (less where address space is limited, e.g. valgrind). */
typedef struct tg_params tg_params;

tg_params *tg_params_new(void);
void tg_params_free(tg_params *ps);
/* A new zeroed parameter owned by the set (requires grad, grad zeroed);
 * aborts on a duplicate name, after sealing, or on a name a checkpoint
 * reserves ("optim.m." / "optim.v." + anything, "__metadata__"). */
tg_tensor *tg_params_add(tg_params *ps, const char *name, int ndim,
                         const int *shape);
void tg_params_seal(tg_params *ps);
int tg_params_count(const tg_params *ps);
tg_tensor *tg_params_get(const tg_params *ps, int i);
const char *tg_params_name(const tg_params *ps, int i);
tg_tensor *tg_params_find(const tg_params *ps, const char *name); /* or NULL */
size_t tg_params_numel(const tg_params *ps); /* total elements */
float *tg_params_data(tg_params *ps);        /* contiguous, seals */
float *tg_params_grad(tg_params *ps);        /* contiguous, seals */
void tg_params_zero_grad(tg_params *ps);
/* True when every parameter value and gradient is finite; otherwise *where
 * (if not NULL) names the first tensor holding a NaN or Inf. */
bool tg_params_finite(tg_params *ps, const char **where);
/* The largest |gradient| (NaN if any gradient is NaN): for a NaN guard that
 * also catches gradients whose square would overflow, or for clipping. */
float tg_params_grad_absmax(tg_params *ps);
/* The largest |value| and |gradient| in one pass over both buffers (each
 * NaN if any of its elements is NaN). */
void tg_params_absmax(tg_params *ps, float *value, float *grad);
/* The NaN/Inf guard of a training step, after backward: NULL when every
 * value and gradient g is finite and so is g * g (Adam's second moment, a
 * convex mix of g * g, then stays finite too). Otherwise the name of the
 * first tensor that fails, and *why (if not NULL) says how (nn/guard.c). */
const char *tg_params_nonfinite(tg_params *ps, const char **why);

/* ---- layers -------------------------------------------------------------- */

/* GLOROT and HE draw W alone and leave the bias at 0; TORCH draws both. */
typedef enum tg_init {
    TG_INIT_GLOROT, /* uniform +-sqrt(6 / (in + out)): sigmoid, tanh, linear */
    TG_INIT_HE,     /* normal, std sqrt(2 / in): followed by ReLU */
    TG_INIT_TORCH,  /* uniform +-1/sqrt(in) for W and b, PyTorch's Linear */
} tg_init;

/* y = x . W^T + b; W [out, in] as PyTorch stores it, b [out]. Parameters are
 * registered in ps as "<name>.weight" and "<name>.bias". */
typedef struct tg_dense_layer {
    tg_tensor *W, *b;
    int in, out;
} tg_dense_layer;

void tg_dense_layer_init(tg_dense_layer *l, tg_params *ps, const char *name,
                         int in, int out, tg_init init, tg_rng *rng);
tg_tensor *tg_dense_apply(tg_tape *tp, const tg_dense_layer *l, tg_tensor *x);

/* ---- variational Dense layer (nn/bayes.c) -----------------------------------
 * Bayes by Backprop (Blundell et al. 2015) with the local reparameterization
 * trick (Kingma et al. 2015). Posterior over W [out, in] and b [out]: a
 * factorised Gaussian N(mu, sigma^2), sigma = softplus(rho); prior
 * N(0, prior_scale^2) on every weight and bias. The sample's sigma^2 is
 * floored at FLT_MIN (rho < -43.7), so its variance is > 0 and its
 * gradient finite for any rho; the KL uses softplus(rho) itself. Parameters
 * "<name>.weight_mu", ".weight_rho", ".bias_mu", ".bias_rho" live in the set
 * (save and load like any other). Training loss (the negative ELBO per
 * example):
 *   mean NLL over the batch + (sum of the layers' KL) / N,  N = training set
 * size. Costs two GEMMs forward where a Dense layer costs one. */
typedef struct tg_bayes_dense {
    tg_tensor *W_mu, *W_rho, *b_mu, *b_rho;
    int in, out;
    float prior_scale;
} tg_bayes_dense;

/* Means uniform +-1/sqrt(in) (PyTorch's Linear, drawn W then b from rng);
 * every rho = rho_init (-5 gives sigma 0.0067). Aborts on bad sizes or
 * prior_scale <= 0. */
void tg_bayes_dense_init(tg_bayes_dense *l, tg_params *ps, const char *name,
                         int in, int out, float prior_scale, float rho_init,
                         tg_rng *rng);
/* A sampled pre-activation y [B, out] for x [B, in]:
 *   y = x.W_mu^T + b_mu + sqrt((x*x).(sigma_W^2)^T + sigma_b^2) * eps,
 * eps ~ N(0, I) from tg_rng_fill_normal_bulk(rng) (the same for any thread
 * count). rng NULL: the posterior mean's output x.W_mu^T + b_mu. */
tg_tensor *tg_bayes_dense_apply(tg_tape *tp, const tg_bayes_dense *l,
                                tg_tensor *x, tg_rng *rng);
/* The same with caller-supplied noise eps [B, out] (tests, fixed noise). */
tg_tensor *tg_bayes_dense_apply_eps(tg_tape *tp, const tg_bayes_dense *l,
                                    tg_tensor *x, tg_tensor *eps);
/* The Gaussian of the pre-activations given x, y = mean + sd * eps:
 *   mean = x.W_mu^T + b_mu,  sd = sqrt((x*x).(sigma_W^2)^T + sigma_b^2),
 * both [B, out] graphs. S sampled passes over the same x (a first layer at
 * prediction time) can compute them once and draw only eps per pass: the
 * same samples as S calls of tg_bayes_dense_apply, at a fraction of the
 * GEMMs. */
void tg_bayes_dense_moments(tg_tape *tp, const tg_bayes_dense *l, tg_tensor *x,
                            tg_tensor **mean, tg_tensor **sd);
/* Training: the sample as tg_bayes_dense_apply (rng required) and *kl =
 * the layer's KL as tg_bayes_dense_kl, both from one pass over rho (half the
 * work of calling the two). */
tg_tensor *tg_bayes_dense_apply_kl(tg_tape *tp, const tg_bayes_dense *l,
                                   tg_tensor *x, tg_rng *rng, tg_tensor **kl);
/* KL(q || p) over all weights and biases in closed form, a [1] graph:
 * sum log(p/sigma) + (sigma^2 + mu^2) / (2 p^2) - 1/2. */
tg_tensor *tg_bayes_dense_kl(tg_tape *tp, const tg_bayes_dense *l);
/* Prediction without a tape (S sampled passes of a trained network):
 * sigma^2 of the weights into var_W [out * in] and of the biases into
 * var_b [out], the values the layer's forward uses (floored at FLT_MIN). */
void tg_bayes_dense_variances(const tg_bayes_dense *l, float *var_W,
                              float *var_b);
/* y[i] = mean[i] + sqrt(var[i]) * eps[i] for i < n, then max(y, 0) when
 * relu, and y_sq[i] = y[i]^2 unless y_sq is NULL, with eps the n normals
 * tg_rng_fill_normal_bulk(rng, eps, n) would draw: the same values as those
 * ops on the tape (tg_sqrt, tg_mul, tg_add, tg_relu, tg_square) in one pass,
 * without storing eps. With var = (x*x).(sigma_W^2)^T + sigma_b^2 and mean
 * = x.W_mu^T + b_mu it is tg_bayes_dense_apply's sample. y and y_sq must not
 * overlap mean, var or each other. */
void tg_bayes_draw(tg_rng *rng, const float *mean, const float *var, size_t n,
                   bool relu, float *y, float *y_sq);
/* Prediction: S sampled passes of an MLP of variational layers with ReLU
 * between them (not after the last), for x [rows, layers[0].in]: out
 * [S, rows, layers[n_layers - 1].out] gets pass s's output. The same values
 * as S passes of tg_bayes_dense_apply (and tg_relu) on a tape with this
 * rng, pass by pass, layer by layer (rng advances as they would), on any
 * thread count; but layer 1's mean and variance are computed once for all
 * passes (x is the same), sigma^2 once per call, and the passes run in
 * parallel, one per thread, without a tape. Aborts naming the layer when
 * layer l's input is not layer l - 1's output. */
void tg_bayes_mlp_sample(const tg_bayes_dense *layers, int n_layers,
                         const float *x, int rows, int S, tg_rng *rng,
                         float *out);

/* ---- variational Conv2d layer (nn/bayes_conv.c) ----------------------------
 * Bayes by Backprop over a convolution (tg_conv2d_layer's geometry: square
 * kernel, stride, padding, no dilation), the counterpart of tg_bayes_dense:
 * posterior N(mu, softplus(rho)^2) per weight of W [out, in, k, k] and per
 * bias b [out] (the sample's sigma^2 floored at FLT_MIN, as there), prior
 * N(0, prior_scale^2). Parameters "<name>.weight_mu",
 * ".weight_rho" [out, in, k, k] and ".bias_mu", ".bias_rho" [out] live in
 * the set (save and load like any other). Local reparameterization for
 * convolutions (Kingma et al. 2015): every output element is sampled
 * directly from its Gaussian given x, at two convolutions per layer where a
 * Conv2d layer costs one. Training loss as tg_bayes_dense's:
 *   mean NLL over the batch + (sum of the layers' KL) / N. */
typedef struct tg_bayes_conv2d {
    tg_tensor *W_mu, *W_rho, *b_mu, *b_rho;
    int in, out, kernel;
    tg_conv2d_args args; /* stride and padding; dilation 1; relu refused
                          * (apply tg_relu to the output) */
    float prior_scale;
} tg_bayes_conv2d;

/* Means uniform +-1/sqrt(in * k * k) (PyTorch's Conv2d, tg_conv2d_layer's
 * TG_INIT_TORCH, drawn W then b from rng); every rho = rho_init. Aborts on
 * bad sizes or prior_scale <= 0. */
void tg_bayes_conv2d_init(tg_bayes_conv2d *l, tg_params *ps, const char *name,
                          int in, int out, int kernel, int stride, int padding,
                          float prior_scale, float rho_init, tg_rng *rng);
/* A sampled pre-activation y [B, out, OH, OW] for x [B, in, H, W]:
 *   y = conv2d(x, W_mu) + b_mu + sqrt(conv2d(x*x, sigma_W^2) + sigma_b^2)
 *       * eps,
 * eps ~ N(0, I) from tg_rng_fill_normal_bulk(rng) (the same for any thread
 * count). rng NULL: the posterior mean's output conv2d(x, W_mu) + b_mu. */
tg_tensor *tg_bayes_conv2d_apply(tg_tape *tp, const tg_bayes_conv2d *l,
                                 tg_tensor *x, tg_rng *rng);
/* The same with caller-supplied noise eps [B, out, OH, OW] (tests, fixed
 * noise). */
tg_tensor *tg_bayes_conv2d_apply_eps(tg_tape *tp, const tg_bayes_conv2d *l,
                                     tg_tensor *x, tg_tensor *eps);
/* Training: the sample as tg_bayes_conv2d_apply (rng required) and *kl =
 * the layer's KL as tg_bayes_conv2d_kl, both from one pass over rho. */
tg_tensor *tg_bayes_conv2d_apply_kl(tg_tape *tp, const tg_bayes_conv2d *l,
                                    tg_tensor *x, tg_rng *rng, tg_tensor **kl);
/* KL(q || p) over all weights and biases in closed form, a [1] graph:
 * sum log(p/sigma) + (sigma^2 + mu^2) / (2 p^2) - 1/2. */
tg_tensor *tg_bayes_conv2d_kl(tg_tape *tp, const tg_bayes_conv2d *l);

/* ---- metrics of predictive distributions (nn/metrics.c) ---------------------
 * For any classifier: probs [n, C] row-major probabilities (each row sums to
 * 1), labels [n] in 0..C-1. Confidence = the largest probability of a row,
 * the prediction = its class (the first on ties). Computed in double,
 * serially: results do not depend on the thread count. Aborts on n < 1,
 * C < 2, a label outside 0..C-1, or a row that is not a distribution: an
 * entry NaN, Inf or outside [0, 1], or a sum further than TG_PROB_SUM_TOL
 * from 1 (the message names the row). */
#define TG_ECE_MAX_BINS 100
#define TG_PROB_SUM_TOL 1e-3
#define TG_PROB_FLOOR 1e-12 /* tg_metric_nll reads p < 1e-12 as 1e-12 */

typedef struct tg_reliability_bin {
    double lo, hi;     /* confidences in (lo, hi]; the first bin has 0 too */
    int count;         /* examples in the bin */
    double confidence; /* their mean confidence (NaN when empty) */
    double accuracy;   /* their accuracy (NaN when empty) */
} tg_reliability_bin;

/* Expected calibration error with `bins` equal-width bins (15 is usual):
 * sum_b (count_b / n) |accuracy_b - confidence_b|. Bin b holds confidences
 * in (b / bins, (b + 1) / bins] with exact edges, so the float nearest 1/15
 * (just above it) is in bin 1. out (may be NULL) gets
 * the bins for a reliability diagram. */
double tg_metric_ece(const float *probs, const int *labels, int n, int C,
                     int bins, tg_reliability_bin *out);
/* Brier score: mean over rows of sum_k (p_k - [k == label])^2, in [0, 2]. */
double tg_metric_brier(const float *probs, const int *labels, int n, int C);
/* Negative log-likelihood: mean of -log max(p[label], TG_PROB_FLOOR). */
double tg_metric_nll(const float *probs, const int *labels, int n, int C);
double tg_metric_accuracy(const float *probs, const int *labels, int n, int C);
/* Accuracy on the ceil(coverage * n) most confident rows (coverage in
 * (0, 1]; equal confidences are taken in row order; coverage * n within
 * 1e-9 of an integer counts as that integer, so 0.9 of 10 rows is 9). */
double tg_metric_accuracy_at_coverage(const float *probs, const int *labels,
                                      int n, int C, double coverage);

/* Uncertainty of one example's predictive distribution, in nats. */
typedef struct tg_uncertainty {
    double total;     /* entropy of the mean prediction H(pbar) */
    double aleatoric; /* mean entropy of the samples, mean_s H(p_s) */
    double epistemic; /* mutual information = total - aleatoric, >= 0,
                         computed as mean_s KL(p_s || pbar): exactly 0 when
                         the samples are identical */
} tg_uncertainty;

/* The predictive distribution from S sampled predictions: samples
 * [S, n, C] (sample s of row i at (s * n + i) * C). mean [n, C] (may be
 * NULL) gets pbar = mean_s p_s, u [n] (may be NULL) the decomposition. */
void tg_predictive(const float *samples, int S, int n, int C, float *mean,
                   tg_uncertainty *u);

/* P(pos > neg) + P(pos == neg) / 2 over all pairs, from ranks (O(n log n)):
 * the area under the ROC curve of a score that should be higher for the
 * positives (e.g. out-of-distribution inputs). NaN when a score is NaN.
 * Aborts when a list is empty or the two hold more than INT_MAX scores
 * (as tg_aupr and tg_auroc_bootstrap). */
double tg_auroc(const double *neg, int n_neg, const double *pos, int n_pos);

/* Out-of-distribution detection with the positives (OOD inputs) scoring
 * higher. Each returns NaN when a score is NaN and aborts on an empty list.
 *
 * tg_fpr_at_tpr: the share of negatives at or above the threshold t, t the
 * highest value that keeps a share >= tpr of the positives at or above it
 * (the ceil(tpr * n_pos - 1e-9)-th highest positive, the slack absorbing
 * rounding: 0.55 * 100 is 55.000000000000007 in double, the 55th):
 * "FPR at 95% TPR" for 0.95.
 * tg_aupr: area under the precision-recall curve of the positives as
 * average precision, sum over thresholds (one per group of equal scores,
 * from the highest) of (new positives / n_pos) * precision there, as
 * scikit-learn's average_precision_score; the share of positives when the
 * score cannot separate at all.
 * tg_auroc_bootstrap: a percentile interval at `level` (0.95 usual) of the
 * AUROC over `resamples` stratified bootstrap resamples (negatives and
 * positives each drawn with replacement to their own size) from tg_rng
 * stream 0 of seed: the same inputs and seed give the same interval. */
double tg_fpr_at_tpr(const double *neg, int n_neg, const double *pos, int n_pos,
                     double tpr);
double tg_aupr(const double *neg, int n_neg, const double *pos, int n_pos);
void tg_auroc_bootstrap(const double *neg, int n_neg, const double *pos,
                        int n_pos, int resamples, uint64_t seed, double level,
                        double *lo, double *hi);

/* Importance weights given as k log-weights: the effective sample size
 * (sum w)^2 / sum w^2, in [1, k] (k for equal weights, 1 when one weight
 * dominates), computed with the largest weight scaled to 1. NaN when a
 * log-weight is NaN or +inf or all are -inf. */
double tg_ess_from_logw(const double *logw, int k);
/* Standard error of log((1/k) sum w) by the delta method on the mean of the
 * weights: se(mean w) / mean w = sqrt((k / ess - 1) / (k - 1)) with the
 * sample variance of the weights; NaN when k < 2, ess < 1 or ess > k (more
 * than rounding above k: no k weights give it). */
double tg_iw_log_se(double ess, int k);

/* LayerNorm over the last axis, as torch.nn.LayerNorm(dim, eps):
 * "<name>.weight" (gamma, starts at 1) and "<name>.bias" (beta, 0), both
 * [dim]; y = (x - mean) / sqrt(var + eps) * gamma + beta per row (biased
 * variance). PyTorch's eps is 1e-5. */
typedef struct tg_layer_norm_layer {
    tg_tensor *weight, *bias;
    int dim;
    float eps;
} tg_layer_norm_layer;

void tg_layer_norm_layer_init(tg_layer_norm_layer *l, tg_params *ps,
                              const char *name, int dim, float eps);
tg_tensor *tg_layer_norm_apply(tg_tape *tp, const tg_layer_norm_layer *l,
                               tg_tensor *x); /* [..., dim] -> same */

/* GroupNorm as torch.nn.GroupNorm(groups, channels, eps): "<name>.weight"
 * (gamma, starts at 1) and "<name>.bias" (beta, 0), both [channels], so a
 * checkpoint loads into torch.nn.GroupNorm unchanged. Each example's
 * channels split into groups of channels / groups, each normalised over
 * its channels and positions (biased variance), then scaled and shifted
 * per channel. groups = channels is InstanceNorm (affine), groups = 1 a
 * LayerNorm over C·H·W. Per example, so the same model on any number of
 * ranks (no batch statistics). PyTorch's eps is 1e-5. */
typedef struct tg_group_norm_layer {
    tg_tensor *weight, *bias;
    int groups, channels;
    float eps;
} tg_group_norm_layer;

void tg_group_norm_layer_init(tg_group_norm_layer *l, tg_params *ps,
                              const char *name, int groups, int channels,
                              float eps);
tg_tensor *tg_group_norm_apply(tg_tape *tp, const tg_group_norm_layer *l,
                               tg_tensor *x); /* [B, channels, ...] -> same */

/* A lookup table as torch.nn.Embedding(num, dim): "<name>.weight" [num,
 * dim], drawn N(0, 1). apply gives [n, dim], row i = weight[idx[i]] (idx in
 * 0..num-1, copied); the gradient adds back into the rows used. */
typedef struct tg_embedding_layer {
    tg_tensor *weight;
    int num, dim;
} tg_embedding_layer;

void tg_embedding_layer_init(tg_embedding_layer *l, tg_params *ps,
                             const char *name, int num, int dim, tg_rng *rng);
tg_tensor *tg_embedding_apply(tg_tape *tp, const tg_embedding_layer *l,
                              const int *idx, int n);

/* Recurrent cells as PyTorch's torch.nn.GRUCell and LSTMCell: parameters
 * "<name>.weight_ih" [G*H, in], "<name>.weight_hh" [G*H, H], "<name>.bias_ih"
 * [G*H], "<name>.bias_hh" [G*H], gates stacked in PyTorch's order (GRU: r,
 * z, n; LSTM: i, f, g, o), initialised uniform in +-1/sqrt(H). One call is
 * one time step on a batch, made of ops (dense, split, sigmoid, tanh, mul,
 * add): unroll by calling it per step on one tape; backward runs through
 * time. A NULL state means zeros. */
typedef struct tg_gru_cell {
    tg_tensor *weight_ih, *weight_hh, *bias_ih, *bias_hh;
    int in, hidden;
} tg_gru_cell;

void tg_gru_cell_init(tg_gru_cell *c, tg_params *ps, const char *name, int in,
                      int hidden, tg_rng *rng);
/* x [B, in], h [B, H] -> h' [B, H]. */
tg_tensor *tg_gru_cell_apply(tg_tape *tp, const tg_gru_cell *c, tg_tensor *x,
                             tg_tensor *h);

typedef struct tg_lstm_cell {
    tg_tensor *weight_ih, *weight_hh, *bias_ih, *bias_hh;
    int in, hidden;
} tg_lstm_cell;

void tg_lstm_cell_init(tg_lstm_cell *c, tg_params *ps, const char *name, int in,
                       int hidden, tg_rng *rng);
/* x [B, in], h and cell [B, H] -> *h_out, *cell_out [B, H]. */
void tg_lstm_cell_apply(tg_tape *tp, const tg_lstm_cell *c, tg_tensor *x,
                        tg_tensor *h, tg_tensor *cell, tg_tensor **h_out,
                        tg_tensor **cell_out);

/* ---- convolutional layers (nn/conv_layers.c) -----------------------------
 * PyTorch's torch.nn.Conv2d and ConvTranspose2d: parameters "<name>.weight"
 * [out, in, kh, kw] (Conv2d) or [in, out, kh, kw] (ConvTranspose2d, as
 * torch stores it) and "<name>.bias" [out], so a checkpoint loads into
 * torch unchanged. The _init functions make square kernels with one stride
 * and padding; the _init_ex ones take kh x kw, every tg_conv2d_args field
 * per axis, and bias false for a layer without one (l->b NULL, torch's
 * bias=False, before a normalisation). l->args.relu = true (or in the
 * _init_ex args) fuses a ReLU after the layer into its op. TG_INIT_TORCH is
 * torch's default (uniform +-1/sqrt(fan_in) for W and b, fan_in =
 * weight.shape[1] * k * k, torch's rule for both kinds); GLOROT and HE use the
 * same fans. Pooling has no parameters: call tg_max_pool2d / tg_avg_pool2d /
 * tg_upsample2d (tg_max_pool1d / tg_avg_pool1d for sequences). */
typedef struct tg_conv2d_layer {
    tg_tensor *W; /* [out, in, k, k] */
    tg_tensor *b; /* [out] */
    int in, out;
    tg_conv2d_args args;
} tg_conv2d_layer;

void tg_conv2d_layer_init(tg_conv2d_layer *l, tg_params *ps, const char *name,
                          int in, int out, int kernel, int stride, int padding,
                          tg_init init, tg_rng *rng);
/* args NULL: stride 1, no padding; output_padding must be 0. */
void tg_conv2d_layer_init_ex(tg_conv2d_layer *l, tg_params *ps,
                             const char *name, int in, int out, int kh, int kw,
                             const tg_conv2d_args *args, bool bias,
                             tg_init init, tg_rng *rng);
/* x [B, in, H, W] -> [B, out, OH, OW] */
tg_tensor *tg_conv2d_apply(tg_tape *tp, const tg_conv2d_layer *l, tg_tensor *x);

typedef struct tg_conv_transpose2d_layer {
    tg_tensor *W; /* [in, out, k, k] */
    tg_tensor *b; /* [out] */
    int in, out;
    tg_conv2d_args args;
} tg_conv_transpose2d_layer;

/* output_padding < stride. */
void tg_conv_transpose2d_layer_init(tg_conv_transpose2d_layer *l, tg_params *ps,
                                    const char *name, int in, int out,
                                    int kernel, int stride, int padding,
                                    int output_padding, tg_init init,
                                    tg_rng *rng);
/* output_padding < stride or dilation, per axis. */
void tg_conv_transpose2d_layer_init_ex(tg_conv_transpose2d_layer *l,
                                       tg_params *ps, const char *name, int in,
                                       int out, int kh, int kw,
                                       const tg_conv2d_args *args, bool bias,
                                       tg_init init, tg_rng *rng);
tg_tensor *tg_conv_transpose2d_apply(tg_tape *tp,
                                     const tg_conv_transpose2d_layer *l,
                                     tg_tensor *x);

/* 1-D layers, PyTorch's Conv1d and ConvTranspose1d: "<name>.weight"
 * [out, in, k] or [in, out, k], "<name>.bias" [out] unless bias is false;
 * init as above with fan_in = weight.shape[1] * k. x [B, C, L]. */
typedef struct tg_conv1d_layer {
    tg_tensor *W; /* [out, in, k] */
    tg_tensor *b; /* [out] or NULL */
    int in, out, stride, padding, dilation;
} tg_conv1d_layer;

void tg_conv1d_layer_init(tg_conv1d_layer *l, tg_params *ps, const char *name,
                          int in, int out, int kernel, int stride, int padding,
                          int dilation, bool bias, tg_init init, tg_rng *rng);
tg_tensor *tg_conv1d_apply(tg_tape *tp, const tg_conv1d_layer *l, tg_tensor *x);

typedef struct tg_conv_transpose1d_layer {
    tg_tensor *W; /* [in, out, k] */
    tg_tensor *b; /* [out] or NULL */
    int in, out, stride, padding, output_padding, dilation;
} tg_conv_transpose1d_layer;

/* output_padding < stride or dilation. */
void tg_conv_transpose1d_layer_init(tg_conv_transpose1d_layer *l, tg_params *ps,
                                    const char *name, int in, int out,
                                    int kernel, int stride, int padding,
                                    int output_padding, int dilation, bool bias,
                                    tg_init init, tg_rng *rng);
tg_tensor *tg_conv_transpose1d_apply(tg_tape *tp,
                                     const tg_conv_transpose1d_layer *l,
                                     tg_tensor *x);

/* [B, C, H, W] <-> [B, C*H*W] (any [B, ...] flattens): views, no copy. */
tg_tensor *tg_flatten(tg_tape *tp, tg_tensor *x);
tg_tensor *tg_unflatten(tg_tape *tp, tg_tensor *x, int C, int H, int W);

/* ---- losses (scalars: the mean over the rows of a batch) -----------------
 * A row is the last axis, as for the ops: [B, C, L] is B*C rows of L, so
 * bce and mse of [B, C, L] tensors are the mean over B*C rows, C times
 * less than the per-example sum; tg_flatten them to [B, C*L] for that. */

tg_tensor *tg_loss_bce_with_logits(tg_tape *tp, tg_tensor *logits,
                                   tg_tensor *targets); /* summed per row */
tg_tensor *tg_loss_mse(tg_tape *tp, tg_tensor *pred,
                       tg_tensor *target); /* summed per row; equal shapes */
tg_tensor *tg_loss_softmax_xent(tg_tape *tp, tg_tensor *logits,
                                const int *labels);
/* The mean of tg_nll: log-probabilities [B, C] (tg_log_softmax's) against
 * labels, as torch.nn.functional.nll_loss. */
tg_tensor *tg_loss_nll(tg_tape *tp, tg_tensor *logp, const int *labels);

/* ---- optimizers ---------------------------------------------------------- */

typedef enum tg_optim_kind {
    TG_OPTIM_SGD,
    TG_OPTIM_ADAM,
    TG_OPTIM_ADAMW,
    TG_OPTIM_RMSPROP,
} tg_optim_kind;

/* Fields may be changed between steps (lr by a schedule, say); each step
 * checks them and aborts naming one out of range (lr, weight_decay >= 0;
 * momentum, beta1, beta2 in [0, 1); alpha in [0, 1]; eps a normal float,
 * >= FLT_MIN: the updates count denormals as 0; step in [0,
 * TG_OPTIM_MAX_STEP]). kind may change only among the kinds with a second
 * moment (Adam, AdamW, RMSprop), whose state SGD's lacks. Momentum 0
 * leaves the momentum buffer alone, so momentum set later starts from the
 * gradient (as torch.optim.SGD; PyTorch's RMSprop refuses the switch).
 * A step updates every parameter of the set, also one the loss did not
 * reach (its gradient 0): momentum and Adam's moments keep moving it and
 * weight decay shrinks it, where torch.optim skips a parameter whose .grad
 * is None. Give such a parameter its own set (and optimizer) to freeze it. */
typedef struct tg_optim {
    tg_optim_kind kind;
    tg_params *params;
    float lr;
    float momentum;          /* SGD, RMSprop (default 0) */
    float beta1, beta2, eps; /* Adam, AdamW (0.9, 0.999, 1e-8); eps RMSprop */
    float weight_decay;      /* L2 added to the gradient (AdamW: decoupled) */
    int64_t step;            /* steps taken */
    float *m, *v;  /* state, tg_params_numel() each: m momentum or first
                      moment, v second moment (Adam, AdamW, RMSprop) */
    float alpha;   /* RMSprop's smoothing constant (default 0.99) */
    bool nesterov; /* SGD with momentum > 0: Nesterov's update */
} tg_optim;

/* SGD: v = momentum * v + g; p -= lr * v (PyTorch's form). With
 * opt->nesterov set: p -= lr * (g + momentum * v), as torch.optim.SGD with
 * nesterov=True. */
tg_optim *tg_sgd_new(tg_params *ps, float lr, float momentum);
/* Adam with bias correction, as torch.optim.Adam. */
tg_optim *tg_adam_new(tg_params *ps, float lr);
/* AdamW, as torch.optim.AdamW: p *= 1 - lr * weight_decay, then Adam's
 * update without the decay in the gradient (decoupled weight decay). */
tg_optim *tg_adamw_new(tg_params *ps, float lr, float weight_decay);
/* RMSprop, as torch.optim.RMSprop (not centered): v = alpha v + (1 - alpha)
 * g^2; with momentum 0 p -= lr g / (sqrt(v) + eps), else m = momentum m +
 * g / (sqrt(v) + eps), p -= lr m. alpha 0.99, eps 1e-8. */
tg_optim *tg_rmsprop_new(tg_params *ps, float lr, float momentum);
void tg_optim_step(tg_optim *opt);
void tg_optim_free(tg_optim *opt);
/* NULL when the optimizer state is finite, else the name of the first
 * parameter whose state is not (nn/guard.c). */
const char *tg_optim_nonfinite(const tg_optim *opt);

/* Global gradient-norm clipping, as torch.nn.utils.clip_grad_norm_: returns
 * the L2 norm of every gradient of ps taken together and, when max_norm
 * (> 0) / (norm + 1e-6) < 1 (the norm above max_norm - 1e-6, torch's
 * test), scales every gradient by max_norm / (norm + 1e-6). The sum
 * runs in double over fixed blocks added in order: the same bits on any
 * thread count. A NaN or Inf norm is returned and nothing is scaled (the
 * caller's guard decides). */
float tg_clip_grad_norm(tg_params *ps, float max_norm);

/* Learning-rate schedules: pure functions of the step (0-based, the number
 * of steps taken before this one), so a resumed run gets the same rates. Set
 * opt->lr = tg_lr_...(..., opt->step) before each tg_optim_step. Each
 * aborts, naming itself and its arguments, on a step < 0 and on the sizes
 * noted below.
 * Step decay: base * gamma^floor(step / step_size); step_size >= 1. */
float tg_lr_step_decay(float base, int64_t step, int64_t step_size,
                       float gamma);
/* Linear warm-up over warmup steps, base * (step + 1) / warmup, then cosine
 * decay to min_lr at total steps: min_lr + (base - min_lr) * (1 + cos(pi *
 * (step - warmup) / (total - warmup))) / 2; min_lr from total on.
 * 0 <= warmup < total. */
float tg_lr_cosine_warmup(float base, int64_t step, int64_t warmup,
                          int64_t total, float min_lr);

/* ---- checkpoints (safetensors) ---------------------------------------------
 * A file holds the parameters under their names (F32, little-endian, W as
 * [out, in] so safetensors.torch.load_file gives PyTorch's layout), the
 * optimizer state as "optim.m.<name>" / "optim.v.<name>", and string
 * metadata (model config, step, epoch, RNG state). Saving writes a temporary
 * file, fsyncs and renames: an interrupted save never leaves a broken file.
 * Its metadata also holds a checksum of the tensors (names, shapes, data)
 * and the other metadata ("tapegrad.checksum", the library's own, not
 * copied into a loaded tg_meta): a load that reads tensors refuses a file
 * that does not match it (TG_ERR_FORMAT, "damaged": a flipped bit in a
 * weight or in an "epoch" value had loaded as another model); a file
 * without one (another writer's) loads unchecked. Keys starting with
 * "tapegrad." are the library's: a save refuses a caller's (TG_ERR_ARG),
 * and a load refuses a file with one it does not write; both refuse a key
 * one bit from the checksum's ("Tapegrad.checksum": a damaged name).
 * Loading validates everything before touching the model. */
#define TG_META_MAX 32
typedef struct tg_meta {
    int n;
    char key[TG_META_MAX][64];
    char value[TG_META_MAX][256];
} tg_meta;
/* An empty tg_meta: `tg_meta meta = TG_META_INIT;` or tg_meta_init(&meta)
 * (all zero bytes is also empty). In C++ it is {}, value-initialised: a
 * designated initializer is C++20's, and flagged before it. */
#ifdef __cplusplus
#define TG_META_INIT                                                           \
    {                                                                          \
    }
#else
#define TG_META_INIT                                                           \
    {                                                                          \
        .n = 0                                                                 \
    }
#endif
void tg_meta_init(tg_meta *m);

/* Sets key (a new one, or replaces its value). Aborts naming meta_set on a
 * NULL argument, a key of 64 bytes or more, a value of 256 or more, or a
 * 33rd key (TG_META_MAX). */
void tg_meta_set(tg_meta *m, const char *key, const char *value);
void tg_meta_set_int(tg_meta *m, const char *key, int64_t value);
const char *tg_meta_get(const tg_meta *m, const char *key); /* or NULL */
/* Whether a and b hold the same entries (in any order). */
bool tg_meta_equal(const tg_meta *a, const tg_meta *b);
/* Parses an integer value; TG_ERR_FORMAT if missing or not an integer. */
tg_status tg_meta_get_int(const tg_meta *m, const char *key, int64_t *value);
/* A double as C99 hex ("%a"), so that it reads back bit for bit; getting
 * it gives TG_ERR_FORMAT if missing or not a finite number. */
void tg_meta_set_double(tg_meta *m, const char *key, double value);
tg_status tg_meta_get_double(const tg_meta *m, const char *key, double *value);
/* A generator's state (64 hex digits): a checkpoint resumes its stream
 * exactly. Getting it gives TG_ERR_FORMAT if missing, or unless it is 64
 * hex digits, not all zero. */
void tg_meta_set_rng(tg_meta *m, const char *key, const tg_rng *r);
tg_status tg_meta_get_rng(const tg_meta *m, const char *key, tg_rng *r);

/* opt and meta may be NULL. With opt, the file also gets the entries
 * "optim.kind", "optim.step" and "optim.settings" (replacing any of meta's
 * of those names), and meta may hold at most TG_META_MAX - 3 others: a
 * save that would exceed TG_META_MAX returns TG_ERR_ARG and writes
 * nothing (loading could not read the file's metadata back). path is
 * written as tg_atomic_open says: a regular file there (or the one a
 * symbolic link names) is replaced whole; anything else is refused. */
tg_status tg_checkpoint_save(const char *path, tg_params *ps,
                             const tg_optim *opt, const tg_meta *meta);
/* Every parameter of ps must be in the file with the same shape and every
 * tensor of the file must be a parameter or its optimizer state
 * ("optim.m." / "optim.v." + the name of a parameter of ps, with that
 * parameter's shape, also when opt is NULL); a mismatch names a missing
 * tensor first, then a shape, then an extra one, with the count of each.
 * Optimizer state is loaded when opt is not NULL: it must then be present
 * and of opt's kind and settings (else TG_ERR_MISMATCH), finite, and v >= 0
 * (else TG_ERR_FORMAT naming the tensor), its step in 0..TG_OPTIM_MAX_STEP
 * (beyond, the step's count would not fit a double, and at INT64_MAX the
 * next step overflows). Weights are loaded as
 * they are, NaN included (tg_vae_load checks a VAE's). */
#define TG_OPTIM_MAX_STEP ((int64_t)1 << 53)
tg_status tg_checkpoint_load(const char *path, tg_params *ps, tg_optim *opt,
                             tg_meta *meta);
/* Only the metadata (after validating the header and verifying the
 * checksum, which reads the whole file), to check a model's config before
 * building it. A caller that then loads the tensors with a second open
 * should compare the metadata that load returns (tg_meta_equal): another
 * process may have saved over the file between the two. */
tg_status tg_checkpoint_read_meta(const char *path, tg_meta *meta);
/* Loads part of a file: every parameter of ps whose name starts with
 * model_prefix gets the file's tensor named file_prefix + the rest of its
 * name ("encoder." -> "encoder.", or renamed: file "encoder." into model
 * "enc."; model_prefix NULL means file_prefix). Other parameters and file
 * tensors outside file_prefix are left alone; no optimizer state is read.
 * Strict: a parameter in scope missing from the file, a shape that differs
 * (its optimizer state's too, when the file has it), or a file tensor in
 * scope that is neither a parameter nor its state gives TG_ERR_MISMATCH (the
 * message names a missing tensor first, then a shape, then an extra one,
 * with the count of each); nothing in scope gives TG_ERR_ARG. The model is
 * unchanged on any error. */
tg_status tg_checkpoint_load_prefix(const char *path, tg_params *ps,
                                    const char *file_prefix,
                                    const char *model_prefix);

/* ---- output files (nn/files.c) --------------------------------------------
 * A file appears whole or not at all: write to a->f, then commit. The data
 * goes to "<path>.tapegrad-tmp.<pid>" (created new, never through a
 * symbolic link), is flushed and fsynced, renamed over path, and the folder
 * is fsynced; on any failure (or ok false) the temporary is removed and
 * path keeps its old contents. Only a regular file is replaced: when path
 * is a symbolic link to one, that file is written (in its own folder) and
 * the link stays; a folder, FIFO, device or socket at path, or a link to
 * one or to nothing, is refused with TG_ERR_IO ("cannot write PATH: it is
 * a FIFO; not replaced"), by tg_atomic_open and again by the commit. A
 * replaced file keeps its permission bits (not its owner); as with any
 * rename, a hard link to the old file keeps the old contents. */
typedef struct tg_atomic_file {
    FILE *f;
    char *path, *tmp;
} tg_atomic_file;

tg_status tg_atomic_open(tg_atomic_file *a, const char *path);
/* What tg_atomic_open would say of what is at path now (TG_OK: nothing, a
 * regular file or a link to one, in a folder this process may write),
 * without writing: a program checks its outputs before hours of work, not
 * after them. */
tg_status tg_atomic_check(const char *path);
/* ok: the caller's own writes succeeded. Closes a in every case. */
tg_status tg_atomic_commit(tg_atomic_file *a, bool ok);
/* Removes the temporaries of files not yet committed (async-signal-safe:
 * for a SIGINT or SIGTERM handler about to end the process). */
void tg_atomic_discard_open(void);
/* Removes "<name>.tapegrad-tmp.<pid>" files in dir whose process no longer
 * runs (a killed run's temporaries); returns how many. */
int tg_remove_stale_temps(const char *dir);
/* Locks dir for this process until it exits ("<dir>/.lock", flock, holding
 * the PID; a .lock that is a symbolic link is refused). A second process
 * gets TG_ERR_IO naming the first one's PID. */
tg_status tg_dir_lock(const char *dir);

/* ---- data ---------------------------------------------------------------- */

/* n images of rows x cols pixels as floats in [0, 1], row-major, and their
 * labels (0..255 as read; MNIST uses 0..9; NULL from tg_idx_images_load
 * for a set without labels). */
typedef struct tg_dataset {
    int n, rows, cols;
    float *images; /* n * rows * cols */
    uint8_t *labels;
} tg_dataset;

/* Reads an IDX file (raw, or gzip when the name ends in .gz and zlib was
 * found at build time). Checks magic, dims, and sizes against the file before
 * allocating. *dims gets up to 3 sizes; data is malloc'd (caller frees). */
tg_status tg_idx_read(const char *path, int *ndim, int dims[3], uint8_t **data);
/* Loads "<dir>/train-images-idx3-ubyte" (or t10k- when train is false) and
 * its labels, trying each name raw and with .gz. Checks counts agree. */
tg_status tg_mnist_load(const char *dir, bool train, tg_dataset *ds);
/* A set to score rather than train on (out-of-distribution sets often come
 * without labels, or with other file names): path is a folder, read as
 * tg_mnist_load reads it but with the labels file optional, or an IDX
 * images file itself (any name, raw or .gz; train is then unused).
 * ds->labels is NULL when there are none; a labels file that is there
 * must be readable and match. */
tg_status tg_idx_images_load(const char *path, bool train, tg_dataset *ds);
void tg_dataset_free(tg_dataset *ds);
bool tg_have_zlib(void);
/* What a checkpoint records about the data it was trained on: the sizes and
 * a fast 64-bit checksum of the images and labels, as one line
 * "60000x28x28 9f3c...". Equal data gives equal lines, whatever the files'
 * compression. */
#define TG_FINGERPRINT_MAX 64
void tg_dataset_fingerprint(const tg_dataset *ds, char out[TG_FINGERPRINT_MAX]);

/* Mini-batches in an order that depends only on (seed, epoch): resuming at a
 * batch index reproduces the same batches. The last batch may be short. */
typedef struct tg_batcher {
    const tg_dataset *ds;
    int batch;
    int *order;
    uint64_t seed;
    int64_t epoch;
    int pos; /* next sample within the epoch's order */
} tg_batcher;

void tg_batcher_init(tg_batcher *b, const tg_dataset *ds, int batch,
                     uint64_t seed);
void tg_batcher_free(tg_batcher *b);
/* Starts epoch (shuffles by (seed, epoch)) at batch index first_batch. */
void tg_batcher_start(tg_batcher *b, int64_t epoch, int first_batch);
int tg_batcher_count(const tg_batcher *b); /* batches per epoch */
/* Copies the next batch into x ([n, rows*cols], n <= batch) and labels (may
 * be NULL); returns n, 0 at the end of the epoch. */
int tg_batcher_next(tg_batcher *b, float *x, int *labels);

/* Mini-batches over any float data: x [n, dim] row-major, optional float
 * targets y [n, y_dim] (set y, y_dim) and optional int labels [n] (set
 * labels); the arrays stay the caller's and must outlive the batcher. The
 * order depends only on (seed, epoch), as tg_batcher's. Set the fields
 * shuffle (default true) and drop_last (default false) after init, then
 * call tg_array_batcher_start.
 * Last batch: with drop_last false it holds the n % batch remaining rows
 * (short); with drop_last true those rows are skipped for the epoch. */
typedef struct tg_array_batcher {
    const float *x;
    int n, dim;
    const float *y; /* may be NULL */
    int y_dim;
    const int *labels; /* may be NULL */
    int batch;
    bool shuffle, drop_last;
    int *order;
    uint64_t seed;
    int64_t epoch;
    int pos;
} tg_array_batcher;

void tg_array_batcher_init(tg_array_batcher *b, const float *x, int n, int dim,
                           int batch, uint64_t seed);
void tg_array_batcher_free(tg_array_batcher *b);
/* Starts epoch (shuffles by (seed, epoch) when shuffle is set) at batch
 * index first_batch. */
void tg_array_batcher_start(tg_array_batcher *b, int64_t epoch,
                            int first_batch);
int tg_array_batcher_count(const tg_array_batcher *b); /* batches per epoch */
/* The next batch as tape tensors (valid until tg_tape_reset): *x [count,
 * dim], *y [count, y_dim] and *labels (arena memory) when those pointers are
 * not NULL. Consecutive rows (shuffle off) are views of the caller's arrays,
 * not copies. Returns count, 0 at the end of the epoch. */
int tg_array_batcher_next(tg_array_batcher *b, tg_tape *tp, tg_tensor **x,
                          tg_tensor **y, const int **labels);

/* ---- model helpers ------------------------------------------------------- */

/* The reparameterization trick: z = mean + exp(logvar / 2) * eps with eps ~
 * N(0, I) of mean's shape drawn from rng on this thread in row-major order
 * (same bits on any thread count). Gradients reach mean and logvar. eps_out
 * (may be NULL) gets the noise tensor. mean and logvar have equal shapes. */
tg_tensor *tg_reparameterize(tg_tape *tp, tg_tensor *mean, tg_tensor *logvar,
                             tg_rng *rng, tg_tensor **eps_out);
/* labels (0..classes-1) as a tape tensor [n, classes] of zeros and ones (no
 * gradient); a label out of range aborts naming its row. */
tg_tensor *tg_one_hot(tg_tape *tp, const int *labels, int n, int classes);

#ifdef __cplusplus
}
#endif
#endif
