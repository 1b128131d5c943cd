/*
 * iwd-sidecar router sync (router.h).
 *
 * Everything the sync knows lives in the tenant database (sql/router.sql): the configuration with its
 * secrets sealed under IWD_SECRET_KEY, the tasks handed to the router with their routerId, the pull cursor,
 * and a lease that lets one replica at a time sync a tenant. A round of a tenant's sync:
 *  1. iwd.router_claim takes or renews the lease (LEASE_S past the round's longest possible length); a
 *     replica that finds it held by another waits and asks again, and takes over once the holder stops
 *     renewing it (it died).
 *  2. An OAuth2 client-credentials token is fetched when there is none or it ends within TOKEN_MARGIN_S;
 *     a 401 of the router drops it and the round is run again once with a new one.
 *  3. iwd.router_plan says what to stop and what to submit; new submissions are committed (with their
 *     submission number, the idempotency key's) before any request is sent, so that a submission repeated
 *     after a crash, a timeout or a lost answer names the same work item at the router: a task is never
 *     submitted twice. Stops run concurrently (CONCURRENT at a time), then submissions one after the
 *     other in the queue's order (the router receives them best first; the first that fails ends the
 *     round, so a later one never overtakes it), their answers recorded (iwd.router_stopped,
 *     iwd.router_submitted).
 *  4. Only when every submission was answered, the router's changes are pulled from the cursor and applied
 *     with the new cursor in one transaction (iwd.router_apply: a change is applied once even when a pull
 *     returns it again), page after page. A router that no longer knows the cursor (410) has every work item
 *     it holds for the tenant retrieved one by one instead (retrieve_held), and its new cursor taken.
 *  5. The outcome is reported (iwd.router_report: GET /router's status) and counted in the metrics.
 * A round that fails (the router down, a 5xx, a timeout, refused credentials, the database) is reported
 * and the next one waits BACKOFF_MIN_MS, doubling up to BACKOFF_MAX_MS: never a tight loop. A round that
 * left work (a displaced task stopped: its successor is submitted next, a full page) is followed by the
 * next at once; otherwise the next comes after IWD_ROUTER_INTERVAL_MS, or sooner when the tenant's events
 * are announced (LISTEN iwd_events) or a route wakes it.
 *
 * Threads: a watcher reads the registry's tenants every IWD_WORK_REGISTRY_INTERVAL_MS (tenant_work.c) and
 * asks each whether it has a router (at start, then every PROBE_INTERVAL_MS; a PUT /router or a provisioning
 * with tenant.gws on this replica asks at once: the routes wake it through tenant_work.h); each tenant with
 * a router gets a sync thread of its own, with its own connection to its database and its own libcurl multi
 * handle, so that a slow router or database holds up only its tenant, and nothing here ever runs on a
 * worker thread's loop. Every database statement is bounded
 * (iwd_pg_exec_within), every request by IWD_ROUTER_TIMEOUT_MS, every answer by ANSWER_MAX bytes.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "clock.h"
#include "config.h"
#include "iwd.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"
#include "router.h"
#include "secret.h"
#include "tenant_work.h"
#include "text.h"

#define PROBE_INTERVAL_MS 300000    /* a tenant without a router is asked again after this */
#define CONNECT_TIMEOUT_S 2
#define STATEMENT_TIMEOUT_MS 10000
#define DEADLINE_MS 12000           /* the sync's own bound on one database answer */
#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 60000
#define TOKEN_MARGIN_S 30           /* a token is renewed this long before it ends */
#define PLAN_BATCH 256              /* stops and submissions of one plan, each */
#define PULL_LIMIT 500              /* changes asked per page */
#define PULL_PAGES 20               /* pages per round at most (a backlog continues in the next round) */
#define RETRIEVE_BATCH 256          /* work items retrieved per batch after the router lost the cursor */
#define CONCURRENT 16               /* stops in flight per tenant */
#define ANSWER_MAX (4 * 1024 * 1024)
#define ERROR_TEXT 300
#define MAX_SYNCS 1024              /* tenants synced by one replica */
#define LEASE_S 15                  /* a tenant's sync lease: another replica takes over this long after a death */
#define RENEW_MS 5000               /* the lease is renewed this often during a round */

/* One HTTP request to a router and its answer. */
typedef struct request {
    const char *op;                 /* token, submit, stop, pull */
    char *url;
    const char *method;
    char *body;                     /* NULL: none */
    const char *content_type;
    char *basic_user, *basic_password; /* the token request's HTTP Basic credentials */
    CURL *easy;
    struct curl_slist *headers;
    iwd_text_t answer;
    bool too_large;
    bool unsent;                    /* not sent: an earlier request of an ordered run did not go through */
    char curl_error[CURL_ERROR_SIZE];
    CURLcode rc;
    long status;
    int64_t task_id;                /* submit, stop */
    char *submission, *router_id;
} request_t;

/* A tenant with a router, as the watcher knows it; its sync thread's state below. */
typedef struct sync {
    iwd_tenant_t tenant;
    pthread_t thread;
    int wake_pipe[2];
    volatile bool stop;             /* set by the watcher: the tenant is no longer provisioned */
    volatile bool done;             /* set by the thread when it ends (no router any more, or stopped) */
    bool listed;
    /* the sync thread's own */
    PGconn *conn;
    CURLM *multi;
    char *token;
    int64_t token_ends_ms;
    char *url, *auth_url, *client_id, *client_secret, *api_key, *cursor, *key_prefix;
    bool enabled;
    bool pooled;                    /* the connection goes through a pooler: no LISTEN, the interval alone */
    int backoff_ms;
    int64_t renew_at_ms;            /* when the lease is renewed next during a round */
    bool lost;                      /* the lease passed to another replica during the round */
    bool more;                      /* the last round left work: the next one at once */
    char error[ERROR_TEXT + 128];   /* the round's failure, empty when none */
    double lag_s;
    struct sync *next;
} sync_t;

typedef enum { CLAIM_HELD, CLAIM_OTHER, CLAIM_NONE, CLAIM_FAILED } claim_t;

static claim_t claim(sync_t *s);

/* A tenant without a router: when to ask again. */
typedef struct probed {
    char ccid[IWD_CCID_SIZE];
    int64_t probe_at_ms;
    struct probed *next;
} probed_t;

static pthread_mutex_t watch_lock = PTHREAD_MUTEX_INITIALIZER;
static sync_t *syncs;               /* the watcher's (reaped under watch_lock) */
static probed_t *probed;
static PGconn *control;

/* --- small helpers ------------------------------------------------------------------------------- */

static void wake_fd(int fd)
{
    char byte = 1;

    if (fd >= 0 && write(fd, &byte, 1) < 0 && errno != EAGAIN)
        iwd_log(IWD_LOG_WARN, "router sync not woken", "%s", strerror(errno));
}

static void drain_fd(int fd)
{
    char buf[256];

    while (read(fd, buf, sizeof(buf)) > 0)
        ;
}

/* Free a secret, its bytes wiped first. */
static void free_secret(char **s)
{
    if (*s != NULL) {
        OPENSSL_cleanse(*s, strlen(*s));
        free(*s);
        *s = NULL;
    }
}

/* Set the round's failure (the first one of the round is kept). */
static void fail(sync_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(sync_t *s, const char *fmt, ...)
{
    va_list ap;

    if (s->error[0] != '\0')
        return;
    va_start(ap, fmt);
    vsnprintf(s->error, sizeof(s->error), fmt, ap);
    va_end(ap);
}

/*
 * A statement of the tenant's connection failed (res: its result, NULL when no answer came in time): the round's
 * failure is what names the statement and why, the result is freed and the connection closed (the next round
 * opens another). Returns false, for the callers' return.
 */
static bool drop_conn(sync_t *s, const char *what, PGresult *res)
{
    fail(s, "%s: %s", what, res == NULL ? "no answer from the database in time" : PQresultErrorMessage(res));
    if (res != NULL)
        PQclear(res);
    PQfinish(s->conn);
    s->conn = NULL;
    iwd_metrics_db(s->tenant.ccid, "disconnect", NULL, 0, false, true);
    return false;
}

/*
 * Run one statement on the tenant's connection, bounded; NULL when no answer came (the caller closes it).
 * Counted under the one command "router" (each command of a database is a histogram of its own in the
 * metrics); command names the statement in the round's failure.
 */
static PGresult *query(sync_t *s, const char *command, const char *sql, int nparams, const char *const *values)
{
    (void)command;
    return iwd_pg_exec_within(s->conn, s->tenant.ccid, "router", sql, nparams, values, iwd_now_ms() + DEADLINE_MS);
}

/*
 * The one jsonb (or text) value a statement returns, malloc'd ("" for NULL); NULL with the round's failure
 * set when it failed (the connection is then closed).
 */
static char *query_value(sync_t *s, const char *command, const char *sql, int nparams, const char *const *values)
{
    PGresult *res = query(s, command, sql, nparams, values);
    char *out;

    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        drop_conn(s, command, res);
        return NULL;
    }
    out = strdup(PQgetisnull(res, 0, 0) ? "" : PQgetvalue(res, 0, 0));
    PQclear(res);
    return out;
}

/*
 * Whether the connection goes through a pooler (PgBouncer): the backend's own pid differs from the one the
 * connection was told at its start (a pooler makes that one up, and may run each transaction on another
 * server session). False with the failure set (the connection closed) when the question got no answer.
 */
static bool ask_pooled(sync_t *s, bool *out)
{
    PGresult *res = query(s, "backend", "SELECT pg_backend_pid()", 0, NULL);

    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        return drop_conn(s, "the backend's pid", res);
    *out = atoi(PQgetvalue(res, 0, 0)) != PQbackendPID(s->conn);
    PQclear(res);
    return true;
}

/*
 * The tenant's connection, opened when needed, with LISTEN iwd_events on it to hear of the tenant's changes
 * at once; false with the failure set. Through a pooler in transaction mode LISTEN does not work (it runs on
 * whichever server session the pool lends, which then serves other clients): there the sync does not
 * listen and runs every IWD_ROUTER_INTERVAL_MS, said once in the log.
 */
static bool connect_tenant(sync_t *s)
{
    char conninfo[IWD_CONNINFO_SIZE + 64];
    PGresult *res;
    bool was_pooled;

    if (s->conn != NULL && PQstatus(s->conn) == CONNECTION_OK)
        return true;
    if (s->conn != NULL)
        PQfinish(s->conn);
    /* told apart from the API's sessions from the start (the server cap counts those only): the last wins */
    snprintf(conninfo, sizeof(conninfo), "%s application_name=iwd-sidecar-router", s->tenant.conninfo);
    s->conn = iwd_pg_connect_bounded(conninfo, CONNECT_TIMEOUT_S, STATEMENT_TIMEOUT_MS);
    OPENSSL_cleanse(conninfo, sizeof(conninfo));
    if (PQstatus(s->conn) != CONNECTION_OK) {
        iwd_metrics_db(s->tenant.ccid, "connect", "08006", 0, false, false);
        fail(s, "the tenant database is not reachable: %s", PQerrorMessage(s->conn));
        PQfinish(s->conn);
        s->conn = NULL;
        return false;
    }
    iwd_metrics_db(s->tenant.ccid, "connect", NULL, 0, true, false);
    was_pooled = s->pooled;
    if (!ask_pooled(s, &s->pooled))
        return false;
    if (s->pooled) {
        if (!was_pooled)
            iwd_log(IWD_LOG_INFO, "router sync without LISTEN", "%s: the tenant's connection goes through a pooler "
                    "(PgBouncer): its sync runs every %d ms (IWD_ROUTER_INTERVAL_MS)", s->tenant.ccid,
                    iwd_conf.router_interval_ms);
        return true;
    }
    res = query(s, "listen", "LISTEN iwd_events", 0, NULL);
    if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK)
        return drop_conn(s, "LISTEN iwd_events failed", res);
    PQclear(res);
    return true;
}

/* --- HTTP ---------------------------------------------------------------------------------------- */

static size_t on_answer(char *data, size_t size, size_t n, void *clientp)
{
    request_t *r = clientp;
    size_t len = size * n;

    if (r->answer.len + len > ANSWER_MAX) {
        r->too_large = true;
        return 0; /* the transfer fails: an answer larger than any the protocol has */
    }
    iwd_text_put(&r->answer, "%.*s", (int)len, data);
    return len;
}

static request_t *request_new(const char *op, const char *method, char *url)
{
    request_t *r = calloc(1, sizeof(*r));

    r->op = op;
    r->method = method;
    r->url = url;
    r->answer = iwd_text_new(256);
    return r;
}

static void request_free(request_t *r)
{
    if (r == NULL)
        return;
    if (r->easy != NULL)
        curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    free(r->url);
    free(r->body);
    free_secret(&r->basic_user);
    free_secret(&r->basic_password);
    free(r->answer.buf);
    free(r->submission);
    free(r->router_id);
    free(r);
}

/* The transfer of a request, with the token, the API key and the bounds. */
static void request_prepare(sync_t *s, request_t *r)
{
    char header[4096];

    r->easy = curl_easy_init();
    curl_easy_setopt(r->easy, CURLOPT_URL, r->url);
    curl_easy_setopt(r->easy, CURLOPT_CUSTOMREQUEST, r->method);
    if (r->body != NULL) {
        curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, r->body);
        curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(r->body));
    } else if (strcmp(r->method, "GET") == 0) {
        curl_easy_setopt(r->easy, CURLOPT_HTTPGET, 1L);
    }
    if (r->content_type != NULL) {
        snprintf(header, sizeof(header), "Content-Type: %s", r->content_type);
        r->headers = curl_slist_append(r->headers, header);
    }
    r->headers = curl_slist_append(r->headers, "Accept: application/json");
    r->headers = curl_slist_append(r->headers, "Expect:");
    if (r->basic_user != NULL) {
        curl_easy_setopt(r->easy, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
        curl_easy_setopt(r->easy, CURLOPT_USERNAME, r->basic_user);
        curl_easy_setopt(r->easy, CURLOPT_PASSWORD, r->basic_password);
    } else {
        if (s->token != NULL) {
            snprintf(header, sizeof(header), "Authorization: Bearer %s", s->token);
            r->headers = curl_slist_append(r->headers, header);
        }
        if (s->api_key != NULL) {
            snprintf(header, sizeof(header), "x-api-key: %s", s->api_key);
            r->headers = curl_slist_append(r->headers, header);
        }
        if (r->submission != NULL) {
            snprintf(header, sizeof(header), "Idempotency-Key: %s-%" PRId64 "-%s", s->key_prefix, r->task_id,
                     r->submission);
            r->headers = curl_slist_append(r->headers, header);
        }
    }
    OPENSSL_cleanse(header, sizeof(header));
    curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, (long)iwd_conf.router_timeout_ms);
    curl_easy_setopt(r->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)iwd_conf.router_timeout_ms);
    curl_easy_setopt(r->easy, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(r->easy, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(r->easy, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(r->easy, CURLOPT_PROXY, "");
    curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(r->easy, CURLOPT_ERRORBUFFER, r->curl_error);
    curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_answer);
    curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
    if (iwd_conf.ca_file != NULL)
        curl_easy_setopt(r->easy, CURLOPT_CAINFO, iwd_conf.ca_file);
}

/* The metrics' result of a finished request. */
static const char *result_of(const request_t *r)
{
    if (r->rc == CURLE_OPERATION_TIMEDOUT)
        return "timeout";
    if (r->rc != CURLE_OK)
        return r->too_large ? "malformed" : "unreachable";
    if (r->status >= 200 && r->status < 300)
        return "ok";
    if (r->status == 401 || r->status == 403)
        return "unauthorized";
    if (r->status >= 500)
        return "unavailable";
    return "refused";
}

/* What went wrong with a finished request, for lastError (empty when it succeeded). */
static void describe(const request_t *r, char *out, size_t size)
{
    char answer[ERROR_TEXT + 1];
    size_t n = r->answer.len < ERROR_TEXT ? r->answer.len : ERROR_TEXT;

    memcpy(answer, r->answer.buf, n);
    answer[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)answer[i] < 0x20 || answer[i] == 0x7f)
            answer[i] = ' ';
    if (r->rc == CURLE_OPERATION_TIMEDOUT)
        snprintf(out, size, "%s: no answer from the router within %d ms", r->op, iwd_conf.router_timeout_ms);
    else if (r->too_large)
        snprintf(out, size, "%s: the router's answer exceeds %d bytes", r->op, ANSWER_MAX);
    else if (r->rc != CURLE_OK)
        snprintf(out, size, "%s: the router is not reachable: %s%s%s", r->op, curl_easy_strerror(r->rc),
                 r->curl_error[0] ? ": " : "", r->curl_error);
    else if (r->status < 200 || r->status >= 300)
        snprintf(out, size, "%s: the router answered HTTP %ld: %s", r->op, r->status, answer);
    else
        out[0] = '\0';
}

/*
 * Renew the lease when RENEW_MS have passed since it was taken; false once it passed to another replica
 * (the round stops sending: what it records is refused anyway, iwd._router_lease).
 */
static bool renew(sync_t *s)
{
    if (s->lost)
        return false;
    if (iwd_now_ms() < s->renew_at_ms)
        return true;
    if (claim(s) != CLAIM_HELD) {
        s->lost = true;
        fail(s, "the sync's lease passed to another replica");
        return false;
    }
    return true;
}

/*
 * Run the requests, at most concurrent at a time, each to its end (answered, failed or timed out); counted.
 * One at a time (concurrent 1), they reach the router in their order, and the first that does not go
 * through ends the run: the ones after it are not sent (unsent; the next round sends them, still in order).
 */
static void run_requests(sync_t *s, request_t **reqs, int n, int concurrent)
{
    int next = 0, active = 0;
    char why[ERROR_TEXT + 128];

    while (next < n || active > 0) {
        CURLMsg *msg;
        int running, left;

        if (next < n && active < concurrent && !renew(s)) {
            for (; next < n; next++) /* not sent: failed, the next round tries again */
                reqs[next]->rc = CURLE_ABORTED_BY_CALLBACK;
        }
        if (concurrent == 1 && next > 0 && next < n && active == 0) {
            describe(reqs[next - 1], why, sizeof(why));
            if (why[0] != '\0')
                for (; next < n; next++)
                    reqs[next]->unsent = true;
        }
        while (next < n && active < concurrent) {
            request_prepare(s, reqs[next]);
            curl_multi_add_handle(s->multi, reqs[next]->easy);
            next++;
            active++;
        }
        curl_multi_perform(s->multi, &running);
        while ((msg = curl_multi_info_read(s->multi, &left)) != NULL) {
            request_t *r;
            char *private;
            if (msg->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &private);
            r = (request_t *)private;
            r->rc = msg->data.result;
            curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
            curl_multi_remove_handle(s->multi, r->easy);
            active--;
            iwd_metrics_router_request(s->tenant.ccid, r->op, result_of(r));
        }
        if (active > 0)
            curl_multi_poll(s->multi, NULL, 0, 1000, NULL);
    }
}

/* --- a round --------------------------------------------------------------------------------------- */

/* A string member of a JSON object, strdup'd; NULL when absent or not a string. */
static char *member(json_t *doc, const char *key)
{
    json_t *v = json_object_get(doc, key);

    return json_is_string(v) ? strdup(json_string_value(v)) : NULL;
}

/* Forget the configuration and token held (the lease passed, the router changed). */
static void forget_config(sync_t *s)
{
    free(s->url);
    free(s->auth_url);
    free(s->client_id);
    free(s->cursor);
    free(s->key_prefix);
    free_secret(&s->client_secret);
    free_secret(&s->api_key);
    free_secret(&s->token);
    s->url = s->auth_url = s->client_id = s->cursor = s->key_prefix = NULL;
}

/*
 * Open a sealed secret of the configuration; false with the failure set when this sidecar cannot. *stale is
 * set when IWD_SECRET_KEY_PREVIOUS sealed it (it is sealed again under the current secret).
 */
static bool open_secret(sync_t *s, json_t *cfg, const char *key, char **out, bool *stale)
{
    json_t *v = json_object_get(cfg, key);
    bool current;

    free_secret(out);
    if (!json_is_string(v))
        return true;
    if ((*out = iwd_secret_open(json_string_value(v), &current)) == NULL) {
        fail(s, "the router's %s cannot be opened with IWD_SECRET_KEY: set it again (PUT /iwd/v3/router)", key);
        return false;
    }
    *stale |= !current;
    return true;
}

/* Seal the secrets again under the current IWD_SECRET_KEY (a rotation); a failure is retried next round. */
static void reseal(sync_t *s)
{
    char *secret = s->client_secret != NULL ? iwd_secret_seal(s->client_secret) : NULL;
    char *api_key = s->api_key != NULL ? iwd_secret_seal(s->api_key) : NULL;
    const char *values[3] = {iwd_work_replica(), secret, api_key};
    PGresult *res = query(s, "router_reseal", "SELECT iwd.router_reseal($1, $2, $3)", 3, values);

    if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK)
        iwd_log(IWD_LOG_INFO, "router secrets sealed again", "%s", s->tenant.ccid);
    if (res != NULL)
        PQclear(res);
    free(secret);
    free(api_key);
}

/* Take or renew the lease, and read the configuration. */
static claim_t claim(sync_t *s)
{
    char lease[16];
    const char *values[2] = {iwd_work_replica(), lease};
    char *text;
    json_t *cfg;
    char *url;
    bool stale = false;
    claim_t rc = CLAIM_HELD;

    snprintf(lease, sizeof(lease), "%d", LEASE_S);
    if ((text = query_value(s, "router_claim", "SELECT iwd.router_claim($1, $2::int)", 2, values)) == NULL)
        return CLAIM_FAILED;
    if (*text == '\0') {
        free(text);
        return CLAIM_NONE;
    }
    cfg = json_loads(text, 0, NULL);
    OPENSSL_cleanse(text, strlen(text));
    free(text);
    if (cfg == NULL) {
        fail(s, "router_claim: a malformed answer");
        return CLAIM_FAILED;
    }
    if (!json_is_true(json_object_get(cfg, "held"))) {
        json_decref(cfg);
        forget_config(s);
        return CLAIM_OTHER;
    }
    s->renew_at_ms = iwd_now_ms() + RENEW_MS;
    url = member(cfg, "url");
    if (s->url == NULL || url == NULL || strcmp(url, s->url) != 0)
        forget_config(s); /* a new router: a new token */
    free(url);
    free(s->url);
    free(s->auth_url);
    free(s->client_id);
    free(s->cursor);
    free(s->key_prefix);
    s->url = member(cfg, "url");
    s->key_prefix = member(cfg, "keyPrefix");
    s->auth_url = member(cfg, "authUrl");
    s->client_id = member(cfg, "clientId");
    s->cursor = member(cfg, "cursor");
    s->enabled = json_is_true(json_object_get(cfg, "enabled"));
    if (!open_secret(s, cfg, "clientSecret", &s->client_secret, &stale) ||
        !open_secret(s, cfg, "apiKey", &s->api_key, &stale))
        rc = CLAIM_FAILED;
    else if (s->url == NULL || s->auth_url == NULL || s->client_id == NULL || s->key_prefix == NULL)
        fail(s, "router_claim: the configuration is incomplete"), rc = CLAIM_FAILED;
    json_decref(cfg);
    if (rc == CLAIM_HELD && stale)
        reseal(s);
    return rc;
}

/* A token from the router's authorization server unless the one held lasts; false with the failure set. */
static bool ensure_token(sync_t *s)
{
    request_t *r;
    json_t *doc;
    char why[ERROR_TEXT + 128];
    bool ok = false;

    if (s->token != NULL && iwd_now_ms() < s->token_ends_ms)
        return true;
    free_secret(&s->token);
    if (s->client_secret == NULL) {
        fail(s, "token: the router has no client secret");
        return false;
    }
    r = request_new("token", "POST", NULL);
    iwd_text_t url = iwd_text_new(256);
    iwd_text_put(&url, "%s/oauth/token", s->auth_url);
    r->url = url.buf;
    r->body = strdup("grant_type=client_credentials");
    r->content_type = "application/x-www-form-urlencoded";
    r->basic_user = strdup(s->client_id);
    r->basic_password = strdup(s->client_secret);
    run_requests(s, &r, 1, 1);
    describe(r, why, sizeof(why));
    if (why[0] != '\0') {
        if (r->status == 400 || r->status == 401 || r->status == 403)
            fail(s, "token: the router refused the client credentials (HTTP %ld)", r->status);
        else
            fail(s, "%s", why);
    } else if ((doc = json_loads(r->answer.buf, 0, NULL)) == NULL ||
               !json_is_string(json_object_get(doc, "access_token"))) {
        fail(s, "token: the answer holds no access_token");
        json_decref(doc);
    } else {
        json_int_t expires = json_is_integer(json_object_get(doc, "expires_in"))
                                 ? json_integer_value(json_object_get(doc, "expires_in"))
                                 : 3600;
        s->token = strdup(json_string_value(json_object_get(doc, "access_token")));
        if (expires > 86400)
            expires = 86400;
        /* renewed TOKEN_MARGIN_S before its end, or halfway through a shorter life */
        json_int_t lasts_s = expires > 2 * TOKEN_MARGIN_S ? expires - TOKEN_MARGIN_S : expires / 2;
        s->token_ends_ms = iwd_now_ms() + lasts_s * 1000;
        json_decref(doc);
        ok = true;
    }
    if (r->answer.buf != NULL)
        OPENSSL_cleanse(r->answer.buf, r->answer.len);
    request_free(r);
    return ok;
}

/* The requests of a plan: a DELETE per stop (the first *nstops), then a POST per submission, in the plan's order. */
static int plan_requests(sync_t *s, json_t *plan, request_t ***out, int *nstops)
{
    json_t *stops = json_object_get(plan, "stop"), *submits = json_object_get(plan, "submit"), *item;
    int n = 0;
    size_t i;
    request_t **reqs = calloc(json_array_size(stops) + json_array_size(submits) + 1, sizeof(*reqs));

    json_array_foreach(stops, i, item) {
        const char *router_id = json_string_value(json_object_get(item, "routerId"));
        char *escaped;
        iwd_text_t url = iwd_text_new(256);
        request_t *r;
        if (router_id == NULL)
            continue;
        escaped = curl_easy_escape(NULL, router_id, 0);
        iwd_text_put(&url, "%s/workitems/%s", s->url, escaped);
        curl_free(escaped);
        r = request_new("stop", "DELETE", url.buf);
        r->task_id = json_integer_value(json_object_get(item, "taskId"));
        r->router_id = strdup(router_id);
        reqs[n++] = r;
    }
    *nstops = n;
    json_array_foreach(submits, i, item) {
        iwd_text_t url = iwd_text_new(256);
        char submission[32];
        request_t *r;
        iwd_text_put(&url, "%s/workitems", s->url);
        r = request_new("submit", "POST", url.buf);
        r->task_id = json_integer_value(json_object_get(item, "taskId"));
        snprintf(submission, sizeof(submission), "%" JSON_INTEGER_FORMAT,
                 json_integer_value(json_object_get(item, "submission")));
        r->submission = strdup(submission);
        r->body = json_dumps(json_object_get(item, "task"), JSON_COMPACT);
        r->content_type = "application/json";
        reqs[n++] = r;
    }
    *out = reqs;
    return n;
}

/*
 * Record the answers of a plan's requests; false when a request did not go through (its failure set; a
 * 401 drops the token and sets *unauthorized).
 */
static bool record_answers(sync_t *s, request_t **reqs, int n, bool *unauthorized)
{
    json_t *submitted = json_array(), *stopped = json_array();
    bool all = true;
    char why[ERROR_TEXT + 128];

    for (int i = 0; i < n; i++) {
        request_t *r = reqs[i];
        if (r->unsent)
            continue; /* the failure of the submission before it is the round's */
        describe(r, why, sizeof(why));
        if (strcmp(r->op, "stop") == 0) {
            /* gone at the router (404) is stopped too; 409: finished there, the pull brings its end */
            if (why[0] == '\0' || (r->rc == CURLE_OK && r->status == 404)) {
                json_array_append_new(stopped, json_pack("{s:I, s:s}", "taskId", (json_int_t)r->task_id,
                                                         "routerId", r->router_id));
                continue;
            }
            if (r->rc == CURLE_OK && r->status == 409)
                continue;
        } else if (why[0] == '\0') {
            json_t *doc = json_loads(r->answer.buf, 0, NULL), *id = json_object_get(doc, "id");
            char number[32];
            const char *router_id = json_is_string(id) ? json_string_value(id) : NULL;
            if (json_is_integer(id)) {
                snprintf(number, sizeof(number), "%" JSON_INTEGER_FORMAT, json_integer_value(id));
                router_id = number;
            }
            bool answered = router_id != NULL && *router_id != '\0' && strlen(router_id) <= 256;
            if (answered) {
                json_array_append_new(submitted, json_pack("{s:I, s:s, s:s}", "taskId", (json_int_t)r->task_id,
                                                           "submission", r->submission, "routerId", router_id));
            } else {
                snprintf(why, sizeof(why), "submit: the router's answer holds no work item id");
                iwd_metrics_router_request(s->tenant.ccid, r->op, "malformed");
            }
            json_decref(doc);
            if (answered)
                continue;
        }
        all = false;
        if (r->rc == CURLE_OK && r->status == 401)
            *unauthorized = true;
        fail(s, "%s", why);
    }
    if (json_array_size(stopped) > 0)
        s->more = true; /* a place freed: the next submission goes at once */
    if (json_array_size(submitted) > 0 || json_array_size(stopped) > 0) {
        char *sub = json_dumps(submitted, JSON_COMPACT), *stop = json_dumps(stopped, JSON_COMPACT);
        const char *v1[2] = {iwd_work_replica(), sub}, *v2[2] = {iwd_work_replica(), stop};
        char *a = json_array_size(submitted) > 0
                      ? query_value(s, "router_submitted", "SELECT iwd.router_submitted($1, $2::jsonb)", 2, v1)
                      : strdup("");
        char *b = a != NULL && json_array_size(stopped) > 0
                      ? query_value(s, "router_stopped", "SELECT iwd.router_stopped($1, $2::jsonb)", 2, v2)
                      : strdup("");
        all = all && a != NULL && b != NULL;
        free(a);
        free(b);
        free(sub);
        free(stop);
    }
    json_decref(submitted);
    json_decref(stopped);
    return all;
}

/* Plan, send, record; false when something failed (*unauthorized: the router refused the token). */
static bool push(sync_t *s, bool *unauthorized)
{
    char lim[16];
    const char *values[2] = {iwd_work_replica(), lim};
    char *text;
    json_t *plan;
    request_t **reqs;
    int n, nstops;
    bool ok;

    snprintf(lim, sizeof(lim), "%d", PLAN_BATCH);
    if ((text = query_value(s, "router_plan", "SELECT iwd.router_plan($1, $2::int)", 2, values)) == NULL)
        return false;
    plan = json_loads(text, 0, NULL);
    free(text);
    if (plan == NULL) {
        fail(s, "router_plan: a malformed answer");
        return false;
    }
    n = plan_requests(s, plan, &reqs, &nstops);
    /* a full batch leaves more (and a stop frees a place: record_answers) */
    s->more = json_array_size(json_object_get(plan, "submit")) >= PLAN_BATCH;
    json_decref(plan);
    /*
     * The stops at once, CONCURRENT at a time; then the submissions one after the other, each sent once the
     * one before it was answered (on the connection kept open), so that the router receives them in the
     * plan's order, the queue's, best first: requests sent side by side may reach it in any order.
     */
    run_requests(s, reqs, nstops, CONCURRENT);
    run_requests(s, reqs + nstops, n - nstops, 1);
    ok = record_answers(s, reqs, n, unauthorized);
    for (int i = 0; i < n; i++)
        request_free(reqs[i]);
    free(reqs);
    return ok;
}

/* The cursor of a pull's answer (a string or an integer), malloc'd; NULL when it has none. */
static char *cursor_of(json_t *doc)
{
    json_t *cursor = json_object_get(doc, "cursor");
    char text[64];

    if (json_is_integer(cursor)) {
        snprintf(text, sizeof(text), "%" JSON_INTEGER_FORMAT, json_integer_value(cursor));
        return strdup(text);
    }
    return json_is_string(cursor) && json_string_length(cursor) <= 1024 ? strdup(json_string_value(cursor)) : NULL;
}

/*
 * The router no longer knows the cursor (a pull answered 410: it lost or trimmed its journal), so the changes
 * since are not to be had from it: every work item it holds for the tenant is retrieved (GET
 * /workitems/{routerId}, RETRIEVE_BATCH at a time, CONCURRENT in flight), its state applied as a change
 * (iwd.router_apply: a version already applied is skipped) with the router's new cursor (the 410's own, or
 * none: from its start), a work item it no longer has recorded as stopped. False when something failed
 * (nothing recorded: the next round pulls, is told 410 and retrieves again).
 */
static bool retrieve_held(sync_t *s, const char *cursor, bool *unauthorized)
{
    json_t *changes = json_array(), *stopped = json_array();
    json_int_t after = 0;
    bool ok = true;
    char why[ERROR_TEXT + 128];

    iwd_log(IWD_LOG_WARN, "router cursor unknown", "%s: the router no longer knows cursor %s; its work items are "
            "retrieved", s->tenant.ccid, s->cursor != NULL ? s->cursor : "(none)");
    while (ok) {
        char after_text[32], lim[16];
        const char *values[3] = {iwd_work_replica(), after_text, lim};
        char *text;
        json_t *held, *item;
        request_t **reqs;
        size_t i, n;

        snprintf(after_text, sizeof(after_text), "%" JSON_INTEGER_FORMAT, after);
        snprintf(lim, sizeof(lim), "%d", RETRIEVE_BATCH);
        text = query_value(s, "router_held", "SELECT iwd.router_held($1, $2::bigint, $3::int)", 3, values);
        if (text == NULL)
            break;
        held = json_loads(text, 0, NULL);
        free(text);
        n = json_array_size(held);
        reqs = calloc(n + 1, sizeof(*reqs));
        json_array_foreach(held, i, item) {
            const char *router_id = json_string_value(json_object_get(item, "routerId"));
            char *escaped = curl_easy_escape(NULL, router_id != NULL ? router_id : "", 0);
            iwd_text_t url = iwd_text_new(256);
            iwd_text_put(&url, "%s/workitems/%s", s->url, escaped);
            curl_free(escaped);
            reqs[i] = request_new("retrieve", "GET", url.buf);
            reqs[i]->task_id = after = json_integer_value(json_object_get(item, "taskId"));
            reqs[i]->router_id = strdup(router_id != NULL ? router_id : "");
        }
        json_decref(held);
        run_requests(s, reqs, (int)n, CONCURRENT);
        for (i = 0; i < n; i++) {
            request_t *r = reqs[i];
            json_t *doc, *state, *version;
            describe(r, why, sizeof(why));
            if (r->rc == CURLE_OK && r->status == 404) { /* gone at the router */
                json_array_append_new(stopped, json_pack("{s:I, s:s}", "taskId", (json_int_t)r->task_id,
                                                         "routerId", r->router_id));
                continue;
            }
            if (why[0] != '\0') {
                *unauthorized |= r->rc == CURLE_OK && r->status == 401;
                fail(s, "%s", why);
                ok = false;
                continue;
            }
            doc = json_loads(r->answer.buf, 0, NULL);
            state = json_object_get(doc, "state");
            version = json_object_get(doc, "version");
            if (json_is_string(state) && json_is_integer(version)) {
                json_t *agent = json_object_get(doc, "agent");
                json_array_append_new(changes, json_pack("{s:s, s:O, s:O, s:O}", "id", r->router_id, "state", state,
                                                         "agent", json_is_string(agent) ? agent : json_null(),
                                                         "version", version));
            } else {
                iwd_metrics_router_request(s->tenant.ccid, r->op, "malformed");
                fail(s, "retrieve: the router's answer is not {\"state\": ..., \"version\": ...}");
                ok = false;
            }
            json_decref(doc);
        }
        for (i = 0; i < n; i++)
            request_free(reqs[i]);
        free(reqs);
        if (n < RETRIEVE_BATCH)
            break;
    }
    if (ok && json_array_size(stopped) > 0) {
        char *text = json_dumps(stopped, JSON_COMPACT), *recorded;
        const char *values[2] = {iwd_work_replica(), text};
        recorded = query_value(s, "router_stopped", "SELECT iwd.router_stopped($1, $2::jsonb)", 2, values);
        ok = recorded != NULL;
        free(recorded);
        free(text);
    }
    if (ok) {
        char *text = json_dumps(changes, JSON_COMPACT), *applied;
        const char *values[3] = {iwd_work_replica(), text, cursor};
        applied = query_value(s, "router_apply", "SELECT iwd.router_apply($1, $2::jsonb, $3)", 3, values);
        ok = applied != NULL;
        if (ok) {
            free(s->cursor);
            s->cursor = cursor != NULL ? strdup(cursor) : NULL;
            s->more = true;
            iwd_log(IWD_LOG_INFO, "router work items retrieved", "%s: %zu, %zu gone; %s", s->tenant.ccid,
                    json_array_size(changes), json_array_size(stopped), applied);
        }
        free(applied);
        free(text);
    }
    json_decref(changes);
    json_decref(stopped);
    return ok;
}

/* Pull the router's changes from the cursor and apply them, page after page; false when something failed. */
static bool pull(sync_t *s, bool *unauthorized)
{
    bool reset_done = false; /* the work items were retrieved once this round (a second 410 is a failure) */

    for (int page = 0; page < PULL_PAGES; page++) {
        iwd_text_t url = iwd_text_new(256);
        char *escaped = curl_easy_escape(NULL, s->cursor != NULL ? s->cursor : "", 0);
        request_t *r;
        json_t *doc, *changes, *cursor, *more_flag;
        char why[ERROR_TEXT + 128], cursor_text[64];
        const char *cursor_value;
        char *changes_text, *applied;
        bool more;

        if (!renew(s)) {
            free(url.buf);
            curl_free(escaped);
            return false;
        }
        iwd_text_put(&url, "%s/workitems?changedSince=%s&limit=%d", s->url, escaped, PULL_LIMIT);
        curl_free(escaped);
        r = request_new("pull", "GET", url.buf);
        run_requests(s, &r, 1, 1);
        if (r->rc == CURLE_OK && r->status == 410 && reset_done) { /* not even the cursor it just gave */
            request_free(r);
            fail(s, "pull: the router answered 410 for the cursor its own 410 gave");
            return false;
        }
        if (r->rc == CURLE_OK && r->status == 410) { /* the cursor is no longer known to the router */
            char *reset;
            reset_done = true;
            doc = json_loads(r->answer.buf, 0, NULL);
            reset = cursor_of(doc);
            json_decref(doc);
            request_free(r);
            if (!retrieve_held(s, reset, unauthorized)) {
                free(reset);
                return false;
            }
            free(reset);
            continue;
        }
        describe(r, why, sizeof(why));
        if (why[0] != '\0') {
            *unauthorized = r->rc == CURLE_OK && r->status == 401;
            fail(s, "%s", why);
            request_free(r);
            return false;
        }
        doc = json_loads(r->answer.buf, 0, NULL);
        request_free(r);
        changes = json_object_get(doc, "changes");
        cursor = json_object_get(doc, "cursor");
        more_flag = json_object_get(doc, "more");
        if (!json_is_array(changes) || !(json_is_string(cursor) || json_is_integer(cursor)) ||
            json_array_size(changes) > 10 * PULL_LIMIT) {
            iwd_metrics_router_request(s->tenant.ccid, "pull", "malformed");
            fail(s, "pull: the router's answer is not {\"changes\": [...], \"cursor\": ...}");
            json_decref(doc);
            return false;
        }
        if (json_is_integer(cursor)) {
            snprintf(cursor_text, sizeof(cursor_text), "%" JSON_INTEGER_FORMAT, json_integer_value(cursor));
            cursor_value = cursor_text;
        } else {
            cursor_value = json_string_value(cursor);
        }
        more = json_is_true(more_flag) && json_array_size(changes) > 0;
        changes_text = json_dumps(changes, JSON_COMPACT);
        {
            const char *values[3] = {iwd_work_replica(), changes_text, cursor_value};
            applied = query_value(s, "router_apply", "SELECT iwd.router_apply($1, $2::jsonb, $3)", 3, values);
        }
        free(changes_text);
        if (applied == NULL) {
            json_decref(doc);
            return false;
        }
        free(s->cursor);
        s->cursor = strdup(cursor_value);
        json_decref(doc);
        doc = json_loads(applied, 0, NULL);
        free(applied);
        if (json_is_number(json_object_get(doc, "lagSeconds")))
            s->lag_s = json_number_value(json_object_get(doc, "lagSeconds"));
        if (json_array_size(json_object_get(doc, "errors")) > 0) {
            char *errors = json_dumps(json_object_get(doc, "errors"), JSON_COMPACT);
            iwd_log(IWD_LOG_WARN, "router changes skipped", "%s: %s", s->tenant.ccid, errors);
            free(errors);
        }
        if (json_integer_value(json_object_get(doc, "applied")) > 0)
            s->more = true; /* an offer taken or a task finished: the window moved */
        json_decref(doc);
        if (!more)
            return true;
    }
    s->more = true;
    return true;
}

/* Report the round's outcome (lastSyncAt or lastError) and update the metrics. */
static void report(sync_t *s)
{
    const char *values[2] = {iwd_work_replica(), s->error[0] != '\0' ? s->error : NULL};
    char *in_flight;

    if (s->lost) /* the replica holding the lease reports */
        return;
    if (s->conn == NULL && !connect_tenant(s))
        return;
    if ((in_flight = query_value(s, "router_report", "SELECT iwd.router_report($1, $2)", 2, values)) != NULL) {
        iwd_metrics_router_state(s->tenant.ccid, atoi(in_flight), s->lag_s);
        free(in_flight);
    }
}

/* One round; the claim's outcome (CLAIM_HELD: synced, or failed with s->error set). */
static claim_t round_of(sync_t *s)
{
    claim_t c;
    bool unauthorized = false;

    s->error[0] = '\0';
    s->more = false;
    s->lost = false;
    s->lag_s = -1;
    if (!connect_tenant(s))
        return CLAIM_FAILED;
    if ((c = claim(s)) != CLAIM_HELD) {
        if (c == CLAIM_FAILED && s->conn != NULL)
            report(s);
        return c;
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        unauthorized = false;
        s->error[0] = '\0';
        if (ensure_token(s) && push(s, &unauthorized) && pull(s, &unauthorized))
            break;
        if (!unauthorized)
            break;
        free_secret(&s->token); /* the router ended the token before its time: one more round with a new one */
    }
    report(s);
    return CLAIM_HELD;
}

/*
 * Wait for the next round: its time, a wake-up, the tenant's announced events (the queue may have
 * changed), or the stop.
 */
static void wait_for_round(sync_t *s, int64_t timeout_ms)
{
    struct pollfd fds[2];
    int n = 0;

    fds[n++] = (struct pollfd){.fd = s->wake_pipe[0], .events = POLLIN};
    if (s->conn != NULL && PQstatus(s->conn) == CONNECTION_OK && !s->pooled)
        fds[n++] = (struct pollfd){.fd = PQsocket(s->conn), .events = POLLIN};
    if (poll(fds, n, (int)timeout_ms) > 0) {
        if (fds[0].revents != 0)
            drain_fd(s->wake_pipe[0]);
        if (n == 2 && fds[1].revents != 0) {
            PGnotify *note;
            if (!PQconsumeInput(s->conn)) {
                PQfinish(s->conn);
                s->conn = NULL;
                return;
            }
            while ((note = PQnotifies(s->conn)) != NULL)
                PQfreemem(note);
        }
    }
    if (s->conn != NULL) { /* through a pooler, notifications of other clients' LISTEN may come with answers */
        PGnotify *note;
        while ((note = PQnotifies(s->conn)) != NULL)
            PQfreemem(note);
    }
}

static void *sync_main(void *arg)
{
    sync_t *s = arg;

    s->multi = curl_multi_init();
    iwd_log(IWD_LOG_INFO, "router sync started", "%s", s->tenant.ccid);
    while (!s->stop) {
        claim_t c = round_of(s);
        int64_t wait_ms = iwd_conf.router_interval_ms;

        if (c == CLAIM_NONE)
            break;
        if (c == CLAIM_OTHER) {
            /* the replica holding the lease reports the tenant's gauges: summed over replicas they stay true */
            iwd_metrics_router_state(s->tenant.ccid, 0, 0);
            wait_ms = 2000; /* another replica syncs it: asked again, to take over when it dies */
            s->backoff_ms = 0;
        } else if (s->error[0] != '\0') {
            s->backoff_ms = s->backoff_ms == 0 ? BACKOFF_MIN_MS
                                               : (s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                                                                                     : s->backoff_ms * 2);
            wait_ms = s->backoff_ms;
            iwd_log(IWD_LOG_WARN, "router sync failed", "%s: %s; next attempt in %d ms", s->tenant.ccid, s->error,
                    s->backoff_ms);
        } else {
            s->backoff_ms = 0;
            if (s->more)
                wait_ms = 0;
        }
        if (wait_ms > 0)
            wait_for_round(s, wait_ms);
    }
    iwd_log(IWD_LOG_INFO, "router sync ended", "%s", s->tenant.ccid);
    iwd_metrics_router_state(s->tenant.ccid, 0, -1); /* nothing at a router any more, as far as this replica knows */
    if (s->conn != NULL) {
        PQfinish(s->conn);
        iwd_metrics_db(s->tenant.ccid, "disconnect", NULL, 0, false, true);
        s->conn = NULL;
    }
    forget_config(s);
    curl_multi_cleanup(s->multi);
    s->multi = NULL;
    s->done = true;
    iwd_work_nudge(IWD_WORK_ROUTER);
    return NULL;
}

/* --- the watcher ----------------------------------------------------------------------------------- */

/* Whether a tenant has a router: 1 yes, 0 no, -1 unknown (its database is not reachable). */
static int has_router(const iwd_tenant_t *tenant)
{
    char conninfo[IWD_CONNINFO_SIZE + 64];
    PGconn *conn;
    PGresult *res;
    int rc = -1;

    /* told apart from the API's sessions (the last application_name wins) */
    snprintf(conninfo, sizeof(conninfo), "%s application_name=iwd-sidecar-router", tenant->conninfo);
    conn = iwd_pg_connect_bounded(conninfo, CONNECT_TIMEOUT_S, STATEMENT_TIMEOUT_MS);
    OPENSSL_cleanse(conninfo, sizeof(conninfo));

    if (PQstatus(conn) == CONNECTION_OK) {
        res = iwd_pg_exec_within(conn, tenant->ccid, "router",
                                 "SELECT to_regclass('iwd.router') IS NOT NULL", 0, NULL,
                                 iwd_now_ms() + DEADLINE_MS);
        if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK)
            rc = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        if (res != NULL)
            PQclear(res);
        if (rc == 1) {
            res = iwd_pg_exec_within(conn, tenant->ccid, "router", "SELECT EXISTS (SELECT 1 FROM iwd.router)",
                                     0, NULL, iwd_now_ms() + DEADLINE_MS);
            rc = res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK ? strcmp(PQgetvalue(res, 0, 0), "t") == 0
                                                                       : -1;
            if (res != NULL)
                PQclear(res);
        }
    }
    PQfinish(conn);
    return rc;
}

static sync_t *sync_of(const char *ccid)
{
    for (sync_t *s = syncs; s != NULL; s = s->next)
        if (strcmp(s->tenant.ccid, ccid) == 0)
            return s;
    return NULL;
}

static probed_t *probed_of(const char *ccid)
{
    probed_t *p;

    for (p = probed; p != NULL; p = p->next)
        if (strcmp(p->ccid, ccid) == 0)
            return p;
    p = calloc(1, sizeof(*p));
    snprintf(p->ccid, sizeof(p->ccid), "%s", ccid);
    p->next = probed;
    probed = p;
    return p;
}

/* Start the sync of a tenant that has a router. */
static void start_sync(const iwd_tenant_t *tenant)
{
    sync_t *s;
    int n = 0;

    for (s = syncs; s != NULL; s = s->next)
        n++;
    if (n >= MAX_SYNCS) {
        iwd_log(IWD_LOG_WARN, "router sync not started", "%s: this replica syncs %d tenants already", tenant->ccid,
                MAX_SYNCS);
        return;
    }
    s = calloc(1, sizeof(*s));
    s->tenant = *tenant;
    s->listed = true;
    if (pipe2(s->wake_pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
        free(s);
        return;
    }
    pthread_mutex_lock(&watch_lock);
    s->next = syncs;
    syncs = s;
    pthread_mutex_unlock(&watch_lock);
    pthread_create(&s->thread, NULL, sync_main, s);
}

/* Look at a tenant: its sync started when it has a router and none runs. */
static void look_at(const iwd_tenant_t *tenant, bool now_anyway)
{
    sync_t *s = sync_of(tenant->ccid);
    probed_t *p;
    int64_t now = iwd_now_ms();

    if (s != NULL) {
        s->listed = true;
        if (strcmp(s->tenant.conninfo, tenant->conninfo) != 0)
            s->stop = true; /* re-provisioned elsewhere: a new sync once this one ended */
        wake_fd(s->wake_pipe[1]);
        return;
    }
    p = probed_of(tenant->ccid);
    if (!now_anyway && now < p->probe_at_ms)
        return;
    p->probe_at_ms = now + PROBE_INTERVAL_MS;
    if (has_router(tenant) == 1)
        start_sync(tenant);
}

/* Read the registry: tenants looked at, the syncs of tenants no longer provisioned stopped. */
static void refresh_registry(void)
{
    iwd_tenant_t *tenants;
    int n = iwd_work_tenants(&control, "router", &tenants);

    if (n < 0)
        return;
    for (sync_t *s = syncs; s != NULL; s = s->next)
        s->listed = false;
    for (int i = 0; i < n; i++)
        look_at(&tenants[i], false);
    iwd_work_tenants_free(tenants, n);
    for (sync_t *s = syncs; s != NULL; s = s->next)
        if (!s->listed && !s->stop) {
            s->stop = true;
            wake_fd(s->wake_pipe[1]);
        }
}

/* Forget the syncs that ended; their tenants are asked again after PROBE_INTERVAL_MS. */
static void reap(void)
{
    pthread_mutex_lock(&watch_lock);
    for (sync_t **p = &syncs; *p != NULL;) {
        sync_t *s = *p;
        if (!s->done) {
            p = &s->next;
            continue;
        }
        *p = s->next;
        pthread_join(s->thread, NULL);
        probed_of(s->tenant.ccid)->probe_at_ms = iwd_now_ms() + PROBE_INTERVAL_MS;
        close(s->wake_pipe[0]);
        close(s->wake_pipe[1]);
        OPENSSL_cleanse(&s->tenant, sizeof(s->tenant));
        free(s);
    }
    pthread_mutex_unlock(&watch_lock);
}

static void *watcher_main(void *arg)
{
    int64_t registry_at = 0;

    (void)arg;
    for (;;) {
        iwd_tenant_t woken[IWD_WORK_MAX_WAKES];
        int n;
        int64_t now = iwd_now_ms();

        reap();
        if (now >= registry_at) {
            refresh_registry();
            registry_at = now + IWD_WORK_REGISTRY_INTERVAL_MS;
        }
        n = iwd_work_take(IWD_WORK_ROUTER, woken);
        for (int i = 0; i < n; i++)
            look_at(&woken[i], true);
        OPENSSL_cleanse(woken, sizeof(woken));
        iwd_work_wait(IWD_WORK_ROUTER, registry_at - iwd_now_ms());
    }
    return NULL;
}

/* --- configuration -------------------------------------------------------------------------------- */

/* Seal a secret member of a configuration in place; false with the reason when it is not a fit string. */
static bool seal_member(json_t *doc, const char *key, char *err, size_t errlen)
{
    json_t *v = json_object_get(doc, key);
    char *sealed;

    if (v == NULL || json_is_null(v))
        return true;
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > IWD_ROUTER_SECRET_MAX ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        snprintf(err, errlen, "router field \"%s\" must be a string of 1 to %d bytes", key, IWD_ROUTER_SECRET_MAX);
        return false;
    }
    sealed = iwd_secret_seal(json_string_value(v));
    OPENSSL_cleanse((char *)json_string_value(v), json_string_length(v));
    json_object_set_new(doc, key, json_string(sealed));
    free(sealed);
    return true;
}

/* Set a member of a configuration to a default (IWD_GWS_*) when it has none. */
static void default_member(json_t *doc, const char *key, const char *value)
{
    if (value != NULL && json_object_get(doc, key) == NULL)
        json_object_set_new(doc, key, json_string(value));
}

char *iwd_router_seal_config(const char *text, size_t len, bool defaults, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *doc = text != NULL ? json_loadb(text, len, 0, &jerr) : json_object();
    char *out = NULL;

    err[0] = '\0';
    if (doc == NULL) {
        snprintf(err, errlen, "malformed JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
        return NULL;
    }
    if (defaults && json_is_object(doc)) {
        default_member(doc, "url", iwd_conf.gws_url);
        default_member(doc, "clientId", iwd_conf.gws_client_id);
        default_member(doc, "clientSecret", iwd_conf.gws_client_secret);
        default_member(doc, "apiKey", iwd_conf.gws_api_key);
    }
    if (!json_is_object(doc))
        snprintf(err, errlen, "router must be a JSON object");
    else if (json_object_size(doc) == 0)
        ; /* no router: NULL without a reason */
    else if (seal_member(doc, "clientSecret", err, errlen) && seal_member(doc, "apiKey", err, errlen))
        out = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    return out;
}

/* --- start-up and wake-ups --------------------------------------------------------------------------- */

void iwd_router_start(void)
{
    pthread_t watcher;

    pthread_create(&watcher, NULL, watcher_main, NULL);
    pthread_detach(watcher);
    iwd_log(IWD_LOG_INFO, "router sync started", "replica %s", iwd_work_replica());
}
