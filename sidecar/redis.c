/*
 * iwd-sidecar Redis cache: API key -> tenant and tenant -> connection settings. Redis only accelerates:
 * when it is unreachable every lookup goes to the control database, and each node is retried with an
 * exponential back-off (100 ms doubling to 30 s) without delaying requests. Calls are synchronous on the
 * calling thread's own connections (see thread.h for the threading model), and one call never takes more
 * than OPERATION_BUDGET_MS whatever happens: connecting (TCP, TLS, AUTH), a slot map refresh and redirections
 * all share that budget. Connections are plain or TLS (redis_conn.c).
 *
 * One server (IWD_REDIS_CLUSTER off): the first node of IWD_REDIS_NODES that answers serves every key.
 * Redis Cluster (IWD_REDIS_CLUSTER on): IWD_REDIS_NODES are seeds. The thread asks one of them for the slot
 * map (CLUSTER SLOTS) and sends each command to the master of its key's slot (redis_cluster.c). A MOVED
 * answer is followed at once and marks the map stale (it is read again at the next call, at most every
 * REFRESH_INTERVAL_MS); an ASK answer is followed once, after ASKING. A master that stops answering closes
 * its connection and marks the map stale: its keys are cache misses (served from PostgreSQL) until the map
 * names its promoted replica, then cached again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "config.h"
#include "iwd.h"
#include "log.h"
#include "metrics.h"
#include "redis.h"
#include "redis_cluster.h"
#include "redis_conn.h"

#define CONNECT_TIMEOUT_MS 200   /* TCP and TLS handshake of one node */
#define COMMAND_TIMEOUT_MS 200   /* one command (AUTH included) */
#define OPERATION_BUDGET_MS 600  /* one cache call, all steps together: one connect, AUTH and the command */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 30000
#define REFRESH_INTERVAL_MS 250  /* the shortest time between two reads of the slot map */
#define MAX_REDIRECTS 3          /* MOVED / ASK answers followed for one command */
#define MAX_NODES 128            /* nodes a thread knows: the seeds and the masters of the map */

typedef struct node {
    bool used;   /* the entry holds a node */
    bool seed;   /* named in IWD_REDIS_NODES: kept across map changes */
    bool failing; /* the last attempt failed (logged once, when it starts) */
    char host[IWD_REDIS_HOST_SIZE];
    int port;
    iwd_redis_conn_t *conn;
    int64_t retry_at_ms; /* back-off: no connection attempt before this time */
    int backoff_ms;
} node_t;

enum { STATE_NEW, STATE_READY, STATE_DOWN };

struct iwd_redis_state {
    node_t nodes[MAX_NODES];
    int nnodes;                              /* entries in use or freed below this index */
    unsigned char owner[IWD_REDIS_SLOTS];    /* cluster: the master of each slot, node index + 1; 0 unknown */
    unsigned char loading[IWD_REDIS_SLOTS];  /* the map being read */
    bool have_map, map_stale;
    int64_t refresh_at_ms;                   /* no slot map read before this time */
    int refresh_backoff_ms;
    int metric_state;                        /* STATE_*: the thread's share of the connection gauges */
    int64_t down_since_ms;
};

int iwd_redis_init(void)
{
    return iwd_redis_conn_init();
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

static int backoff_next(int backoff_ms)
{
    backoff_ms = backoff_ms == 0 ? BACKOFF_MIN_MS : backoff_ms * 2;
    return backoff_ms > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff_ms;
}

/* The node's index, added when new; -1 when the table is full. */
static int node_index(struct iwd_redis_state *st, const char *host, int port)
{
    int free_slot = -1;

    for (int i = 0; i < st->nnodes; i++) {
        if (st->nodes[i].used && st->nodes[i].port == port && strcmp(st->nodes[i].host, host) == 0)
            return i;
        if (!st->nodes[i].used && free_slot < 0)
            free_slot = i;
    }
    if (free_slot < 0) {
        if (st->nnodes == MAX_NODES)
            return -1;
        free_slot = st->nnodes++;
    }
    st->nodes[free_slot] = (node_t){.used = true, .port = port};
    snprintf(st->nodes[free_slot].host, sizeof(st->nodes[free_slot].host), "%s", host);
    return free_slot;
}

/* The thread's state, made at its first call; NULL when no Redis is configured (or out of memory). */
static struct iwd_redis_state *state_of(iwd_redis_t *r)
{
    char *nodes, *save = NULL;

    if (r->state != NULL || iwd_conf.redis_nodes == NULL || *iwd_conf.redis_nodes == '\0')
        return r->state;
    if ((r->state = calloc(1, sizeof(*r->state))) == NULL || (nodes = strdup(iwd_conf.redis_nodes)) == NULL)
        return r->state;
    for (char *node = strtok_r(nodes, ", ", &save); node != NULL; node = strtok_r(NULL, ", ", &save)) {
        char host[IWD_REDIS_HOST_SIZE];
        int port, i;

        if (iwd_redis_parse_address(node, NULL, host, &port) == IWD_OK && (i = node_index(r->state, host, port)) >= 0)
            r->state->nodes[i].seed = true;
    }
    free(nodes);
    return r->state;
}

/* The thread's share of the connection gauges: ready while it holds a connection, reconnecting after a
 * failure left it none. */
static void update_metrics(struct iwd_redis_state *st, bool failed)
{
    bool connected = false;

    for (int i = 0; i < st->nnodes && !connected; i++)
        connected = st->nodes[i].conn != NULL;
    if (connected && st->metric_state != STATE_READY) {
        iwd_metrics_redis_state(1, st->metric_state == STATE_DOWN ? -1 : 0, 0);
        if (st->metric_state == STATE_DOWN)
            iwd_metrics_redis_ready_after((double)(iwd_now_ms() - st->down_since_ms));
        st->metric_state = STATE_READY;
    } else if (!connected && failed && st->metric_state != STATE_DOWN) {
        iwd_metrics_redis_state(st->metric_state == STATE_READY ? -1 : 0, 1, 0);
        st->metric_state = STATE_DOWN;
        st->down_since_ms = iwd_now_ms();
    }
}

/* A node failed (connecting or answering): its connection closed, retried after a back-off. */
static void node_failed(struct iwd_redis_state *st, int i, const char *what, const char *reason)
{
    node_t *n = &st->nodes[i];

    iwd_metrics_redis_error();
    iwd_log(n->failing ? IWD_LOG_DEBUG : IWD_LOG_WARN, what, "%s:%d: %s", n->host, n->port, reason);
    n->failing = true;
    iwd_redis_conn_close(n->conn);
    n->conn = NULL;
    n->backoff_ms = backoff_next(n->backoff_ms);
    n->retry_at_ms = iwd_now_ms() + n->backoff_ms;
    st->map_stale = true;
}

/* The node's connection, opened (and authenticated) when there is none and its back-off allows; NULL when
 * it cannot be had by the deadline. */
static iwd_redis_conn_t *node_conn(struct iwd_redis_state *st, int i, int64_t deadline_ms)
{
    node_t *n = &st->nodes[i];
    char err[512];

    if (n->conn != NULL)
        return n->conn;
    if (iwd_now_ms() < n->retry_at_ms || iwd_now_ms() >= deadline_ms)
        return NULL;
    n->conn = iwd_redis_conn_open(n->host, n->port, min64(iwd_now_ms() + CONNECT_TIMEOUT_MS, deadline_ms), err,
                                  sizeof(err));
    if (n->conn == NULL) {
        node_failed(st, i, "cannot connect to Redis", err);
        return NULL;
    }
    if (iwd_conf.redis_password != NULL && *iwd_conf.redis_password != '\0') {
        const char *argv[] = {"AUTH", iwd_conf.redis_password};
        size_t len[] = {4, strlen(iwd_conf.redis_password)};
        redisReply *reply = iwd_redis_conn_call(n->conn, min64(iwd_now_ms() + COMMAND_TIMEOUT_MS, deadline_ms), 2,
                                                argv, len, err, sizeof(err));
        bool ok = reply != NULL && reply->type != REDIS_REPLY_ERROR;

        if (reply != NULL && !ok)
            snprintf(err, sizeof(err), "AUTH: %s", reply->str);
        if (reply != NULL)
            freeReplyObject(reply);
        if (!ok) {
            node_failed(st, i, "cannot authenticate to Redis", err);
            return NULL;
        }
    }
    if (n->failing)
        iwd_log(IWD_LOG_INFO, "connected to Redis again", "%s:%d", n->host, n->port);
    n->failing = false;
    n->backoff_ms = 0;
    iwd_metrics_redis_state(0, 0, 1);
    return n->conn;
}

/* One command on one node; NULL when the node cannot be reached or failed to answer (its connection is then
 * closed and counted). */
static redisReply *node_call(struct iwd_redis_state *st, int i, int64_t deadline_ms, int argc, const char **argv,
                             const size_t *len)
{
    iwd_redis_conn_t *conn = node_conn(st, i, deadline_ms);
    redisReply *reply;
    char err[512];

    if (conn == NULL)
        return NULL;
    reply = iwd_redis_conn_call(conn, min64(iwd_now_ms() + COMMAND_TIMEOUT_MS, deadline_ms), argc, argv, len, err,
                                sizeof(err));
    if (reply == NULL)
        node_failed(st, i, "a Redis command failed", err);
    return reply;
}

/* --- the slot map ----------------------------------------------------------------------------------- */

static int load_range(void *arg, unsigned first, unsigned last, const char *host, int port)
{
    struct iwd_redis_state *st = arg;
    int i = node_index(st, host, port);

    if (i < 0)
        return IWD_ERR;
    memset(st->loading + first, i + 1, last - first + 1);
    return IWD_OK;
}

/* Forget the nodes that are neither seeds nor masters of the map, closing their connections. */
static void prune_nodes(struct iwd_redis_state *st)
{
    bool owns[MAX_NODES] = {false};

    for (int s = 0; s < IWD_REDIS_SLOTS; s++)
        if (st->owner[s] != 0)
            owns[st->owner[s] - 1] = true;
    for (int i = 0; i < st->nnodes; i++) {
        if (st->nodes[i].used && !st->nodes[i].seed && !owns[i]) {
            iwd_redis_conn_close(st->nodes[i].conn);
            st->nodes[i] = (node_t){.used = false};
        }
    }
}

/* Read the slot map from the first node that answers: a node already connected, then the others. */
static void refresh_map(struct iwd_redis_state *st, int64_t deadline_ms)
{
    const char *argv[] = {"CLUSTER", "SLOTS"};
    size_t len[] = {7, 5};

    prune_nodes(st);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < st->nnodes && iwd_now_ms() < deadline_ms; i++) {
            node_t *n = &st->nodes[i];
            redisReply *reply;
            int ok;

            if (!n->used || (pass == 0) != (n->conn != NULL))
                continue;
            if ((reply = node_call(st, i, deadline_ms, 2, argv, len)) == NULL)
                continue;
            memset(st->loading, 0, sizeof(st->loading));
            ok = iwd_redis_cluster_slots(reply, n->host, load_range, st);
            if (ok != IWD_OK) {
                iwd_metrics_redis_error();
                iwd_log(IWD_LOG_WARN, "a Redis node answered CLUSTER SLOTS without a usable slot map", "%s:%d: %s",
                        n->host, n->port, reply->type == REDIS_REPLY_ERROR ? reply->str : "(no ranges)");
            }
            freeReplyObject(reply);
            if (ok == IWD_OK) {
                memcpy(st->owner, st->loading, sizeof(st->owner));
                st->have_map = true;
                st->map_stale = false;
                st->refresh_backoff_ms = 0;
                st->refresh_at_ms = iwd_now_ms() + REFRESH_INTERVAL_MS;
                prune_nodes(st);
                return;
            }
        }
    }
    st->refresh_backoff_ms = backoff_next(st->refresh_backoff_ms);
    st->refresh_at_ms = iwd_now_ms() + st->refresh_backoff_ms;
}

/* --- commands ---------------------------------------------------------------------------------------- */

/* One server: the node connected, else the first that connects (in the order of IWD_REDIS_NODES). */
static redisReply *single_call(struct iwd_redis_state *st, int64_t deadline_ms, int argc, const char **argv,
                               const size_t *len)
{
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < st->nnodes && iwd_now_ms() < deadline_ms; i++) {
            redisReply *reply;

            if (!st->nodes[i].used || (pass == 0) != (st->nodes[i].conn != NULL) ||
                (pass == 1 && iwd_now_ms() < st->nodes[i].retry_at_ms))
                continue;
            if ((reply = node_call(st, i, deadline_ms, argc, argv, len)) != NULL)
                return reply;
        }
    }
    return NULL;
}

/* A node to ask for a slot of unknown owner: one connected, else any not backing off. */
static int any_node(struct iwd_redis_state *st)
{
    int candidate = -1;

    for (int i = 0; i < st->nnodes; i++) {
        if (st->nodes[i].used && st->nodes[i].conn != NULL)
            return i;
        if (st->nodes[i].used && candidate < 0 && iwd_now_ms() >= st->nodes[i].retry_at_ms)
            candidate = i;
    }
    return candidate;
}

/* Redis Cluster: the master of the key's slot (argv[1]), following MOVED and ASK. */
static redisReply *cluster_call(struct iwd_redis_state *st, int64_t deadline_ms, int argc, const char **argv,
                                const size_t *len)
{
    unsigned slot = iwd_redis_key_slot(argv[1], len[1]);
    int i;
    bool asking = false;

    if ((!st->have_map || st->map_stale) && iwd_now_ms() >= st->refresh_at_ms)
        refresh_map(st, deadline_ms);
    i = st->owner[slot] != 0 ? st->owner[slot] - 1 : any_node(st);
    for (int hop = 0; hop <= MAX_REDIRECTS && i >= 0; hop++) {
        char host[IWD_REDIS_HOST_SIZE];
        unsigned moved_slot;
        bool ask;
        int port;
        redisReply *reply;

        if (asking) {
            const char *asking_argv[] = {"ASKING"};
            size_t asking_len[] = {6};
            if ((reply = node_call(st, i, deadline_ms, 1, asking_argv, asking_len)) == NULL)
                break;
            freeReplyObject(reply);
        }
        if ((reply = node_call(st, i, deadline_ms, argc, argv, len)) == NULL)
            break; /* the node is down or backing off: the map may name a promoted replica soon */
        if (reply->type != REDIS_REPLY_ERROR ||
            iwd_redis_parse_redirect(reply->str, st->nodes[i].host, &ask, &moved_slot, host, &port) != IWD_OK) {
            if (reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "CLUSTERDOWN", 11) == 0)
                st->map_stale = true;
            return reply;
        }
        freeReplyObject(reply);
        if ((i = node_index(st, host, port)) < 0)
            break;
        asking = ask;
        if (!ask) {
            st->owner[moved_slot] = (unsigned char)(i + 1);
            st->map_stale = true;
        }
        if (hop == MAX_REDIRECTS) {
            iwd_metrics_redis_error();
            iwd_log(IWD_LOG_DEBUG, "a Redis command was redirected too often", "slot %u", slot);
        }
    }
    st->map_stale = true;
    return NULL;
}

/* Run one command on its node; NULL (counted) when it fails or answers an error. */
static redisReply *command(iwd_redis_t *r, int argc, const char **argv, const size_t *len)
{
    struct iwd_redis_state *st = state_of(r);
    int64_t deadline_ms = iwd_now_ms() + OPERATION_BUDGET_MS;
    redisReply *reply;

    if (st == NULL)
        return NULL;
    reply = iwd_conf.redis_cluster ? cluster_call(st, deadline_ms, argc, argv, len)
                                   : single_call(st, deadline_ms, argc, argv, len);
    update_metrics(st, reply == NULL);
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
        iwd_metrics_redis_error();
        iwd_log(IWD_LOG_DEBUG, "Redis answered an error", "%s", reply->str);
        freeReplyObject(reply);
        return NULL;
    }
    return reply;
}

char *iwd_redis_get(iwd_redis_t *redis, const char *key)
{
    const char *argv[] = {"GET", key};
    size_t len[] = {3, strlen(key)};
    redisReply *reply = command(redis, 2, argv, len);
    char *value = NULL;

    if (reply == NULL)
        return NULL;
    if (reply->type == REDIS_REPLY_STRING)
        value = strndup(reply->str, reply->len);
    freeReplyObject(reply);
    return value;
}

void iwd_redis_set(iwd_redis_t *redis, const char *key, const char *value, int ttl_s)
{
    char ttl[16];
    const char *argv[] = {"SET", key, value, "EX", ttl};
    size_t len[] = {3, strlen(key), strlen(value), 2, 0};
    redisReply *reply;

    len[4] = (size_t)snprintf(ttl, sizeof(ttl), "%d", ttl_s);
    if ((reply = command(redis, 5, argv, len)) != NULL)
        freeReplyObject(reply);
}

void iwd_redis_del(iwd_redis_t *redis, const char *key)
{
    const char *argv[] = {"DEL", key};
    size_t len[] = {3, strlen(key)};
    redisReply *reply = command(redis, 2, argv, len);

    if (reply != NULL)
        freeReplyObject(reply);
}

void iwd_redis_close(iwd_redis_t *redis)
{
    if (redis->state == NULL)
        return;
    for (int i = 0; i < redis->state->nnodes; i++)
        iwd_redis_conn_close(redis->state->nodes[i].conn);
    free(redis->state);
    redis->state = NULL;
}
