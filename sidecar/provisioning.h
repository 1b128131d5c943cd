/*
 * iwd-sidecar provisioning body: the validation of a POST|PUT /iwd/v3/provisioning body, a pure function
 * (no I/O, no global state; jansson only) so that it can be tested and fuzzed on its own.
 */
#ifndef IWD_PROVISIONING_H
#define IWD_PROVISIONING_H

#include <stdbool.h>
#include <stddef.h>

#define IWD_CCID_MAX 64         /* a ccid is 1 to 64 of [A-Za-z0-9._-] */
#define IWD_API_KEY_MIN 16      /* tenant keys: printable ASCII without spaces, 16 to 256 characters */
#define IWD_API_KEY_MAX 256
#define IWD_NAME_MAX 256        /* tenant.id, tenant.name */
#define IWD_DB_HOST_MAX 255
#define IWD_DB_IDENT_MAX 63     /* iwd.db.database and iwd.db.user: PostgreSQL identifiers (NAMEDATALEN - 1) */
#define IWD_DB_PASSWORD_MAX 256
#define IWD_URL_MAX 2048
#define IWD_GWS_MAX 65536       /* tenant.gws, as compact JSON text */

/* A provisioning request, validated. Every string is NUL-terminated and owned (iwd_provisioning_free). */
typedef struct iwd_provisioning {
    char *ccid;
    char *tenant_id;
    char *name;       /* NULL when not given */
    char *host;       /* one host or a list (iwd_db_hosts_split) */
    int port;         /* the port of the hosts that name none */
    char *database;
    char *user;
    char *password;   /* NULL when not given or empty */
    bool ssl;
    char *tenant_key; /* IWD_APIKEY_TENANT */
    char *dm_key;     /* IWD_APIKEY_IWDDM, NULL when not given */
    char *iwd_url;
    char *email_url;  /* NULL when the tenant has no iWDEmail service */
    char *gws;        /* tenant.gws as compact JSON text, NULL when not given */
} iwd_provisioning_t;

/*
 * Parse and validate a provisioning body of len bytes (not NUL-terminated). Returns IWD_OK (iwd.h) and fills
 * out, or IWD_ERR with a message naming the offending field in err (always NUL-terminated when errlen > 0) and out
 * left empty. Nothing is allocated on failure.
 */
int iwd_provisioning_parse(const char *body, size_t len, iwd_provisioning_t *out, char *err, size_t errlen);

/*
 * iwd.db.host as libpq's lists: one host, or the servers of a replicated tenant database separated by commas,
 * each "host", "host:port" or "[IPv6]:port" (pg_autoctl show uri's order); an entry without a port takes
 * default_port. Writes the comma-separated hosts and ports (each NUL-terminated) and sets *count. IWD_ERR with
 * a message naming the entry in err when an entry is empty or its port is not 1 to 65535, or a list does not
 * fit its buffer.
 */
int iwd_db_hosts_split(const char *hosts, int default_port, char *host_list, size_t host_size, char *port_list,
                       size_t port_size, int *count, char *err, size_t errlen);

/* Release what iwd_provisioning_parse allocated; out is left empty. */
void iwd_provisioning_free(iwd_provisioning_t *out);

/* Whether a ccid is 1 to IWD_CCID_MAX of [A-Za-z0-9._-]. */
bool iwd_ccid_valid(const char *ccid);

#endif
