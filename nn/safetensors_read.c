/* safetensors files: the length word, the header (parsed and checked by
 * tg_st_parse_header, safetensors.c) against the file's size, and the
 * tensors' data, read only when asked for. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t le64(const unsigned char *b)
{
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--)
        v = v << 8 | b[k];
    return v;
}

/* Little-endian floats <-> host order: a no-op on little-endian hosts. */
void tg_st_swap_le32(void *p, size_t n)
{
    const uint32_t one = 1;
    if (*(const unsigned char *)&one == 1)
        return;
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++, b += 4) {
        unsigned char t0 = b[0], t1 = b[1];
        b[0] = b[3];
        b[1] = b[2];
        b[2] = t1;
        b[3] = t0;
    }
}

tg_status tg_st_open(const char *path, tg_st_file *out)
{
    struct stat st;
    unsigned char lenbuf[8];
    memset(out, 0, sizeof *out);
    out->path = path;
    /* O_NONBLOCK: a FIFO opens at once (and is refused below) instead of
     * blocking until some writer comes; a regular file reads as usual. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    FILE *f = fd < 0 ? NULL : fdopen(fd, "rb");
    if (!f) {
        /* ENOMEM: fdopen's stream, out of memory rather than a bad file */
        tg_status st_err =
            errno == ENOMEM && fd >= 0
                ? tg_error(TG_ERR_NOMEM, "%s: out of memory opening it", path)
                : tg_error(TG_ERR_IO, "%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return st_err;
    }
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return tg_error(TG_ERR_IO, "%s: not a regular file", path);
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < 8 || fread(lenbuf, 1, 8, f) != 8) {
        fclose(f);
        return tg_error(TG_ERR_FORMAT,
                        "%s: truncated: %llu bytes, no safetensors header",
                        path, (unsigned long long)size);
    }
    uint64_t n = le64(lenbuf);
    tg_status status = TG_OK;
    if (n > TG_ST_MAX_HEADER)
        status =
            tg_error(TG_ERR_FORMAT, "%s: header length %llu exceeds 100 MB",
                     path, (unsigned long long)n);
    else if (n > size - 8)
        status = tg_error(TG_ERR_FORMAT,
                          "%s: truncated: header length %llu "
                          "but only %llu bytes follow",
                          path, (unsigned long long)n,
                          (unsigned long long)(size - 8));
    if (status != TG_OK) {
        fclose(f);
        return status;
    }
    char *json = malloc(n ? n : 1);
    if (!json) {
        fclose(f);
        return tg_error(TG_ERR_NOMEM, "%s: out of memory", path);
    }
    if (fread(json, 1, n, f) != n) {
        free(json);
        fclose(f);
        return tg_error(TG_ERR_IO, "%s: read error in the header", path);
    }
    status = tg_st_parse_header(json, n, size - 8 - n, path, out);
    free(json);
    if (status != TG_OK) {
        fclose(f);
        return status;
    }
    out->f = f;
    out->data_start = 8 + n;
    return TG_OK;
}

tg_status tg_st_read_f32(tg_st_file *f, const tg_st_entry *e, float *dst)
{
    if (fseeko(f->f, (off_t)(f->data_start + e->begin), SEEK_SET) != 0 ||
        fread(dst, sizeof(float), e->numel, f->f) != e->numel)
        return tg_error(TG_ERR_IO, "%s: cannot read tensor '%s'", f->path,
                        e->name);
    tg_st_swap_le32(dst, e->numel);
    return TG_OK;
}
