/* tapegrad models: a variational autoencoder (Kingma & Welling 2014).
 *
 *   q(z|x) = N(mean(x), diag(exp(logvar(x))))    encoder
 *   p(z)   = N(0, I)                              prior
 *   p(x|z) = Bernoulli(sigmoid(logits(z)))        decoder (the default), or
 *            the continuous Bernoulli CB(sigmoid(logits(z))) (likelihood =
 *            TG_VAE_CB; Loaiza-Ganem & Cunningham 2019), a density on
 *            [0, 1]: the Bernoulli's terms times the normaliser C
 *   loss   = mean over the batch of rec + kl = -ELBO (nats per sample)
 *
 * Parameters (W stored [out, in], as PyTorch's nn.Linear):
 *   encoder.fc1 [hidden, input]   encoder.fc2 [2*latent, hidden]
 *   decoder.fc1 [hidden, latent]  decoder.fc2 [input, hidden]
 *   encoder: h = relu(fc1(x)); fc2(h) = [mean, logvar] (the first latent
 *            outputs are the mean, the next latent logvar, clamped to
 *            TG_VAE_LOGVAR_MIN..MAX)
 *   decoder: logits = fc2(relu(fc1(z)))
 * With hidden = 0 the fc1 layers are absent: encoder.fc2 maps input to
 * 2*latent and decoder.fc2 maps latent to input (the seed's model). Inputs
 * are pixels in [0, 1]: tg_vae_rec aborts on one outside (NaN passes).
 *
 * The convolutional architecture (arch = TG_VAE_CONV) reads each input row
 * as a square image of side s = sqrt(input), s a multiple of 4 (28 for
 * MNIST), with PyTorch's layouts (Conv2d [out, in, k, k], ConvTranspose2d
 * [in, out, k, k]):
 *   encoder: conv1 Conv2d(1->32, k4, s2, p1) -> ReLU -> conv2 Conv2d(32->64,
 *            k4, s2, p1) -> ReLU -> flatten [64*s/4*s/4] -> fc -> 2*latent
 *   decoder: fc latent -> 64*s/4*s/4 -> ReLU -> reshape [64, s/4, s/4] ->
 *            deconv1 ConvTranspose2d(64->32, k4, s2, p1) -> ReLU -> deconv2
 *            ConvTranspose2d(32->1, k4, s2, p1) -> flatten -> logits [input]
 * Its hidden is 0 (unused). Same ELBO graph, same reparameterization. */
#ifndef TG_VAE_H
#define TG_VAE_H

#include "tg_nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* logvar is clamped to this range before exp(): exp(20) ~ 5e8 and
 * exp(-30) ~ 1e-13 are far outside what a trained model produces, so this
 * only guards a diverging run from Inf/NaN; the gradient is zero outside. */
#define TG_VAE_LOGVAR_MIN (-30.0f)
#define TG_VAE_LOGVAR_MAX 20.0f

/* The one set of limits on a VAE's sizes: flags, tg_vae_new and every
 * checkpoint read are checked against them. */
#define TG_VAE_MAX_INPUT (1 << 24)
#define TG_VAE_MAX_HIDDEN 65536
#define TG_VAE_MAX_LATENT 4096
/* ... and on their product: at most 2^28 parameters (1 GiB of weights). */
#define TG_VAE_MAX_PARAMS ((uint64_t)1 << 28)

typedef enum tg_vae_arch {
    TG_VAE_MLP = 0, /* dense layers (the default) */
    TG_VAE_CONV,    /* convolutional encoder and decoder */
} tg_vae_arch;

/* The decoder's p(x|z) per pixel, lambda = sigmoid(logit):
 *   bernoulli  lambda^x (1 - lambda)^(1 - x), a probability (x in {0, 1};
 *              for grey levels the usual BCE, not a density)
 *   cb         C(lambda) lambda^x (1 - lambda)^(1 - x), a density on [0, 1]
 *              (C = tg_cb_log_norm's exp). log p(x) of the two are not
 *              comparable: one is a log probability, the other a log
 *              density, positive where the density exceeds 1. */
typedef enum tg_vae_likelihood {
    TG_VAE_BERNOULLI = 0, /* the default */
    TG_VAE_CB,
} tg_vae_likelihood;

typedef struct tg_vae_config {
    int input;  /* pixels per image (784 for MNIST) */
    int hidden; /* hidden units of each MLP; 0 = no hidden layer */
    int latent; /* dimension of z */
    tg_vae_arch arch;
    tg_vae_likelihood likelihood; /* 0: bernoulli */
} tg_vae_config;

/* "mlp" or "conv"; and back (false for an unknown name). */
const char *tg_vae_arch_name(tg_vae_arch arch);
bool tg_vae_arch_parse(const char *name, tg_vae_arch *arch);
/* "bernoulli" or "cb"; and back (false for an unknown name). */
const char *tg_vae_likelihood_name(tg_vae_likelihood lik);
bool tg_vae_likelihood_parse(const char *name, tg_vae_likelihood *lik);

/* The mean of the continuous Bernoulli with lambda = sigmoid(logit), for n
 * logits: E[x] = lambda / (2 lambda - 1) + 1 / (2 atanh(1 - 2 lambda)),
 * which in the logit is 1/2 + 1/(2 tanh(x/2)) - 1/x (1/2 at x = 0, 1 - 1/x
 * for large x, -1/x for very negative x), computed in double in forms
 * without cancellation. Not lambda: the CB pulls its mean towards 1/2. */
void tg_cb_mean(const float *logits, float *mean, size_t n);
/* Its inverse: the logit whose continuous Bernoulli has mean m, by
 * bisection in double (E is increasing in the logit). The CB is an
 * exponential family in x with the logit as natural parameter, so this is
 * the maximum-likelihood fit to data of mean m. m in (0, 1); 0 and 1 give
 * -Inf and +Inf, anything else NaN. */
double tg_cb_logit_of_mean(double m);
/* log p(x | logit) of one value x in [0, 1]: x log lambda + (1 - x)
 * log(1 - lambda), plus log C(lambda) for TG_VAE_CB, in double. At an
 * infinite logit, the limit: 0 (Bernoulli) or +Inf (CB) where it predicts
 * x exactly (+Inf and x = 1, -Inf and x = 0), else -Inf. */
double tg_vae_pixel_loglik(tg_vae_likelihood lik, double logit, double x);

typedef struct tg_vae {
    tg_vae_config cfg;
    tg_params *params;
    tg_dense_layer enc1, enc2; /* enc1 unused when hidden = 0 */
    tg_dense_layer dec1, dec2; /* dec1 unused when hidden = 0 */
    /* TG_VAE_CONV: enc2 is encoder.fc, dec1 decoder.fc (enc1, dec2 unused) */
    tg_conv2d_layer conv1, conv2;
    tg_conv_transpose2d_layer deconv1, deconv2;
    int side; /* TG_VAE_CONV: image side */
} tg_vae;

/* Everything forward computes, all on the tape. */
typedef struct tg_vae_out {
    tg_tensor *loss;          /* [1]: mean over rows of rec + kl */
    tg_tensor *rec;           /* [B, 1]: -log p(x|z) per example */
    tg_tensor *kl;            /* [B, 1]: KL(q(z|x) || p(z)) per example */
    tg_tensor *mean, *logvar; /* [B, latent]; logvar after clamping */
    tg_tensor *z;             /* [B, latent] */
    tg_tensor *logits;        /* [B, input] */
} tg_vae_out;

/* Parameters initialised as PyTorch's nn.Linear, Conv2d and
 * ConvTranspose2d (TG_INIT_TORCH) from tg_rng stream (seed, 0). Aborts on
 * sizes outside 1..TG_VAE_MAX_* (hidden 0..TG_VAE_MAX_HIDDEN), more than
 * TG_VAE_MAX_PARAMS parameters and, for
 * TG_VAE_CONV, unless input is a square of a multiple of 4 and hidden 0. */
tg_vae *tg_vae_new(tg_vae_config cfg, uint64_t seed);
/* The number of parameters tg_vae_new makes for cfg (sizes within the
 * limits above), without making them: callers check it against
 * TG_VAE_MAX_PARAMS, tg_vae_new aborts above it. */
uint64_t tg_vae_numel(tg_vae_config cfg);
void tg_vae_free(tg_vae *vae);
tg_params *tg_vae_params(tg_vae *vae);

/* mean, logvar [B, latent] of q(z|x) for x [B, input]. */
void tg_vae_encode(tg_tape *tp, const tg_vae *vae, tg_tensor *x,
                   tg_tensor **mean, tg_tensor **logvar);
/* Decoder logits [B, input] for z [B, latent]. */
tg_tensor *tg_vae_decode_logits(tg_tape *tp, const tg_vae *vae, tg_tensor *z);
/* -log p(x|z) [B, 1] of x [B, input] under vae's likelihood, given the
 * decoder's logits [B, input]: bce_with_logits(logits, x), minus the row
 * sums of cb_log_norm(logits) for TG_VAE_CB. Pixels of x must be in
 * [0, 1] (aborts naming the first outside: below 0 or above 1 a
 * "log-likelihood" can come out positive); the forward passes and
 * tg_vae_iwae score through it. */
tg_tensor *tg_vae_rec(tg_tape *tp, const tg_vae *vae, tg_tensor *logits,
                      tg_tensor *x);
/* The -ELBO graph with given noise eps [B, latent] (fixed eps: gradcheck). */
tg_vae_out tg_vae_forward_eps(tg_tape *tp, const tg_vae *vae, tg_tensor *x,
                              tg_tensor *eps);
/* Same, drawing eps ~ N(0, I) from rng on this thread, row by row. */
tg_vae_out tg_vae_forward(tg_tape *tp, const tg_vae *vae, tg_tensor *x,
                          tg_rng *rng);

/* The decoder's mean E[x|z] [B, input]: sigmoid(logits) for the Bernoulli
 * (the pixel probabilities), tg_cb_mean of the logits for the continuous
 * Bernoulli (a tape tensor, but not differentiable: nothing is recorded
 * from the logits to it): */
/* decoded at the posterior mean of x */
tg_tensor *tg_vae_reconstruct(tg_tape *tp, const tg_vae *vae, tg_tensor *x);
/* decoded at given z [B, latent] */
tg_tensor *tg_vae_decode(tg_tape *tp, const tg_vae *vae, tg_tensor *z);
/* decoded at n draws z ~ N(0, I) from rng */
tg_tensor *tg_vae_sample(tg_tape *tp, const tg_vae *vae, int n, tg_rng *rng);

/* ---- saving and loading (models/vae_io.c) ---------------------------------
 * A VAE checkpoint is a tg_checkpoint_save file (safetensors: the
 * parameters under their names, W as [out, in], the optimizer state) whose
 * metadata holds the model (model = "vae", arch = "mlp" or "conv", input,
 * hidden, latent, likelihood = "bernoulli" or "cb"; a file without arch is
 * an MLP, one without likelihood a Bernoulli), the
 * training position, and any entries of the caller's own (batch, seed, a
 * data fingerprint, ...). Every value read back is checked before use. */

/* Where training stands: epoch epochs finished and batch batches of the
 * next one, with that epoch's running sums and noise stream. */
typedef struct tg_vae_position {
    int64_t epoch;   /* epochs finished */
    int64_t batch;   /* batches done in epoch + 1; 0 at an epoch's start */
    int64_t seen;    /* samples trained on in those batches */
    int64_t skipped; /* steps skipped in them (non-finite) */
    double rec, kl;  /* their summed rec and kl */
    tg_rng noise;    /* the epoch's noise stream where it stands */
} tg_vae_position;

#define TG_VAE_MAX_EPOCHS 1000000

/* What a checkpoint says, checked for consistency within itself (sizes
 * within the limits, 0 <= skipped <= batch, seen <= batch * 2^20, finite
 * sums, a generator state). What it cannot know (an epoch's batch count,
 * the batch size) the caller checks against its run. */
typedef struct tg_vae_info {
    tg_vae_config cfg;
    bool has_position;   /* false for a checkpoint saved without one */
    tg_vae_position pos; /* zero when !has_position */
    int64_t step;        /* optimizer steps (0 without optimizer state) */
    tg_meta meta;        /* every metadata entry, the caller's too */
} tg_vae_info;

/* Saves vae (and opt, pos, extra when not NULL) to path atomically. Zeroes
 * vae's gradients first (they are not saved; a skipped step's are no
 * state). Refuses (TG_ERR_ARG, file untouched) when a parameter or the
 * optimizer state is not finite. extra's keys must not be the model's own
 * ("model", "input", "epoch", ...: vae_save aborts naming the key). */
tg_status tg_vae_save(const char *path, tg_vae *vae, const tg_optim *opt,
                      const tg_vae_position *pos, const tg_meta *extra);
/* Reads and checks path's metadata only (a model can then be built). */
tg_status tg_vae_read_info(const char *path, tg_vae_info *info);
/* Loads path into vae (and opt when not NULL): the file's config must be
 * vae's (TG_ERR_MISMATCH naming the size, arch or likelihood), every weight and
 * optimizer value finite (TG_ERR_FORMAT naming the tensor). On failure vae and
 * opt may hold part of the file: discard them. info may be NULL. */
tg_status tg_vae_load(const char *path, tg_vae *vae, tg_optim *opt,
                      tg_vae_info *info);
/* A new VAE built from path's config, with its weights (*vae NULL on
 * failure). For programs that only use a trained model. */
tg_status tg_vae_open(const char *path, tg_vae **vae, tg_vae_info *info);

#ifdef __cplusplus
}
#endif
#endif
