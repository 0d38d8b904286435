/* Private to nn: what every layer's init checks before it touches
 * anything, so a NULL gives a message naming the call instead of a
 * segfault inside (a README-only audit gave a NULL rng to four inits). */
#ifndef TG_LAYER_INIT_H
#define TG_LAYER_INIT_H

#include <stdbool.h>

#include "tg_nn.h"

/* layer, ps and name must not be NULL, and rng neither when draws (the
 * initial values are drawn from it). */
static inline void layer_init_check(const char *op, const void *layer,
                                    const tg_params *ps, const char *name,
                                    bool draws, const tg_rng *rng)
{
    if (!layer || !ps || !name || (draws && !rng))
        tg_fatal(op, "NULL %s",
                 !layer  ? "layer"
                 : !ps   ? "parameter set"
                 : !name ? "name"
                         : "rng (the initial values are drawn from it)");
}

#endif
