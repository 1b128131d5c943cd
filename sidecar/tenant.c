/* iwd-sidecar tenants (tenant.h): the conninfo of a tenant's database, from its settings or registry entry. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "iwd.h"
#include "log.h"
#include "provisioning.h"
#include "secret.h"
#include "tenant.h"

/* Append name='value' (libpq quoting) to a conninfo buffer; false when it does not fit. */
static bool conninfo_add(char *buf, size_t size, const char *name, const char *value)
{
    size_t o = strlen(buf);
    int n = snprintf(buf + o, size - o, "%s%s='", o ? " " : "", name);

    if (n < 0 || (size_t)n >= size - o)
        return false;
    o += n;
    for (const char *p = value; *p != '\0'; p++) {
        if (o + 3 >= size)
            return false;
        if (*p == '\'' || *p == '\\')
            buf[o++] = '\\';
        buf[o++] = *p;
    }
    if (o + 2 > size)
        return false;
    buf[o++] = '\'';
    buf[o] = '\0';
    return true;
}

int iwd_tenant_settings(iwd_tenant_t *tenant, const char *ccid, const char *host, int port, const char *db,
                        const char *user, const char *password, bool ssl)
{
    char hosts[IWD_CONNINFO_SIZE], ports[IWD_CONNINFO_SIZE], err[128];
    char *c = tenant->conninfo;
    size_t size = sizeof(tenant->conninfo);
    int count;

    /* a ccid that does not fit would make two tenants one in the pool of connections */
    if (strlen(ccid) >= sizeof(tenant->ccid))
        return IWD_ERR;
    snprintf(tenant->ccid, sizeof(tenant->ccid), "%s", ccid);
    if (iwd_db_hosts_split(host, port, hosts, sizeof(hosts), ports, sizeof(ports), &count, err, sizeof(err)) != IWD_OK)
        return IWD_ERR;
    c[0] = '\0';
    /* the servers of a replicated database: the one that accepts writes, whichever was promoted */
    if (!conninfo_add(c, size, "host", hosts) || !conninfo_add(c, size, "port", ports) ||
        (count > 1 && !conninfo_add(c, size, "target_session_attrs", "read-write")) ||
        !conninfo_add(c, size, "dbname", db) || !conninfo_add(c, size, "user", user) ||
        (password != NULL && *password != '\0' && !conninfo_add(c, size, "password", password)) ||
        !conninfo_add(c, size, "sslmode", ssl ? "require" : "prefer") ||
        !conninfo_add(c, size, "connect_timeout", "5") || !conninfo_add(c, size, "application_name", "iwd-sidecar")) {
        OPENSSL_cleanse(c, size);
        return IWD_ERR;
    }
    return IWD_OK;
}

int iwd_tenant_from_entry(iwd_tenant_t *tenant, const char *text)
{
    json_t *e = json_loads(text, 0, NULL), *pw_value = NULL;
    const char *kind, *ccid, *host, *db, *user;
    int port, ssl, rc;
    char *password = NULL;
    bool current;

    if (e == NULL)
        return IWD_ERR;
    if (json_unpack(e, "{s:s,s:s,s:s,s:i,s:s,s:s,s?o,s:b}", "kind", &kind, "ccid", &ccid, "host", &host, "port",
                    &port, "db", &db, "user", &user, "pw", &pw_value, "ssl", &ssl) != 0) {
        json_decref(e);
        return IWD_ERR;
    }
    if (json_is_string(pw_value) && json_string_length(pw_value) > 0 &&
        (password = iwd_secret_open(json_string_value(pw_value), &current)) == NULL) {
        iwd_log(IWD_LOG_ERROR, "a tenant database password cannot be decrypted with IWD_SECRET_KEY", "%s", ccid);
        json_decref(e);
        return IWD_ERR;
    }
    rc = iwd_tenant_settings(tenant, ccid, host, port, db, user, password, ssl);
    tenant->read_only = strcmp(kind, "iwddm") == 0;
    if (password != NULL) {
        OPENSSL_cleanse(password, strlen(password));
        free(password);
    }
    json_decref(e);
    return rc;
}
