/*
 * iwd-sidecar Redis Cluster arithmetic (redis_cluster.c): the slot of a key, the redirections a node answers
 * (MOVED, ASK) and the slot map of CLUSTER SLOTS, read from hiredis replies. No I/O: redis.c routes with them.
 */
#ifndef IWD_REDIS_CLUSTER_H
#define IWD_REDIS_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>

#include <hiredis/hiredis.h>

#define IWD_REDIS_SLOTS 16384
#define IWD_REDIS_HOST_SIZE 256

/* The slot of a key: CRC16 (XMODEM) of the key, or of its hash tag (what is between the first "{" and the
 * next "}", when not empty), modulo 16384. */
unsigned iwd_redis_key_slot(const char *key, size_t len);

/* Split "host:port" (or "redis://host:port", "rediss://host:port", "[v6]:port"; the port 6379 when none is
 * given). An empty host is default_host (NULL: refused). IWD_ERR when malformed. */
int iwd_redis_parse_address(const char *text, const char *default_host, char host[IWD_REDIS_HOST_SIZE], int *port);

/* A redirection in an error reply: "MOVED <slot> <host>:<port>" or "ASK <slot> <host>:<port>"; an empty host
 * is asked_host (the node that answered). IWD_OK with *ask, *slot, host and *port set; IWD_ERR for any other
 * error. */
int iwd_redis_parse_redirect(const char *error, const char *asked_host, bool *ask, unsigned *slot,
                             char host[IWD_REDIS_HOST_SIZE], int *port);

/* Called for each slot range of a CLUSTER SLOTS reply with its master's address; IWD_ERR stops the walk. */
typedef int (*iwd_redis_range_fn)(void *arg, unsigned first, unsigned last, const char *host, int port);

/* Walk the slot ranges of a CLUSTER SLOTS reply (asked_host: the node that answered, for an empty address).
 * A range whose master's address is unknown ("?") is skipped. IWD_ERR when the reply is not a slot map or
 * names no range, or when each stopped the walk. */
int iwd_redis_cluster_slots(const redisReply *reply, const char *asked_host, iwd_redis_range_fn each, void *arg);

#endif
