/* Model helpers built from ops: the reparameterization trick and one-hot
 * targets. Noise is drawn on the calling thread in row-major order, so a
 * seeded rng gives the same z on any thread count. */
#include "tg_nn.h"

#include <string.h>

/* z = mean + exp(logvar / 2) * eps, eps ~ N(0, I) of mean's shape; gradients
 * reach mean and logvar through the ops (add, mul, exp, scale). */
tg_tensor *tg_reparameterize(tg_tape *tp, tg_tensor *mean, tg_tensor *logvar,
                             tg_rng *rng, tg_tensor **eps_out)
{
    if (!mean || !logvar || !rng)
        tg_fatal("reparameterize", "NULL %s",
                 !mean     ? "mean"
                 : !logvar ? "logvar"
                           : "rng");
    char a[64], b[64];
    if (mean->ndim != logvar->ndim ||
        memcmp(mean->shape, logvar->shape, (size_t)mean->ndim * sizeof(int)))
        tg_fatal("reparameterize", "mean %s and logvar %s differ",
                 tg_shape_str(mean, a), tg_shape_str(logvar, b));
    tg_tensor *eps = tg_tape_tensor(tp, mean->ndim, mean->shape, false);
    tg_rng_fill_normal(rng, eps->data, eps->size, 0.0f, 1.0f);
    if (eps_out)
        *eps_out = eps;
    tg_tensor *std = tg_exp(tp, tg_scale(tp, logvar, 0.5f));
    return tg_add(tp, mean, tg_mul(tp, std, eps));
}

tg_tensor *tg_one_hot(tg_tape *tp, const int *labels, int n, int classes)
{
    if (n < 1 || classes < 1 || !labels)
        tg_fatal("one_hot", "%d labels of %d classes%s", n, classes,
                 labels ? "" : " (labels NULL)");
    tg_tensor *y = tg_tape_tensor2(tp, n, classes, true);
    for (int r = 0; r < n; r++) {
        if (labels[r] < 0 || labels[r] >= classes)
            tg_fatal("one_hot", "label %d at row %d outside 0..%d", labels[r],
                     r, classes - 1);
        y->data[(size_t)r * (size_t)classes + (size_t)labels[r]] = 1.0f;
    }
    return y;
}
