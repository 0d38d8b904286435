/* The metadata of a checkpoint without its tensors: lets a program compare
 * the stored model config with its own before building the model. */
#include <stdio.h>
#include <string.h>

#include "safetensors.h"

tg_status tg_checkpoint_read_meta(const char *path, tg_meta *meta)
{
    tg_st_file f;
    tg_status st = tg_st_open(path, &f);
    if (st != TG_OK)
        return st;
    meta->n = 0;
    for (int i = 0; i < f.nmeta && st == TG_OK; i++) {
        if (meta->n == TG_META_MAX ||
            strlen(f.meta_key[i]) >= sizeof meta->key[0] ||
            strlen(f.meta_value[i]) >= sizeof meta->value[0])
            st = tg_error(TG_ERR_FORMAT, "%s: metadata '%.40s' does not fit",
                          path, f.meta_key[i]);
        else
            tg_meta_set(meta, f.meta_key[i], f.meta_value[i]);
    }
    tg_st_close(&f);
    return st;
}
