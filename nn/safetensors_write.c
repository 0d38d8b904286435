/* safetensors writer: the JSON header (metadata first, then the tensors in
 * the order given, offsets contiguous from 0), padded with spaces to a
 * multiple of 8 so the data is 8-byte aligned, then little-endian F32. */
#include "safetensors.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A growing string; on allocation failure it marks itself failed. */
typedef struct strbuf {
    char *s;
    size_t len, cap;
    bool failed;
} strbuf;

static void sb_put(strbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *bigger = realloc(b->s, cap);
        if (!bigger) {
            b->failed = true;
            return;
        }
        b->s = bigger;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_str(strbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_u64(strbuf *b, uint64_t v)
{
    char tmp[24];
    snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    sb_str(b, tmp);
}

/* A JSON string literal: quotes and backslashes escaped, control bytes as
 * \n-style escapes where JSON has one, else \u00XX. */
static void sb_json(strbuf *b, const char *s)
{
    static const char ctl[] = "\b\f\n\r\t", ctl_esc[] = "bfnrt";
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        const char *hit = c < 0x20 ? strchr(ctl, c) : NULL;
        char esc[8] = {'\\', (char)c};
        if (c == '"' || c == '\\') {
            sb_put(b, esc, 2);
        } else if (hit) {
            esc[1] = ctl_esc[hit - ctl];
            sb_put(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            sb_str(b, esc);
        } else {
            sb_put(b, esc + 1, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static bool valid_name(const char *s)
{
    return tg_st_utf8_valid((const unsigned char *)s, strlen(s));
}

static size_t numel_of(const tg_st_tensor *t)
{
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++)
        n *= (size_t)t->shape[d];
    return n;
}

tg_status tg_st_write(FILE *out, const char *path, int n, const tg_st_tensor *t,
                      int nmeta, const char *const *meta_key,
                      const char *const *meta_value)
{
    strbuf h = {0};
    uint64_t at = 0;
    sb_str(&h, "{");
    if (nmeta > 0) {
        sb_str(&h, "\"__metadata__\":{");
        for (int i = 0; i < nmeta; i++) {
            if (!valid_name(meta_key[i]) || !valid_name(meta_value[i])) {
                free(h.s);
                return tg_error(TG_ERR_ARG,
                                "%s: metadata '%s' is not valid UTF-8", path,
                                meta_key[i]);
            }
            sb_str(&h, i ? "," : "");
            sb_json(&h, meta_key[i]);
            sb_str(&h, ":");
            sb_json(&h, meta_value[i]);
        }
        sb_str(&h, n > 0 ? "}," : "}");
    }
    for (int i = 0; i < n; i++) {
        if (!valid_name(t[i].name)) {
            free(h.s);
            return tg_error(TG_ERR_ARG, "%s: tensor name is not valid UTF-8",
                            path);
        }
        uint64_t bytes = (uint64_t)numel_of(&t[i]) * 4;
        sb_str(&h, i ? "," : "");
        sb_json(&h, t[i].name);
        sb_str(&h, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < t[i].ndim; d++) {
            sb_str(&h, d ? "," : "");
            sb_u64(&h, (uint64_t)t[i].shape[d]);
        }
        sb_str(&h, "],\"data_offsets\":[");
        sb_u64(&h, at);
        sb_str(&h, ",");
        sb_u64(&h, at + bytes);
        sb_str(&h, "]}");
        at += bytes;
    }
    sb_str(&h, "}");
    while (!h.failed && h.len % 8 != 0)
        sb_str(&h, " ");
    if (h.failed) {
        free(h.s);
        return tg_error(TG_ERR_NOMEM, "%s: out of memory for the header", path);
    }

    unsigned char lenbuf[8];
    for (int k = 0; k < 8; k++)
        lenbuf[k] = (unsigned char)((uint64_t)h.len >> (8 * k));
    bool ok =
        fwrite(lenbuf, 1, 8, out) == 8 && fwrite(h.s, 1, h.len, out) == h.len;
    free(h.s);
    float chunk[1024];
    for (int i = 0; i < n && ok; i++) {
        size_t count = numel_of(&t[i]);
        for (size_t j = 0; j < count && ok; j += 1024) {
            size_t k = count - j < 1024 ? count - j : 1024;
            memcpy(chunk, t[i].data + j, k * sizeof(float));
            tg_st_swap_le32(chunk, k);
            ok = fwrite(chunk, sizeof(float), k, out) == k;
        }
    }
    if (!ok)
        return tg_error(TG_ERR_IO, "%s: write failed: %s", path,
                        strerror(errno));
    return TG_OK;
}
