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
    {"GET", "/metrics", AUTH_NONE, on_metrics, NULL, false, false, 200, 404, NULL},
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

/* Match a path (after the prefix) against a pattern, collecting parameters; false when it does not match. */
static bool match(iwd_call_t *call, const char *pattern, const char *path, size_t path_len)
{
    const char *p = pattern, *s = path, *end = path + path_len;

    call->nparams = 0;
    while (*p != '\0') {
        if (s >= end || *s != '/' || *p != '/')
            return false;
        p++;
        s++;
        if (*p == '{') {
            const char *seg_end = memchr(s, '/', end - s);
            char *value;
            if (seg_end == NULL)
                seg_end = end;
            if (seg_end == s || call->nparams == 4)
                return false;
            value = h2o_mem_alloc_pool(&call->req->pool, seg_end - s + 1);
            if (iwd_url_decode(s, seg_end - s, value) != IWD_OK)
                return false;
            call->params[call->nparams++] = value;
            s = seg_end;
            p = strchr(p, '}') + 1;
        } else {
            size_t n = strcspn(p, "/");
            if ((size_t)(end - s) < n || memcmp(p, s, n) != 0 || (s + n < end && s[n] != '/'))
                return false;
            p += n;
            s += n;
        }
    }
    return s == end;
}

/* The request body as a NUL-terminated JSON object text ("{}" when empty); NULL after responding 4xx. */
static char *body_object(iwd_call_t *call, bool required)
{
    h2o_req_t *req = call->req;
    json_error_t err;
    json_t *doc;
    char *text;

    if (req->entity.base == NULL || req->entity.len == 0) {
        if (required) {
            iwd_respond_error(call, 400, "a JSON body is required");
            return NULL;
        }
        return "{}";
    }
    if (req->entity.len > iwd_conf.max_body_bytes) {
        iwd_respond_error(call, 413, "the body exceeds %zu bytes", iwd_conf.max_body_bytes);
        return NULL;
    }
    doc = json_loadb(req->entity.base, req->entity.len, JSON_DECODE_ANY, &err);
    if (doc == NULL) {
        iwd_respond_error(call, 400, "malformed JSON: %s (line %d, column %d)", err.text, err.line, err.column);
        return NULL;
    }
    json_decref(doc);
    text = h2o_mem_alloc_pool(&req->pool, req->entity.len + 1);
    memcpy(text, req->entity.base, req->entity.len);
    text[req->entity.len] = '\0';
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
        char *body = body_object(call, r->body_required);
        if (body == NULL)
            return 0;
        values[n++] = body;
        if (r->required != NULL) {
            json_t *doc = json_loads(body, JSON_DECODE_ANY, NULL);
            json_t *member = json_is_object(doc) ? json_object_get(doc, r->required) : NULL;
            bool ok = json_is_string(member) && json_string_length(member) > 0;
            json_decref(doc);
            if (!ok)
                return iwd_respond_error(call, 400, "body member \"%s\" is required (a non-empty string)",
                                         r->required);
        }
    }
    return iwd_pg_call(call, r->sql, n, values, r->success, r->on_null);
}

int iwd_route(iwd_call_t *call)
{
    h2o_req_t *req = call->req;
    const char *path = req->path_normalized.base;
    size_t len = req->path_normalized.len, prefix = strlen(IWD_API_PREFIX);
    bool path_matched = false;

    if (len < prefix || memcmp(path, IWD_API_PREFIX, prefix) != 0)
        return iwd_respond_error(call, 404, "no such route");
    path += prefix;
    len -= prefix;
    if (len > 1 && path[len - 1] == '/')
        len--;
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const route_t *r = &routes[i];
        if (!match(call, r->pattern, path, len))
            continue;
        path_matched = true;
        if (!h2o_memis(req->method.base, req->method.len, r->method, strlen(r->method)))
            continue;
        call->route = r->pattern;
        if (r->auth == AUTH_ADMIN && !iwd_auth_admin(call))
            return iwd_respond_error(call, 401, "provisioning needs the cluster admin key in x-api-key");
        if ((r->auth == AUTH_READ || r->auth == AUTH_WRITE) && iwd_auth_tenant(call, r->auth == AUTH_WRITE) != IWD_OK)
            return 0;
        if (r->fn != NULL)
            return r->fn(call);
        return run_sql(call, r);
    }
    call->nparams = 0;
    if (path_matched)
        return iwd_respond_error(call, 405, "method %.*s not allowed here", (int)req->method.len, req->method.base);
    return iwd_respond_error(call, 404, "no such route");
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
    char *text = iwd_metrics_render(call->thread, &len);
    char *copy = h2o_mem_alloc_pool(&call->req->pool, len);

    memcpy(copy, text, len);
    free(text);
    return iwd_respond_text(call, 200, "text/plain; version=0.0.4", copy, len);
}
