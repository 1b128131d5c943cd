/* iwd-sidecar text buffers (text.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "text.h"

iwd_text_t iwd_text_new(size_t cap)
{
    iwd_text_t t = {.buf = malloc(cap), .len = 0, .cap = cap};

    if (t.buf == NULL)
        abort();
    t.buf[0] = '\0';
    return t;
}

void iwd_text_put(iwd_text_t *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if ((size_t)n < t->cap - t->len)
            break;
        t->cap = t->cap * 2 + n;
        t->buf = realloc(t->buf, t->cap);
    }
    t->len += n;
}
