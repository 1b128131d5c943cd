/* iwd-sidecar text: a growing, NUL-terminated text buffer (the metrics' exposition is written into one). */
#ifndef IWD_TEXT_H
#define IWD_TEXT_H

#include <stddef.h>

typedef struct iwd_text {
    char *buf; /* malloc'd, NUL-terminated; the caller frees it */
    size_t len, cap;
} iwd_text_t;

/* An empty text with room for cap bytes. */
iwd_text_t iwd_text_new(size_t cap);

/* Append the formatted text, growing the buffer as needed. */
void iwd_text_put(iwd_text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
