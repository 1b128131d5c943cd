/*
 * Shared by the sidecar's libFuzzer targets: a request as h2o hands it to the sidecar (raw path with its
 * query, method, body), built in exactly sized heap buffers so that AddressSanitizer sees any read past the
 * client's bytes, and the check that turns a broken property into a crash libFuzzer keeps.
 */
#ifndef IWD_FUZZ_H
#define IWD_FUZZ_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "http.h"
#include "iwd.h"

/* A property of the parser that must hold for every input; a failure aborts (libFuzzer saves the input). */
#define FUZZ_REQUIRE(cond, ...)                                                                                    \
    do {                                                                                                           \
        if (!(cond)) {                                                                                             \
            fprintf(stderr, "property violated at %s:%d: %s: ", __FILE__, __LINE__, #cond);                       \
            fprintf(stderr, __VA_ARGS__);                                                                          \
            fputc('\n', stderr);                                                                                   \
            abort();                                                                                               \
        }                                                                                                          \
    } while (0)

/* A copy of len bytes in a heap block of exactly len bytes (one byte when len is 0, never read). */
static inline char *fuzz_copy(const void *bytes, size_t len)
{
    char *copy = malloc(len > 0 ? len : 1);

    if (copy == NULL)
        abort();
    memcpy(copy, bytes, len);
    return copy;
}

/* A request with this method and raw path (query included, as h2o keeps it in req->path). */
static inline void fuzz_request_init(h2o_req_t *req, char *method, size_t method_len, char *path, size_t path_len)
{
    size_t *norm_indexes = NULL;

    memset(req, 0, sizeof(*req));
    h2o_mem_init_pool(&req->pool);
    req->method = h2o_iovec_init(method, method_len);
    req->path = h2o_iovec_init(path, path_len);
    /* as h2o does it: query_at is the first '?' of the raw path */
    req->path_normalized = h2o_url_normalize_path(&req->pool, path, path_len, &req->query_at, &norm_indexes);
}

static inline void fuzz_request_release(h2o_req_t *req)
{
    h2o_mem_clear_pool(&req->pool);
}

/* The percent-encoding of every byte outside RFC 3986's unreserved set, NUL-terminated, malloc'd. */
static inline char *fuzz_percent_encode(const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = malloc(len * 3 + 1), *o = out;

    if (out == NULL)
        abort();
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
            c == '_' || c == '~') {
            *o++ = (char)c;
        } else {
            *o++ = '%';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    *o = '\0';
    return out;
}

static inline int fuzz_hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * The reference percent-decoder, written independently of http.c: RFC 3986 decoding that refuses what would
 * cut a C string short (a NUL byte, raw or %00); the decoded length, or -1 when refused.
 */
static inline long fuzz_reference_decode(const char *in, size_t len, bool plus_is_space, char *out)
{
    size_t o = 0, i = 0;

    while (i < len) {
        unsigned char c = (unsigned char)in[i];
        if (c == '%') {
            int hi = i + 1 < len ? fuzz_hex_value((unsigned char)in[i + 1]) : -1;
            int lo = i + 2 < len ? fuzz_hex_value((unsigned char)in[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return -1;
            out[o++] = (char)(hi * 16 + lo);
            i += 3;
            continue;
        }
        if (c == '\0')
            return -1;
        out[o++] = plus_is_space && c == '+' ? ' ' : (char)c;
        i++;
    }
    return (long)o;
}

#endif
