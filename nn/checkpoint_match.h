/* Private to nn: how a checkpoint file's tensors correspond to a model's. */
#ifndef TG_CHECKPOINT_MATCH_H
#define TG_CHECKPOINT_MATCH_H

#include "safetensors.h"

/* Model parameters whose names start with model_prefix correspond to file
 * tensors named file_prefix + the rest of the name (and, when want_m /
 * want_v, to "optim.m." / "optim.v." + that name). In scope in the file:
 * every tensor whose name, after an "optim.m." or "optim.v." is taken off,
 * starts with file_prefix. Returns TG_OK when every parameter in scope has
 * its tensors with the same shapes and every file tensor in scope belongs
 * to a parameter; otherwise TG_ERR_MISMATCH, naming the most informative
 * difference first (a missing tensor, then a shape, then an extra tensor)
 * with the count of each kind. *matched (may be NULL) gets the number of
 * parameters in scope. */
tg_status tg_ck_match(const tg_st_file *f, const tg_params *ps,
                      const char *file_prefix, const char *model_prefix,
                      bool want_m, bool want_v, int *matched);

/* prefix + name, malloc'd (aborts when out of memory). */
char *tg_ck_join(const char *prefix, const char *name);

bool tg_ck_same_shape(const tg_st_entry *e, const tg_tensor *t);
const char *tg_ck_entry_shape(const tg_st_entry *e, char *buf, size_t n);

/* A checksum of a file's tensor data, in its metadata under this key (the
 * library's: a caller's entry of the name is replaced, and it is not
 * copied into a loaded tg_meta): a flipped bit in a weight or in the
 * optimizer state is found at load instead of training another model. A
 * file without it (PyTorch's, or from before) loads unchecked. */
#define TG_CK_CHECKSUM_KEY "tapegrad.checksum"

/* The checksum of tensors t[0..n), each tensor's data in the order of the
 * names (so that a file laid out in another order by another writer,
 * metadata kept, still checks): "fnv4:" and 16 hex digits into out (at
 * least 32 bytes). */
void tg_ck_checksum_tensors(int n, const tg_st_tensor *t, char *out);
/* TG_OK when f has no checksum or its data section matches it, else
 * TG_ERR_FORMAT ("damaged"). */
tg_status tg_ck_verify(tg_st_file *f);

#endif
