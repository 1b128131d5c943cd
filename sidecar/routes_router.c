/*
 * iwd-sidecar routes of the tenant's external router (GWS): PUT, GET and DELETE /router, each one call of
 * the extension's SQL API (sql/router.sql). PUT seals clientSecret and apiKey under IWD_SECRET_KEY before
 * they reach the database (iwd_router_seal_config); GET never returns them. A change wakes the sync
 * (tenant_work.h).
 */
#include <stdlib.h>
#include <string.h>

#include "answer.h"
#include "config.h"
#include "pg.h"
#include "router.h"
#include "routes.h"
#include "tenant_work.h"

/* The answer of iwd.upsert_router; once it has committed, the sync is woken (it finds the router). */
static void on_router_saved(iwd_call_t *call, PGresult *res, int status, const char *message, void *arg)
{
    (void)arg;
    if (res == NULL) {
        iwd_answer_error(call, status, message);
        return;
    }
    if (PQresultStatus(res) == PGRES_TUPLES_OK)
        iwd_work_wake(IWD_WORK_ROUTER, &call->tenant);
    iwd_answer_result(call, res, 200, 404);
}

/* PUT /router: the configuration, its secrets sealed, written by iwd.upsert_router; the sync woken. */
static int on_router_put(iwd_call_t *call)
{
    h2o_req_t *req = call->req;
    char *text, err[256];
    const char *values[1];
    int rc;

    if (req->entity.base == NULL || req->entity.len == 0)
        return iwd_respond_error(call, 400, "a JSON body is required");
    if (req->entity.len > iwd_conf.max_body_bytes)
        return iwd_respond_error(call, 413, "the body exceeds %zu bytes", iwd_conf.max_body_bytes);
    if (memchr(req->entity.base, '\0', req->entity.len) != NULL)
        return iwd_respond_error(call, 400, "malformed JSON: the body holds a NUL byte");
    if ((text = iwd_router_seal_config(req->entity.base, req->entity.len, false, err, sizeof(err))) == NULL)
        return iwd_respond_error(call, 400, "%s", err);
    values[0] = text;
    rc = iwd_pg_call_then(call, "SELECT iwd.upsert_router($1::jsonb)", 1, values, on_router_saved, NULL);
    free(text);
    return rc;
}

/* A change the sync acts on at once. */
static void wake_sync(iwd_call_t *call)
{
    iwd_work_wake(IWD_WORK_ROUTER, &call->tenant);
}

static const iwd_route_t routes[] = {
    {.method = "GET", .pattern = "/router", .auth = IWD_AUTH_READ, .sql = "SELECT iwd.get_router()"},
    {.method = "PUT", .pattern = "/router", .auth = IWD_AUTH_WRITE, .handler = on_router_put},
    {.method = "DELETE", .pattern = "/router", .auth = IWD_AUTH_WRITE,
     .sql = "SELECT CASE WHEN iwd.delete_router() THEN jsonb_build_object('deleted', true) END",
     .before = wake_sync},
};

const iwd_route_table_t iwd_routes_router = IWD_ROUTE_TABLE(routes);
