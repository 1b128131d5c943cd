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
 *
 * Connections scale with active tenants: one idle for IWD_PG_IDLE_TIMEOUT_S is closed by a timer of the
 * loop, and every tenant connection holds a slot of its database server (server_slots.h), at most
 * IWD_PG_MAX_CONNECTIONS_PER_SERVER for all threads. A call that finds no slot waits in its thread's queue
 * (bounded like any waiting call, and for at most IWD_STATEMENT_TIMEOUT_MS); waiting marks idle
 * connections of other tenants of the server, least recently used first, to be closed by their threads.
 * A slot freed anywhere is granted to a waiting thread, whose loop is woken by a message (slot_waker_t):
 * it closes its marked connections and opens connections for its waiting calls with the slots it holds.
 */
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
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
#define LINGER_MS 10000             /* longest a closed connection's slot waits for its server to end the session */

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
    iwd_pg_result_cb on_result;     /* given the result instead of answering from it (iwd_pg_call_then) */
    void *on_result_arg;
    char command[64];
    double sent_ms;
    iwd_thread_t *thread;
    iwd_server_t *slot_server;      /* waiting for a slot of this server (server_slots.h); NULL otherwise */
    bool slot_claimed;              /* given a slot in this round of claim_slots, its connection not yet started */
    h2o_timeout_entry_t wait_deadline; /* while waiting: answered 503 after IWD_STATEMENT_TIMEOUT_MS */
    iwd_pg_pending_t *next;
};

/*
 * A worker thread's end of the server slots: the message that wakes its loop when a slot is granted to
 * it or one of its idle connections is to be closed (one in flight at a time: woken), and the timeouts
 * of its idle connections and waiting calls.
 */
typedef struct slot_waker {
    iwd_thread_t *thread;
    h2o_multithread_receiver_t receiver;
    h2o_multithread_message_t message;
    atomic_bool woken;
    h2o_timeout_t idle;
    h2o_timeout_t wait;
    h2o_timeout_t linger;
} slot_waker_t;

static slot_waker_t wakers[IWD_SLOTS_MAX_THREADS];
static bool shutting_down; /* iwd_pg_close_all: the loops have stopped, nothing lingers */

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
    if (h2o_timeout_is_linked(&pending->wait_deadline))
        h2o_timeout_unlink(&pending->wait_deadline);
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

/*
 * A closed connection's slot is released once its server has ended the session (end of file on the
 * socket the loop watched, which outlives libpq's descriptor), so that the server never counts more of
 * the sidecar's sessions than the cap, not even while a backend exits; after LINGER_MS at most.
 */
typedef struct lingering {
    h2o_socket_t *sock;
    iwd_server_t *server;
    h2o_timeout_entry_t timer;
} lingering_t;

static void linger_done(lingering_t *l)
{
    if (h2o_timeout_is_linked(&l->timer))
        h2o_timeout_unlink(&l->timer);
    h2o_socket_close(l->sock);
    iwd_slots_release(l->server);
    free(l);
}

static void on_linger_readable(h2o_socket_t *sock, const char *err)
{
    char discard[512];
    ssize_t n = err != NULL ? 0 : recv(h2o_socket_get_fd(sock), discard, sizeof(discard), MSG_DONTWAIT);

    if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR)))
        return;
    linger_done(sock->data); /* end of file, or the connection is gone */
}

static void on_linger_timeout(h2o_timeout_entry_t *entry)
{
    linger_done(H2O_STRUCT_FROM_MEMBER(lingering_t, timer, entry));
}

/* Close the connection's session and release its slot once the server has ended it (see lingering_t). */
static void finish_session(iwd_tenant_conn_t *tc)
{
    lingering_t *l;

    if (tc->sock == NULL || tc->slot.server == NULL || shutting_down) {
        unwatch(tc);
        PQfinish(tc->conn);
        if (tc->slot.server != NULL)
            iwd_slots_release(tc->slot.server);
        return;
    }
    l = calloc(1, sizeof(*l));
    l->sock = tc->sock;
    l->server = tc->slot.server;
    tc->sock = NULL;
    l->sock->data = l;
    h2o_socket_read_stop(l->sock);
    h2o_socket_read_start(l->sock, on_linger_readable);
    l->timer.cb = on_linger_timeout;
    h2o_timeout_link(tc->thread->ctx.loop, &wakers[tc->thread->index].linger, &l->timer);
    PQfinish(tc->conn);
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
    if (h2o_timeout_is_linked(&gone->idle_timer))
        h2o_timeout_unlink(&gone->idle_timer);
    iwd_slots_forget(&gone->slot);
    if (gone->running != NULL)
        fail_pending(gone->running, 503, "the tenant database connection was closed");
    gone->running = NULL;
    if (h2o_timeout_is_linked(&gone->deadline))
        h2o_timeout_unlink(&gone->deadline);
    if (h2o_timeout_is_linked(&gone->flush_tick))
        h2o_timeout_unlink(&gone->flush_tick);
    if (gone->result != NULL)
        PQclear(gone->result);
    finish_session(gone);
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
            if (tc->slot.server != NULL)
                iwd_slots_release(tc->slot.server);
            free(tc);
            continue;
        }
        if (PQstatus(conn) != CONNECTION_OK) {
            iwd_log(IWD_LOG_WARN, "database connection failed", "%s: %s", tc->ccid, PQerrorMessage(conn));
            iwd_metrics_db(tc->ccid, "connect", "08006", 0, false, false);
            PQfinish(conn);
            if (tc->slot.server != NULL)
                iwd_slots_release(tc->slot.server);
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
 * Have a connector thread open a new connection to the tenant's database for this thread, on a slot of
 * its server (NULL: one without a slot): the entry is in the thread's list at once (connecting), the
 * connection comes through on_connected. IWD_ERR when no thread can be started (the slot is released).
 */
static int start_connect(iwd_thread_t *thread, const iwd_tenant_t *tenant, iwd_server_t *server)
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
    tc->slot.server = server;
    tc->slot.thread = thread->index;
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
        if (server != NULL)
            iwd_slots_release(server);
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
 * IWD_PG_CONNS_PER_TENANT connections to the tenant are in use, a new one is being opened for it, or
 * (*slot_wait set to the server) its database server has no free slot; NULL with *busy clear when none
 * can be had. A thread without a loop (sync true) gets a new connection at once, outside the slots.
 */
static iwd_tenant_conn_t *idle_conn(iwd_thread_t *thread, const iwd_tenant_t *tenant, bool sync, bool *busy,
                                    iwd_server_t **slot_wait)
{
    iwd_tenant_conn_t *tc, *next;
    iwd_server_t *server;
    PGconn *conn;
    int in_use = 0;

    *busy = false;
    *slot_wait = NULL;
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
        if (!sync && !iwd_slots_take(&tc->slot)) {
            close_conn(thread, tc); /* its slot is wanted by a call of another tenant */
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
        server = iwd_slots_server(tenant->conninfo);
        if (server != NULL && !iwd_slots_acquire(server, thread->index)) {
            *busy = true;
            *slot_wait = server;
            return NULL;
        }
        *busy = start_connect(thread, tenant, server) == IWD_OK;
        return NULL;
    }
    if ((conn = connect_db(tenant->conninfo, tenant->ccid)) == NULL)
        return NULL;
    PQclear(PQexec(conn, "SET application_name = 'iwd-sidecar-push'")); /* apart from the API's sessions */
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
    iwd_server_t *slot_wait;
    iwd_tenant_conn_t *tc = idle_conn(thread, tenant, true, &busy, &slot_wait);

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

/* Wake a worker thread's loop for its slots (server_slots.h); from any thread. */
static void wake_for_slots(int index)
{
    slot_waker_t *w = &wakers[index];

    if (w->thread != NULL && !atomic_exchange(&w->woken, true))
        h2o_multithread_send_message(&w->receiver, &w->message);
}

static void on_slots_wake(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages);
static void on_idle_timeout(h2o_timeout_entry_t *entry);
static void on_wait_deadline(h2o_timeout_entry_t *entry);

static pthread_once_t slots_once = PTHREAD_ONCE_INIT;

static void slots_setup(void)
{
    iwd_slots_init(iwd_conf.pg_max_connections_per_server, wake_for_slots);
}

/*
 * A worker thread's share of this file: where connector threads report, the deadline of its calls, its
 * end of the server slots and the timeouts of its idle connections and waiting calls.
 */
void iwd_pg_thread_init(iwd_thread_t *thread)
{
    slot_waker_t *w = &wakers[thread->index];

    pthread_once(&slots_once, slots_setup);
    h2o_multithread_register_receiver(thread->ctx.queue, &thread->pg_connected, on_connected);
    h2o_timeout_init(thread->ctx.loop, &thread->pg_call_deadline,
                     (uint64_t)iwd_conf.statement_timeout_ms + CALL_DEADLINE_GRACE_MS);
    h2o_timeout_init(thread->ctx.loop, &thread->pg_flush_tick, FLUSH_TICK_MS);
    h2o_timeout_init(thread->ctx.loop, &w->idle, (uint64_t)iwd_conf.pg_idle_timeout_s * 1000);
    h2o_timeout_init(thread->ctx.loop, &w->wait, (uint64_t)iwd_conf.statement_timeout_ms);
    h2o_timeout_init(thread->ctx.loop, &w->linger, LINGER_MS);
    h2o_multithread_register_receiver(thread->ctx.queue, &w->receiver, on_slots_wake);
    w->thread = thread;
}

/* Close every connection of the thread (at shutdown: its loop has stopped, nothing is answered). */

void iwd_pg_close_all(iwd_thread_t *thread)
{
    shutting_down = true;
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

/*
 * Run one statement and wait for its answer until deadline_ms at most; NULL when the server did not
 * answer in time or the connection broke (the caller closes the connection: a late answer would be read
 * as the next statement's).
 */
PGresult *iwd_pg_exec_within(PGconn *conn, const char *db, const char *command, const char *sql, int nparams,
                             const char *const *values, int64_t deadline_ms)
{
    double start = iwd_now_ms_precise();
    PGresult *res = NULL, *r;
    const char *code = NULL;

    if (!PQsendQueryParams(conn, sql, nparams, NULL, values, NULL, NULL, 0))
        goto failed;
    while (PQflush(conn) > 0 || PQisBusy(conn)) {
        struct pollfd pfd = {.fd = PQsocket(conn), .events = POLLIN | POLLOUT};
        int64_t left = deadline_ms - iwd_now_ms();
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0 || !PQconsumeInput(conn))
            goto failed;
    }
    while ((r = PQgetResult(conn)) != NULL) {
        if (res == NULL)
            res = r;
        else
            PQclear(r);
    }
    if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK)
        code = PQresultErrorField(res, PG_DIAG_SQLSTATE) != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : "08006";
    iwd_metrics_db(db, command, code, iwd_now_ms_precise() - start, false, false);
    return res;
failed:
    if (res != NULL)
        PQclear(res);
    iwd_metrics_db(db, command, "08006", iwd_now_ms_precise() - start, false, false);
    return NULL;
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

    if (call != NULL && pending->on_result != NULL)
        pending->on_result(call, NULL, status, message, pending->on_result_arg);
    else if (call != NULL)
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
static void claim_slots(iwd_thread_t *thread);
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
 * Send a call on an idle connection of its tenant, queue it when all are in use or its server has no
 * free slot, or answer 503. The queue is bounded per tenant (so that one tenant's backlog leaves room
 * for the others) and per thread (each waiting call holds its body); beyond either bound the call is
 * refused at once, with Retry-After. A queued call waits at most IWD_STATEMENT_TIMEOUT_MS.
 */
static void dispatch(iwd_thread_t *thread, iwd_pg_pending_t *pending)
{
    bool busy;
    iwd_server_t *slot_wait;
    iwd_tenant_conn_t *tc = idle_conn(thread, &pending->call->tenant, false, &busy, &slot_wait);
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
        pending->slot_server = slot_wait;
        if (!h2o_timeout_is_linked(&pending->wait_deadline)) {
            pending->wait_deadline.cb = on_wait_deadline;
            h2o_timeout_link(thread->ctx.loop, &wakers[thread->index].wait, &pending->wait_deadline);
        }
        if (slot_wait != NULL)
            claim_slots(thread);
    } else {
        fail_pending(pending, 503, "the tenant database is not reachable");
    }
}

/* The connections of the thread to a tenant, open or being opened. */
static int conns_of(iwd_thread_t *thread, const char *ccid)
{
    int n = 0;

    for (iwd_tenant_conn_t *tc = thread->tenants; tc != NULL; tc = tc->next)
        n += strcmp(tc->ccid, ccid) == 0;
    return n;
}

/*
 * A round of the thread's calls waiting for a slot of their server: in queue order, each whose tenant
 * may have another connection is given a slot (granted to the thread or free) or counted as a want of
 * the server (server_slots.h); then, the slots' lock released, a connection is started for each call
 * given a slot. The connection serves its tenant's first waiting call.
 */
static void claim_slots(iwd_thread_t *thread)
{
    iwd_pg_pending_t *pending;

    iwd_slots_begin_wants(thread->index);
    for (pending = thread->waiting; pending != NULL; pending = pending->next)
        if (pending->call != NULL && pending->slot_server != NULL &&
            conns_of(thread, pending->call->tenant.ccid) < IWD_PG_CONNS_PER_TENANT)
            pending->slot_claimed = iwd_slots_claim(pending->slot_server, thread->index);
    iwd_slots_end_wants(thread->index);
    for (pending = thread->waiting; pending != NULL; pending = pending->next) {
        iwd_server_t *server = pending->slot_server;
        if (!pending->slot_claimed)
            continue;
        pending->slot_claimed = false;
        pending->slot_server = NULL;
        if (conns_of(thread, pending->call->tenant.ccid) >= IWD_PG_CONNS_PER_TENANT ||
            thread->tenant_conns >= MAX_TENANT_CONNS_PER_THREAD)
            iwd_slots_release(server); /* this round gave the tenant connections enough already */
        else
            start_connect(thread, &pending->call->tenant, server);
    }
}

/*
 * The thread is woken for its slots: it closes its idle connections marked for eviction (their slots go
 * to the calls that wait, here or on another thread), then claims the slots granted to it.
 */
static void on_slots_wake(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    slot_waker_t *w = H2O_STRUCT_FROM_MEMBER(slot_waker_t, receiver, receiver);
    iwd_thread_t *thread = w->thread;
    iwd_tenant_conn_t *tc, *next;

    while (!h2o_linklist_is_empty(messages))
        h2o_linklist_unlink(messages->next);
    atomic_store(&w->woken, false);
    for (tc = thread->tenants; tc != NULL; tc = next) {
        next = tc->next;
        if (!tc->connecting && tc->running == NULL && iwd_slots_evicting(&tc->slot))
            close_conn(thread, tc);
    }
    claim_slots(thread);
}

/*
 * A connection with no call to run: idle, closed after IWD_PG_IDLE_TIMEOUT_S unless used again; or
 * closed at once when calls of another tenant wait for a slot of its server.
 */
static void rest(iwd_thread_t *thread, iwd_tenant_conn_t *tc)
{
    if (!iwd_slots_idle(&tc->slot)) {
        close_conn(thread, tc);
        return;
    }
    if (!h2o_timeout_is_linked(&tc->idle_timer)) {
        tc->idle_timer.cb = on_idle_timeout;
        h2o_timeout_link(thread->ctx.loop, &wakers[thread->index].idle, &tc->idle_timer);
    }
}

static void on_idle_timeout(h2o_timeout_entry_t *entry)
{
    iwd_tenant_conn_t *tc = H2O_STRUCT_FROM_MEMBER(iwd_tenant_conn_t, idle_timer, entry);

    if (tc->running != NULL || tc->connecting)
        return;
    if (tc->slot.server != NULL)
        iwd_slots_count_idle_timeout(tc->slot.server);
    close_conn(tc->thread, tc);
}

/*
 * A call waited IWD_STATEMENT_TIMEOUT_MS for a connection (its tenant's were busy for that long, or its
 * server had no free slot): it is answered 503 with Retry-After, and counted for its server.
 */
static void on_wait_deadline(h2o_timeout_entry_t *entry)
{
    iwd_pg_pending_t *pending = H2O_STRUCT_FROM_MEMBER(iwd_pg_pending_t, wait_deadline, entry);
    iwd_thread_t *thread = pending->thread;
    iwd_server_t *server = pending->slot_server;
    iwd_pg_pending_t **p;

    for (p = &thread->waiting; *p != NULL && *p != pending; p = &(*p)->next)
        ;
    if (*p == NULL)
        return; /* not waiting (cannot happen: the deadline is unlinked when the call leaves the queue) */
    *p = pending->next;
    if (thread->waiting_tail == &pending->next)
        thread->waiting_tail = p;
    if (server == NULL && pending->call != NULL)
        server = iwd_slots_server(pending->call->tenant.conninfo);
    if (server != NULL && pending->call != NULL)
        iwd_slots_count_wait_timeout(server);
    fail_pending(pending, 503, "no connection to the tenant database became free in time; retry later");
    if (server != NULL)
        claim_slots(thread); /* the thread's wants, counted again */
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
    if (tc != NULL)
        rest(thread, tc);
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
    if ((call = detach(pending)) != NULL && pending->on_result != NULL)
        pending->on_result(call, res, 0, NULL, pending->on_result_arg);
    else if (call != NULL)
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
            close_conn(tc->thread, tc); /* an idle connection the server closed: its slot is free again */
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
 * answer comes through the loop, run_prepared sends the call). With IWD_PG_PREPARE off (PgBouncer in
 * transaction mode, where a prepared statement lives on a server connection the next call may not get),
 * every call is sent as an unnamed statement.
 */
static void send_call(iwd_tenant_conn_t *tc, iwd_pg_pending_t *pending)
{
    const char *const *values = (const char *const *)pending->values;
    char name[16];
    int i, sent;

    tc->running = pending;
    pending->sent_ms = iwd_now_ms_precise();
    if (h2o_timeout_is_linked(&pending->wait_deadline))
        h2o_timeout_unlink(&pending->wait_deadline);
    if (h2o_timeout_is_linked(&tc->idle_timer))
        h2o_timeout_unlink(&tc->idle_timer);
    tc->deadline.cb = on_call_deadline;
    h2o_timeout_link(tc->thread->ctx.loop, &tc->thread->pg_call_deadline, &tc->deadline);
    for (i = 0; i < tc->nprepared && tc->prepared[i] != pending->sql; i++)
        ;
    snprintf(name, sizeof(name), "s%d", i);
    if (i < tc->nprepared) {
        sent = PQsendQueryPrepared(tc->conn, name, pending->nparams, values, NULL, NULL, 0);
    } else if (i < IWD_PREPARED_MAX && iwd_conf.pg_prepare) {
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

/* A route's SQL call, answered from its result or, when on_result is set, handed to it. */
static int call_sql(iwd_call_t *call, const char *sql, int nparams, const char *const *values, int success_status,
                    int null_status, iwd_pg_result_cb on_result, void *on_result_arg)
{
    iwd_pg_pending_t *pending = calloc(1, sizeof(*pending));
    char command[64];

    if (nparams > PENDING_MAX_PARAMS)
        abort(); /* the route table never has more */
    pending->call = call;
    pending->thread = call->thread;
    pending->guard = h2o_mem_alloc_shared(&call->req->pool, sizeof(*pending->guard), on_request_gone);
    *pending->guard = pending;
    pending->sql = sql;
    pending->nparams = nparams;
    for (int i = 0; i < nparams; i++)
        pending->values[i] = values[i] != NULL ? strdup(values[i]) : NULL;
    pending->success_status = success_status;
    pending->null_status = null_status;
    pending->on_result = on_result;
    pending->on_result_arg = on_result_arg;
    snprintf(pending->command, sizeof(pending->command), "%s", command_of(sql, command, sizeof(command)));
    iwd_slots_touch(call->tenant.ccid, iwd_now_ms());
    dispatch(call->thread, pending);
    return 0;
}

int iwd_pg_call(iwd_call_t *call, const char *sql, int nparams, const char *const *values, int success_status,
                int null_status)
{
    return call_sql(call, sql, nparams, values, success_status, null_status, NULL, NULL);
}

int iwd_pg_call_then(iwd_call_t *call, const char *sql, int nparams, const char *const *values,
                     iwd_pg_result_cb on_result, void *arg)
{
    return call_sql(call, sql, nparams, values, 200, 404, on_result, arg);
}
