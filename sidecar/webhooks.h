/*
 * iwd-sidecar webhooks: the delivery of the tenants' webhook deliveries (the rows the extension makes in
 * iwd.webhook_delivery as events are published), by two threads of their own, never a worker thread's loop.
 * The routes that configure webhooks are routes_webhooks.c; when they change something they wake the
 * delivery through tenant_work.h (IWD_WORK_WEBHOOKS): the tenant's due deliveries are looked for at once, and
 * the tenant is watched even before the registry lists it.
 */
#ifndef IWD_WEBHOOKS_H
#define IWD_WEBHOOKS_H

#include "tenant.h"

/*
 * Prepare the delivery before any thread starts (after iwd_work_init): libcurl's global state, the
 * trusted CAs (the system's plus IWD_CA_FILE, which must hold PEM certificates); IWD_ERR with the reason on
 * stderr when the CA file cannot be used.
 */
int iwd_webhooks_init(void);

/* Start the delivery threads (after iwd_webhooks_init), for as long as the process runs. */
void iwd_webhooks_start(void);

/*
 * Tell the delivery that a tenant's webhook was deleted or disabled (its change committed): no delivery of
 * it that this replica claimed before is attempted from now on (an attempt in flight runs to its end). The
 * other replicas learn it from the tenant database (NOTIFY iwd_webhooks). Safe from any thread; never
 * blocks on the network.
 */
void iwd_webhooks_stopped(const iwd_tenant_t *tenant, const char *webhook);

#endif
