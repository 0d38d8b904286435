/* LayerNorm, GroupNorm and Embedding layers: parameters in the set under
 * PyTorch's names (torch.nn.LayerNorm's and GroupNorm's weight = gamma and
 * bias = beta, torch.nn.Embedding's weight), computed by one op each
 * (tg_layer_norm, tg_group_norm, tg_gather_rows). */
#include <math.h>
#include <stdio.h>

#include "layer_init.h"
#include "tg_nn.h"

/* "<name>.weight" = 1 and "<name>.bias" = 0, both [n]: a normalisation's
 * scale and shift, starting as the identity (PyTorch's init). */
static void affine_params(tg_params *ps, const char *name, int n,
                          tg_tensor **weight, tg_tensor **bias)
{
    char key[256];
    snprintf(key, sizeof key, "%s.weight", name);
    *weight = tg_params_add(ps, key, 1, (int[]){n});
    snprintf(key, sizeof key, "%s.bias", name);
    *bias = tg_params_add(ps, key, 1, (int[]){n});
    for (int i = 0; i < n; i++)
        (*weight)->data[i] = 1.0f;
}

void tg_layer_norm_layer_init(tg_layer_norm_layer *l, tg_params *ps,
                              const char *name, int dim, float eps)
{
    layer_init_check("layer_norm_layer_init", l, ps, name, false, NULL);
    if (dim < 1 || !(eps >= 0.0f))
        tg_fatal("layer_norm_layer_init", "%s: dim %d, eps %g", name, dim,
                 (double)eps);
    affine_params(ps, name, dim, &l->weight, &l->bias);
    l->dim = dim;
    l->eps = eps;
}

tg_tensor *tg_layer_norm_apply(tg_tape *tp, const tg_layer_norm_layer *l,
                               tg_tensor *x)
{
    if (!l)
        tg_fatal("layer_norm_apply", "NULL layer");
    return tg_layer_norm(tp, x, l->weight, l->bias, l->eps);
}

void tg_group_norm_layer_init(tg_group_norm_layer *l, tg_params *ps,
                              const char *name, int groups, int channels,
                              float eps)
{
    layer_init_check("group_norm_layer_init", l, ps, name, false, NULL);
    if (channels < 1)
        tg_fatal("group_norm_layer_init", "%s: channels %d must be >= 1", name,
                 channels);
    if (groups < 1 || channels % groups != 0)
        tg_fatal("group_norm_layer_init",
                 "%s: groups %d must be >= 1 and divide channels %d", name,
                 groups, channels);
    if (!(eps >= 0.0f) || !isfinite(eps))
        tg_fatal("group_norm_layer_init", "%s: eps %g must be finite and >= 0",
                 name, (double)eps);
    affine_params(ps, name, channels, &l->weight, &l->bias);
    l->groups = groups;
    l->channels = channels;
    l->eps = eps;
}

tg_tensor *tg_group_norm_apply(tg_tape *tp, const tg_group_norm_layer *l,
                               tg_tensor *x)
{
    if (!l)
        tg_fatal("group_norm_apply", "NULL layer");
    /* named here, not as gamma's shape in the op it calls */
    if (x && x->ndim >= 2 && x->shape[1] != l->channels) {
        char s[64];
        tg_fatal("group_norm_apply", "x %s has %d channels, the layer %d",
                 tg_shape_str(x, s), x->shape[1], l->channels);
    }
    return tg_group_norm(tp, x, l->groups, l->weight, l->bias, l->eps);
}

void tg_embedding_layer_init(tg_embedding_layer *l, tg_params *ps,
                             const char *name, int num, int dim, tg_rng *rng)
{
    layer_init_check("embedding_layer_init", l, ps, name, true, rng);
    if (num < 1 || dim < 1)
        tg_fatal("embedding_layer_init", "%s: bad size num=%d dim=%d", name,
                 num, dim);
    char key[256];
    snprintf(key, sizeof key, "%s.weight", name);
    l->weight = tg_params_add(ps, key, 2, (int[]){num, dim});
    tg_rng_fill_normal(rng, l->weight->data, l->weight->size, 0.0f, 1.0f);
    l->num = num;
    l->dim = dim;
}

tg_tensor *tg_embedding_apply(tg_tape *tp, const tg_embedding_layer *l,
                              const int *idx, int n)
{
    if (!l)
        tg_fatal("embedding_apply", "NULL layer");
    /* named here, not as the gather_rows it calls */
    for (int i = 0; idx && i < n; i++)
        if (idx[i] < 0 || idx[i] >= l->num)
            tg_fatal("embedding", "index %d at position %d is outside [0, %d)",
                     idx[i], i, l->num);
    return tg_gather_rows(tp, l->weight, idx, n);
}
