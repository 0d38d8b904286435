/* safetensors: a strict reader of the header, built on a hand-written
 * JSON parser that knows exactly the shapes of value the format allows
 * (objects of strings, an object per tensor, arrays of integers). The file
 * around it (length word, sizes, the tensors' data) is safetensors_read.c. */
#include "safetensors.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* ---- UTF-8 -------------------------------------------------------------- */

/* Well-formed UTF-8 (RFC 3629): no overlongs, no surrogates, <= U+10FFFF. */
bool tg_st_utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            k = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2;
            if (c == 0xE0)
                lo = 0xA0;
            if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3;
            if (c == 0xF0)
                lo = 0x90;
            if (c == 0xF4)
                hi = 0x8F;
        } else {
            return false;
        }
        if (n - i <= k)
            return false;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t j = 2; j <= k; j++)
            if ((s[i + j] & 0xC0) != 0x80)
                return false;
        i += k + 1;
    }
    return true;
}

/* ---- JSON ---------------------------------------------------------------- */

typedef struct parser {
    const char *s;
    size_t n, i;
    const char *what;
} parser;

static tg_status bad(parser *p, const char *why)
{
    return tg_error(TG_ERR_FORMAT, "%s: bad safetensors header: %s at byte %zu",
                    p->what, why, p->i);
}

static void skip_ws(parser *p)
{
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' ||
                           p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

/* Consumes c (after whitespace) if it is next. */
static bool eat(parser *p, char c)
{
    skip_ws(p);
    if (p->i < p->n && p->s[p->i] == c) {
        p->i++;
        return true;
    }
    return false;
}

static int hex4(const char *h)
{
    int v = 0;
    for (int k = 0; k < 4; k++) {
        char c = h[k];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

static char *put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xC0 | cp >> 6);
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xE0 | cp >> 12);
        *o++ = (char)(0x80 | (cp >> 6 & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (char)(0xF0 | cp >> 18);
        *o++ = (char)(0x80 | (cp >> 12 & 0x3F));
        *o++ = (char)(0x80 | (cp >> 6 & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    }
    return o;
}

/* A JSON string into a malloc'd C string. An escape never decodes to more
 * bytes than it spans, so the raw length bounds the result. \u0000 is
 * refused: names are C strings. */
static tg_status parse_string(parser *p, char **out)
{
    *out = NULL;
    if (!eat(p, '"'))
        return bad(p, "expected a string");
    size_t start = p->i, end = start;
    while (end < p->n && p->s[end] != '"')
        end += p->s[end] == '\\' ? 2 : 1;
    if (end >= p->n)
        return bad(p, "unterminated string");
    char *buf = malloc(end - start + 1), *o = buf;
    if (!buf)
        return tg_error(TG_ERR_NOMEM, "%s: out of memory", p->what);
    const char *why = NULL;
    while (p->i < end && !why) {
        unsigned char c = (unsigned char)p->s[p->i];
        if (c < 0x20) {
            why = "control character in string";
        } else if (c != '\\') {
            *o++ = (char)c;
            p->i++;
        } else {
            char e = p->s[p->i + 1];
            const char *simple = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
            const char *hit = e ? strchr(simple, e) : NULL;
            if (hit) {
                *o++ = to[hit - simple];
                p->i += 2;
                continue;
            }
            if (e != 'u' || end - p->i < 6 || hex4(p->s + p->i + 2) < 0) {
                why = "bad escape in string";
                break;
            }
            unsigned cp = (unsigned)hex4(p->s + p->i + 2);
            p->i += 6;
            if (cp >= 0xDC00 && cp <= 0xDFFF) {
                why = "lone low surrogate in string";
            } else if (cp >= 0xD800 && cp <= 0xDBFF) {
                int low = end - p->i >= 6 && p->s[p->i] == '\\' &&
                                  p->s[p->i + 1] == 'u'
                              ? hex4(p->s + p->i + 2)
                              : -1;
                if (low < 0xDC00 || low > 0xDFFF) {
                    why = "unpaired surrogate in string";
                } else {
                    cp = 0x10000 + ((cp - 0xD800) << 10) +
                         ((unsigned)low - 0xDC00);
                    p->i += 6;
                }
            } else if (cp == 0) {
                why = "\\u0000 in string";
            }
            if (!why)
                o = put_utf8(o, cp);
        }
    }
    if (why) {
        free(buf);
        return bad(p, why);
    }
    *o = '\0';
    p->i = end + 1;
    *out = buf;
    return TG_OK;
}

/* A non-negative JSON integer (no sign, fraction, exponent, leading 0). */
static tg_status parse_u64(parser *p, uint64_t *v)
{
    skip_ws(p);
    size_t start = p->i;
    uint64_t x = 0;
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
        unsigned d = (unsigned)(p->s[p->i] - '0');
        if (x > (UINT64_MAX - d) / 10)
            return bad(p, "integer overflows 64 bits");
        x = x * 10 + d;
        p->i++;
    }
    if (p->i == start)
        return bad(p, "expected a non-negative integer");
    if (p->s[start] == '0' && p->i - start > 1)
        return bad(p, "leading zero in integer");
    if (p->i < p->n &&
        (p->s[p->i] == '.' || p->s[p->i] == 'e' || p->s[p->i] == 'E'))
        return bad(p, "expected an integer");
    *v = x;
    return TG_OK;
}

/* [a, b, ...] with at most max elements. */
static tg_status parse_u64_array(parser *p, uint64_t *v, int max, int *count)
{
    *count = 0;
    if (!eat(p, '['))
        return bad(p, "expected an array");
    if (eat(p, ']'))
        return TG_OK;
    do {
        if (*count == max)
            return bad(p, "array too long");
        tg_status st = parse_u64(p, &v[*count]);
        if (st != TG_OK)
            return st;
        (*count)++;
    } while (eat(p, ','));
    return eat(p, ']') ? TG_OK : bad(p, "expected ',' or ']'");
}

/* An object's key and the ':' after it into *key (malloc'd); nothing is
 * left allocated on failure. */
static tg_status parse_key(parser *p, char **key)
{
    tg_status st = parse_string(p, key);
    if (st != TG_OK)
        return st;
    if (!eat(p, ':')) {
        free(*key);
        *key = NULL;
        return bad(p, "expected ':'");
    }
    return TG_OK;
}

/* ---- the header ---------------------------------------------------------- */

static bool is_known_dtype(const char *d)
{
    static const char *const known[] = {
        "BOOL", "U8",  "I8",  "I16", "U16",     "F16",     "BF16", "I32",
        "U32",  "F64", "I64", "U64", "F8_E4M3", "F8_E5M2", "F4",   NULL};
    for (int i = 0; known[i]; i++)
        if (strcmp(d, known[i]) == 0)
            return true;
    return false;
}

/* {"dtype": "F32", "shape": [...], "data_offsets": [b, e]}, keys in any
 * order, each exactly once. */
static tg_status parse_tensor(parser *p, tg_st_entry *e)
{
    bool have_dtype = false, have_shape = false, have_offsets = false;
    if (!eat(p, '{'))
        return bad(p, "expected a tensor object");
    do {
        char *key;
        tg_status st = parse_key(p, &key);
        if (st != TG_OK)
            return st;
        if (strcmp(key, "dtype") == 0 && !have_dtype) {
            char *dtype;
            have_dtype = true;
            st = parse_string(p, &dtype);
            if (st == TG_OK && strcmp(dtype, "F32") != 0)
                st = tg_error(is_known_dtype(dtype) ? TG_ERR_UNSUPPORTED
                                                    : TG_ERR_FORMAT,
                              "%s: tensor '%s' has dtype %.16s, only F32 is "
                              "supported",
                              p->what, e->name, dtype);
            free(dtype);
        } else if (strcmp(key, "shape") == 0 && !have_shape) {
            have_shape = true;
            st = parse_u64_array(p, e->shape, TG_ST_MAX_DIMS, &e->ndim);
        } else if (strcmp(key, "data_offsets") == 0 && !have_offsets) {
            uint64_t off[2] = {0, 0}; /* kept on a failed parse too */
            int k;
            have_offsets = true;
            st = parse_u64_array(p, off, 2, &k);
            if (st == TG_OK && k != 2)
                st = bad(p, "data_offsets needs 2 integers");
            e->begin = off[0];
            e->end = off[1];
        } else {
            st = tg_error(TG_ERR_FORMAT,
                          "%s: tensor '%s': unexpected or repeated key '%.40s'",
                          p->what, e->name, key);
        }
        free(key);
        if (st != TG_OK)
            return st;
    } while (eat(p, ','));
    if (!eat(p, '}'))
        return bad(p, "expected ',' or '}'");
    if (!have_dtype || !have_shape || !have_offsets)
        return tg_error(TG_ERR_FORMAT,
                        "%s: tensor '%s' lacks dtype, shape or data_offsets",
                        p->what, e->name);
    uint64_t numel = 1;
    for (int d = 0; d < e->ndim; d++) {
        if (e->shape[d] && numel > UINT64_MAX / 4 / e->shape[d])
            return tg_error(TG_ERR_FORMAT, "%s: tensor '%s': shape overflows",
                            p->what, e->name);
        numel *= e->shape[d];
    }
    e->numel = numel;
    if (e->end < e->begin || e->end - e->begin != numel * 4)
        return tg_error(TG_ERR_FORMAT,
                        "%s: tensor '%s': data_offsets "
                        "[%llu, %llu] do not hold %llu floats",
                        p->what, e->name, (unsigned long long)e->begin,
                        (unsigned long long)e->end, (unsigned long long)numel);
    return TG_OK;
}

static tg_status parse_metadata(parser *p, tg_st_file *f)
{
    int cap = 0;
    if (!eat(p, '{'))
        return bad(p, "__metadata__ must be an object");
    if (eat(p, '}'))
        return TG_OK;
    do {
        if (f->nmeta == cap) {
            cap = cap ? 2 * cap : 8;
            char **k = realloc(f->meta_key, (size_t)cap * sizeof *k);
            if (k)
                f->meta_key = k;
            char **v = realloc(f->meta_value, (size_t)cap * sizeof *v);
            if (v)
                f->meta_value = v;
            if (!k || !v)
                return tg_error(TG_ERR_NOMEM, "%s: out of memory", p->what);
        }
        char *key, *value = NULL;
        tg_status st = parse_key(p, &key);
        if (st != TG_OK)
            return st;
        skip_ws(p);
        st = p->i < p->n && p->s[p->i] == '"'
                 ? parse_string(p, &value)
                 : bad(p, "__metadata__ values must be strings");
        if (st != TG_OK) {
            free(key);
            return st;
        }
        f->meta_key[f->nmeta] = key;
        f->meta_value[f->nmeta] = value;
        f->nmeta++;
    } while (eat(p, ','));
    return eat(p, '}') ? TG_OK : bad(p, "expected ',' or '}'");
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Refuses a name seen twice in list (sorts a copy: n may be large). */
static tg_status check_unique(char **list, int n, const char *what)
{
    if (n < 2)
        return TG_OK;
    char **copy = malloc((size_t)n * sizeof *copy);
    if (!copy)
        return tg_error(TG_ERR_NOMEM, "%s: out of memory", what);
    memcpy(copy, list, (size_t)n * sizeof *copy);
    qsort(copy, (size_t)n, sizeof *copy, cmp_str);
    tg_status st = TG_OK;
    for (int i = 1; i < n && st == TG_OK; i++)
        if (strcmp(copy[i - 1], copy[i]) == 0)
            st = tg_error(TG_ERR_FORMAT, "%s: key '%s' appears twice", what,
                          copy[i]);
    free(copy);
    return st;
}

static int cmp_entry_names(const void *a, const void *b)
{
    return strcmp((*(tg_st_entry *const *)a)->name,
                  (*(tg_st_entry *const *)b)->name);
}

/* f->by_name, refusing a tensor name seen twice. */
static tg_status index_names(tg_st_file *f)
{
    f->by_name = malloc((size_t)(f->n ? f->n : 1) * sizeof *f->by_name);
    if (!f->by_name)
        return tg_error(TG_ERR_NOMEM, "%s: out of memory", f->path);
    for (int i = 0; i < f->n; i++)
        f->by_name[i] = &f->t[i];
    qsort(f->by_name, (size_t)f->n, sizeof *f->by_name, cmp_entry_names);
    for (int i = 1; i < f->n; i++)
        if (strcmp(f->by_name[i - 1]->name, f->by_name[i]->name) == 0)
            return tg_error(TG_ERR_FORMAT, "%s: key '%s' appears twice",
                            f->path, f->by_name[i]->name);
    return TG_OK;
}

static int cmp_offsets(const void *a, const void *b)
{
    const tg_st_entry *x = *(const tg_st_entry *const *)a;
    const tg_st_entry *y = *(const tg_st_entry *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

/* Sorted by begin, the tensors must tile [0, data_len) exactly. */
static tg_status check_layout(const tg_st_file *f, uint64_t data_len)
{
    const tg_st_entry **by = malloc((size_t)(f->n ? f->n : 1) * sizeof *by);
    if (!by)
        return tg_error(TG_ERR_NOMEM, "%s: out of memory", f->path);
    for (int i = 0; i < f->n; i++)
        by[i] = &f->t[i];
    qsort(by, (size_t)f->n, sizeof *by, cmp_offsets);
    uint64_t at = 0;
    tg_status st = TG_OK;
    for (int i = 0; i < f->n && st == TG_OK; i++) {
        if (by[i]->begin != at)
            st = tg_error(
                TG_ERR_FORMAT,
                "%s: tensor '%s' starts at byte %llu, expected %llu (%s)",
                f->path, by[i]->name, (unsigned long long)by[i]->begin,
                (unsigned long long)at, by[i]->begin < at ? "overlap" : "gap");
        at = by[i]->end;
    }
    if (st == TG_OK && at != data_len)
        st = tg_error(TG_ERR_FORMAT,
                      "%s: file size mismatch: the header "
                      "describes %llu data bytes, the file holds %llu",
                      f->path, (unsigned long long)at,
                      (unsigned long long)data_len);
    free(by);
    return st;
}

static tg_status parse_top(parser *p, tg_st_file *f)
{
    int cap = 0;
    bool have_meta = false;
    if (!eat(p, '{'))
        return bad(p, "header is not a JSON object");
    if (eat(p, '}'))
        goto done;
    do {
        char *name;
        tg_status st = parse_key(p, &name);
        if (st != TG_OK)
            return st;
        if (strcmp(name, "__metadata__") == 0) {
            free(name);
            if (have_meta)
                return bad(p, "__metadata__ given twice");
            have_meta = true;
            st = parse_metadata(p, f);
            if (st != TG_OK)
                return st;
            continue;
        }
        if (f->n == cap) {
            if (cap > INT_MAX / 4) {
                free(name);
                return bad(p, "too many tensors");
            }
            cap = cap ? 2 * cap : 16;
            tg_st_entry *t = realloc(f->t, (size_t)cap * sizeof *t);
            if (!t) {
                free(name);
                return tg_error(TG_ERR_NOMEM, "%s: out of memory", p->what);
            }
            f->t = t;
        }
        tg_st_entry *e = &f->t[f->n++];
        memset(e, 0, sizeof *e);
        e->name = name;
        st = parse_tensor(p, e);
        if (st != TG_OK)
            return st;
    } while (eat(p, ','));
    if (!eat(p, '}'))
        return bad(p, "expected ',' or '}'");
done:
    skip_ws(p);
    if (p->i != p->n)
        return bad(p, "trailing bytes after the JSON object");
    return TG_OK;
}

tg_status tg_st_parse_header(const char *json, size_t len, uint64_t data_len,
                             const char *what, tg_st_file *out)
{
    parser p = {json, len, 0, what};
    memset(out, 0, sizeof *out);
    out->path = what;
    if (!tg_st_utf8_valid((const unsigned char *)json, len))
        return tg_error(TG_ERR_FORMAT, "%s: header is not valid UTF-8", what);
    tg_status st = parse_top(&p, out);
    if (st == TG_OK)
        st = index_names(out);
    if (st == TG_OK)
        st = check_unique(out->meta_key, out->nmeta, what);
    if (st == TG_OK)
        st = check_layout(out, data_len);
    if (st != TG_OK)
        tg_st_close(out);
    return st;
}

/* ---- the parsed file ------------------------------------------------- */

const tg_st_entry *tg_st_find(const tg_st_file *f, const char *name)
{
    int lo = 0, hi = f->n; /* the name, if there, is in by_name[lo, hi) */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(f->by_name[mid]->name, name);
        if (c == 0)
            return f->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

void tg_st_close(tg_st_file *f)
{
    if (f->f)
        fclose(f->f);
    for (int i = 0; i < f->n; i++)
        free(f->t[i].name);
    for (int i = 0; i < f->nmeta; i++) {
        free(f->meta_key[i]);
        free(f->meta_value[i]);
    }
    free(f->t);
    free(f->by_name);
    free(f->meta_key);
    free(f->meta_value);
    memset(f, 0, sizeof *f);
}
