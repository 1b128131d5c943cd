/*
 * iwd-sidecar PostgreSQL access: each thread keeps one connection to the control database and one per
 * tenant it has served (bounded by the number of threads per tenant), reconnecting when one breaks.
 * Every tenant REST call is one call of the extension's SQL API.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sidecar.h"

#define MAX_TENANT_CONNS_PER_THREAD 256

int64_t iwd_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double now_ms_precise(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

/* Server notices (e.g. "extension already exists, skipping") are not errors: keep them out of the log. */
static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

PGconn *iwd_pg_connect(const char *conninfo)
{
    PGconn *conn = PQconnectdb(conninfo);

    PQsetNoticeProcessor(conn, ignore_notice, NULL);
    return conn;
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

PGconn *iwd_pg_tenant(iwd_thread_t *thread, const iwd_tenant_t *tenant)
{
    iwd_tenant_conn_t *tc = iwd_pg_tenant_conn(thread, tenant);

    return tc != NULL ? tc->conn : NULL;
}

iwd_tenant_conn_t *iwd_pg_tenant_conn(iwd_thread_t *thread, const iwd_tenant_t *tenant)
{
    iwd_tenant_conn_t *tc;

    for (tc = thread->tenants; tc != NULL; tc = tc->next)
        if (strcmp(tc->ccid, tenant->ccid) == 0)
            break;
    if (tc != NULL && strcmp(tc->conninfo, tenant->conninfo) != 0) {
        /* re-provisioned elsewhere */
        iwd_pg_drop_tenant(thread, tenant->ccid);
        tc = NULL;
    }
    if (tc != NULL && PQstatus(tc->conn) != CONNECTION_OK) {
        PQreset(tc->conn);
        tc->nprepared = 0; /* a new session has no prepared statements */
        if (PQstatus(tc->conn) != CONNECTION_OK)
            return NULL;
    }
    if (tc == NULL) {
        PGconn *conn;
        if (thread->tenant_conns >= MAX_TENANT_CONNS_PER_THREAD)
            return NULL;
        if ((conn = connect_db(tenant->conninfo, tenant->ccid)) == NULL)
            return NULL;
        tc = calloc(1, sizeof(*tc));
        snprintf(tc->ccid, sizeof(tc->ccid), "%s", tenant->ccid);
        snprintf(tc->conninfo, sizeof(tc->conninfo), "%s", tenant->conninfo);
        tc->conn = conn;
        tc->next = thread->tenants;
        thread->tenants = tc;
        thread->tenant_conns++;
    }
    return tc;
}

/*
 * Run a fixed SQL text of the route table as a prepared statement of this connection (prepared on first
 * use), so that the server parses and plans it once per connection rather than once per request.
 */
static PGresult *exec_prepared(iwd_tenant_conn_t *tc, const char *command, const char *sql, int nparams,
                               const char *const *values)
{
    char name[16];
    int i;

    for (i = 0; i < tc->nprepared && tc->prepared[i] != sql; i++)
        ;
    if (i == tc->nprepared) {
        PGresult *res;
        if (i == IWD_PREPARED_MAX)
            return iwd_pg_exec(tc->conn, tc->ccid, command, sql, nparams, values);
        snprintf(name, sizeof(name), "s%d", i);
        res = PQprepare(tc->conn, name, sql, nparams, NULL);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            /* the error (a bad input type, a broken connection) surfaces from the plain call */
            PQclear(res);
            return iwd_pg_exec(tc->conn, tc->ccid, command, sql, nparams, values);
        }
        PQclear(res);
        tc->prepared[tc->nprepared++] = sql;
    }
    snprintf(name, sizeof(name), "s%d", i);
    {
        struct timespec ts0, ts1;
        PGresult *res;
        ExecStatusType st;
        const char *code = NULL;

        clock_gettime(CLOCK_MONOTONIC, &ts0);
        res = PQexecPrepared(tc->conn, name, nparams, values, NULL, NULL, 0);
        clock_gettime(CLOCK_MONOTONIC, &ts1);
        st = PQresultStatus(res);
        if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
            code = PQresultErrorField(res, PG_DIAG_SQLSTATE) ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : "08006";
        iwd_metrics_db(tc->ccid, command, code,
                       (ts1.tv_sec - ts0.tv_sec) * 1000.0 + (ts1.tv_nsec - ts0.tv_nsec) / 1e6, false, false);
        return res;
    }
}

void iwd_pg_drop_tenant(iwd_thread_t *thread, const char *ccid)
{
    iwd_tenant_conn_t **p = &thread->tenants;

    while (*p != NULL) {
        if (strcmp((*p)->ccid, ccid) == 0) {
            iwd_tenant_conn_t *gone = *p;
            *p = gone->next;
            PQfinish(gone->conn);
            iwd_metrics_db(ccid, "disconnect", NULL, 0, false, true);
            free(gone);
            thread->tenant_conns--;
        } else {
            p = &(*p)->next;
        }
    }
}

PGresult *iwd_pg_exec(PGconn *conn, const char *db_label, const char *command, const char *sql, int nparams,
                      const char *const *values)
{
    double start = now_ms_precise();
    PGresult *res = PQexecParams(conn, sql, nparams, NULL, values, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    const char *code = NULL;

    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (code == NULL)
            code = "08006";
    }
    iwd_metrics_db(db_label, command, code, now_ms_precise() - start, false, false);
    return res;
}

/* The HTTP status of a failed SQL call, from its SQLSTATE. */
int iwd_pg_error_status(PGresult *res)
{
    const char *code = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    if (code == NULL)
        return 503;
    if (strcmp(code, "P0002") == 0)
        return 404;
    if (strcmp(code, "55000") == 0 || strncmp(code, "23", 2) == 0 || strcmp(code, "40001") == 0 ||
        strcmp(code, "40P01") == 0)
        return 409;
    if (strcmp(code, "42501") == 0)
        return 403;
    if (strncmp(code, "22", 2) == 0 || strcmp(code, "42P02") == 0)
        return 400;
    if (strncmp(code, "08", 2) == 0 || strncmp(code, "57P", 3) == 0 || strcmp(code, "53300") == 0)
        return 503;
    return 500;
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

int iwd_pg_call(iwd_call_t *call, const char *sql, int nparams, const char *const *values, int success_status,
                int null_status)
{
    PGconn *conn;
    PGresult *res;
    char command[64];
    int status;

    for (int attempt = 0; attempt < 2; attempt++) {
        iwd_tenant_conn_t *tc = iwd_pg_tenant_conn(call->thread, &call->tenant);
        if (tc == NULL)
            return iwd_respond_error(call, 503, "the tenant database is not reachable");
        conn = tc->conn;
        res = exec_prepared(tc, command_of(sql, command, sizeof(command)), sql, nparams, values);
        if (PQresultStatus(res) == PGRES_TUPLES_OK) {
            if ((PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) && null_status == 204) {
                status = iwd_respond_json(call, 204, "", 0);
            } else if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
                status = iwd_respond_error(call, null_status, "not found");
            } else {
                status = iwd_respond_json(call, success_status, PQgetvalue(res, 0, 0), PQgetlength(res, 0, 0));
            }
            PQclear(res);
            return status;
        }
        if (PQstatus(conn) != CONNECTION_OK && attempt == 0) {
            /* the connection broke (server restart, failover): one retry on a fresh connection */
            PQclear(res);
            iwd_pg_drop_tenant(call->thread, call->tenant.ccid);
            continue;
        }
        status = iwd_pg_error_status(res);
        {
            const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
            const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
            if (status >= 500)
                iwd_log(IWD_LOG_ERROR, "database call failed", "%s: %s", call->tenant.ccid, PQresultErrorMessage(res));
            if (status == 500)
                iwd_respond_error(call, 500, "internal error");
            else if (msg == NULL)
                iwd_respond_error(call, status, "the tenant database is not reachable");
            else if (detail != NULL)
                iwd_respond_error(call, status, "%s: %s", msg, detail);
            else
                iwd_respond_error(call, status, "%s", msg);
        }
        PQclear(res);
        return 0;
    }
    return iwd_respond_error(call, 503, "the tenant database is not reachable");
}

/* Create or migrate the control database's schema (idempotent). */
int iwd_pg_control_migrate(PGconn *conn)
{
    static const char *const steps[] = {
        "CREATE SCHEMA IF NOT EXISTS iwd_control",
        "CREATE TABLE IF NOT EXISTS iwd_control.schema_version (version int NOT NULL)",
        "CREATE TABLE IF NOT EXISTS iwd_control.tenant ("
        " ccid text PRIMARY KEY, tenant_id text, name text,"
        " db_host text NOT NULL, db_port int NOT NULL, db_name text NOT NULL, db_user text NOT NULL,"
        " db_password text, db_ssl boolean NOT NULL DEFAULT false,"
        " iwd_url text, email_url text, gws jsonb,"
        " services text[] NOT NULL DEFAULT '{iWD}',"
        " created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())",
        "CREATE UNIQUE INDEX IF NOT EXISTS tenant_database_idx ON iwd_control.tenant (db_host, db_port, db_name)",
        "CREATE TABLE IF NOT EXISTS iwd_control.api_key ("
        " key_hash text PRIMARY KEY,"
        " ccid text NOT NULL REFERENCES iwd_control.tenant ON DELETE CASCADE,"
        " kind text NOT NULL CHECK (kind IN ('tenant', 'iwddm')))",
        "INSERT INTO iwd_control.schema_version SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM iwd_control.schema_version)",
    };
    PGresult *res = PQexec(conn, "SELECT pg_advisory_lock(4024)");

    PQclear(res);
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        res = PQexec(conn, steps[i]);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            iwd_log(IWD_LOG_ERROR, "control database migration failed", "%s", PQresultErrorMessage(res));
            PQclear(res);
            PQclear(PQexec(conn, "SELECT pg_advisory_unlock(4024)"));
            return IWD_ERR;
        }
        PQclear(res);
    }
    PQclear(PQexec(conn, "SELECT pg_advisory_unlock(4024)"));
    return IWD_OK;
}
