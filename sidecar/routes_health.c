/* iwd-sidecar routes of the service itself: liveness, readiness and, with the admin key, the metrics. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "iwd.h"
#include "metrics.h"
#include "pg.h"
#include "routes.h"

#define UNAUTHORIZED                                                                                               \
    "metrics need the cluster admin key in x-api-key on this port; the metrics port (IWD_METRICS_PORT) serves"   \
    " them without one"

/* GET /health/live: the process answers, with the release it was built from. */
static int on_health_live(iwd_call_t *call)
{
    static const char body[] = "{\"status\":\"live\",\"version\":\"" IWD_VERSION "\"}";
    return iwd_respond_json(call, 200, body, sizeof(body) - 1);
}

/* GET /health/ready: the control database answers. */
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

/* GET /metrics on the API port (the metrics port has its own entry point, main.c). */
static int on_metrics(iwd_call_t *call)
{
    size_t len;
    char *text = iwd_metrics_render(&len);
    char *copy = h2o_mem_alloc_pool(&call->req->pool, len);

    memcpy(copy, text, len);
    free(text);
    return iwd_respond_text(call, 200, "text/plain; version=0.0.4", copy, len);
}

static const iwd_route_t routes[] = {
    {.method = "GET", .pattern = "/health/live", .auth = IWD_AUTH_NONE, .handler = on_health_live},
    {.method = "GET", .pattern = "/health/ready", .auth = IWD_AUTH_NONE, .handler = on_health_ready},
    /* without a key on the metrics listener (IWD_METRICS_PORT) only: it names every tenant */
    {.method = "GET", .pattern = "/metrics", .auth = IWD_AUTH_ADMIN, .unauthorized = UNAUTHORIZED,
     .handler = on_metrics},
};

const iwd_route_table_t iwd_routes_health = IWD_ROUTE_TABLE(routes);
