/*
 * iwd-sidecar routes of tasks: capture, the lifecycle actions, history, the queue's statistics and
 * GET /iwd/v3/tasks, the universal queue (filters, keyset pagination with limit + cursor) or, with q=,
 * full-text search, which answers {"tasks": [...], "nextCursor": "<id>" | null}, and POST /tasks/batch, a
 * supervisor's action on many tasks in one SQL call.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "pg.h"
#include "routes.h"

#define DEFAULT_LIMIT "50"

static const char *const filter_params[] = {"department", "process", "category", "queue", "status", "mediaType",
                                            "customerSegment", "capturePoint", "assignedTo"};

static int on_tasks_list(iwd_call_t *call)
{
    h2o_req_t *req = call->req;
    json_t *filter = json_object();
    char *q = NULL, *limit = DEFAULT_LIMIT, *cursor, *text, *overdue;
    const char *values[3];
    int rc;

    /* every parameter must be known */
    if (req->query_at != SIZE_MAX) {
        const char *p = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
        while (p < end) {
            const char *amp = memchr(p, '&', end - p), *stop = amp ? amp : end;
            const char *eq = memchr(p, '=', stop - p), *key_end = eq ? eq : stop;
            bool known = false;
            static const char *const others[] = {"q", "limit", "cursor", "overdue"};
            for (size_t i = 0; i < sizeof(filter_params) / sizeof(*filter_params); i++)
                known |= strlen(filter_params[i]) == (size_t)(key_end - p) &&
                         memcmp(filter_params[i], p, key_end - p) == 0;
            for (size_t i = 0; i < sizeof(others) / sizeof(*others); i++)
                known |= strlen(others[i]) == (size_t)(key_end - p) && memcmp(others[i], p, key_end - p) == 0;
            if (!known && key_end > p) {
                json_decref(filter);
                return iwd_respond_error(call, 400, "unknown query parameter \"%.*s\"", (int)(key_end - p), p);
            }
            p = stop + 1;
        }
    }
    for (size_t i = 0; i < sizeof(filter_params) / sizeof(*filter_params); i++) {
        char *v = iwd_query_param(req, filter_params[i]);
        if (v == NULL)
            continue;
        if (strchr(v, ',') != NULL) {
            json_t *list = json_array();
            char *save = NULL;
            for (char *item = strtok_r(v, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save))
                json_array_append_new(list, json_string(item));
            json_object_set_new(filter, filter_params[i], list);
        } else {
            json_object_set_new(filter, filter_params[i], json_string(v));
        }
    }
    if ((overdue = iwd_query_param(req, "overdue")) != NULL) {
        if (strcmp(overdue, "true") != 0 && strcmp(overdue, "false") != 0) {
            json_decref(filter);
            return iwd_respond_error(call, 400, "query parameter \"overdue\" must be true or false");
        }
        json_object_set_new(filter, "overdue", json_boolean(strcmp(overdue, "true") == 0));
    }
    if ((cursor = iwd_query_param(req, "cursor")) != NULL) {
        char *end;
        long long id = strtoll(cursor, &end, 10);
        if (*cursor == '\0' || *end != '\0' || id <= 0) {
            json_decref(filter);
            return iwd_respond_error(call, 400, "query parameter \"cursor\" must be a task id from nextCursor");
        }
        json_object_set_new(filter, "afterId", json_integer(id));
    }
    if (iwd_query_param(req, "limit") != NULL) {
        char *end;
        limit = iwd_query_param(req, "limit");
        long n = strtol(limit, &end, 10);
        if (*limit == '\0' || *end != '\0' || n < 1 || n > 1000) {
            json_decref(filter);
            return iwd_respond_error(call, 400, "query parameter \"limit\" must be between 1 and 1000");
        }
    }
    q = iwd_query_param(req, "q");
    text = json_dumps(filter, JSON_COMPACT);
    json_decref(filter);
    if (q != NULL) {
        values[0] = q;
        values[1] = text;
        values[2] = limit;
        rc = iwd_pg_call(call,
                         "SELECT jsonb_build_object('tasks', coalesce(jsonb_agg(t), '[]'), 'nextCursor', NULL)"
                         " FROM iwd.search_tasks($1, $2::jsonb, $3::int) t",
                         3, values, 200, 500);
    } else {
        values[0] = text;
        values[1] = limit;
        rc = iwd_pg_call(call,
                         "WITH page AS (SELECT t, row_number() OVER () AS n FROM iwd.queue($1::jsonb, $2::int) t)"
                         " SELECT jsonb_build_object('tasks', coalesce(jsonb_agg(t ORDER BY n), '[]'),"
                         " 'nextCursor', CASE WHEN count(*) = $2::int THEN (array_agg(t->>'id' ORDER BY n DESC))[1]"
                         " END) FROM page",
                         2, values, 200, 500);
    }
    free(text);
    return rc;
}

/* the request members of POST /tasks/batch */
static const char *const batch_members[] = {"action", "ids", "filter", "q", "args", "dryRun"};

/*
 * POST /tasks/batch {"action", "ids" | "filter" and/or "q", "args", "dryRun"}: one call of iwd.batch_action
 * (or, with a full-text search q, iwd.batch_search_action), the caller (iwd_route_actor) recorded as the actor of
 * every event; the SQL function checks the values.
 */
static int on_tasks_batch(iwd_call_t *call)
{
    h2o_req_t *req = call->req;
    json_error_t err;
    json_t *body, *args, *member;
    const char *key, *values[5], *actor;
    char message[256], *ids = NULL, *filter = NULL, *args_text;
    int rc;

    if ((actor = iwd_route_actor(call, message, sizeof(message))) == NULL)
        return iwd_respond_error(call, 400, "%s", message);
    if (req->entity.base == NULL || req->entity.len == 0)
        return iwd_respond_error(call, 400, "a JSON body is required");
    if (memchr(req->entity.base, '\0', req->entity.len) != NULL)
        return iwd_respond_error(call, 400, "malformed JSON: the body holds a NUL byte");
    if ((body = json_loadb(req->entity.base, req->entity.len, 0, &err)) == NULL)
        return iwd_respond_error(call, 400, "malformed JSON: %s (line %d, column %d)", err.text, err.line, err.column);
    json_object_foreach(body, key, member) {
        bool known = false;
        for (size_t i = 0; i < sizeof(batch_members) / sizeof(*batch_members); i++)
            known |= strcmp(key, batch_members[i]) == 0;
        if (!known) {
            rc = iwd_respond_error(call, 400, "unknown key \"%.64s\" in the batch action", key);
            json_decref(body);
            return rc;
        }
    }
    if (!json_is_string(json_object_get(body, "action")) ||
        ((member = json_object_get(body, "ids")) != NULL && !json_is_array(member) && !json_is_null(member)) ||
        ((member = json_object_get(body, "filter")) != NULL && !json_is_object(member) && !json_is_null(member)) ||
        ((args = json_object_get(body, "args")) != NULL && !json_is_object(args) && !json_is_null(args)) ||
        ((member = json_object_get(body, "dryRun")) != NULL && !json_is_boolean(member))) {
        json_decref(body);
        return iwd_respond_error(call, 400, "a batch action is {\"action\": string, \"ids\": [task id, ...] or "
                                            "\"filter\": {...}, \"args\": {...}, \"dryRun\": boolean}");
    }
    if ((member = json_object_get(body, "q")) != NULL && !json_is_string(member) && !json_is_null(member)) {
        json_decref(body);
        return iwd_respond_error(call, 400, "\"q\" must be a string (a full-text search, as GET /tasks' q)");
    }
    if (json_is_string(json_object_get(body, "q")) && json_is_array(json_object_get(body, "ids"))) {
        json_decref(body);
        return iwd_respond_error(call, 400, "a batch action takes either \"ids\" or a search \"q\" (with a filter)");
    }
    if ((member = json_object_get(body, "ids")) != NULL && json_is_array(member)) {
        size_t i;
        json_t *id;
        json_array_foreach(member, i, id) {
            if (!json_is_integer(id)) {
                json_decref(body);
                return iwd_respond_error(call, 400, "\"ids\" must hold task ids (integers)");
            }
        }
        ids = json_dumps(member, JSON_COMPACT);
    }
    if ((member = json_object_get(body, "filter")) != NULL && json_is_object(member))
        filter = json_dumps(member, JSON_COMPACT);
    args = json_is_object(args) ? json_deep_copy(args) : json_object();
    if (json_object_get(body, "dryRun") != NULL)
        json_object_set(args, "dryRun", json_object_get(body, "dryRun"));
    args_text = json_dumps(args, JSON_COMPACT);
    json_decref(args);
    values[0] = json_string_value(json_object_get(body, "action"));
    values[1] = ids;
    values[2] = filter;
    values[3] = actor;
    values[4] = args_text;
    if (json_is_string(json_object_get(body, "q"))) {
        values[1] = json_string_value(json_object_get(body, "q"));
        rc = iwd_pg_call(call, "SELECT iwd.batch_search_action($1, $2, $3::jsonb, $4, $5::jsonb)", 5, values, 200,
                         500);
    } else {
        rc = iwd_pg_call(call,
                         "SELECT iwd.batch_action($1, CASE WHEN $2::jsonb IS NOT NULL THEN"
                         " ARRAY(SELECT jsonb_array_elements_text($2::jsonb)::bigint) END, $3::jsonb, $4, $5::jsonb)",
                         5, values, 200, 500);
    }
    free(ids);
    free(filter);
    free(args_text);
    json_decref(body);
    return rc;
}

/*
 * POST /tasks/{id}/complete[?next=true] {"agent"}: iwd.complete_task, the caller (iwd_route_actor) the actor
 * of a supervisor's completion. With next=true (an agent's loop in one round trip) the agent's next task is
 * reserved in the same transaction: {"completed": task, "next": task | null}.
 */
static int on_task_complete(iwd_call_t *call)
{
    const char *next = iwd_query_param(call->req, "next"), *values[4], *actor;
    char message[1024];
    int status;
    char *body;

    if (next != NULL && strcmp(next, "true") != 0 && strcmp(next, "false") != 0)
        return iwd_respond_error(call, 400, "query parameter \"next\" must be true or false");
    if ((body = iwd_route_body(call->req, false, NULL, &status, message, sizeof(message))) == NULL)
        return iwd_respond_error(call, status, "%s", message);
    if ((actor = iwd_route_actor(call, message, sizeof(message))) == NULL)
        return iwd_respond_error(call, 400, "%s", message);
    values[0] = call->params[0];
    values[1] = body;
    values[2] = actor;
    values[3] = next != NULL ? next : "false";
    return iwd_pg_call(call, "SELECT iwd.complete_task($1::bigint, $2::jsonb->>'agent', $3, next => $4::boolean)", 4,
                       values, 200, 404);
}

static const iwd_route_t routes[] = {
    {.method = "GET", .pattern = "/tasks", .auth = IWD_AUTH_READ, .handler = on_tasks_list},
    {.method = "POST", .pattern = "/tasks", .auth = IWD_AUTH_WRITE, .sql = "SELECT iwd.create_task($1::jsonb)",
     .body_arg = true, .body_required = true, .success = 201, .on_null = 500},
    {.method = "POST", .pattern = "/tasks/bulk", .auth = IWD_AUTH_WRITE, .sql = "SELECT iwd.create_tasks($1::jsonb)",
     .body_arg = true, .body_required = true, .success = 201, .on_null = 500},
    {.method = "POST", .pattern = "/tasks/batch", .auth = IWD_AUTH_WRITE, .handler = on_tasks_batch},
    {.method = "GET", .pattern = "/tasks/{id}", .auth = IWD_AUTH_READ, .sql = "SELECT iwd.get_task($1::bigint)"},
    {.method = "PATCH", .pattern = "/tasks/{id}", .auth = IWD_AUTH_WRITE,
     .sql = "SELECT iwd.update_task($1::bigint, $2::jsonb)", .body_arg = true, .body_required = true},
    {.method = "GET", .pattern = "/tasks/{id}/history", .auth = IWD_AUTH_READ,
     .sql = "SELECT CASE WHEN iwd.get_task($1::bigint) IS NOT NULL THEN"
             " (SELECT coalesce(jsonb_agg(h), '[]') FROM iwd.task_history($1::bigint) h) END"},
    {.method = "POST", .pattern = "/tasks/{id}/hold", .auth = IWD_AUTH_WRITE,
     .sql = "SELECT iwd.hold_task($1::bigint, $2::jsonb->>'reason', $3)", .body_arg = true, .actor_arg = true},
    {.method = "POST", .pattern = "/tasks/{id}/resume", .auth = IWD_AUTH_WRITE,
     .sql = "SELECT iwd.resume_task($1::bigint, $2)", .actor_arg = true},
    {.method = "POST", .pattern = "/tasks/{id}/cancel", .auth = IWD_AUTH_WRITE,
     .sql = "SELECT iwd.cancel_task($1::bigint, $2::jsonb->>'reason', $3)", .body_arg = true, .actor_arg = true},
    {.method = "POST", .pattern = "/tasks/{id}/complete", .auth = IWD_AUTH_WRITE, .handler = on_task_complete},
    {.method = "POST", .pattern = "/tasks/{id}/reject", .auth = IWD_AUTH_WRITE,
     .sql = "SELECT iwd.reject_task($1::bigint, $2::jsonb->>'agent', $2::jsonb->>'reason', $3)", .body_arg = true,
     .actor_arg = true},
    {.method = "POST", .pattern = "/tasks/{id}/restart", .auth = IWD_AUTH_WRITE,
     .sql = "SELECT iwd.restart_task($1::bigint, $2)", .actor_arg = true},
    {.method = "POST", .pattern = "/tasks/{id}/accept", .auth = IWD_AUTH_WRITE,
     .sql = "SELECT iwd.accept_task($1::bigint, $2::jsonb->>'agent')", .body_arg = true, .body_required = true,
     .required = "agent"},
    {.method = "POST", .pattern = "/tasks/{id}/decline", .auth = IWD_AUTH_WRITE,
     .sql = "SELECT iwd.decline_task($1::bigint, $2::jsonb->>'agent', $2::jsonb->>'reason')", .body_arg = true,
     .body_required = true, .required = "agent"},
    {.method = "POST", .pattern = "/tasks/{id}/reprioritize", .auth = IWD_AUTH_WRITE,
     .sql = "SELECT iwd.reprioritize_task($1::bigint, ($2::jsonb->>'priority')::int,"
            " ($2::jsonb->>'businessValue')::int, $3)",
     .body_arg = true, .body_required = true, .actor_arg = true},
    {.method = "GET", .pattern = "/queue/stats", .auth = IWD_AUTH_READ, .sql = "SELECT iwd.queue_stats()"},
};

const iwd_route_table_t iwd_routes_tasks = IWD_ROUTE_TABLE(routes);
