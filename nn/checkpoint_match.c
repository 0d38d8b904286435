/* Comparing a checkpoint's tensors with a model's: every difference is
 * counted before one is reported, and the report starts with the kind that
 * explains most (a missing tensor, then a shape, then an extra tensor), so
 * a file that holds more than the model does not hide a real mismatch. */
#include "checkpoint_match.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

char *tg_ck_join(const char *prefix, const char *name)
{
    size_t a = strlen(prefix), b = strlen(name);
    char *s = malloc(a + b + 1);
    if (!s)
        tg_out_of_memory("checkpoint", "out of memory");
    memcpy(s, prefix, a);
    memcpy(s + a, name, b + 1);
    return s;
}

bool tg_ck_same_shape(const tg_st_entry *e, const tg_tensor *t)
{
    if (e->ndim != t->ndim)
        return false;
    for (int d = 0; d < t->ndim; d++)
        if (e->shape[d] != (uint64_t)t->shape[d])
            return false;
    return true;
}

const char *tg_ck_entry_shape(const tg_st_entry *e, char *buf, size_t n)
{
    size_t at = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < e->ndim && at < n; d++)
        at += (size_t)snprintf(buf + at, n - at, d ? ", %llu" : "%llu",
                               (unsigned long long)e->shape[d]);
    if (at < n)
        snprintf(buf + at, n - at, "]");
    return buf;
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

typedef struct diff {
    int missing, shape, extra;
    char first_missing[160], first_shape[400], first_extra[160];
} diff;

static const char *const state_prefix[3] = {"", "optim.m.", "optim.v."};

static bool is_state(const char *name)
{
    return starts_with(name, "optim.m.") || starts_with(name, "optim.v.");
}

/* Whether the file holds "optim.m.<name>". */
static bool m_of(const tg_st_file *f, const char *name)
{
    char *m = tg_ck_join("optim.m.", name);
    bool there = tg_st_find(f, m) != NULL;
    free(m);
    return there;
}

/* The parameters in scope, sorted by their names past model_prefix: a
 * file tensor's name past file_prefix is looked up in O(log n) steps. */
typedef struct scoped {
    const char *rest;
    const tg_tensor *t;
} scoped;

typedef struct scope {
    scoped *p;
    int n;
} scope;

static int by_rest(const void *a, const void *b)
{
    return strcmp(((const scoped *)a)->rest, ((const scoped *)b)->rest);
}

static void scope_init(scope *s, const tg_params *ps, const char *model_prefix)
{
    size_t mlen = strlen(model_prefix);
    int np = tg_params_count(ps);
    s->p = malloc(sizeof *s->p * (size_t)(np ? np : 1));
    if (!s->p)
        tg_out_of_memory("checkpoint", "out of memory");
    s->n = 0;
    for (int i = 0; i < np; i++)
        if (starts_with(tg_params_name(ps, i), model_prefix))
            s->p[s->n++] =
                (scoped){tg_params_name(ps, i) + mlen, tg_params_get(ps, i)};
    qsort(s->p, (size_t)s->n, sizeof *s->p, by_rest);
}

/* The parameter in scope named model_prefix + rest, or NULL. */
static const tg_tensor *scope_find(const scope *s, const char *rest)
{
    const scoped key = {rest, NULL};
    const scoped *hit =
        s->n ? bsearch(&key, s->p, (size_t)s->n, sizeof *s->p, by_rest) : NULL;
    return hit ? hit->t : NULL;
}

/* Each parameter in scope against the file: its tensor, and its optimizer
 * state where the file has it (or must: wanted), each of its shape.
 * Counted per parameter, its optimizer state with it: state that is not
 * loaded may be absent, but has the parameter's shape. Returns the number
 * of parameters in scope. */
static int count_missing_and_shapes(const tg_st_file *f, const tg_params *ps,
                                    const char *file_prefix,
                                    const char *model_prefix,
                                    const bool wanted[3], diff *d)
{
    int in_scope = 0;
    size_t mlen = strlen(model_prefix);
    for (int i = 0; i < tg_params_count(ps); i++) {
        const char *name = tg_params_name(ps, i);
        if (!starts_with(name, model_prefix))
            continue;
        in_scope++;
        const tg_tensor *t = tg_params_get(ps, i);
        char *file_name = tg_ck_join(file_prefix, name + mlen);
        bool missing = false, shape = false;
        for (int k = 0; k < 3; k++) {
            char *full = tg_ck_join(state_prefix[k], file_name);
            const tg_st_entry *e = tg_st_find(f, full);
            if (!e && wanted[k] && !missing && d->missing++ == 0)
                snprintf(d->first_missing, sizeof d->first_missing, "%.120s",
                         full);
            missing |= !e && wanted[k];
            if (e && !tg_ck_same_shape(e, t) && !shape && d->shape++ == 0) {
                char fs[128], ms[64];
                snprintf(d->first_shape, sizeof d->first_shape,
                         "'%.120s' has shape %s in the file but %s in the "
                         "model",
                         full, tg_ck_entry_shape(e, fs, sizeof fs),
                         tg_shape_str(t, ms));
            }
            shape |= e && !tg_ck_same_shape(e, t);
            free(full);
        }
        free(file_name);
    }
    return in_scope;
}

/* Each file tensor in scope against the parameters: one that is neither a
 * parameter in scope nor its optimizer state is extra. */
static void count_extra(const tg_st_file *f, const tg_params *ps,
                        const char *file_prefix, const char *model_prefix,
                        diff *d)
{
    size_t flen = strlen(file_prefix);
    scope params;
    scope_init(&params, ps, model_prefix);
    for (int i = 0; i < f->n; i++) {
        const char *name = f->t[i].name;
        bool state = is_state(name);
        if (state)
            name += 8;
        if (!starts_with(name, file_prefix))
            continue;
        /* state of a parameter: "optim.m." / "optim.v." + its name (whose
         * shape count_missing_and_shapes checks), not + the name of any
         * tensor of the file ("optim.m.optim.m.w" is no parameter's state) */
        bool known = scope_find(&params, name + flen) != NULL;
        /* an extra name counts once: its optimizer state is not counted
         * again when the file holds the name itself, nor its v when the
         * file holds its m */
        bool counted =
            state && ((!is_state(name) && tg_st_find(f, name)) ||
                      (starts_with(f->t[i].name, "optim.v.") && m_of(f, name)));
        if (!known && !counted && d->extra++ == 0)
            snprintf(d->first_extra, sizeof d->first_extra, "%.120s",
                     f->t[i].name);
    }
    free(params.p);
}

tg_status tg_ck_match(const tg_st_file *f, const tg_params *ps,
                      const char *file_prefix, const char *model_prefix,
                      bool want_m, bool want_v, int *matched)
{
    diff d = {0};
    const bool wanted[3] = {true, want_m, want_v};
    int in_scope =
        count_missing_and_shapes(f, ps, file_prefix, model_prefix, wanted, &d);
    count_extra(f, ps, file_prefix, model_prefix, &d);
    if (matched)
        *matched = in_scope;
    if (d.missing + d.shape + d.extra == 0)
        return TG_OK;
    char counts[160];
    snprintf(counts, sizeof counts,
             "parameters: %d missing, %d with another shape, %d not in the "
             "model",
             d.missing, d.shape, d.extra);
    if (d.missing)
        return tg_error(TG_ERR_MISMATCH,
                        "%s: tensor '%s' missing from the file (%s)", f->path,
                        d.first_missing, counts);
    if (d.shape)
        return tg_error(TG_ERR_MISMATCH, "%s: tensor %s (%s)", f->path,
                        d.first_shape, counts);
    return tg_error(TG_ERR_MISMATCH,
                    "%s: tensor '%s' is not a parameter of the model (%s)",
                    f->path, d.first_extra, counts);
}

/* ---- the checksum -----------------------------------------------------------
 * FNV-1a's step over 32-bit words, word i into lane i % 4 (four chains: a
 * few GB/s), the lanes folded in order at the end with the word count.
 * Each step is a bijection of its lane, so a change to one word always
 * changes the result.
 *
 * "fnv4m:" (this version's): the tensors in name order, each as its name,
 * rank and shape, then its data as little-endian words; then the metadata
 * entries but the checksum's own, in key order, each as key and value.
 * A text goes in as its length and its bytes, zero-padded to whole words.
 * "fnv4:" (the first version's, still verified): the tensor data alone, so
 * a flipped bit in the metadata (an epoch, a likelihood) went unseen. */
typedef struct ck_hash {
    uint64_t lane[4];
    uint64_t words;
} ck_hash;

static const uint64_t FNV_PRIME = 0x100000001b3u;

static void hash_init(ck_hash *h)
{
    for (int i = 0; i < 4; i++)
        h->lane[i] = 0xcbf29ce484222325u + (uint64_t)i;
    h->words = 0;
}

static void hash_words(ck_hash *h, const uint32_t *w, size_t n)
{
    for (size_t i = 0; i < n; i++, h->words++)
        h->lane[h->words & 3] = (h->lane[h->words & 3] ^ w[i]) * FNV_PRIME;
}

static void hash_word(ck_hash *h, uint64_t v)
{
    uint32_t w[2] = {(uint32_t)v, (uint32_t)(v >> 32)};
    hash_words(h, w, 2);
}

static void hash_str(ck_hash *h, const char *s)
{
    size_t n = strlen(s);
    hash_word(h, n);
    for (size_t i = 0; i < n; i += 4) {
        unsigned char b[4] = {0, 0, 0, 0};
        memcpy(b, s + i, n - i < 4 ? n - i : 4);
        uint32_t w = (uint32_t)b[0] | (uint32_t)b[1] << 8 |
                     (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
        hash_words(h, &w, 1);
    }
}

static void hash_text(const ck_hash *h, const char *prefix, char *out)
{
    uint64_t r = h->words * FNV_PRIME;
    for (int i = 0; i < 4; i++)
        r = (r ^ h->lane[i]) * FNV_PRIME;
    snprintf(out, 32, "%s%016" PRIx64, prefix, r);
}

/* Names and keys in order, for the checksum's fixed order: another writer
 * may lay the file out in another (the Python one sorts the tensors). */
static int by_name(const void *a, const void *b)
{
    return strcmp(**(const char *const *const *)a,
                  **(const char *const *const *)b);
}

typedef struct meta_pair {
    const char *key, *value;
} meta_pair;

static int by_key(const void *a, const void *b)
{
    return strcmp(((const meta_pair *)a)->key, ((const meta_pair *)b)->key);
}

/* The metadata but the checksum, in key order, into h. */
static bool hash_meta(ck_hash *h, int nmeta, const char *const *keys,
                      const char *const *values)
{
    meta_pair *pairs = malloc(sizeof *pairs * (size_t)(nmeta ? nmeta : 1));
    if (!pairs)
        return false;
    int n = 0;
    for (int i = 0; i < nmeta; i++)
        if (strcmp(keys[i], TG_CK_CHECKSUM_KEY) != 0)
            pairs[n++] = (meta_pair){keys[i], values[i]};
    qsort(pairs, (size_t)n, sizeof *pairs, by_key);
    for (int i = 0; i < n; i++) {
        hash_str(h, pairs[i].key);
        hash_str(h, pairs[i].value);
    }
    free(pairs);
    return true;
}

void tg_ck_checksum(int n, const tg_st_tensor *t, int nmeta,
                    const char *const *keys, const char *const *values,
                    char *out)
{
    const tg_st_tensor **order = malloc(sizeof *order * (size_t)(n ? n : 1));
    if (!order)
        tg_out_of_memory("checkpoint", "out of memory");
    for (int k = 0; k < n; k++)
        order[k] = &t[k];
    qsort(order, (size_t)n, sizeof *order, by_name); /* name is first */
    ck_hash h;
    hash_init(&h);
    uint32_t buf[1024];
    for (int k = 0; k < n; k++) {
        size_t numel = 1;
        hash_str(&h, order[k]->name);
        hash_word(&h, (uint64_t)order[k]->ndim);
        for (int d = 0; d < order[k]->ndim; d++) {
            hash_word(&h, (uint64_t)order[k]->shape[d]);
            numel *= (size_t)order[k]->shape[d];
        }
        for (size_t i = 0; i < numel; i += 1024) {
            size_t c = numel - i < 1024 ? numel - i : 1024;
            memcpy(buf, order[k]->data + i, c * sizeof *buf); /* host order: */
            hash_words(&h, buf, c); /* the file's words, decoded */
        }
    }
    free(order);
    if (!hash_meta(&h, nmeta, keys, values))
        tg_out_of_memory("checkpoint", "out of memory");
    hash_text(&h, "fnv4m:", out);
}

/* Whether s is prefix and 16 lowercase hex digits. */
static bool checksum_form(const char *s, const char *prefix)
{
    size_t p = strlen(prefix);
    return strlen(s) == p + 16 && strncmp(s, prefix, p) == 0 &&
           strspn(s + p, "0123456789abcdef") == 16;
}

/* Whether a and b differ in exactly one bit. */
static bool one_bit_apart(const char *a, const char *b)
{
    size_t n = strlen(a);
    if (n != strlen(b))
        return false;
    int bits = 0;
    for (size_t i = 0; i < n && bits <= 1; i++)
        bits += __builtin_popcount((unsigned char)a[i] ^ (unsigned char)b[i]);
    return bits == 1;
}

bool tg_ck_near_checksum_key(const char *key)
{
    return one_bit_apart(key, TG_CK_CHECKSUM_KEY);
}

tg_status tg_ck_verify(tg_st_file *f)
{
    const char *want = NULL;
    for (int i = 0; i < f->nmeta; i++) {
        const char *key = f->meta_key[i];
        if (strcmp(key, TG_CK_CHECKSUM_KEY) == 0)
            want = f->meta_value[i];
        else if (tg_ck_near_checksum_key(key)) /* in any byte */
            return tg_error(TG_ERR_FORMAT,
                            "%s: damaged: metadata key '%.60s' is one bit "
                            "from the checksum's ('%s'), which would turn "
                            "the check off",
                            f->path, key, TG_CK_CHECKSUM_KEY);
        else if (strncmp(key, "tapegrad.", 9) == 0) /* the library's own */
            return tg_error(TG_ERR_FORMAT,
                            "%s: damaged or from another version: metadata "
                            "key '%.60s' is none this library writes",
                            f->path, key);
    }
    if (!want)
        return TG_OK;
    bool full = checksum_form(want, "fnv4m:");
    if (!full && !checksum_form(want, "fnv4:"))
        return tg_error(TG_ERR_FORMAT,
                        "%s: metadata '%s' is '%.40s', not a checksum this "
                        "library writes (fnv4m: or fnv4: and 16 hex digits)",
                        f->path, TG_CK_CHECKSUM_KEY, want);
    const tg_st_entry **order =
        malloc(sizeof *order * (size_t)(f->n ? f->n : 1));
    if (!order)
        return tg_error(TG_ERR_NOMEM, "%s: out of memory", f->path);
    for (int k = 0; k < f->n; k++)
        order[k] = &f->t[k];
    qsort(order, (size_t)f->n, sizeof *order, by_name); /* name is first */
    ck_hash h;
    hash_init(&h);
    uint32_t buf[4096];
    tg_status st = TG_OK;
    for (int k = 0; k < f->n && st == TG_OK; k++) {
        if (full) {
            hash_str(&h, order[k]->name);
            hash_word(&h, (uint64_t)order[k]->ndim);
            for (int d = 0; d < order[k]->ndim; d++)
                hash_word(&h, order[k]->shape[d]);
        }
        uint64_t len = order[k]->end - order[k]->begin;
        if (fseeko(f->f, (off_t)(f->data_start + order[k]->begin), SEEK_SET))
            st = tg_error(TG_ERR_IO, "%s: cannot read its data", f->path);
        for (uint64_t at = 0; at < len && st == TG_OK;) {
            size_t c = len - at < sizeof buf ? (size_t)(len - at) : sizeof buf;
            if (fread(buf, 1, c, f->f) != c) {
                st = tg_error(TG_ERR_IO, "%s: cannot read its data", f->path);
                break;
            }
            tg_st_swap_le32(buf, c / 4);
            hash_words(&h, buf, c / 4);
            at += c;
        }
    }
    free(order);
    if (st == TG_OK && full &&
        !hash_meta(&h, f->nmeta, (const char *const *)f->meta_key,
                   (const char *const *)f->meta_value))
        st = tg_error(TG_ERR_NOMEM, "%s: out of memory", f->path);
    if (st != TG_OK)
        return st;
    char got[32];
    hash_text(&h, full ? "fnv4m:" : "fnv4:", got);
    if (strcmp(got, want) != 0)
        return tg_error(TG_ERR_FORMAT,
                        "%s: damaged: its %s do not match the checksum in "
                        "its metadata (%.40s, the file gives %s)",
                        f->path, full ? "tensors and metadata" : "tensor data",
                        want, got);
    return TG_OK;
}
