/* Loading part of a checkpoint into a model: the parameters under one name
 * prefix (a pretrained encoder into a new model, say), optionally renamed.
 * Strict like tg_checkpoint_load: every parameter in scope must be in the
 * file with its shape, every file tensor in scope must be a parameter, and
 * the model changes only once everything has been read. */
#include "checkpoint_match.h"

#include <stdlib.h>
#include <string.h>

tg_status tg_checkpoint_load_prefix(const char *path, tg_params *ps,
                                    const char *file_prefix,
                                    const char *model_prefix)
{
    if (!path || !ps || !file_prefix)
        tg_fatal("checkpoint_load_prefix", "NULL %s",
                 !path ? "path"
                 : !ps ? "parameter set"
                       : "file_prefix");
    if (!model_prefix)
        model_prefix = file_prefix;
    size_t mlen = strlen(model_prefix), numel = 0;
    for (int i = 0; i < tg_params_count(ps); i++)
        if (strncmp(tg_params_name(ps, i), model_prefix, mlen) == 0)
            numel += tg_params_get(ps, i)->size;

    tg_st_file f;
    tg_status st = tg_st_open(path, &f);
    if (st != TG_OK)
        return st;
    int matched = 0;
    st = tg_ck_verify(&f);
    if (st == TG_OK) {
        st = tg_ck_match(&f, ps, file_prefix, model_prefix, false, false,
                         &matched);
        if (matched == 0) /* whatever the file holds: a wrong prefix */
            st = tg_error(TG_ERR_ARG,
                          "%s: the model has no parameter named '%s*'", path,
                          model_prefix);
    }
    float *scratch = NULL;
    if (st == TG_OK) {
        scratch = malloc((numel ? numel : 1) * sizeof(float));
        if (!scratch)
            st = tg_error(TG_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t off = 0;
    for (int i = 0; i < tg_params_count(ps) && st == TG_OK; i++) {
        const char *name = tg_params_name(ps, i);
        if (strncmp(name, model_prefix, mlen) != 0)
            continue;
        char *file_name = tg_ck_join(file_prefix, name + mlen);
        st = tg_st_read_f32(&f, tg_st_find(&f, file_name), scratch + off);
        free(file_name);
        off += tg_params_get(ps, i)->size;
    }
    if (st == TG_OK) {
        off = 0;
        for (int i = 0; i < tg_params_count(ps); i++) {
            tg_tensor *t = tg_params_get(ps, i);
            if (strncmp(tg_params_name(ps, i), model_prefix, mlen) != 0)
                continue;
            memcpy(t->data, scratch + off, t->size * sizeof(float));
            off += t->size;
        }
    }
    free(scratch);
    tg_st_close(&f);
    return st;
}
