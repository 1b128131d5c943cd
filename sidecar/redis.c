/*
 * iwd-sidecar Redis cache: API key -> tenant and tenant -> connection settings. Redis only accelerates:
 * when it is unreachable every lookup goes to the control database, and the thread retries Redis with
 * an exponential back-off (100 ms doubling to 30 s) without delaying requests. Calls are synchronous
 * with short timeouts on the calling thread's own connection (see thread.h for the threading model).
 * With IWD_REDIS_CLUSTER the keys go to the first reachable node; MOVED/ASK answers are not followed
 * and count as errors (the cache then falls back to the control database for those keys).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "config.h"
#include "iwd.h"
#include "metrics.h"
#include "redis.h"

#define CONNECT_TIMEOUT_MS 200
#define COMMAND_TIMEOUT_MS 200
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 30000

/* Parse "redis://host:port" (or "host:port"); IWD_ERR when malformed. */
static int parse_node(const char *node, char *host, size_t host_size, int *port)
{
    const char *p = strncmp(node, "redis://", 8) == 0 ? node + 8 : node;
    const char *colon = strrchr(p, ':');
    size_t n;

    *port = 6379;
    n = colon != NULL ? (size_t)(colon - p) : strlen(p);
    if (n == 0 || n >= host_size)
        return IWD_ERR;
    memcpy(host, p, n);
    host[n] = '\0';
    if (colon != NULL && (*port = atoi(colon + 1)) <= 0)
        return IWD_ERR;
    return IWD_OK;
}

static void mark_down(iwd_redis_t *r)
{
    if (r->ctx != NULL) {
        redisFree(r->ctx);
        r->ctx = NULL;
        iwd_metrics_redis_state(-1, 1, 0);
        r->down_since_ms = iwd_now_ms();
    }
    r->backoff_ms = r->backoff_ms == 0 ? BACKOFF_MIN_MS : r->backoff_ms * 2;
    if (r->backoff_ms > BACKOFF_MAX_MS)
        r->backoff_ms = BACKOFF_MAX_MS;
    r->retry_at_ms = iwd_now_ms() + r->backoff_ms;
}

/* The thread's Redis connection, connecting when due; NULL when there is none. */
static redisContext *connection(iwd_redis_t *r)
{    char *nodes, *save = NULL;
    bool first_attempt = r->down_since_ms == 0 && r->backoff_ms == 0;

    if (iwd_conf.redis_nodes == NULL || *iwd_conf.redis_nodes == '\0')
        return NULL;
    if (r->ctx != NULL)
        return r->ctx;
    if (iwd_now_ms() < r->retry_at_ms)
        return NULL;
    nodes = strdup(iwd_conf.redis_nodes);
    for (char *node = strtok_r(nodes, ",", &save); node != NULL; node = strtok_r(NULL, ",", &save)) {
        char host[256];
        int port;
        struct timeval connect_tv = {0, CONNECT_TIMEOUT_MS * 1000}, command_tv = {0, COMMAND_TIMEOUT_MS * 1000};
        redisContext *ctx;

        while (*node == ' ')
            node++;
        if (parse_node(node, host, sizeof(host), &port) != IWD_OK)
            continue;
        ctx = redisConnectWithTimeout(host, port, connect_tv);
        if (ctx == NULL || ctx->err) {
            if (ctx != NULL)
                redisFree(ctx);
            continue;
        }
        redisSetTimeout(ctx, command_tv);
        if (iwd_conf.redis_password != NULL && *iwd_conf.redis_password != '\0') {
            redisReply *reply = redisCommand(ctx, "AUTH %s", iwd_conf.redis_password);
            bool ok = reply != NULL && reply->type != REDIS_REPLY_ERROR;
            if (reply != NULL)
                freeReplyObject(reply);
            if (!ok) {
                redisFree(ctx);
                continue;
            }
        }
        r->ctx = ctx;
        break;
    }
    free(nodes);
    if (r->ctx == NULL) {
        iwd_metrics_redis_error();
        if (first_attempt) {
            iwd_metrics_redis_state(0, 1, 0);
            r->down_since_ms = iwd_now_ms();
        }
        r->backoff_ms = r->backoff_ms == 0 ? BACKOFF_MIN_MS : r->backoff_ms * 2;
        if (r->backoff_ms > BACKOFF_MAX_MS)
            r->backoff_ms = BACKOFF_MAX_MS;
        r->retry_at_ms = iwd_now_ms() + r->backoff_ms;
        return NULL;
    }
    iwd_metrics_redis_state(1, first_attempt ? 0 : -1, 1);
    if (r->down_since_ms != 0)
        iwd_metrics_redis_ready_after((double)(iwd_now_ms() - r->down_since_ms));
    r->down_since_ms = 0;
    r->backoff_ms = 0;
    return r->ctx;
}

/* Run one command; NULL (and the connection marked down on transport errors) when it fails. */
static redisReply *command(iwd_redis_t *r, const char *fmt, const char *a, const char *b, int n)
{
    redisContext *ctx = connection(r);
    redisReply *reply;

    if (ctx == NULL)
        return NULL;
    reply = redisCommand(ctx, fmt, a, b, n);
    if (reply == NULL || ctx->err) {
        iwd_metrics_redis_error();
        if (reply != NULL)
            freeReplyObject(reply);
        mark_down(r);
        return NULL;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        iwd_metrics_redis_error();
        freeReplyObject(reply);
        return NULL;
    }
    return reply;
}

char *iwd_redis_get(iwd_redis_t *redis, const char *key)
{
    redisReply *reply = command(redis, "GET %s", key, NULL, 0);
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
    redisReply *reply = command(redis, "SET %s %s EX %d", key, value, ttl_s);

    if (reply != NULL)
        freeReplyObject(reply);
}

void iwd_redis_del(iwd_redis_t *redis, const char *key)
{
    redisReply *reply = command(redis, "DEL %s", key, NULL, 0);

    if (reply != NULL)
        freeReplyObject(reply);
}

void iwd_redis_close(iwd_redis_t *redis)
{
    if (redis->ctx != NULL)
        redisFree(redis->ctx);
    redis->ctx = NULL;
}
