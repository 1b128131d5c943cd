/*
 * iwd-sidecar route of the event stream: GET /iwd/v3/events, Server-Sent Events or, with Accept:
 * application/json, {"events": [...], "next": N} (a long-poll with wait=S). The query is checked here (every
 * bad value is a 400 naming it); the stream itself is events.c's.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "events.h"
#include "routes.h"

/* Query parameters besides the task filters (iwd_event_filter_keys). */
static const char *const other_params[] = {"after", "types", "limit", "wait"};

/* A non-negative integer of at most max; -1 when the text is not one. */
static long long parse_count(const char *text, long long max)
{
    char *end;
    long long v;

    if (text == NULL || *text < '0' || *text > '9')
        return -1;
    errno = 0;
    v = strtoll(text, &end, 10);
    return errno != 0 || *end != '\0' || v > max ? -1 : v;
}

/* The comma-separated items of a value, NULL-terminated, in the pool (empty items are left out). */
static char **split_list(h2o_req_t *req, char *value, size_t *n)
{
    char **items = h2o_mem_alloc_pool(&req->pool, (strlen(value) / 2 + 2) * sizeof(char *)), *save = NULL;

    *n = 0;
    for (char *item = strtok_r(value, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save))
        items[(*n)++] = item;
    items[*n] = NULL;
    return items;
}

/* The event types of ?types= as a mask and a text[] literal; IWD_ERR when answered 400. */
static int parse_types(iwd_call_t *call, iwd_events_query_t *q)
{
    h2o_req_t *req = call->req;
    char *value = iwd_query_param(req, "types"), *literal;
    size_t n, o = 0;
    char **items;

    if (value == NULL)
        return IWD_OK;
    literal = h2o_mem_alloc_pool(&req->pool, strlen(value) + 3);
    items = split_list(req, value, &n);
    if (n == 0) {
        iwd_respond_error(call, 400, "query parameter \"types\" must list event types, e.g."
                                     " types=task.created,task.completed");
        return IWD_ERR;
    }
    literal[o++] = '{';
    for (size_t i = 0; i < n; i++) {
        int t;
        for (t = 0; t < IWD_EVENT_TYPES && strcmp(items[i], iwd_event_types[t]) != 0; t++)
            ;
        if (t == IWD_EVENT_TYPES) {
            iwd_respond_error(call, 400, "unknown event type \"%.64s\" in query parameter \"types\"", items[i]);
            return IWD_ERR;
        }
        q->types |= 1u << t;
        o += (size_t)sprintf(literal + o, "%s%s", i > 0 ? "," : "", items[i]);
    }
    literal[o++] = '}';
    literal[o] = '\0';
    q->sql_types = literal;
    return IWD_OK;
}

/* The task filters, as lists of values and as the jsonb object of iwd.events_after (the shape of GET /tasks). */
static int parse_filters(iwd_call_t *call, iwd_events_query_t *q)
{
    h2o_req_t *req = call->req;
    json_t *filter = json_object();
    char *text;

    for (int k = 0; k < IWD_EVENT_FILTER_KEYS; k++) {
        char *value = iwd_query_param(req, iwd_event_filter_keys[k]);
        size_t n;
        if (value == NULL)
            continue;
        q->values[k] = split_list(req, value, &n);
        if (n == 0) {
            json_decref(filter);
            iwd_respond_error(call, 400, "query parameter \"%s\" must not be empty", iwd_event_filter_keys[k]);
            return IWD_ERR;
        }
        if (n == 1) {
            json_object_set_new(filter, iwd_event_filter_keys[k], json_string(q->values[k][0]));
        } else {
            json_t *list = json_array();
            for (size_t i = 0; i < n; i++)
                json_array_append_new(list, json_string(q->values[k][i]));
            json_object_set_new(filter, iwd_event_filter_keys[k], list);
        }
    }
    text = json_dumps(filter, JSON_COMPACT);
    json_decref(filter);
    if (text == NULL) { /* a value that is not UTF-8 */
        iwd_respond_error(call, 400, "a task filter of the query is not UTF-8");
        return IWD_ERR;
    }
    q->sql_filter = h2o_mem_alloc_pool(&req->pool, strlen(text) + 1);
    memcpy((char *)q->sql_filter, text, strlen(text) + 1);
    free(text);
    return IWD_OK;
}

/* Whether the client asks for the JSON form: Accept names application/json and not text/event-stream. */
static bool wants_json(h2o_req_t *req)
{
    char *accept = iwd_header(req, "accept");

    return accept != NULL && strstr(accept, "application/json") != NULL && strstr(accept, "text/event-stream") == NULL;
}

static int on_events_get(iwd_call_t *call)
{
    h2o_req_t *req = call->req;
    iwd_events_query_t q = {.after = -1, .limit = IWD_EVENTS_LIMIT_DEFAULT};
    char *after = iwd_query_param(req, "after"), *last_id = iwd_header(req, "last-event-id");
    char *limit = iwd_query_param(req, "limit"), *wait = iwd_query_param(req, "wait");
    const char *bad;
    int bad_len;
    long long v;

    if (!iwd_query_names_known(req, iwd_event_filter_keys, IWD_EVENT_FILTER_KEYS, other_params,
                               sizeof(other_params) / sizeof(*other_params), &bad, &bad_len))
        return iwd_respond_error(call, 400, "unknown query parameter \"%.*s\"", bad_len, bad);
    q.json = wants_json(req);
    /* Last-Event-ID is where a reconnecting EventSource left off: it wins over the URL's after */
    if (last_id != NULL && (q.after = parse_count(last_id, INT64_MAX)) < 0)
        return iwd_respond_error(call, 400, "header Last-Event-ID must be an event id (a non-negative integer)");
    if (last_id == NULL && after != NULL && (q.after = parse_count(after, INT64_MAX)) < 0)
        return iwd_respond_error(call, 400, "query parameter \"after\" must be an event id (a non-negative integer)");
    if ((limit != NULL || wait != NULL) && !q.json)
        return iwd_respond_error(call, 400, "query parameters \"limit\" and \"wait\" belong to the JSON form"
                                            " (Accept: application/json)");
    if (limit != NULL && ((v = parse_count(limit, IWD_EVENTS_LIMIT_MAX)) < 1))
        return iwd_respond_error(call, 400, "query parameter \"limit\" must be between 1 and %d", IWD_EVENTS_LIMIT_MAX);
    if (limit != NULL)
        q.limit = (int)v;
    if (wait != NULL && (v = parse_count(wait, INT64_MAX)) < 0)
        return iwd_respond_error(call, 400, "query parameter \"wait\" must be a number of seconds (at most %d are"
                                            " waited)", IWD_EVENTS_WAIT_MAX_S);
    if (wait != NULL)
        q.wait_s = v > IWD_EVENTS_WAIT_MAX_S ? IWD_EVENTS_WAIT_MAX_S : (int)v;
    if (parse_types(call, &q) != IWD_OK || parse_filters(call, &q) != IWD_OK)
        return IWD_OK;
    return iwd_events_serve(call, &q);
}

static const iwd_route_t routes[] = {
    {.method = "GET", .pattern = "/events", .auth = IWD_AUTH_READ, .handler = on_events_get},
};

const iwd_route_table_t iwd_routes_events = IWD_ROUTE_TABLE(routes);
