/*
 * iwd-sidecar tenant work: what the sidecar's background subsystems (webhook delivery, the mailbox poller,
 * the router sync) share to do their per-tenant work on threads of their own: the replica's id under which
 * they take leases in the tenant databases, the tenants a route asks them to look at now (one wake list per
 * subsystem, with a descriptor their thread waits on), and the reading of the registry's tenants.
 */
#ifndef IWD_TENANT_WORK_H
#define IWD_TENANT_WORK_H

#include <stdint.h>

#include <libpq-fe.h>

#include "tenant.h"

/* The subsystems that work per tenant in the background. */
typedef enum iwd_work_kind {
    IWD_WORK_WEBHOOKS, /* webhooks.c */
    IWD_WORK_EMAIL,    /* email.c */
    IWD_WORK_ROUTER,   /* router.c */
    IWD_WORK_KINDS
} iwd_work_kind_t;

/* Tenants woken and not yet taken by a subsystem; beyond, a wake-up is dropped (the subsystem is behind and
 * reads the registry anyway). */
#define IWD_WORK_MAX_WAKES 64
/* How often a subsystem reads the registry's tenants. */
#define IWD_WORK_REGISTRY_INTERVAL_MS 10000

/*
 * Prepare before any thread starts: the replica's id (the host name and random bytes) and the wake lists;
 * IWD_ERR with the reason on stderr.
 */
int iwd_work_init(void);

/* The replica's id, the owner of the leases its subsystems take (after iwd_work_init). */
const char *iwd_work_replica(void);

/*
 * Tell a subsystem that a tenant's configuration of it changed (a route wrote it, a retry was asked): the
 * subsystem looks at the tenant at once. Safe from any thread; never blocks.
 */
void iwd_work_wake(iwd_work_kind_t kind, const iwd_tenant_t *tenant);

/* Wake a subsystem's thread without a tenant (its own other threads: something of theirs is to be taken). */
void iwd_work_nudge(iwd_work_kind_t kind);

/* The descriptor a subsystem's thread polls for its wake-ups (readable when woken or nudged). */
int iwd_work_fd(iwd_work_kind_t kind);

/*
 * The tenants woken since the last call, copied to woken (IWD_WORK_MAX_WAKES at most), their count; the
 * descriptor is drained first, so a wake-up that comes after it is seen at the next poll.
 */
int iwd_work_take(iwd_work_kind_t kind, iwd_tenant_t *woken);

/* Wait until the subsystem is woken or nudged, or timeout_ms passed. */
void iwd_work_wait(iwd_work_kind_t kind, int64_t timeout_ms);

/*
 * The registry's tenants with the iWD service, read over *control (the subsystem's connection to the control
 * database: opened when it is not usable, closed and set to NULL when the reading fails; command labels the
 * metrics): their count with the tenants in *tenants (malloc'd; free them with iwd_work_tenants_free), or -1
 * when the control database cannot be read. An entry that cannot be used is left out (logged).
 */
int iwd_work_tenants(PGconn **control, const char *command, iwd_tenant_t **tenants);

/* Free what iwd_work_tenants returned, its connection settings wiped first. */
void iwd_work_tenants_free(iwd_tenant_t *tenants, int n);

#endif
