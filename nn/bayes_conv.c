/* Variational Conv2d layer: Bayes by Backprop (Blundell et al. 2015) over a
 * convolution's weights, with the local reparameterization trick for
 * convolutions (Kingma, Salimans & Welling 2015), the counterpart of the
 * variational Dense layer (bayes.c).
 *
 * Posterior q(W) = prod N(W_mu, softplus(W_rho)^2) over W [out, in, k, k],
 * the same for b [out]; prior N(0, prior_scale^2). Each output element is a
 * sum of independent Gaussians (a window of x times weights, plus a bias),
 * so given x it is Gaussian and is sampled directly (two convolutions, no
 * sampled kernel):
 *
 *   mean = conv2d(x, W_mu) + b_mu                     [B, out, OH, OW]
 *   var  = conv2d(x * x, sigma_W^2) + sigma_b^2       [B, out, OH, OW]
 *   y    = mean + sqrt(var) * eps,  eps ~ N(0, I)     [B, out, OH, OW]
 *
 * Each output element draws its own weights: neighbouring outputs that
 * share a kernel get independent noise (the local reparameterization's
 * approximation for convolutions, which lowers the gradient's variance). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bayes_posterior.h"
#include "layer_init.h"
#include "tg_nn.h"

void tg_bayes_conv2d_init(tg_bayes_conv2d *l, tg_params *ps, const char *name,
                          int in, int out, int kernel, int stride, int padding,
                          float prior_scale, float rho_init, tg_rng *rng)
{
    layer_init_check("bayes_conv2d_init", l, ps, name, true, rng);
    if (in <= 0 || out <= 0 || kernel <= 0 || stride <= 0 || padding < 0)
        tg_fatal("bayes_conv2d_init",
                 "%s: bad size in=%d out=%d kernel=%d stride=%d padding=%d",
                 name, in, out, kernel, stride, padding);
    if (!(prior_scale > 0.0f) || !isfinite(prior_scale))
        tg_fatal("bayes_conv2d_init",
                 "%s: prior_scale %g must be finite and > 0", name,
                 (double)prior_scale);
    if (!isfinite(rho_init))
        tg_fatal("bayes_conv2d_init", "%s: rho_init is not finite", name);
    const int wshape[4] = {out, in, kernel, kernel};
    char key[256];
    snprintf(key, sizeof key, "%s.weight_mu", name);
    l->W_mu = tg_params_add(ps, key, 4, wshape);
    snprintf(key, sizeof key, "%s.weight_rho", name);
    l->W_rho = tg_params_add(ps, key, 4, wshape);
    snprintf(key, sizeof key, "%s.bias_mu", name);
    l->b_mu = tg_params_add(ps, key, 1, (int[]){out});
    snprintf(key, sizeof key, "%s.bias_rho", name);
    l->b_rho = tg_params_add(ps, key, 1, (int[]){out});
    l->in = in;
    l->out = out;
    l->kernel = kernel;
    l->args = (tg_conv2d_args){.stride = {stride, stride},
                               .padding = {padding, padding},
                               .dilation = {1, 1}};
    l->prior_scale = prior_scale;

    /* The means as PyTorch's Conv2d (uniform +-1/sqrt(fan_in), fan_in = in
     * * k * k, W then b: tg_conv2d_layer's TG_INIT_TORCH); every rho starts
     * at rho_init, a small sigma, so training starts close to a
     * deterministic network. */
    float a = 1.0f / sqrtf((float)in * (float)kernel * (float)kernel);
    tg_rng_fill_uniform(rng, l->W_mu->data, l->W_mu->size, -a, a);
    tg_rng_fill_uniform(rng, l->b_mu->data, l->b_mu->size, -a, a);
    for (size_t i = 0; i < l->W_rho->size; i++)
        l->W_rho->data[i] = rho_init;
    for (size_t i = 0; i < l->b_rho->size; i++)
        l->b_rho->data[i] = rho_init;
}

/* x must be [B, in, H, W]: checked here so that the message names the
 * layer's call rather than the conv2d inside it. */
static void check_x(const char *op, const tg_bayes_conv2d *l,
                    const tg_tensor *x)
{
    if (x->ndim != 4 || x->shape[1] != l->in) {
        char s[64];
        tg_fatal(op, "x %s must be [B, %d, H, W]", tg_shape_str(x, s), l->in);
    }
    /* the sample is mean + sd * eps of two convolutions: a ReLU fused into
     * each would not be the ReLU of the sample */
    if (l->args.relu)
        tg_fatal(op, "args.relu is not supported here: apply tg_relu to the "
                     "layer's output");
}

/* The sample (the formula at the top) for noise eps, or for noise drawn
 * from rng when eps is NULL, and the layer's KL from the same softplus pass
 * when kl is not NULL. var >= sigma_b^2 > 0 (sigma^2 is floored at
 * FLT_MIN, bayes.c), so sqrt's gradient is finite for any rho. */
static tg_tensor *sample(tg_tape *tp, const tg_bayes_conv2d *l, tg_tensor *x,
                         tg_tensor *eps, tg_rng *rng, tg_tensor **kl)
{
    tg_tensor *mean = tg_conv2d_ex(tp, x, l->W_mu, l->b_mu, &l->args);
    if (!eps) {
        /* Fixed blocks with their own streams: the same draws for any
         * thread count. */
        eps = tg_tape_tensor(tp, mean->ndim, mean->shape, false);
        tg_rng_fill_normal_bulk(rng, eps->data, eps->size);
    } else if (eps->ndim != 4 || eps->size != mean->size ||
               memcmp(eps->shape, mean->shape, sizeof(int) * 4)) {
        char a[64], b[64];
        tg_fatal("bayes_conv2d", "eps %s must be the output's shape %s",
                 tg_shape_str(eps, a), tg_shape_str(mean, b));
    }
    tg_tensor *var_W, *var_b;
    bayes_layer_posterior(tp, l->W_mu, l->W_rho, l->b_mu, l->b_rho,
                          l->prior_scale, &var_W, &var_b, kl);
    tg_tensor *var = tg_conv2d_ex(tp, tg_square(tp, x), var_W, var_b, &l->args);
    tg_tensor *sd = tg_sqrt(tp, var);
    return tg_add(tp, mean, tg_mul(tp, sd, eps));
}

tg_tensor *tg_bayes_conv2d_apply_eps(tg_tape *tp, const tg_bayes_conv2d *l,
                                     tg_tensor *x, tg_tensor *eps)
{
    if (!l)
        tg_fatal("bayes_conv2d_apply_eps", "NULL layer");
    if (!x || !eps)
        tg_fatal("bayes_conv2d", "NULL %s", x ? "eps" : "x");
    check_x("bayes_conv2d", l, x);
    return sample(tp, l, x, eps, NULL, NULL);
}

tg_tensor *tg_bayes_conv2d_apply_kl(tg_tape *tp, const tg_bayes_conv2d *l,
                                    tg_tensor *x, tg_rng *rng, tg_tensor **kl)
{
    if (!l)
        tg_fatal("bayes_conv2d_apply_kl", "NULL layer");
    if (!x || !rng || !kl)
        tg_fatal("bayes_conv2d_apply_kl", "NULL %s",
                 !x     ? "x"
                 : !rng ? "rng"
                        : "kl");
    check_x("bayes_conv2d_apply_kl", l, x);
    return sample(tp, l, x, NULL, rng, kl);
}

tg_tensor *tg_bayes_conv2d_apply(tg_tape *tp, const tg_bayes_conv2d *l,
                                 tg_tensor *x, tg_rng *rng)
{
    if (!l)
        tg_fatal("bayes_conv2d_apply", "NULL layer");
    if (!x)
        tg_fatal("bayes_conv2d", "NULL x");
    check_x("bayes_conv2d", l, x);
    if (!rng)
        return tg_conv2d_ex(tp, x, l->W_mu, l->b_mu, &l->args);
    return sample(tp, l, x, NULL, rng, NULL);
}

tg_tensor *tg_bayes_conv2d_kl(tg_tape *tp, const tg_bayes_conv2d *l)
{
    if (!l)
        tg_fatal("bayes_conv2d_kl", "NULL layer");
    tg_tensor *var_W, *var_b, *kl;
    bayes_layer_posterior(tp, l->W_mu, l->W_rho, l->b_mu, l->b_rho,
                          l->prior_scale, &var_W, &var_b, &kl);
    return kl;
}
