/* Private to autograd: how an op records itself on the tape.
 *
 * An op's forward allocates its output with out_tensor()/out_like(), computes
 * it, then calls record(); its backward reads the record and adds into the
 * input gradients it gets from grad_of() (NULL for inputs that need none). */
#ifndef TG_TAPE_H
#define TG_TAPE_H

#include "tg_autograd.h"

#define TG_MAX_INPUTS 4

typedef struct tg_record tg_record;
typedef void (*tg_backward_fn)(tg_tape *tp, tg_record *r);

struct tg_record {
    const char *op;
    tg_backward_fn backward;
    tg_tensor *in[TG_MAX_INPUTS];
    int n_in;
    tg_tensor *out;   /* single-output ops */
    tg_tensor **outs; /* multi-output ops (split); out is then NULL */
    int n_out;
    float f[2];       /* scalar arguments (scale, clamp bounds) */
    int i[4];         /* integer arguments (broadcast geometry) */
    void *saved;      /* arena memory the op kept for backward */
};

/* A fresh output tensor on the arena (uninitialised data). */
tg_tensor *out_tensor(tg_tape *tp, int ndim, const int *shape);
tg_tensor *out_like(tg_tape *tp, const tg_tensor *x);
/* Appends a record when recording and some input requires grad, marking the
 * output(s) as requiring grad; returns NULL (and records nothing) otherwise. */
tg_record *record(tg_tape *tp, const char *op, tg_backward_fn backward,
                  tg_tensor *out, int n_in, tg_tensor *const *in);
tg_record *record_multi(tg_tape *tp, const char *op, tg_backward_fn backward,
                        int n_out, tg_tensor **outs, int n_in,
                        tg_tensor *const *in);
/* t's gradient, allocated zeroed on the arena at first use; NULL when t does
 * not require grad. */
float *grad_of(tg_tape *tp, tg_tensor *t);

/* Sets t to an empty tensor of this shape (aborts on a bad shape). */
void tg_tensor_init_shape(tg_tensor *t, int ndim, const int *shape);

/* Aborts unless a and b have the same shape. */
void check_same_shape(const char *op, const tg_tensor *a, const tg_tensor *b);

#endif
