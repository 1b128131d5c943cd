/*
 * iwd-sidecar connection to one Redis node (redis_conn.h).
 *
 * Debian 12's hiredis (0.14) has no TLS, so the sidecar opens the socket itself: a non-blocking TCP connection,
 * wrapped in OpenSSL when IWD_REDIS_TLS is on, every wait a poll() bounded by the caller's deadline. hiredis
 * still formats the commands (redisFormatCommandArgv) and parses the replies (redisReader), so the protocol is
 * hiredis's and only the transport is ours. TLS: at least TLS 1.2, the server's certificate verified against
 * IWD_REDIS_CA_FILE (else the system's CAs) and its name checked against the node's host (a DNS name or an IP
 * address), or IWD_REDIS_TLS_SERVER_NAME when set; a client certificate (IWD_REDIS_CERT_FILE and
 * IWD_REDIS_KEY_FILE) for servers that require one.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "clock.h"
#include "config.h"
#include "iwd.h"
#include "log.h"
#include "redis_conn.h"

#define READ_CHUNK 16384
#define MAX_REPLY_BYTES (1024 * 1024) /* the sidecar's values are small; a CLUSTER SLOTS of 1000 nodes fits */
/* An element takes at least 4 bytes (":0\r\n"), so no reply within MAX_REPLY_BYTES has more elements than this. */
#define MAX_REPLY_ELEMENTS (MAX_REPLY_BYTES / 4)

struct iwd_redis_conn {
    int fd;
    SSL *ssl;
    redisReader *reader;
};

/* hiredis's own reply constructors, and the same with an array's element count bounded (bounded_functions) */
static const redisReplyObjectFunctions *hiredis_functions;
static redisReplyObjectFunctions bounded_functions;
static pthread_once_t functions_once = PTHREAD_ONCE_INIT;

/* hiredis 0.14 allocates an array's element pointers as soon as it reads the count, so "*2000000000\r\n" alone
 * would ask for 16 GB: a count no reply within MAX_REPLY_BYTES can fill is refused (the reader's error). */
static void *create_array_bounded(const redisReadTask *task, int elements)
{
    if (elements < 0 || elements > MAX_REPLY_ELEMENTS)
        return NULL;
    return hiredis_functions->createArray(task, elements);
}

static void functions_setup(void)
{
    redisReader *r = redisReaderCreate();

    if (r == NULL)
        return;
    hiredis_functions = r->fn; /* hiredis's static default table, alive for the process */
    bounded_functions = *r->fn;
    bounded_functions.createArray = create_array_bounded;
    redisReaderFree(r);
}

redisReader *iwd_redis_reader_create(void)
{
    redisReader *r;

    pthread_once(&functions_once, functions_setup);
    if (hiredis_functions == NULL || (r = redisReaderCreate()) == NULL)
        return NULL;
    r->fn = &bounded_functions;
    return r;
}

static SSL_CTX *tls; /* set once by iwd_redis_conn_init, read-only afterwards (OpenSSL shares it safely) */

/* The reason of the last OpenSSL failure, into err. */
static void tls_reason(const char *what, char *err, size_t err_size)
{
    unsigned long e = ERR_get_error();
    char text[256] = "";

    if (e != 0)
        ERR_error_string_n(e, text, sizeof(text));
    snprintf(err, err_size, "%s%s%s", what, e != 0 ? ": " : "", text);
    ERR_clear_error();
}

int iwd_redis_conn_init(void)
{
    char reason[512];

    if (!iwd_conf.redis_tls)
        return IWD_OK;
    tls = SSL_CTX_new(TLS_client_method());
    if (tls == NULL || SSL_CTX_set_min_proto_version(tls, TLS1_2_VERSION) != 1) {
        tls_reason("cannot create the Redis TLS context", reason, sizeof(reason));
        goto fail;
    }
    SSL_CTX_set_verify(tls, SSL_VERIFY_PEER, NULL);
    if (iwd_conf.redis_ca_file != NULL) {
        if (SSL_CTX_load_verify_locations(tls, iwd_conf.redis_ca_file, NULL) != 1) {
            tls_reason("IWD_REDIS_CA_FILE cannot be read as PEM certificates", reason, sizeof(reason));
            goto fail;
        }
    } else if (SSL_CTX_set_default_verify_paths(tls) != 1) {
        tls_reason("the system's CA certificates cannot be loaded", reason, sizeof(reason));
        goto fail;
    }
    if (iwd_conf.redis_cert_file != NULL) {
        if (SSL_CTX_use_certificate_chain_file(tls, iwd_conf.redis_cert_file) != 1) {
            tls_reason("IWD_REDIS_CERT_FILE cannot be read as a PEM certificate", reason, sizeof(reason));
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(tls, iwd_conf.redis_key_file, SSL_FILETYPE_PEM) != 1) {
            tls_reason("IWD_REDIS_KEY_FILE cannot be read as a PEM private key", reason, sizeof(reason));
            goto fail;
        }
        if (SSL_CTX_check_private_key(tls) != 1) {
            tls_reason("IWD_REDIS_KEY_FILE is not the key of IWD_REDIS_CERT_FILE", reason, sizeof(reason));
            goto fail;
        }
    }
    return IWD_OK;
fail:
    iwd_log(IWD_LOG_ERROR, "Redis TLS is not usable", "%s", reason);
    if (tls != NULL)
        SSL_CTX_free(tls);
    tls = NULL;
    return IWD_ERR;
}

/* Wait until fd is ready for events or the deadline passes; IWD_ERR on timeout or a poll failure. */
static int wait_fd(int fd, short events, int64_t deadline_ms)
{
    for (;;) {
        int64_t left = deadline_ms - iwd_now_ms();
        struct pollfd p = {.fd = fd, .events = events};
        int n;

        if (left <= 0)
            return IWD_ERR;
        n = poll(&p, 1, (int)left);
        if (n > 0)
            return IWD_OK;
        if (n < 0 && errno != EINTR)
            return IWD_ERR;
    }
}

/* A TCP connection to one address, by the deadline; -1 with the reason in err. */
static int connect_address(const struct addrinfo *ai, int64_t deadline_ms, char *err, size_t err_size)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol), one = 1;
    int so_error = 0;
    socklen_t len = sizeof(so_error);

    if (fd < 0) {
        snprintf(err, err_size, "socket: %s", strerror(errno));
        return -1;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        if (errno != EINPROGRESS) {
            snprintf(err, err_size, "connect: %s", strerror(errno));
            close(fd);
            return -1;
        }
        if (wait_fd(fd, POLLOUT, deadline_ms) != IWD_OK) {
            snprintf(err, err_size, "connect: timed out");
            close(fd);
            return -1;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) != 0 || so_error != 0) {
            snprintf(err, err_size, "connect: %s", strerror(so_error != 0 ? so_error : errno));
            close(fd);
            return -1;
        }
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* Wait for what an OpenSSL call that returned rc needs; IWD_ERR when it failed for good or timed out, with
 * the reason in err ("what: reason"). */
static int tls_wait(iwd_redis_conn_t *c, int rc, const char *what, int64_t deadline_ms, char *err, size_t err_size)
{
    int e = SSL_get_error(c->ssl, rc), saved_errno = errno;

    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        if (wait_fd(c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline_ms) == IWD_OK)
            return IWD_OK;
        snprintf(err, err_size, "%s: timed out", what);
    } else if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
        snprintf(err, err_size, "%s: %s", what, rc == 0 || saved_errno == 0 ? "the server closed the connection"
                                                                           : strerror(saved_errno));
    } else if (e == SSL_ERROR_ZERO_RETURN) {
        snprintf(err, err_size, "%s: the server closed the connection", what);
    } else {
        tls_reason(what, err, err_size);
    }
    ERR_clear_error();
    return IWD_ERR;
}

/* The TLS handshake, the server's certificate and name verified; IWD_ERR with the reason in err. */
static int tls_handshake(iwd_redis_conn_t *c, const char *host, int64_t deadline_ms, char *err, size_t err_size)
{
    const char *name = iwd_conf.redis_tls_server_name != NULL ? iwd_conf.redis_tls_server_name : host;
    unsigned char addr[16];
    bool is_ip = inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;
    int rc;

    ERR_clear_error();
    if ((c->ssl = SSL_new(tls)) == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
        tls_reason("TLS", err, err_size);
        return IWD_ERR;
    }
    if (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), name) != 1
              : SSL_set1_host(c->ssl, name) != 1 || SSL_set_tlsext_host_name(c->ssl, name) != 1) {
        tls_reason("TLS: the server name cannot be checked", err, err_size);
        return IWD_ERR;
    }
    while ((rc = SSL_connect(c->ssl)) != 1) {
        if (tls_wait(c, rc, "TLS handshake", deadline_ms, err, err_size) != IWD_OK) {
            long verify = SSL_get_verify_result(c->ssl);
            if (verify != X509_V_OK)
                snprintf(err, err_size, "TLS: the server's certificate is not trusted for %s: %s", name,
                         X509_verify_cert_error_string(verify));
            return IWD_ERR;
        }
    }
    return IWD_OK;
}

iwd_redis_conn_t *iwd_redis_conn_open(const char *host, int port, int64_t deadline_ms, char *err, size_t err_size)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *ai;
    char service[8];
    iwd_redis_conn_t *c;
    int rc, fd = -1;

    *err = '\0';
    snprintf(service, sizeof(service), "%d", port);
    if ((rc = getaddrinfo(host, service, &hints, &ai)) != 0) {
        snprintf(err, err_size, "%s: %s", host, gai_strerror(rc));
        return NULL;
    }
    for (const struct addrinfo *a = ai; a != NULL && fd < 0 && iwd_now_ms() < deadline_ms; a = a->ai_next)
        fd = connect_address(a, deadline_ms, err, err_size);
    freeaddrinfo(ai);
    if (fd < 0) {
        if (iwd_now_ms() >= deadline_ms)
            snprintf(err, err_size, "connect: timed out");
        return NULL;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd);
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    c->fd = fd;
    if (iwd_conf.redis_tls && tls_handshake(c, host, deadline_ms, err, err_size) != IWD_OK) {
        iwd_redis_conn_close(c);
        return NULL;
    }
    if ((c->reader = iwd_redis_reader_create()) == NULL) {
        snprintf(err, err_size, "out of memory");
        iwd_redis_conn_close(c);
        return NULL;
    }
    return c;
}

/* Write all of buf by the deadline; IWD_ERR with the reason in err. */
static int write_all(iwd_redis_conn_t *c, const char *buf, size_t len, int64_t deadline_ms, char *err,
                     size_t err_size)
{
    size_t off = 0;

    while (off < len) {
        if (c->ssl != NULL) {
            int n;
            ERR_clear_error();
            n = SSL_write(c->ssl, buf + off, (int)(len - off));
            if (n > 0)
                off += (size_t)n;
            else if (tls_wait(c, n, "write", deadline_ms, err, err_size) != IWD_OK)
                return IWD_ERR;
        } else {
            ssize_t n = send(c->fd, buf + off, len - off, MSG_NOSIGNAL);
            if (n > 0) {
                off += (size_t)n;
            } else if (n < 0 && errno == EINTR) {
                continue;
            } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                if (wait_fd(c->fd, POLLOUT, deadline_ms) != IWD_OK) {
                    snprintf(err, err_size, "write: timed out");
                    return IWD_ERR;
                }
            } else {
                snprintf(err, err_size, "write: %s", strerror(errno));
                return IWD_ERR;
            }
        }
    }
    return IWD_OK;
}

/* Read what has come (at least a byte) by the deadline; the count, or -1 with the reason in err. */
static ssize_t read_some(iwd_redis_conn_t *c, char *buf, size_t size, int64_t deadline_ms, char *err,
                         size_t err_size)
{
    for (;;) {
        if (c->ssl != NULL) {
            int n;
            ERR_clear_error();
            n = SSL_read(c->ssl, buf, (int)size);
            if (n > 0)
                return n;
            if (tls_wait(c, n, "read", deadline_ms, err, err_size) != IWD_OK)
                return -1;
        } else {
            ssize_t n = recv(c->fd, buf, size, 0);
            if (n > 0)
                return n;
            if (n == 0) {
                snprintf(err, err_size, "read: the server closed the connection");
                return -1;
            }
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                snprintf(err, err_size, "read: %s", strerror(errno));
                return -1;
            }
            if (wait_fd(c->fd, POLLIN, deadline_ms) != IWD_OK) {
                snprintf(err, err_size, "read: timed out");
                return -1;
            }
        }
    }
}

redisReply *iwd_redis_conn_call(iwd_redis_conn_t *c, int64_t deadline_ms, int argc, const char **argv,
                                const size_t *argv_len, char *err, size_t err_size)
{
    char *cmd, buf[READ_CHUNK];
    int len = redisFormatCommandArgv(&cmd, argc, argv, argv_len);
    size_t received = 0;
    void *reply = NULL;

    if (len < 0) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    if (write_all(c, cmd, (size_t)len, deadline_ms, err, err_size) != IWD_OK) {
        redisFreeCommand(cmd);
        return NULL;
    }
    redisFreeCommand(cmd);
    for (;;) {
        ssize_t n;

        if (redisReaderGetReply(c->reader, &reply) != REDIS_OK) {
            if (c->reader->err == REDIS_ERR_OOM)
                snprintf(err, err_size, "unreadable reply: an array of more than %d elements, or out of memory",
                         MAX_REPLY_ELEMENTS);
            else
                snprintf(err, err_size, "unreadable reply: %s", c->reader->errstr);
            return NULL;
        }
        if (reply != NULL)
            return reply;
        if ((n = read_some(c, buf, sizeof(buf), deadline_ms, err, err_size)) < 0)
            return NULL;
        if ((received += (size_t)n) > MAX_REPLY_BYTES) {
            snprintf(err, err_size, "a reply of more than %d bytes", MAX_REPLY_BYTES);
            return NULL;
        }
        if (redisReaderFeed(c->reader, buf, (size_t)n) != REDIS_OK) {
            snprintf(err, err_size, "unreadable reply: %s", c->reader->errstr);
            return NULL;
        }
    }
}

void iwd_redis_conn_close(iwd_redis_conn_t *c)
{
    if (c == NULL)
        return;
    if (c->ssl != NULL)
        SSL_free(c->ssl); /* no close_notify: the socket is closed at once, and a dead peer must not block us */
    if (c->fd >= 0)
        close(c->fd);
    if (c->reader != NULL)
        redisReaderFree(c->reader);
    free(c);
}
