/* Variational Dense layer (Bayes by Backprop, Blundell et al. 2015) with the
 * local reparameterization trick (Kingma, Salimans & Welling 2015).
 *
 * Posterior q(W) = prod N(W_mu, softplus(W_rho)^2), the same for b; prior
 * p(W) = prod N(0, prior_scale^2). For a batch x [B, in] the pre-activations
 * are Gaussian given x, so they are sampled directly (two GEMMs, no sampled
 * weight matrix):
 *
 *   mean = x . W_mu^T + b_mu                          [B, out]
 *   var  = (x * x) . (sigma_W^2)^T + sigma_b^2        [B, out]
 *   y    = mean + sqrt(var) * eps,  eps ~ N(0, I)     [B, out]
 *
 * Each row draws its own weights, which lowers the gradient's variance
 * compared with one weight sample per batch. */
#include <math.h>
#include <stdio.h>

#include "tg_nn.h"

void tg_bayes_dense_init(tg_bayes_dense *l, tg_params *ps, const char *name,
                         int in, int out, float prior_scale, float rho_init,
                         tg_rng *rng)
{
    if (in <= 0 || out <= 0)
        tg_fatal("bayes_dense_init", "%s: bad size in=%d out=%d", name, in,
                 out);
    if (!(prior_scale > 0.0f) || !isfinite(prior_scale))
        tg_fatal("bayes_dense_init", "%s: prior_scale %g must be > 0", name,
                 (double)prior_scale);
    if (!isfinite(rho_init))
        tg_fatal("bayes_dense_init", "%s: rho_init is not finite", name);
    char key[256];
    snprintf(key, sizeof key, "%s.weight_mu", name);
    l->W_mu = tg_params_add(ps, key, 2, (int[]){out, in});
    snprintf(key, sizeof key, "%s.weight_rho", name);
    l->W_rho = tg_params_add(ps, key, 2, (int[]){out, in});
    snprintf(key, sizeof key, "%s.bias_mu", name);
    l->b_mu = tg_params_add(ps, key, 1, (int[]){out});
    snprintf(key, sizeof key, "%s.bias_rho", name);
    l->b_rho = tg_params_add(ps, key, 1, (int[]){out});
    l->in = in;
    l->out = out;
    l->prior_scale = prior_scale;

    /* The means as PyTorch's Linear (uniform +-1/sqrt(in), W then b); every
     * rho starts at rho_init, a small sigma, so training starts close to a
     * deterministic network. */
    float a = 1.0f / sqrtf((float)in);
    tg_rng_fill_uniform(rng, l->W_mu->data, l->W_mu->size, -a, a);
    tg_rng_fill_uniform(rng, l->b_mu->data, l->b_mu->size, -a, a);
    for (size_t i = 0; i < l->W_rho->size; i++)
        l->W_rho->data[i] = rho_init;
    for (size_t i = 0; i < l->b_rho->size; i++)
        l->b_rho->data[i] = rho_init;
}

/* The pre-activation sample for given noise eps [B, out]; the formula above.
 * sqrt(var) is written exp(log(var) / 2): var >= sigma_b^2 > 0. */
tg_tensor *tg_bayes_dense_apply_eps(tg_tape *tp, const tg_bayes_dense *l,
                                    tg_tensor *x, tg_tensor *eps)
{
    if (!x || !eps)
        tg_fatal("bayes_dense", "NULL %s", x ? "eps" : "x");
    tg_tensor *mean = tg_dense(tp, x, l->W_mu, l->b_mu);
    if (eps->ndim != 2 || eps->shape[0] != mean->shape[0] ||
        eps->shape[1] != l->out) {
        char a[64], b[64];
        tg_fatal("bayes_dense", "eps %s must be the output's shape %s",
                 tg_shape_str(eps, a), tg_shape_str(mean, b));
    }
    tg_tensor *var_W = tg_square(tp, tg_softplus(tp, l->W_rho));
    tg_tensor *var_b = tg_square(tp, tg_softplus(tp, l->b_rho));
    tg_tensor *var = tg_dense(tp, tg_square(tp, x), var_W, var_b);
    tg_tensor *sd = tg_exp(tp, tg_scale(tp, tg_log(tp, var), 0.5f));
    return tg_add(tp, mean, tg_mul(tp, sd, eps));
}

tg_tensor *tg_bayes_dense_apply(tg_tape *tp, const tg_bayes_dense *l,
                                tg_tensor *x, tg_rng *rng)
{
    if (!x)
        tg_fatal("bayes_dense", "NULL x");
    if (!rng)
        return tg_dense(tp, x, l->W_mu, l->b_mu);
    if (x->ndim != 2)
        tg_fatal("bayes_dense", "x must be 2-D [B, %d]", l->in);
    /* One stream consumed in row order on one thread: the same draws for any
     * thread count. */
    tg_tensor *eps = tg_tape_tensor2(tp, x->shape[0], l->out, false);
    tg_rng_fill_normal(rng, eps->data, eps->size, 0.0f, 1.0f);
    return tg_bayes_dense_apply_eps(tp, l, x, eps);
}

/* KL(N(mu, s^2) || N(0, p^2)) = log p - log s + (s^2 + mu^2) / (2 p^2) - 1/2
 * per element, summed over one tensor pair: a [1] graph. */
static tg_tensor *kl_gauss(tg_tape *tp, tg_tensor *mu, tg_tensor *rho,
                           float prior_scale)
{
    tg_tensor *s = tg_softplus(tp, rho);
    tg_tensor *quad = tg_add(tp, tg_square(tp, s), tg_square(tp, mu));
    tg_tensor *per =
        tg_sub(tp, tg_scale(tp, quad, 0.5f / (prior_scale * prior_scale)),
               tg_log(tp, s));
    double constant = (double)mu->size * (log((double)prior_scale) - 0.5);
    return tg_add_scalar(tp, tg_sum(tp, per), (float)constant);
}

tg_tensor *tg_bayes_dense_kl(tg_tape *tp, const tg_bayes_dense *l)
{
    return tg_add(tp, kl_gauss(tp, l->W_mu, l->W_rho, l->prior_scale),
                  kl_gauss(tp, l->b_mu, l->b_rho, l->prior_scale));
}
