/*
 * iwd-sidecar routes of reports, read-only (the reporting key may call them): GET /reports/intervals, the
 * Data Mart's figures per interval with the service level, and GET /reports/categories, the open work per
 * category with today's service level. The SQL (sql/reports.sql) checks the values and bounds the range.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "pg.h"
#include "routes.h"

static const char *const interval_filters[] = {"department", "process", "queue"};
static const char *const interval_params[] = {"from", "to", "level", "department", "process", "queue"};

/* Whether every query parameter of the request is one of names; the 400 answered when not (IWD_ERR). */
static int known_params(iwd_call_t *call, const char *const *names, size_t n, int *rc)
{
    const char *bad;
    int bad_len;

    if (iwd_query_names_known(call->req, names, n, NULL, 0, &bad, &bad_len))
        return IWD_OK;
    *rc = iwd_respond_error(call, 400, "unknown query parameter \"%.*s\"", bad_len, bad);
    return IWD_ERR;
}

/*
 * GET /reports/intervals?from=&to=&level=&department=&process=&queue=: {"level", "from", "to",
 * "intervals": [...]} (iwd.report_intervals); to defaults to now, from to a day before to, level to 15min.
 */
static int on_reports_intervals(iwd_call_t *call)
{
    json_t *filter = json_object();
    const char *values[4];
    char *text;
    int rc = 0;

    if (known_params(call, interval_params, sizeof(interval_params) / sizeof(*interval_params), &rc) != IWD_OK) {
        json_decref(filter);
        return rc;
    }
    for (size_t i = 0; i < sizeof(interval_filters) / sizeof(*interval_filters); i++) {
        char *v = iwd_query_param(call->req, interval_filters[i]);
        if (v != NULL)
            json_object_set_new(filter, interval_filters[i], json_string(v));
    }
    text = json_dumps(filter, JSON_COMPACT);
    json_decref(filter);
    if (text == NULL)
        return iwd_respond_error(call, 500, "internal error");
    values[0] = iwd_query_param(call->req, "from");
    values[1] = iwd_query_param(call->req, "to");
    values[2] = iwd_query_param(call->req, "level");
    values[3] = text;
    rc = iwd_pg_call(call,
                     "WITH r AS (SELECT coalesce($2::timestamptz, iwd.now()) AS t, coalesce($3, '15min') AS l),"
                     " a AS (SELECT coalesce($1::timestamptz, r.t - interval '1 day') AS f, r.t, r.l FROM r)"
                     " SELECT jsonb_build_object('level', a.l, 'from', iwd._ts(a.f), 'to', iwd._ts(a.t),"
                     " 'intervals', iwd.report_intervals(a.f, a.t, a.l, $4::jsonb)) FROM a",
                     4, values, 200, 500);
    free(text);
    return rc;
}

/* GET /reports/categories: {"categories": [...]} (iwd.category_stats). */
static int on_reports_categories(iwd_call_t *call)
{
    int rc = 0;

    if (known_params(call, NULL, 0, &rc) != IWD_OK)
        return rc;
    return iwd_pg_call(call, "SELECT jsonb_build_object('categories', iwd.category_stats())", 0, NULL, 200, 500);
}

static const iwd_route_t routes[] = {
    {.method = "GET", .pattern = "/reports/intervals", .auth = IWD_AUTH_READ, .handler = on_reports_intervals},
    {.method = "GET", .pattern = "/reports/categories", .auth = IWD_AUTH_READ, .handler = on_reports_categories},
};

const iwd_route_table_t iwd_routes_reports = IWD_ROUTE_TABLE(routes);
