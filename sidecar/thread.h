/*
 * iwd-sidecar worker threads: what one thread owns.
 *
 * Threading model: IWD_THREADS worker threads, each with its own h2o event loop, its own listening
 * socket on the same port (SO_REUSEPORT: the kernel spreads connections), and its own connections to
 * the control database, the tenant databases and Redis. A request is served start to finish by one
 * thread. The SQL call of a REST route does not block the loop: it is sent with libpq's asynchronous
 * API on an idle connection of the tenant (a thread opens up to IWD_PG_CONNS_PER_TENANT), the loop
 * watches that connection's socket and answers the request when the result is in (pg.c). Lookups that
 * are rare or cached (registry, provisioning, hiredis) stay synchronous and block only their thread's
 * loop, briefly. Every session has a statement and a lock timeout (pg.c). The tenants' gauges are read
 * by a collector thread of their own (collector.c), which a scrape never waits for; scrapes come in on a
 * listener of their own (IWD_METRICS_PORT), served by the same loops.
 */
#ifndef IWD_THREAD_H
#define IWD_THREAD_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <h2o.h>
#include <libpq-fe.h>

#include "redis.h"
#include "server_slots.h"
#include "tenant.h"

/* One connection to a tenant database, owned by one thread. */
#define IWD_PREPARED_MAX 64
#define IWD_PG_CONNS_PER_TENANT 8 /* connections one thread opens to one tenant for concurrent REST calls */
typedef struct iwd_pg_pending iwd_pg_pending_t;
typedef struct iwd_tenant_conn {
    char ccid[IWD_CCID_SIZE];
    char conninfo[IWD_CONNINFO_SIZE];
    PGconn *conn;
    const char *prepared[IWD_PREPARED_MAX]; /* SQL texts prepared on this connection, as "s<index>" */
    int nprepared;
    struct iwd_thread *thread;
    h2o_socket_t *sock;        /* the loop's watch on the connection's socket, once a call was sent on it */
    iwd_pg_pending_t *running; /* the call whose result the connection is receiving; NULL when idle */
    PGresult *result;          /* that call's result, until the connection is ready for the next */
    const char *preparing;     /* the SQL text being prepared for the running call, before it is sent */
    h2o_timeout_entry_t deadline; /* the running call's: a server that never answers (pg.c) */
    h2o_timeout_entry_t flush_tick; /* the running call not yet written whole: write more soon */
    bool connecting;           /* being opened by a connector thread (pg.c); conn is NULL until then */
    bool abandoned;            /* closed while connecting: freed when the connector reports */
    iwd_slot_conn_t slot;      /* its slot of the database server's cap, and its place among the idle ones */
    h2o_timeout_entry_t idle_timer; /* closes it after IWD_PG_IDLE_TIMEOUT_S idle (pg.c) */
    struct iwd_tenant_conn *next;
} iwd_tenant_conn_t;

/* A key's tenant, or that it is unknown, remembered by one thread for a few seconds (auth.c), by key index. */
#define IWD_KEY_CACHE_SLOTS 256
typedef struct iwd_key_cache_slot {
    char hash[65];
    bool unknown;
    iwd_tenant_t tenant;
    int64_t expires_ms;
    uint64_t generation;
} iwd_key_cache_slot_t;

/* A tenant's connection settings at one registry revision, kept by one thread for a minute (auth.c). */
#define IWD_TENANT_CACHE_SLOTS 64
typedef struct iwd_tenant_cache_slot {
    iwd_tenant_t tenant;
    char revision[32];
    int64_t expires_ms;
    uint64_t generation;
} iwd_tenant_cache_slot_t;

/* One worker thread. */
typedef struct iwd_thread {
    int index;
    pthread_t tid;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_accept_ctx_t metrics_accept_ctx; /* the metrics listener's: same loop, its own routes */
    PGconn *control;
    iwd_tenant_conn_t *tenants;
    int tenant_conns;
    iwd_pg_pending_t *waiting, **waiting_tail; /* SQL calls waiting for a connection of their tenant */
    h2o_multithread_receiver_t pg_connected;   /* new tenant connections, from the connector threads */
    h2o_timeout_t pg_call_deadline;            /* IWD_STATEMENT_TIMEOUT_MS and a grace: see pg.c */
    h2o_timeout_t pg_flush_tick;               /* how soon a call not written whole is written on */
    iwd_redis_t redis;
    iwd_key_cache_slot_t key_cache[IWD_KEY_CACHE_SLOTS];
    iwd_tenant_cache_slot_t tenant_cache[IWD_TENANT_CACHE_SLOTS];
} iwd_thread_t;

#endif
