/* The numeric guard of training: finiteness of parameters, gradients and
 * optimizer state. */
#include <math.h>

#include "tg_nn.h"

const char *tg_params_nonfinite(tg_params *ps, const char **why)
{
    /* Fast path (one vectorised pass over values and gradients, on the
     * library's threads): every value finite and every |gradient| below
     * 2^63, so that its square is finite. NaN compares false. */
    const char *how = NULL;
    float value, grad;
    tg_params_absmax(ps, &value, &grad);
    if (value < INFINITY && grad < 0x1p63f) {
        if (why)
            *why = NULL;
        return NULL;
    }
    for (int k = 0; k < tg_params_count(ps); k++) {
        const tg_tensor *t = tg_params_get(ps, k);
        for (size_t i = 0; i < t->size && !how; i++) {
            float g = t->grad ? t->grad[i] : 0.0f;
            how = !isfinite(t->data[i]) ? "value is not finite"
                  : !isfinite(g)        ? "gradient is not finite"
                  : !isfinite(g * g)    ? "gradient overflows when squared"
                                        : NULL;
        }
        if (how) {
            if (why)
                *why = how;
            return tg_params_name(ps, k);
        }
    }
    if (why)
        *why = NULL;
    return NULL;
}

static bool all_finite(const float *x, size_t n)
{
    unsigned bad = 0;
    for (size_t i = 0; i < n; i++)
        bad |= !isfinite(x[i]);
    return !bad;
}

const char *tg_optim_nonfinite(const tg_optim *opt)
{
    if (!opt)
        tg_fatal("optim_nonfinite", "NULL optimizer");
    size_t off = 0;
    for (int k = 0; k < tg_params_count(opt->params); k++) {
        size_t n = tg_params_get(opt->params, k)->size;
        if ((opt->m && !all_finite(opt->m + off, n)) ||
            (opt->v && !all_finite(opt->v + off, n)))
            return tg_params_name(opt->params, k);
        off += n;
    }
    return NULL;
}
