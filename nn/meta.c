/* tg_meta: a checkpoint's string metadata, up to TG_META_MAX key/value
 * pairs, with integers, doubles (C99 hex, exact) and generator states
 * stored as text. See tg_nn.h. */
#include "checkpoint_match.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tg_meta_init(tg_meta *m)
{
    if (!m)
        tg_fatal("meta_init", "NULL metadata");
    memset(m, 0, sizeof *m);
}

void tg_meta_set(tg_meta *m, const char *key, const char *value)
{
    if (!m || !key || !value)
        tg_fatal("meta_set", "NULL %s",
                 !m     ? "metadata"
                 : !key ? "key"
                        : "value");
    if (strlen(key) >= sizeof m->key[0])
        tg_fatal("meta_set", "key '%s' longer than %zu bytes", key,
                 sizeof m->key[0] - 1);
    if (strlen(value) >= sizeof m->value[0])
        tg_fatal("meta_set", "value of '%s' longer than %zu bytes", key,
                 sizeof m->value[0] - 1);
    int i = 0;
    while (i < m->n && strcmp(m->key[i], key) != 0)
        i++;
    if (i == TG_META_MAX)
        tg_fatal("meta_set", "more than %d entries", TG_META_MAX);
    if (i == m->n)
        m->n++;
    strcpy(m->key[i], key);
    strcpy(m->value[i], value);
}

void tg_meta_set_int(tg_meta *m, const char *key, int64_t value)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, value);
    tg_meta_set(m, key, buf);
}

const char *tg_meta_get(const tg_meta *m, const char *key)
{
    if (!m || !key)
        tg_fatal("meta_get", "NULL %s", m ? "key" : "metadata");
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->key[i], key) == 0)
            return m->value[i];
    return NULL;
}

bool tg_meta_equal(const tg_meta *a, const tg_meta *b)
{
    if (!a || !b)
        tg_fatal("meta_equal", "NULL metadata");
    if (a->n != b->n)
        return false;
    for (int i = 0; i < a->n; i++) { /* keys are unique in each */
        const char *v = tg_meta_get(b, a->key[i]);
        if (!v || strcmp(v, a->value[i]) != 0)
            return false;
    }
    return true;
}

tg_status tg_ck_parse_int(const char *what, const char *key, const char *s,
                          int64_t *value)
{
    if (!s)
        return tg_error(TG_ERR_FORMAT, "%s: metadata '%s' missing", what, key);
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    bool starts_ok =
        *s == '-' ? s[1] >= '0' && s[1] <= '9' : *s >= '0' && *s <= '9';
    if (!starts_ok || *end != '\0' || errno == ERANGE)
        return tg_error(TG_ERR_FORMAT,
                        "%s: metadata '%s' = '%.40s' is not an integer", what,
                        key, s);
    *value = v;
    return TG_OK;
}

tg_status tg_meta_get_int(const tg_meta *m, const char *key, int64_t *value)
{
    if (!value)
        tg_fatal("meta_get_int", "NULL value");
    return tg_ck_parse_int("checkpoint", key, tg_meta_get(m, key), value);
}

void tg_meta_set_double(tg_meta *m, const char *key, double value)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%a", value);
    tg_meta_set(m, key, buf);
}

tg_status tg_meta_get_double(const tg_meta *m, const char *key, double *value)
{
    if (!value)
        tg_fatal("meta_get_double", "NULL value");
    const char *s = tg_meta_get(m, key);
    char *end = NULL;
    double v = s && *s && !isspace((unsigned char)*s) ? strtod(s, &end) : NAN;
    if (!end || *end || !isfinite(v))
        return tg_error(TG_ERR_FORMAT, "checkpoint: metadata '%s' is %s", key,
                        s ? "not a finite number" : "missing");
    *value = v;
    return TG_OK;
}

void tg_meta_set_rng(tg_meta *m, const char *key, const tg_rng *r)
{
    if (!r)
        tg_fatal("meta_set_rng", "NULL rng");
    char buf[4 * 16 + 1];
    for (int i = 0; i < 4; i++)
        snprintf(buf + 16 * i, 17, "%016" PRIx64, r->s[i]);
    tg_meta_set(m, key, buf);
}

tg_status tg_meta_get_rng(const tg_meta *m, const char *key, tg_rng *r)
{
    if (!r)
        tg_fatal("meta_get_rng", "NULL rng");
    const char *s = tg_meta_get(m, key);
    if (!s)
        return tg_error(TG_ERR_FORMAT, "checkpoint: metadata '%s' missing",
                        key);
    bool ok = strlen(s) == 4 * 16;
    tg_rng v = {{0}};
    for (int i = 0; ok && i < 4 * 16; i++) {
        int c = tolower((unsigned char)s[i]);
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                       : -1;
        ok = d >= 0;
        v.s[i / 16] = v.s[i / 16] << 4 | (uint64_t)(ok ? d : 0);
    }
    if (!ok || !(v.s[0] | v.s[1] | v.s[2] | v.s[3]))
        return tg_error(TG_ERR_FORMAT,
                        "checkpoint: metadata '%s' is not a "
                        "generator state (64 hex digits, not all zero)",
                        key);
    *r = v;
    return TG_OK;
}
