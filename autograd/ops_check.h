/* Private to autograd: a shape check shared by layer_norm and group_norm
 * (gamma, beta) and kl_normals (a shared prior row). NULL checks are
 * tape.h's check_inputs. */
#ifndef TG_OPS_CHECK_H
#define TG_OPS_CHECK_H

#include "tg_autograd.h"

/* Aborts unless t is [C] or [1, C] (a row of C values: gamma, beta, a
 * shared prior). */
static inline void check_row(const char *op, const tg_tensor *t,
                             const char *what, int cols)
{
    if (!t)
        tg_fatal(op, "%s is NULL", what);
    bool row = (t->ndim == 1 || (t->ndim == 2 && t->shape[0] == 1)) &&
               t->shape[t->ndim - 1] == cols;
    if (!row) {
        char s[64];
        tg_fatal(op, "%s is %s, expected [%d] or [1, %d]", what,
                 tg_shape_str(t, s), cols, cols);
    }
}

#endif
