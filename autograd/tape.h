/* Private to autograd: how a built-in op records itself on the tape.
 *
 * An op's forward checks its inputs (check_inputs: no NULL), allocates its
 * output with out_tensor()/out_like(), computes it, then calls record(); its
 * backward reads the record and adds into the input gradients it gets from
 * grad_of() (NULL for inputs that need none). A user's op does the same
 * through the public tg_op_record() / tg_grad_of() (tg_autograd.h): the
 * names here are shorthands for the library's own ops, and are not exported
 * from the shared library (tapegrad.map). struct tg_tape, at the end, is for
 * tape.c and tape_record.c alone. */
#ifndef TG_TAPE_H
#define TG_TAPE_H

#include "tg_autograd.h"

/* Internal to the library: not exported from libtapegrad.so. */
#pragma GCC visibility push(hidden)

struct tg_record {
    const char *op;
    tg_backward_fn backward;
    tg_tensor **in; /* n_in inputs (arena; NULL up to in[2]) */
    int n_in;
    tg_tensor *out;   /* the first output: the only one of most ops */
    tg_tensor **outs; /* all n_out outputs (arena); outs[0] == out */
    int n_out;
    float f[2];     /* scalar arguments (scale, clamp bounds) */
    int i[4];       /* integer arguments (broadcast geometry) */
    void *saved;    /* arena memory the op kept for backward */
    uint64_t *sums; /* with tg_tape_set_checks: the inputs' and outputs'
                     * data sums at record time, else NULL */
};

/* A fresh output tensor on the arena (uninitialised data). */
tg_tensor *out_tensor(tg_tape *tp, int ndim, const int *shape);
tg_tensor *out_like(tg_tape *tp, const tg_tensor *x);
/* A tape tensor of this shape over existing memory (reshape's view). */
tg_tensor *view_tensor(tg_tape *tp, float *data, int ndim, const int *shape);
/* Appends a record when recording and some input requires grad, marking the
 * output(s) as requiring grad; returns NULL (and records nothing) otherwise.
 * No input may be NULL (leave an absent bias out of the list). */
tg_record *record(tg_tape *tp, const char *op, tg_backward_fn backward,
                  tg_tensor *out, int n_in, tg_tensor *const *in);
tg_record *record_multi(tg_tape *tp, const char *op, tg_backward_fn backward,
                        int n_out, tg_tensor **outs, int n_in,
                        tg_tensor *const *in);
/* t's gradient, allocated zeroed on the arena at first use; NULL when t does
 * not require grad. */
float *grad_of(tg_tape *tp, tg_tensor *t);
/* As grad_of for r's input i, but when that tensor is an op's output whose
 * gradient this backward pass has not made yet, and r takes it only once,
 * the buffer is left unset and *fresh is true: the caller then writes every
 * element instead of adding (0 + v where the bits must stay those of adding
 * into zeros; a -0 may come out as -0 instead of +0 otherwise). A backward op
 * is the first to touch its input's gradient whenever no later op used that
 * input, which is where a separate pass of zeros cost 3-7% of a step. */
float *grad_fresh(tg_tape *tp, const tg_record *r, int i, bool *fresh);

/* Sets t to an empty tensor of this shape (aborts on a bad shape, naming the
 * public call op). Dims may be 0 (an empty batch). */
void tg_tensor_init_shape(tg_tensor *t, const char *op, int ndim,
                          const int *shape);

/* The byte a checked tape (tg_tape_set_checks) writes over a step's arena
 * at reset, and whether a tensor header is made of it. */
#define TG_POISON_BYTE 0xA5
static inline bool tg_tensor_is_poisoned(const tg_tensor *t)
{
    return t->ndim == (int)0xA5A5A5A5u;
}

/* What record() checks of its inputs (none computed on another tape),
 * done first by an op that records others' ops under its own name (the 1-D
 * convolutions and pools, on reshaped views). */
void check_recorded_inputs(const tg_tape *tp, const char *op, int n_in,
                           tg_tensor *const *in);

/* Aborts unless a and b have the same shape. */
void check_same_shape(const char *op, const tg_tensor *a, const tg_tensor *b);

/* check_inputs(op, a, b, ...): aborts naming op and the argument's position
 * when any of the tensors is NULL. Every op calls it before touching its
 * inputs (an optional input, such as dense's bias, is left out). */
#define check_inputs(op, ...)                                                  \
    tg_check_tensors(op,                                                       \
                     (int)(sizeof((const tg_tensor *[]){__VA_ARGS__}) /        \
                           sizeof(const tg_tensor *)),                         \
                     (const tg_tensor *[]){__VA_ARGS__})

/* The tape itself, whose fields only tape.c (the arena) and tape_record.c
 * (the records, backward, profile) read; every op goes through the calls
 * above. */
typedef struct block block;       /* an arena block (tape.c) */
typedef struct prof_row prof_row; /* a profile row (tape_record.c) */

/* With checks on, a reset does not hand the arena's memory to the next
 * step: the used bytes are overwritten with TG_POISON_BYTE and the blocks
 * kept for GRAVE_GENERATIONS resets, while the new step gets fresh blocks.
 * A tensor kept past the reset then has a poisoned header, which every op
 * and tg_backward refuse (tg_check_tensors); without checks the next step
 * reuses the memory and its new tensors sit where the old ones were, so a
 * stale pointer may alias a new tensor. */
enum { GRAVE_GENERATIONS = 2 };

struct tg_tape {
    block *first, *cur;
    block *grave[GRAVE_GENERATIONS]; /* checks: older steps' arenas */
    tg_record *records;
    size_t n_records, cap_records;
    bool recording;
    bool checks; /* tg_tape_set_checks: record data sums, compare them */
    size_t heap_allocs;
    prof_row *prof; /* NULL until profiling is first turned on */
    int n_prof;
    bool profile;
    int64_t prof_mark; /* the clock at the last record, reset or backward */
};

#pragma GCC visibility pop

#endif
