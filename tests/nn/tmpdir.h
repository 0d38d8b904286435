/* A fresh temporary folder per test group: setup makes it, teardown removes
 * it with everything in it, in_dir(name) is "<folder>/<name>" (one static
 * buffer: copy it before the next call). Include once per test program. */
#ifndef TESTS_NN_TMPDIR_H
#define TESTS_NN_TMPDIR_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char dir[64];
static char path_buf[256];

static const char *in_dir(const char *name)
{
    snprintf(path_buf, sizeof path_buf, "%s/%s", dir, name);
    return path_buf;
}

static int setup(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/tg_test_XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

#endif
