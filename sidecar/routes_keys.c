/*
 * iwd-sidecar routes of the API key itself: what the key a request carries may do, so that a client (the
 * Workload Manager) offers only the actions it may perform. Answered from the key's registry entry, without
 * a call of the tenant database.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "routes.h"

/* GET /key: {"tenant": <ccid>, "access": "read-write" | "read-only"} (IWD_APIKEY_TENANT or IWD_APIKEY_IWDDM). */
static int on_key_get(iwd_call_t *call)
{
    json_t *doc = json_pack("{s:s, s:s}", "tenant", call->tenant.ccid, "access",
                            call->tenant.read_only ? "read-only" : "read-write");
    char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
    int rc;

    json_decref(doc);
    if (text == NULL)
        return iwd_respond_error(call, 500, "internal error");
    rc = iwd_respond_json(call, 200, text, strlen(text));
    free(text);
    return rc;
}

static const iwd_route_t routes[] = {
    {.method = "GET", .pattern = "/key", .auth = IWD_AUTH_READ, .handler = on_key_get},
};

const iwd_route_table_t iwd_routes_keys = IWD_ROUTE_TABLE(routes);
