/* tapegrad models: a variational autoencoder (Kingma & Welling 2014).
 *
 *   q(z|x) = N(mean(x), diag(exp(logvar(x))))    encoder
 *   p(z)   = N(0, I)                              prior
 *   p(x|z) = Bernoulli(sigmoid(logits(z)))        decoder
 *   loss   = mean over the batch of rec + kl = -ELBO (nats per sample)
 *
 * Parameters (W stored [out, in], as PyTorch's nn.Linear):
 *   encoder.fc1 [hidden, input]   encoder.fc2 [2*latent, hidden]
 *   decoder.fc1 [hidden, latent]  decoder.fc2 [input, hidden]
 * With hidden = 0 the fc1 layers are absent: encoder.fc2 maps input to
 * 2*latent and decoder.fc2 maps latent to input (the seed's model). */
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

typedef struct tg_vae_config {
    int input;  /* pixels per image (784 for MNIST) */
    int hidden; /* hidden units of each MLP; 0 = no hidden layer */
    int latent; /* dimension of z */
} tg_vae_config;

typedef struct tg_vae {
    tg_vae_config cfg;
    tg_params *params;
    tg_dense_layer enc1, enc2; /* enc1 unused when hidden = 0 */
    tg_dense_layer dec1, dec2; /* dec1 unused when hidden = 0 */
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

/* Parameters initialised as PyTorch's nn.Linear (TG_INIT_TORCH) from
 * tg_rng stream (seed, 0). Aborts on a non-positive input or latent or a
 * negative hidden. */
tg_vae *tg_vae_new(tg_vae_config cfg, uint64_t seed);
void tg_vae_free(tg_vae *vae);
tg_params *tg_vae_params(tg_vae *vae);

/* mean, logvar [B, latent] of q(z|x) for x [B, input]. */
void tg_vae_encode(tg_tape *tp, const tg_vae *vae, tg_tensor *x,
                   tg_tensor **mean, tg_tensor **logvar);
/* Decoder logits [B, input] for z [B, latent]. */
tg_tensor *tg_vae_decode_logits(tg_tape *tp, const tg_vae *vae, tg_tensor *z);
/* The -ELBO graph with given noise eps [B, latent] (fixed eps: gradcheck). */
tg_vae_out tg_vae_forward_eps(tg_tape *tp, const tg_vae *vae, tg_tensor *x,
                              tg_tensor *eps);
/* Same, drawing eps ~ N(0, I) from rng on this thread, row by row. */
tg_vae_out tg_vae_forward(tg_tape *tp, const tg_vae *vae, tg_tensor *x,
                          tg_rng *rng);

/* Pixel probabilities [B, input] (sigmoid of the logits): */
/* decoded at the posterior mean of x */
tg_tensor *tg_vae_reconstruct(tg_tape *tp, const tg_vae *vae, tg_tensor *x);
/* decoded at given z [B, latent] */
tg_tensor *tg_vae_decode(tg_tape *tp, const tg_vae *vae, tg_tensor *z);
/* decoded at n draws z ~ N(0, I) from rng */
tg_tensor *tg_vae_sample(tg_tape *tp, const tg_vae *vae, int n, tg_rng *rng);

#ifdef __cplusplus
}
#endif
#endif
