/* libFuzzer target: a .gz IDX file read by tg_idx_read through zlib. The
 * first input byte picks what the file holds: odd, the rest of the input
 * gzip-compressed here (a valid stream, so the fuzzer steers the IDX
 * content: sizes against the decompressed length, trailing bytes, the
 * buffer growth); even, the rest as it is (broken gzip, or bytes zlib passes
 * through). The file lives in a temporary directory, rewritten per input. */
#include "fuzz_file.h"
#include "tg_nn.h"

#include <stdlib.h>
#include <zlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len);

/* gzip of n bytes into a malloc'd buffer; *out_len its size. */
static uint8_t *gzip_bytes(const uint8_t *in, size_t n, size_t *out_len)
{
    z_stream z = {0};
    if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        abort();
    size_t cap = deflateBound(&z, (uLong)n) + 32;
    uint8_t *out = malloc(cap);
    if (!out)
        abort();
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END)
        abort();
    *out_len = cap - z.avail_out;
    deflateEnd(&z);
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len)
{
    if (len == 0)
        return 0;
    const char *path;
    if (buf[0] & 1) {
        size_t n;
        uint8_t *gz = gzip_bytes(buf + 1, len - 1, &n);
        path = fuzz_file_write(".idx.gz", gz, n);
        free(gz);
    } else {
        path = fuzz_file_write(".idx.gz", buf + 1, len - 1);
    }
    int nd = -1, dims[3] = {-1, -1, -1};
    uint8_t *data = NULL;
    tg_status st = tg_idx_read(path, &nd, dims, &data);
    if (st != TG_OK) {
        if (data)
            abort(); /* failure must leave nothing allocated */
        return 0;
    }
    if (nd < 1 || nd > 3)
        abort();
    size_t payload = 1;
    for (int d = 0; d < nd; d++)
        payload *= (size_t)dims[d];
    /* A compressed valid file holds exactly header + payload bytes. */
    if ((buf[0] & 1) && len - 1 != 4 + 4 * (size_t)nd + payload)
        abort();
    /* The payload is read back: ASan flags a buffer shorter than dims. */
    volatile uint8_t sum = 0;
    for (size_t i = 0; i < payload; i++)
        sum += data[i];
    (void)sum;
    free(data);
    return 0;
}
