/* iwd-sidecar configuration: environment variables (the Helm chart's contract), overridden by flags. */
#ifndef IWD_CONFIG_H
#define IWD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

/* A network of IWD_WEBHOOK_DENY_NETWORKS: an IPv4 or IPv6 address and its prefix length. */
typedef struct iwd_network {
    int family;              /* AF_INET or AF_INET6 */
    unsigned char addr[16];  /* network order; the first 4 bytes for IPv4 */
    int prefix;
} iwd_network_t;

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
    char *redis_ca_file;         /* IWD_REDIS_CA_FILE: the CAs that verify Redis certificates (NULL: system's) */
    char *redis_cert_file;       /* IWD_REDIS_CERT_FILE and IWD_REDIS_KEY_FILE: the client certificate, or NULL */
    char *redis_key_file;
    char *redis_tls_server_name; /* IWD_REDIS_TLS_SERVER_NAME: the name certificates carry (NULL: each node's host) */
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
    int max_streams;              /* event streams and parked long-polls of the sidecar (events.c) */
    int max_streams_per_tenant;   /* the same for one tenant */
    int events_heartbeat_s;       /* an event stream sends a comment when it sent nothing for this long */
    size_t events_buffer_bytes;   /* an event stream's unsent output; beyond it, its client is disconnected */
    size_t events_memory_bytes;   /* the unsent output of all event streams; beyond it, new ones get a 503 */
    int pg_idle_timeout_s;        /* an idle tenant connection is closed after this */
    int pg_max_connections_per_server; /* tenant connections to one database server, all threads */
    bool pg_prepare;              /* prepare each route's statement once per connection (off behind PgBouncer) */
    char *ca_file;                /* IWD_CA_FILE: PEM certificates trusted for https webhooks, besides the system's */
    iwd_network_t *webhook_deny_networks; /* IWD_WEBHOOK_DENY_NETWORKS: addresses webhooks may not reach */
    int webhook_deny_count;
    int router_interval_ms;       /* IWD_ROUTER_INTERVAL_MS: a tenant's router is synced at least this often */
    int router_timeout_ms;        /* IWD_ROUTER_TIMEOUT_MS: the longest wait for one answer of a router */
    char *gws_url, *gws_client_id, *gws_client_secret, *gws_api_key; /* IWD_GWS_*: the default router */
} iwd_config_t;

/* The configuration, set once by iwd_config_load before any thread starts and read-only afterwards. */
extern iwd_config_t iwd_conf;

/* Load the environment, then the flags; IWD_ERR with the reason on stderr when a setting is invalid. */
int iwd_config_load(int argc, char **argv);

#endif
