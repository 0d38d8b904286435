/* libFuzzer target: the input bytes as a raw IDX file, parsed in memory by
 * the reader behind tg_idx_read. Checks on success: dims multiply to the
 * payload, which is exactly the rest of the input. */
#include "idx.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len);

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len)
{
    int nd = -1, dims[3] = {-1, -1, -1};
    uint8_t *data = NULL;
    tg_status st = tg_idx_read_mem(buf, len, "fuzz.idx", &nd, dims, &data);
    if (st != TG_OK) {
        if (data)
            abort(); /* failure must leave nothing allocated */
        return 0;
    }
    size_t payload = 1;
    for (int d = 0; d < nd; d++)
        payload *= (size_t)dims[d];
    if (nd < 1 || nd > 3 || len != 4 + 4 * (size_t)nd + payload ||
        memcmp(data, buf + len - payload, payload) != 0)
        abort();
    free(data);
    return 0;
}
