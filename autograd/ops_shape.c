/* Ops that move data without arithmetic: split, concat, reshape. */
#include "parallel.h"
#include "tape.h"

#include <limits.h>
#include <string.h>

/* x [R, C] -> k outputs [R, C/k]; outs[p] holds columns [p*w, (p+1)*w).
 * Backward adds each output's gradient into its slice of dx. */
static void split_backward(tg_tape *tp, tg_record *r)
{
    const tg_tensor *x = r->in[0];
    float *dx = grad_of(tp, r->in[0]);
    int rows = tg_tensor_rows(x), cols = tg_tensor_cols(x);
    int w = cols / r->n_out;
    for (int p = 0; p < r->n_out; p++) {
        const float *dy = r->outs[p]->grad;
        if (!dy)
            continue; /* this part did not reach the loss */
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < w; j++)
                dx[(size_t)i * cols + p * w + j] += dy[(size_t)i * w + j];
    }
}

void tg_split(tg_tape *tp, tg_tensor *x, int k, tg_tensor **outs)
{
    check_inputs("split", x);
    if (!outs)
        tg_fatal("split", "outs is NULL (it receives the k parts)");
    int cols = tg_tensor_cols(x), rows = tg_tensor_rows(x);
    if (k < 1 || cols % k != 0) {
        char s[64];
        tg_fatal("split",
                 "cannot split %s into %d equal parts along the last axis",
                 tg_shape_str(x, s), k);
    }
    int w = cols / k;
    int shape[TG_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = w;
    for (int p = 0; p < k; p++) {
        outs[p] = out_tensor(tp, x->ndim, shape);
        for (int i = 0; i < rows; i++)
            memcpy(&outs[p]->data[(size_t)i * w],
                   &x->data[(size_t)i * cols + p * w],
                   (size_t)w * sizeof(float));
    }
    record_multi(tp, "split", split_backward, k, outs, 1, &x);
}

/* xs[p] [R, C_p] -> y [R, sum C_p]; each input gets back its columns. The
 * record holds one stand-in input (see tg_concat); the whole list is kept in
 * arena memory (r->saved). */
typedef struct concat_saved {
    int n;
    tg_tensor **xs;
} concat_saved;

static void concat_backward(tg_tape *tp, tg_record *r)
{
    const concat_saved *s = r->saved;
    const tg_tensor *y = r->out;
    int rows = tg_tensor_rows(y), cols = tg_tensor_cols(y), off = 0;
    for (int p = 0; p < s->n; p++) {
        int w = tg_tensor_cols(s->xs[p]);
        float *dx = grad_of(tp, s->xs[p]);
        for (int i = 0; dx && i < rows; i++)
            for (int j = 0; j < w; j++)
                dx[(size_t)i * w + j] += y->grad[(size_t)i * cols + off + j];
        off += w;
    }
}

tg_tensor *tg_concat(tg_tape *tp, int n, tg_tensor **xs)
{
    if (n < 1 || !xs)
        tg_fatal("concat", "needs at least one tensor, got %d", xs ? n : 0);
    tg_check_tensors("concat", n, (const tg_tensor *const *)xs);
    int rows = tg_tensor_rows(xs[0]);
    long long cols = 0; /* n widths near INT_MAX overflowed an int sum */
    bool any_grad = false;
    for (int p = 0; p < n; p++) {
        char s0[64], sp[64];
        bool same_lead = xs[p]->ndim == xs[0]->ndim;
        for (int d = 0; same_lead && d < xs[0]->ndim - 1; d++)
            same_lead = xs[p]->shape[d] == xs[0]->shape[d];
        if (!same_lead)
            tg_fatal("concat", "leading dims differ: %s and %s",
                     tg_shape_str(xs[0], s0), tg_shape_str(xs[p], sp));
        cols += tg_tensor_cols(xs[p]);
        if (cols > INT_MAX)
            tg_fatal("concat",
                     "the last dims up to input %d (%s) sum to %lld, more "
                     "than a dim holds",
                     p, tg_shape_str(xs[p], sp), cols);
        any_grad |= xs[p]->requires_grad;
    }
    int shape[TG_MAX_DIMS];
    memcpy(shape, xs[0]->shape, sizeof shape);
    shape[xs[0]->ndim - 1] = (int)cols;
    tg_tensor *y = out_tensor(tp, xs[0]->ndim, shape);
    int off = 0;
    for (int p = 0; p < n; p++) {
        int w = tg_tensor_cols(xs[p]);
        for (int i = 0; i < rows; i++)
            memcpy(&y->data[(size_t)i * cols + off],
                   &xs[p]->data[(size_t)i * w], (size_t)w * sizeof(float));
        off += w;
    }
    /* Record with a stand-in input list: any one input that requires grad
     * makes the op recorded; the real list is in saved. record() checks the
     * stand-in alone, so every input is checked here first: one computed on
     * another tape, ahead of the stand-in, lost its gradient without a word. */
    check_recorded_inputs(tp, "concat", n, xs);
    tg_tensor *probe = xs[0];
    for (int p = 0; p < n && any_grad; p++)
        if (xs[p]->requires_grad)
            probe = xs[p];
    tg_record *r = record(tp, "concat", concat_backward, y, 1, &probe);
    if (r) {
        concat_saved *s = tg_tape_alloc(tp, sizeof *s);
        s->n = n;
        s->xs = tg_tape_alloc(tp, (size_t)n * sizeof *s->xs);
        memcpy(s->xs, xs, (size_t)n * sizeof *xs);
        r->saved = s;
    }
    return y;
}

/* y has x's data under a new shape; dx += dy */
static void reshape_backward(tg_tape *tp, tg_record *r)
{
    bool fresh;
    float *dx = grad_fresh(tp, r, 0, &fresh);
    const float *dy = r->out->grad;
    const size_t n = r->out->size;
    /* on the threads: the conv VAE's flatten gradients (1.6 MB a step)
     * took 1-2% of a step on one thread while the other waited */
    if (fresh) {
        TG_PARALLEL_FOR(n, 1)
        for (size_t i = 0; i < n; i++)
            dx[i] = 0.0f + dy[i];
    } else {
        TG_PARALLEL_FOR(n, 1)
        for (size_t i = 0; i < n; i++)
            dx[i] += dy[i];
    }
}

tg_tensor *tg_reshape(tg_tape *tp, tg_tensor *x, int ndim, const int *shape)
{
    check_inputs("reshape", x);
    char sx[64];
    if (!shape)
        tg_fatal("reshape", "x %s: shape is NULL", tg_shape_str(x, sx));
    if (ndim < 1 || ndim > TG_MAX_DIMS)
        tg_fatal("reshape", "x %s to %d dims: a tensor has 1 to %d",
                 tg_shape_str(x, sx), ndim, TG_MAX_DIMS);
    for (int d = 0; d < ndim; d++)
        if (shape[d] < 0)
            tg_fatal("reshape",
                     "x %s: dim %d of the new shape is %d (give every size; "
                     "-1 is not inferred)",
                     tg_shape_str(x, sx), d, shape[d]);
    tg_tensor *y = view_tensor(tp, x->data, ndim, shape);
    if (y->size != x->size) {
        char sy[64];
        tg_fatal("reshape", "%s has %zu elements, %s has %zu",
                 tg_shape_str(x, sx), x->size, tg_shape_str(y, sy), y->size);
    }
    record(tp, "reshape", reshape_backward, y, 1, &x);
    return y;
}
