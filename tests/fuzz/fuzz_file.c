#include "fuzz_file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[4096];

static void remove_file(void)
{
    if (path[0])
        unlink(path);
}

const char *fuzz_file_write(const char *suffix, const uint8_t *buf, size_t len)
{
    if (!path[0]) {
        const char *dir = getenv("TMPDIR");
        if (!dir || !*dir)
            dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(path, sizeof path, "%s/tg-fuzz-%ld%s", dir, (long)getpid(),
                 suffix);
        atexit(remove_file);
    }
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(buf, 1, len, f) != len) || fclose(f) != 0) {
        perror(path);
        abort();
    }
    return path;
}
