/* iwd-sidecar HTTP (http.h): JSON responses, error bodies, query parameters and headers. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <jansson.h>

#include "clock.h"
#include "http.h"
#include "log.h"
#include "metrics.h"

static const char *reason_of(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}

/*
 * Whether an HTTP/1 client closed its connection before its answer: h2o does not read a connection while
 * its request is served, so the end of stream waits in the socket (a peek sees it). HTTP/2 clients cancel
 * a stream instead, and their calls are disposed unanswered (main.c).
 */
static bool client_gone(h2o_req_t *req)
{
    h2o_socket_t *sock;
    char byte;

    if (req->version >= 0x200 || req->conn->callbacks->get_socket == NULL ||
        (sock = req->conn->callbacks->get_socket(req->conn)) == NULL)
        return false;
    return recv(h2o_socket_get_fd(sock), &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

/* Count and log a request as it is answered. */
static void account(iwd_call_t *call, int status)
{
    h2o_req_t *req = call->req;
    double elapsed = iwd_now_ms_precise() - call->start_ms;
    char method[16], path[512];

    snprintf(method, sizeof(method), "%.*s", (int)req->method.len, req->method.base);
    snprintf(path, sizeof(path), "%.*s", (int)req->path_normalized.len, req->path_normalized.base);
    iwd_metrics_request(method, call->route, status, call->has_tenant ? call->tenant.ccid : NULL, elapsed);
    if (client_gone(req))
        iwd_metrics_request_closed(method, call->route, call->has_tenant ? call->tenant.ccid : NULL);
    iwd_log_request(call->has_tenant ? call->tenant.ccid : NULL, method, path, status, elapsed);
}

int iwd_respond_text(iwd_call_t *call, int status, const char *content_type, const char *body, size_t len)
{
    h2o_req_t *req = call->req;

    account(call, status);

    call->status = status;
    req->res.status = status;
    req->res.reason = reason_of(status);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type, strlen(content_type));
    if (status == 204) {
        h2o_send_inline(req, "", 0);
        return IWD_OK;
    }
    /* a known length keeps the connection open whatever the status (h2o closes it otherwise) */
    req->res.content_length = len;
    h2o_send_inline(req, body, len);
    return IWD_OK;
}

int iwd_respond_json(iwd_call_t *call, int status, const char *body, size_t len)
{
    return iwd_respond_text(call, status, "application/json", body, len);
}

int iwd_respond_error(iwd_call_t *call, int status, const char *fmt, ...)
{
    char message[1024];
    va_list ap;
    json_t *body;
    char *text;
    int rc;

    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    body = json_pack("{s:{s:i,s:s}}", "status", "code", status, "message", message);
    if (body == NULL) /* a message that is not UTF-8 */
        body = json_pack("{s:{s:i,s:s}}", "status", "code", status, "message", reason_of(status));
    text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
    rc = iwd_respond_json(call, status, text, strlen(text));
    free(text);
    json_decref(body);
    return rc;
}

/*
 * Decode the %XX escapes of one URL component into out (at least len + 1 bytes, NUL-terminated). A query
 * component also reads '+' as a space; a path segment keeps it. IWD_ERR when an escape is truncated or not
 * hexadecimal, or when the value would hold a NUL byte (raw or %00): it would end the C string early.
 */
int iwd_url_decode(const char *in, size_t len, bool plus_is_space, char *out)
{
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        if (in[i] == '%') {
            unsigned char byte;
            if (len - i < 3 || h2o_hex_decode(&byte, in + i + 1, 2) != 0 || byte == 0)
                return IWD_ERR;
            out[o++] = (char)byte;
            i += 2;
        } else if (in[i] == '\0') {
            return IWD_ERR;
        } else {
            out[o++] = plus_is_space && in[i] == '+' ? ' ' : in[i];
        }
    }
    out[o] = '\0';
    return IWD_OK;
}

/* The query string of the request (after '?'), empty when it has none. */
static h2o_iovec_t query_of(h2o_req_t *req)
{
    if (req->query_at == SIZE_MAX)
        return h2o_iovec_init("", 0);
    return h2o_iovec_init(req->path.base + req->query_at + 1, req->path.len - req->query_at - 1);
}

/*
 * Whether every name and value of the query string decodes (iwd_url_decode). Routing answers 400 when
 * not, so that iwd_query_param's NULL only ever means "absent".
 */
bool iwd_query_valid(h2o_req_t *req)
{
    h2o_iovec_t query = query_of(req);
    const char *q = query.base, *end = query.base + query.len;
    char *scratch = h2o_mem_alloc_pool(&req->pool, query.len + 1);

    while (q < end) {
        const char *amp = memchr(q, '&', end - q);
        const char *stop = amp != NULL ? amp : end;
        const char *eq = memchr(q, '=', stop - q);

        if (eq != NULL && iwd_url_decode(eq + 1, stop - eq - 1, true, scratch) != IWD_OK)
            return false;
        if (iwd_url_decode(q, (eq != NULL ? eq : stop) - q, true, scratch) != IWD_OK)
            return false;
        q = stop + 1;
    }
    return true;
}

/* Whether name (len bytes) is one of the n names. */
static bool name_in(const char *name, size_t len, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(names[i]) == len && memcmp(names[i], name, len) == 0)
            return true;
    return false;
}

bool iwd_query_names_known(h2o_req_t *req, const char *const *names, size_t na, const char *const *more, size_t nm,
                           const char **bad, int *bad_len)
{
    const char *p, *end;

    if (req->query_at == SIZE_MAX)
        return true;
    p = req->path.base + req->query_at + 1;
    end = req->path.base + req->path.len;
    while (p < end) {
        const char *amp = memchr(p, '&', end - p), *stop = amp != NULL ? amp : end;
        const char *eq = memchr(p, '=', stop - p), *key_end = eq != NULL ? eq : stop;
        size_t len = key_end - p;

        if (len != 0 && !name_in(p, len, names, na) && !name_in(p, len, more, nm)) {
            *bad = p;
            *bad_len = len > 64 ? 64 : (int)len;
            return false;
        }
        p = stop + 1;
    }
    return true;
}

/*
 * The decoded value of query parameter name (the first one given), in the request pool; NULL when absent
 * or malformed (routing refuses a malformed query before any handler runs, see iwd_query_valid).
 */
char *iwd_query_param(h2o_req_t *req, const char *name)
{
    h2o_iovec_t query = query_of(req);
    const char *q = query.base, *end = query.base + query.len;
    size_t name_len = strlen(name);

    while (q < end) {
        const char *amp = memchr(q, '&', end - q);
        const char *stop = amp != NULL ? amp : end;
        const char *eq = memchr(q, '=', stop - q);
        const char *key_end = eq != NULL ? eq : stop;

        if ((size_t)(key_end - q) == name_len && memcmp(q, name, name_len) == 0) {
            const char *value = eq != NULL ? eq + 1 : stop;
            char *out = h2o_mem_alloc_pool(&req->pool, stop - value + 1);
            if (iwd_url_decode(value, stop - value, true, out) != IWD_OK)
                return NULL;
            return out;
        }
        q = stop + 1;
    }
    return NULL;
}

/* The value of request header name (lower case), NUL-terminated in the request pool; NULL when absent. */
char *iwd_header(h2o_req_t *req, const char *name)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, name, strlen(name), -1);
    char *out;

    if (i < 0)
        return NULL;
    out = h2o_mem_alloc_pool(&req->pool, req->headers.entries[i].value.len + 1);
    memcpy(out, req->headers.entries[i].value.base, req->headers.entries[i].value.len);
    out[req->headers.entries[i].value.len] = '\0';
    return out;
}
