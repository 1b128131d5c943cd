/*
 * iwd-sidecar router (routes.h): a request's route found in the resources' tables, its path and query
 * decoded and bounded, its key checked, and the route run: an SQL route's arguments (path parameters, the
 * body, body members) sent as one call of the extension's SQL API, or the route's handler called.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "auth.h"
#include "config.h"
#include "iwd.h"
#include "pg.h"
#include "routes.h"

/* Every resource's routes; sidecar/openapi.yaml documents each (a test checks it). */
static const iwd_route_table_t *const tables[] = {&iwd_routes_health, &iwd_routes_provisioning, &iwd_routes_tasks,
                                                  &iwd_routes_agents, &iwd_routes_configuration, &iwd_routes_events,
                                                  &iwd_routes_webhooks, &iwd_routes_mailboxes, &iwd_routes_router,
                                                  &iwd_routes_keys, &iwd_routes_reports};
#define NTABLES (sizeof(tables) / sizeof(tables[0]))

/* More segments than any route has, the prefix's included: such a path is answered 404 undecoded. */
#define PATH_SEGMENTS_MAX 8

/*
 * The request path (before the query) split at its '/' and each segment decoded once: an escaped slash
 * (%2F) stays inside its segment and an escaped percent (%25) stays literal. A trailing '/' is ignored.
 * Returns the number of segments; -1 when a segment does not decode (400), -2 when there are too many
 * or the path does not start with '/' (404).
 */
static int split_path(h2o_req_t *req, char **segments)
{
    const char *s = req->path.base, *end = s + (req->query_at != SIZE_MAX ? req->query_at : req->path.len);
    int n = 0;

    if (s == end || *s != '/')
        return -2;
    if (end - s > 1 && end[-1] == '/')
        end--;
    while (s < end) {
        const char *seg = s + 1, *seg_end = memchr(seg, '/', end - seg);
        if (seg_end == NULL)
            seg_end = end;
        if (n == PATH_SEGMENTS_MAX)
            return -2;
        segments[n] = h2o_mem_alloc_pool(&req->pool, seg_end - seg + 1);
        if (iwd_url_decode(seg, seg_end - seg, false, segments[n]) != IWD_OK)
            return -1;
        n++;
        s = seg_end;
    }
    return n;
}

/*
 * Match the segments of a pattern ("/a/{x}": "{x}" takes any non-empty segment as the next path parameter)
 * from segment *at on, advancing *at; false when they do not match.
 */
static bool match_segments(iwd_call_t *call, const char *pattern, char *const *segments, int nsegments, int *at)
{
    const char *p = pattern;

    while (*p == '/') {
        size_t n = strcspn(p + 1, "/");
        char *seg;

        if (*at == nsegments)
            return false;
        seg = segments[(*at)++];
        if (p[1] == '{') {
            if (*seg == '\0' || call->nparams == 4)
                return false;
            call->params[call->nparams++] = seg;
        } else if (strlen(seg) != n || memcmp(seg, p + 1, n) != 0) {
            return false;
        }
        p += 1 + n;
    }
    return true;
}

/* Match the decoded path segments against the API prefix and a route pattern, collecting the parameters. */
static bool match(iwd_call_t *call, const char *pattern, char *const *segments, int nsegments)
{
    int at = 0;

    call->nparams = 0;
    return match_segments(call, IWD_API_PREFIX, segments, nsegments, &at) &&
           match_segments(call, pattern, segments, nsegments, &at) && at == nsegments;
}

/*
 * The route of a request, with its path parameters in call->params; NULL when the request cannot be
 * routed, with the status (400, 404, 405) and the message of the answer.
 */
static const iwd_route_t *resolve(iwd_call_t *call, int *status, char *message, size_t size)
{
    h2o_req_t *req = call->req;
    char *segments[PATH_SEGMENTS_MAX];
    int nsegments = split_path(req, segments);
    bool path_matched = false;

    *status = 0;
    if (nsegments == -1) {
        *status = 400;
        snprintf(message, size, "malformed path: a %% must start an escape %%XX other than %%00");
        return NULL;
    }
    for (size_t t = 0; nsegments >= 0 && t < NTABLES; t++)
        for (size_t i = 0; i < tables[t]->n; i++) {
            const iwd_route_t *r = &tables[t]->routes[i];
            if (!match(call, r->pattern, segments, nsegments))
                continue;
            path_matched = true;
            if (!h2o_memis(req->method.base, req->method.len, r->method, strlen(r->method)))
                continue;
            if (!iwd_query_valid(req)) {
                call->nparams = 0;
                *status = 400;
                snprintf(message, size, "malformed query: a %% must start an escape %%XX other than %%00");
                return NULL;
            }
            return r;
        }
    call->nparams = 0;
    *status = path_matched ? 405 : 404;
    if (path_matched)
        snprintf(message, size, "method %.*s not allowed here", (int)req->method.len, req->method.base);
    else
        snprintf(message, size, "no such route");
    return NULL;
}

char *iwd_route_body(h2o_req_t *req, bool required, const char *member, int *status, char *message, size_t size)
{
    json_error_t err;
    json_t *doc, *value;
    char *text = "{}";
    bool member_ok;

    *status = 400;
    if (req->entity.base == NULL || req->entity.len == 0) {
        if (required) {
            snprintf(message, size, "a JSON body is required");
            return NULL;
        }
        doc = json_object();
    } else if (req->entity.len > iwd_conf.max_body_bytes) {
        *status = 413;
        snprintf(message, size, "the body exceeds %zu bytes", iwd_conf.max_body_bytes);
        return NULL;
    } else if (memchr(req->entity.base, '\0', req->entity.len) != NULL) {
        /* jansson stops reading at a NUL byte: the rest would be validated by no one and cut from the SQL text */
        snprintf(message, size, "malformed JSON: the body holds a NUL byte");
        return NULL;
    } else if ((doc = json_loadb(req->entity.base, req->entity.len, JSON_DECODE_ANY, &err)) == NULL) {
        snprintf(message, size, "malformed JSON: %s (line %d, column %d)", err.text, err.line, err.column);
        return NULL;
    } else {
        text = h2o_mem_alloc_pool(&req->pool, req->entity.len + 1);
        memcpy(text, req->entity.base, req->entity.len);
        text[req->entity.len] = '\0';
    }
    value = member != NULL && json_is_object(doc) ? json_object_get(doc, member) : NULL;
    member_ok = member == NULL || (json_is_string(value) && json_string_length(value) > 0);
    json_decref(doc);
    if (!member_ok) {
        snprintf(message, size, "body member \"%s\" is required (a non-empty string)", member);
        return NULL;
    }
    *status = 0;
    return text;
}

const char *iwd_route_actor(iwd_call_t *call, char *message, size_t size)
{
    h2o_headers_t *headers = &call->req->headers;
    ssize_t i = h2o_find_header_by_str(headers, IWD_USER_HEADER, strlen(IWD_USER_HEADER), -1);
    const char *user;
    size_t len;
    char *actor;

    if (i < 0)
        return call->tenant.ccid;
    user = headers->entries[i].value.base;
    len = headers->entries[i].value.len;
    if (h2o_find_header_by_str(headers, IWD_USER_HEADER, strlen(IWD_USER_HEADER), i) >= 0) {
        snprintf(message, size, "header %s is given more than once", IWD_USER_HEADER);
        return NULL;
    }
    if (len == 0 || len > IWD_USER_BYTES_MAX || user[0] == ' ' || user[len - 1] == ' ') {
        snprintf(message, size, "header %s must be 1 to %d characters, without a leading or trailing space",
                 IWD_USER_HEADER, IWD_USER_BYTES_MAX);
        return NULL;
    }
    for (size_t c = 0; c < len; c++)
        if ((unsigned char)user[c] < ' ' || (unsigned char)user[c] > '~' || user[c] == '/') {
            snprintf(message, size, "header %s must hold printable ASCII characters other than '/' only",
                     IWD_USER_HEADER);
            return NULL;
        }
    actor = h2o_mem_alloc_pool(&call->req->pool, strlen(call->tenant.ccid) + 1 + len + 1);
    sprintf(actor, "%s/%.*s", call->tenant.ccid, (int)len, user);
    return actor;
}

/* Run an SQL route. */
static int run_sql(iwd_call_t *call, const iwd_route_t *r)
{
    const char *values[5];
    int n = 0;

    for (int i = 0; i < call->nparams; i++)
        values[n++] = call->params[i];
    if (r->body_arg) {
        char message[1024];
        int status;
        char *body = iwd_route_body(call->req, r->body_required, r->required, &status, message, sizeof(message));
        if (body == NULL)
            return iwd_respond_error(call, status, "%s", message);
        values[n++] = body;
    }
    if (r->actor_arg) {
        char message[256];
        if ((values[n] = iwd_route_actor(call, message, sizeof(message))) == NULL)
            return iwd_respond_error(call, 400, "%s", message);
        n++;
    }
    if (r->before != NULL)
        r->before(call);
    return iwd_pg_call(call, r->sql, n, values, r->success != 0 ? r->success : 200, r->on_null != 0 ? r->on_null : 404);
}

/*
 * Longest path parameter (an id or a name) and query value (a filter, possibly a comma-separated list),
 * decoded: a longer one is refused before it reaches the database, where it could only fail.
 */
#define PATH_PARAM_BYTES_MAX 256
#define QUERY_VALUE_BYTES_MAX 1024

/* Whether the path parameters and query values are within their bounds; false with the message when not. */
static bool within_length_bounds(iwd_call_t *call, char *message, size_t size)
{
    h2o_req_t *req = call->req;
    const char *q, *end;

    for (int i = 0; i < call->nparams; i++)
        if (strlen(call->params[i]) > PATH_PARAM_BYTES_MAX) {
            snprintf(message, size, "path parameter %d is longer than %d bytes", i + 1, PATH_PARAM_BYTES_MAX);
            return false;
        }
    if (req->query_at == SIZE_MAX)
        return true;
    q = req->path.base + req->query_at + 1;
    end = req->path.base + req->path.len;
    while (q < end) {
        const char *stop = memchr(q, '&', end - q), *eq, *p;
        size_t decoded = 0;
        if (stop == NULL)
            stop = end;
        eq = memchr(q, '=', stop - q);
        for (p = eq != NULL ? eq + 1 : stop; p < stop; p += *p == '%' ? 3 : 1) /* the query decodes (routing) */
            decoded++;
        if (decoded > QUERY_VALUE_BYTES_MAX) {
            int name_len = (int)(eq - q > 64 ? 64 : eq - q);
            snprintf(message, size, "query parameter \"%.*s\" is longer than %d bytes", name_len, q,
                     QUERY_VALUE_BYTES_MAX);
            return false;
        }
        q = stop + 1;
    }
    return true;
}

int iwd_route(iwd_call_t *call)
{
    char message[256];
    int status;
    const iwd_route_t *r = resolve(call, &status, message, sizeof(message));

    if (r == NULL)
        return iwd_respond_error(call, status, "%s", message);
    call->route = r->pattern;
    if (r->auth == IWD_AUTH_ADMIN && iwd_auth_admin_request(call, r->unauthorized) != IWD_OK)
        return IWD_OK;
    if ((r->auth == IWD_AUTH_READ || r->auth == IWD_AUTH_WRITE) &&
        iwd_auth_tenant(call, r->auth == IWD_AUTH_WRITE) != IWD_OK)
        return IWD_OK;
    if (!within_length_bounds(call, message, sizeof(message)))
        return iwd_respond_error(call, 400, "%s", message);
    if (r->handler != NULL)
        return r->handler(call);
    return run_sql(call, r);
}

/* The route table, for the documentation test (iwd-sidecar --routes). */
void iwd_print_routes(void)
{
    for (size_t t = 0; t < NTABLES; t++)
        for (size_t i = 0; i < tables[t]->n; i++)
            printf("%s %s%s\n", tables[t]->routes[i].method, IWD_API_PREFIX, tables[t]->routes[i].pattern);
}
