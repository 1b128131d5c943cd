/*
 * iwd-sidecar tenant work (tenant_work.h).
 *
 * A wake list is the tenants the routes named, under a lock, and a non-blocking pipe whose read end the
 * subsystem's thread polls (beside its own descriptors: tenant connections, the control database): a
 * wake-up writes one byte, never waiting (a full pipe already says "woken"). The registry is read with a
 * short connect and statement timeout and a deadline on the answer, so that a control database that does
 * not answer holds a subsystem's loop for REGISTRY_DEADLINE_MS at most.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "clock.h"
#include "config.h"
#include "iwd.h"
#include "log.h"
#include "pg.h"
#include "tenant_work.h"

#define REGISTRY_CONNECT_TIMEOUT_S 2
#define REGISTRY_STATEMENT_TIMEOUT_MS 10000
#define REGISTRY_DEADLINE_MS 12000 /* our own bound on the answer, whatever the server does */

/* One subsystem's wake list. */
typedef struct wake_list {
    const char *name; /* for the log */
    pthread_mutex_t lock;
    iwd_tenant_t tenants[IWD_WORK_MAX_WAKES];
    int n;
    int pipe[2];
} wake_list_t;

static char replica[64];
static wake_list_t lists[IWD_WORK_KINDS] = {
    [IWD_WORK_WEBHOOKS] = {.name = "webhook delivery", .lock = PTHREAD_MUTEX_INITIALIZER, .pipe = {-1, -1}},
    [IWD_WORK_EMAIL] = {.name = "mailbox poller", .lock = PTHREAD_MUTEX_INITIALIZER, .pipe = {-1, -1}},
    [IWD_WORK_ROUTER] = {.name = "router sync", .lock = PTHREAD_MUTEX_INITIALIZER, .pipe = {-1, -1}},
};

int iwd_work_init(void)
{
    unsigned char random[8];
    char host[32] = "";

    if (RAND_bytes(random, sizeof(random)) != 1) {
        fprintf(stderr, "iwd-sidecar: no random bytes for the replica's id\n");
        return IWD_ERR;
    }
    gethostname(host, sizeof(host) - 1);
    snprintf(replica, sizeof(replica), "%s-%02x%02x%02x%02x%02x%02x%02x%02x", host, random[0], random[1],
             random[2], random[3], random[4], random[5], random[6], random[7]);
    for (int k = 0; k < IWD_WORK_KINDS; k++)
        if (pipe2(lists[k].pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
            fprintf(stderr, "iwd-sidecar: cannot set the %s up: %s\n", lists[k].name, strerror(errno));
            return IWD_ERR;
        }
    return IWD_OK;
}

const char *iwd_work_replica(void)
{
    return replica;
}

void iwd_work_nudge(iwd_work_kind_t kind)
{
    char byte = 1;
    int fd = lists[kind].pipe[1];

    if (fd >= 0 && write(fd, &byte, 1) < 0 && errno != EAGAIN)
        iwd_log(IWD_LOG_WARN, "background work not woken", "%s: %s", lists[kind].name, strerror(errno));
}

void iwd_work_wake(iwd_work_kind_t kind, const iwd_tenant_t *tenant)
{
    wake_list_t *l = &lists[kind];
    int i;

    pthread_mutex_lock(&l->lock);
    for (i = 0; i < l->n && strcmp(l->tenants[i].ccid, tenant->ccid) != 0; i++)
        ;
    if (i == l->n && l->n < IWD_WORK_MAX_WAKES) /* beyond: the subsystem is behind and reads the registry anyway */
        l->tenants[l->n++] = *tenant;
    pthread_mutex_unlock(&l->lock);
    iwd_work_nudge(kind);
}

int iwd_work_fd(iwd_work_kind_t kind)
{
    return lists[kind].pipe[0];
}

int iwd_work_take(iwd_work_kind_t kind, iwd_tenant_t *woken)
{
    wake_list_t *l = &lists[kind];
    char drain[256];
    int n;

    while (read(l->pipe[0], drain, sizeof(drain)) > 0)
        ;
    pthread_mutex_lock(&l->lock);
    n = l->n;
    memcpy(woken, l->tenants, sizeof(iwd_tenant_t) * n);
    OPENSSL_cleanse(l->tenants, sizeof(iwd_tenant_t) * n);
    l->n = 0;
    pthread_mutex_unlock(&l->lock);
    return n;
}

void iwd_work_wait(iwd_work_kind_t kind, int64_t timeout_ms)
{
    struct pollfd fd = {.fd = lists[kind].pipe[0], .events = POLLIN};

    if (timeout_ms < 0)
        timeout_ms = 0;
    poll(&fd, 1, (int)timeout_ms);
}

int iwd_work_tenants(PGconn **control, const char *command, iwd_tenant_t **tenants)
{
    PGresult *res;
    int n = 0;

    *tenants = NULL;
    if (*control != NULL && PQstatus(*control) != CONNECTION_OK) {
        PQfinish(*control);
        *control = NULL;
    }
    if (*control == NULL) {
        *control = iwd_pg_connect_bounded(iwd_conf.control_db, REGISTRY_CONNECT_TIMEOUT_S,
                                          REGISTRY_STATEMENT_TIMEOUT_MS);
        if (PQstatus(*control) != CONNECTION_OK) {
            PQfinish(*control);
            *control = NULL;
            return -1;
        }
    }
    res = iwd_pg_exec_within(*control, "control", command,
                             "SELECT json_build_object('kind', 'tenant', 'ccid', ccid, 'host', db_host,"
                             " 'port', db_port, 'db', db_name, 'user', db_user, 'pw', db_password, 'ssl', db_ssl)::text"
                             " FROM iwd_control.tenant WHERE 'iWD' = ANY (services) ORDER BY ccid",
                             0, NULL, iwd_now_ms() + REGISTRY_DEADLINE_MS);
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
        if (res != NULL)
            PQclear(res);
        PQfinish(*control);
        *control = NULL;
        return -1;
    }
    if (PQntuples(res) > 0 && (*tenants = malloc(sizeof(iwd_tenant_t) * (size_t)PQntuples(res))) == NULL) {
        PQclear(res);
        return -1;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        if (iwd_tenant_from_entry(&(*tenants)[n], PQgetvalue(res, i, 0)) == IWD_OK)
            n++;
        else
            OPENSSL_cleanse(&(*tenants)[n], sizeof(iwd_tenant_t));
    }
    PQclear(res);
    return n;
}

void iwd_work_tenants_free(iwd_tenant_t *tenants, int n)
{
    if (tenants == NULL)
        return;
    OPENSSL_cleanse(tenants, sizeof(iwd_tenant_t) * (size_t)n);
    free(tenants);
}
