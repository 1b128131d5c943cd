/*
 * iwd-sidecar PostgreSQL access: each thread keeps one connection to the control database and a few per
 * tenant it has served (up to IWD_PG_CONNS_PER_TENANT in use at once), reconnecting when one breaks.
 * Every tenant REST call is one call of the extension's SQL API, sent asynchronously (see thread.h):
 * iwd_pg_call sends it on an idle connection or queues it, the thread's loop reads the result when the
 * connection's socket is readable, answers the request and gives the connection to the next call.
 * A new connection is opened by a short-lived connector thread, which hands it to the loop when it is
 * established: a tenant server that is slow to answer or unreachable (up to the connect timeout) holds
 * up only its own tenant's calls, never the loop. Nothing else waits for a server either: the loop's
 * connections are non-blocking, statements are prepared through the loop, and a call the server never
 * answers ends at a deadline of the loop.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "answer.h"
#include "clock.h"
#include "config.h"
#include "iwd.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"

#define MAX_TENANT_CONNS_PER_THREAD 256
#define DEFAULT_CONNECT_TIMEOUT_S 5
#define CALL_DEADLINE_GRACE_MS 5000 /* past the statement timeout, the server is taken for gone */
#define FLUSH_TICK_MS 10            /* a call libpq could not write at once is written on this often */

/* Server notices (e.g. "extension already exists, skipping") are not errors: keep them out of the log. */
static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/*
 * The startup options of every sidecar session: the conninfo's own options, then ours, which win (a
 * later -c overrides an earlier one, and options given at connection override ALTER DATABASE / ROLE
 * settings). A statement and a lock timeout so that no client call holds a backend or a lock for long,
 * and a pinned search_path so that nothing a database owner plants in another schema is resolved.
 */
static char *session_options(const char *conninfo, int statement_timeout_ms, bool *has_connect_timeout)
{
    PQconninfoOption *parsed = PQconninfoParse(conninfo, NULL);
    const char *own = "";
    char *options;

    *has_connect_timeout = getenv("PGCONNECT_TIMEOUT") != NULL;
    for (PQconninfoOption *o = parsed; o != NULL && o->keyword != NULL; o++) {
        if (strcmp(o->keyword, "options") == 0 && o->val != NULL)
            own = o->val;
        if (strcmp(o->keyword, "connect_timeout") == 0 && o->val != NULL)
            *has_connect_timeout = true;
    }
    if (asprintf(&options, "%s%s-c statement_timeout=%d -c lock_timeout=%d -c search_path=pg_catalog,iwd,pg_temp", own,
                 *own != '\0' ? " " : "", statement_timeout_ms, iwd_conf.lock_timeout_ms) < 0)
        abort();
    PQconninfoFree(parsed);
    return options;
}

/*
 * Connect with the conninfo (a string or URL), the session options above taking precedence, and when
 * connect_timeout_s is positive, that connect timeout rather than the conninfo's. A conninfo without a
 * connect timeout gets DEFAULT_CONNECT_TIMEOUT_S: libpq's default is to wait as long as TCP does
 * (minutes, for a server that went off the network).
 */
static PGconn *connect_with(const char *conninfo, int statement_timeout_ms, int connect_timeout_s)
{
    bool has_connect_timeout;
    char *options = session_options(conninfo, statement_timeout_ms, &has_connect_timeout), timeout[16];
    const char *keywords[] = {"dbname", "options", NULL, NULL};
    const char *values[] = {conninfo, options, NULL, NULL};
    PGconn *conn;

    if (connect_timeout_s <= 0 && !has_connect_timeout)
        connect_timeout_s = DEFAULT_CONNECT_TIMEOUT_S;
    if (connect_timeout_s > 0) {
        snprintf(timeout, sizeof(timeout), "%d", connect_timeout_s);
        keywords[2] = "connect_timeout";
        values[2] = timeout;
    }
    conn = PQconnectdbParams(keywords, values, 1);
    free(options);
    PQsetNoticeProcessor(conn, ignore_notice, NULL);
    return conn;
}

PGconn *iwd_pg_connect(const char *conninfo)
{
    return connect_with(conninfo, iwd_conf.statement_timeout_ms, 0);
}

PGconn *iwd_pg_connect_bounded(const char *conninfo, int connect_timeout_s, int statement_timeout_ms)
{
    return connect_with(conninfo, statement_timeout_ms, connect_timeout_s);
}

/* Open a connection; NULL (logged) when the server cannot be reached. */
static PGconn *connect_db(const char *conninfo, const char *label)
{
    PGconn *conn = iwd_pg_connect(conninfo);

    if (PQstatus(conn) != CONNECTION_OK) {
        iwd_log(IWD_LOG_WARN, "database connection failed", "%s: %s", label, PQerrorMessage(conn));
        iwd_metrics_db(label, "connect", "08006", 0, false, false);
        PQfinish(conn);
        return NULL;
    }
    iwd_metrics_db(label, "connect", NULL, 0, true, false);
    return conn;
}

PGconn *iwd_pg_control(iwd_thread_t *thread)
{
    if (thread->control != NULL && PQstatus(thread->control) != CONNECTION_OK) {
        PQfinish(thread->control);
        thread->control = NULL;
        iwd_metrics_db("control", "disconnect", NULL, 0, false, true);
    }
    if (thread->control == NULL)
        thread->control = connect_db(iwd_conf.control_db, "control");
    return thread->control;
}

/* An SQL call of a REST route: sent on a connection of its tenant, or waiting for one. */
#define PENDING_MAX_PARAMS 5
struct iwd_pg_pending {
    iwd_call_t *call;               /* NULL once the request is gone (its client went away) */
    iwd_pg_pending_t **guard;       /* in the request's pool: clears call when the request is disposed */
    const char *sql;                /* a fixed text of the route table (prepared statements are keyed by it) */
    char *values[PENDING_MAX_PARAMS];
    int nparams;
    int success_status, null_status;
    bool retried;
    char command[64];
    double sent_ms;
    iwd_pg_pending_t *next;
};

static void fail_pending(iwd_pg_pending_t *pending, int status, const char *message);

/* The request a call answers, no longer tied to the call; NULL when the request is gone. */
static iwd_call_t *detach(iwd_pg_pending_t *pending)
{
    iwd_call_t *call = pending->call;

    if (call != NULL)
        *pending->guard = NULL;
    pending->call = NULL;
    return call;
}

static void pending_free(iwd_pg_pending_t *pending)
{
    detach(pending);
    for (int i = 0; i < pending->nparams; i++)
        free(pending->values[i]);
    free(pending);
}

/*
 * The loop watches a duplicate of the connection's socket descriptor, not libpq's own: libpq closes its
 * descriptor by itself when the connection breaks, and the loop must stop watching a descriptor that
 * is still open, or it would unregister a number the process may already have given to another socket.
 */
static void unwatch(iwd_tenant_conn_t *tc)
{
    if (tc->sock == NULL)
        return;
    h2o_socket_close(tc->sock);
    tc->sock = NULL;
}

/* Take a tenant connection out of the thread's list. */
static void unlink_conn(iwd_thread_t *thread, iwd_tenant_conn_t *gone)
{
    for (iwd_tenant_conn_t **p = &thread->tenants; *p != NULL; p = &(*p)->next)
        if (*p == gone) {
            *p = gone->next;
            break;
        }
    thread->tenant_conns--;
}

/*
 * Close one tenant connection; the call it was running, if any, is answered 503. One still being opened
 * is only marked: its connector thread reports it later, and it is freed then.
 */
static void close_conn(iwd_thread_t *thread, iwd_tenant_conn_t *gone)
{
    unlink_conn(thread, gone);
    if (gone->connecting) {
        gone->abandoned = true;
        return;
    }
    if (gone->running != NULL)
        fail_pending(gone->running, 503, "the tenant database connection was closed");
    gone->running = NULL;
    if (h2o_timeout_is_linked(&gone->deadline))
        h2o_timeout_unlink(&gone->deadline);
    if (h2o_timeout_is_linked(&gone->flush_tick))
        h2o_timeout_unlink(&gone->flush_tick);
    if (gone->result != NULL)
        PQclear(gone->result);
    unwatch(gone);
    PQfinish(gone->conn);
    iwd_metrics_db(gone->ccid, "disconnect", NULL, 0, false, true);
    free(gone);
}

static void fail_waiting(iwd_thread_t *thread, const char *ccid, int status, const char *message);
static void next_waiting(iwd_thread_t *thread, iwd_tenant_conn_t *tc, const char *ccid);
static int watch(iwd_tenant_conn_t *tc);

/* A connection a connector thread opened (or failed to), reported to the loop of the thread that asked. */
typedef struct connect_job {
    h2o_multithread_message_t super;
    h2o_multithread_receiver_t *receiver;
    iwd_tenant_conn_t *tc; /* read only by the connector: its conninfo does not change */
    PGconn *conn;
} connect_job_t;

static void *connector_main(void *arg)
{
    connect_job_t *job = arg;

    job->conn = iwd_pg_connect(job->tc->conninfo);
    h2o_multithread_send_message(job->receiver, &job->super);
    return NULL;
}

/*
 * Warn, once per tenant and thread, that a tenant's sessions run as a superuser: they should log in as a
 * member of the database's iwd_app_<database> role (README, Roles). The tenants warned are remembered by
 * the FNV-1a hash of their ccid (a log line, not an identity), up to IWD_SUPERUSER_WARNED per thread.
 */
#define IWD_SUPERUSER_WARNED 1024
static _Thread_local uint64_t superuser_warned[IWD_SUPERUSER_WARNED];
static _Thread_local int nsuperuser_warned;

static void warn_superuser(const iwd_tenant_conn_t *tc)
{
    const char *su = PQparameterStatus(tc->conn, "is_superuser");
    uint64_t h = 14695981039346656037u;

    if (su == NULL || strcmp(su, "on") != 0)
        return;
    for (const char *c = tc->ccid; *c != '\0'; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211u;
    for (int i = 0; i < nsuperuser_warned; i++)
        if (superuser_warned[i] == h)
            return;
    if (nsuperuser_warned < IWD_SUPERUSER_WARNED)
        superuser_warned[nsuperuser_warned++] = h;
    iwd_log(IWD_LOG_WARN, "tenant sessions run as a superuser", "%s: user %s of database %s; use a login that is a member"
            " of iwd_app_<database> (SELECT iwd.app_role() in that database)", tc->ccid, PQuser(tc->conn), PQdb(tc->conn));
}

/*
 * The loop's end of the connector threads: a new connection serves the first call of its tenant that is
 * waiting; a failed one fails the tenant's waiting calls when the thread has no other connection to it.
 */
static void on_connected(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    iwd_thread_t *thread = (iwd_thread_t *)((char *)receiver - offsetof(iwd_thread_t, pg_connected));

    while (!h2o_linklist_is_empty(messages)) {
        connect_job_t *job = (connect_job_t *)H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        iwd_tenant_conn_t *tc = job->tc, *other;
        PGconn *conn = job->conn;
        bool others = false;

        h2o_linklist_unlink(&job->super.link);
        free(job);
        tc->connecting = false;
        if (tc->abandoned) {
            PQfinish(conn);
            free(tc);
            continue;
        }
        if (PQstatus(conn) != CONNECTION_OK) {
            iwd_log(IWD_LOG_WARN, "database connection failed", "%s: %s", tc->ccid, PQerrorMessage(conn));
            iwd_metrics_db(tc->ccid, "connect", "08006", 0, false, false);
            PQfinish(conn);
            unlink_conn(thread, tc);
            for (other = thread->tenants; other != NULL; other = other->next)
                others |= strcmp(other->ccid, tc->ccid) == 0;
            if (!others)
                fail_waiting(thread, tc->ccid, 503, "the tenant database is not reachable");
            free(tc);
            continue;
        }
        tc->conn = conn;
        iwd_metrics_db(tc->ccid, "connect", NULL, 0, true, false);
        warn_superuser(tc);
        if (PQsetnonblocking(conn, 1) != 0 || watch(tc) != IWD_OK) {
            close_conn(thread, tc);
            continue;
        }
        next_waiting(thread, tc, tc->ccid);
    }
}

/*
 * Have a connector thread open a new connection to the tenant's database for this thread: the entry is
 * in the thread's list at once (connecting), the connection comes through on_connected. IWD_ERR when no
 * thread can be started.
 */
static int start_connect(iwd_thread_t *thread, const iwd_tenant_t *tenant)
{
    iwd_tenant_conn_t *tc = calloc(1, sizeof(*tc));
    connect_job_t *job = calloc(1, sizeof(*job));
    pthread_attr_t attr;
    pthread_t connector;
    int rc;

    snprintf(tc->ccid, sizeof(tc->ccid), "%s", tenant->ccid);
    snprintf(tc->conninfo, sizeof(tc->conninfo), "%s", tenant->conninfo);
    tc->thread = thread;
    tc->connecting = true;
    job->receiver = &thread->pg_connected;
    job->tc = tc;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&connector, &attr, connector_main, job);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        iwd_log(IWD_LOG_ERROR, "cannot start a connector thread", "%s: %s", tenant->ccid, strerror(rc));
        free(job);
        free(tc);
        return IWD_ERR;
    }
    tc->next = thread->tenants;
    thread->tenants = tc;
    thread->tenant_conns++;
    return IWD_OK;
}

/*
 * An idle connection to the tenant's database. From a worker thread (sync false) the loop never waits
 * for a connection to be established: NULL with *busy set when the call must wait, because the thread's
 * IWD_PG_CONNS_PER_TENANT connections to the tenant are in use or a new one is being opened for it;
 * NULL with *busy clear when none can be had. A thread without a loop (sync true) gets a new
 * connection at once, beyond the bound.
 */
static iwd_tenant_conn_t *idle_conn(iwd_thread_t *thread, const iwd_tenant_t *tenant, bool sync, bool *busy)
{
    iwd_tenant_conn_t *tc, *next;
    PGconn *conn;
    int in_use = 0;

    *busy = false;
    for (tc = thread->tenants; tc != NULL; tc = next) {
        next = tc->next;
        if (strcmp(tc->ccid, tenant->ccid) != 0)
            continue;
        if (strcmp(tc->conninfo, tenant->conninfo) != 0) {
            /* re-provisioned elsewhere */
            iwd_pg_drop_tenant(thread, tenant->ccid);
            in_use = 0;
            break;
        }
        if (tc->running != NULL || tc->connecting) {
            in_use++;
            continue;
        }
        if (PQstatus(tc->conn) != CONNECTION_OK && !sync) {
            close_conn(thread, tc); /* broken while idle: a new connection replaces it */
            continue;
        }
        if (PQstatus(tc->conn) != CONNECTION_OK) {
            unwatch(tc);
            PQreset(tc->conn);
            tc->nprepared = 0; /* a new session has no prepared statements */
            if (PQstatus(tc->conn) != CONNECTION_OK)
                return NULL;
        }
        return tc;
    }
    if (in_use >= IWD_PG_CONNS_PER_TENANT && !sync) {
        *busy = true;
        return NULL;
    }
    if (thread->tenant_conns >= MAX_TENANT_CONNS_PER_THREAD)
        return NULL;
    if (!sync) {
        *busy = start_connect(thread, tenant) == IWD_OK;
        return NULL;
    }
    if ((conn = connect_db(tenant->conninfo, tenant->ccid)) == NULL)
        return NULL;
    tc = calloc(1, sizeof(*tc));
    snprintf(tc->ccid, sizeof(tc->ccid), "%s", tenant->ccid);
    snprintf(tc->conninfo, sizeof(tc->conninfo), "%s", tenant->conninfo);
    tc->conn = conn;
    tc->thread = thread;
    tc->next = thread->tenants;
    thread->tenants = tc;
    thread->tenant_conns++;
    return tc;
}

PGconn *iwd_pg_tenant(iwd_thread_t *thread, const iwd_tenant_t *tenant)
{
    bool busy;
    iwd_tenant_conn_t *tc = idle_conn(thread, tenant, true, &busy);

    return tc != NULL ? tc->conn : NULL;
}

/* Close the thread's connections to a tenant; the calls running or waiting on them are answered 503. */
void iwd_pg_drop_tenant(iwd_thread_t *thread, const char *ccid)
{
    iwd_tenant_conn_t *tc, *next;

    for (tc = thread->tenants; tc != NULL; tc = next) {
        next = tc->next;
        if (strcmp(tc->ccid, ccid) == 0)
            close_conn(thread, tc);
    }
    fail_waiting(thread, ccid, 503, "the tenant database connection was closed");
}

/* Answer every call of the tenant waiting for a connection (and drop those whose client went away). */
static void fail_waiting(iwd_thread_t *thread, const char *ccid, int status, const char *message)
{
    iwd_pg_pending_t **p = &thread->waiting;

    while (*p != NULL) {
        iwd_pg_pending_t *pending = *p;
        if (pending->call != NULL && strcmp(pending->call->tenant.ccid, ccid) != 0) {
            p = &pending->next;
            continue;
        }
        *p = pending->next;
        fail_pending(pending, status, message);
    }
    thread->waiting_tail = p;
}

/* Close every connection of the thread (at shutdown: its loop has stopped, nothing is answered). */
/* A worker thread's share of this file: where connector threads report, the deadline of its calls. */
void iwd_pg_thread_init(iwd_thread_t *thread)
{
    h2o_multithread_register_receiver(thread->ctx.queue, &thread->pg_connected, on_connected);
    h2o_timeout_init(thread->ctx.loop, &thread->pg_call_deadline,
                     (uint64_t)iwd_conf.statement_timeout_ms + CALL_DEADLINE_GRACE_MS);
    h2o_timeout_init(thread->ctx.loop, &thread->pg_flush_tick, FLUSH_TICK_MS);
}

void iwd_pg_close_all(iwd_thread_t *thread)
{
    while (thread->waiting != NULL) {
        iwd_pg_pending_t *pending = thread->waiting;
        thread->waiting = pending->next;
        pending_free(pending);
    }
    thread->waiting_tail = &thread->waiting;
    while (thread->tenants != NULL) {
        if (thread->tenants->running != NULL) {
            pending_free(thread->tenants->running);
            thread->tenants->running = NULL;
        }
        close_conn(thread, thread->tenants);
    }
}
PGresult *iwd_pg_exec(PGconn *conn, const char *db_label, const char *command, const char *sql, int nparams,
                      const char *const *values)
{
    double start = iwd_now_ms_precise();
    PGresult *res = PQexecParams(conn, sql, nparams, NULL, values, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    const char *code = NULL;

    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (code == NULL)
            code = "08006";
    }
    iwd_metrics_db(db_label, command, code, iwd_now_ms_precise() - start, false, false);
    return res;
}

/* The first word of an SQL call (its function name), for metrics. */
static const char *command_of(const char *sql, char *buf, size_t size)
{
    const char *p = strstr(sql, "iwd.");
    size_t n = 0;

    if (p == NULL)
        return "query";
    p += 4;
    while (p[n] != '\0' && p[n] != '(' && n + 1 < size)
        n++;
    memcpy(buf, p, n);
    buf[n] = '\0';
    return buf;
}

static void fail_pending(iwd_pg_pending_t *pending, int status, const char *message)
{
    iwd_call_t *call = detach(pending);

    if (call != NULL)
        iwd_answer_error(call, status, message);
    pending_free(pending);
}

/* The request pool's dispose hook: the call's answer has nowhere to go any more. */
static void on_request_gone(void *guard)
{
    iwd_pg_pending_t *pending = *(iwd_pg_pending_t **)guard;

    if (pending != NULL)
        pending->call = NULL;
}

static void send_call(iwd_tenant_conn_t *tc, iwd_pg_pending_t *pending);
static void run_prepared(iwd_tenant_conn_t *tc);
static void on_result_ready(h2o_socket_t *sock, const char *err);

/*
 * Watch the connection's socket from the loop (a duplicate of it, see unwatch), idle or not: a server
 * that closes an idle connection is noticed at once, so that no call is sent on it. IWD_ERR when out of
 * descriptors.
 */
static int watch(iwd_tenant_conn_t *tc)
{
    int fd;

    if (tc->sock != NULL)
        return IWD_OK;
    if ((fd = dup(PQsocket(tc->conn))) < 0) {
        iwd_log(IWD_LOG_ERROR, "cannot watch a tenant connection", "%s: %s", tc->ccid, strerror(errno));
        return IWD_ERR;
    }
    tc->sock = h2o_evloop_socket_create(tc->thread->ctx.loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    tc->sock->data = tc;
    h2o_socket_read_start(tc->sock, on_result_ready);
    return IWD_OK;
}

/*
 * Count the calls waiting for a busy connection on this thread, and those of one tenant: the calls in the
 * queue but as many as the connections being opened will take. Calls whose client went away are dropped
 * on the way, so that they hold no place.
 */
static int count_waiting(iwd_thread_t *thread, const char *ccid, int *of_tenant)
{
    iwd_pg_pending_t **p = &thread->waiting;
    int total = 0;

    *of_tenant = 0;
    for (iwd_tenant_conn_t *tc = thread->tenants; tc != NULL; tc = tc->next)
        if (tc->connecting) {
            total--;
            *of_tenant -= strcmp(tc->ccid, ccid) == 0;
        }
    while (*p != NULL) {
        iwd_pg_pending_t *pending = *p;
        if (pending->call == NULL) {
            *p = pending->next;
            pending_free(pending);
            continue;
        }
        total++;
        *of_tenant += strcmp(pending->call->tenant.ccid, ccid) == 0;
        p = &pending->next;
    }
    thread->waiting_tail = p;
    return total;
}

/*
 * Send a call on an idle connection of its tenant, queue it when all are in use, or answer 503. The
 * queue is bounded per tenant (so that one tenant's backlog leaves room for the others: each tenant has
 * its own connections, so a tenant's calls wait only behind its own) and per thread (each waiting call
 * holds its body); beyond either bound the call is refused at once, with Retry-After.
 */
static void dispatch(iwd_thread_t *thread, iwd_pg_pending_t *pending)
{
    bool busy;
    iwd_tenant_conn_t *tc = idle_conn(thread, &pending->call->tenant, false, &busy);
    int of_tenant, total;

    if (tc != NULL) {
        send_call(tc, pending);
    } else if (busy) {
        total = count_waiting(thread, pending->call->tenant.ccid, &of_tenant);
        if (of_tenant >= iwd_conf.waiting_calls_per_tenant || total >= iwd_conf.waiting_calls_per_thread) {
            iwd_metrics_refused(pending->call->tenant.ccid);
            fail_pending(pending, 503,
                         of_tenant >= iwd_conf.waiting_calls_per_tenant
                             ? "too many calls of this tenant are waiting for a database connection; retry later"
                             : "too many calls are waiting for a database connection; retry later");
            return;
        }
        pending->next = NULL;
        *thread->waiting_tail = pending;
        thread->waiting_tail = &pending->next;
    } else {
        fail_pending(pending, 503, "the tenant database is not reachable");
    }
}

/* Give a connection of the tenant (tc, or a new one when NULL) to the first call waiting for one. */
static void next_waiting(iwd_thread_t *thread, iwd_tenant_conn_t *tc, const char *ccid)
{
    iwd_pg_pending_t **p = &thread->waiting;

    while (*p != NULL) {
        iwd_pg_pending_t *pending = *p;
        if (pending->call != NULL && strcmp(pending->call->tenant.ccid, ccid) != 0) {
            p = &pending->next;
            continue;
        }
        *p = pending->next;
        if (thread->waiting_tail == &pending->next)
            thread->waiting_tail = p;
        if (pending->call == NULL) {
            pending_free(pending);
            continue;
        }
        if (tc != NULL)
            send_call(tc, pending);
        else
            dispatch(thread, pending);
        return;
    }
}

/* A call's result is in, or its connection broke: answer it, or retry it once on a new connection. */
static void complete(iwd_tenant_conn_t *tc)
{
    iwd_thread_t *thread = tc->thread;
    iwd_pg_pending_t *pending = tc->running;
    PGresult *res = tc->result;
    ExecStatusType st = PQresultStatus(res);
    const char *code = NULL;
    iwd_call_t *call;
    char ccid[sizeof(tc->ccid)];

    tc->running = NULL;
    tc->result = NULL;
    if (h2o_timeout_is_linked(&tc->deadline))
        h2o_timeout_unlink(&tc->deadline);
    if (h2o_timeout_is_linked(&tc->flush_tick))
        h2o_timeout_unlink(&tc->flush_tick);
    memcpy(ccid, tc->ccid, sizeof(ccid));
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
        code = PQresultErrorField(res, PG_DIAG_SQLSTATE) != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : "08006";
    iwd_metrics_db(ccid, pending->command, code, iwd_now_ms_precise() - pending->sent_ms, false, false);
    if (st != PGRES_TUPLES_OK && PQstatus(tc->conn) != CONNECTION_OK) {
        /* the connection broke (server restart, failover): one retry on a fresh connection */
        PQclear(res);
        close_conn(thread, tc);
        if (!pending->retried && pending->call != NULL) {
            pending->retried = true;
            dispatch(thread, pending);
        } else {
            fail_pending(pending, 503, "the tenant database is not reachable");
        }
        next_waiting(thread, NULL, ccid);
        return;
    }
    if ((call = detach(pending)) != NULL)
        iwd_answer_result(call, res, pending->success_status, pending->null_status);
    PQclear(res);
    pending_free(pending);
    next_waiting(thread, tc, ccid);
}

/* The loop's callback when a tenant connection's socket is readable: results, or a closed connection. */
static void on_result_ready(h2o_socket_t *sock, const char *err)
{
    iwd_tenant_conn_t *tc = sock->data;
    PGnotify *notify;

    (void)err;
    if (!PQconsumeInput(tc->conn)) {
        if (tc->running != NULL) {
            /* rows may have come, but no ReadyForQuery: the commit is not confirmed, the call failed */
            if (tc->result != NULL && PQresultStatus(tc->result) != PGRES_FATAL_ERROR) {
                PQclear(tc->result);
                tc->result = NULL;
            }
            complete(tc);
        } else
            unwatch(tc); /* an idle connection the server closed: replaced on its next use */
        return;
    }
    if (tc->running == NULL) {
        while ((notify = PQnotifies(tc->conn)) != NULL)
            PQfreemem(notify);
        return;
    }
    while (!PQisBusy(tc->conn)) {
        PGresult *res = PQgetResult(tc->conn);
        if (res == NULL && tc->preparing != NULL) {
            run_prepared(tc);
            return;
        }
        if (res == NULL) {
            complete(tc);
            return;
        }
        if (tc->result == NULL) {
            tc->result = res;
        } else if (PQresultStatus(res) == PGRES_FATAL_ERROR) {
            /* an error after the rows (the commit failed, or the server went away before it): it wins */
            PQclear(tc->result);
            tc->result = res;
        } else {
            PQclear(res);
        }
    }
}

static void on_flush_tick(h2o_timeout_entry_t *entry);

/*
 * Write what libpq holds of the running call (connections of the loop are non-blocking: a large call, or
 * a server that reads slowly or not at all, never holds the loop in a write). What the socket does not
 * take now is written on at the next tick; the call's deadline bounds it all. IWD_ERR when the
 * connection broke.
 */
static int flush(iwd_tenant_conn_t *tc)
{
    int rc = PQflush(tc->conn);

    if (rc == 1 && !h2o_timeout_is_linked(&tc->flush_tick)) {
        tc->flush_tick.cb = on_flush_tick;
        h2o_timeout_link(tc->thread->ctx.loop, &tc->thread->pg_flush_tick, &tc->flush_tick);
    }
    return rc < 0 ? IWD_ERR : IWD_OK;
}

static void on_flush_tick(h2o_timeout_entry_t *entry)
{
    iwd_tenant_conn_t *tc = (iwd_tenant_conn_t *)((char *)entry - offsetof(iwd_tenant_conn_t, flush_tick));

    if (tc->running != NULL && flush(tc) != IWD_OK)
        complete(tc);
}

/*
 * The running call's statement is prepared, or could not be (a bad input type, a broken connection: the
 * error then surfaces from the plain call): send the call itself.
 */
static void run_prepared(iwd_tenant_conn_t *tc)
{
    iwd_pg_pending_t *pending = tc->running;
    const char *const *values = (const char *const *)pending->values;
    bool prepared = tc->result != NULL && PQresultStatus(tc->result) == PGRES_COMMAND_OK;
    char name[16];
    int sent;

    if (tc->result != NULL)
        PQclear(tc->result);
    tc->result = NULL;
    snprintf(name, sizeof(name), "s%d", tc->nprepared);
    if (prepared)
        tc->prepared[tc->nprepared++] = tc->preparing;
    tc->preparing = NULL;
    if (prepared)
        sent = PQsendQueryPrepared(tc->conn, name, pending->nparams, values, NULL, NULL, 0);
    else
        sent = PQsendQueryParams(tc->conn, pending->sql, pending->nparams, NULL, values, NULL, NULL, 0);
    if (!sent || flush(tc) != IWD_OK)
        complete(tc);
}

/*
 * A call's server sent nothing back for IWD_STATEMENT_TIMEOUT_MS and a grace: its own timeout would have
 * ended the statement, so the server is stopped or cut off. The call is answered 504 and the connection
 * dropped (a late answer could not be told from the next call's); the tenant's next waiting call gets a
 * new one.
 */
static void on_call_deadline(h2o_timeout_entry_t *entry)
{
    iwd_tenant_conn_t *tc = (iwd_tenant_conn_t *)((char *)entry - offsetof(iwd_tenant_conn_t, deadline));
    iwd_thread_t *thread = tc->thread;
    char ccid[sizeof(tc->ccid)];

    iwd_log(IWD_LOG_ERROR, "a tenant database did not answer a call", "%s: nothing within %d ms", tc->ccid,
            iwd_conf.statement_timeout_ms + CALL_DEADLINE_GRACE_MS);
    iwd_metrics_db(tc->ccid, tc->running->command, "08006", iwd_now_ms_precise() - tc->running->sent_ms, false,
                   false);
    fail_pending(tc->running, 504, "the tenant database did not answer in time");
    tc->running = NULL;
    memcpy(ccid, tc->ccid, sizeof(ccid));
    close_conn(thread, tc);
    next_waiting(thread, NULL, ccid);
}

/*
 * Send a call on an idle connection (non-blocking: see flush) and watch for its result. A fixed SQL
 * text of the route table is prepared on its first use on the connection, so that the server parses and
 * plans it once per connection rather than once per request; the preparation is sent like the call (its
 * answer comes through the loop, run_prepared sends the call).
 */
static void send_call(iwd_tenant_conn_t *tc, iwd_pg_pending_t *pending)
{
    const char *const *values = (const char *const *)pending->values;
    char name[16];
    int i, sent;

    tc->running = pending;
    pending->sent_ms = iwd_now_ms_precise();
    tc->deadline.cb = on_call_deadline;
    h2o_timeout_link(tc->thread->ctx.loop, &tc->thread->pg_call_deadline, &tc->deadline);
    for (i = 0; i < tc->nprepared && tc->prepared[i] != pending->sql; i++)
        ;
    snprintf(name, sizeof(name), "s%d", i);
    if (i < tc->nprepared) {
        sent = PQsendQueryPrepared(tc->conn, name, pending->nparams, values, NULL, NULL, 0);
    } else if (i < IWD_PREPARED_MAX) {
        sent = PQsendPrepare(tc->conn, name, pending->sql, pending->nparams, NULL);
        tc->preparing = sent ? pending->sql : NULL;
    } else {
        sent = PQsendQueryParams(tc->conn, pending->sql, pending->nparams, NULL, values, NULL, NULL, 0);
    }
    if (!sent || flush(tc) != IWD_OK) {
        complete(tc);
        return;
    }
    if (watch(tc) != IWD_OK)
        close_conn(tc->thread, tc); /* its call fails */
}

int iwd_pg_call(iwd_call_t *call, const char *sql, int nparams, const char *const *values, int success_status,
                int null_status)
{
    iwd_pg_pending_t *pending = calloc(1, sizeof(*pending));
    char command[64];

    if (nparams > PENDING_MAX_PARAMS)
        abort(); /* the route table never has more */
    pending->call = call;
    pending->guard = h2o_mem_alloc_shared(&call->req->pool, sizeof(*pending->guard), on_request_gone);
    *pending->guard = pending;
    pending->sql = sql;
    pending->nparams = nparams;
    for (int i = 0; i < nparams; i++)
        pending->values[i] = values[i] != NULL ? strdup(values[i]) : NULL;
    pending->success_status = success_status;
    pending->null_status = null_status;
    snprintf(pending->command, sizeof(pending->command), "%s", command_of(sql, command, sizeof(command)));
    dispatch(call->thread, pending);
    return 0;
}
