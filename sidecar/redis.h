/*
 * iwd-sidecar Redis cache: a thread's own connections (one Redis server, or the masters of a Redis Cluster),
 * used synchronously with short timeouts, plain or TLS. Redis only accelerates: every call fails quietly
 * (NULL, nothing stored) when Redis is down, and is counted.
 */
#ifndef IWD_REDIS_H
#define IWD_REDIS_H

/* Redis client state of one thread (redis.c): zero until its first call. */
typedef struct iwd_redis {
    struct iwd_redis_state *state;
} iwd_redis_t;

/* Ready what every thread shares (TLS), before the threads start; IWD_ERR, logged, when it cannot be. */
int iwd_redis_init(void);

/* The value of key, malloc'd; NULL when absent or when Redis cannot be reached. */
char *iwd_redis_get(iwd_redis_t *redis, const char *key);

/* Set key to value for ttl_s seconds (best effort). */
void iwd_redis_set(iwd_redis_t *redis, const char *key, const char *value, int ttl_s);

/* Delete key (best effort). */
void iwd_redis_del(iwd_redis_t *redis, const char *key);

/* Close the connections and free the state (at shutdown). */
void iwd_redis_close(iwd_redis_t *redis);

#endif
