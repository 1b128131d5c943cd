/*
 * iwd-sidecar routing: the table of every route under /iwd/v3. Most routes are one call of the
 * extension's SQL API whose jsonb result is the response body; the table says which SQL, which
 * arguments (path parameters, the body, body members) and which statuses.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sidecar.h"

enum auth_kind { AUTH_NONE, AUTH_ADMIN, AUTH_READ, AUTH_WRITE };

typedef int (*route_fn)(iwd_call_t *call);

typedef struct route {
    const char *method;
    const char *pattern;   /* after /iwd/v3; "{x}" matches one segment */
    enum auth_kind auth;
    route_fn fn;           /* custom handler, or NULL for an SQL route */
    const char *sql;       /* $n arguments are text: path parameters first, then the body when body_arg */
    bool body_arg;         /* pass the body (a JSON object; "{}" when empty) as the last argument */
    bool body_required;
    int success;           /* status of a non-NULL result */
    int on_null;           /* status of a NULL result */
    const char *required;  /* a body member that must be a non-empty string */
} route_t;

static int on_health_live(iwd_call_t *call);
static int on_health_ready(iwd_call_t *call);
static int on_metrics(iwd_call_t *call);

/* Every route; sidecar/openapi.yaml documents each (a test checks it). */
static const route_t routes[] = {
    {"GET", "/health/live", AUTH_NONE, on_health_live, NULL, false, false, 200, 404, NULL},
    {"GET", "/health/ready", AUTH_NONE, on_health_ready, NULL, false, false, 200, 404, NULL},
    /* without a key on the metrics listener (IWD_METRICS_PORT) only: it names every tenant */
    {"GET", "/metrics", AUTH_ADMIN, on_metrics, NULL, false, false, 200, 404, NULL},
    {"POST", "/provisioning", AUTH_ADMIN, iwd_on_provisioning_save, NULL, false, true, 200, 404, NULL},
    {"PUT", "/provisioning", AUTH_ADMIN, iwd_on_provisioning_save, NULL, false, true, 200, 404, NULL},
    {"DELETE", "/provisioning/{ccid}", AUTH_ADMIN, iwd_on_provisioning_delete, NULL, false, false, 200, 404, NULL},

    {"GET", "/tasks", AUTH_READ, iwd_on_tasks_list, NULL, false, false, 200, 404, NULL},
    {"POST", "/tasks", AUTH_WRITE, NULL, "SELECT iwd.create_task($1::jsonb)", true, true, 201, 500, NULL},
    {"POST", "/tasks/bulk", AUTH_WRITE, NULL, "SELECT iwd.create_tasks($1::jsonb)", true, true, 201, 500, NULL},
    {"GET", "/tasks/{id}", AUTH_READ, NULL, "SELECT iwd.get_task($1::bigint)", false, false, 200, 404, NULL},
    {"PATCH", "/tasks/{id}", AUTH_WRITE, NULL, "SELECT iwd.update_task($1::bigint, $2::jsonb)", true, true, 200, 404, NULL},
    {"GET", "/tasks/{id}/history", AUTH_READ, NULL,
     "SELECT CASE WHEN iwd.get_task($1::bigint) IS NOT NULL THEN"
     " (SELECT coalesce(jsonb_agg(h), '[]') FROM iwd.task_history($1::bigint) h) END",
     false, false, 200, 404, NULL},
    {"POST", "/tasks/{id}/hold", AUTH_WRITE, NULL, "SELECT iwd.hold_task($1::bigint, $2::jsonb->>'reason')", true,
     false, 200, 404, NULL},
    {"POST", "/tasks/{id}/resume", AUTH_WRITE, NULL, "SELECT iwd.resume_task($1::bigint)", false, false, 200, 404, NULL},
    {"POST", "/tasks/{id}/cancel", AUTH_WRITE, NULL, "SELECT iwd.cancel_task($1::bigint, $2::jsonb->>'reason')",
     true, false, 200, 404, NULL},
    {"POST", "/tasks/{id}/complete", AUTH_WRITE, NULL,
     "SELECT iwd.complete_task($1::bigint, $2::jsonb->>'agent')", true, false, 200, 404, NULL},
    {"POST", "/tasks/{id}/reject", AUTH_WRITE, NULL,
     "SELECT iwd.reject_task($1::bigint, $2::jsonb->>'agent', $2::jsonb->>'reason')", true, false, 200, 404, NULL},
    {"POST", "/tasks/{id}/restart", AUTH_WRITE, NULL, "SELECT iwd.restart_task($1::bigint)", false, false, 200, 404, NULL},
    {"POST", "/tasks/{id}/accept", AUTH_WRITE, NULL,
     "SELECT iwd.accept_task($1::bigint, $2::jsonb->>'agent')", true, true, 200, 404, "agent"},
    {"POST", "/tasks/{id}/reprioritize", AUTH_WRITE, NULL,
     "SELECT iwd.reprioritize_task($1::bigint, ($2::jsonb->>'priority')::int, ($2::jsonb->>'businessValue')::int)",
     true, true, 200, 404, NULL},

    {"GET", "/agents", AUTH_READ, NULL, "SELECT iwd.list_agents()", false, false, 200, 404, NULL},
    {"GET", "/agents/{id}", AUTH_READ, NULL, "SELECT iwd.get_agent($1)", false, false, 200, 404, NULL},
    {"PUT", "/agents/{id}", AUTH_WRITE, NULL,
     "SELECT iwd.upsert_agent($2::jsonb || jsonb_build_object('id', $1::text))", true, true, 200, 404, NULL},
    {"DELETE", "/agents/{id}", AUTH_WRITE, NULL, "SELECT iwd.delete_agent($1)", false, false, 200, 404, NULL},
    {"POST", "/agents/{id}/state", AUTH_WRITE, NULL,
     "SELECT iwd.set_agent_state($1, $2::jsonb->>'state')", true, true, 200, 404, "state"},
    {"POST", "/agents/{id}/next", AUTH_WRITE, NULL,
     "SELECT iwd.next_task($1, coalesce(($2::jsonb->>'reserveSeconds')::int, 30))", true, false, 200, 204, NULL},

    {"GET", "/departments", AUTH_READ, NULL, "SELECT iwd.list_departments()", false, false, 200, 404, NULL},
    {"GET", "/departments/{name}", AUTH_READ, NULL, "SELECT iwd.get_department($1)", false, false, 200, 404, NULL},
    {"PUT", "/departments/{name}", AUTH_WRITE, NULL,
     "SELECT iwd.upsert_department($2::jsonb || jsonb_build_object('name', $1::text))", true, true, 200, 404, NULL},
    {"DELETE", "/departments/{name}", AUTH_WRITE, NULL, "SELECT iwd.delete_department($1)", false, false, 200, 404, NULL},
    {"GET", "/processes", AUTH_READ, NULL, "SELECT iwd.list_processes()", false, false, 200, 404, NULL},
    {"GET", "/processes/{name}", AUTH_READ, NULL, "SELECT iwd.get_process($1)", false, false, 200, 404, NULL},
    {"PUT", "/processes/{name}", AUTH_WRITE, NULL,
     "SELECT iwd.upsert_process($2::jsonb || jsonb_build_object('name', $1::text))", true, true, 200, 404, NULL},
    {"DELETE", "/processes/{name}", AUTH_WRITE, NULL, "SELECT iwd.delete_process($1)", false, false, 200, 404, NULL},
    {"GET", "/categories", AUTH_READ, NULL, "SELECT iwd.list_categories()", false, false, 200, 404, NULL},
    {"GET", "/categories/{name}", AUTH_READ, NULL, "SELECT iwd.get_category($1)", false, false, 200, 404, NULL},
    {"PUT", "/categories/{name}", AUTH_WRITE, NULL,
     "SELECT iwd.upsert_category($2::jsonb || jsonb_build_object('name', $1::text))", true, true, 200, 404, NULL},
    {"DELETE", "/categories/{name}", AUTH_WRITE, NULL, "SELECT iwd.delete_category($1)", false, false, 200, 404, NULL},
    {"GET", "/calendars", AUTH_READ, NULL, "SELECT iwd.list_calendars()", false, false, 200, 404, NULL},
    {"GET", "/calendars/{name}", AUTH_READ, NULL, "SELECT iwd.get_calendar($1)", false, false, 200, 404, NULL},
    {"PUT", "/calendars/{name}", AUTH_WRITE, NULL,
     "SELECT iwd.upsert_calendar($2::jsonb || jsonb_build_object('name', $1::text))", true, true, 200, 404, NULL},
    {"DELETE", "/calendars/{name}", AUTH_WRITE, NULL, "SELECT iwd.delete_calendar($1)", false, false, 200, 404, NULL},
    {"GET", "/rules", AUTH_READ, NULL, "SELECT iwd.list_rules()", false, false, 200, 404, NULL},
    {"GET", "/rules/{kind}", AUTH_READ, NULL, "SELECT iwd.list_rules($1)", false, false, 200, 404, NULL},
    {"GET", "/rules/{kind}/{name}", AUTH_READ, NULL, "SELECT iwd.get_rule($1, $2)", false, false, 200, 404, NULL},
    {"PUT", "/rules/{kind}/{name}", AUTH_WRITE, NULL,
     "SELECT iwd.upsert_rule($3::jsonb || jsonb_build_object('kind', $1::text, 'name', $2::text))", true, true, 200,
     404, NULL},
    {"DELETE", "/rules/{kind}/{name}", AUTH_WRITE, NULL, "SELECT iwd.delete_rule($1, $2)", false, false, 200, 404, NULL},
    {"GET", "/queue/stats", AUTH_READ, NULL, "SELECT iwd.queue_stats()", false, false, 200, 404, NULL},
};

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
static const route_t *resolve(iwd_call_t *call, int *status, char *message, size_t size)
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
    for (size_t i = 0; nsegments >= 0 && i < sizeof(routes) / sizeof(routes[0]); i++) {
        const route_t *r = &routes[i];
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

/*
 * The request body as a NUL-terminated JSON text for SQL ("{}" when empty and not required), holding
 * member (when not NULL) as a non-empty string; NULL when refused, with the status (400, 413) and the
 * message of the answer.
 */
static char *body_text(h2o_req_t *req, bool required, const char *member, int *status, char *message, size_t size)
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

/* Run an SQL route. */
static int run_sql(iwd_call_t *call, const route_t *r)
{
    const char *values[5];
    int n = 0;

    for (int i = 0; i < call->nparams; i++)
        values[n++] = call->params[i];
    if (r->body_arg) {
        char message[1024];
        int status;
        char *body = body_text(call->req, r->body_required, r->required, &status, message, sizeof(message));
        if (body == NULL)
            return iwd_respond_error(call, status, "%s", message);
        values[n++] = body;
    }
    return iwd_pg_call(call, r->sql, n, values, r->success, r->on_null);
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
    const route_t *r = resolve(call, &status, message, sizeof(message));

    if (r == NULL)
        return iwd_respond_error(call, status, "%s", message);
    call->route = r->pattern;
    if (r->auth == AUTH_ADMIN &&
        iwd_auth_admin_request(call, r->fn == on_metrics
                                         ? "metrics need the cluster admin key in x-api-key on this port;"
                                           " the metrics port (IWD_METRICS_PORT) serves them without one"
                                         : "provisioning needs the cluster admin key in x-api-key") != IWD_OK)
        return 0;
    if ((r->auth == AUTH_READ || r->auth == AUTH_WRITE) && iwd_auth_tenant(call, r->auth == AUTH_WRITE) != IWD_OK)
        return 0;
    if (!within_length_bounds(call, message, sizeof(message)))
        return iwd_respond_error(call, 400, "%s", message);
    if (r->fn != NULL)
        return r->fn(call);
    return run_sql(call, r);
}

/* The route table, for the documentation test (iwd-sidecar --routes). */
void iwd_print_routes(void)
{
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        printf("%s %s%s\n", routes[i].method, IWD_API_PREFIX, routes[i].pattern);
}

static int on_health_live(iwd_call_t *call)
{
    static const char body[] = "{\"status\":\"live\"}";
    return iwd_respond_json(call, 200, body, sizeof(body) - 1);
}

static int on_health_ready(iwd_call_t *call)
{
    static const char body[] = "{\"status\":\"ready\"}";
    PGconn *control = iwd_pg_control(call->thread);
    PGresult *res;
    bool ok;

    if (control == NULL)
        return iwd_respond_error(call, 503, "the control database is not reachable");
    res = iwd_pg_exec(control, "control", "ready", "SELECT 1", 0, NULL);
    ok = PQresultStatus(res) == PGRES_TUPLES_OK;
    PQclear(res);
    if (!ok)
        return iwd_respond_error(call, 503, "the control database is not answering");
    return iwd_respond_json(call, 200, body, sizeof(body) - 1);
}

static int on_metrics(iwd_call_t *call)
{
    size_t len;
    char *text = iwd_metrics_render(&len);
    char *copy = h2o_mem_alloc_pool(&call->req->pool, len);

    memcpy(copy, text, len);
    free(text);
    return iwd_respond_text(call, 200, "text/plain; version=0.0.4", copy, len);
}
