/*
 * iwd-sidecar tenant registry: the tenant an API key opens (from what the thread remembers, a signed Redis
 * entry, or the control database), and forgetting what a registry change made stale.
 */
#ifndef IWD_REGISTRY_H
#define IWD_REGISTRY_H

#include <libpq-fe.h>

#include "tenant.h"
#include "thread.h"

typedef enum iwd_registry_result {
    IWD_KEY_FOUND,            /* the tenant is filled */
    IWD_KEY_UNKNOWN,          /* no tenant has this key */
    IWD_REGISTRY_UNAVAILABLE, /* the control database cannot be reached */
    IWD_ENTRY_UNUSABLE,       /* the tenant's entry cannot be used (logged): a password no secret opens, too long */
} iwd_registry_result_t;

/* The tenant of an API key (read_only set for its IWD_APIKEY_IWDDM). */
iwd_registry_result_t iwd_registry_find(iwd_thread_t *thread, const char *key, iwd_tenant_t *tenant);

/*
 * After a registry change has committed: drop the Redis entries of the key indexes (a result's first
 * column) and make every thread of this process forget what it remembers.
 */
void iwd_registry_forget_keys(iwd_thread_t *thread, PGresult *indexes);
/* Make every thread of this process forget what it remembers of the registry. */
void iwd_registry_forget_local(void);

#endif
