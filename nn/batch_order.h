/* Private to nn: the order of an epoch's rows, shared by tg_batcher
 * (batcher.c) and tg_array_batcher (array_batcher.c), so both shuffle
 * alike: a function of (seed, epoch) only, and a run resumed at batch k of
 * epoch e sees the batches it would have seen. */
#ifndef TG_BATCH_ORDER_H
#define TG_BATCH_ORDER_H

#include "tg_nn.h"

/* order[0..n) = 0..n-1, then, when shuffle is set, Fisher-Yates from the
 * rng stream of the epoch: order[i] swaps with a uniform j <= i. The
 * stream's constant ("batch") keeps it apart from the streams other
 * purposes derive from small integers. */
static inline void batch_order(int *order, int n, uint64_t seed, int64_t epoch,
                               bool shuffle)
{
    for (int i = 0; i < n; i++)
        order[i] = i;
    if (!shuffle)
        return;
    tg_rng rng;
    tg_rng_seed(&rng, seed, 0x6261746368000000ull ^ (uint64_t)epoch);
    for (int i = n - 1; i > 0; i--) {
        int j = (int)tg_rng_below(&rng, (uint32_t)i + 1);
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

#endif
