/* Private to autograd: argument checks shared by the ops of ops_math.c,
 * ops_softmax.c, ops_select.c, ops_norm.c and the losses they sit beside. */
#ifndef TG_OPS_CHECK_H
#define TG_OPS_CHECK_H

#include "tg_autograd.h"

/* Aborts naming op and the argument when t is NULL. */
static inline void check_tensor(const char *op, const tg_tensor *t,
                                const char *what)
{
    if (!t)
        tg_fatal(op, "%s is NULL", what);
}

/* Aborts unless t is [C] or [1, C] (a row of C values: gamma, beta, a
 * shared prior). */
static inline void check_row(const char *op, const tg_tensor *t,
                             const char *what, int cols)
{
    check_tensor(op, t, what);
    bool row = (t->ndim == 1 || (t->ndim == 2 && t->shape[0] == 1)) &&
               t->shape[t->ndim - 1] == cols;
    if (!row) {
        char s[64];
        tg_fatal(op, "%s is %s, expected [%d] or [1, %d]", what,
                 tg_shape_str(t, s), cols, cols);
    }
}

#endif
