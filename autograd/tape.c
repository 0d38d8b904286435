/* The tape: an arena for every tensor a step makes, and the list of records
 * that backward walks in reverse. */
#include "tape.h"

#include "parallel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_ALIGN 64
#define ARENA_MIN_BLOCK ((size_t)1 << 20)

/* The arena is a chain of blocks. During the first steps it may grow a block
 * at a time; at reset, a chain of several blocks is replaced by one block as
 * large as all of them, so a steady-state step fits in one block and
 * allocates nothing. */
typedef struct block {
    struct block *next;
    size_t cap, used;
    unsigned char *mem;
} block;

/* tg_tape_set_profile: one row per op name; the last row takes every name
 * past the others ("other ops"). */
typedef struct prof_row {
    const char *op;
    long calls;
    int64_t fwd_ns, bwd_ns;
} prof_row;

enum { PROF_ROWS = 64 };

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

static block *block_new(tg_tape *tp, size_t cap)
{
    block *b = malloc(sizeof *b);
    if (!b)
        tg_out_of_memory("tape", "out of memory");
    b->mem = aligned_alloc(ARENA_ALIGN, cap);
    if (!b->mem)
        tg_out_of_memory("tape", "out of memory for a %zu-byte arena block",
                         cap);
    b->next = NULL;
    b->cap = cap;
    b->used = 0;
    tp->heap_allocs += 2;
    return b;
}

static void blocks_free(block *b)
{
    while (b) {
        block *next = b->next;
        free(b->mem);
        free(b);
        b = next;
    }
}

tg_tape *tg_tape_new(void)
{
    tg_tape *tp = calloc(1, sizeof *tp);
    if (!tp)
        tg_out_of_memory("tape", "out of memory");
    tp->recording = true;
    const char *env = getenv("TG_TAPE_CHECKS");
    tp->checks = env && *env && strcmp(env, "0") != 0;
    tp->first = tp->cur = block_new(tp, ARENA_MIN_BLOCK);
    env = getenv("TG_PROFILE");
    if (env && *env && strcmp(env, "0") != 0)
        tg_tape_set_profile(tp, true);
    return tp;
}

void tg_tape_free(tg_tape *tp)
{
    if (!tp)
        return;
    if (tp->profile && tp->n_prof > 0)
        tg_tape_profile_print(tp, stderr);
    free(tp->prof);
    blocks_free(tp->first);
    for (int g = 0; g < GRAVE_GENERATIONS; g++)
        blocks_free(tp->grave[g]);
    free(tp->records);
    free(tp);
}

void tg_tape_reset(tg_tape *tp)
{
    if (!tp)
        tg_fatal("tape_reset", "NULL tape");
    if (tp->checks) {
        size_t total = 0;
        for (block *b = tp->first; b; b = b->next) {
            memset(b->mem, TG_POISON_BYTE, b->used);
            total += b->cap;
        }
        /* The arena leaving the graveyard becomes this step's when it is
         * one block large enough, as it is once steps settle: a pointer
         * stale by more resets than the window then reads poison or this
         * step's tensors (an abort naming the op, as without checks),
         * never memory handed back to the system (a segfault). */
        block *oldest = tp->grave[GRAVE_GENERATIONS - 1];
        for (int g = GRAVE_GENERATIONS - 1; g > 0; g--)
            tp->grave[g] = tp->grave[g - 1];
        tp->grave[0] = tp->first;
        if (oldest && !oldest->next && oldest->cap >= total) {
            tp->first = oldest;
        } else {
            blocks_free(oldest);
            tp->first = block_new(tp, total);
        }
    } else if (tp->first->next) {
        size_t total = 0;
        for (block *b = tp->first; b; b = b->next)
            total += b->cap;
        blocks_free(tp->first);
        tp->first = block_new(tp, total);
    }
    tp->first->used = 0;
    tp->cur = tp->first;
    tp->n_records = 0;
    if (tp->profile)
        tp->prof_mark = tg_par_now_ns();
}

bool tg_tape_set_recording(tg_tape *tp, bool on)
{
    if (!tp)
        tg_fatal("tape", "tg_tape_set_recording: NULL tape");
    bool old = tp->recording;
    tp->recording = on;
    return old;
}

bool tg_tape_recording(const tg_tape *tp)
{
    if (!tp)
        tg_fatal("tape", "tg_tape_recording: NULL tape");
    return tp->recording;
}

bool tg_tape_set_checks(tg_tape *tp, bool on)
{
    if (!tp)
        tg_fatal("tape", "tg_tape_set_checks: NULL tape");
    bool old = tp->checks;
    tp->checks = on;
    return old;
}

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

size_t tg_tape_arena_bytes(const tg_tape *tp)
{
    size_t total = 0;
    for (const block *b = tp->first; b; b = b->next)
        total += b->cap;
    return total;
}

size_t tg_tape_heap_allocs(const tg_tape *tp) { return tp->heap_allocs; }
size_t tg_tape_records(const tg_tape *tp) { return tp->n_records; }

void *tg_tape_alloc(tg_tape *tp, size_t bytes)
{
    if (!tp)
        tg_fatal("tape", "NULL tape");
    if (bytes > SIZE_MAX - ARENA_ALIGN)
        tg_fatal("tape", "allocation of %zu bytes", bytes);
    bytes = (bytes + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (bytes == 0)
        bytes = ARENA_ALIGN;
    block *b = tp->cur;
    if (b->cap - b->used < bytes) {
        size_t cap = b->cap * 2 > bytes ? b->cap * 2 : bytes;
        block *fresh = block_new(tp, cap);
        fresh->next = b->next;
        b->next = fresh;
        tp->cur = b = fresh;
    }
    void *p = b->mem + b->used;
    b->used += bytes;
    return p;
}

/* A tensor header on tp's arena; data is set by the caller. */
static tg_tensor *tape_header(tg_tape *tp, const char *op, int ndim,
                              const int *shape)
{
    tg_tensor *t = tg_tape_alloc(tp, sizeof *t);
    tg_tensor_init_shape(t, op, ndim, shape);
    t->tape = tp;
    return t;
}

tg_tensor *tg_tape_tensor(tg_tape *tp, int ndim, const int *shape, bool zeroed)
{
    tg_tensor *t = tape_header(tp, "tape_tensor", ndim, shape);
    t->data = tg_tape_alloc(tp, t->size * sizeof(float));
    if (zeroed)
        memset(t->data, 0, t->size * sizeof(float));
    return t;
}

tg_tensor *tg_tape_tensor2(tg_tape *tp, int rows, int cols, bool zeroed)
{
    return tg_tape_tensor(tp, 2, (int[]){rows, cols}, zeroed);
}

tg_tensor *tg_tape_view2(tg_tape *tp, float *data, int rows, int cols)
{
    tg_tensor *t = tape_header(tp, "tape_view2", 2, (int[]){rows, cols});
    if (!data && t->size) /* was a crash in the first op that read it */
        tg_fatal("tape_view2", "data is NULL for a view of %d x %d", rows,
                 cols);
    t->data = data;
    return t;
}

tg_tensor *view_tensor(tg_tape *tp, float *data, int ndim, const int *shape)
{
    tg_tensor *t = tape_header(tp, "view", ndim, shape);
    t->data = data;
    return t;
}

tg_tensor *out_tensor(tg_tape *tp, int ndim, const int *shape)
{
    return tg_tape_tensor(tp, ndim, shape, false);
}

tg_tensor *out_like(tg_tape *tp, const tg_tensor *x)
{
    return tg_tape_tensor(tp, x->ndim, x->shape, false);
}

/* A tape tensor's gradient lives on the arena of its own tape, as long as
 * the tensor: a leaf made on another tape (marked requires_grad by hand) and
 * used on tp keeps it past tg_tape_reset(tp), which would otherwise hand
 * that memory to the next step's tensors while the leaf still pointed at it
 * (its gradient then added into theirs). A long-lived tensor's lives with
 * it: tg_tensor_require_grad, or a parameter set's shared buffer; one that
 * was marked requires_grad by hand gets its own here, never arena memory
 * that the next reset would pull from under it. */
float *grad_of(tg_tape *tp, tg_tensor *t)
{
    if (!t->requires_grad)
        return NULL;
    if (!t->grad) {
        if (!t->tape) {
            tg_tensor_require_grad(t);
            tp->heap_allocs++;
            return t->grad;
        }
        t->grad = tg_tape_alloc(t->tape, t->size * sizeof(float));
        memset(t->grad, 0, t->size * sizeof(float));
    }
    return t->grad;
}

float *grad_fresh(tg_tape *tp, const tg_record *r, int i, bool *fresh)
{
    tg_tensor *t = r->in[i];
    bool once = true; /* conv2d(x, x): dW, added first, would be overwritten */
    for (int k = 0; k < r->n_in; k++)
        once = once && (k == i || r->in[k] != t);
    *fresh = once && t->requires_grad && !t->grad && t->tape;
    if (!*fresh)
        return grad_of(tp, t);
    t->grad = tg_tape_alloc(t->tape, t->size * sizeof(float));
    return t->grad;
}

float *tg_grad_of(tg_tape *tp, tg_tensor *t)
{
    tg_check_tensors("grad_of", 1, (const tg_tensor *[]){t});
    return grad_of(tp, t);
}

void check_same_shape(const char *op, const tg_tensor *a, const tg_tensor *b)
{
    bool same = a->ndim == b->ndim;
    for (int d = 0; same && d < a->ndim; d++)
        same = a->shape[d] == b->shape[d];
    if (!same) {
        char sa[64], sb[64];
        tg_fatal(op, "shapes differ: %s and %s", tg_shape_str(a, sa),
                 tg_shape_str(b, sb));
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
