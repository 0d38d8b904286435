/* libFuzzer target: the input bytes as a .gz IDX file read by tg_idx_read
 * through zlib (gzip, or any bytes zlib passes through as they are). The
 * file lives in a temporary directory, rewritten for each input. */
#include "fuzz_file.h"
#include "tg_nn.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len);

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len)
{
    const char *path = fuzz_file_write(".idx.gz", buf, len);
    int nd = -1, dims[3] = {-1, -1, -1};
    uint8_t *data = NULL;
    tg_status st = tg_idx_read(path, &nd, dims, &data);
    if (st != TG_OK) {
        if (data)
            abort();
        return 0;
    }
    if (nd < 1 || nd > 3)
        abort();
    size_t payload = 1;
    for (int d = 0; d < nd; d++)
        payload *= (size_t)dims[d];
    /* The payload is read back: ASan flags a buffer shorter than dims. */
    volatile uint8_t sum = 0;
    for (size_t i = 0; i < payload; i++)
        sum += data[i];
    (void)sum;
    free(data);
    return 0;
}
