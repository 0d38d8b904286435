/* libFuzzer target: the input bytes as a safetensors file.
 * 1. tg_st_parse_header on the JSON in memory (the length word clamped to
 *    the input, so mutations that break it still reach the parser);
 * 2. when the length word fits the input (or the input is short), the
 *    whole file through tg_checkpoint_read_meta and tg_checkpoint_load
 *    into a fixed model ("enc.weight" [2, 3], "enc.bias" [3]) with and
 *    without Adam state. */
#include "fuzz_file.h"
#include "safetensors.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len);

static tg_params *ps;
static tg_optim *adam;

static void setup(void)
{
    ps = tg_params_new();
    tg_params_add(ps, "enc.weight", 2, (int[]){2, 3});
    tg_params_add(ps, "enc.bias", 1, (int[]){3});
    tg_params_seal(ps);
    adam = tg_adam_new(ps, 1e-3f);
}

/* On success the entries tile the data section: the parser's promise. */
static void check_parsed(const tg_st_file *f, uint64_t data_len)
{
    uint64_t total = 0;
    for (int i = 0; i < f->n; i++) {
        const tg_st_entry *e = &f->t[i];
        if (e->end < e->begin || e->end - e->begin != e->numel * 4 ||
            e->end > data_len || e->ndim < 0 || e->ndim > TG_ST_MAX_DIMS)
            abort();
        total += e->end - e->begin;
    }
    if (total != data_len)
        abort();
}

/* Step 1 on len >= 8 bytes; true when the length word fits the input. */
static bool parse_in_memory(const uint8_t *buf, size_t len)
{
    uint64_t n = 0;
    for (int k = 7; k >= 0; k--)
        n = n << 8 | buf[k];
    bool fits = n <= len - 8;
    if (!fits)
        n = len - 8;
    tg_st_file f;
    uint64_t data_len = len - 8 - n;
    if (tg_st_parse_header((const char *)buf + 8, n, data_len, "fuzz", &f) ==
        TG_OK) {
        check_parsed(&f, data_len);
        tg_st_close(&f);
    } else if (f.n || f.t || f.nmeta) {
        abort(); /* failure must leave the file empty */
    }
    return fits;
}

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len)
{
    if (!ps)
        setup();
    bool fits = len < 8 || parse_in_memory(buf, len);
    if (!fits && len > 64)
        return 0; /* tg_st_open refuses it: tried on short inputs only */
    const char *path = fuzz_file_write(".safetensors", buf, len);
    tg_meta meta;
    tg_checkpoint_read_meta(path, &meta);
    tg_checkpoint_load(path, ps, adam, &meta);
    tg_checkpoint_load(path, ps, NULL, NULL);
    return 0;
}
