/* IDX files (LeCun's MNIST format), raw or gzip: magic 00 00 08 <ndims>,
 * ndims big-endian u32 sizes, then the unsigned bytes. Every size is checked
 * against the file before the data buffer is allocated. */
#include "idx.h"
#include "tg_config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef TG_HAVE_ZLIB
#include <zlib.h>
#endif

/* Largest payload accepted: EMNIST's biggest file is 0.55 GB. A gzip file
 * cannot be sized before decompressing, so this also bounds what a lying
 * header can make us read. */
#define IDX_MAX_BYTES ((uint64_t)1 << 30)
/* First buffer for a gzip payload, doubled as data arrives. The fuzz build
 * makes it small so that short inputs reach the growth. */
#ifndef IDX_FIRST_CHUNK
#define IDX_FIRST_CHUNK ((size_t)1 << 20)
#endif

bool tg_have_zlib(void)
{
#ifdef TG_HAVE_ZLIB
    return true;
#else
    return false;
#endif
}

/* A raw FILE, a memory buffer or a gzFile behind one read function. */
typedef struct source {
    const char *path;
    tg_status err; /* what src_read failed with */
    FILE *f;
    const uint8_t *mem; /* mem_len bytes, mem_at of them consumed */
    size_t mem_len, mem_at;
#ifdef TG_HAVE_ZLIB
    gzFile gz;
#endif
} source;

#ifdef TG_HAVE_ZLIB
/* A gzread that failed with code: zlib short of memory is not bad data. */
static tg_status gz_failure(const char *path, int code, const char *why)
{
    if (code == Z_MEM_ERROR)
        return tg_error(TG_ERR_NOMEM, "%s: out of memory decompressing it",
                        path);
    return tg_error(TG_ERR_FORMAT, "%s: corrupt gzip data (%s)", path, why);
}
#endif

/* An open that failed with errno err: ENOMEM (the stream's buffers) is out
 * of memory, not a file that cannot be read. */
static tg_status open_failure(const char *path, int err)
{
    if (err == ENOMEM)
        return tg_error(TG_ERR_NOMEM, "%s: out of memory opening it", path);
    return tg_error(TG_ERR_IO, "%s: %s", path,
                    err ? strerror(err) : "cannot open");
}

/* Reads up to n bytes; returns the count, or -1 (message set) on error. */
static long long src_read(source *s, void *buf, size_t n)
{
#ifdef TG_HAVE_ZLIB
    if (s->gz) {
        size_t got = 0;
        while (got < n) {
            size_t chunk = n - got > (1u << 30) ? (1u << 30) : n - got;
            int r = gzread(s->gz, (char *)buf + got, (unsigned)chunk);
            if (r < 0) {
                int code;
                const char *why = gzerror(s->gz, &code);
                s->err = gz_failure(s->path, code, why);
                return -1;
            }
            if (r == 0)
                break;
            got += (size_t)r;
        }
        /* A gzip stream cut short reads as a short count plus an error. */
        int code = Z_OK;
        const char *why = gzerror(s->gz, &code);
        if (got < n && code != Z_OK) {
            s->err = gz_failure(s->path, code, why);
            return -1;
        }
        return (long long)got;
    }
#endif
    if (s->mem) {
        size_t got = s->mem_len - s->mem_at < n ? s->mem_len - s->mem_at : n;
        if (got)
            memcpy(buf, s->mem + s->mem_at, got);
        s->mem_at += got;
        return (long long)got;
    }
    size_t got = fread(buf, 1, n, s->f);
    if (got < n && ferror(s->f)) {
        s->err =
            tg_error(TG_ERR_IO, "%s: read error: %s", s->path, strerror(errno));
        return -1;
    }
    return (long long)got;
}

static void src_close(source *s)
{
#ifdef TG_HAVE_ZLIB
    if (s->gz)
        gzclose(s->gz);
#endif
    if (s->f)
        fclose(s->f);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           (uint32_t)p[3];
}

/* The file is opened first, then checked (fstat of what was opened): a
 * stat of the path, then an fopen, had opened what was there by then, and
 * a FIFO renamed over the file in between made the open wait for a writer
 * for ever. O_NONBLOCK: such a FIFO opens at once and is refused. */
static tg_status open_source(const char *path, source *s, off_t *raw_size)
{
    struct stat st;
    memset(s, 0, sizeof *s);
    s->path = path;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return open_failure(path, errno);
    tg_status status = TG_OK;
    if (fstat(fd, &st) != 0)
        status = tg_error(TG_ERR_IO, "%s: %s", path, strerror(errno));
    else if (S_ISDIR(st.st_mode))
        status =
            tg_error(TG_ERR_IO, "%s: is a directory, not an IDX file", path);
    else if (!S_ISREG(st.st_mode))
        status = tg_error(TG_ERR_IO, "%s: not a regular file", path);
    if (status != TG_OK) {
        close(fd);
        return status;
    }
    *raw_size = st.st_size;
    if (ends_with(path, ".gz")) {
#ifdef TG_HAVE_ZLIB
        errno = 0;
        s->gz = gzdopen(fd, "rb");
        if (!s->gz) {
            status = open_failure(path, errno);
            close(fd);
        }
        return status;
#else
        close(fd);
        return tg_error(TG_ERR_UNSUPPORTED,
                        "%s: reading .gz needs zlib, which this build lacks "
                        "(gunzip the file or rebuild with zlib)",
                        path);
#endif
    }
    s->f = fdopen(fd, "rb");
    if (!s->f) {
        status = open_failure(path, errno);
        close(fd);
    }
    return status;
}

/* Reads magic and dims; *payload = product of dims, overflow-checked. */
static tg_status read_header(source *s, int *ndim, int dims[3],
                             uint64_t *payload)
{
    uint8_t h[16];
    long long got = src_read(s, h, 4);
    if (got < 0)
        return s->err;
    if (got < 4)
        return tg_error(TG_ERR_FORMAT,
                        "%s: truncated: %lld bytes, no IDX header", s->path,
                        got);
    if (h[0] == 0x1f && h[1] == 0x8b) /* gzip's magic */
        return tg_error(TG_ERR_FORMAT,
                        "%s: gzip data in a file whose name does not end in "
                        ".gz (name it .gz, or gunzip it)",
                        s->path);
    if (h[0] != 0 || h[1] != 0)
        return tg_error(TG_ERR_FORMAT, "%s: bad magic 0x%08x (not an IDX file)",
                        s->path, be32(h));
    if (h[2] != 0x08)
        return tg_error(TG_ERR_FORMAT,
                        "%s: IDX data type 0x%02x not "
                        "supported (only 0x08, unsigned byte)",
                        s->path, h[2]);
    int nd = h[3];
    if (nd < 1 || nd > 3)
        return tg_error(TG_ERR_FORMAT, "%s: %d dimensions (1 to 3 supported)",
                        s->path, nd);
    got = src_read(s, h + 4, 4 * (size_t)nd);
    if (got < 0)
        return s->err;
    if (got < 4 * nd)
        return tg_error(TG_ERR_FORMAT, "%s: truncated in the dimensions",
                        s->path);
    uint64_t total = 1;
    for (int d = 0; d < nd; d++) {
        uint32_t v = be32(h + 4 + 4 * d);
        if (v > INT_MAX)
            return tg_error(TG_ERR_FORMAT, "%s: dimension %d is %u, too large",
                            s->path, d, v);
        dims[d] = (int)v;
        if (v && total > IDX_MAX_BYTES / v) {
            /* the sizes as read, so a wrong dimension count in the magic
             * (data bytes read as sizes) shows */
            char sizes[64] = "";
            for (int k = 0; k <= d; k++)
                snprintf(sizes + strlen(sizes), sizeof sizes - strlen(sizes),
                         "%s%u", k ? " x " : "", be32(h + 4 + 4 * k));
            return tg_error(TG_ERR_FORMAT,
                            "%s: the magic's %d dimensions, %s, multiply to "
                            "more than %llu bytes",
                            s->path, nd, sizes,
                            (unsigned long long)IDX_MAX_BYTES);
        }
        total *= v;
    }
    *ndim = nd;
    *payload = total;
    return TG_OK;
}

/* Raw file: the size is known, so it is compared before allocating. */
static tg_status read_raw(source *s, off_t file_size, int ndim,
                          uint64_t payload, uint8_t **out)
{
    uint64_t header = 4 + 4 * (uint64_t)ndim;
    uint64_t have = (uint64_t)file_size - header;
    if ((uint64_t)file_size < header + payload)
        return tg_error(TG_ERR_FORMAT,
                        "%s: truncated: dims need %llu data "
                        "bytes, file has %llu",
                        s->path, (unsigned long long)payload,
                        (unsigned long long)have);
    if ((uint64_t)file_size > header + payload)
        return tg_error(TG_ERR_FORMAT,
                        "%s: %llu bytes of trailing garbage after the data",
                        s->path, (unsigned long long)(have - payload));
    uint8_t *data = malloc(payload ? payload : 1);
    if (!data)
        return tg_error(TG_ERR_NOMEM, "%s: out of memory for %llu bytes",
                        s->path, (unsigned long long)payload);
    long long got = src_read(s, data, payload);
    if (got != (long long)payload) {
        free(data);
        if (got < 0)
            return s->err;
        return tg_error(TG_ERR_IO, "%s: file shrank while reading", s->path);
    }
    *out = data;
    return TG_OK;
}

/* gzip: the real size is only known by decompressing, so the buffer grows
 * with the data actually read (never beyond payload + 1, the one extra byte
 * detecting trailing garbage) and is compared at the end. */
static tg_status read_stream(source *s, uint64_t payload, uint8_t **out)
{
    size_t cap =
        payload + 1 < IDX_FIRST_CHUNK ? (size_t)payload + 1 : IDX_FIRST_CHUNK;
    size_t len = 0;
    uint8_t *buf = malloc(cap);
    if (!buf)
        return tg_error(TG_ERR_NOMEM, "%s: out of memory", s->path);
    for (;;) {
        if (len == cap) {
            if (cap > payload)
                break; /* read payload + 1 bytes: there is more */
            size_t grow = cap * 2 > payload + 1 ? (size_t)payload + 1 : cap * 2;
            uint8_t *bigger = realloc(buf, grow);
            if (!bigger) {
                free(buf);
                return tg_error(TG_ERR_NOMEM, "%s: out of memory", s->path);
            }
            buf = bigger;
            cap = grow;
        }
        long long got = src_read(s, buf + len, cap - len);
        if (got < 0) {
            free(buf);
            return s->err;
        }
        if (got == 0)
            break;
        len += (size_t)got;
    }
    if (len != payload) {
        free(buf);
        if (len < payload)
            return tg_error(TG_ERR_FORMAT,
                            "%s: truncated: dims need %llu "
                            "data bytes, file has %zu",
                            s->path, (unsigned long long)payload, len);
        return tg_error(TG_ERR_FORMAT,
                        "%s: trailing garbage after the %llu data bytes",
                        s->path, (unsigned long long)payload);
    }
    *out = buf;
    return TG_OK;
}

/* Header then data from an open source of raw_size bytes (unknown: gzip). */
static tg_status read_source(source *s, off_t raw_size, int *ndim, int dims[3],
                             uint8_t **data)
{
    uint64_t payload = 0;
    int nd = 0, d[3] = {0, 0, 0};
    tg_status st = read_header(s, &nd, d, &payload);
    if (st == TG_OK)
        st = s->f || s->mem ? read_raw(s, raw_size, nd, payload, data)
                            : read_stream(s, payload, data);
    if (st != TG_OK)
        return st;
    *ndim = nd;
    memcpy(dims, d, sizeof d);
    return TG_OK;
}

tg_status tg_idx_read(const char *path, int *ndim, int dims[3], uint8_t **data)
{
    if (!path || !ndim || !dims || !data)
        return tg_error(TG_ERR_ARG, "idx_read: NULL %s",
                        !path   ? "path"
                        : !ndim ? "ndim"
                        : !dims ? "dims"
                                : "data");
    source s;
    off_t file_size = 0;
    *data = NULL;
    tg_status st = open_source(path, &s, &file_size);
    if (st == TG_OK)
        st = read_source(&s, file_size, ndim, dims, data);
    src_close(&s);
    return st;
}

tg_status tg_idx_read_mem(const void *buf, size_t len, const char *what,
                          int *ndim, int dims[3], uint8_t **data)
{
    static const uint8_t empty[1];
    source s;
    memset(&s, 0, sizeof s);
    s.path = what;
    s.mem = len ? buf : empty;
    s.mem_len = len;
    *data = NULL;
    if ((uint64_t)len > (uint64_t)INT64_MAX)
        return tg_error(TG_ERR_FORMAT, "%s: too large", what);
    return read_source(&s, (off_t)len, ndim, dims, data);
}

/* "<dir>/<base>" if it exists, else "<dir>/<base>.gz"; *absent (when
 * given) tells "neither found" from other errors. */
static tg_status find_file(const char *dir, const char *base, char *out,
                           size_t cap, bool *absent)
{
    struct stat st;
    if (absent)
        *absent = false;
    if ((size_t)snprintf(out, cap, "%s/%s", dir, base) >= cap)
        return tg_error(TG_ERR_ARG, "%s: path too long", dir);
    /* a name that is there but cannot be followed (a link loop, no
     * permission on the way) is that error, not "not found" */
    /* a link whose target is missing is there (lstat), not absent: its
     * read names it */
    if (stat(out, &st) == 0 || errno != ENOENT || lstat(out, &st) == 0)
        return TG_OK;
    if ((size_t)snprintf(out, cap, "%s/%s.gz", dir, base) >= cap)
        return tg_error(TG_ERR_ARG, "%s: path too long", dir);
    if (stat(out, &st) == 0 || errno != ENOENT || lstat(out, &st) == 0)
        return TG_OK;
    if (absent)
        *absent = true;
    return tg_error(TG_ERR_IO, "%s: neither %s nor %s.gz found", dir, base,
                    base);
}

/* Loads an images file, and its labels file when lbl_path is given
 * (labels NULL otherwise), into ds after checking both. */
static tg_status load_files(const char *img_path, const char *lbl_path,
                            tg_dataset *ds)
{
    int img_nd, img_dims[3], lbl_nd, lbl_dims[3];
    uint8_t *pixels = NULL, *labels = NULL;
    tg_status status = tg_idx_read(img_path, &img_nd, img_dims, &pixels);
    if (status != TG_OK)
        return status;
    if (img_nd != 3) {
        free(pixels);
        return tg_error(TG_ERR_FORMAT, "%s: %d dimensions, images need 3",
                        img_path, img_nd);
    }
    if (img_dims[0] == 0 || img_dims[1] == 0 || img_dims[2] == 0) {
        free(pixels);
        return tg_error(TG_ERR_FORMAT, "%s: empty (%d x %d x %d)", img_path,
                        img_dims[0], img_dims[1], img_dims[2]);
    }
    if (lbl_path) {
        status = tg_idx_read(lbl_path, &lbl_nd, lbl_dims, &labels);
        if (status == TG_OK && lbl_nd != 1)
            status = tg_error(TG_ERR_FORMAT, "%s: %d dimensions, labels need 1",
                              lbl_path, lbl_nd);
        else if (status == TG_OK && lbl_dims[0] != img_dims[0])
            status = tg_error(TG_ERR_MISMATCH,
                              "%s has %d images but %s has %d labels", img_path,
                              img_dims[0], lbl_path, lbl_dims[0]);
        if (status != TG_OK) {
            free(pixels);
            free(labels);
            return status;
        }
    }

    size_t count = (size_t)img_dims[0] * img_dims[1] * img_dims[2];
    float *images = malloc(count * sizeof(float));
    if (!images) {
        free(pixels);
        free(labels);
        return tg_error(TG_ERR_NOMEM, "%s: out of memory", img_path);
    }
    for (size_t i = 0; i < count; i++)
        images[i] = (float)pixels[i] / 255.0f;
    free(pixels);
    ds->n = img_dims[0];
    ds->rows = img_dims[1];
    ds->cols = img_dims[2];
    ds->images = images;
    ds->labels = labels;
    return TG_OK;
}

/* The set at path: a folder's <prefix>-images file, and its labels file
 * (required when need_labels, else read when there is one), or with
 * !need_labels an images file itself. */
static tg_status load_set(const char *path, bool train, bool need_labels,
                          tg_dataset *ds, const char *op)
{
    if (!path || !ds)
        return tg_error(TG_ERR_ARG, "%s: NULL %s", op,
                        path ? "dataset" : "folder");
    const char *prefix = train ? "train" : "t10k";
    char base[64], img_path[4096], lbl_path[4096];
    struct stat st;
    memset(ds, 0, sizeof *ds);
    if (stat(path, &st) != 0)
        return tg_error(TG_ERR_IO, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) {
        if (need_labels)
            return tg_error(TG_ERR_IO, "%s: not a directory", path);
        return load_files(path, NULL, ds);
    }

    snprintf(base, sizeof base, "%s-images-idx3-ubyte", prefix);
    tg_status status = find_file(path, base, img_path, sizeof img_path, NULL);
    if (status != TG_OK)
        return status;
    snprintf(base, sizeof base, "%s-labels-idx1-ubyte", prefix);
    bool absent;
    status = find_file(path, base, lbl_path, sizeof lbl_path, &absent);
    if (status != TG_OK && (need_labels || !absent))
        return status;
    return load_files(img_path, absent ? NULL : lbl_path, ds);
}

tg_status tg_mnist_load(const char *dir, bool train, tg_dataset *ds)
{
    return load_set(dir, train, true, ds, "mnist_load");
}

tg_status tg_idx_images_load(const char *path, bool train, tg_dataset *ds)
{
    return load_set(path, train, false, ds, "idx_images_load");
}

void tg_dataset_free(tg_dataset *ds)
{
    if (!ds)
        return;
    free(ds->images);
    free(ds->labels);
    memset(ds, 0, sizeof *ds);
}

/* 64-bit FNV-1a over 32-bit words (the images' float bits, then the
 * labels' bytes), then a final avalanche: fast, not cryptographic. */
static uint64_t mix(uint64_t h, uint32_t w)
{
    return (h ^ w) * 0x100000001b3ull;
}

void tg_dataset_fingerprint(const tg_dataset *ds, char out[TG_FINGERPRINT_MAX])
{
    if (!ds || !out)
        tg_fatal("dataset_fingerprint", "NULL %s", ds ? "out" : "dataset");
    uint64_t h = 0xcbf29ce484222325ull;
    size_t n = (size_t)ds->n * (size_t)ds->rows * (size_t)ds->cols;
    for (size_t i = 0; i < n; i++) {
        uint32_t w;
        memcpy(&w, ds->images + i, sizeof w);
        h = mix(h, w);
    }
    for (int i = 0; ds->labels && i < ds->n; i++)
        h = mix(h, ds->labels[i]);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    snprintf(out, TG_FINGERPRINT_MAX, "%dx%dx%d %016llx", ds->n, ds->rows,
             ds->cols, (unsigned long long)h);
}
