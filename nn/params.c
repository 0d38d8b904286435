/* Parameter sets: named long-lived tensors. Sealing moves every value into
 * one contiguous buffer and every gradient into another, in the order the
 * parameters were added, so an optimizer or an all-reduce sees one array.
 * After sealing the tensors no longer own their storage (owns_data=false):
 * the set frees the two buffers. */
#include "parallel.h"
#include "tg_config.h"
#include "tg_nn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct tg_params {
    int n, cap;
    tg_tensor **tensors;
    char **names;
    bool sealed;
    size_t numel;
    float *data, *grad; /* numel each once sealed */
};

tg_params *tg_params_new(void)
{
    tg_params *ps = calloc(1, sizeof *ps);
    if (!ps)
        tg_fatal("params_new", "out of memory");
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
    free(ps->data);
    free(ps->grad);
    free(ps);
}

tg_tensor *tg_params_add(tg_params *ps, const char *name, int ndim,
                         const int *shape)
{
    if (ps->sealed)
        tg_fatal("params_add", "'%s' added after the set was sealed", name);
    if (!name || !*name)
        tg_fatal("params_add", "empty parameter name");
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
            tg_fatal("params_add", "out of memory");
        ps->cap = cap;
    }
    size_t len = strlen(name);
    char *copy = malloc(len + 1);
    if (!copy)
        tg_fatal("params_add", "out of memory");
    memcpy(copy, name, len + 1);
    tg_tensor *t = tg_tensor_new(ndim, shape);
    ps->tensors[ps->n] = t;
    ps->names[ps->n] = copy;
    ps->n++;
    ps->numel += t->size;
    return t;
}

/* 64-byte aligned, zeroed, at least one byte. */
static float *alloc_floats(size_t n)
{
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    float *p = aligned_alloc(64, bytes ? bytes : 64);
    if (!p)
        tg_fatal("params_seal", "out of memory for %zu floats", n);
    memset(p, 0, bytes ? bytes : 64);
    return p;
}

void tg_params_seal(tg_params *ps)
{
    if (ps->sealed)
        return;
    ps->data = alloc_floats(ps->numel);
    ps->grad = alloc_floats(ps->numel);
    size_t off = 0;
    for (int i = 0; i < ps->n; i++) {
        tg_tensor *t = ps->tensors[i];
        memcpy(ps->data + off, t->data, t->size * sizeof(float));
        if (t->grad)
            memcpy(ps->grad + off, t->grad, t->size * sizeof(float));
        if (t->owns_data) {
            free(t->data);
            free(t->grad);
        }
        t->data = ps->data + off;
        t->grad = ps->grad + off;
        t->owns_data = false;
        t->requires_grad = true;
        off += t->size;
    }
    ps->sealed = true;
}

int tg_params_count(const tg_params *ps) { return ps->n; }

tg_tensor *tg_params_get(const tg_params *ps, int i)
{
    if (i < 0 || i >= ps->n)
        tg_fatal("params_get", "index %d outside 0..%d", i, ps->n - 1);
    return ps->tensors[i];
}

const char *tg_params_name(const tg_params *ps, int i)
{
    if (i < 0 || i >= ps->n)
        tg_fatal("params_name", "index %d outside 0..%d", i, ps->n - 1);
    return ps->names[i];
}

/* Linear: sets hold tens of tensors, and lookups happen at load time. */
tg_tensor *tg_params_find(const tg_params *ps, const char *name)
{
    for (int i = 0; i < ps->n; i++)
        if (strcmp(ps->names[i], name) == 0)
            return ps->tensors[i];
    return NULL;
}

size_t tg_params_numel(const tg_params *ps) { return ps->numel; }

float *tg_params_data(tg_params *ps)
{
    tg_params_seal(ps);
    return ps->data;
}

float *tg_params_grad(tg_params *ps)
{
    tg_params_seal(ps);
    return ps->grad;
}

/* In blocks on the library's threads: 2.6 MB for the VAE, every step. */
void tg_params_zero_grad(tg_params *ps)
{
    enum { BLOCK = 16384 };
    tg_params_seal(ps);
    float *grad = ps->grad;
    size_t n = ps->numel, n_blocks = (n + BLOCK - 1) / BLOCK;
    TG_PARALLEL_FOR(n, 1)
    for (size_t k = 0; k < n_blocks; k++) {
        size_t len = n - k * BLOCK < BLOCK ? n - k * BLOCK : BLOCK;
        memset(grad + k * BLOCK, 0, len * sizeof(float));
    }
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
/* clang-format off */
#pragma omp parallel for schedule(static) reduction(max: max) \
    num_threads(tg_get_threads()) if (n >= TG_PARALLEL_MIN)
/* clang-format on */
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

static bool all_finite(const float *x, size_t n)
{
    return absmax_bits(x, n) < 0x7f800000u; /* below Inf's bits */
}

bool tg_params_finite(tg_params *ps, const char **where)
{
    /* Fast path: both contiguous buffers at once; names only on failure. */
    if (absmax_bits_parallel(tg_params_data(ps), tg_params_numel(ps)) <
            0x7f800000u &&
        absmax_bits_parallel(tg_params_grad(ps), tg_params_numel(ps)) <
            0x7f800000u)
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
