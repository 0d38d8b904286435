/* The tape's records: what an op records (record, tg_op_record, with the
 * checks that refuse a gradient crossing tapes), the walk backward takes over
 * them in reverse, the data sums a checked tape compares before each backward
 * (TG_TAPE_CHECKS) and the per-op profile (TG_PROFILE). The arena and the
 * tensors on it are tape.c. */
#include "tape.h"

#include "parallel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* tg_tape_set_profile: one row per op name; the last row takes every name
 * past the others ("other ops"). */
typedef struct prof_row {
    const char *op;
    long calls;
    int64_t fwd_ns, bwd_ns;
} prof_row;

enum { PROF_ROWS = 64 };

bool tg_tape_set_profile(tg_tape *tp, bool on)
{
    if (!tp)
        tg_fatal("tape", "tg_tape_set_profile: NULL tape");
    bool old = tp->profile;
    if (on && !tp->prof) {
        tp->prof = calloc(PROF_ROWS, sizeof *tp->prof);
        if (!tp->prof)
            tg_out_of_memory("tape", "out of memory for the profile");
        tp->heap_allocs++;
    }
    tp->profile = on;
    tp->prof_mark = tg_par_now_ns();
    return old;
}

static prof_row *prof_row_of(tg_tape *tp, const char *op)
{
    for (int i = 0; i < tp->n_prof; i++)
        if (tp->prof[i].op == op || strcmp(tp->prof[i].op, op) == 0)
            return &tp->prof[i];
    if (tp->n_prof == PROF_ROWS - 1) { /* the last row: every other name */
        tp->prof[PROF_ROWS - 1].op = "(other ops)";
        return &tp->prof[PROF_ROWS - 1];
    }
    tp->prof[tp->n_prof].op = op;
    return &tp->prof[tp->n_prof++];
}

static int by_total_time(const void *a, const void *b)
{
    const prof_row *x = a, *y = b;
    int64_t tx = x->fwd_ns + x->bwd_ns, ty = y->fwd_ns + y->bwd_ns;
    return (tx < ty) - (tx > ty);
}

void tg_tape_profile_print(const tg_tape *tp, void *file)
{
    if (!tp || !file)
        tg_fatal("tape", "tg_tape_profile_print: NULL %s",
                 tp ? "file" : "tape");
    FILE *f = file;
    prof_row rows[PROF_ROWS];
    int n = 0;
    int64_t total = 0;
    for (int i = 0; tp->prof && i < PROF_ROWS; i++)
        if (tp->prof[i].calls > 0) {
            rows[n++] = tp->prof[i];
            total += tp->prof[i].fwd_ns + tp->prof[i].bwd_ns;
        }
    qsort(rows, (size_t)n, sizeof rows[0], by_total_time);
    fprintf(f, "tapegrad profile: %-20s %9s %12s %12s %7s\n", "op", "calls",
            "forward ms", "backward ms", "share");
    for (int i = 0; i < n; i++)
        fprintf(f, "tapegrad profile: %-20s %9ld %12.3f %12.3f %6.1f%%\n",
                rows[i].op, rows[i].calls, rows[i].fwd_ns * 1e-6,
                rows[i].bwd_ns * 1e-6,
                total ? 100.0 * (double)(rows[i].fwd_ns + rows[i].bwd_ns) /
                            (double)total
                      : 0.0);
    fprintf(f, "tapegrad profile: %-20s %9s %12.3f ms in all\n", "total", "",
            total * 1e-6);
}

/* A 64-bit sum of t's data (FNV-1a over 32-bit words; the float bits, so
 * -0 against 0 and NaN payloads count as changes). */
static uint64_t data_sum(const tg_tensor *t)
{
    uint64_t h = 0xcbf29ce484222325u;
    const float *d = t->data;
    for (size_t i = 0; d && i < t->size; i++) {
        uint32_t w;
        memcpy(&w, &d[i], sizeof w);
        h = (h ^ w) * 0x100000001b3u;
    }
    return h;
}

/* With checks on: each input's and output's sum when the op recorded, to be
 * compared before its backward runs. */
static void record_sums(tg_tape *tp, tg_record *r)
{
    r->sums = tg_tape_alloc(tp, (size_t)(r->n_in + r->n_out) * sizeof *r->sums);
    for (int i = 0; i < r->n_in; i++)
        r->sums[i] = data_sum(r->in[i]);
    for (int i = 0; i < r->n_out; i++)
        r->sums[r->n_in + i] = data_sum(r->outs[i]);
}

static void check_sums(const tg_record *r)
{
    for (int i = 0; i < r->n_in + r->n_out; i++) {
        bool in = i < r->n_in;
        const tg_tensor *t = in ? r->in[i] : r->outs[i - r->n_in];
        if (data_sum(t) == r->sums[i])
            continue;
        char s[64];
        tg_fatal(r->op,
                 "%s %d %s changed between this op's forward and its "
                 "backward, which may read it: the gradient would be wrong "
                 "(copy the tensor before changing it) [TG_TAPE_CHECKS]",
                 in ? "input" : "output", in ? i : i - r->n_in,
                 tg_shape_str(t, s));
    }
}

static tg_record *append(tg_tape *tp)
{
    if (tp->n_records == tp->cap_records) {
        size_t cap = tp->cap_records ? tp->cap_records * 2 : 256;
        tg_record *grown = realloc(tp->records, cap * sizeof *grown);
        if (!grown)
            tg_out_of_memory("tape", "out of memory for %zu records", cap);
        tp->records = grown;
        tp->cap_records = cap;
        tp->heap_allocs++;
    }
    tg_record *r = &tp->records[tp->n_records++];
    memset(r, 0, sizeof *r);
    return r;
}

static bool wants_grad(const tg_tape *tp, int n_in, tg_tensor *const *in)
{
    if (!tp->recording)
        return false;
    for (int i = 0; i < n_in; i++)
        if (in[i]->requires_grad)
            return true;
    return false;
}

/* True when t is an output of one of tp's records (since its last reset). */
static bool computed_on(const tg_tape *tp, const tg_tensor *t)
{
    for (size_t k = 0; k < tp->n_records; k++)
        for (int i = 0; i < tp->records[k].n_out; i++)
            if (tp->records[k].outs[i] == t)
                return true;
    return false;
}

/* An input that another tape computed would stop the gradient at this
 * tape's edge without a word: backward on this tape cannot walk the other
 * one's records. Refused. A leaf of another tape (a tape tensor marked
 * requires_grad by hand, as tg_gradcheck's inputs) is fine. */
static void check_same_tape(const tg_tape *tp, const char *op, int n_in,
                            tg_tensor *const *in)
{
    for (int i = 0; i < n_in; i++) {
        const tg_tensor *x = in[i];
        if (x->tape && x->tape != tp && x->requires_grad &&
            computed_on(x->tape, x)) {
            char s[64];
            tg_fatal(op,
                     "input %d %s was computed on another tape: gradients "
                     "do not cross tapes (compute it on this tape, or "
                     "tg_detach it first)",
                     i, tg_shape_str(x, s));
        }
    }
}

void check_recorded_inputs(const tg_tape *tp, const char *op, int n_in,
                           tg_tensor *const *in)
{
    if (!tp)
        tg_fatal(op, "NULL tape");
    if (wants_grad(tp, n_in, in))
        check_same_tape(tp, op, n_in, in);
}

tg_record *record_multi(tg_tape *tp, const char *op, tg_backward_fn backward,
                        int n_out, tg_tensor **outs, int n_in,
                        tg_tensor *const *in)
{
    if (!wants_grad(tp, n_in, in))
        return NULL;
    check_same_tape(tp, op, n_in, in);
    tg_record *r = append(tp);
    if (tp->profile) {
        int64_t now = tg_par_now_ns();
        prof_row *row = prof_row_of(tp, op);
        row->calls++;
        row->fwd_ns += now - tp->prof_mark;
        tp->prof_mark = now;
    }
    r->op = op;
    r->backward = backward;
    r->n_in = n_in;
    /* At least 3 slots, the unused ones NULL: dense reads in[2] as its
     * optional bias. */
    size_t slots = n_in > 3 ? (size_t)n_in : 3;
    r->in = tg_tape_alloc(tp, slots * sizeof *in);
    memset(r->in, 0, slots * sizeof *in);
    memcpy(r->in, in, (size_t)n_in * sizeof *in);
    r->n_out = n_out;
    r->outs = tg_tape_alloc(tp, (size_t)n_out * sizeof *outs);
    memcpy(r->outs, outs, (size_t)n_out * sizeof *outs);
    r->out = outs[0];
    for (int i = 0; i < n_out; i++)
        outs[i]->requires_grad = true;
    if (tp->checks)
        record_sums(tp, r);
    return r;
}

tg_record *record(tg_tape *tp, const char *op, tg_backward_fn backward,
                  tg_tensor *out, int n_in, tg_tensor *const *in)
{
    return record_multi(tp, op, backward, 1, &out, n_in, in);
}

/* ---- the public way to record an op: record_multi behind checks that turn
 * a user's slip into a message instead of a wrong gradient. */
tg_record *tg_op_record(tg_tape *tp, const char *name, tg_backward_fn backward,
                        int n_in, tg_tensor *const *inputs, int n_out,
                        tg_tensor *const *outputs, void *saved)
{
    const char *op = name ? name : "op_record";
    if (!name || !*name)
        tg_fatal(op, "tg_op_record needs the op's name (for messages and the "
                     "profile)");
    if (!tp || !backward)
        tg_fatal(op, "tg_op_record needs a tape and a backward function");
    if (n_in < 1 || n_out < 1 || !inputs || !outputs)
        tg_fatal(op,
                 "tg_op_record needs at least one input and one output "
                 "(got %d and %d)",
                 n_in, n_out);
    tg_check_tensors(op, n_in, (const tg_tensor *const *)inputs);
    for (int k = 0; k < n_out; k++) {
        const tg_tensor *y = outputs[k];
        if (!y)
            tg_fatal(op, "output %d is NULL", k);
        if (y->tape != tp)
            tg_fatal(op,
                     "output %d was not made on this tape: make outputs "
                     "with tg_tape_tensor(tp, ...)",
                     k);
        for (int i = 0; i < n_in; i++)
            if (inputs[i] == y)
                tg_fatal(op,
                         "output %d is also input %d: an op makes new "
                         "tensors",
                         k, i);
        /* another op's output (recorded twice, its gradient would reach
         * both backwards: counted twice without a word) */
        if (y->requires_grad) {
            char s[64];
            tg_fatal(op,
                     "output %d %s already requires grad (another op's "
                     "output?): make each op's outputs with tg_tape_tensor",
                     k, tg_shape_str(y, s));
        }
    }
    tg_record *r = record_multi(tp, op, backward, n_out, (tg_tensor **)outputs,
                                n_in, inputs);
    if (r)
        r->saved = saved;
    return r;
}

static void check_index(const tg_record *r, int i, int n, const char *what)
{
    if (!r || i < 0 || i >= n)
        tg_fatal(r ? r->op : "op", "%s %d of %d", what, i, n);
}

tg_tensor *tg_op_input(const tg_record *r, int i)
{
    check_index(r, i, r ? r->n_in : 0, "input");
    return r->in[i];
}

tg_tensor *tg_op_output(const tg_record *r, int i)
{
    check_index(r, i, r ? r->n_out : 0, "output");
    return r->outs[i];
}

const float *tg_op_grad_out(const tg_record *r, int i)
{
    return tg_op_output(r, i)->grad;
}

void *tg_op_saved(const tg_record *r) { return r ? r->saved : NULL; }

static bool has_grad(const tg_record *r)
{
    for (int i = 0; i < r->n_out; i++)
        if (r->outs[i]->grad)
            return true;
    return false;
}

void tg_backward_with(tg_tape *tp, tg_tensor *out, const float *seed)
{
    if (!tp || !out || !seed)
        tg_fatal("backward", "NULL %s",
                 !tp    ? "tape"
                 : !out ? "output"
                        : "seed");
    if (!out->tape) {
        char s[64];
        tg_fatal("backward",
                 "the output %s is a leaf (a parameter, or a tensor no op "
                 "made), not computed on the tape: compute the loss on it",
                 tg_shape_str(out, s));
    }
    if (out->tape != tp) {
        char s[64];
        tg_fatal("backward",
                 "the output %s was recorded on another tape: "
                 "pass the tape it was computed on",
                 tg_shape_str(out, s));
    }
    if (!out->requires_grad)
        tg_fatal("backward", "output does not depend on anything that "
                             "requires grad (or was computed while not "
                             "recording)");
    if (!computed_on(tp, out)) {
        char s[64];
        tg_fatal("backward",
                 "the output %s is no op's result on this tape since its "
                 "last tg_tape_reset (tensors made before a reset are gone)",
                 tg_shape_str(out, s));
    }
    /* Every walk starts from zero inside the graph: the gradients of op
     * outputs are dropped (grad_of makes fresh zeroed ones), so a second
     * backward on the same tape adds into the leaves exactly what backward
     * of the sum of both outputs would (PyTorch's retain_graph). Leaves
     * (parameters, inputs no op made) keep accumulating. */
    for (size_t k = 0; k < tp->n_records; k++) {
        tg_record *r = &tp->records[k];
        for (int i = 0; i < r->n_out; i++)
            r->outs[i]->grad = NULL;
    }
    float *dout = grad_of(tp, out);
    for (size_t i = 0; i < out->size; i++)
        dout[i] += seed[i];
    for (size_t k = tp->n_records; k-- > 0;) {
        tg_record *r = &tp->records[k];
        if (!has_grad(r))
            continue;
        /* only ops whose backward runs: an op of an earlier step left on
         * the tape (no tg_tape_reset) whose weights the optimizer has
         * since moved was named as if this gradient were wrong */
        if (r->sums)
            check_sums(r);
        int64_t t0 = tp->profile ? tg_par_now_ns() : 0;
        r->backward(tp, r);
        if (tp->profile)
            prof_row_of(tp, r->op)->bwd_ns += tg_par_now_ns() - t0;
    }
    if (tp->profile)
        tp->prof_mark = tg_par_now_ns();
}

void tg_backward(tg_tape *tp, tg_tensor *loss)
{
    if (!loss)
        tg_fatal("backward", "NULL loss");
    if (tg_tensor_is_poisoned(loss))
        tg_fatal("backward",
                 "the loss was made before its tape's last tg_tape_reset "
                 "[TG_TAPE_CHECKS]");
    if (loss->size != 1) {
        char s[64];
        tg_fatal("backward", "loss must have one element, got shape %s",
                 tg_shape_str(loss, s));
    }
    const float one = 1.0f;
    tg_backward_with(tp, loss, &one);
}
