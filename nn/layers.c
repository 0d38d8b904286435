/* Dense layer: y[B, out] = x[B, in] . W^T + b, W [out, in] (PyTorch's layout).
 * The layer owns nothing itself: W and b live in the parameter set. */
#include <math.h>
#include <stdio.h>

#include "layer_init.h"
#include "tg_nn.h"

void tg_dense_layer_init(tg_dense_layer *l, tg_params *ps, const char *name,
                         int in, int out, tg_init init, tg_rng *rng)
{
    layer_init_check("dense_layer_init", l, ps, name, true, rng);
    if (in <= 0 || out <= 0)
        tg_fatal("dense_layer_init", "%s: bad size in=%d out=%d", name, in,
                 out);
    char key[256];
    snprintf(key, sizeof key, "%s.weight", name);
    l->W = tg_params_add(ps, key, 2, (int[]){out, in});
    snprintf(key, sizeof key, "%s.bias", name);
    l->b = tg_params_add(ps, key, 1, (int[]){out});
    l->in = in;
    l->out = out;

    /* W is drawn first, then b, so a seed fixes both. */
    switch (init) {
    case TG_INIT_GLOROT: {
        float a = sqrtf(6.0f / (float)(in + out));
        tg_rng_fill_uniform(rng, l->W->data, l->W->size, -a, a);
        break; /* b stays zero */
    }
    case TG_INIT_HE:
        tg_rng_fill_normal(rng, l->W->data, l->W->size, 0.0f,
                           sqrtf(2.0f / (float)in));
        break;
    case TG_INIT_TORCH: {
        /* kaiming_uniform(a = sqrt(5)) gives bound 1/sqrt(in) for W; the
         * bias uses the same bound. */
        float a = 1.0f / sqrtf((float)in);
        tg_rng_fill_uniform(rng, l->W->data, l->W->size, -a, a);
        tg_rng_fill_uniform(rng, l->b->data, l->b->size, -a, a);
        break;
    }
    default:
        tg_fatal("dense_layer_init", "%s: unknown init %d", name, (int)init);
    }
}

tg_tensor *tg_dense_apply(tg_tape *tp, const tg_dense_layer *l, tg_tensor *x)
{
    if (!l)
        tg_fatal("dense_apply", "NULL layer");
    return tg_dense(tp, x, l->W, l->b);
}
