/* Internal to nn/: the shard bookkeeping (dist_shards.c) that tg_step_shard
 * and tg_step_finish (step.c) use, the chain over MPI (dist_collectives.c)
 * that it sums the ranks' shards with, and what the job (dist.c) and the
 * collectives (dist_collectives.c) share. Not part of the API. */
#ifndef TG_DIST_SHARDS_H
#define TG_DIST_SHARDS_H

#include "tg_config.h"
#include "tg_dist.h"

#ifdef TG_HAVE_MPI
#include <mpi.h>
#endif

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
/* With MPI only, in dist_collectives.c: the chain that sums every rank's shards
 * in shard order into g (n floats) on every rank. acc holds n doubles (on rank
 * 0 with count > 1, the sum of its kept shards), stash this rank's count kept
 * gradients (with count 1, g itself is the shard). */
void tg_dist_chain_shards_(float *g, double *acc, const float *stash, size_t n,
                           int count);

/* The job, kept by dist.c (tg_dist_init sets it), read by the collectives. */
struct dist_job {
    bool active; /* MPI_Init was called here and MPI_Finalize not yet */
    int rank, size, local_rank, local_size;
    int first_failed;
    double allreduce_s;
    double timeout_s;       /* 0: wait forever */
    char prog[64];          /* for the timeout's message */
    char program_build[64]; /* tg_dist_set_program_build; "": not set */
};
extern struct dist_job dist_state;

#ifdef TG_HAVE_MPI
/* In dist.c: aborts naming op unless rc is MPI_SUCCESS. */
void dist_check(int rc, const char *op);
/* In dist_collectives.c: waits for the collective *req under the job's
 * timeout, naming the ranks that never reached it (its comment there). */
void dist_timed_wait(MPI_Request *req, const char *op);
#endif

#pragma GCC visibility pop

#endif
