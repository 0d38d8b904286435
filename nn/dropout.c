/* Inverted dropout: the random half of tg_dropout (the mask, drawn from a
 * tg_rng on one thread in element order) over autograd's tg_mask_scale. */
#include "tg_nn.h"

#include <math.h>
#include <stdint.h>

tg_tensor *tg_dropout(tg_tape *tp, tg_tensor *x, float p, tg_rng *rng,
                      tg_dropout_mode mode)
{
    if (!x)
        tg_fatal("dropout", "x is NULL");
    if (!(p >= 0.0f && p <= 1.0f))
        tg_fatal("dropout", "p = %g outside [0, 1]", (double)p);
    if (mode != TG_DROPOUT_AUTO && mode != TG_DROPOUT_TRAIN &&
        mode != TG_DROPOUT_EVAL)
        tg_fatal("dropout", "unknown mode %d", (int)mode);
    bool on = mode == TG_DROPOUT_TRAIN ||
              (mode == TG_DROPOUT_AUTO && tg_tape_recording(tp));
    if (!on || p == 0.0f)
        return x;
    if (!rng)
        tg_fatal("dropout", "rng is NULL");
    /* Keep an element when u >= p, u uniform on the multiples of 2^-24 in
     * [0, 1): P(drop) = ceil(p 2^24) / 2^24, p to within 6e-8. */
    uint8_t *keep = tg_tape_alloc(tp, x->size);
    for (size_t k = 0; k < x->size; k++)
        keep[k] = tg_rng_uniform(rng) >= p;
    float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
    return tg_mask_scale(tp, x, keep, scale);
}
