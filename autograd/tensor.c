/* Long-lived tensors, shapes, and the one abort path for API misuse. */
#include "tape.h"

#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tg_fatal(const char *op, const char *fmt, ...)
{
    va_list ap;
    fflush(stdout); /* what the program printed before, then the reason */
    fprintf(stderr, "tapegrad: %s: ", op);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    abort();
}

static _Atomic(tg_oom_handler) oom_handler;

void tg_set_oom_handler(tg_oom_handler fn) { atomic_store(&oom_handler, fn); }

void tg_out_of_memory(const char *op, const char *fmt, ...)
{
    char msg[512];
    int n = snprintf(msg, sizeof msg, "%s: ", op);
    va_list ap;
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < sizeof msg)
        vsnprintf(msg + n, sizeof msg - (size_t)n, fmt, ap);
    va_end(ap);
    tg_oom_handler fn = atomic_load(&oom_handler);
    if (fn)
        fn(msg);
    tg_fatal(op, "%s", msg + (n > 0 && (size_t)n < sizeof msg ? n : 0));
}

void tg_check_tensors(const char *op, int n, const tg_tensor *const *ts)
{
    for (int k = 0; k < n; k++) {
        if (!ts[k])
            tg_fatal(op, "tensor argument %d is NULL", k + 1);
        if (tg_tensor_is_poisoned(ts[k]))
            tg_fatal(op,
                     "tensor argument %d was made on a tape before its last "
                     "tg_tape_reset [TG_TAPE_CHECKS]",
                     k + 1);
    }
}

const char *tg_shape_str(const tg_tensor *t, char *buf)
{
    /* A damaged header (a tape tensor used after its tape's reset) must
     * not overrun buf in the message that reports it. */
    if (!t) {
        snprintf(buf, 64, "NULL");
        return buf;
    }
    if (t->ndim < 0 || t->ndim > TG_MAX_DIMS) {
        snprintf(buf, 64, "[ndim %d?]", t->ndim);
        return buf;
    }
    int n = sprintf(buf, "[");
    for (int d = 0; d < t->ndim; d++)
        n += sprintf(buf + n, d ? ", %d" : "%d", t->shape[d]);
    sprintf(buf + n, "]");
    return buf;
}

/* Checks a shape and returns its element count. A dim may be 0: an empty
 * batch ([0, C]) goes through every op. */
static size_t shape_size(const char *op, int ndim, const int *shape)
{
    if (ndim < 1 || ndim > TG_MAX_DIMS)
        tg_fatal(op, "ndim %d outside 1..%d", ndim, TG_MAX_DIMS);
    if (!shape)
        tg_fatal(op, "NULL shape for ndim %d", ndim);
    size_t size = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            tg_fatal(op, "dim %d is %d, must be >= 0", d, shape[d]);
        if (shape[d] > 0 && size > SIZE_MAX / 4 / (size_t)shape[d])
            tg_fatal(op, "shape too large");
        size *= (size_t)shape[d];
    }
    return size;
}

void tg_tensor_init_shape(tg_tensor *t, const char *op, int ndim,
                          const int *shape)
{
    memset(t, 0, sizeof *t);
    t->size = shape_size(op, ndim, shape);
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
}

tg_tensor *tg_tensor_new(int ndim, const int *shape)
{
    tg_tensor *t = malloc(sizeof *t);
    if (!t)
        tg_out_of_memory("tensor_new", "out of memory");
    tg_tensor_init_shape(t, "tensor_new", ndim, shape);
    t->data = calloc(t->size ? t->size : 1, sizeof(float));
    if (!t->data)
        tg_out_of_memory("tensor_new", "out of memory for %zu floats", t->size);
    t->owns_data = true;
    return t;
}

tg_tensor *tg_tensor_new2(int rows, int cols)
{
    return tg_tensor_new(2, (int[]){rows, cols});
}

void tg_tensor_free(tg_tensor *t)
{
    if (!t)
        return;
    if (t->tape) { /* was free() of arena memory: a crash far away */
        char s[64];
        tg_fatal("tensor_free",
                 "%s was made on a tape: tg_tape_reset and tg_tape_free "
                 "release it",
                 tg_shape_str(t, s));
    }
    if (t->owns_data) {
        free(t->data);
        free(t->grad);
    }
    free(t);
}

void tg_tensor_require_grad(tg_tensor *t)
{
    tg_check_tensors("require_grad", 1, (const tg_tensor *[]){t});
    t->requires_grad = true;
    if (!t->grad) {
        if (!t->owns_data)
            tg_fatal("require_grad", "tensor does not own its storage");
        t->grad = calloc(t->size ? t->size : 1, sizeof(float));
        if (!t->grad)
            tg_out_of_memory("require_grad", "out of memory");
    }
}

void tg_tensor_zero_grad(tg_tensor *t)
{
    if (t->grad)
        memset(t->grad, 0, t->size * sizeof(float));
}

int tg_tensor_cols(const tg_tensor *t)
{
    if (!t)
        tg_fatal("tensor_cols", "NULL tensor");
    return t->shape[t->ndim - 1];
}

int tg_tensor_rows(const tg_tensor *t)
{
    if (!t)
        tg_fatal("tensor_rows", "NULL tensor");
    size_t rows = 1;
    for (int d = 0; d < t->ndim - 1; d++)
        rows *= (size_t)t->shape[d];
    if (rows > INT_MAX) { /* the ops count rows in int */
        char s[64];
        tg_fatal("tensor_rows",
                 "%s has %zu rows (all dims but the last), "
                 "more than %d",
                 tg_shape_str(t, s), rows, INT_MAX);
    }
    return (int)rows;
}
