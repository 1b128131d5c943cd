/*
 * iwd-sidecar Redis cache: a thread's own connection, used synchronously with short timeouts. Redis only
 * accelerates: every call fails quietly (NULL, nothing stored) when Redis is down, and is counted.
 */
#ifndef IWD_REDIS_H
#define IWD_REDIS_H

#include <stdint.h>

#include <hiredis/hiredis.h>

/* Redis client state of one thread (redis.c). */
typedef struct iwd_redis {
    redisContext *ctx;
    int64_t retry_at_ms; /* back-off: no attempt before this time */
    int backoff_ms;
    int64_t down_since_ms;
} iwd_redis_t;

/* The value of key, malloc'd; NULL when absent or when Redis cannot be reached. */
char *iwd_redis_get(iwd_redis_t *redis, const char *key);

/* Set key to value for ttl_s seconds (best effort). */
void iwd_redis_set(iwd_redis_t *redis, const char *key, const char *value, int ttl_s);

/* Delete key (best effort). */
void iwd_redis_del(iwd_redis_t *redis, const char *key);

/* Close the connection (at shutdown). */
void iwd_redis_close(iwd_redis_t *redis);

#endif
