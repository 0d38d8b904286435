/* Reductions: over all elements, over the last axis of each row, or down
 * the rows (axis 0). Sums run in a fixed order (double accumulators) so
 * results never depend on the thread count. */
#include "parallel.h"
#include "tape.h"

/* y[0] = sum(x), or for the mean sum(x) / n, the double sum divided in
 * double and rounded once (a float 1/n times the sum was up to an ulp off:
 * the mean of seven 7s was 7.0000005); dx += dy, or dy / n rounded once.
 * r->i[0]: 1 for the mean. */
static float mean_grad(const tg_record *r, float dy, size_t n)
{
    return r->i[0] ? (float)((double)dy / (double)n) : dy;
}

static void sum_all_backward(tg_tape *tp, tg_record *r)
{
    float *dx = grad_of(tp, r->in[0]);
    float g = mean_grad(r, r->out->grad[0], r->in[0]->size);
    for (size_t i = 0; i < r->in[0]->size; i++)
        dx[i] += g;
}

static tg_tensor *sum_all(tg_tape *tp, tg_tensor *x, const char *op, bool mean)
{
    tg_tensor *y = out_tensor(tp, 1, (int[]){1});
    double acc = 0.0;
    for (size_t i = 0; i < x->size; i++)
        acc += x->data[i];
    /* The mean of no elements is 0 (not NaN): an empty batch adds nothing. */
    y->data[0] = (float)(mean ? (x->size ? acc / (double)x->size : 0.0) : acc);
    tg_record *r = record(tp, op, sum_all_backward, y, 1, &x);
    if (r)
        r->i[0] = mean;
    return y;
}

tg_tensor *tg_sum(tg_tape *tp, tg_tensor *x)
{
    check_inputs("sum", x);
    return sum_all(tp, x, "sum", false);
}

tg_tensor *tg_mean(tg_tape *tp, tg_tensor *x)
{
    check_inputs("mean", x);
    return sum_all(tp, x, "mean", true);
}

/* x [R, C] -> y [R, 1], y[r] = sum_c x[r, c] (or that over C, as the mean
 * above); dx[r, c] += dy[r] (or dy[r] / C) */
static void sum_rows_backward(tg_tape *tp, tg_record *r)
{
    const tg_tensor *x = r->in[0];
    float *dx = grad_of(tp, r->in[0]);
    int rows = tg_tensor_rows(x), cols = tg_tensor_cols(x);
    for (int i = 0; i < rows; i++) {
        float g = mean_grad(r, r->out->grad[i], (size_t)cols);
        for (int j = 0; j < cols; j++)
            dx[(size_t)i * cols + j] += g;
    }
}

static tg_tensor *sum_rows(tg_tape *tp, tg_tensor *x, const char *op, bool mean)
{
    int rows = tg_tensor_rows(x), cols = tg_tensor_cols(x);
    tg_tensor *y = out_tensor(tp, 2, (int[]){rows, 1});
    for (int i = 0; i < rows; i++) {
        double acc = 0.0;
        for (int j = 0; j < cols; j++)
            acc += x->data[(size_t)i * cols + j];
        y->data[i] = (float)(mean ? (cols ? acc / cols : 0.0) : acc);
    }
    tg_record *r = record(tp, op, sum_rows_backward, y, 1, &x);
    if (r)
        r->i[0] = mean;
    return y;
}

tg_tensor *tg_sum_rows(tg_tape *tp, tg_tensor *x)
{
    check_inputs("sum_rows", x);
    return sum_rows(tp, x, "sum_rows", false);
}

tg_tensor *tg_mean_rows(tg_tape *tp, tg_tensor *x)
{
    check_inputs("mean_rows", x);
    return sum_rows(tp, x, "mean_rows", true);
}

/* x [R, C] -> y [1, C], y[c] = sum_r x[r, c] (sum) or that divided by R in
 * double (mean); dx[r, c] += dy[c], or dy[c] / R rounded once (a float 1/R
 * times dy was up to an ulp off). r->i[0]: 1 for the mean. x of rank > 2 is
 * viewed as [R, C] (R the product of the leading dims). Each column sums its
 * rows in order, in double. With 0 rows both are 0 (the mean of nothing is 0,
 * as tg_mean). */
static void sum_axis0_backward(tg_tape *tp, tg_record *r)
{
    const tg_tensor *x = r->in[0];
    float *dx = grad_of(tp, r->in[0]);
    const float *dy = r->out->grad;
    int rows = tg_tensor_rows(x), cols = tg_tensor_cols(x);
    const float *g = dy;
    if (r->i[0]) { /* the mean: dy / R, each rounded once */
        float *q = tg_tape_alloc(tp, (size_t)cols * sizeof *q);
        for (int j = 0; j < cols; j++)
            q[j] = mean_grad(r, dy[j], (size_t)rows);
        g = q;
    }
    TG_PARALLEL_FOR(rows, cols)
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            dx[(size_t)i * cols + j] += g[j];
}

static tg_tensor *sum_axis0(tg_tape *tp, tg_tensor *x, const char *op,
                            bool mean)
{
    check_inputs(op, x);
    int rows = tg_tensor_rows(x), cols = tg_tensor_cols(x);
    tg_tensor *y = out_tensor(tp, 2, (int[]){1, cols});
    double *acc = tg_tape_alloc(tp, (size_t)cols * sizeof *acc);
    for (int j = 0; j < cols; j++)
        acc[j] = 0.0;
    const float *xd = x->data;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            acc[j] += xd[(size_t)i * cols + j];
    for (int j = 0; j < cols; j++)
        y->data[j] = (float)(mean && rows > 0 ? acc[j] / (double)rows : acc[j]);
    tg_record *r = record(tp, op, sum_axis0_backward, y, 1, &x);
    if (r)
        r->i[0] = mean;
    return y;
}

tg_tensor *tg_sum_axis0(tg_tape *tp, tg_tensor *x)
{
    return sum_axis0(tp, x, "sum_axis0", false);
}

tg_tensor *tg_mean_axis0(tg_tape *tp, tg_tensor *x)
{
    return sum_axis0(tp, x, "mean_axis0", true);
}
