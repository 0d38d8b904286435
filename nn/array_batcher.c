/* Mini-batches over caller-owned float arrays: x [n, dim], optional targets
 * y [n, y_dim] and optional int labels [n]. The order is a function of
 * (seed, epoch) only (the same shuffle as tg_batcher), so a resumed run sees
 * the same batches. Batches are tape tensors: with shuffling off they are
 * views of the caller's rows (no copy); shuffled rows are gathered into the
 * tape's arena (no heap allocation after warm-up). */
#include "batch_order.h"
#include "tg_nn.h"

#include <stdlib.h>
#include <string.h>

/* A NULL batcher: a message naming the call, not a segfault inside it. */
static void need_batcher(const tg_array_batcher *b, const char *op)
{
    if (!b)
        tg_fatal(op, "NULL batcher");
}

void tg_array_batcher_init(tg_array_batcher *b, const float *x, int n, int dim,
                           int batch, uint64_t seed)
{
    need_batcher(b, "array_batcher_init");
    if (!x || n < 1 || dim < 1)
        tg_fatal("array_batcher_init", "x %s with n=%d dim=%d",
                 x ? "given" : "NULL", n, dim);
    if (batch < 1)
        tg_fatal("array_batcher_init", "batch size %d must be >= 1", batch);
    memset(b, 0, sizeof *b);
    b->x = x;
    b->n = n;
    b->dim = dim;
    b->batch = batch;
    b->seed = seed;
    b->shuffle = true;
    b->order = malloc((size_t)n * sizeof *b->order);
    if (!b->order)
        tg_out_of_memory("array_batcher_init", "out of memory for %d indices",
                         n);
    tg_array_batcher_start(b, 0, 0);
}

void tg_array_batcher_free(tg_array_batcher *b)
{
    if (!b)
        return;
    free(b->order);
    b->order = NULL;
}

int tg_array_batcher_count(const tg_array_batcher *b)
{
    need_batcher(b, "array_batcher_count");
    return b->drop_last ? b->n / b->batch
                        : (int)(((int64_t)b->n + b->batch - 1) / b->batch);
}

void tg_array_batcher_start(tg_array_batcher *b, int64_t epoch, int first_batch)
{
    need_batcher(b, "array_batcher_start");
    if (!b->order) /* tg_array_batcher_free sets it NULL: was a segfault */
        tg_fatal("array_batcher_start",
                 "the batcher was freed (tg_array_batcher_free)");
    if (first_batch < 0 || first_batch > tg_array_batcher_count(b))
        tg_fatal("array_batcher_start", "batch %d outside 0..%d", first_batch,
                 tg_array_batcher_count(b));
    batch_order(b->order, b->n, b->seed, epoch, b->shuffle);
    b->epoch = epoch;
    int64_t pos = (int64_t)first_batch * b->batch;
    b->pos = pos > b->n ? b->n : (int)pos;
}

/* Rows order[pos .. pos+count) of src [n, cols] as a tape tensor: a view
 * when they are consecutive in src, else gathered. */
static tg_tensor *rows_of(tg_tape *tp, const tg_array_batcher *b,
                          const float *src, int cols, int count)
{
    const int *idx = b->order + b->pos;
    bool consecutive = true;
    for (int r = 1; r < count && consecutive; r++)
        consecutive = idx[r] == idx[0] + r;
    if (consecutive)
        return tg_tape_view2(tp, (float *)src + (size_t)idx[0] * (size_t)cols,
                             count, cols);
    tg_tensor *t = tg_tape_tensor2(tp, count, cols, false);
    for (int r = 0; r < count; r++)
        memcpy(t->data + (size_t)r * (size_t)cols,
               src + (size_t)idx[r] * (size_t)cols,
               (size_t)cols * sizeof(float));
    return t;
}

int tg_array_batcher_next(tg_array_batcher *b, tg_tape *tp, tg_tensor **x,
                          tg_tensor **y, const int **labels)
{
    need_batcher(b, "array_batcher_next");
    if (!x)
        tg_fatal("array_batcher_next", "NULL x (it receives the batch)");
    if (!b->order)
        tg_fatal("array_batcher_next",
                 "the batcher was freed (tg_array_batcher_free)");
    int left = b->n - b->pos;
    int count = left < b->batch ? left : b->batch;
    if (count == 0 || (b->drop_last && count < b->batch))
        return 0;
    if (y && !b->y)
        tg_fatal("array_batcher_next", "y requested but no targets set");
    if (y && b->y_dim < 1) /* was a silent [count, 0] target */
        tg_fatal("array_batcher_next", "targets y set with y_dim %d (set both)",
                 b->y_dim);
    if (labels && !b->labels)
        tg_fatal("array_batcher_next", "labels requested but none set");
    *x = rows_of(tp, b, b->x, b->dim, count);
    if (y)
        *y = rows_of(tp, b, b->y, b->y_dim, count);
    if (labels) {
        int *l = tg_tape_alloc(tp, (size_t)count * sizeof *l);
        for (int r = 0; r < count; r++)
            l[r] = b->labels[b->order[b->pos + r]];
        *labels = l;
    }
    b->pos += count;
    return count;
}
