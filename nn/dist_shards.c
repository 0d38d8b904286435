/* The shards of a global batch: which rows each shard and rank holds, and
 * the bookkeeping that sums the shards' gradients in shard order (see
 * tg_dist.h and dist_shards.h). The MPI transport is dist_collectives.c. */
#include <stdlib.h>
#include <string.h>

#include "dist_shards.h"
#include "tg_config.h"

static struct {
    int count;     /* tg_dist_set_shards; 0: the rank count */
    size_t numel;  /* of acc and of each stashed gradient */
    double *acc;   /* the running sum of the shards' gradients */
    float *stash;  /* ranks > 0: their shards' gradients, in order */
    int stash_cap; /* gradients stash can hold */
    double *scratch;
    size_t scratch_cap;
} sh;

static void *grow(void *p, size_t bytes, const char *op)
{
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q)
        tg_out_of_memory(op, "out of memory (%zu bytes)", bytes);
    return q;
}

void tg_dist_shards_free_(void)
{
    free(sh.acc);
    free(sh.stash);
    free(sh.scratch);
    int count = sh.count;
    memset(&sh, 0, sizeof sh);
    sh.count = count;
}

void tg_dist_set_shards(int shards)
{
    if (shards < 1 || shards > TG_DIST_MAX_SHARDS)
        tg_fatal("dist_set_shards", "%d shards: not 1..%d", shards,
                 TG_DIST_MAX_SHARDS);
    sh.count = shards;
}

int tg_dist_shards(void)
{
    if (sh.count)
        return sh.count;
    int size = tg_dist_size();
    return size < TG_DIST_MAX_SHARDS ? size : TG_DIST_MAX_SHARDS;
}

/* rank r of N holds shards [r * S / N, (r + 1) * S / N) */
int tg_dist_my_shards(int *first)
{
    int64_t s = tg_dist_shards();
    int rank = tg_dist_rank(), size = tg_dist_size();
    int64_t lo = rank * s / size, hi = (rank + 1) * s / size;
    if (first)
        *first = (int)lo;
    return (int)(hi - lo);
}

int tg_dist_shard_rows(int n, int shard, int *first)
{
    int64_t s = tg_dist_shards();
    if (n < 0 || shard < 0 || shard >= s)
        tg_fatal("dist_shard_rows",
                 "shard %d of a batch of %d rows (%d shards)", shard, n,
                 (int)s);
    int64_t lo = shard * (int64_t)n / s, hi = (shard + 1) * (int64_t)n / s;
    if (first)
        *first = (int)lo;
    return (int)(hi - lo);
}

/* The rows of this rank's shards, which are consecutive. */
int tg_dist_share(int n, int *first)
{
    if (n < 0)
        tg_fatal("dist_share", "negative batch size %d", n);
    int64_t s = tg_dist_shards();
    int k0, k = tg_dist_my_shards(&k0);
    int64_t lo = k0 * (int64_t)n / s, hi = (k0 + k) * (int64_t)n / s;
    if (first)
        *first = (int)lo;
    return (int)(hi - lo);
}

double *tg_dist_scratch_(size_t n, bool zero)
{
    if (n > sh.scratch_cap) {
        sh.scratch = grow(sh.scratch, n * sizeof(double), "dist_scratch");
        sh.scratch_cap = n;
    }
    if (zero)
        memset(sh.scratch, 0, n * sizeof(double));
    return sh.scratch;
}

static double *acc_for(size_t n)
{
    if (n != sh.numel || !sh.acc) {
        sh.acc = grow(sh.acc, n * sizeof(double), "dist_reduce");
        sh.numel = n;
        sh.stash_cap = 0;
    }
    return sh.acc;
}

/* Rank 0 (the first in shard order) sums its shards into acc as they come;
 * the other ranks must add theirs after the sum of the ranks before them,
 * so they keep each shard's gradient until then. */
void tg_dist_keep_shard_(tg_params *ps, int j, int count)
{
    if (count <= 1)
        return;
    size_t n = tg_params_numel(ps);
    float *g = tg_params_grad(ps);
    double *acc = acc_for(n);
    if (tg_dist_rank() == 0) {
        if (j == 0)
            for (size_t i = 0; i < n; i++)
                acc[i] = g[i];
        else
            for (size_t i = 0; i < n; i++)
                acc[i] += g[i];
    } else {
        if (sh.stash_cap < count) {
            sh.stash = grow(sh.stash, (size_t)count * n * sizeof(float),
                            "dist_keep_shard");
            sh.stash_cap = count;
        }
        memcpy(sh.stash + (size_t)j * n, g, n * sizeof(float));
    }
    memset(g, 0, n * sizeof(float));
}

void tg_dist_reduce_shards_(tg_params *ps, int count)
{
    size_t n = tg_params_numel(ps);
    float *g = tg_params_grad(ps);
    if (tg_dist_size() == 1) { /* one process holds every shard */
        if (count > 1)
            for (size_t i = 0; i < n; i++)
                g[i] = (float)sh.acc[i];
        return;
    }
#ifdef TG_HAVE_MPI
    tg_dist_chain_shards_(g, acc_for(n), sh.stash, n, count);
#endif
}
