/*
 * Pushgateway: when IWD_PUSHGATEWAY_URL is set, every IWD_PUSH_INTERVAL seconds the Data Mart job
 * metrics of each tenant (iwd_dm.prometheus_metrics) are PUT to
 * <url>/metrics/job/iwddm_metrics/tenant/<ccid>. Plain HTTP (a Pushgateway inside the cluster). A ccid
 * that is not 1-64 of [A-Za-z0-9._-] (one recorded before provisioning checked them) travels base64url
 * encoded (tenant@base64/...), so that nothing in it can end the path or the request line.
 */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "config.h"
#include "iwd.h"
#include "log.h"
#include "pg.h"
#include "provisioning.h"
#include "push.h"
#include "tenant.h"
#include "thread.h"

/*
 * The grouping-key segment of a tenant's ccid (shorter than IWD_CCID_SIZE, as iwd_tenant_t holds it):
 * "tenant/<ccid>", or "tenant@base64/<base64url of the ccid>".
 */
static void tenant_segment(const char ccid[IWD_CCID_SIZE], char *out, size_t size)
{
    unsigned char encoded[4 * ((IWD_CCID_SIZE + 2) / 3) + 1];

    if (iwd_ccid_valid(ccid)) {
        snprintf(out, size, "tenant/%s", ccid);
        return;
    }
    EVP_EncodeBlock(encoded, (const unsigned char *)ccid, (int)strnlen(ccid, IWD_CCID_SIZE - 1));
    for (unsigned char *p = encoded; *p != '\0'; p++)
        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
    snprintf(out, size, "tenant@base64/%s", encoded);
}

/* PUT body to http://host:port/path; IWD_OK on a 2xx answer. */
static int http_put(const char *url, const char *path, const char *body)
{
    char host[256] = "", port[8] = "80", *request;
    const char *p = strncmp(url, "http://", 7) == 0 ? url + 7 : url;
    size_t n = strcspn(p, ":/");
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    char answer[64] = "";
    int fd, len, ok;

    if (n == 0 || n >= sizeof(host))
        return IWD_ERR;
    memcpy(host, p, n);
    if (p[n] == ':')
        snprintf(port, sizeof(port), "%.*s", (int)strcspn(p + n + 1, "/"), p + n + 1);
    if (getaddrinfo(host, port, &hints, &ai) != 0)
        return IWD_ERR;
    fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return IWD_ERR;
    }
    freeaddrinfo(ai);
    len = asprintf(&request,
                   "PUT %s HTTP/1.1\r\nHost: %s\r\nContent-Type: text/plain; version=0.0.4\r\n"
                   "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                   path, host, strlen(body), body);
    ok = len > 0 && write(fd, request, len) == len && read(fd, answer, sizeof(answer) - 1) > 12 &&
         strncmp(answer + 9, "2", 1) == 0;
    free(request);
    close(fd);
    return ok ? IWD_OK : IWD_ERR;
}

/* The path of a tenant's group on the Pushgateway: the URL's own path, then the job and the tenant. */
static void group_path(const char *ccid, char *path, size_t size)
{
    const char *base = strchr(iwd_conf.pushgateway_url + 7, '/');
    char segment[256];

    tenant_segment(ccid, segment, sizeof(segment));
    snprintf(path, size, "%s/metrics/job/iwddm_metrics/%s", base != NULL ? base : "", segment);
}

/* Push one tenant's Data Mart job metrics, when its database has the Data Mart. */
static void push_tenant(iwd_thread_t *self, const iwd_tenant_t *tenant)
{
    const char *v[1] = {tenant->ccid};
    PGconn *conn = iwd_pg_tenant(self, tenant);
    PGresult *m;
    char path[1024];
    bool has;

    if (conn == NULL)
        return;
    m = iwd_pg_exec(conn, tenant->ccid, "push",
                    "SELECT CASE WHEN to_regprocedure('iwd_dm.prometheus_metrics(text)') IS NOT NULL THEN 1 END", 0,
                    NULL);
    has = PQresultStatus(m) == PGRES_TUPLES_OK && !PQgetisnull(m, 0, 0);
    PQclear(m);
    if (!has)
        return;
    m = iwd_pg_exec(conn, tenant->ccid, "push", "SELECT iwd_dm.prometheus_metrics($1)", 1, v);
    if (PQresultStatus(m) == PGRES_TUPLES_OK && PQntuples(m) == 1) {
        group_path(tenant->ccid, path, sizeof(path));
        if (http_put(iwd_conf.pushgateway_url, path, PQgetvalue(m, 0, 0)) != IWD_OK)
            iwd_log(IWD_LOG_WARN, "pushgateway push failed", "%s", tenant->ccid);
    }
    PQclear(m);
}

void *iwd_push_main(void *arg)
{
    iwd_thread_t self = {.index = -1};

    (void)arg;
    for (;;) {
        PGconn *control = iwd_pg_control(&self);
        PGresult *res = control == NULL ? NULL
                                        : iwd_pg_exec(control, "control", "push",
                                                      "SELECT json_build_object('kind', 'tenant', 'ccid', ccid,"
                                                      " 'host', db_host, 'port', db_port, 'db', db_name, 'user',"
                                                      " db_user, 'pw', db_password, 'ssl', db_ssl)::text"
                                                      " FROM iwd_control.tenant WHERE 'iWD' = ANY (services)",
                                                      0, NULL);

        for (int i = 0; res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK && i < PQntuples(res); i++) {
            iwd_tenant_t tenant;
            if (iwd_tenant_from_entry(&tenant, PQgetvalue(res, i, 0)) == IWD_OK)
                push_tenant(&self, &tenant);
        }
        if (res != NULL)
            PQclear(res);
        sleep(iwd_conf.pushgateway_interval_s);
    }
    return NULL;
}
