/* iwd-sidecar HTTP helpers: JSON responses, error bodies, query parameters and headers. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "sidecar.h"

static const char *reason_of(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
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
        return 0;
    }
    /* a known length keeps the connection open whatever the status (h2o closes it otherwise) */
    req->res.content_length = len;
    h2o_send_inline(req, body, len);
    return 0;
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

/* Decode %XX and '+' of a URL component into out (at least len + 1 bytes); IWD_ERR when malformed. */
int iwd_url_decode(const char *in, size_t len, char *out)
{
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        if (in[i] == '%') {
            unsigned char byte;
            if (i + 2 >= len + 1 || h2o_hex_decode(&byte, in + i + 1, 2) != 0 || byte == 0)
                return IWD_ERR;
            out[o++] = (char)byte;
            i += 2;
        } else {
            out[o++] = in[i] == '+' ? ' ' : in[i];
        }
    }
    out[o] = '\0';
    return IWD_OK;
}

/* The decoded value of query parameter name, in the request pool; NULL when absent or malformed. */
char *iwd_query_param(h2o_req_t *req, const char *name)
{
    const char *q, *end;
    size_t name_len = strlen(name);

    if (req->query_at == SIZE_MAX)
        return NULL;
    q = req->path.base + req->query_at + 1;
    end = req->path.base + req->path.len;
    while (q < end) {
        const char *amp = memchr(q, '&', end - q);
        const char *stop = amp != NULL ? amp : end;
        const char *eq = memchr(q, '=', stop - q);
        const char *key_end = eq != NULL ? eq : stop;

        if ((size_t)(key_end - q) == name_len && memcmp(q, name, name_len) == 0) {
            const char *value = eq != NULL ? eq + 1 : stop;
            char *out = h2o_mem_alloc_pool(&req->pool, stop - value + 1);
            if (iwd_url_decode(value, stop - value, out) != IWD_OK)
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
