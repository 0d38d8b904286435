/* tapegrad models: what a trained VAE says about an input.
 *
 *   log p(x)  importance-weighted estimate (Burda et al. 2016) with k draws
 *             z_j ~ q(z|x):  log (1/k) sum_j w_j,
 *             log w_j = log p(x|z_j) + log p(z_j) - log q(z_j|x)
 *   ELBO      mean_j log w_j over the same draws (<= the estimate above by
 *             Jensen, equal when k = 1; its expectation is the ELBO)
 *   L(x)      the input's complexity: deflate size in bits (zlib level 9)
 *   AUROC     tg_auroc in tg_nn.h (nn/metrics.c)
 *   ESS       effective sample size of each example's weights (opts.ess)
 *   typical   Mahalanobis distance of a feature vector from reference
 *             statistics fitted on in-distribution data only (vae_score's
 *             DoSE score, Morningstar et al. 2021, on (-log2 p(x), L(x)))
 *   posterior pixels  per-pixel mean and std of decoded draws z ~ q(z|x)
 *
 * Everything here runs with recording off and rewinds the tape between
 * chunks of samples, so memory stays flat for any k: pass data that does not
 * live on the tape. Sample j of example i draws its noise from tg_rng stream
 * (stream + i) of seed, so results depend neither on how examples are
 * batched nor on the chunk size nor on the thread count. */
#ifndef TG_VAE_SCORE_H
#define TG_VAE_SCORE_H

#include "tg_vae.h"

#ifdef __cplusplus
extern "C" {
#endif

/* log((1/n) sum_i exp(a[i])) as max + log(mean exp(a - max)): exact for
 * any magnitude. -inf when every a[i] is -inf. Aborts when n < 1. */
double tg_log_mean_exp(const double *a, int n);

/* log p(x|z) for a chunk: z [n * kc, latent] holds kc draws for each of n
 * examples, row i * kc + j for draw j of example i; x [n, input] are those
 * examples. Writes out[n * kc]. May allocate on tp (rewound afterwards). */
typedef void (*tg_loglik_fn)(tg_tape *tp, void *ctx, const float *x, int n,
                             int kc, const tg_tensor *z, double *out);

typedef struct tg_iw_opts {
    int k;         /* draws per example, >= 1 */
    int max_rows;  /* rows of z per decoder pass (0: 512, which keeps a
                      pass's logits in L2/L3: 15% less time than 4096) */
    uint64_t seed; /* example i uses tg_rng stream (stream + i) */
    uint64_t stream;
    double *ess; /* when not NULL: [n] effective sample size of each
                    example's k weights (tg_ess_from_logw in tg_nn.h) */
} tg_iw_opts;

/* The estimator for any model with a Gaussian q(z|x) = N(mean, exp(logvar))
 * [n, latent] and prior N(0, I): log_px[n] and elbo[n] (either may be NULL),
 * in nats. x is [n, input]; n = 0 scores nothing (as tg_vae_iwae). */
void tg_iw_estimate(tg_tape *tp, tg_loglik_fn loglik, void *ctx, int input,
                    const float *x, int n, int latent, const float *mean,
                    const float *logvar, const tg_iw_opts *opts, double *log_px,
                    double *elbo);

/* The same for the VAE (encoder for q, the decoder's likelihood for p(x|z):
 * Bernoulli, or for TG_VAE_CB the continuous Bernoulli's density), x
 * [n, vae->cfg.input] with any n (encoded in batches). */
void tg_vae_iwae(tg_tape *tp, const tg_vae *vae, const float *x, int n,
                 const tg_iw_opts *opts, double *log_px, double *elbo);

/* Per-pixel mean and standard deviation, each [n, input], of the decoder's
 * means tg_vae_decode(z) (sigmoid(logits(z)); the CB mean for TG_VAE_CB)
 * over S draws z ~ q(z|x). */
void tg_vae_posterior_pixels(tg_tape *tp, const tg_vae *vae, const float *x,
                             int n, int S, uint64_t seed, uint64_t stream,
                             float *mean, float *std);

/* tg_auroc (AUROC, ties counted half) is in tg_nn.h with the metrics. */

/* Deflate size in bits (zlib compress2, level 9, the zlib stream's 6 bytes
 * of header and checksum included) of n bytes. TG_ERR_UNSUPPORTED when the
 * library was built without zlib. */
tg_status tg_complexity_bits(const uint8_t *bytes, size_t n, double *bits);

/* Reference statistics of d features (1..TG_TYPICAL_MAX_DIM) fitted on
 * in-distribution data only; score = sqrt((f - mean)' cov^-1 (f - mean)),
 * large when f is atypical in any direction. */
#define TG_TYPICAL_MAX_DIM 4
typedef struct tg_typical {
    int d, n;
    double mean[TG_TYPICAL_MAX_DIM];
    double cov[TG_TYPICAL_MAX_DIM][TG_TYPICAL_MAX_DIM];
    double chol[TG_TYPICAL_MAX_DIM][TG_TYPICAL_MAX_DIM]; /* cov = L L' */
} tg_typical;

/* feat is [n, d] row-major, n > d; the covariance is the unbiased one
 * (divided by n - 1). TG_ERR_ARG when a feature is not finite or the
 * covariance is singular. */
tg_status tg_typical_fit(tg_typical *ref, const double *feat, int n, int d);
double tg_typical_score(const tg_typical *ref, const double *f);

#ifdef __cplusplus
}
#endif
#endif
