/* Private: the IDX reader of nn/idx.c on a memory buffer, for fuzzing. */
#ifndef TG_IDX_H
#define TG_IDX_H

#include "tg_nn.h"

#include <stddef.h>

/* Internal to the library: not exported from libtapegrad.so. */
#pragma GCC visibility push(hidden)

/* As tg_idx_read on the len bytes at buf (raw IDX, never gzip); what names
 * the buffer in messages. */
tg_status tg_idx_read_mem(const void *buf, size_t len, const char *what,
                          int *ndim, int dims[3], uint8_t **data);

#pragma GCC visibility pop

#endif
