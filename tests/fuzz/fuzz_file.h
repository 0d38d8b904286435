/* One temporary file per fuzzing process, rewritten for each input, for
 * readers that take a path. Removed at exit. */
#ifndef FUZZ_FILE_H
#define FUZZ_FILE_H

#include <stddef.h>
#include <stdint.h>

/* Writes len bytes at buf to the file (its name ends in suffix; the suffix
 * of the first call is kept) and returns its path. Aborts on I/O errors:
 * those are the harness's, not the reader's. */
const char *fuzz_file_write(const char *suffix, const uint8_t *buf, size_t len);

#endif
