/*
 * iwd-sidecar control database schema: iwd_control.tenant (a tenant's database and services),
 * iwd_control.api_key (its keys, by index and salted hash), iwd_control.secret (the sealed index key) and
 * iwd_control.schema_version.
 */
#ifndef IWD_CONTROL_H
#define IWD_CONTROL_H

#include <libpq-fe.h>

/*
 * Create or migrate the control database's schema (idempotent; one sidecar at a time), load the API key
 * index key (secret.h) and seal again under IWD_SECRET_KEY whatever an older secret sealed. IWD_ERR (logged)
 * when any step fails: the sidecar must not serve then.
 */
int iwd_control_migrate(PGconn *conn);

#endif
