/*
 * iwd-sidecar configuration: environment variables (the contract the Helm chart uses), overridden by
 * command-line flags of the same meaning.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "iwd.h"
#include "log.h"

#define DEFAULT_PORT 4024
#define DEFAULT_THREADS 2
#define MAX_THREADS 64
#define DEFAULT_MAX_BODY (1024 * 1024)
#define DEFAULT_PUSH_INTERVAL_S 15
#define DEFAULT_METRICS_TTL_MS 2000
#define MIN_METRICS_TTL_MS 100
#define MAX_METRICS_TTL_MS 3600000
#define DEFAULT_METRICS_PORT 9102
#define DEFAULT_STATEMENT_TIMEOUT_MS 30000
#define DEFAULT_LOCK_TIMEOUT_MS 10000
#define MIN_TIMEOUT_MS 100
#define MAX_TIMEOUT_MS 3600000
#define DEFAULT_WAITING_PER_TENANT 32
#define DEFAULT_WAITING_PER_THREAD 256
#define MIN_SECRET_KEY 32
#define DEFAULT_AUTH_FAILURE_LIMIT 30
#define MAX_AUTH_FAILURE_LIMIT 100000
#define MAX_WAITING 100000
#define DEFAULT_MAX_STREAMS 10000
#define DEFAULT_MAX_STREAMS_PER_TENANT 2000
#define MAX_STREAMS_LIMIT 1000000
#define DEFAULT_EVENTS_HEARTBEAT_S 15
#define MAX_EVENTS_HEARTBEAT_S 15 /* DESIGN §11: a heartbeat at least every 15 s */
#define DEFAULT_EVENTS_BUFFER_BYTES (1024 * 1024)
#define MIN_EVENTS_BUFFER_BYTES 4096
#define DEFAULT_EVENTS_MEMORY_BYTES (256L * 1024 * 1024)
#define MIN_EVENTS_MEMORY_BYTES 65536
#define MAX_DENY_NETWORKS 256
#define DEFAULT_PG_IDLE_TIMEOUT_S 60
#define MAX_PG_IDLE_TIMEOUT_S 86400
#define DEFAULT_PG_MAX_CONNECTIONS_PER_SERVER 20
#define MAX_PG_CONNECTIONS_PER_SERVER 100000
#define DEFAULT_ROUTER_INTERVAL_MS 1000
#define MIN_ROUTER_INTERVAL_MS 50
#define MAX_ROUTER_INTERVAL_MS 600000
#define DEFAULT_ROUTER_TIMEOUT_MS 10000
#define MIN_ROUTER_TIMEOUT_MS 500
#define MAX_ROUTER_TIMEOUT_MS 120000

iwd_config_t iwd_conf;

static const char usage[] =
    "usage: iwd-sidecar [options]\n"
    "The iwd REST API (/iwd/v3), Prometheus metrics and tenant provisioning.\n"
    "Every option may also be given by its environment variable.\n\n"
    "  --listen ADDR          IWD_LISTEN          address to listen on (default 0.0.0.0)\n"
    "  --port N               IWD_PORT            port (default 4024)\n"
    "  --control-db CONNINFO  IWD_CONTROL_DB      libpq conninfo or URL of the control database (tenant\n"
    "                                             registry; created and migrated on start; required)\n"
    "  --admin-api-key KEY    IWD_ADMIN_API_KEY   the cluster key that guards /provisioning (required)\n"
    "  --secret-key KEY       IWD_SECRET_KEY      the server secret: seals tenant database passwords, signs\n"
    "                                             Redis entries, indexes API keys (required, 32 characters or\n"
    "                                             more; the same on every replica; e.g. openssl rand -hex 32)\n"
    "  --secret-key-previous KEY IWD_SECRET_KEY_PREVIOUS  during a rotation, the secret it replaces: what it\n"
    "                                             sealed is still opened, and sealed again under the new one\n"
    "  --auth-failure-limit N IWD_AUTH_FAILURE_LIMIT  failed authentications per client address within a\n"
    "                                             minute before it is refused for a minute (429; default 30;\n"
    "                                             0: no limit)\n"
    "  --redis-nodes LIST     IWD_REDIS_NODES     comma-separated redis://host:port (empty: no Redis)\n"
    "  --redis-password PW    IWD_REDIS_PASSWORD  Redis password (AUTH)\n"
    "  --redis-tls BOOL       IWD_REDIS_TLS       TLS to Redis, the server's certificate verified (true/false;\n"
    "                                             default false; a node written rediss:// turns it on)\n"
    "  --redis-ca-file PATH   IWD_REDIS_CA_FILE   PEM CA certificates that Redis servers' certificates are\n"
    "                                             verified against (default: the system's CAs)\n"
    "  --redis-cert-file PATH IWD_REDIS_CERT_FILE the client certificate (PEM) for servers that require one\n"
    "  --redis-key-file PATH  IWD_REDIS_KEY_FILE  its private key (PEM; required with IWD_REDIS_CERT_FILE)\n"
    "  --redis-tls-server-name NAME IWD_REDIS_TLS_SERVER_NAME  the name every node's certificate must carry\n"
    "                                             (default: the node's host, a DNS name or an IP address)\n"
    "  --redis-cluster BOOL   IWD_REDIS_CLUSTER   the nodes are seeds of a Redis Cluster: keys go to their\n"
    "                                             slot's master, MOVED/ASK followed, failovers followed\n"
    "  --threads N            IWD_THREADS         worker threads, each with its own loop (default 2)\n"
    "  --max-body-bytes N     IWD_MAX_BODY_BYTES  largest request body (default 1048576)\n"
    "  --log-level LEVEL      IWD_LOG_LEVEL       error, warn, info (default) or debug\n"
    "  --pushgateway-url URL  IWD_PUSHGATEWAY_URL push the Data Mart job metrics there (empty: no push)\n"
    "  --push-interval N      IWD_PUSH_INTERVAL   seconds between two pushes (default 15)\n"
    "  --metrics-ttl-ms N     IWD_METRICS_TTL_MS  how often a background collector reads the tenants' queue\n"
    "                                             gauges and Data Mart job metrics again; scrapes serve its\n"
    "                                             last reading (default 2000, at least 100)\n"
    "  --metrics-listen ADDR  IWD_METRICS_LISTEN  address of the metrics listener (default 0.0.0.0)\n"
    "  --metrics-port N       IWD_METRICS_PORT    port of the metrics listener: GET /metrics without a key\n"
    "                                             (default 9102; 0: none). On the API port, /iwd/v3/metrics\n"
    "                                             needs the admin key\n"
    "  --statement-timeout-ms N IWD_STATEMENT_TIMEOUT_MS  longest SQL statement of a session (default\n"
    "                                             30000); a REST call that runs longer answers 504\n"
    "  --lock-timeout-ms N    IWD_LOCK_TIMEOUT_MS longest wait for a lock (default 10000); beyond: 503\n"
    "  --waiting-calls-per-tenant N IWD_WAITING_CALLS_PER_TENANT  calls of one tenant that may wait for a\n"
    "                                             database connection, per thread (default 32); beyond: 503\n"
    "  --waiting-calls-per-thread N IWD_WAITING_CALLS_PER_THREAD  calls of all tenants that may wait, per\n"
    "                                             thread (default 256); beyond: 503\n"
    "  --pg-idle-timeout-s N  IWD_PG_IDLE_TIMEOUT_S  an idle tenant database connection is closed after N\n"
    "                                             seconds (default 60)\n"
    "  --pg-max-connections-per-server N IWD_PG_MAX_CONNECTIONS_PER_SERVER  tenant database connections to\n"
    "                                             one PostgreSQL server (host and port), all threads and\n"
    "                                             tenants together (default 20); at the cap a call waits for\n"
    "                                             a connection, and an idle one of another tenant is closed\n"
    "  --pg-prepare BOOL      IWD_PG_PREPARE      prepare each route's statement once per connection\n"
    "                                             (default true; false behind PgBouncer in transaction mode)\n"
    "  --ca-file PATH         IWD_CA_FILE         PEM certificates trusted for https webhooks and mail\n"
    "                                             servers besides the system's CAs (e.g. a private CA of\n"
    "                                             in-cluster receivers)\n"
    "  --webhook-deny-networks LIST IWD_WEBHOOK_DENY_NETWORKS  comma-separated CIDR networks (IPv4 or IPv6)\n"
    "                                             webhooks may not connect to, checked on the resolved\n"
    "                                             address (default empty: any host)\n"
    "  --router-interval-ms N IWD_ROUTER_INTERVAL_MS  a tenant's external router (PUT /router) is synced at\n"
    "                                             least every N ms: submissions, stops, a pull of its changes\n"
    "                                             (default 1000, 50 to 600000)\n"
    "  --router-timeout-ms N  IWD_ROUTER_TIMEOUT_MS  the longest wait for one answer of a router (default\n"
    "                                             10000, 500 to 120000); beyond, the request failed\n"
    "  --gws-url URL          IWD_GWS_URL         the router (GWS) of tenants provisioned without tenant.gws\n"
    "                                             (PUT /router; Helm gws.url); empty: none\n"
    "  --gws-client-id ID     IWD_GWS_CLIENT_ID   its OAuth2 client (Helm gws.clientId)\n"
    "  --gws-client-secret S  IWD_GWS_CLIENT_SECRET  its client secret (Helm gws.clientSecret)\n"
    "  --gws-api-key KEY      IWD_GWS_API_KEY     its API key, sent as x-api-key (Helm gws.apiKey)\n"
    "  --max-streams N        IWD_MAX_STREAMS     open event streams (GET /events, long-polls waiting\n"
    "                                             included) of this sidecar (default 10000); beyond: 503\n"
    "  --max-streams-per-tenant N IWD_MAX_STREAMS_PER_TENANT  the same for one tenant (default 2000)\n"
    "  --events-heartbeat-s N IWD_EVENTS_HEARTBEAT_S  an event stream that sent nothing for N seconds sends\n"
    "                                             a comment line (default 15, at most 15)\n"
    "  --events-buffer-bytes N IWD_EVENTS_BUFFER_BYTES  unsent output of one event stream (default 1048576);\n"
    "                                             a client further behind is fed from the database again,\n"
    "                                             and dropped if it also reads nothing for 5 heartbeats\n"
    "  --events-memory-bytes N IWD_EVENTS_MEMORY_BYTES  unsent output of all event streams together (default\n"
    "                                             268435456): beyond it new streams get a 503 and the\n"
    "                                             streams holding most are fed from the database again\n"
    "  --routes                                   list every route and exit\n"
    "  --help                                     this text\n";

/* Parse a boolean setting; -1 when it is not one. */
static int parse_bool(const char *s)
{
    if (s == NULL || *s == '\0')
        return 0;
    if (strcasecmp(s, "true") == 0 || strcmp(s, "1") == 0 || strcasecmp(s, "yes") == 0 || strcasecmp(s, "on") == 0)
        return 1;
    if (strcasecmp(s, "false") == 0 || strcmp(s, "0") == 0 || strcasecmp(s, "no") == 0 || strcasecmp(s, "off") == 0)
        return 0;
    return -1;
}

/* Parse a positive integer within [min, max]; -1 when invalid. */
static long parse_int(const char *s, long min, long max)
{
    char *end;
    long v;

    if (s == NULL || *s == '\0')
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    return v;
}

/*
 * Parse a comma-separated list of CIDR networks ("10.0.0.0/8, fd00::/8"; an address alone is a network of
 * that one address) into iwd_conf's deny list; IWD_ERR when an entry is not one.
 */
static int parse_networks(const char *list)
{
    char *copy = strdup(list), *save = NULL;
    int rc = IWD_OK;

    free(iwd_conf.webhook_deny_networks);
    iwd_conf.webhook_deny_networks = calloc(MAX_DENY_NETWORKS, sizeof(iwd_network_t));
    iwd_conf.webhook_deny_count = 0;
    for (char *item = strtok_r(copy, ",", &save); item != NULL && rc == IWD_OK; item = strtok_r(NULL, ",", &save)) {
        iwd_network_t *n = &iwd_conf.webhook_deny_networks[iwd_conf.webhook_deny_count];
        char *slash, *end;
        long prefix;

        item += strspn(item, " \t");
        for (end = item + strlen(item); end > item && (end[-1] == ' ' || end[-1] == '\t'); end--)
            *(end - 1) = '\0';
        if (*item == '\0')
            continue;
        if (iwd_conf.webhook_deny_count == MAX_DENY_NETWORKS) {
            rc = IWD_ERR;
            break;
        }
        if ((slash = strchr(item, '/')) != NULL)
            *slash = '\0';
        n->family = strchr(item, ':') != NULL ? AF_INET6 : AF_INET;
        if (inet_pton(n->family, item, n->addr) != 1) {
            rc = IWD_ERR;
            break;
        }
        prefix = n->family == AF_INET ? 32 : 128;
        if (slash != NULL) {
            errno = 0;
            long p = strtol(slash + 1, &end, 10);
            if (errno != 0 || slash[1] == '\0' || *end != '\0' || p < 0 || p > prefix) {
                rc = IWD_ERR;
                break;
            }
            prefix = p;
        }
        n->prefix = (int)prefix;
        iwd_conf.webhook_deny_count++;
    }
    free(copy);
    return rc;
}

/* Apply one setting by name; IWD_ERR with a message on stderr when its value is invalid. */
static int apply(const char *name, const char *value)
{
    long n;
    int b;

    if (value == NULL)
        return IWD_OK;
    if (strcmp(name, "listen") == 0) {
        iwd_conf.listen = strdup(value);
    } else if (strcmp(name, "port") == 0) {
        if ((n = parse_int(value, 1, 65535)) < 0)
            goto invalid;
        iwd_conf.port = (int)n;
    } else if (strcmp(name, "control-db") == 0) {
        iwd_conf.control_db = strdup(value);
    } else if (strcmp(name, "admin-api-key") == 0) {
        iwd_conf.admin_api_key = strdup(value);
    } else if (strcmp(name, "secret-key") == 0) {
        iwd_conf.secret_key = strdup(value);
    } else if (strcmp(name, "secret-key-previous") == 0) {
        iwd_conf.secret_key_previous = strdup(value);
    } else if (strcmp(name, "auth-failure-limit") == 0) {
        if ((n = parse_int(value, 0, MAX_AUTH_FAILURE_LIMIT)) < 0)
            goto invalid;
        iwd_conf.auth_failure_limit = (int)n;
    } else if (strcmp(name, "redis-nodes") == 0) {
        iwd_conf.redis_nodes = strdup(value);
    } else if (strcmp(name, "redis-password") == 0) {
        iwd_conf.redis_password = strdup(value);
    } else if (strcmp(name, "redis-tls") == 0) {
        if ((b = parse_bool(value)) < 0)
            goto invalid;
        iwd_conf.redis_tls = b;
    } else if (strcmp(name, "redis-cluster") == 0) {
        if ((b = parse_bool(value)) < 0)
            goto invalid;
        iwd_conf.redis_cluster = b;
    } else if (strcmp(name, "redis-ca-file") == 0) {
        iwd_conf.redis_ca_file = *value != '\0' ? strdup(value) : NULL;
    } else if (strcmp(name, "redis-cert-file") == 0) {
        iwd_conf.redis_cert_file = *value != '\0' ? strdup(value) : NULL;
    } else if (strcmp(name, "redis-key-file") == 0) {
        iwd_conf.redis_key_file = *value != '\0' ? strdup(value) : NULL;
    } else if (strcmp(name, "redis-tls-server-name") == 0) {
        iwd_conf.redis_tls_server_name = *value != '\0' ? strdup(value) : NULL;
    } else if (strcmp(name, "threads") == 0) {
        if ((n = parse_int(value, 1, MAX_THREADS)) < 0)
            goto invalid;
        iwd_conf.threads = (int)n;
    } else if (strcmp(name, "max-body-bytes") == 0) {
        if ((n = parse_int(value, 1, 1L << 30)) < 0)
            goto invalid;
        iwd_conf.max_body_bytes = (size_t)n;
    } else if (strcmp(name, "log-level") == 0) {
        static const char *levels[] = {"error", "warn", "info", "debug"};
        int found = -1;
        for (int i = 0; i < 4; i++)
            if (strcasecmp(value, levels[i]) == 0)
                found = i;
        if (found < 0)
            goto invalid;
        iwd_conf.log_level = found;
    } else if (strcmp(name, "pushgateway-url") == 0) {
        iwd_conf.pushgateway_url = strdup(value);
    } else if (strcmp(name, "push-interval") == 0) {
        if ((n = parse_int(value, 1, 86400)) < 0)
            goto invalid;
        iwd_conf.pushgateway_interval_s = (int)n;
    } else if (strcmp(name, "gws-url") == 0) {
        iwd_conf.gws_url = *value != '\0' ? strdup(value) : NULL;
    } else if (strcmp(name, "gws-client-id") == 0) {
        iwd_conf.gws_client_id = *value != '\0' ? strdup(value) : NULL;
    } else if (strcmp(name, "gws-client-secret") == 0) {
        iwd_conf.gws_client_secret = *value != '\0' ? strdup(value) : NULL;
    } else if (strcmp(name, "gws-api-key") == 0) {
        iwd_conf.gws_api_key = *value != '\0' ? strdup(value) : NULL;
    } else if (strcmp(name, "router-interval-ms") == 0) {
        if ((n = parse_int(value, MIN_ROUTER_INTERVAL_MS, MAX_ROUTER_INTERVAL_MS)) < 0)
            goto invalid;
        iwd_conf.router_interval_ms = (int)n;
    } else if (strcmp(name, "router-timeout-ms") == 0) {
        if ((n = parse_int(value, MIN_ROUTER_TIMEOUT_MS, MAX_ROUTER_TIMEOUT_MS)) < 0)
            goto invalid;
        iwd_conf.router_timeout_ms = (int)n;
    } else if (strcmp(name, "metrics-ttl-ms") == 0) {
        if ((n = parse_int(value, MIN_METRICS_TTL_MS, MAX_METRICS_TTL_MS)) < 0)
            goto invalid;
        iwd_conf.metrics_ttl_ms = (int)n;
    } else if (strcmp(name, "metrics-listen") == 0) {
        iwd_conf.metrics_listen = strdup(value);
    } else if (strcmp(name, "metrics-port") == 0) {
        if ((n = parse_int(value, 0, 65535)) < 0)
            goto invalid;
        iwd_conf.metrics_port = (int)n;
    } else if (strcmp(name, "statement-timeout-ms") == 0) {
        if ((n = parse_int(value, MIN_TIMEOUT_MS, MAX_TIMEOUT_MS)) < 0)
            goto invalid;
        iwd_conf.statement_timeout_ms = (int)n;
    } else if (strcmp(name, "lock-timeout-ms") == 0) {
        if ((n = parse_int(value, MIN_TIMEOUT_MS, MAX_TIMEOUT_MS)) < 0)
            goto invalid;
        iwd_conf.lock_timeout_ms = (int)n;
    } else if (strcmp(name, "waiting-calls-per-tenant") == 0) {
        if ((n = parse_int(value, 1, MAX_WAITING)) < 0)
            goto invalid;
        iwd_conf.waiting_calls_per_tenant = (int)n;
    } else if (strcmp(name, "waiting-calls-per-thread") == 0) {
        if ((n = parse_int(value, 1, MAX_WAITING)) < 0)
            goto invalid;
        iwd_conf.waiting_calls_per_thread = (int)n;
    } else if (strcmp(name, "max-streams") == 0) {
        if ((n = parse_int(value, 1, MAX_STREAMS_LIMIT)) < 0)
            goto invalid;
        iwd_conf.max_streams = (int)n;
    } else if (strcmp(name, "max-streams-per-tenant") == 0) {
        if ((n = parse_int(value, 1, MAX_STREAMS_LIMIT)) < 0)
            goto invalid;
        iwd_conf.max_streams_per_tenant = (int)n;
    } else if (strcmp(name, "events-heartbeat-s") == 0) {
        if ((n = parse_int(value, 1, MAX_EVENTS_HEARTBEAT_S)) < 0)
            goto invalid;
        iwd_conf.events_heartbeat_s = (int)n;
    } else if (strcmp(name, "events-buffer-bytes") == 0) {
        if ((n = parse_int(value, MIN_EVENTS_BUFFER_BYTES, 1L << 30)) < 0)
            goto invalid;
        iwd_conf.events_buffer_bytes = (size_t)n;
    } else if (strcmp(name, "events-memory-bytes") == 0) {
        if ((n = parse_int(value, MIN_EVENTS_MEMORY_BYTES, 1L << 40)) < 0)
            goto invalid;
        iwd_conf.events_memory_bytes = (size_t)n;
    } else if (strcmp(name, "pg-idle-timeout-s") == 0) {
        if ((n = parse_int(value, 1, MAX_PG_IDLE_TIMEOUT_S)) < 0)
            goto invalid;
        iwd_conf.pg_idle_timeout_s = (int)n;
    } else if (strcmp(name, "pg-max-connections-per-server") == 0) {
        if ((n = parse_int(value, 1, MAX_PG_CONNECTIONS_PER_SERVER)) < 0)
            goto invalid;
        iwd_conf.pg_max_connections_per_server = (int)n;
    } else if (strcmp(name, "pg-prepare") == 0) {
        if ((b = parse_bool(value)) < 0)
            goto invalid;
        iwd_conf.pg_prepare = b;
    } else if (strcmp(name, "ca-file") == 0) {
        iwd_conf.ca_file = *value != '\0' ? strdup(value) : NULL;
    } else if (strcmp(name, "webhook-deny-networks") == 0) {
        if (parse_networks(value) != IWD_OK)
            goto invalid;
    }
    return IWD_OK;
invalid:
    fprintf(stderr, "iwd-sidecar: invalid value \"%s\" for %s\n", value, name);
    return IWD_ERR;
}

int iwd_config_load(int argc, char **argv)
{
    static const struct {
        const char *name, *env;
    } settings[] = {
        {"listen", "IWD_LISTEN"},           {"port", "IWD_PORT"},
        {"control-db", "IWD_CONTROL_DB"},   {"admin-api-key", "IWD_ADMIN_API_KEY"},
        {"redis-nodes", "IWD_REDIS_NODES"}, {"redis-password", "IWD_REDIS_PASSWORD"},
        {"redis-tls", "IWD_REDIS_TLS"},     {"redis-cluster", "IWD_REDIS_CLUSTER"},
        {"redis-ca-file", "IWD_REDIS_CA_FILE"}, {"redis-cert-file", "IWD_REDIS_CERT_FILE"},
        {"redis-key-file", "IWD_REDIS_KEY_FILE"}, {"redis-tls-server-name", "IWD_REDIS_TLS_SERVER_NAME"},
        {"threads", "IWD_THREADS"},         {"max-body-bytes", "IWD_MAX_BODY_BYTES"},
        {"log-level", "IWD_LOG_LEVEL"},     {"pushgateway-url", "IWD_PUSHGATEWAY_URL"},
        {"push-interval", "IWD_PUSH_INTERVAL"}, {"metrics-ttl-ms", "IWD_METRICS_TTL_MS"},
        {"metrics-listen", "IWD_METRICS_LISTEN"}, {"metrics-port", "IWD_METRICS_PORT"},
        {"statement-timeout-ms", "IWD_STATEMENT_TIMEOUT_MS"}, {"lock-timeout-ms", "IWD_LOCK_TIMEOUT_MS"},
        {"waiting-calls-per-tenant", "IWD_WAITING_CALLS_PER_TENANT"},
        {"waiting-calls-per-thread", "IWD_WAITING_CALLS_PER_THREAD"},
        {"secret-key", "IWD_SECRET_KEY"}, {"secret-key-previous", "IWD_SECRET_KEY_PREVIOUS"},
        {"auth-failure-limit", "IWD_AUTH_FAILURE_LIMIT"},
        {"max-streams", "IWD_MAX_STREAMS"}, {"max-streams-per-tenant", "IWD_MAX_STREAMS_PER_TENANT"},
        {"events-heartbeat-s", "IWD_EVENTS_HEARTBEAT_S"}, {"events-buffer-bytes", "IWD_EVENTS_BUFFER_BYTES"},
        {"events-memory-bytes", "IWD_EVENTS_MEMORY_BYTES"},
        {"ca-file", "IWD_CA_FILE"}, {"webhook-deny-networks", "IWD_WEBHOOK_DENY_NETWORKS"},
        {"pg-idle-timeout-s", "IWD_PG_IDLE_TIMEOUT_S"},
        {"pg-max-connections-per-server", "IWD_PG_MAX_CONNECTIONS_PER_SERVER"},
        {"pg-prepare", "IWD_PG_PREPARE"},
        {"router-interval-ms", "IWD_ROUTER_INTERVAL_MS"}, {"router-timeout-ms", "IWD_ROUTER_TIMEOUT_MS"},
        {"gws-url", "IWD_GWS_URL"}, {"gws-client-id", "IWD_GWS_CLIENT_ID"},
        {"gws-client-secret", "IWD_GWS_CLIENT_SECRET"}, {"gws-api-key", "IWD_GWS_API_KEY"},
    };
    static struct option options[] = {
        {"listen", required_argument, NULL, 0},         {"port", required_argument, NULL, 0},
        {"control-db", required_argument, NULL, 0},     {"admin-api-key", required_argument, NULL, 0},
        {"redis-nodes", required_argument, NULL, 0},    {"redis-password", required_argument, NULL, 0},
        {"redis-tls", required_argument, NULL, 0},      {"redis-cluster", required_argument, NULL, 0},
        {"redis-ca-file", required_argument, NULL, 0},  {"redis-cert-file", required_argument, NULL, 0},
        {"redis-key-file", required_argument, NULL, 0}, {"redis-tls-server-name", required_argument, NULL, 0},
        {"threads", required_argument, NULL, 0},        {"max-body-bytes", required_argument, NULL, 0},
        {"log-level", required_argument, NULL, 0},      {"pushgateway-url", required_argument, NULL, 0},
        {"push-interval", required_argument, NULL, 0},  {"metrics-ttl-ms", required_argument, NULL, 0},
        {"metrics-listen", required_argument, NULL, 0}, {"metrics-port", required_argument, NULL, 0},
        {"statement-timeout-ms", required_argument, NULL, 0}, {"lock-timeout-ms", required_argument, NULL, 0},
        {"waiting-calls-per-tenant", required_argument, NULL, 0},
        {"waiting-calls-per-thread", required_argument, NULL, 0},
        {"secret-key", required_argument, NULL, 0}, {"secret-key-previous", required_argument, NULL, 0},
        {"auth-failure-limit", required_argument, NULL, 0},
        {"max-streams", required_argument, NULL, 0},    {"max-streams-per-tenant", required_argument, NULL, 0},
        {"events-heartbeat-s", required_argument, NULL, 0}, {"events-buffer-bytes", required_argument, NULL, 0},
        {"ca-file", required_argument, NULL, 0}, {"webhook-deny-networks", required_argument, NULL, 0},
        {"pg-idle-timeout-s", required_argument, NULL, 0},
        {"pg-max-connections-per-server", required_argument, NULL, 0},
        {"pg-prepare", required_argument, NULL, 0},
        {"router-interval-ms", required_argument, NULL, 0}, {"router-timeout-ms", required_argument, NULL, 0},
        {"gws-url", required_argument, NULL, 0}, {"gws-client-id", required_argument, NULL, 0},
        {"gws-client-secret", required_argument, NULL, 0}, {"gws-api-key", required_argument, NULL, 0},
        {"help", no_argument, NULL, 'h'},               {NULL, 0, NULL, 0},
    };
    int c, index;

    iwd_conf = (iwd_config_t){.listen = "0.0.0.0", .port = DEFAULT_PORT, .threads = DEFAULT_THREADS,
                              .max_body_bytes = DEFAULT_MAX_BODY, .log_level = IWD_LOG_INFO,
                              .pushgateway_interval_s = DEFAULT_PUSH_INTERVAL_S,
                              .metrics_ttl_ms = DEFAULT_METRICS_TTL_MS, .metrics_listen = "0.0.0.0",
                              .metrics_port = DEFAULT_METRICS_PORT,
                              .statement_timeout_ms = DEFAULT_STATEMENT_TIMEOUT_MS,
                              .lock_timeout_ms = DEFAULT_LOCK_TIMEOUT_MS,
                              .waiting_calls_per_tenant = DEFAULT_WAITING_PER_TENANT,
                              .waiting_calls_per_thread = DEFAULT_WAITING_PER_THREAD,
                              .max_streams = DEFAULT_MAX_STREAMS,
                              .max_streams_per_tenant = DEFAULT_MAX_STREAMS_PER_TENANT,
                              .events_heartbeat_s = DEFAULT_EVENTS_HEARTBEAT_S,
                              .events_buffer_bytes = DEFAULT_EVENTS_BUFFER_BYTES,
                              .events_memory_bytes = DEFAULT_EVENTS_MEMORY_BYTES,
                              .auth_failure_limit = DEFAULT_AUTH_FAILURE_LIMIT,
                              .pg_idle_timeout_s = DEFAULT_PG_IDLE_TIMEOUT_S,
                              .pg_max_connections_per_server = DEFAULT_PG_MAX_CONNECTIONS_PER_SERVER,
                              .pg_prepare = true, .router_interval_ms = DEFAULT_ROUTER_INTERVAL_MS,
                              .router_timeout_ms = DEFAULT_ROUTER_TIMEOUT_MS};
    for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++)
        if (apply(settings[i].name, getenv(settings[i].env)) != IWD_OK)
            return IWD_ERR;
    while ((c = getopt_long(argc, argv, "h", options, &index)) != -1) {
        if (c == 'h') {
            fputs(usage, stdout);
            exit(0);
        }
        if (c != 0) {
            fputs(usage, stderr);
            return IWD_ERR;
        }
        if (apply(options[index].name, optarg) != IWD_OK)
            return IWD_ERR;
    }
    if (iwd_conf.control_db == NULL || *iwd_conf.control_db == '\0') {
        fprintf(stderr, "iwd-sidecar: IWD_CONTROL_DB (--control-db) is required\n");
        return IWD_ERR;
    }
    if (iwd_conf.admin_api_key == NULL || strlen(iwd_conf.admin_api_key) < 8) {
        fprintf(stderr, "iwd-sidecar: IWD_ADMIN_API_KEY (--admin-api-key) is required, 8 characters or more\n");
        return IWD_ERR;
    }
    if (iwd_conf.secret_key == NULL || strlen(iwd_conf.secret_key) < MIN_SECRET_KEY ||
        strcmp(iwd_conf.secret_key, iwd_conf.admin_api_key) == 0) {
        fprintf(stderr, "iwd-sidecar: IWD_SECRET_KEY (--secret-key) is required, %d characters or more, and must"
                        " differ from IWD_ADMIN_API_KEY\n", MIN_SECRET_KEY);
        return IWD_ERR;
    }
    if (iwd_conf.secret_key_previous != NULL && *iwd_conf.secret_key_previous != '\0' &&
        (strlen(iwd_conf.secret_key_previous) < MIN_SECRET_KEY ||
         strcmp(iwd_conf.secret_key_previous, iwd_conf.secret_key) == 0)) {
        fprintf(stderr, "iwd-sidecar: IWD_SECRET_KEY_PREVIOUS must be %d characters or more and differ from"
                        " IWD_SECRET_KEY\n", MIN_SECRET_KEY);
        return IWD_ERR;
    }
    if (iwd_conf.redis_nodes != NULL && strstr(iwd_conf.redis_nodes, "rediss://") != NULL)
        iwd_conf.redis_tls = true;
    if ((iwd_conf.redis_cert_file == NULL) != (iwd_conf.redis_key_file == NULL)) {
        fprintf(stderr, "iwd-sidecar: IWD_REDIS_CERT_FILE and IWD_REDIS_KEY_FILE go together (a client certificate"
                        " and its key)\n");
        return IWD_ERR;
    }
    if (!iwd_conf.redis_tls && (iwd_conf.redis_ca_file != NULL || iwd_conf.redis_cert_file != NULL ||
                                iwd_conf.redis_tls_server_name != NULL)) {
        fprintf(stderr, "iwd-sidecar: IWD_REDIS_CA_FILE, IWD_REDIS_CERT_FILE and IWD_REDIS_TLS_SERVER_NAME need"
                        " IWD_REDIS_TLS=true\n");
        return IWD_ERR;
    }
    if (iwd_conf.gws_url != NULL && (iwd_conf.gws_client_id == NULL || iwd_conf.gws_client_secret == NULL)) {
        fprintf(stderr, "iwd-sidecar: IWD_GWS_URL needs IWD_GWS_CLIENT_ID and IWD_GWS_CLIENT_SECRET\n");
        return IWD_ERR;
    }
    return IWD_OK;
}
