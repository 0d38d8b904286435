/* Internal to nn/: the shard bookkeeping (dist_shards.c) that tg_step_shard
 * and tg_step_finish (step.c) use, and the chain over MPI (dist.c) that it
 * sums the ranks' shards with. Not part of the API. */
#ifndef TG_DIST_SHARDS_H
#define TG_DIST_SHARDS_H

#include "tg_dist.h"

/* Internal to the library: not exported from libtapegrad.so. */
#pragma GCC visibility push(hidden)

/* Keeps the gradient of this rank's shard j (0-based, in order) of count
 * for tg_dist_reduce_shards_, and zeroes the gradient. With count 1 the
 * gradient stays where it is. */
void tg_dist_keep_shard_(tg_params *ps, int j, int count);
/* Collective: the kept gradients of every rank's shards (count on this
 * rank; with count 1, the gradient itself) summed in shard order, in
 * double, rounded once into tg_params_grad on every rank. */
void tg_dist_reduce_shards_(tg_params *ps, int count);
/* A scratch of n doubles kept by dist_shards.c (freed at finalize), zeroed when
 * zero is true; otherwise as the last call with the same n left it. */
double *tg_dist_scratch_(size_t n, bool zero);
/* Frees what the shards keep (the sum, the kept gradients, the scratch);
 * the shard count stays. tg_dist_finalize calls it. */
void tg_dist_shards_free_(void);
/* With MPI only, in dist.c: the chain that sums every rank's shards in
 * shard order into g (n floats) on every rank. acc holds n doubles (on
 * rank 0 with count > 1, the sum of its kept shards), stash this rank's
 * count kept gradients (with count 1, g itself is the shard). */
void tg_dist_chain_shards_(float *g, double *acc, const float *stash, size_t n,
                           int count);

#pragma GCC visibility pop

#endif
