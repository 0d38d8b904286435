/* Ops that pick or rearrange elements without arithmetic: transpose, slices
 * along the rows and the last axis, gather rows by index (an embedding
 * lookup), and detach. Each backward adds the output gradient back into the
 * places the forward read from. */
#include "parallel.h"
#include "tape.h"

#include <string.h>

/* x [R, C] -> y [C, R], y[j, i] = x[i, j]; dx[i, j] += dy[j, i]. Tiles of
 * 32x32 keep both sides in cache. */
#define TILE 32

static void transpose_add(const float *src, float *dst, int rows, int cols)
{
    /* i0 + TILE passed INT_MAX for a dim within TILE of it: each loop
     * steps to the end of the tile it took */
    for (int i0 = 0, i1; i0 < rows; i0 = i1) {
        i1 = rows - i0 > TILE ? i0 + TILE : rows;
        for (int j0 = 0, j1; j0 < cols; j0 = j1) {
            j1 = cols - j0 > TILE ? j0 + TILE : cols;
            for (int i = i0; i < i1; i++)
                for (int j = j0; j < j1; j++)
                    dst[(size_t)j * rows + i] += src[(size_t)i * cols + j];
        }
    }
}

static void transpose_backward(tg_tape *tp, tg_record *r)
{
    float *dx = grad_of(tp, r->in[0]);
    /* dy is [C, R]: its transpose, [R, C], lands in dx */
    transpose_add(r->out->grad, dx, r->out->shape[0], r->out->shape[1]);
}

tg_tensor *tg_transpose(tg_tape *tp, tg_tensor *x)
{
    check_inputs("transpose", x);
    if (x->ndim != 2) {
        char s[64];
        tg_fatal("transpose", "x %s is not 2-D", tg_shape_str(x, s));
    }
    int rows = x->shape[0], cols = x->shape[1];
    tg_tensor *y = out_tensor(tp, 2, (int[]){cols, rows});
    memset(y->data, 0, y->size * sizeof(float));
    transpose_add(x->data, y->data, rows, cols);
    record(tp, "transpose", transpose_backward, y, 1, &x);
    return y;
}

/* y = x with its axes reordered: y.shape[d] = x.shape[perm[d]]. Both are
 * walked as 4-D (leading 1s); for y's element (a, b, c, e) in order, xs[d]
 * is the x stride of y's axis d. add: dst (x-shaped) += src (y-shaped)
 * instead of dst (y-shaped) = src (x-shaped). Each y element is one x
 * element: the threads split y's rows, any split the same bits. */
typedef struct perm_walk {
    int n[4];     /* y's dims, padded in front with 1s */
    size_t xs[4]; /* x's stride for each of them */
} perm_walk;

static perm_walk perm_walk_of(const tg_tensor *x, const int *perm)
{
    size_t stride[TG_MAX_DIMS];
    size_t st = 1;
    for (int d = x->ndim - 1; d >= 0; d--) {
        stride[d] = st;
        st *= (size_t)x->shape[d];
    }
    perm_walk w = {{1, 1, 1, 1}, {0, 0, 0, 0}};
    int off = 4 - x->ndim;
    for (int d = 0; d < x->ndim; d++) {
        w.n[off + d] = x->shape[perm[d]];
        w.xs[off + d] = stride[perm[d]];
    }
    return w;
}

static void permute_copy(const perm_walk *w, const float *src, float *dst,
                         bool add)
{
    long rows = (long)w->n[0] * w->n[1] * w->n[2]; /* y's rows of n[3] */
    TG_PARALLEL_FOR(rows, w->n[3])
    for (long r = 0; r < rows; r++) {
        long c = r % w->n[2], ab = r / w->n[2];
        long b = ab % w->n[1], a = ab / w->n[1];
        size_t x = a * w->xs[0] + b * w->xs[1] + c * w->xs[2];
        size_t y = (size_t)r * w->n[3];
        for (int e = 0; e < w->n[3]; e++, y++, x += w->xs[3]) {
            if (add)
                dst[x] += src[y];
            else
                dst[y] = src[x];
        }
    }
}

static void permute_backward(tg_tape *tp, tg_record *r)
{
    tg_tensor *x = r->in[0];
    int perm[TG_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++)
        perm[d] = r->i[d];
    perm_walk w = perm_walk_of(x, perm);
    permute_copy(&w, r->out->grad, grad_of(tp, x), true);
}

tg_tensor *tg_permute(tg_tape *tp, tg_tensor *x, const int *perm)
{
    check_inputs("permute", x);
    char s[64];
    if (!perm)
        tg_fatal("permute", "NULL perm for x %s", tg_shape_str(x, s));
    bool seen[TG_MAX_DIMS] = {false};
    for (int d = 0; d < x->ndim; d++) {
        if (perm[d] < 0 || perm[d] >= x->ndim || seen[perm[d]])
            tg_fatal("permute",
                     "perm[%d] = %d on x %s: perm must list each of the %d "
                     "axes 0..%d once",
                     d, perm[d], tg_shape_str(x, s), x->ndim, x->ndim - 1);
        seen[perm[d]] = true;
    }
    int shape[TG_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++)
        shape[d] = x->shape[perm[d]];
    tg_tensor *y = out_tensor(tp, x->ndim, shape);
    perm_walk w = perm_walk_of(x, perm);
    permute_copy(&w, x->data, y->data, false);
    tg_record *r = record(tp, "permute", permute_backward, y, 1, &x);
    if (r)
        for (int d = 0; d < x->ndim; d++)
            r->i[d] = perm[d];
    return y;
}

/* x [..., C] -> y [..., c1 - c0], y[r, j] = x[r, c0 + j];
 * dx[r, c0 + j] += dy[r, j]. r->i[0] = c0. */
static void slice_cols_backward(tg_tape *tp, tg_record *r)
{
    float *dx = grad_of(tp, r->in[0]);
    const float *dy = r->out->grad;
    int rows = tg_tensor_rows(r->out), w = tg_tensor_cols(r->out);
    int cols = tg_tensor_cols(r->in[0]), c0 = r->i[0];
    TG_PARALLEL_FOR(rows, w)
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < w; j++)
            dx[(size_t)i * cols + c0 + j] += dy[(size_t)i * w + j];
}

tg_tensor *tg_slice_cols(tg_tape *tp, tg_tensor *x, int c0, int c1)
{
    check_inputs("slice_cols", x);
    int rows = tg_tensor_rows(x), cols = tg_tensor_cols(x);
    if (c0 < 0 || c1 <= c0 || c1 > cols) {
        char s[64];
        tg_fatal("slice_cols",
                 "columns [%d, %d) outside x %s (need 0 <= c0 "
                 "< c1 <= %d)",
                 c0, c1, tg_shape_str(x, s), cols);
    }
    int w = c1 - c0, shape[TG_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = w;
    tg_tensor *y = out_tensor(tp, x->ndim, shape);
    for (int i = 0; i < rows; i++)
        memcpy(&y->data[(size_t)i * w], &x->data[(size_t)i * cols + c0],
               (size_t)w * sizeof(float));
    tg_record *r = record(tp, "slice_cols", slice_cols_backward, y, 1, &x);
    if (r)
        r->i[0] = c0;
    return y;
}

/* x [N, ...] -> y [r1 - r0, ...]: rows r0..r1-1 of the first axis, a view of
 * x's data (no copy); dx[r0 + i, ...] += dy[i, ...]. r->i[0] = r0. */
static void slice_rows_backward(tg_tape *tp, tg_record *r)
{
    float *dx = grad_of(tp, r->in[0]);
    const float *dy = r->out->grad;
    size_t n = r->out->size;
    if (n == 0)
        return; /* an empty slice (x may have 0 rows) */
    size_t inner = r->in[0]->size / (size_t)r->in[0]->shape[0];
    float *dst = dx + (size_t)r->i[0] * inner;
    TG_PARALLEL_FOR(n, 1)
    for (size_t k = 0; k < n; k++)
        dst[k] += dy[k];
}

tg_tensor *tg_slice_rows(tg_tape *tp, tg_tensor *x, int r0, int r1)
{
    check_inputs("slice_rows", x);
    int n = x->shape[0];
    if (r0 < 0 || r1 < r0 || r1 > n) {
        char s[64];
        tg_fatal("slice_rows",
                 "rows [%d, %d) outside x %s (need 0 <= r0 <= "
                 "r1 <= %d)",
                 r0, r1, tg_shape_str(x, s), n);
    }
    int shape[TG_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[0] = r1 - r0;
    size_t inner = n ? x->size / (size_t)n : 0;
    tg_tensor *y =
        view_tensor(tp, x->data + (size_t)r0 * inner, x->ndim, shape);
    tg_record *r = record(tp, "slice_rows", slice_rows_backward, y, 1, &x);
    if (r)
        r->i[0] = r0;
    return y;
}

/* table [N, D], idx[0..n-1] in [0, N) -> y [n, D], y[i] = table[idx[i]];
 * dtable[idx[i]] += dy[i]. The backward walks i in order on one thread, so
 * repeated indices sum their gradients in the same order for any thread
 * count. idx is copied to the arena (r->saved). */
static void gather_rows_backward(tg_tape *tp, tg_record *r)
{
    float *dtable = grad_of(tp, r->in[0]);
    const int *idx = r->saved;
    const float *dy = r->out->grad;
    int n = r->out->shape[0], d = r->out->shape[1];
    for (int i = 0; i < n; i++) {
        float *dst = &dtable[(size_t)idx[i] * d];
        const float *src = &dy[(size_t)i * d];
        for (int j = 0; j < d; j++)
            dst[j] += src[j];
    }
}

tg_tensor *tg_gather_rows(tg_tape *tp, tg_tensor *table, const int *idx, int n)
{
    check_inputs("gather_rows", table);
    char s[64];
    if (table->ndim != 2)
        tg_fatal("gather_rows", "table %s is not 2-D [N, D]",
                 tg_shape_str(table, s));
    if (n < 0 || (n > 0 && !idx))
        tg_fatal("gather_rows", "%d indices at %p", n, (const void *)idx);
    int rows = table->shape[0], d = table->shape[1];
    for (int i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= rows)
            tg_fatal("gather_rows",
                     "index %d at position %d outside table "
                     "%s",
                     idx[i], i, tg_shape_str(table, s));
    tg_tensor *y = out_tensor(tp, 2, (int[]){n, d});
    for (int i = 0; i < n; i++)
        memcpy(&y->data[(size_t)i * d], &table->data[(size_t)idx[i] * d],
               (size_t)d * sizeof(float));
    tg_record *r =
        record(tp, "gather_rows", gather_rows_backward, y, 1, &table);
    if (r) {
        int *saved = tg_tape_alloc(tp, (size_t)n * sizeof *saved);
        if (n > 0)
            memcpy(saved, idx, (size_t)n * sizeof *saved);
        r->saved = saved;
    }
    return y;
}

/* y shares x's data and shape but is a constant: nothing is recorded, y
 * never requires grad, and no gradient flows back into x through y. */
tg_tensor *tg_detach(tg_tape *tp, tg_tensor *x)
{
    check_inputs("detach", x);
    return view_tensor(tp, x->data, x->ndim, x->shape);
}
