/* What the variational Dense tests (test_bayes_*.c) share: softplus in
 * double and a small layer with random means and rho. Include after
 * cmocka.h and tg_nn.h. */
#ifndef TESTS_NN_BAYES_COMMON_H
#define TESTS_NN_BAYES_COMMON_H

#include <math.h>
#include <stdint.h>

static inline double softplus(double r)
{
    return r > 0 ? r + log1p(exp(-r)) : log1p(exp(r));
}

/* A layer in=3, out=4 with random means and rho in [-3, 0] (sigma from
 * 0.05 to 0.7), prior scale 0.5, in a sealed set. */
static inline tg_bayes_dense small_layer(tg_params *ps, uint64_t seed)
{
    tg_rng rng;
    tg_rng_seed(&rng, seed, 0);
    tg_bayes_dense l;
    tg_bayes_dense_init(&l, ps, "bfc", 3, 4, 0.5f, -5.0f, &rng);
    tg_params_seal(ps);
    tg_rng_fill_uniform(&rng, l.W_rho->data, l.W_rho->size, -3.0f, 0.0f);
    tg_rng_fill_uniform(&rng, l.b_rho->data, l.b_rho->size, -3.0f, 0.0f);
    tg_rng_fill_normal(&rng, l.W_mu->data, l.W_mu->size, 0.0f, 0.5f);
    tg_rng_fill_normal(&rng, l.b_mu->data, l.b_mu->size, 0.0f, 0.5f);
    return l;
}

#endif
