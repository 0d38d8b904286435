/* The tape's memory: an arena for every tensor a step makes (blocks, reset,
 * the graveyard of checked tapes), the tensors made on it and their
 * gradients. What the tape records and how backward walks it is
 * tape_record.c. */
#include "tape.h"

#include "parallel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_ALIGN 64

/* Built with AddressSanitizer, the arena tells it where each allocation
 * ends: a block starts poisoned, and each allocation makes exactly the
 * bytes asked for addressable and the rest of its 64-byte slot, plus
 * ARENA_REDZONE bytes after it, poisoned. So an op that writes or reads
 * past its own output, into bytes no test would see change (padding, or
 * the next tensor), is an ASan error. A reset leaves the old step's bytes
 * as they were: the library reads a stale tensor's header to name the
 * misuse (and, with checks on, the poison byte written over it). */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TG_ARENA_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define TG_ARENA_ASAN 1
#endif
#ifdef TG_ARENA_ASAN
#include <sanitizer/asan_interface.h>
#define ARENA_REDZONE ARENA_ALIGN
#define arena_poison(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define arena_unpoison(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define ARENA_REDZONE 0
#define arena_poison(p, n) ((void)(p), (void)(n))
#define arena_unpoison(p, n) ((void)(p), (void)(n))
#endif
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
    arena_poison(b->mem, cap);
    return b;
}

static void blocks_free(block *b)
{
    while (b) {
        block *next = b->next;
        arena_unpoison(b->mem, b->cap);
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
            arena_unpoison(b->mem, b->cap);
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
    if (bytes > SIZE_MAX - 2 * ARENA_ALIGN)
        tg_fatal("tape", "allocation of %zu bytes", bytes);
    size_t asked = bytes;
    bytes = (bytes + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (bytes == 0)
        bytes = ARENA_ALIGN;
    bytes += ARENA_REDZONE;
    block *b = tp->cur;
    if (b->cap - b->used < bytes) {
        size_t cap = b->cap * 2 > bytes ? b->cap * 2 : bytes;
        block *fresh = block_new(tp, cap);
        fresh->next = b->next;
        b->next = fresh;
        tp->cur = b = fresh;
    }
    unsigned char *p = b->mem + b->used;
    b->used += bytes;
    arena_poison(p, bytes);
    arena_unpoison(p, asked);
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
