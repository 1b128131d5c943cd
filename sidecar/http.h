/*
 * iwd-sidecar HTTP: a request in flight (iwd_call_t) and its answer. Every response is JSON but the metrics'
 * text; every error is {"status":{"code":N,"message":"..."}} (iwd.h). Answering counts and logs the request.
 */
#ifndef IWD_HTTP_H
#define IWD_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include <h2o.h>

#include "iwd.h"
#include "tenant.h"

struct iwd_thread;

/* A request being served, in the request's pool: it may be answered later, from the loop (an SQL call). */
typedef struct iwd_call {
    h2o_req_t *req;
    struct iwd_thread *thread;
    iwd_tenant_t tenant;
    bool has_tenant;
    const char *route;   /* the matched route pattern, for metrics and logs */
    char *params[4];     /* path parameters, NUL-terminated, in the request pool */
    int nparams;
    int status;
    double start_ms;
} iwd_call_t;

/* Answer with a body of this content type; IWD_OK. */
int iwd_respond_text(iwd_call_t *call, int status, const char *content_type, const char *body, size_t len);
/* Answer with a JSON body; IWD_OK. */
int iwd_respond_json(iwd_call_t *call, int status, const char *body, size_t len);
/* Answer an error, the message formatted from fmt; IWD_OK (the request is answered). */
int iwd_respond_error(iwd_call_t *call, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The decoded value of query parameter name (the first one), in the request pool; NULL when absent. */
char *iwd_query_param(h2o_req_t *req, const char *name);
/*
 * Whether every query parameter's name is one of names (na of them) or of more (nm; NULL when none); when
 * not, the first unknown one's name (at most 64 bytes of it) in *bad and *bad_len, for the route's 400.
 */
bool iwd_query_names_known(h2o_req_t *req, const char *const *names, size_t na, const char *const *more, size_t nm,
                           const char **bad, int *bad_len);
/* Whether every name and value of the query string decodes (routing answers 400 when not). */
bool iwd_query_valid(h2o_req_t *req);
/* The value of request header name (lower case), NUL-terminated in the request pool; NULL when absent. */
char *iwd_header(h2o_req_t *req, const char *name);
/* Decode one URL component into out (len + 1 bytes); IWD_ERR on a bad escape or a NUL byte. */
int iwd_url_decode(const char *in, size_t len, bool plus_is_space, char *out);

#endif
