/*
 * iwd-sidecar static files (static.h): the Workload Manager's embedded files served with their content type,
 * a strong ETag (SHA-256 of the bytes) for revalidation and the headers that confine the page: a
 * Content-Security-Policy that allows scripts, styles and requests from the sidecar only and no inline
 * script, no framing, no MIME sniffing, no referrer.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include "log.h"
#include "static.h"

/*
 * The table from gen/ui_assets.c, weak so that a link without it (the fuzzers') still builds: the page is
 * then answered 404.
 */
extern const iwd_ui_file_t iwd_ui_files[] __attribute__((weak));
extern const size_t iwd_ui_nfiles __attribute__((weak));

/* Longest path served; a longer one is refused (414) before any lookup. */
#define UI_PATH_BYTES_MAX 256
/* The most files the page may have, and the ETag: a quoted prefix of the SHA-256 in hex. */
#define UI_FILES_MAX 64
#define ETAG_HEX_CHARS 32

static const char security_policy[] = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                      "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                                      "frame-ancestors 'none'";

static char etags[UI_FILES_MAX][ETAG_HEX_CHARS + 3];

static size_t file_count(void)
{
    if (&iwd_ui_nfiles == NULL || iwd_ui_files == NULL)
        return 0;
    return iwd_ui_nfiles < UI_FILES_MAX ? iwd_ui_nfiles : UI_FILES_MAX;
}

int iwd_static_init(void)
{
    if (&iwd_ui_nfiles != NULL && iwd_ui_nfiles > UI_FILES_MAX)
        iwd_log(IWD_LOG_WARN, "the page has more files than are served", "%zu of %zu", (size_t)UI_FILES_MAX,
                iwd_ui_nfiles);
    for (size_t i = 0; i < file_count(); i++) {
        unsigned char digest[EVP_MAX_MD_SIZE];
        unsigned int len;

        if (EVP_Digest(iwd_ui_files[i].bytes, iwd_ui_files[i].len, digest, &len, EVP_sha256(), NULL) != 1) {
            iwd_log(IWD_LOG_ERROR, "cannot digest a file of the page", "%s", iwd_ui_files[i].path);
            return IWD_ERR;
        }
        etags[i][0] = '"';
        for (int b = 0; b < ETAG_HEX_CHARS / 2; b++)
            snprintf(&etags[i][1 + 2 * b], 3, "%02x", digest[b]);
        etags[i][ETAG_HEX_CHARS + 1] = '"';
        etags[i][ETAG_HEX_CHARS + 2] = '\0';
    }
    return IWD_OK;
}

/* The content type of a file name, by its extension. */
static const char *content_type_of(const char *path)
{
    static const struct {
        const char *extension, *type;
    } types[] = {{".html", "text/html; charset=utf-8"},   {".js", "text/javascript; charset=utf-8"},
                 {".css", "text/css; charset=utf-8"},     {".svg", "image/svg+xml"},
                 {".json", "application/json"},           {".png", "image/png"},
                 {".ico", "image/x-icon"},                {".txt", "text/plain; charset=utf-8"}};
    size_t n = strlen(path);

    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        size_t e = strlen(types[i].extension);
        if (n > e && strcmp(path + n - e, types[i].extension) == 0)
            return types[i].type;
    }
    return "application/octet-stream";
}

/* The path of the request, before its query. */
static h2o_iovec_t request_path(h2o_req_t *req)
{
    return h2o_iovec_init(req->path.base, req->query_at != SIZE_MAX ? req->query_at : req->path.len);
}

bool iwd_static_path(h2o_req_t *req)
{
    h2o_iovec_t path = request_path(req);
    size_t n = strlen(IWD_UI_PREFIX);

    return path.len >= n && memcmp(path.base, IWD_UI_PREFIX, n) == 0 && (path.len == n || path.base[n] == '/');
}

/* Whether header name of the request lists etag (If-None-Match: a list, or "*"). */
static bool etag_listed(h2o_req_t *req, const char *etag)
{
    char *value = iwd_header(req, "if-none-match");

    return value != NULL && (strstr(value, etag) != NULL || strcmp(value, "*") == 0);
}

/* Add the headers every answer of the page carries. */
static void add_page_headers(h2o_req_t *req)
{
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("content-security-policy"), 0, NULL,
                          security_policy, strlen(security_policy));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-content-type-options"), 0, NULL,
                          H2O_STRLIT("nosniff"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-frame-options"), 0, NULL,
                          H2O_STRLIT("DENY"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("referrer-policy"), 0, NULL,
                          H2O_STRLIT("no-referrer"));
}

int iwd_static_serve(iwd_call_t *call)
{
    h2o_req_t *req = call->req;
    h2o_iovec_t path = request_path(req);
    size_t prefix = strlen(IWD_UI_PREFIX);
    char name[UI_PATH_BYTES_MAX + 1];
    bool head = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));

    call->route = IWD_UI_PREFIX "/";
    add_page_headers(req);
    if (!head && !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")))
        return iwd_respond_error(call, 405, "method %.*s not allowed here", (int)req->method.len, req->method.base);
    if (path.len - prefix > UI_PATH_BYTES_MAX)
        return iwd_respond_error(call, 414, "the path is longer than %d bytes", UI_PATH_BYTES_MAX);
    if (path.len == prefix) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_LOCATION, NULL, H2O_STRLIT(IWD_UI_PREFIX "/"));
        return iwd_respond_text(call, 301, "text/plain; charset=utf-8", "", 0);
    }
    /* the raw path, not decoded: the files' names need no escape, so an escaped one is no file of ours */
    if (path.len == prefix + 1)
        snprintf(name, sizeof(name), "/index.html");
    else
        snprintf(name, sizeof(name), "%.*s", (int)(path.len - prefix), path.base + prefix);
    for (size_t i = 0; i < file_count(); i++) {
        const iwd_ui_file_t *file = &iwd_ui_files[i];
        const char *type;

        if (strcmp(file->path, name) != 0)
            continue;
        type = content_type_of(file->path);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ETAG, NULL, etags[i], strlen(etags[i]));
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
        if (etag_listed(req, etags[i]))
            return iwd_respond_text(call, 304, type, "", 0);
        return iwd_respond_text(call, 200, type, (const char *)file->bytes, file->len);
    }
    if (file_count() == 0)
        return iwd_respond_error(call, 404, "this build of iwd-sidecar has no Workload Manager page");
    return iwd_respond_error(call, 404, "no such file of the Workload Manager page");
}
