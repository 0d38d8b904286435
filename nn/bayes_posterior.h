/* Private to nn: the variational layers' posterior op (nn/bayes.c), shared
 * by the Dense (bayes.c) and Conv2d (bayes_conv.c) layers. */
#ifndef TG_BAYES_POSTERIOR_H
#define TG_BAYES_POSTERIOR_H

#include "tg_nn.h"

/* For mu, rho of one shape (a weight or a bias): var = softplus(rho)^2 (a
 * tape tensor of rho's shape) and, when kl is not NULL, *kl = KL(N(mu,
 * var) || N(0, prior_scale^2)) summed over the elements, a [1] tape tensor;
 * both from one pass over rho, one op whose backward reaches mu and rho.
 * The same bits on any thread count. */
tg_tensor *bayes_posterior(tg_tape *tp, tg_tensor *mu, tg_tensor *rho,
                           float prior_scale, tg_tensor **kl);
/* A layer's weight and bias posteriors: *var_W, *var_b as bayes_posterior
 * gives them and, when kl is not NULL, *kl = the KL of both, a [1] tape
 * tensor. */
void bayes_layer_posterior(tg_tape *tp, tg_tensor *W_mu, tg_tensor *W_rho,
                           tg_tensor *b_mu, tg_tensor *b_rho, float prior_scale,
                           tg_tensor **var_W, tg_tensor **var_b,
                           tg_tensor **kl);

#endif
