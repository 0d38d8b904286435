/* Private: a writer and a strict reader of safetensors files.
 *
 * Layout: u64 little-endian N, then N bytes of JSON, then the data. The JSON
 * is one object; each key but "__metadata__" names a tensor
 *   {"dtype":"F32","shape":[d0,...],"data_offsets":[begin,end]}
 * with byte offsets relative to the end of the header. "__metadata__" maps
 * strings to strings. The reader accepts only what a conforming writer makes:
 * N <= 100 MB, valid UTF-8, F32 only, offsets contiguous from 0 with no gap
 * or overlap, end - begin = numel * 4, file size exactly 8 + N + last end. */
#ifndef TG_SAFETENSORS_H
#define TG_SAFETENSORS_H

#include "tg_nn.h"

#include <stdio.h>

/* Internal to the library: not exported from libtapegrad.so. */
#pragma GCC visibility push(hidden)

#define TG_ST_MAX_HEADER 100000000ull /* 100 MB, the official reader's cap */
#define TG_ST_MAX_DIMS 8

typedef struct tg_st_entry {
    char *name;
    int ndim;
    uint64_t shape[TG_ST_MAX_DIMS];
    uint64_t numel;
    uint64_t begin, end; /* bytes, relative to the data section */
} tg_st_entry;

typedef struct tg_st_file {
    const char *path; /* for messages */
    FILE *f;
    uint64_t data_start; /* 8 + N */
    int n;
    tg_st_entry *t;        /* in header order */
    tg_st_entry **by_name; /* t sorted by name: tg_st_find's index */
    int nmeta;
    char **meta_key, **meta_value;
} tg_st_file;

/* Parses and validates a header of len bytes (the JSON, after the length
 * word) describing a data section of data_len bytes. what names the source
 * in messages. On failure out is left empty. Public for fuzzing. */
tg_status tg_st_parse_header(const char *json, size_t len, uint64_t data_len,
                             const char *what, tg_st_file *out);
/* Opens path and validates header and file size; nothing else is read. */
tg_status tg_st_open(const char *path, tg_st_file *out);
/* The entry of that name or NULL: a binary search of by_name (a file may
 * hold millions of tensors, and loading looks up one name per tensor). */
const tg_st_entry *tg_st_find(const tg_st_file *f, const char *name);
/* The entry's numel floats, converted from little-endian, into dst. */
tg_status tg_st_read_f32(tg_st_file *f, const tg_st_entry *e, float *dst);
void tg_st_close(tg_st_file *f);

typedef struct tg_st_tensor {
    const char *name;
    int ndim;
    const int *shape;
    const float *data; /* product(shape) floats */
} tg_st_tensor;

/* Writes a whole file to out (path names it in messages): metadata first
 * (nmeta key/value pairs), then the tensors in the order given, the header
 * padded with spaces to a multiple of 8 bytes. TG_ERR_IO on a write error,
 * TG_ERR_ARG for a name or value that is not valid UTF-8. */
tg_status tg_st_write(FILE *out, const char *path, int n, const tg_st_tensor *t,
                      int nmeta, const char *const *meta_key,
                      const char *const *meta_value);

/* Helpers shared by the reader and the writer. */
bool tg_st_utf8_valid(const unsigned char *s, size_t n);
void tg_st_swap_le32(void *p, size_t n); /* in place; no-op on LE hosts */

#pragma GCC visibility pop

#endif
