/* Private to nn: what the checkpoint files (checkpoint.c,
 * checkpoint_subset.c, meta.c) share: how a file's tensors correspond to a
 * model's, the checksum, and a few helpers. */
#ifndef TG_CHECKPOINT_MATCH_H
#define TG_CHECKPOINT_MATCH_H

#include "safetensors.h"

/* Internal to the library: not exported from libtapegrad.so. */
#pragma GCC visibility push(hidden)

/* Model parameters whose names start with model_prefix correspond to file
 * tensors named file_prefix + the rest of the name, and to their optimizer
 * state "optim.m." / "optim.v." + that name (which must be there when
 * want_m / want_v, and may be absent otherwise). In scope in the file:
 * every tensor whose name, after an "optim.m." or "optim.v." is taken off,
 * starts with file_prefix. Returns TG_OK when every parameter in scope has
 * its tensors, all of its shape, and every file tensor in scope is one of
 * them (so "optim.m." + a name that is no parameter's, even that of
 * another tensor of the file, is an extra tensor); otherwise
 * TG_ERR_MISMATCH, naming the most informative difference first (a
 * missing tensor, then a shape, then an extra tensor) with the count of
 * each kind, counted per parameter name. *matched (may be NULL) gets the
 * number of parameters in scope. */
tg_status tg_ck_match(const tg_st_file *f, const tg_params *ps,
                      const char *file_prefix, const char *model_prefix,
                      bool want_m, bool want_v, int *matched);

/* The integer metadata value s of key (NULL: missing), decimal, within
 * int64_t; else TG_ERR_FORMAT naming what (a path, or "checkpoint") and
 * key. In meta.c, for tg_meta_get_int and a loaded file's optimizer step. */
tg_status tg_ck_parse_int(const char *what, const char *key, const char *s,
                          int64_t *value);

/* prefix + name, malloc'd (aborts when out of memory). */
char *tg_ck_join(const char *prefix, const char *name);

bool tg_ck_same_shape(const tg_st_entry *e, const tg_tensor *t);
const char *tg_ck_entry_shape(const tg_st_entry *e, char *buf, size_t n);

/* A checksum of a file's tensors (names, shapes, data) and metadata, in its
 * metadata under this key (the library's: a caller's entry of the name is
 * replaced, and it is not copied into a loaded tg_meta): a flipped bit in
 * a weight, in the optimizer state or in a metadata value (an epoch, a
 * likelihood) is found at load instead of training another model. A file
 * without it (PyTorch's, or from before) loads unchecked. The "tapegrad."
 * key prefix is the library's: a save refuses a caller's key with it, and
 * a load refuses a file with one it does not know, or with a key one bit
 * from the checksum's (a damaged key name would have turned it off). */
#define TG_CK_CHECKSUM_KEY "tapegrad.checksum"

/* The checksum of tensors t[0..n) and of the nmeta metadata entries (the
 * checksum's own skipped), each in name order (so that a file laid out in
 * another order by another writer still checks): "fnv4m:" and 16 hex
 * digits into out (at least 32 bytes). */
void tg_ck_checksum(int n, const tg_st_tensor *t, int nmeta,
                    const char *const *keys, const char *const *values,
                    char *out);
/* Whether key is one bit from TG_CK_CHECKSUM_KEY (in any byte, the
 * "tapegrad." prefix too): a load refuses such a key as damaged, so a save
 * refuses a caller's. */
bool tg_ck_near_checksum_key(const char *key);
/* TG_OK when f has no checksum or its tensors and metadata match it (its
 * tensor data alone for the first version's "fnv4:"), else TG_ERR_FORMAT
 * ("damaged"); TG_ERR_FORMAT too for a "tapegrad." key it does not know. */
tg_status tg_ck_verify(tg_st_file *f);

#pragma GCC visibility pop

#endif
