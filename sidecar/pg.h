/*
 * iwd-sidecar PostgreSQL: the connections of a thread (to the control database and to the tenant databases)
 * and the SQL call of a REST route, sent without blocking the loop and answered when its result is in.
 */
#ifndef IWD_PG_H
#define IWD_PG_H

#include <libpq-fe.h>

#include "http.h"
#include "tenant.h"
#include "thread.h"

/* A connection with the sidecar's session settings (statement and lock timeouts, search_path). */
PGconn *iwd_pg_connect(const char *conninfo);
/* The same with this connect timeout and statement timeout. */
PGconn *iwd_pg_connect_bounded(const char *conninfo, int connect_timeout_s, int statement_timeout_ms);
/* The thread's connection to the control database, reconnected when broken; NULL when unreachable. */
PGconn *iwd_pg_control(iwd_thread_t *thread);
/* A connection to the tenant's database for a thread without a loop (synchronous); NULL when unreachable. */
PGconn *iwd_pg_tenant(iwd_thread_t *thread, const iwd_tenant_t *tenant);
/* Close the thread's connections to a tenant; the calls running or waiting on them are answered 503. */
void iwd_pg_drop_tenant(iwd_thread_t *thread, const char *ccid);
/* A worker thread's share of pg.c: where connector threads report, the deadline of its calls. */
void iwd_pg_thread_init(iwd_thread_t *thread);
/* Close every connection of the thread (at shutdown: its loop has stopped, nothing is answered). */
void iwd_pg_close_all(iwd_thread_t *thread);
/*
 * Run a route's SQL call (a fixed text of the route table, at most 5 text parameters) on a connection of
 * the call's tenant and answer the request from its result (answer.h), now or once the result is in;
 * IWD_OK.
 */
int iwd_pg_call(iwd_call_t *call, const char *sql, int nparams, const char *const *values, int success_status,
                int null_status);
/*
 * What a call run by iwd_pg_call_then hands over instead of answering: its result (res, freed by the caller
 * once on_result returns), or NULL with the status (503, 504) and message of a call that got no result. On
 * the call's thread, while the request lives (never once it is gone). on_result must not send another call
 * before it returns (the connection is not idle yet): a follow-up call goes from the loop.
 */
typedef void (*iwd_pg_result_cb)(iwd_call_t *call, PGresult *res, int status, const char *message, void *arg);
/* Run a route's SQL call like iwd_pg_call, its result handed to on_result rather than answered; IWD_OK. */
int iwd_pg_call_then(iwd_call_t *call, const char *sql, int nparams, const char *const *values,
                     iwd_pg_result_cb on_result, void *arg);
/* Run one statement synchronously, counted in the metrics under db_label and command. */
PGresult *iwd_pg_exec(PGconn *conn, const char *db_label, const char *command, const char *sql, int nparams,
                      const char *const *values);
/*
 * Run one statement on a connection of a thread of its own (not a loop's), waiting for its answer until
 * deadline_ms (iwd_now_ms) at most; counted like iwd_pg_exec. NULL when no answer came in time or the
 * connection broke: the caller closes the connection (a late answer would be read as the next one's).
 * Notifications that arrive meanwhile stay in libpq's queue.
 */
PGresult *iwd_pg_exec_within(PGconn *conn, const char *db_label, const char *command, const char *sql,
                             int nparams, const char *const *values, int64_t deadline_ms);

#endif
