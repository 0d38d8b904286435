/* The last data error of each thread: one line for the caller to print. */
#include "tg_nn.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char errmsg[512];

const char *tg_errmsg(void) { return errmsg; }

tg_status tg_error(tg_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errmsg, sizeof errmsg, fmt, ap);
    va_end(ap);
    /* One line, whatever a file name or a value smuggled in: line breaks
     * as spaces, other control characters (an escape sequence from a
     * checkpoint's metadata) as '?'. */
    for (char *c = errmsg; *c; c++)
        if (*c == '\n' || *c == '\r')
            *c = ' ';
        else if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = '?';
    return status;
}
