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

#endif
