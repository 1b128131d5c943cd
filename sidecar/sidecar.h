/*
 * iwd-sidecar: shared declarations.
 *
 * Threading model: IWD_THREADS worker threads, each with its own h2o event loop, its own listening
 * socket on the same port (SO_REUSEPORT: the kernel spreads connections), and its own connections to
 * the control database, the tenant databases and Redis. A request is served start to finish by one
 * thread. The SQL call of a REST route does not block the loop: it is sent with libpq's asynchronous
 * API on an idle connection of the tenant (a thread opens up to IWD_PG_CONNS_PER_TENANT), the loop
 * watches that connection's socket and answers the request when the result is in. Lookups that are
 * rare or cached (registry, provisioning, hiredis) stay synchronous and block only their thread's
 * loop, briefly. Every session has a statement and a lock timeout (pg.c). The tenants' gauges are read
 * by a collector thread of their own (metrics.c), which a scrape never waits for; scrapes come in on a
 * listener of their own (IWD_METRICS_PORT), served by the same loops.
 */
#ifndef IWD_SIDECAR_H
#define IWD_SIDECAR_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <h2o.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "clock.h"

#define IWD_OK 0
#define IWD_ERR -1

#define IWD_VERSION "0.1.0"
#define IWD_API_PREFIX "/iwd/v3"

/* Configuration (config.c): environment variables, overridden by flags. */
typedef struct iwd_config {
    char *listen;
    int port;
    char *control_db;
    char *admin_api_key;
    char *secret_key;          /* IWD_SECRET_KEY: every key the sidecar derives (auth.c) */
    char *secret_key_previous; /* IWD_SECRET_KEY_PREVIOUS: still opens what it sealed, during a rotation */
    int auth_failure_limit;    /* failed authentications per client address and minute before 429; 0: none */
    char *redis_nodes;
    char *redis_password;
    bool redis_tls;
    bool redis_cluster;
    int threads;
    size_t max_body_bytes;
    int log_level; /* 0 error, 1 warn, 2 info, 3 debug */
    char *pushgateway_url;
    int pushgateway_interval_s;
    int metrics_ttl_ms; /* how often the collector reads the tenants' gauges again */
    char *metrics_listen;
    int metrics_port;   /* the unauthenticated metrics listener; 0: none */
    int statement_timeout_ms;
    int lock_timeout_ms;
    int waiting_calls_per_tenant; /* SQL calls of one tenant that may wait for a connection, per thread */
    int waiting_calls_per_thread; /* SQL calls of all tenants that may wait for a connection, per thread */
} iwd_config_t;

extern iwd_config_t iwd_conf;

int iwd_config_load(int argc, char **argv);

/* Logs (log.c): one JSON object per line on stdout. */
enum { IWD_LOG_ERROR, IWD_LOG_WARN, IWD_LOG_INFO, IWD_LOG_DEBUG };
void iwd_log(int level, const char *msg, const char *fmt_extra, ...);
void iwd_log_request(const char *ccid, const char *method, const char *path, int status, double duration_ms);

/* A tenant as the registry knows it. A ccid or conninfo that does not fit is refused, never cut. */
#define IWD_CCID_SIZE 128
#define IWD_CONNINFO_SIZE 2048
typedef struct iwd_tenant {
    char ccid[IWD_CCID_SIZE];
    char conninfo[IWD_CONNINFO_SIZE];
    bool read_only; /* authenticated with the tenant's IWD_APIKEY_IWDDM */
} iwd_tenant_t;

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
    struct iwd_tenant_conn *next;
} iwd_tenant_conn_t;

/* Redis client state of one thread (redis.c). */
typedef struct iwd_redis {
    redisContext *ctx;
    int64_t retry_at_ms; /* back-off: no attempt before this time */
    int backoff_ms;
    int64_t down_since_ms;
} iwd_redis_t;

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

extern h2o_globalconf_t iwd_h2o_config;

/* HTTP helpers (http.c). Every response is JSON. */
typedef struct iwd_call {
    h2o_req_t *req;
    iwd_thread_t *thread;
    iwd_tenant_t tenant;
    bool has_tenant;
    const char *route;   /* the matched route pattern, for metrics and logs */
    char *params[4];     /* path parameters, NUL-terminated, in the request pool */
    int nparams;
    int status;
    double start_ms;
} iwd_call_t;

int iwd_respond_json(iwd_call_t *call, int status, const char *body, size_t len);
int iwd_respond_error(iwd_call_t *call, int status, const char *fmt, ...);
int iwd_respond_text(iwd_call_t *call, int status, const char *content_type, const char *body, size_t len);
char *iwd_query_param(h2o_req_t *req, const char *name);
bool iwd_query_valid(h2o_req_t *req);
char *iwd_header(h2o_req_t *req, const char *name);
int iwd_url_decode(const char *in, size_t len, bool plus_is_space, char *out);

/* PostgreSQL (pg.c). iwd_pg_call answers the request itself, now or once the result is in. */
PGconn *iwd_pg_connect(const char *conninfo);
PGconn *iwd_pg_connect_bounded(const char *conninfo, int connect_timeout_s, int statement_timeout_ms);
PGconn *iwd_pg_control(iwd_thread_t *thread);
PGconn *iwd_pg_tenant(iwd_thread_t *thread, const iwd_tenant_t *tenant);
void iwd_pg_drop_tenant(iwd_thread_t *thread, const char *ccid);
void iwd_pg_thread_init(iwd_thread_t *thread);
void iwd_pg_close_all(iwd_thread_t *thread);
int iwd_pg_call(iwd_call_t *call, const char *sql, int nparams, const char *const *values, int success_status,
                int null_status);
int iwd_pg_error_status(PGresult *res);
int iwd_pg_control_migrate(PGconn *conn);
PGresult *iwd_pg_exec(PGconn *conn, const char *db_label, const char *command, const char *sql, int nparams,
                      const char *const *values);

/* Redis cache (redis.c). */
char *iwd_redis_get(iwd_thread_t *thread, const char *key);
void iwd_redis_set(iwd_thread_t *thread, const char *key, const char *value, int ttl_s);
void iwd_redis_del(iwd_thread_t *thread, const char *key);

/* Authentication and the tenant registry (auth.c). */
void iwd_sha256_hex(const char *in, char out[65]);
/* Authenticate a tenant route's key; IWD_ERR after answering 401, 403, 429 or 503. */
int iwd_auth_tenant(iwd_call_t *call, bool write);
/* Whether the request carries the admin key (a wrong one counts as a failure of the client's address). */
bool iwd_auth_admin(iwd_call_t *call);
/* Authenticate an admin route; IWD_ERR after answering 429 or 401 with message. */
int iwd_auth_admin_request(iwd_call_t *call, const char *message);
/* The index of an API key, and what the registry stores of a new key: index, salt and salted hash. */
void iwd_key_index(const char *key, char index[65]);
void iwd_key_seal(const char *key, char index[65], char salt[33], char verifier[65]);
/* Seal a tenant database password under IWD_SECRET_KEY; open one (NULL when nothing we hold opens it). */
char *iwd_encrypt_secret(const char *plain);
char *iwd_decrypt_secret(const char *stored);
/* A tenant's ccid and conninfo from its settings (password in clear); IWD_ERR when they do not fit. */
int iwd_tenant_settings(iwd_tenant_t *tenant, const char *ccid, const char *host, int port, const char *db,
                        const char *user, const char *password, bool ssl);
int iwd_tenant_from_entry(iwd_tenant_t *tenant, const char *text);
/* After a registry change has committed: drop the Redis entries of the key indexes (a result's first
 * column) and make every thread of this process forget what it remembers. */
void iwd_auth_forget_keys(iwd_thread_t *thread, PGresult *indexes);
void iwd_auth_forget_local(void);
/* Schema 2 of the control database (keys by index and salted hash), passwords resealed; in a transaction. */
int iwd_auth_migrate(PGconn *conn);

/* Metrics (metrics.c). */
void iwd_metrics_init(void);
void iwd_metrics_request(const char *method, const char *route, int status, const char *ccid, double ms);
void iwd_metrics_blacklist(void);
void iwd_metrics_refused(const char *ccid);
void iwd_metrics_db(const char *db, const char *command, const char *code, double ms, bool connect,
                    bool disconnect);
void iwd_metrics_redis_error(void);
void iwd_metrics_redis_state(int delta_ready, int delta_reconnecting, int delta_established);
void iwd_metrics_redis_ready_after(double ms);
void iwd_metrics_start_collector(void);
char *iwd_metrics_render(size_t *len);
void *iwd_pushgateway_main(void *arg);

/* Routes. */
int iwd_route(iwd_call_t *call);
void iwd_print_routes(void);
int iwd_on_provisioning_save(iwd_call_t *call);
int iwd_on_provisioning_delete(iwd_call_t *call);
int iwd_on_tasks_list(iwd_call_t *call);

#endif
