/*
 * iwd-sidecar tenants: a tenant as the registry knows it (its ccid and the libpq conninfo of its database),
 * made from its settings or from its registry entry.
 */
#ifndef IWD_TENANT_H
#define IWD_TENANT_H

#include <stdbool.h>

/* A ccid or conninfo that does not fit is refused, never cut. */
#define IWD_CCID_SIZE 128
#define IWD_CONNINFO_SIZE 2048
typedef struct iwd_tenant {
    char ccid[IWD_CCID_SIZE];
    char conninfo[IWD_CONNINFO_SIZE];
    bool read_only; /* authenticated with the tenant's IWD_APIKEY_IWDDM */
} iwd_tenant_t;

/* A tenant's ccid and conninfo from its settings (password in clear); IWD_ERR when they do not fit. */
int iwd_tenant_settings(iwd_tenant_t *tenant, const char *ccid, const char *host, int port, const char *db,
                        const char *user, const char *password, bool ssl);

/*
 * A tenant from its registry entry as the control database renders it,
 * {"kind","ccid","host","port","db","user","pw","ssl"} (pw sealed, see secret.h); IWD_ERR when the entry is
 * malformed, its password cannot be opened (logged) or its settings do not fit.
 */
int iwd_tenant_from_entry(iwd_tenant_t *tenant, const char *text);

#endif
