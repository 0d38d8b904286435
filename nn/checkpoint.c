/* Checkpoints: a parameter set, optimizer state and string metadata in one
 * safetensors file. Tensors: each parameter under its name, then
 * "optim.m.<name>" and (Adam, AdamW, RMSprop) "optim.v.<name>". Metadata:
 * the caller's entries plus, with an optimizer, "optim.kind" ("sgd",
 * "adam", "adamw", "rmsprop"), "optim.step" and "optim.settings"
 * (momentum, nesterov, betas, eps, alpha, weight decay: loading refuses an
 * optimizer set otherwise), and always the checksum (TG_CK_CHECKSUM_KEY).
 * Saving is atomic (temporary file, fsync, rename, fsync of the directory);
 * loading checks the whole file against the model before changing it. */
#include "checkpoint_match.h"
#include "safetensors.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KIND_KEY "optim.kind"
#define STEP_KEY "optim.step"
#define SETTINGS_KEY "optim.settings"

/* The optimizer's settings as one entry, "momentum=0.9 nesterov=0 ...":
 * loading into an optimizer set otherwise (an SGD saved with momentum 0
 * into one with 0.9) would go on with another update rule. */
enum { N_SETTINGS = 7 };
static const char *const setting_name[N_SETTINGS] = {
    "momentum", "nesterov", "beta1", "beta2", "eps", "alpha", "weight_decay"};

static void settings_of(const tg_optim *opt, float v[N_SETTINGS])
{
    const float s[N_SETTINGS] = {opt->momentum,    opt->nesterov ? 1.0f : 0.0f,
                                 opt->beta1,       opt->beta2,
                                 opt->eps,         opt->alpha,
                                 opt->weight_decay};
    memcpy(v, s, sizeof s);
}

static void settings_text(const tg_optim *opt, char *buf, size_t size)
{
    float v[N_SETTINGS];
    settings_of(opt, v);
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < N_SETTINGS && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%s=%.9g",
                                 i ? " " : "", setting_name[i], (double)v[i]);
}

/* The file's settings (when it has them: files from before had not)
 * against opt's. */
static tg_status check_settings(const char *path, const char *text,
                                const tg_optim *opt)
{
    if (!text)
        return TG_OK;
    float want[N_SETTINGS];
    settings_of(opt, want);
    const char *p = text;
    for (int i = 0; i < N_SETTINGS; i++) {
        size_t len = strlen(setting_name[i]);
        char *end = NULL;
        double v = 0.0;
        if (strncmp(p, setting_name[i], len) == 0 && p[len] == '=')
            v = strtod(p + len + 1, &end);
        if (!end || end == p + len + 1 || (*end != ' ' && *end != '\0') ||
            (*end == '\0') != (i == N_SETTINGS - 1))
            return tg_error(TG_ERR_FORMAT,
                            "%s: metadata '" SETTINGS_KEY "' is '%.120s', not "
                            "the optimizer settings this library writes",
                            path, text);
        if ((float)v != want[i] && !(isnan(v) && isnan(want[i])))
            return tg_error(TG_ERR_MISMATCH,
                            "%s: the optimizer's %s is %.9g in the file but "
                            "%.9g here (create it with the file's settings, "
                            "or load without the optimizer)",
                            path, setting_name[i], v, (double)want[i]);
        p = end + (*end == ' ');
    }
    return TG_OK;
}

/* ---- saving -------------------------------------------------------------- */

static const char *kind_name(tg_optim_kind k)
{
    return k == TG_OPTIM_ADAM      ? "adam"
           : k == TG_OPTIM_ADAMW   ? "adamw"
           : k == TG_OPTIM_RMSPROP ? "rmsprop"
                                   : "sgd";
}

/* Writes the tensors and metadata through tg_atomic_open / commit: an
 * interrupted or failed save leaves the old file as it was. */
static tg_status write_atomic(const char *path, int n, const tg_st_tensor *t,
                              int nmeta, const char **keys, const char **values)
{
    tg_atomic_file a;
    tg_status st = tg_atomic_open(&a, path);
    if (st != TG_OK)
        return st;
    st = tg_st_write(a.f, path, n, t, nmeta, keys, values);
    if (st == TG_OK)
        return tg_atomic_commit(&a, true);
    char why[512]; /* the writer's message, not commit's */
    snprintf(why, sizeof why, "%s", tg_errmsg());
    tg_atomic_commit(&a, false);
    return tg_error(st, "%s", why);
}

/* A key the library writes itself: the checksum, and with an optimizer
 * its three entries. */
static bool library_key(const char *key, bool opt)
{
    return strcmp(key, TG_CK_CHECKSUM_KEY) == 0 ||
           (opt && (strcmp(key, KIND_KEY) == 0 || strcmp(key, STEP_KEY) == 0 ||
                    strcmp(key, SETTINGS_KEY) == 0));
}

/* A caller's metadata that a load can read back: with the optimizer's
 * three entries at most TG_META_MAX, and no key a load would refuse (the
 * library's "tapegrad." prefix, but for the checksum's own, which is
 * replaced; or one bit from the checksum's). */
static tg_status check_caller_meta(const char *path, const tg_meta *meta,
                                   bool opt)
{
    int nmeta = 0, own = opt ? 3 : 0;
    const char *reserved = NULL; /* a caller's key a load would refuse */
    for (int i = 0; meta && i < meta->n; i++) {
        if (!library_key(meta->key[i], opt))
            nmeta++;
        if (!reserved && ((strncmp(meta->key[i], "tapegrad.", 9) == 0 &&
                           strcmp(meta->key[i], TG_CK_CHECKSUM_KEY) != 0) ||
                          tg_ck_near_checksum_key(meta->key[i])))
            reserved = meta->key[i];
    }
    if (reserved && tg_ck_near_checksum_key(reserved))
        return tg_error(TG_ERR_ARG,
                        "%s: not saved: metadata key '%.60s' is one bit "
                        "from the library's '%s' (a load would take the "
                        "file for damaged)",
                        path, reserved, TG_CK_CHECKSUM_KEY);
    if (reserved)
        return tg_error(TG_ERR_ARG,
                        "%s: not saved: metadata key '%.60s': the "
                        "'tapegrad.' prefix is the library's",
                        path, reserved);
    if (nmeta + own > TG_META_MAX)
        return tg_error(TG_ERR_ARG,
                        "%s: not saved: %d metadata entries and the "
                        "optimizer's %d, at most %d (TG_META_MAX) can be "
                        "loaded",
                        path, nmeta, own, TG_META_MAX);
    return TG_OK;
}

/* The tensors of a save and the names it made for the optimizer state. */
static void free_tensor_list(tg_st_tensor *t, char **owned, int n)
{
    for (int i = 0; i < n; i++)
        free(owned[i]);
    free(owned);
    free(t);
}

tg_status tg_checkpoint_save(const char *path, tg_params *ps,
                             const tg_optim *opt, const tg_meta *meta)
{
    if (!path || !ps)
        tg_fatal("checkpoint_save", "NULL %s", path ? "parameter set" : "path");
    if (opt && opt->params != ps)
        tg_fatal("checkpoint_save",
                 "optimizer belongs to another parameter set");
    tg_params_seal(ps);
    int np = tg_params_count(ps);
    const float *m = opt ? opt->m : NULL, *v = opt ? opt->v : NULL;
    int n = np * (1 + (m != NULL) + (v != NULL));
    tg_st_tensor *t = calloc((size_t)(n ? n : 1), sizeof *t);
    char **owned = calloc((size_t)(n ? n : 1), sizeof *owned);
    const char *keys[TG_META_MAX + 4], *values[TG_META_MAX + 4];
    char step[32], settings[256], checksum[32];
    if (!t || !owned)
        tg_out_of_memory("checkpoint_save", "out of memory");

    size_t off = 0;
    int k = 0;
    for (int i = 0; i < np; i++) {
        const tg_tensor *p = tg_params_get(ps, i);
        const char *name = tg_params_name(ps, i);
        t[k++] = (tg_st_tensor){name, p->ndim, p->shape, p->data};
        if (m) {
            owned[k] = tg_ck_join("optim.m.", name);
            t[k] = (tg_st_tensor){owned[k], p->ndim, p->shape, m + off};
            k++;
        }
        if (v) {
            owned[k] = tg_ck_join("optim.v.", name);
            t[k] = (tg_st_tensor){owned[k], p->ndim, p->shape, v + off};
            k++;
        }
        off += p->size;
    }
    tg_status st = check_caller_meta(path, meta, opt != NULL);
    if (st != TG_OK) {
        free_tensor_list(t, owned, n);
        return st;
    }
    int nmeta = 0;
    for (int i = 0; meta && i < meta->n; i++) {
        if (library_key(meta->key[i], opt != NULL))
            continue; /* the library's own values win */
        keys[nmeta] = meta->key[i];
        values[nmeta++] = meta->value[i];
    }
    if (opt) {
        snprintf(step, sizeof step, "%" PRId64, opt->step);
        keys[nmeta] = KIND_KEY;
        values[nmeta++] = kind_name(opt->kind);
        keys[nmeta] = STEP_KEY;
        values[nmeta++] = step;
        settings_text(opt, settings, sizeof settings);
        keys[nmeta] = SETTINGS_KEY;
        values[nmeta++] = settings;
    }
    tg_ck_checksum(n, t, nmeta, keys, values, checksum); /* over all else */
    keys[nmeta] = TG_CK_CHECKSUM_KEY;
    values[nmeta++] = checksum;
    st = write_atomic(path, n, t, nmeta, keys, values);
    free_tensor_list(t, owned, n);
    return st;
}

/* ---- loading ------------------------------------------------------------- */

static const char *file_meta(const tg_st_file *f, const char *key)
{
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta_key[i], key) == 0)
            return f->meta_value[i];
    return NULL;
}

/* The entry called "<prefix><name>" with t's shape, or an error. */
static tg_status expect(const tg_st_file *f, const char *prefix,
                        const char *name, const tg_tensor *t,
                        const tg_st_entry **out)
{
    char *full = tg_ck_join(prefix, name);
    const tg_st_entry *e = tg_st_find(f, full);
    tg_status st = TG_OK;
    char fs[256], ms[64];
    if (!e)
        st = tg_error(TG_ERR_MISMATCH, "%s: tensor '%s' missing from the file",
                      f->path, full);
    else if (!tg_ck_same_shape(e, t))
        st = tg_error(TG_ERR_MISMATCH,
                      "%s: tensor '%s' has shape %s in the "
                      "file but %s in the model",
                      f->path, full, tg_ck_entry_shape(e, fs, sizeof fs),
                      tg_shape_str(t, ms));
    free(full);
    *out = e;
    return st;
}

static tg_status check_meta_fits(const tg_st_file *f)
{
    const tg_meta *m = NULL;
    int n = 0; /* the checksum is not copied out */
    for (int i = 0; i < f->nmeta; i++)
        n += strcmp(f->meta_key[i], TG_CK_CHECKSUM_KEY) != 0;
    if (n > TG_META_MAX)
        return tg_error(TG_ERR_FORMAT,
                        "%s: %d metadata entries, at most %d supported",
                        f->path, n, TG_META_MAX);
    for (int i = 0; i < f->nmeta; i++)
        if (strlen(f->meta_key[i]) >= sizeof m->key[0] ||
            strlen(f->meta_value[i]) >= sizeof m->value[0])
            return tg_error(TG_ERR_FORMAT, "%s: metadata '%.40s' too long",
                            f->path, f->meta_key[i]);
    return TG_OK;
}

/* The file's metadata into meta, after check_meta_fits. */
static void copy_meta(const tg_st_file *f, tg_meta *meta)
{
    memset(meta, 0, sizeof *meta);
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta_key[i], TG_CK_CHECKSUM_KEY) != 0)
            tg_meta_set(meta, f->meta_key[i], f->meta_value[i]);
}

tg_status tg_checkpoint_read_meta(const char *path, tg_meta *meta)
{
    if (!path || !meta)
        tg_fatal("checkpoint_read_meta", "NULL %s", path ? "metadata" : "path");
    tg_st_file f;
    tg_status st = tg_st_open(path, &f);
    if (st != TG_OK)
        return st;
    st = check_meta_fits(&f);
    if (st == TG_OK) /* the metadata are trusted only once verified */
        st = tg_ck_verify(&f);
    if (st == TG_OK)
        copy_meta(&f, meta);
    tg_st_close(&f);
    return st;
}

/* The file's optimizer entries against opt: its kind, settings, and its
 * step (into *step) in 0..TG_OPTIM_MAX_STEP. */
static tg_status read_optim_meta(const tg_st_file *f, const tg_optim *opt,
                                 int64_t *step)
{
    const char *path = f->path;
    tg_status st;
    const char *kind = file_meta(f, KIND_KEY);
    if (!kind)
        st = tg_error(TG_ERR_MISMATCH, "%s: no optimizer state in the file",
                      path);
    else if (strcmp(kind, kind_name(opt->kind)) != 0)
        st = tg_error(TG_ERR_MISMATCH,
                      "%s: optimizer is '%.16s' in the "
                      "file but '%s' in the model",
                      path, kind, kind_name(opt->kind));
    else
        st = tg_ck_parse_int(path, STEP_KEY, file_meta(f, STEP_KEY), step);
    if (st == TG_OK && (*step < 0 || *step > TG_OPTIM_MAX_STEP))
        st = tg_error(TG_ERR_FORMAT,
                      "%s: optimizer step %" PRId64 " is outside 0..%" PRId64,
                      path, *step, TG_OPTIM_MAX_STEP);
    if (st == TG_OK)
        st = check_settings(path, file_meta(f, SETTINGS_KEY), opt);
    return st;
}

/* The optimizer state read into scratch (slots 1.. of numel floats each,
 * after the weights' slot 0) is finite (a NaN or Inf in it made every
 * weight it touches NaN at the first step after a resume), and opt->v is a
 * running mean of squares (Adam's second moment, RMSprop's): a negative one
 * is no state an optimizer wrote, and its square root made that step NaN
 * too. The weights are the caller's to check (tg_vae_load does): a
 * diverged model may be saved on purpose. */
static tg_status check_optim_state(const char *path, const tg_params *ps,
                                   const float *scratch, bool want_m,
                                   bool want_v)
{
    size_t numel = tg_params_numel(ps);
    int np = tg_params_count(ps);
    tg_status st = TG_OK;
    for (int k = 1; k <= want_m + want_v && st == TG_OK; k++) {
        bool is_v = want_v && k == want_m + want_v;
        size_t off = 0;
        for (int i = 0; i < np && st == TG_OK; i++) {
            const float *x = scratch + numel * (size_t)k + off;
            size_t n = tg_params_get(ps, i)->size;
            for (size_t j = 0; j < n && st == TG_OK; j++)
                if (!isfinite(x[j]) || (is_v && x[j] < 0.0f))
                    st = tg_error(TG_ERR_FORMAT,
                                  "%s: tensor 'optim.%c.%s' holds %g, but "
                                  "optimizer state is finite%s",
                                  path, is_v ? 'v' : 'm', tg_params_name(ps, i),
                                  (double)x[j],
                                  is_v ? " and a second moment never negative"
                                       : "");
            off += n;
        }
    }
    return st;
}

tg_status tg_checkpoint_load(const char *path, tg_params *ps, tg_optim *opt,
                             tg_meta *meta)
{
    if (!path || !ps)
        tg_fatal("checkpoint_load", "NULL %s", path ? "parameter set" : "path");
    if (opt && opt->params != ps)
        tg_fatal("checkpoint_load",
                 "optimizer belongs to another parameter set");
    tg_params_seal(ps);
    tg_st_file f;
    tg_status st = tg_st_open(path, &f);
    if (st != TG_OK)
        return st;

    int np = tg_params_count(ps);
    size_t numel = tg_params_numel(ps);
    bool want_m = opt && opt->m, want_v = opt && opt->v;
    int64_t step = 0;
    st = tg_ck_verify(&f);
    if (meta && st == TG_OK)
        st = check_meta_fits(&f);
    if (st == TG_OK && opt)
        st = read_optim_meta(&f, opt, &step);
    /* Every parameter (and its state) in the file, nothing else. */
    if (st == TG_OK)
        st = tg_ck_match(&f, ps, "", "", want_m, want_v, NULL);

    /* Values go to scratch first: the model changes only once all is read. */
    int per = 1 + want_m + want_v;
    float *scratch = NULL;
    if (st == TG_OK) {
        scratch = malloc((numel ? numel : 1) * (size_t)per * sizeof(float));
        if (!scratch)
            st = tg_error(TG_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t off = 0;
    for (int i = 0; i < np && st == TG_OK; i++) {
        const tg_tensor *t = tg_params_get(ps, i);
        const char *name = tg_params_name(ps, i);
        const char *prefixes[3] = {"", "optim.m.", "optim.v."};
        bool wanted[3] = {true, want_m, want_v};
        for (int k = 0, slot = 0; k < 3 && st == TG_OK; k++) {
            const tg_st_entry *e;
            if (!wanted[k])
                continue;
            st = expect(&f, prefixes[k], name, t, &e);
            if (st == TG_OK)
                st = tg_st_read_f32(&f, e, scratch + numel * slot + off);
            slot++;
        }
        off += t->size;
    }
    if (st == TG_OK)
        st = check_optim_state(path, ps, scratch, want_m, want_v);
    if (st == TG_OK) {
        memcpy(tg_params_data(ps), scratch, numel * sizeof(float));
        if (want_m)
            memcpy(opt->m, scratch + numel, numel * sizeof(float));
        if (want_v)
            memcpy(opt->v, scratch + numel * (1 + want_m),
                   numel * sizeof(float));
        if (opt)
            opt->step = step;
        if (meta)
            copy_meta(&f, meta);
    }
    free(scratch);
    tg_st_close(&f);
    return st;
}
