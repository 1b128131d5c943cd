/*
 * iwd-sidecar routes of webhooks: their configuration (PUT, GET, DELETE /webhooks/{name}, GET /webhooks),
 * their deliveries (GET /webhooks/{name}/deliveries) and a delivery's manual retry, each one call of the
 * extension's SQL API (sql/events.sql). Writing a webhook or asking a retry wakes the delivery (tenant_work.h);
 * a deletion stops its deliveries before it is answered.
 */
#include <stdlib.h>
#include <string.h>

#include "answer.h"
#include "pg.h"
#include "routes.h"
#include "tenant_work.h"
#include "webhooks.h"

#define MAX_DELIVERIES_LIMIT 1000

/* A change that gives the delivery work: it looks at the tenant at once. */
static void wake_delivery(iwd_call_t *call)
{
    iwd_work_wake(IWD_WORK_WEBHOOKS, &call->tenant);
}

/* The answer of iwd.delete_webhook: once the deletion has committed, this replica attempts none of its deliveries. */
static void on_webhook_deleted(iwd_call_t *call, PGresult *res, int status, const char *message, void *arg)
{
    (void)arg;
    if (res == NULL) {
        iwd_answer_error(call, status, message);
        return;
    }
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
        iwd_webhooks_stopped(&call->tenant, call->params[0]);
    iwd_answer_result(call, res, 200, 404);
}

/* DELETE /webhooks/{name} */
static int on_webhook_delete(iwd_call_t *call)
{
    const char *values[1] = {call->params[0]};

    return iwd_pg_call_then(call,
                            "SELECT CASE WHEN iwd.delete_webhook($1)"
                            " THEN jsonb_build_object('name', $1::text, 'deleted', true) END",
                            1, values, on_webhook_deleted, NULL);
}

/* GET /webhooks/{name}/deliveries?status=&limit=&cursor= */
static int on_deliveries_list(iwd_call_t *call)
{
    static const char *const known[] = {"status", "limit", "cursor"};
    h2o_req_t *req = call->req;
    const char *values[4] = {call->params[0], iwd_query_param(req, "status"), "100", iwd_query_param(req, "cursor")};
    char *limit = iwd_query_param(req, "limit");

    if (req->query_at != SIZE_MAX) {
        const char *p = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
        while (p < end) {
            const char *amp = memchr(p, '&', end - p), *stop = amp ? amp : end;
            const char *eq = memchr(p, '=', stop - p), *key_end = eq ? eq : stop;
            bool found = key_end == p;
            for (size_t i = 0; i < sizeof(known) / sizeof(*known); i++)
                found |= strlen(known[i]) == (size_t)(key_end - p) && memcmp(known[i], p, key_end - p) == 0;
            if (!found)
                return iwd_respond_error(call, 400, "unknown query parameter \"%.*s\"", (int)(key_end - p), p);
            p = stop + 1;
        }
    }
    if (values[1] != NULL && strcmp(values[1], "pending") != 0 && strcmp(values[1], "delivered") != 0 &&
        strcmp(values[1], "failed") != 0)
        return iwd_respond_error(call, 400, "query parameter \"status\" must be pending, delivered or failed");
    if (limit != NULL) {
        char *end;
        long n = strtol(limit, &end, 10);
        if (*limit == '\0' || *end != '\0' || n < 1 || n > MAX_DELIVERIES_LIMIT)
            return iwd_respond_error(call, 400, "query parameter \"limit\" must be between 1 and %d",
                                     MAX_DELIVERIES_LIMIT);
        values[2] = limit;
    }
    return iwd_pg_call(call, "SELECT iwd.webhook_deliveries($1, $2, $3::int, $4)", 4, values, 200, 404);
}

static const iwd_route_t routes[] = {
    {.method = "GET", .pattern = "/webhooks", .auth = IWD_AUTH_READ, .sql = "SELECT iwd.list_webhooks()"},
    {.method = "GET", .pattern = "/webhooks/{name}", .auth = IWD_AUTH_READ, .sql = "SELECT iwd.get_webhook($1)"},
    {.method = "PUT", .pattern = "/webhooks/{name}", .auth = IWD_AUTH_WRITE,
     .sql = "SELECT iwd.upsert_webhook($2::jsonb || jsonb_build_object('name', $1::text))", .body_arg = true,
     .body_required = true, .before = wake_delivery},
    {.method = "DELETE", .pattern = "/webhooks/{name}", .auth = IWD_AUTH_WRITE, .handler = on_webhook_delete},
    {.method = "GET", .pattern = "/webhooks/{name}/deliveries", .auth = IWD_AUTH_READ, .handler = on_deliveries_list},
    {.method = "POST", .pattern = "/webhooks/{name}/deliveries/{id}/retry", .auth = IWD_AUTH_WRITE,
     .sql = "SELECT iwd.retry_delivery($1, $2::uuid)", .before = wake_delivery},
};

const iwd_route_table_t iwd_routes_webhooks = IWD_ROUTE_TABLE(routes);
