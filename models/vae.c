/* The VAE as graphs: the ELBO sketched in docs/design.md (models); the API
 * and shapes are in tg_vae.h. */
#include <stdlib.h>

#include "tg_vae.h"

tg_vae *tg_vae_new(tg_vae_config cfg, uint64_t seed)
{
    if (cfg.input <= 0 || cfg.latent <= 0 || cfg.hidden < 0 ||
        cfg.input > TG_VAE_MAX_INPUT || cfg.hidden > TG_VAE_MAX_HIDDEN ||
        cfg.latent > TG_VAE_MAX_LATENT)
        tg_fatal("vae_new", "bad config input=%d hidden=%d latent=%d",
                 cfg.input, cfg.hidden, cfg.latent);
    tg_vae *vae = calloc(1, sizeof *vae);
    if (!vae)
        tg_fatal("vae_new", "out of memory");
    vae->cfg = cfg;
    vae->params = tg_params_new();

    tg_rng rng;
    tg_rng_seed(&rng, seed, 0);
    tg_params *ps = vae->params;
    int in = cfg.input, h = cfg.hidden, z = cfg.latent;
    if (h > 0) {
        tg_dense_layer_init(&vae->enc1, ps, "encoder.fc1", in, h, TG_INIT_TORCH,
                            &rng);
        tg_dense_layer_init(&vae->enc2, ps, "encoder.fc2", h, 2 * z,
                            TG_INIT_TORCH, &rng);
        tg_dense_layer_init(&vae->dec1, ps, "decoder.fc1", z, h, TG_INIT_TORCH,
                            &rng);
        tg_dense_layer_init(&vae->dec2, ps, "decoder.fc2", h, in, TG_INIT_TORCH,
                            &rng);
    } else {
        tg_dense_layer_init(&vae->enc2, ps, "encoder.fc2", in, 2 * z,
                            TG_INIT_TORCH, &rng);
        tg_dense_layer_init(&vae->dec2, ps, "decoder.fc2", z, in, TG_INIT_TORCH,
                            &rng);
    }
    tg_params_seal(ps);
    return vae;
}

void tg_vae_free(tg_vae *vae)
{
    if (!vae)
        return;
    tg_params_free(vae->params);
    free(vae);
}

tg_params *tg_vae_params(tg_vae *vae) { return vae->params; }

/* h            = relu(dense(enc1, x))          (x itself when hidden = 0)
 * mean, logvar = split(dense(enc2, h), 2)
 * logvar       = clamp(logvar, -30, 20)        (see TG_VAE_LOGVAR_MIN) */
void tg_vae_encode(tg_tape *tp, const tg_vae *vae, tg_tensor *x,
                   tg_tensor **mean, tg_tensor **logvar)
{
    tg_tensor *h = x;
    if (vae->cfg.hidden > 0)
        h = tg_relu(tp, tg_dense_apply(tp, &vae->enc1, h));
    tg_tensor *mean_logvar[2];
    tg_split(tp, tg_dense_apply(tp, &vae->enc2, h), 2, mean_logvar);
    *mean = mean_logvar[0];
    *logvar =
        tg_clamp(tp, mean_logvar[1], TG_VAE_LOGVAR_MIN, TG_VAE_LOGVAR_MAX);
}

/* logits = dense(dec2, relu(dense(dec1, z)))   (dense(dec2, z), hidden = 0) */
tg_tensor *tg_vae_decode_logits(tg_tape *tp, const tg_vae *vae, tg_tensor *z)
{
    tg_tensor *h = z;
    if (vae->cfg.hidden > 0)
        h = tg_relu(tp, tg_dense_apply(tp, &vae->dec1, h));
    return tg_dense_apply(tp, &vae->dec2, h);
}

tg_vae_out tg_vae_forward_eps(tg_tape *tp, const tg_vae *vae, tg_tensor *x,
                              tg_tensor *eps)
{
    tg_vae_out o;
    tg_vae_encode(tp, vae, x, &o.mean, &o.logvar);

    /* z = mean + exp(0.5 * logvar) * eps: the reparameterization trick */
    tg_tensor *std = tg_exp(tp, tg_scale(tp, o.logvar, 0.5f));
    o.z = tg_add(tp, o.mean, tg_mul(tp, std, eps));

    o.logits = tg_vae_decode_logits(tp, vae, o.z);

    /* rec  = -log p(x|z) = sum over pixels of bce(logits, x)   [B, 1]
     * kl   = -0.5 * sum(1 + logvar - mean^2 - exp(logvar))     [B, 1]
     * loss = mean over the batch of (rec + kl) = -ELBO          [1] */
    o.rec = tg_bce_with_logits(tp, o.logits, x);
    o.kl = tg_kl_normal(tp, o.mean, o.logvar);
    o.loss = tg_mean(tp, tg_add(tp, o.rec, o.kl));
    return o;
}

/* eps ~ N(0, I), drawn here on one thread in row-major order, so a seed gives
 * the same noise whatever the thread count. */
static tg_tensor *normal_noise(tg_tape *tp, int rows, int cols, tg_rng *rng)
{
    tg_tensor *eps = tg_tape_tensor2(tp, rows, cols, false);
    tg_rng_fill_normal(rng, eps->data, eps->size, 0.0f, 1.0f);
    return eps;
}

tg_vae_out tg_vae_forward(tg_tape *tp, const tg_vae *vae, tg_tensor *x,
                          tg_rng *rng)
{
    tg_tensor *eps = normal_noise(tp, tg_tensor_rows(x), vae->cfg.latent, rng);
    return tg_vae_forward_eps(tp, vae, x, eps);
}

tg_tensor *tg_vae_decode(tg_tape *tp, const tg_vae *vae, tg_tensor *z)
{
    return tg_sigmoid(tp, tg_vae_decode_logits(tp, vae, z));
}

tg_tensor *tg_vae_reconstruct(tg_tape *tp, const tg_vae *vae, tg_tensor *x)
{
    tg_tensor *mean, *logvar;
    tg_vae_encode(tp, vae, x, &mean, &logvar);
    return tg_vae_decode(tp, vae, mean);
}

tg_tensor *tg_vae_sample(tg_tape *tp, const tg_vae *vae, int n, tg_rng *rng)
{
    if (n <= 0)
        tg_fatal("vae_sample", "n must be > 0, got %d", n);
    return tg_vae_decode(tp, vae, normal_noise(tp, n, vae->cfg.latent, rng));
}
