/* Private to nn: what every layer's init checks before it touches
 * anything, so a NULL gives a message naming the call instead of a
 * segfault inside (a README-only audit gave a NULL rng to four inits). */
#ifndef TG_LAYER_INIT_H
#define TG_LAYER_INIT_H

#include <stdbool.h>
#include <string.h>

#include "tg_nn.h"

/* The longest layer name: its parameters' names add a suffix (".weight",
 * ".bias_rho", ...) in 256-byte buffers, which had cut a 250-byte name's
 * "weight" to "weig" in a checkpoint without a word. */
#define TG_LAYER_NAME_MAX 200

/* layer, ps and name must not be NULL, and rng neither when draws (the
 * initial values are drawn from it); name at most TG_LAYER_NAME_MAX
 * bytes. */
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
    if (strlen(name) > TG_LAYER_NAME_MAX)
        tg_fatal(op, "name '%.32s...' is %zu bytes, at most %d", name,
                 strlen(name), TG_LAYER_NAME_MAX);
}

#endif
