/* Parameter sets: named long-lived tensors whose values live in one
 * contiguous buffer and whose gradients live in another, in the order the
 * parameters were added, so an optimizer or an all-reduce sees one array.
 *
 * Addresses never move. A set reserves address space for both buffers when
 * it is created (mmap, PROT_NONE: no memory is used) and makes pages
 * readable and writable as parameters are added, so a parameter's data and
 * grad pointers are final from tg_params_add on. Sealing only closes the set
 * to new parameters (an optimizer's state is sized by then). */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MAP_NORESERVE */
#include "parallel.h"
#include "params_split.h"
#include "tg_config.h"
#include "tg_nn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifdef TG_HAVE_OPENMP
#include <omp.h>
#endif

struct tg_params {
    int n, cap;
    tg_tensor **tensors;
    char **names;
    bool sealed;
    size_t numel;
    float *data, *grad; /* reserved for max_numel floats each */
    size_t max_numel;   /* the reservation */
    size_t committed;   /* floats of each buffer readable and writable */
    void *base;         /* the mapping: data, then grad */
    size_t base_bytes;
};

/* The reservation: 2 GiB of values and 2 GiB of gradients (512 M floats)
 * when the system allows, halved down to 16 MiB each when it does not (a
 * limit on address space, valgrind's 128 GiB). */
enum { RESERVE_MAX_SHIFT = 31, RESERVE_MIN_SHIFT = 24 };
#define COMMIT_STEP ((size_t)1 << 18) /* floats made usable at a time */

static void reserve(tg_params *ps)
{
    for (int shift = RESERVE_MAX_SHIFT; shift >= RESERVE_MIN_SHIFT; shift--) {
        size_t half = (size_t)1 << shift;
        void *p = mmap(NULL, 2 * half, PROT_NONE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED)
            continue;
        ps->base = p;
        ps->base_bytes = 2 * half;
        ps->data = p;
        ps->grad = (float *)((char *)p + half);
        ps->max_numel = half / sizeof(float);
        return;
    }
    tg_out_of_memory("params_new",
                     "out of memory reserving address space for parameters");
}

/* Stops the program when parameter name would take the set past its
 * reservation: a lack of memory when the system made the reservation
 * smaller than the library asks for, else a set larger than the library
 * holds (misuse). */
static void past_reservation(const tg_params *ps, const char *name)
{
    if (ps->max_numel < ((size_t)1 << RESERVE_MAX_SHIFT) / sizeof(float))
        tg_out_of_memory("params_add",
                         "out of memory: '%s' takes the set past the %zu "
                         "floats the system let it reserve",
                         name, ps->max_numel);
    tg_fatal("params_add",
             "'%s' takes the set past its reservation of %zu floats", name,
             ps->max_numel);
}

/* Makes the first numel floats of data and grad usable (zero-filled: fresh
 * anonymous pages). */
static void commit(tg_params *ps, size_t numel, const char *name)
{
    if (numel <= ps->committed)
        return;
    if (numel > ps->max_numel)
        past_reservation(ps, name);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t want = (numel + COMMIT_STEP - 1) / COMMIT_STEP * COMMIT_STEP;
    if (want > ps->max_numel)
        want = ps->max_numel;
    size_t bytes = (want * sizeof(float) + page - 1) / page * page;
    if (mprotect(ps->data, bytes, PROT_READ | PROT_WRITE) != 0 ||
        mprotect(ps->grad, bytes, PROT_READ | PROT_WRITE) != 0)
        tg_out_of_memory("params_add", "'%s': out of memory for %zu floats",
                         name, numel);
    ps->committed = want;
}

/* A NULL set where one is needed: a message naming the call, not a
 * segfault inside it. */
static void need_set(const tg_params *ps, const char *op)
{
    if (!ps)
        tg_fatal(op, "NULL parameter set");
}

tg_params *tg_params_new(void)
{
    tg_params *ps = calloc(1, sizeof *ps);
    if (!ps)
        tg_out_of_memory("params_new", "out of memory");
    reserve(ps);
    return ps;
}

void tg_params_free(tg_params *ps)
{
    if (!ps)
        return;
    for (int i = 0; i < ps->n; i++) {
        tg_tensor_free(ps->tensors[i]);
        free(ps->names[i]);
    }
    free(ps->tensors);
    free(ps->names);
    munmap(ps->base, ps->base_bytes);
    free(ps);
}

tg_tensor *tg_params_add(tg_params *ps, const char *name, int ndim,
                         const int *shape)
{
    if (!ps)
        tg_fatal("params_add", "NULL parameter set");
    if (!name || !*name) /* first: the message below prints the name */
        tg_fatal("params_add", "empty parameter name");
    if (ps->sealed)
        tg_fatal("params_add",
                 "'%s' added after the set was sealed (by an optimizer, a "
                 "checkpoint, zero_grad or tg_params_seal): add every "
                 "parameter first",
                 name);
    /* names a checkpoint could not hold: its load would refuse the file */
    if (!strncmp(name, "optim.m.", 8) || !strncmp(name, "optim.v.", 8) ||
        !strcmp(name, "__metadata__"))
        tg_fatal("params_add",
                 "parameter name '%s': 'optim.m.' and 'optim.v.' name an "
                 "optimizer's state in a checkpoint, '__metadata__' its "
                 "metadata",
                 name);
    if (tg_params_find(ps, name))
        tg_fatal("params_add", "duplicate parameter name '%s'", name);
    if (ps->n == ps->cap) {
        int cap = ps->cap ? 2 * ps->cap : 16;
        tg_tensor **t = realloc(ps->tensors, (size_t)cap * sizeof *t);
        if (t)
            ps->tensors = t;
        char **nm = realloc(ps->names, (size_t)cap * sizeof *nm);
        if (nm)
            ps->names = nm;
        if (!t || !nm)
            tg_out_of_memory("params_add", "out of memory");
        ps->cap = cap;
    }
    size_t len = strlen(name);
    char *copy = malloc(len + 1);
    if (!copy)
        tg_out_of_memory("params_add", "out of memory");
    memcpy(copy, name, len + 1);
    if (ndim < 1 || ndim > TG_MAX_DIMS)
        tg_fatal("params_add", "'%s': ndim %d outside 1..%d", name, ndim,
                 TG_MAX_DIMS);
    if (!shape)
        tg_fatal("params_add", "'%s': NULL shape", name);
    size_t size = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 1)
            tg_fatal("params_add", "'%s': dim %d is %d, must be >= 1", name, d,
                     shape[d]);
        if (size > ps->max_numel / (size_t)shape[d])
            past_reservation(ps, name);
        size *= (size_t)shape[d];
    }
    /* The tensor points into the set's buffers at once: usable on a tape
     * (it requires grad) and never moved. */
    tg_tensor *t = calloc(1, sizeof *t);
    if (!t)
        tg_out_of_memory("params_add", "out of memory");
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->size = size;
    commit(ps, ps->numel + t->size, name);
    t->data = ps->data + ps->numel;
    t->grad = ps->grad + ps->numel;
    t->owns_data = false;
    t->requires_grad = true;
    ps->tensors[ps->n] = t;
    ps->names[ps->n] = copy;
    ps->n++;
    ps->numel += t->size;
    return t;
}

void tg_params_seal(tg_params *ps)
{
    need_set(ps, "params_seal");
    ps->sealed = true;
}

int tg_params_count(const tg_params *ps)
{
    need_set(ps, "params_count");
    return ps->n;
}

tg_tensor *tg_params_get(const tg_params *ps, int i)
{
    need_set(ps, "params_get");
    if (i < 0 || i >= ps->n)
        tg_fatal("params_get", "index %d outside 0..%d", i, ps->n - 1);
    return ps->tensors[i];
}

const char *tg_params_name(const tg_params *ps, int i)
{
    need_set(ps, "params_name");
    if (i < 0 || i >= ps->n)
        tg_fatal("params_name", "index %d outside 0..%d", i, ps->n - 1);
    return ps->names[i];
}

/* Linear: sets hold tens of tensors, and lookups happen at load time. */
tg_tensor *tg_params_find(const tg_params *ps, const char *name)
{
    need_set(ps, "params_find");
    if (!name)
        tg_fatal("params_find", "NULL name");
    for (int i = 0; i < ps->n; i++)
        if (strcmp(ps->names[i], name) == 0)
            return ps->tensors[i];
    return NULL;
}

size_t tg_params_numel(const tg_params *ps)
{
    need_set(ps, "params_numel");
    return ps->numel;
}

float *tg_params_data(tg_params *ps)
{
    need_set(ps, "params_data");
    tg_params_seal(ps);
    return ps->data;
}

float *tg_params_grad(tg_params *ps)
{
    need_set(ps, "params_grad");
    tg_params_seal(ps);
    return ps->grad;
}

#ifdef TG_HAVE_OPENMP
/* Thread t's share of tensor k (params_split.h). */
static void share_of(const tg_params *ps, int k, int t, int T, size_t *begin,
                     size_t *len)
{
    const tg_tensor *x = ps->tensors[k];
    size_t rows = (size_t)x->shape[0], cols = x->size / rows;
    size_t r0 = rows * (size_t)t / (size_t)T,
           r1 = rows * (size_t)(t + 1) / (size_t)T;
    *begin = (size_t)(x->data - ps->data) + r0 * cols;
    *len = (r1 - r0) * cols;
}
#endif

int params_for_shares(tg_params *ps, params_share_fn fn, void *ctx)
{
    tg_params_seal(ps);
    int T = ps->numel >= TG_PARALLEL_MIN ? tg_par_threads() : 1;
    T = T < PARAMS_MAX_THREADS ? T : PARAMS_MAX_THREADS;
#ifdef TG_HAVE_OPENMP
    if (T > 1) {
#pragma omp parallel num_threads(T)
        {
            int t = omp_get_thread_num(), nt = omp_get_num_threads();
            for (int k = 0; k < ps->n; k++) {
                size_t begin, len;
                share_of(ps, k, t, nt, &begin, &len);
                if (len)
                    fn(ctx, t, begin, len);
            }
        }
        return T;
    }
#endif
    if (ps->numel)
        fn(ctx, 0, 0, ps->numel);
    return 1;
}

static void zero_share(void *ctx, int thread, size_t begin, size_t len)
{
    (void)thread;
    memset((float *)ctx + begin, 0, len * sizeof(float));
}

/* 2.6 MB for the VAE, every step, on the library's threads. */
void tg_params_zero_grad(tg_params *ps)
{
    need_set(ps, "params_zero_grad");
    params_for_shares(ps, zero_share, ps->grad);
}

/* The largest |x[i]| as the bits of a float: NaN bits order above Inf, so a
 * NaN anywhere makes the result NaN. Integer compares: the loop vectorises
 * whatever the floating-point flags. */
TG_VECTOR_CLONES
static uint32_t absmax_bits(const float *x, size_t n)
{
    uint32_t max = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, &x[i], sizeof b);
        b &= 0x7fffffffu;
        max = b > max ? b : max;
    }
    return max;
}

/* absmax_bits over x in blocks on the library's threads (a max does not
 * depend on the order it is taken in). */
static uint32_t absmax_bits_parallel(const float *x, size_t n)
{
    enum { BLOCK = 16384 };
    size_t n_blocks = (n + BLOCK - 1) / BLOCK;
    uint32_t max = 0;
#ifdef TG_HAVE_OPENMP
#pragma omp parallel for schedule(static) reduction(max                        \
                                                    : max)                     \
    num_threads(tg_par_threads()) if (n >= TG_PARALLEL_MIN)
#endif
    for (size_t k = 0; k < n_blocks; k++) {
        size_t len = n - k * BLOCK < BLOCK ? n - k * BLOCK : BLOCK;
        uint32_t m = absmax_bits(x + k * BLOCK, len);
        max = m > max ? m : max;
    }
    return max;
}

static float bits_to_float(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

float tg_params_grad_absmax(tg_params *ps)
{
    float *grad = tg_params_grad(ps);
    return bits_to_float(absmax_bits_parallel(grad, tg_params_numel(ps)));
}

typedef struct absmax_ctx {
    const float *x, *g;
    uint32_t xmax[PARAMS_MAX_THREADS], gmax[PARAMS_MAX_THREADS];
} absmax_ctx;

static void absmax_share(void *ctx, int thread, size_t begin, size_t len)
{
    absmax_ctx *c = ctx;
    uint32_t mx = absmax_bits(c->x + begin, len),
             mg = absmax_bits(c->g + begin, len);
    c->xmax[thread] = mx > c->xmax[thread] ? mx : c->xmax[thread];
    c->gmax[thread] = mg > c->gmax[thread] ? mg : c->gmax[thread];
}

/* Values and gradients in one pass on the library's threads: the guard's
 * scan each step (2.6 MB of each for the VAE). */
void tg_params_absmax(tg_params *ps, float *value, float *grad)
{
    need_set(ps, "params_absmax");
    absmax_ctx c = {.x = tg_params_data(ps), .g = tg_params_grad(ps)};
    int T = params_for_shares(ps, absmax_share, &c);
    uint32_t xmax = 0, gmax = 0;
    for (int t = 0; t < T; t++) {
        xmax = c.xmax[t] > xmax ? c.xmax[t] : xmax;
        gmax = c.gmax[t] > gmax ? c.gmax[t] : gmax;
    }
    *value = bits_to_float(xmax);
    *grad = bits_to_float(gmax);
}

static bool all_finite(const float *x, size_t n)
{
    return absmax_bits(x, n) < 0x7f800000u; /* below Inf's bits */
}

bool tg_params_finite(tg_params *ps, const char **where)
{
    need_set(ps, "params_finite");
    /* Fast path: both contiguous buffers at once; names only on failure.
     * NaN compares false, so it takes the slow path too. */
    float value, grad;
    tg_params_absmax(ps, &value, &grad);
    if (value < INFINITY && grad < INFINITY)
        return true;
    for (int i = 0; i < ps->n; i++) {
        const tg_tensor *t = ps->tensors[i];
        if (!all_finite(t->data, t->size) ||
            (t->grad && !all_finite(t->grad, t->size))) {
            if (where)
                *where = ps->names[i];
            return false;
        }
    }
    return true;
}
