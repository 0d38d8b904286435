/* Mini-batches in a shuffled order that is a function of (seed, epoch) only,
 * so a run resumed at batch k of epoch e sees exactly the batches it would
 * have seen. */
#include "batch_order.h"
#include "parallel.h"
#include "tg_nn.h"

#include <stdlib.h>
#include <string.h>

/* A NULL batcher: a message naming the call, not a segfault inside it. */
static void need_batcher(const tg_batcher *b, const char *op)
{
    if (!b)
        tg_fatal(op, "NULL batcher");
}

void tg_batcher_init(tg_batcher *b, const tg_dataset *ds, int batch,
                     uint64_t seed)
{
    need_batcher(b, "batcher_init");
    if (batch < 1)
        tg_fatal("batcher_init", "batch size %d must be >= 1", batch);
    if (!ds || ds->n < 1)
        tg_fatal("batcher_init", "empty data set");
    memset(b, 0, sizeof *b);
    b->ds = ds;
    b->batch = batch;
    b->seed = seed;
    b->order = malloc((size_t)ds->n * sizeof *b->order);
    if (!b->order)
        tg_out_of_memory("batcher_init", "out of memory for %d indices", ds->n);
    tg_batcher_start(b, 0, 0);
}

void tg_batcher_free(tg_batcher *b)
{
    if (!b)
        return;
    free(b->order);
    b->order = NULL;
}

int tg_batcher_count(const tg_batcher *b)
{
    need_batcher(b, "batcher_count");
    return (int)(((int64_t)b->ds->n + b->batch - 1) / b->batch);
}

void tg_batcher_start(tg_batcher *b, int64_t epoch, int first_batch)
{
    need_batcher(b, "batcher_start");
    if (!b->order) /* tg_batcher_free sets it NULL: was a segfault */
        tg_fatal("batcher_start", "the batcher was freed (tg_batcher_free)");
    int n = b->ds->n;
    if (first_batch < 0 || first_batch > tg_batcher_count(b))
        tg_fatal("batcher_start", "batch %d outside 0..%d", first_batch,
                 tg_batcher_count(b));
    batch_order(b->order, n, b->seed, epoch, true);
    b->epoch = epoch;
    int64_t pos = (int64_t)first_batch * b->batch;
    b->pos = pos > n ? n : (int)pos;
}

int tg_batcher_next(tg_batcher *b, float *x, int *labels)
{
    need_batcher(b, "batcher_next");
    const tg_dataset *ds = b->ds;
    if (!b->order)
        tg_fatal("batcher_next", "the batcher was freed (tg_batcher_free)");
    if (!x)
        tg_fatal("batcher_next", "NULL x (the batch's rows go there)");
    if (labels && !ds->labels)
        tg_fatal("batcher_next",
                 "labels asked for, but the dataset of %d images has none "
                 "(read by tg_idx_images_load from a set without labels)",
                 ds->n);
    size_t pixels = (size_t)ds->rows * (size_t)ds->cols;
    int count = ds->n - b->pos < b->batch ? ds->n - b->pos : b->batch;
    /* on the threads: a batch's rows are gathered from all over the set
     * (128 MNIST rows took 50 us on one core of a 1.2 ms two-core step) */
    TG_PARALLEL_FOR(count, pixels)
    for (int r = 0; r < count; r++) {
        int idx = b->order[b->pos + r];
        memcpy(x + (size_t)r * pixels, ds->images + (size_t)idx * pixels,
               pixels * sizeof(float));
        if (labels)
            labels[r] = ds->labels[idx];
    }
    b->pos += count;
    return count;
}
