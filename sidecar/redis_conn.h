/*
 * iwd-sidecar connection to one Redis node (redis_conn.c): TCP, or TLS through OpenSSL with the server's
 * certificate verified (IWD_REDIS_TLS), speaking the Redis protocol through hiredis's reply reader. Every call
 * is synchronous and ends by the deadline it is given.
 */
#ifndef IWD_REDIS_CONN_H
#define IWD_REDIS_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

typedef struct iwd_redis_conn iwd_redis_conn_t;

/* Ready TLS from the configuration (the CA file, the client certificate), before any thread connects;
 * nothing when IWD_REDIS_TLS is off. IWD_ERR, logged with the reason, when a file cannot be used. */
int iwd_redis_conn_init(void);

/* Connect to host:port (and complete the TLS handshake) by deadline_ms (iwd_now_ms time). NULL when it fails,
 * with the reason in err. */
iwd_redis_conn_t *iwd_redis_conn_open(const char *host, int port, int64_t deadline_ms, char *err, size_t err_size);

/* Send one command (argc arguments) and read its reply by deadline_ms. NULL when the connection failed, timed
 * out or answered something unreadable (the connection is then unusable: close it), with the reason in err.
 * An error reply is a reply (REDIS_REPLY_ERROR). Free the reply with freeReplyObject. */
redisReply *iwd_redis_conn_call(iwd_redis_conn_t *conn, int64_t deadline_ms, int argc, const char **argv,
                                const size_t *argv_len, char *err, size_t err_size);

/* A hiredis reply reader that refuses an array whose element count no reply of the sidecar's size bound could
 * fill (hiredis 0.14 would allocate the count's pointers before reading a single element); NULL when out of
 * memory. Free it with redisReaderFree. */
redisReader *iwd_redis_reader_create(void);

/* Close the connection and free it (NULL: nothing). */
void iwd_redis_conn_close(iwd_redis_conn_t *conn);

#endif
