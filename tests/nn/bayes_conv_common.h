/* What the variational Conv2d tests (test_bayes_conv_*.c) share: a small
 * layer with random means and rho, and a convolution's geometry. Include
 * after cmocka.h and tg_nn.h. */
#ifndef TESTS_NN_BAYES_CONV_COMMON_H
#define TESTS_NN_BAYES_CONV_COMMON_H

#include <stdint.h>

/* A layer 2 -> 3, kernel 3, stride 2, padding 1 with means N(0, 0.5) and
 * rho in [-3, 0] (sigma from 0.05 to 0.7), prior scale 0.5, in a sealed
 * set. */
static inline tg_bayes_conv2d small_layer(tg_params *ps, uint64_t seed)
{
    tg_rng rng;
    tg_rng_seed(&rng, seed, 0);
    tg_bayes_conv2d l;
    tg_bayes_conv2d_init(&l, ps, "bconv", 2, 3, 3, 2, 1, 0.5f, -5.0f, &rng);
    tg_params_seal(ps);
    tg_rng_fill_uniform(&rng, l.W_rho->data, l.W_rho->size, -3.0f, 0.0f);
    tg_rng_fill_uniform(&rng, l.b_rho->data, l.b_rho->size, -3.0f, 0.0f);
    tg_rng_fill_normal(&rng, l.W_mu->data, l.W_mu->size, 0.0f, 0.5f);
    tg_rng_fill_normal(&rng, l.b_mu->data, l.b_mu->size, 0.0f, 0.5f);
    return l;
}

typedef struct geom {
    int B, C, H, W, O, k, s, p;
} geom;

static inline int out_size(int n, const geom *g)
{
    return (n + 2 * g->p - g->k) / g->s + 1;
}

#endif
