/*
 * iwd-sidecar: the iwd REST API v3. Start-up (configuration, the control database's schema), the worker
 * threads (one h2o event loop each, see thread.h), their listeners and the single request entry point.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "collector.h"
#include "config.h"
#include "control.h"
#include "http.h"
#include "iwd.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"
#include "push.h"
#include "redis.h"
#include "routes.h"
#include "static.h"
#include "tenant_work.h"
#include "thread.h"
#include "router.h"
#include "webhooks.h"
#include "email.h"

/* h2o refuses bodies above this itself (plain text); up to it, we answer 413 in JSON. */
#define H2O_BODY_CEILING_FACTOR 4

static h2o_globalconf_t iwd_h2o_config;
static h2o_globalconf_t metrics_h2o_config;
static iwd_thread_t *threads;
static volatile sig_atomic_t stopping;

/* The thread that runs this loop. */
static iwd_thread_t *thread_of(h2o_context_t *ctx)
{
    return (iwd_thread_t *)((char *)ctx - offsetof(iwd_thread_t, ctx));
}

/* A call and its method, kept for when its request is disposed (the request's buffers may be gone then). */
typedef struct api_call {
    iwd_call_t call;
    char method[16];
} api_call_t;

/* The request's pool is disposed: a call never answered had its client close the connection first. */
static void on_call_dispose(void *p)
{
    api_call_t *api = p;

    if (api->call.status == 0)
        iwd_metrics_request_closed(api->method, api->call.route, api->call.has_tenant ? api->call.tenant.ccid : NULL);
}

/*
 * Every request: route it. The call lives in the request's pool, since its answer may come later from
 * the loop (an SQL call); it is counted and logged when answered (http.c), or counted as closed when its
 * request is disposed unanswered.
 */
static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    api_call_t *api = h2o_mem_alloc_shared(&req->pool, sizeof(*api), on_call_dispose);
    iwd_call_t *call = &api->call;

    (void)self;
    *call = (iwd_call_t){.req = req, .thread = thread_of(req->conn->ctx), .route = "unmatched",
                         .start_ms = iwd_now_ms_precise()};
    snprintf(api->method, sizeof(api->method), "%.*s", (int)req->method.len, req->method.base);
    if (iwd_static_path(req))
        return iwd_static_serve(call);
    iwd_route(call);
    return IWD_OK;
}

/*
 * Every request of the metrics listener: GET /metrics (or the API's path, /iwd/v3/metrics) without a key.
 * This port serves nothing else, so that it can be open to Prometheus while the API port is published.
 */
static int on_metrics_req(h2o_handler_t *self, h2o_req_t *req)
{
    iwd_call_t *call = h2o_mem_alloc_pool(&req->pool, sizeof(*call));
    size_t len;
    char *text, *copy;

    (void)self;
    *call = (iwd_call_t){.req = req, .thread = thread_of(req->conn->ctx), .route = "unmatched",
                         .start_ms = iwd_now_ms_precise()};
    if (!h2o_memis(req->path_normalized.base, req->path_normalized.len, H2O_STRLIT("/metrics")) &&
        !h2o_memis(req->path_normalized.base, req->path_normalized.len, H2O_STRLIT(IWD_API_PREFIX "/metrics")))
        return iwd_respond_error(call, 404, "this port serves GET /metrics only");
    call->route = "/metrics";
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")))
        return iwd_respond_error(call, 405, "method %.*s not allowed here", (int)req->method.len, req->method.base);
    text = iwd_metrics_render(&len);
    copy = h2o_mem_alloc_pool(&req->pool, len);
    memcpy(copy, text, len);
    free(text);
    return iwd_respond_text(call, 200, "text/plain; version=0.0.4", copy, len);
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    h2o_accept_ctx_t *accept_ctx = listener->data;
    h2o_socket_t *sock;

    if (err != NULL)
        return;
    if ((sock = h2o_evloop_socket_accept(listener)) == NULL)
        return;
    h2o_accept(accept_ctx, sock);
}

/* A listening socket of one thread on addr:port (SO_REUSEPORT: every thread binds the same port). */
static int create_listener(iwd_thread_t *thread, h2o_accept_ctx_t *accept_ctx, const char *listen_addr, int port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    int fd, on = 1;
    h2o_socket_t *sock;

    if (inet_pton(AF_INET, listen_addr, &addr.sin_addr) != 1) {
        iwd_log(IWD_LOG_ERROR, "invalid listen address", "%s", listen_addr);
        return IWD_ERR;
    }
    if ((fd = socket(AF_INET, SOCK_STREAM, 0)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) != 0 ||
        bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 || listen(fd, SOMAXCONN) != 0) {
        iwd_log(IWD_LOG_ERROR, "cannot listen", "%s:%d: %s", listen_addr, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        return IWD_ERR;
    }
    sock = h2o_evloop_socket_create(thread->ctx.loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    sock->data = accept_ctx;
    h2o_socket_read_start(sock, on_accept);
    return IWD_OK;
}

/*
 * Is the port already bound by another process? SO_REUSEPORT would otherwise let a second sidecar
 * (say, one that failed to stop) silently share the port's connections with us.
 */
static bool port_taken(const char *listen_addr, int port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0), on = 1;
    bool taken;

    if (fd < 0 || inet_pton(AF_INET, listen_addr, &addr.sin_addr) != 1) {
        if (fd >= 0)
            close(fd);
        return false;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    taken = bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 && errno == EADDRINUSE;
    close(fd);
    return taken;
}

/*
 * A worker thread sets up its own loop, h2o context and listeners before it serves: libh2o 2.2.5 gives a
 * socket the input-buffer allocator of the thread that creates it (h2o_socket_buffer_prototype and its
 * recycle list are thread-local, unlocked). A context made on the main thread would leave its
 * multithread queue's pipe socket (woken by every connector thread's message, pg.c) allocating and
 * freeing its buffers in the main thread's recycle list from every worker thread at once: under a burst
 * of failed connections (a postmaster gone) the list was corrupted and a freed buffer handed out again.
 * The main thread waits at startup_barrier for every thread's setup; a thread serves only if all succeeded.
 */
static pthread_barrier_t startup_barrier;
static atomic_bool startup_failed;

static int thread_setup(iwd_thread_t *t)
{
    h2o_context_init(&t->ctx, h2o_evloop_create(), &iwd_h2o_config);
    t->accept_ctx.ctx = &t->ctx;
    t->accept_ctx.hosts = iwd_h2o_config.hosts;
    t->metrics_accept_ctx.ctx = &t->ctx;
    t->metrics_accept_ctx.hosts = metrics_h2o_config.hosts;
    iwd_pg_thread_init(t);
    if (create_listener(t, &t->accept_ctx, iwd_conf.listen, iwd_conf.port) != IWD_OK ||
        (iwd_conf.metrics_port != 0 &&
         create_listener(t, &t->metrics_accept_ctx, iwd_conf.metrics_listen, iwd_conf.metrics_port) != IWD_OK))
        return IWD_ERR;
    return IWD_OK;
}

static void *thread_main(void *arg)
{
    iwd_thread_t *thread = arg;

    if (thread_setup(thread) != IWD_OK)
        atomic_store(&startup_failed, true);
    pthread_barrier_wait(&startup_barrier);
    if (atomic_load(&startup_failed))
        return NULL;
    while (!stopping && h2o_evloop_run(thread->ctx.loop, 500) == 0)
        ;
    return NULL;
}

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

int main(int argc, char **argv)
{
    h2o_hostconf_t *host;
    h2o_pathconf_t *path;
    h2o_handler_t *handler;
    PGconn *control;
    pthread_t pusher;

    if (argc == 2 && strcmp(argv[1], "--routes") == 0) {
        iwd_print_routes();
        return 0;
    }
    if (iwd_config_load(argc, argv) != IWD_OK)
        return 2;
    iwd_log_set_level(iwd_conf.log_level);
    if (iwd_work_init() != IWD_OK || iwd_webhooks_init() != IWD_OK || iwd_email_init() != IWD_OK ||
        iwd_static_init() != IWD_OK)
        return 2;
    if (iwd_redis_init() != IWD_OK)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    iwd_metrics_init();

    /* the control database must be reachable and migrated before we serve */
    control = iwd_pg_connect(iwd_conf.control_db);
    if (PQstatus(control) != CONNECTION_OK) {
        iwd_log(IWD_LOG_ERROR, "cannot connect to the control database", "%s", PQerrorMessage(control));
        PQfinish(control);
        return 1;
    }
    if (iwd_control_migrate(control) != IWD_OK) {
        PQfinish(control);
        return 1;
    }
    PQfinish(control);

    h2o_config_init(&iwd_h2o_config);
    iwd_h2o_config.max_request_entity_size = iwd_conf.max_body_bytes * H2O_BODY_CEILING_FACTOR;
    host = h2o_config_register_host(&iwd_h2o_config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    path = h2o_config_register_path(host, "/", 0);
    handler = h2o_create_handler(path, sizeof(*handler));
    handler->on_req = on_req;
    h2o_config_init(&metrics_h2o_config);
    host = h2o_config_register_host(&metrics_h2o_config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    path = h2o_config_register_path(host, "/", 0);
    handler = h2o_create_handler(path, sizeof(*handler));
    handler->on_req = on_metrics_req;

    if (port_taken(iwd_conf.listen, iwd_conf.port)) {
        iwd_log(IWD_LOG_ERROR, "cannot listen: the port is in use", "%s:%d", iwd_conf.listen, iwd_conf.port);
        return 1;
    }
    if (iwd_conf.metrics_port != 0 && (iwd_conf.metrics_port == iwd_conf.port ||
                                       port_taken(iwd_conf.metrics_listen, iwd_conf.metrics_port))) {
        iwd_log(IWD_LOG_ERROR, "cannot listen: the metrics port is in use", "%s:%d", iwd_conf.metrics_listen,
                iwd_conf.metrics_port);
        return 1;
    }
    threads = calloc(iwd_conf.threads, sizeof(*threads));
    pthread_barrier_init(&startup_barrier, NULL, (unsigned)iwd_conf.threads + 1);
    for (int i = 0; i < iwd_conf.threads; i++) {
        iwd_thread_t *t = &threads[i];
        t->index = i;
        t->waiting_tail = &t->waiting;
        if (pthread_create(&t->tid, NULL, thread_main, t) != 0) {
            iwd_log(IWD_LOG_ERROR, "cannot start a worker thread", NULL);
            return 1;
        }
    }
    pthread_barrier_wait(&startup_barrier);
    if (atomic_load(&startup_failed)) {
        for (int i = 0; i < iwd_conf.threads; i++)
            pthread_join(threads[i].tid, NULL);
        return 1;
    }
    if (iwd_conf.pushgateway_url != NULL && *iwd_conf.pushgateway_url != '\0')
        pthread_create(&pusher, NULL, iwd_push_main, NULL);
    iwd_collector_start();
    iwd_webhooks_start();
    iwd_email_start();
    iwd_router_start();
    iwd_log(IWD_LOG_INFO, "iwd-sidecar listening", "%s:%d, %d threads; metrics on %s:%d", iwd_conf.listen,
            iwd_conf.port, iwd_conf.threads, iwd_conf.metrics_listen, iwd_conf.metrics_port);
    for (int i = 0; i < iwd_conf.threads; i++)
        pthread_join(threads[i].tid, NULL);
    for (int i = 0; i < iwd_conf.threads; i++) {
        iwd_thread_t *t = &threads[i];
        iwd_pg_close_all(t);
        if (t->control != NULL)
            PQfinish(t->control);
        iwd_redis_close(&t->redis);
    }
    iwd_log(IWD_LOG_INFO, "iwd-sidecar stopped", NULL);
    return 0;
}
