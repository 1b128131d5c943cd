/*
 * iwd-sidecar router sync: the tenants that hand distribution to an external router (GWS; PUT /router,
 * provisioning's tenant.gws) are kept in step with it by threads of their own, never a worker thread's loop:
 * the best queued tasks submitted, those iwd no longer wants there stopped, the router's changes pulled and
 * applied through the extension's SQL API (sql/router.sql). The routes are routes_router.c; a change of a
 * tenant's router configuration wakes the sync through tenant_work.h (IWD_WORK_ROUTER): the tenant is looked
 * at at once, and synced at once when its sync runs.
 */
#ifndef IWD_ROUTER_H
#define IWD_ROUTER_H

#include <stdbool.h>
#include <stddef.h>

#include "tenant.h"

/* The longest client secret or router API key accepted (sealed, it must fit the tenant database's column). */
#define IWD_ROUTER_SECRET_MAX 512

/*
 * A router configuration (a JSON object text: PUT /router's body, provisioning's tenant.gws) with its
 * clientSecret and apiKey sealed under IWD_SECRET_KEY, as the database stores them (malloc'd); NULL with
 * the reason in err when it is not an object or a secret is not a string of 1 to IWD_ROUTER_SECRET_MAX
 * bytes. The other members are checked by iwd.upsert_router. With defaults, the members it lacks are
 * taken from IWD_GWS_* (text NULL: those alone); NULL with err empty when there is no router at all.
 */
char *iwd_router_seal_config(const char *text, size_t len, bool defaults, char *err, size_t errlen);

/* Start the sync's watcher thread (after iwd_work_init and iwd_webhooks_init: libcurl's global state). */
void iwd_router_start(void);

#endif
