/*
 * iwd-sidecar webhook delivery (webhooks.h).
 *
 * What is delivered lives in the tenant database only: publishing events (iwd.publish_events) makes one
 * iwd.webhook_delivery row per matching webhook in the same transaction, and a delivery is pending until an
 * attempt succeeds or its retry period ends. The sidecar holds nothing that a crash could lose: it claims due
 * deliveries with a lease (iwd.claim_deliveries: FOR UPDATE SKIP LOCKED, at most one per webhook and task,
 * the oldest, so that events of one task reach one endpoint in order), attempts each once, and reports the
 * outcome (iwd.finish_deliveries, which sets the back-off or the final status). A replica killed mid-attempt
 * leaves its leases to expire (60 s); any replica claims those deliveries again, with the same id. Each
 * replica claims under an owner id drawn at random when it starts, so two replicas never attempt one
 * delivery at the same time, and a late report of a lease that passed to another is refused ("lost").
 *
 * Two threads of their own, so that no worker thread's loop ever waits for a receiver or for this work:
 *  - the dispatcher talks to the databases over connections of its own (a short connect and statement
 *    timeout, a deadline on every answer). It reads the registry's tenants every
 *    IWD_WORK_REGISTRY_INTERVAL_MS (tenant_work.c), asks each whether it has webhooks (at start, then every
 *    PROBE_INTERVAL_MS for those without: an idle tenant costs a short connection every 5 minutes, not one
 *    kept open), and keeps a connection to each that has, on which it LISTENs to iwd_events and
 *    iwd_webhooks. Webhook changes reach every replica at once: the replica that serves a PUT /webhooks (or
 *    a retry) is woken (tenant_work.h), and tells the others with a NOTIFY
 *    iwd_webhooks on the control database, to which every dispatcher LISTENs and which wakes them the same
 *    way. A change made with SQL in a tenant database that no dispatcher is connected to (its first webhook)
 *    is seen on the server's count of webhook changes (iwd.webhook_changes(), extension/events.c), read every
 *    POLL_INTERVAL_MS on one connection per server of tenants without webhooks: when it moves, they are
 *    probed at once. A webhook deleted or disabled is named on iwd_webhooks by the tenant database (and
 *    marked at once by the replica that served its DELETE): the sender attempts none of its deliveries
 *    claimed before (an attempt in flight runs to its end). A notification (events
 *    published, a commit announced), a wake-up, an outcome of the sender or every POLL_INTERVAL_MS (retries
 *    come due) start a round that reports the sender's outcomes (iwd.finish_deliveries, one statement for
 *    all), publishes the tenant's committed events (at once when the tenant's scheduler worker is
 *    publishing: the publisher's lock is taken without waiting; two publishers keep up with a capture that
 *    one alone, starved of CPU on a busy server, falls behind) and claims its due deliveries. Every
 *    STATS_INTERVAL_MS it reads the pending counts for iwd_webhook_pending. A tenant database that is slow
 *    to answer delays the others' rounds by DEADLINE_MS at most, and is then left alone for a growing pause;
 *    the HTTP attempts in flight are not delayed (they are the sender's). While a tenant has a backlog (its
 *    last round claimed CLAIM_MIN or more), half of each round's claim is sent first on a second connection
 *    of the tenant and runs beside the round's report, publication and claim: the dispatcher's statements
 *    follow one another on one backend, each waiting for a CPU on a busy server, and a claim costs about
 *    the same whatever it takes. Concurrent claims skip each other's rows and take only the oldest pending
 *    delivery of a webhook and task, so one task's events still reach an endpoint in order.
 *  - the sender runs a libcurl multi handle: every attempt is a non-blocking transfer of that one loop, at
 *    most CONCURRENT_PER_ENDPOINT at a time per webhook and CONCURRENT_TOTAL in all, each bounded by
 *    ATTEMPT_TIMEOUT_S, so a receiver that never answers holds up only its own webhook's queue.
 * libcurl rather than h2o's client: it verifies certificates against the system's CAs, resolves names
 * without blocking (threaded resolver), lets us check the resolved address before connecting
 * (IWD_WEBHOOK_DENY_NETWORKS) and restrict protocols to http and https without following redirects; Debian
 * maintains it (libcurl4-openssl-dev).
 *
 * A claimed delivery holds its lease for LEASE_S, and is never attempted once the lease may have ended: the
 * sender drops a delivery that could not start within START_WITHIN_MS of its claim. Claims follow the
 * sender's progress: the dispatcher holds at most HELD_PER_ENDPOINT claimed, unreported deliveries per
 * webhook and HELD_TOTAL in all, and claims for a tenant only as many as each of its webhooks has room for,
 * so that a burst is claimed as fast as it is delivered rather than ahead of it (a queue of a few attempts
 * per webhook: the latency stays low). A webhook holding claims that reported nothing for STALLED_MS is
 * stalled (its endpoint is slow or silent): for STALLED_FOR_MS it no longer limits its tenant's claims,
 * and what a claim brings it beyond its bound is left unattempted. What is dropped or left is not lost: it
 * comes due again when its lease runs out, and the next events of its task wait for it. So a slow endpoint
 * costs the others of its tenant a pause of STALLED_MS at most now and then, and the rest a share of
 * HELD_TOTAL.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "clock.h"
#include "config.h"
#include "iwd.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"
#include "server_slots.h"
#include "tenant_work.h"
#include "text.h"
#include "webhooks.h"

#define ATTEMPT_TIMEOUT_S 10        /* DESIGN: no answer within 10 s is a failed attempt */
#define LEASE_S 60                  /* a claim's lease: a dead replica's deliveries come due again after it */
#define CONCURRENT_PER_ENDPOINT 8
#define CONCURRENT_TOTAL 128
/*
 * A claim costs the database a scan of the tenant's due deliveries whatever its size: large claims carry
 * a burst with few of them (a webhook's queue of 256 is 32 rounds of attempts, milliseconds on a receiver
 * that answers at once).
 */
#define HELD_PER_ENDPOINT 256       /* claimed and not yet reported, per webhook */
#define HELD_TOTAL 2048
#define CLAIM_BATCH 256
#define REPORT_MAX 1000             /* outcomes per report (iwd.finish_deliveries' bound); the rest next round */
#define CLAIM_MIN 32                /* a claim waits until a webhook has room for this many (fewer round trips) */
#define STALLED_MS 2000             /* a webhook holding claims that reported nothing for this long is stalled */
#define STALLED_FOR_MS 60000        /* and is taken for stalled this long */
#define START_WITHIN_MS 45000       /* leaves an attempt started then its 10 s before the lease ends */
#define POLL_INTERVAL_MS 1000       /* retries come due: each tenant with webhooks is asked this often */
#define PROBE_INTERVAL_MS 300000    /* a tenant without webhooks is asked again after this (see above) */
#define WAKE_GRACE_MS 60000         /* a woken tenant is polled this long even if its probe finds no webhook */
#define STATS_INTERVAL_MS 5000
#define CONNECT_TIMEOUT_S 2
#define STATEMENT_TIMEOUT_MS 5000
#define DEADLINE_MS 6000            /* the dispatcher's own bound on one answer, whatever the server does */
#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 60000
#define ERROR_TEXT_BYTES 300        /* of a failed attempt's response body, kept as last_error */
#define MAX_STOPPED 256             /* webhooks deleted or disabled within the last lease, remembered */
#define SERVER_KEY_SIZE 256

/* A claimed delivery, from its claim to the report of its attempt. */
typedef struct delivery {
    char ccid[IWD_CCID_SIZE];
    char *id, *webhook, *url, *secret, *type, *body; /* malloc'd */
    int64_t claimed_ms;
    int64_t claim_sent_ms;         /* when the claim that brought it was sent */
    /* the attempt (the sender's) */
    CURL *easy;
    struct curl_slist *headers;
    char curl_error[CURL_ERROR_SIZE];
    char response[ERROR_TEXT_BYTES + 1];
    size_t response_len;
    char denied[INET6_ADDRSTRLEN]; /* the resolved address refused by IWD_WEBHOOK_DENY_NETWORKS, if any */
    /* the outcome (for the dispatcher) */
    bool dropped;                  /* not attempted: left to its lease's expiry */
    bool unheld;                   /* the dispatcher: no longer counted in what its endpoint holds */
    int http_status;               /* 0: no HTTP answer */
    char error[ERROR_TEXT_BYTES + 64];
    struct delivery *next;
} delivery_t;

/* A webhook of a tenant: its claimed deliveries (the dispatcher's count) or its queue (the sender's). */
typedef struct endpoint {
    char ccid[IWD_CCID_SIZE];
    char *webhook;
    int held;                      /* dispatcher: claimed, not yet reported */
    int64_t progress_ms;           /* dispatcher: when it was created or last reported an outcome */
    int64_t stalled_until_ms;      /* dispatcher: it limits its tenant's claims no more until then */
    int active;                    /* sender: attempts in flight */
    delivery_t *waiting, **waiting_tail;
    struct endpoint *next;
} endpoint_t;

/* A tenant as the dispatcher knows it. */
typedef struct watched {
    iwd_tenant_t tenant;
    PGconn *conn;                  /* kept while it has webhooks (LISTEN iwd_events) */
    PGconn *claimer;               /* a second connection, for a claim beside each round while a backlog lasts */
    int last_claimed;              /* what the last round claimed */
    bool has_webhooks;
    bool listed;                   /* in the registry at its last reading */
    int64_t woken_until_ms;        /* polled until then even without webhooks found */
    int64_t probe_at_ms, poll_at_ms, stats_at_ms, retry_at_ms;
    int64_t probed_ms;             /* when it was last probed (0: never) */
    int backoff_ms;
    char *pending_text;            /* its iwd_webhook_pending samples, as last read */
    delivery_t *finished;          /* outcomes to report */
    struct watched *next;
} watched_t;

/*
 * A PostgreSQL server of tenants not known to have webhooks: its count of committed webhook changes
 * (iwd.webhook_changes(), read every POLL_INTERVAL_MS over a connection to one of its tenant databases)
 * tells when to probe them again.
 */
typedef struct server_watch {
    char key[SERVER_KEY_SIZE];     /* host:port */
    PGconn *conn;
    long long changes;             /* as last read; -1: not read yet */
    bool needed;                   /* a tenant of it has no webhook known */
    int64_t poll_at_ms, retry_at_ms;
    int backoff_ms;
    struct server_watch *next;
} server_watch_t;

static struct curl_blob ca_blob;   /* the system's CAs and IWD_CA_FILE's; empty without IWD_CA_FILE */
static CURLM *multi;

/* What the threads hand each other, under one lock. */
static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static delivery_t *to_send, **to_send_tail = &to_send;   /* dispatcher -> sender */
static delivery_t *finished, **finished_tail = &finished; /* sender -> dispatcher */
/*
 * The webhooks deleted or disabled lately (routes and notifications -> sender): a delivery of one, claimed
 * by a claim sent before the webhook stopped, is not attempted. Kept for a lease: no such claim is older.
 */
static struct stopped {
    char ccid[IWD_CCID_SIZE];
    char webhook[129];
    int64_t at_ms;
} stopped[MAX_STOPPED];
static int nstopped;

static watched_t *watched;
static server_watch_t *servers;
static endpoint_t *held_endpoints;  /* the dispatcher's */
static int held_total;
static endpoint_t *send_endpoints;  /* the sender's */
static int active_total;
static PGconn *control;

/* --- the sender ---------------------------------------------------------------------------------- */

/* The endpoint of a tenant's webhook in list *list, created when new. */
static endpoint_t *endpoint_of(endpoint_t **list, const char *ccid, const char *webhook)
{
    endpoint_t *e;

    for (e = *list; e != NULL; e = e->next)
        if (strcmp(e->webhook, webhook) == 0 && strcmp(e->ccid, ccid) == 0)
            return e;
    e = calloc(1, sizeof(*e));
    e->progress_ms = iwd_now_ms();
    snprintf(e->ccid, sizeof(e->ccid), "%s", ccid);
    e->webhook = strdup(webhook);
    e->waiting_tail = &e->waiting;
    e->next = *list;
    *list = e;
    return e;
}

/* Forget the endpoints with nothing held, waiting or in flight (webhooks come and go). */
static void prune_endpoints(endpoint_t **list)
{
    for (endpoint_t **p = list; *p != NULL;) {
        endpoint_t *e = *p;
        if (e->held > 0 || e->active > 0 || e->waiting != NULL) {
            p = &e->next;
            continue;
        }
        *p = e->next;
        free(e->webhook);
        free(e);
    }
}

/* Whether address a (family, bytes) lies in network n. */
static bool in_network(const iwd_network_t *n, int family, const unsigned char *a)
{
    int full = n->prefix / 8, rest = n->prefix % 8;

    if (n->family != family)
        return false;
    if (memcmp(n->addr, a, full) != 0)
        return false;
    return rest == 0 || ((n->addr[full] ^ a[full]) & (0xff << (8 - rest)) & 0xff) == 0;
}

/* Whether an address is in IWD_WEBHOOK_DENY_NETWORKS (an IPv4-mapped IPv6 address as its IPv4 one). */
static bool denied_address(const struct sockaddr *sa)
{
    static const unsigned char v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    int family = sa->sa_family;
    const unsigned char *a;

    if (family == AF_INET) {
        a = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
    } else if (family == AF_INET6) {
        a = (const unsigned char *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (memcmp(a, v4_mapped, sizeof(v4_mapped)) == 0) {
            family = AF_INET;
            a += sizeof(v4_mapped);
        }
    } else {
        return true; /* neither IPv4 nor IPv6: nothing a webhook should use */
    }
    for (int i = 0; i < iwd_conf.webhook_deny_count; i++)
        if (in_network(&iwd_conf.webhook_deny_networks[i], family, a))
            return true;
    return false;
}

/* libcurl's socket for each address it tries: refused when the address is denied (checked after resolving). */
static curl_socket_t open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *address)
{
    delivery_t *d = clientp;

    (void)purpose;
    if (denied_address(&address->addr)) {
        const void *a = address->family == AF_INET ? (const void *)&((struct sockaddr_in *)&address->addr)->sin_addr
                                                   : (const void *)&((struct sockaddr_in6 *)&address->addr)->sin6_addr;
        if (inet_ntop(address->family, a, d->denied, sizeof(d->denied)) == NULL)
            snprintf(d->denied, sizeof(d->denied), "?");
        return CURL_SOCKET_BAD;
    }
    return socket(address->family, address->socktype, address->protocol);
}

/* The start of the response body, kept for last_error; the rest is read and discarded. */
static size_t on_response(char *data, size_t size, size_t n, void *clientp)
{
    delivery_t *d = clientp;
    size_t len = size * n, room = ERROR_TEXT_BYTES - d->response_len;

    if (room > 0) {
        memcpy(d->response + d->response_len, data, len < room ? len : room);
        d->response_len += len < room ? len : room;
    }
    return len;
}

/* The signature header of an attempt: HMAC-SHA256 of "<timestamp>.<body>" under the webhook's secret. */
static void signature(const delivery_t *d, const char *timestamp, char *out, size_t size)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    size_t tlen = strlen(timestamp), blen = strlen(d->body);
    unsigned char *signed_text = malloc(tlen + 1 + blen);
    size_t o;

    memcpy(signed_text, timestamp, tlen);
    signed_text[tlen] = '.';
    memcpy(signed_text + tlen + 1, d->body, blen);
    if (HMAC(EVP_sha256(), d->secret, (int)strlen(d->secret), signed_text, tlen + 1 + blen, mac, &mac_len) == NULL)
        abort();
    free(signed_text);
    o = (size_t)snprintf(out, size, "X-Iwd-Signature: sha256=");
    for (unsigned int i = 0; i < mac_len && o + 3 <= size; i++)
        o += (size_t)snprintf(out + o, size - o, "%02x", mac[i]);
}

/* Start one attempt of a delivery on the multi handle. */
static void start_attempt(delivery_t *d)
{
    char timestamp[32], line[1024];

    snprintf(timestamp, sizeof(timestamp), "%lld", (long long)time(NULL));
    d->headers = curl_slist_append(NULL, "Content-Type: application/json");
    snprintf(line, sizeof(line), "X-Iwd-Event: %s", d->type);
    d->headers = curl_slist_append(d->headers, line);
    snprintf(line, sizeof(line), "X-Iwd-Delivery: %s", d->id);
    d->headers = curl_slist_append(d->headers, line);
    snprintf(line, sizeof(line), "X-Iwd-Timestamp: %s", timestamp);
    d->headers = curl_slist_append(d->headers, line);
    signature(d, timestamp, line, sizeof(line));
    d->headers = curl_slist_append(d->headers, line);
    d->headers = curl_slist_append(d->headers, "Expect:"); /* no 100-continue round trip */
    d->headers = curl_slist_append(d->headers, "User-Agent: iwd-sidecar/" IWD_VERSION);
    d->easy = curl_easy_init();
    curl_easy_setopt(d->easy, CURLOPT_URL, d->url);
    curl_easy_setopt(d->easy, CURLOPT_POST, 1L);
    curl_easy_setopt(d->easy, CURLOPT_POSTFIELDS, d->body);
    curl_easy_setopt(d->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(d->body));
    curl_easy_setopt(d->easy, CURLOPT_HTTPHEADER, d->headers);
    curl_easy_setopt(d->easy, CURLOPT_TIMEOUT, (long)ATTEMPT_TIMEOUT_S);
    curl_easy_setopt(d->easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(d->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    /* no proxy from the environment: the address checked is the receiver's */
    curl_easy_setopt(d->easy, CURLOPT_PROXY, "");
    curl_easy_setopt(d->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(d->easy, CURLOPT_ERRORBUFFER, d->curl_error);
    curl_easy_setopt(d->easy, CURLOPT_WRITEFUNCTION, on_response);
    curl_easy_setopt(d->easy, CURLOPT_WRITEDATA, d);
    curl_easy_setopt(d->easy, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(d->easy, CURLOPT_OPENSOCKETDATA, d);
    curl_easy_setopt(d->easy, CURLOPT_PRIVATE, d);
    if (ca_blob.len > 0)
        curl_easy_setopt(d->easy, CURLOPT_CAINFO_BLOB, &ca_blob);
    curl_multi_add_handle(multi, d->easy);
}

/* Printable text of a response body, for last_error (control characters as spaces). */
static void printable(char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            s[i] = ' ';
    s[len] = '\0';
}

/* The outcome of a finished transfer, in the delivery's http_status and error. */
static void record_outcome(delivery_t *d, CURLcode rc)
{
    long status = 0;

    curl_easy_getinfo(d->easy, CURLINFO_RESPONSE_CODE, &status);
    printable(d->response, d->response_len);
    if (rc == CURLE_OK) {
        d->http_status = (int)status;
        if (status >= 200 && status < 300)
            d->error[0] = '\0';
        else if (status >= 300 && status < 400)
            snprintf(d->error, sizeof(d->error), "HTTP %ld: redirects are not followed", status);
        else
            snprintf(d->error, sizeof(d->error), "HTTP %ld: %s", status, d->response);
    } else if (d->denied[0] != '\0') {
        snprintf(d->error, sizeof(d->error), "the address %s is in IWD_WEBHOOK_DENY_NETWORKS", d->denied);
    } else if (rc == CURLE_OPERATION_TIMEDOUT) {
        snprintf(d->error, sizeof(d->error), "no answer within %d s", ATTEMPT_TIMEOUT_S);
    } else {
        snprintf(d->error, sizeof(d->error), "%s%s%s", curl_easy_strerror(rc), d->curl_error[0] ? ": " : "",
                 d->curl_error);
    }
    curl_multi_remove_handle(multi, d->easy);
    curl_easy_cleanup(d->easy);
    curl_slist_free_all(d->headers);
    d->easy = NULL;
    d->headers = NULL;
}

/* Hand a delivery back to the dispatcher, attempted or dropped, and wake it. */
static void hand_back(delivery_t *d)
{
    d->next = NULL;
    pthread_mutex_lock(&queue_lock);
    *finished_tail = d;
    finished_tail = &d->next;
    pthread_mutex_unlock(&queue_lock);
    iwd_work_nudge(IWD_WORK_WEBHOOKS);
}

/* Whether a delivery's webhook stopped (was deleted or disabled) after the claim that brought it was sent. */
static bool webhook_stopped(const delivery_t *d)
{
    bool found = false;

    pthread_mutex_lock(&queue_lock);
    for (int i = 0; i < nstopped && !found; i++)
        found = stopped[i].at_ms >= d->claim_sent_ms && strcmp(stopped[i].webhook, d->webhook) == 0 &&
                strcmp(stopped[i].ccid, d->ccid) == 0;
    pthread_mutex_unlock(&queue_lock);
    return found;
}

/*
 * Remember that a tenant's webhook stopped now (marks older than a lease are forgotten first; beyond
 * MAX_STOPPED the oldest mark gives way) and wake the sender, which drops its waiting deliveries.
 */
static void note_stopped(const char *ccid, const char *webhook)
{
    int64_t now = iwd_now_ms();
    int slot = -1;

    pthread_mutex_lock(&queue_lock);
    for (int i = 0; i < nstopped;)
        if (now - stopped[i].at_ms > LEASE_S * 1000)
            stopped[i] = stopped[--nstopped];
        else
            i++;
    for (int i = 0; i < nstopped && slot < 0; i++)
        if (strcmp(stopped[i].webhook, webhook) == 0 && strcmp(stopped[i].ccid, ccid) == 0)
            slot = i;
    if (slot < 0 && nstopped < MAX_STOPPED)
        slot = nstopped++;
    if (slot < 0) { /* full: the oldest mark gives way */
        slot = 0;
        for (int i = 1; i < nstopped; i++)
            if (stopped[i].at_ms < stopped[slot].at_ms)
                slot = i;
    }
    snprintf(stopped[slot].ccid, sizeof(stopped[slot].ccid), "%s", ccid);
    snprintf(stopped[slot].webhook, sizeof(stopped[slot].webhook), "%s", webhook);
    stopped[slot].at_ms = now;
    pthread_mutex_unlock(&queue_lock);
    if (multi != NULL)
        curl_multi_wakeup(multi);
}

/*
 * Start the waiting attempts that the bounds allow; drop those that waited past START_WITHIN_MS and those
 * of a webhook that stopped since their claim.
 */
static void start_waiting(void)
{
    int64_t now = iwd_now_ms();
    int marks;

    pthread_mutex_lock(&queue_lock);
    marks = nstopped;
    pthread_mutex_unlock(&queue_lock);
    for (endpoint_t *e = send_endpoints; e != NULL && marks > 0; e = e->next)
        for (delivery_t **p = &e->waiting; *p != NULL;) {
            delivery_t *d = *p;
            if (!webhook_stopped(d)) {
                p = &d->next;
                continue;
            }
            if ((*p = d->next) == NULL)
                e->waiting_tail = p;
            d->dropped = true;
            hand_back(d);
        }

    for (endpoint_t *e = send_endpoints; e != NULL; e = e->next)
        while (e->waiting != NULL && e->active < CONCURRENT_PER_ENDPOINT && active_total < CONCURRENT_TOTAL) {
            delivery_t *d = e->waiting;
            if ((e->waiting = d->next) == NULL)
                e->waiting_tail = &e->waiting;
            if (now - d->claimed_ms > START_WITHIN_MS) {
                d->dropped = true;
                hand_back(d);
                continue;
            }
            e->active++;
            active_total++;
            start_attempt(d);
        }
}

static void *sender_main(void *arg)
{
    (void)arg;
    for (;;) {
        delivery_t *batch;
        CURLMsg *msg;
        int running, left;

        pthread_mutex_lock(&queue_lock);
        batch = to_send;
        to_send = NULL;
        to_send_tail = &to_send;
        pthread_mutex_unlock(&queue_lock);
        while (batch != NULL) {
            delivery_t *d = batch;
            endpoint_t *e = endpoint_of(&send_endpoints, d->ccid, d->webhook);
            batch = d->next;
            d->next = NULL;
            *e->waiting_tail = d;
            e->waiting_tail = &d->next;
        }
        start_waiting();
        curl_multi_perform(multi, &running);
        while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
            delivery_t *d;
            char *private;
            if (msg->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &private);
            d = (delivery_t *)private;
            record_outcome(d, msg->data.result);
            endpoint_of(&send_endpoints, d->ccid, d->webhook)->active--;
            active_total--;
            hand_back(d);
        }
        prune_endpoints(&send_endpoints);
        curl_multi_poll(multi, NULL, 0, POLL_INTERVAL_MS, NULL);
    }
    return NULL;
}

/* --- the dispatcher ------------------------------------------------------------------------------ */

/* Run one statement, its answer awaited DEADLINE_MS at most (iwd_pg_exec_within; NULL: the caller closes). */
static PGresult *query(PGconn *conn, const char *db, const char *command, const char *sql, int nparams,
                       const char *const *values)
{
    return iwd_pg_exec_within(conn, db, command, sql, nparams, values, iwd_now_ms() + DEADLINE_MS);
}

/* Whether a statement's answer is rows (else it is cleared, with the reason in why). */
static bool rows(PGresult *res, char *why, size_t size, const char *what)
{
    if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK)
        return true;
    snprintf(why, size, "%s: %s", what, res == NULL ? "no answer in time" : PQresultErrorMessage(res));
    if (res != NULL)
        PQclear(res);
    return false;
}

/* Close the tenant's second connection, if any (the claims beside the rounds stop until it is needed again). */
static void close_claimer(watched_t *w)
{
    if (w->claimer != NULL) {
        PQfinish(w->claimer);
        w->claimer = NULL;
        iwd_metrics_db(w->tenant.ccid, "disconnect", NULL, 0, false, true);
    }
}

/* Close a tenant's connection after a failure; the next attempt waits longer each time. */
static void tenant_failed(watched_t *w, const char *why)
{
    w->backoff_ms = w->backoff_ms == 0 ? BACKOFF_MIN_MS
                                       : (w->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : w->backoff_ms * 2);
    w->retry_at_ms = iwd_now_ms() + w->backoff_ms;
    iwd_log(IWD_LOG_WARN, "webhook deliveries not read", "%s: %s; next attempt in %d ms", w->tenant.ccid, why,
            w->backoff_ms);
    close_claimer(w);
    if (w->conn != NULL) {
        PQfinish(w->conn);
        w->conn = NULL;
        iwd_metrics_db(w->tenant.ccid, "disconnect", NULL, 0, false, true);
    }
}

/*
 * The tenant's connection, opened when needed (LISTEN iwd_events and iwd_webhooks on it); false when it
 * cannot be.
 */
static bool tenant_connect(watched_t *w)
{
    PGresult *res;
    char why[512], conninfo[IWD_CONNINFO_SIZE + 64];

    if (w->conn != NULL && PQstatus(w->conn) == CONNECTION_OK)
        return true;
    if (w->conn != NULL)
        tenant_failed(w, "the connection broke");
    if (iwd_now_ms() < w->retry_at_ms)
        return false;
    /* told apart from the API's sessions from the start (the server cap counts those only): the last wins */
    snprintf(conninfo, sizeof(conninfo), "%s application_name=iwd-sidecar-webhooks", w->tenant.conninfo);
    w->conn = iwd_pg_connect_bounded(conninfo, CONNECT_TIMEOUT_S, STATEMENT_TIMEOUT_MS);
    if (PQstatus(w->conn) != CONNECTION_OK) {
        iwd_metrics_db(w->tenant.ccid, "connect", "08006", 0, false, false);
        snprintf(why, sizeof(why), "%s", PQerrorMessage(w->conn));
        tenant_failed(w, why);
        return false;
    }
    iwd_metrics_db(w->tenant.ccid, "connect", NULL, 0, true, false);
    for (int i = 0; i < 2; i++) {
        static const char *const listen[2] = {"LISTEN iwd_events", "LISTEN iwd_webhooks"};
        res = query(w->conn, w->tenant.ccid, "listen", listen[i], 0, NULL);
        if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
            if (res != NULL)
                PQclear(res);
            tenant_failed(w, "LISTEN failed");
            return false;
        }
        PQclear(res);
    }
    w->backoff_ms = 0;
    return true;
}

/* Whether the tenant has webhooks (an extension without them has none); false with why when unknown. */
static bool probe(watched_t *w, bool *has, char *why, size_t size)
{
    PGresult *res = query(w->conn, w->tenant.ccid, "webhook_stats",
                          "SELECT CASE WHEN to_regprocedure('iwd.claim_deliveries(text,integer,interval)') IS NULL"
                          " THEN false ELSE EXISTS (SELECT FROM iwd.webhook_stats()) END",
                          0, NULL);

    if (!rows(res, why, size, "webhook_stats"))
        return false;
    *has = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    return true;
}

static void free_delivery(delivery_t *d)
{
    free(d->id);
    free(d->webhook);
    free(d->url);
    free(d->secret);
    free(d->type);
    free(d->body);
    free(d);
}

/* The tenant's finished deliveries no longer count as held (they leave in this round): room for claims. */
static void unhold_finished(watched_t *w)
{
    for (delivery_t *d = w->finished; d != NULL; d = d->next) {
        endpoint_t *e;
        if (d->unheld)
            continue;
        e = endpoint_of(&held_endpoints, d->ccid, d->webhook);
        e->held--;
        held_total--;
        d->unheld = true;
    }
}

/* Forget the tenant's reported (or unreportable: their leases expire) deliveries, and what they held. */
static void release_finished(watched_t *w)
{
    unhold_finished(w);
    while (w->finished != NULL) {
        delivery_t *d = w->finished;
        w->finished = d->next;
        free_delivery(d);
    }
    prune_endpoints(&held_endpoints);
}

/* Hand deliveries to the sender and wake it. */
static void send_all(delivery_t *list)
{
    delivery_t *last = list;

    if (list == NULL)
        return;
    while (last->next != NULL)
        last = last->next;
    pthread_mutex_lock(&queue_lock);
    *to_send_tail = list;
    to_send_tail = &last->next;
    pthread_mutex_unlock(&queue_lock);
    curl_multi_wakeup(multi);
}

/* Whether a statement's answer is rows; why says what failed otherwise. */
static bool answered(PGresult *res, const char *what, char *why, size_t size)
{
    if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK)
        return true;
    snprintf(why, size, "%s: %s", what, res == NULL ? "no answer in time" : PQresultErrorMessage(res));
    return false;
}

/* How many deliveries the tenant's claim may take now: what its webhooks and HELD_TOTAL have room for. */
static int claim_room(watched_t *w, int64_t now)
{
    int room = HELD_TOTAL - held_total;

    if (room > CLAIM_BATCH)
        room = CLAIM_BATCH;
    for (endpoint_t *e = held_endpoints; e != NULL; e = e->next) {
        if (strcmp(e->ccid, w->tenant.ccid) != 0)
            continue;
        if (e->held > 0 && now - e->progress_ms > STALLED_MS)
            e->stalled_until_ms = now + STALLED_FOR_MS;
        if (e->stalled_until_ms <= now && HELD_PER_ENDPOINT - e->held < room)
            room = HELD_PER_ENDPOINT - e->held;
    }
    return room;
}

/* The outcomes reported (iwd.finish_deliveries' rows) counted in iwd_webhook_deliveries_total. */
static void count_reported(watched_t *w, PGresult *res)
{
    for (int i = 0; i < PQntuples(res); i++) {
        const char *status = PQgetvalue(res, i, 1), *webhook = "";
        for (delivery_t *d = w->finished; d != NULL; d = d->next)
            if (strcmp(d->id, PQgetvalue(res, i, 0)) == 0)
                webhook = d->webhook;
        iwd_metrics_webhook_delivery(w->tenant.ccid, webhook, strcmp(status, "pending") == 0 ? "retry" : status);
    }
}

/* The claimed deliveries (iwd.claim_deliveries' rows) handed to the sender, within the webhooks' bounds. */
static void take_claimed(watched_t *w, PGresult *res, int64_t claim_sent_ms)
{
    delivery_t *list = NULL, **tail = &list;

    for (int i = 0; i < PQntuples(res); i++) {
        endpoint_t *e = endpoint_of(&held_endpoints, w->tenant.ccid, PQgetvalue(res, i, 1));
        delivery_t *d;
        if (e->held >= HELD_PER_ENDPOINT) /* stalled: attempted after its lease runs out */
            continue;
        d = calloc(1, sizeof(*d));
        snprintf(d->ccid, sizeof(d->ccid), "%s", w->tenant.ccid);
        d->id = strdup(PQgetvalue(res, i, 0));
        d->webhook = strdup(PQgetvalue(res, i, 1));
        d->url = strdup(PQgetvalue(res, i, 2));
        d->secret = strdup(PQgetvalue(res, i, 3));
        d->type = strdup(PQgetvalue(res, i, 4));
        d->body = strdup(PQgetvalue(res, i, 5));
        d->claimed_ms = iwd_now_ms();
        d->claim_sent_ms = claim_sent_ms;
        e->held++;
        held_total++;
        *tail = d;
        tail = &d->next;
    }
    prune_endpoints(&held_endpoints);
    send_all(list);
}

static const char *const CLAIM_SQL =
    "SELECT id::text, webhook, url, secret, type, body FROM iwd.claim_deliveries($1, $2::int, $3::interval)";

/* The tenant's second connection, opened when needed; false when it cannot be (the round claims alone). */
static bool claimer_connect(watched_t *w)
{
    char conninfo[IWD_CONNINFO_SIZE + 64];

    if (w->claimer != NULL && PQstatus(w->claimer) == CONNECTION_OK && PQtransactionStatus(w->claimer) == PQTRANS_IDLE)
        return true;
    close_claimer(w);
    snprintf(conninfo, sizeof(conninfo), "%s application_name=iwd-sidecar-webhooks", w->tenant.conninfo);
    w->claimer = iwd_pg_connect_bounded(conninfo, CONNECT_TIMEOUT_S, STATEMENT_TIMEOUT_MS);
    if (PQstatus(w->claimer) != CONNECTION_OK) {
        iwd_metrics_db(w->tenant.ccid, "connect", "08006", 0, false, false);
        PQfinish(w->claimer);
        w->claimer = NULL;
        return false;
    }
    iwd_metrics_db(w->tenant.ccid, "connect", NULL, 0, true, false);
    return true;
}

/*
 * The answer of the claim sent beside the round (by DEADLINE_MS after it was sent), its rows; NULL when it
 * failed (the connection is closed; what it may have leased comes due again when the lease runs out).
 */
static PGresult *claimed_beside(watched_t *w, int64_t sent_ms)
{
    PGresult *res = NULL, *r;
    const char *code = NULL;

    while (PQflush(w->claimer) > 0 || PQisBusy(w->claimer)) {
        struct pollfd pfd = {.fd = PQsocket(w->claimer), .events = POLLIN | POLLOUT};
        int64_t left = sent_ms + DEADLINE_MS - iwd_now_ms();
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0 || !PQconsumeInput(w->claimer)) {
            code = "08006";
            break;
        }
    }
    while (code == NULL && (r = PQgetResult(w->claimer)) != NULL) {
        if (res == NULL)
            res = r;
        else
            PQclear(r);
    }
    if (code == NULL && PQresultStatus(res) != PGRES_TUPLES_OK)
        code = PQresultErrorField(res, PG_DIAG_SQLSTATE) != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : "08006";
    iwd_metrics_db(w->tenant.ccid, "claim_deliveries", code, (double)(iwd_now_ms() - sent_ms), false, false);
    if (code == NULL)
        return res;
    iwd_log(IWD_LOG_WARN, "a claim beside the round failed", "%s: %s", w->tenant.ccid,
            res != NULL ? PQresultErrorMessage(res) : "no answer in time");
    if (res != NULL)
        PQclear(res);
    close_claimer(w);
    return NULL;
}

/*
 * A round with the tenant: report the sender's outcomes (iwd.finish_deliveries, one statement for all),
 * publish its committed events (iwd.publish_events) and claim its due deliveries when a claim is due and
 * its webhooks have room (CLAIM_MIN), in this order, so that a task's next event is claimed in the round
 * that reports its predecessor delivered. Each statement commits on its
 * own (one transaction holding them all made each slower on a busy server: its rows stay locked, and the
 * claim reads past the rows the report changed). Returns the number claimed, -1 with why on failure (the
 * outcomes then go unreported: their leases run out).
 */
static int exchange(watched_t *w, bool claim_due, int64_t now, char *why, size_t size)
{
    enum { FINISH, PUBLISH, CLAIM, STATEMENTS };
    const char *sql[STATEMENTS], *const *values[STATEMENTS];
    const char *finish_values[2] = {iwd_work_replica(), NULL}, *claim_values[3], *beside_values[3];
    int nparams[STATEMENTS], which[STATEMENTS], n = 0, room, claimed = 0, beside = 0;
    int64_t claim_sent_ms = 0, beside_sent_ms = 0;
    char lim[16], lease[16], beside_lim[16];
    PGresult *results[STATEMENTS];
    delivery_t *later = NULL;
    bool ok;

    unhold_finished(w);
    room = claim_due ? claim_room(w, now) : 0;
    n = 0;
    for (delivery_t *d = w->finished; d != NULL; d = d->next)
        if (++n == REPORT_MAX) { /* the rest are reported in the next round, at once */
            later = d->next;
            d->next = NULL;
            break;
        }
    n = 0;

    if (w->finished != NULL) {
        json_t *outcomes = json_array();
        for (delivery_t *d = w->finished; d != NULL; d = d->next)
            json_array_append_new(outcomes, json_pack("{s:s, s:o, s:o}", "id", d->id, "status",
                                                      d->http_status > 0 ? json_integer(d->http_status) : json_null(),
                                                      "error", d->error[0] ? json_string(d->error) : json_null()));
        finish_values[1] = json_dumps(outcomes, JSON_COMPACT);
        json_decref(outcomes);
        which[n] = FINISH;
        sql[n] = "SELECT id::text, status FROM iwd.finish_deliveries($1, $2::jsonb)";
        nparams[n] = 2;
        values[n++] = finish_values;
    }
    if (claim_due) {
        which[n] = PUBLISH;
        sql[n] = "SELECT iwd.publish_events()";
        nparams[n] = 0;
        values[n++] = NULL;
    }
    snprintf(lease, sizeof(lease), "%d s", LEASE_S);
    if (room >= 2 * CLAIM_MIN && w->last_claimed >= CLAIM_MIN && claimer_connect(w)) {
        /* a backlog: half the room is claimed beside the round, on the second connection, sent first */
        beside = room / 2;
        room -= beside;
        snprintf(beside_lim, sizeof(beside_lim), "%d", beside);
        beside_values[0] = iwd_work_replica();
        beside_values[1] = beside_lim;
        beside_values[2] = lease;
        beside_sent_ms = iwd_now_ms();
        if (!PQsendQueryParams(w->claimer, CLAIM_SQL, 3, NULL, beside_values, NULL, NULL, 0) ||
            PQflush(w->claimer) < 0) {
            close_claimer(w);
            room += beside;
            beside = 0;
        }
    }
    if (room >= CLAIM_MIN) {
        snprintf(lim, sizeof(lim), "%d", room);
        claim_values[0] = iwd_work_replica();
        claim_values[1] = lim;
        claim_values[2] = lease;
        which[n] = CLAIM;
        sql[n] = CLAIM_SQL;
        nparams[n] = 3;
        values[n++] = claim_values;
    }
    if (n == 0 && beside == 0)
        return 0; /* claimed again as the sender reports (take_handed) */
    ok = true;
    for (int k = 0; k < n; k++) {
        static const char *const names[STATEMENTS] = {"finish_deliveries", "publish_events", "claim_deliveries"};
        if (which[k] == CLAIM)
            claim_sent_ms = iwd_now_ms();
        results[k] = ok ? query(w->conn, w->tenant.ccid, names[which[k]], sql[k], nparams[k], values[k]) : NULL;
        ok = ok && answered(results[k], names[which[k]], why, size);
    }
    free((char *)finish_values[1]);
    for (int k = 0; k < n; k++) {
        if (ok && which[k] == FINISH)
            count_reported(w, results[k]);
        else if (ok && which[k] == CLAIM) {
            claimed = PQntuples(results[k]);
            take_claimed(w, results[k], claim_sent_ms);
        }
        if (results[k] != NULL)
            PQclear(results[k]);
    }
    if (beside > 0) {
        PGresult *res = claimed_beside(w, beside_sent_ms);
        if (res != NULL) {
            iwd_log(IWD_LOG_DEBUG, "deliveries claimed beside the round", "%s: %d of %d", w->tenant.ccid,
                    PQntuples(res), beside);
            claimed += PQntuples(res);
            take_claimed(w, res, beside_sent_ms);
            PQclear(res);
        }
    }
    release_finished(w);
    w->finished = later;
    if (later != NULL)
        w->poll_at_ms = now;
    w->last_claimed = ok ? claimed : 0;
    return ok ? claimed : -1;
}

/* Read the tenant's pending counts for iwd_webhook_pending; false with why on failure. */
static bool read_pending(watched_t *w, char *why, size_t size)
{
    PGresult *res = query(w->conn, w->tenant.ccid, "webhook_stats", "SELECT webhook, pending FROM iwd.webhook_stats()",
                          0, NULL);
    iwd_text_t text = iwd_text_new(256);
    char ccid[512], webhook[512];

    if (!rows(res, why, size, "webhook_stats")) {
        free(text.buf);
        return false;
    }
    iwd_metrics_escape_label(w->tenant.ccid, ccid, sizeof(ccid));
    for (int i = 0; i < PQntuples(res); i++) {
        iwd_metrics_escape_label(PQgetvalue(res, i, 0), webhook, sizeof(webhook));
        iwd_text_put(&text, "iwd_webhook_pending{ccid=\"%s\",webhook=\"%s\"} %s\n", ccid, webhook,
                     PQgetvalue(res, i, 1));
    }
    PQclear(res);
    free(w->pending_text);
    w->pending_text = text.buf;
    return true;
}

/* The dispatcher's entry for a tenant, created when new; its connection is closed when its conninfo changed. */
static watched_t *watched_entry(const iwd_tenant_t *tenant)
{
    watched_t *w;

    for (w = watched; w != NULL; w = w->next)
        if (strcmp(w->tenant.ccid, tenant->ccid) == 0)
            break;
    if (w == NULL) {
        w = calloc(1, sizeof(*w));
        w->next = watched;
        watched = w;
    } else if (strcmp(w->tenant.conninfo, tenant->conninfo) != 0 && w->conn != NULL) {
        PQfinish(w->conn); /* re-provisioned elsewhere */
        w->conn = NULL;
        close_claimer(w);
        w->retry_at_ms = 0;
        w->backoff_ms = 0;
    }
    w->tenant = *tenant;
    w->listed = true;
    return w;
}

/* The control database's connection, opened when needed, LISTENing to iwd_webhooks; false when it cannot be. */
static bool control_connect(void)
{
    PGresult *res;

    if (control != NULL && PQstatus(control) == CONNECTION_OK)
        return true;
    if (control != NULL)
        PQfinish(control);
    control = iwd_pg_connect_bounded(iwd_conf.control_db, CONNECT_TIMEOUT_S, STATEMENT_TIMEOUT_MS);
    if (PQstatus(control) == CONNECTION_OK) {
        res = query(control, "control", "listen", "LISTEN iwd_webhooks", 0, NULL);
        if (res != NULL && PQresultStatus(res) == PGRES_COMMAND_OK) {
            PQclear(res);
            return true;
        }
        if (res != NULL)
            PQclear(res);
    }
    PQfinish(control);
    control = NULL;
    return false;
}

/*
 * Tell every replica that a tenant's webhooks changed (NOTIFY iwd_webhooks on the control database, its
 * ccid as payload; this replica hears it too). Not told when the control database is down: the others
 * then learn at their next probe of the tenant (PROBE_INTERVAL_MS).
 */
static void announce_change(const char *ccid)
{
    const char *values[1] = {ccid};
    PGresult *res;

    if (!control_connect())
        return;
    res = query(control, "control", "notify", "SELECT pg_notify('iwd_webhooks', $1)", 1, values);
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
        iwd_log(IWD_LOG_WARN, "other replicas not told of a webhook change", "%s: %s", ccid,
                res == NULL ? "no answer in time" : PQresultErrorMessage(res));
        PQfinish(control);
        control = NULL;
    }
    if (res != NULL)
        PQclear(res);
}

/*
 * The webhook changes announced on the control database (by any replica): the tenant is probed and polled
 * now, and for WAKE_GRACE_MS as if woken here; a tenant not watched yet has the registry read again first
 * (*registry_due; its first probe is then at once).
 */
static void take_announcements(int64_t now, bool *registry_due)
{
    PGnotify *note;

    if (control == NULL)
        return;
    while ((note = PQnotifies(control)) != NULL) {
        watched_t *w;
        for (w = watched; w != NULL && strcmp(w->tenant.ccid, note->extra) != 0; w = w->next)
            ;
        if (w == NULL) {
            *registry_due = true;
        } else { /* as a wake-up here: the change may commit after the announcement (routes wake first) */
            w->woken_until_ms = now + WAKE_GRACE_MS;
            w->probe_at_ms = now;
            w->poll_at_ms = now;
            w->retry_at_ms = 0;
        }
        PQfreemem(note);
    }
}

/* Read the registry again: new tenants are watched, those no longer provisioned forgotten. */
static void refresh_registry(void)
{
    iwd_tenant_t *tenants;
    int n = control_connect() ? iwd_work_tenants(&control, "webhooks", &tenants) : -1;
    int64_t now = iwd_now_ms();

    if (n < 0)
        return; /* keep watching the tenants known */
    for (watched_t *w = watched; w != NULL; w = w->next)
        w->listed = false;
    for (int i = 0; i < n; i++)
        watched_entry(&tenants[i]);
    iwd_work_tenants_free(tenants, n);
    for (watched_t **p = &watched; *p != NULL;) {
        watched_t *w = *p;
        if (w->listed || w->woken_until_ms > now || w->finished != NULL) {
            p = &w->next;
            continue;
        }
        *p = w->next;
        if (w->conn != NULL)
            PQfinish(w->conn);
        close_claimer(w);
        free(w->pending_text);
        free(w);
    }
}

/* Take the wake-ups of the routes and the sender's outcomes, filed under their tenants. */
static void take_handed(void)
{
    iwd_tenant_t woken[IWD_WORK_MAX_WAKES];
    delivery_t *done;
    int n = iwd_work_take(IWD_WORK_WEBHOOKS, woken);
    int64_t now = iwd_now_ms();

    pthread_mutex_lock(&queue_lock);
    done = finished;
    finished = NULL;
    finished_tail = &finished;
    pthread_mutex_unlock(&queue_lock);
    for (int i = 0; i < n; i++) {
        bool listed = false;
        watched_t *w;
        for (w = watched; w != NULL && strcmp(w->tenant.ccid, woken[i].ccid) != 0; w = w->next)
            ;
        listed = w != NULL && w->listed;
        w = watched_entry(&woken[i]);
        w->listed = listed;
        w->woken_until_ms = now + WAKE_GRACE_MS;
        w->poll_at_ms = now;
        w->probe_at_ms = now;
        w->retry_at_ms = 0;
        announce_change(woken[i].ccid);
    }
    while (done != NULL) {
        delivery_t *d = done;
        watched_t *w;
        done = d->next;
        endpoint_of(&held_endpoints, d->ccid, d->webhook)->progress_ms = now; /* the sender got on with it */
        for (w = watched; w != NULL && strcmp(w->tenant.ccid, d->ccid) != 0; w = w->next)
            ;
        if (w == NULL) { /* a tenant no longer provisioned: not reported, its leases run out */
            endpoint_t *e = endpoint_of(&held_endpoints, d->ccid, d->webhook);
            e->held--;
            held_total--;
            free_delivery(d);
            continue;
        }
        if (d->dropped) {
            endpoint_t *e = endpoint_of(&held_endpoints, d->ccid, d->webhook);
            e->held--;
            held_total--;
            free_delivery(d);
            continue;
        }
        d->next = w->finished;
        w->finished = d;
        w->poll_at_ms = now; /* a task's next event may be due now that this one is delivered */
    }
    prune_endpoints(&held_endpoints);
}

/* Serve one tenant: probe, report and claim, read its pending counts, whichever is due. */
static void serve(watched_t *w, int64_t now)
{
    char why[1024];
    bool has, woken = w->woken_until_ms > now, active = w->has_webhooks || woken, claim_due;
    int n;

    if (w->finished == NULL && !(active && now >= w->poll_at_ms) && now < w->probe_at_ms)
        return;
    if (!tenant_connect(w)) {
        release_finished(w); /* not reported: their leases run out */
        return;
    }
    if (now >= w->probe_at_ms || (!w->has_webhooks && woken)) {
        if (!probe(w, &has, why, sizeof(why))) {
            release_finished(w);
            tenant_failed(w, why);
            return;
        }
        iwd_log(IWD_LOG_DEBUG, "a tenant probed for webhooks", "%s: %s", w->tenant.ccid, has ? "some" : "none");
        if (has != w->has_webhooks)
            iwd_log(IWD_LOG_INFO, has ? "webhook delivery starts for a tenant" : "webhook delivery stops for a tenant",
                    "%s", w->tenant.ccid);
        w->has_webhooks = has;
        w->probe_at_ms = now + PROBE_INTERVAL_MS;
        w->probed_ms = now;
    }
    active = w->has_webhooks || woken;
    claim_due = active && now >= w->poll_at_ms;
    if (w->finished != NULL || claim_due) {
        if ((n = exchange(w, claim_due, now, why, sizeof(why))) < 0) {
            tenant_failed(w, why);
            return;
        }
        if (claim_due) {
            /* a backlog, or outcomes left for the next report: again at once */
            w->poll_at_ms = n >= CLAIM_MIN || w->finished != NULL ? now : now + POLL_INTERVAL_MS;
            if (n < CLAIM_MIN) /* no backlog: no claim beside the rounds, no second connection */
                close_claimer(w);
        }
    }
    if (!active) {
        close_claimer(w);
        if (w->conn != NULL) { /* nothing to deliver: no connection kept */
            PQfinish(w->conn);
            w->conn = NULL;
            iwd_metrics_db(w->tenant.ccid, "disconnect", NULL, 0, false, true);
        }
        free(w->pending_text);
        w->pending_text = NULL;
        return;
    }
    if (now >= w->stats_at_ms) {
        if (!read_pending(w, why, sizeof(why))) {
            tenant_failed(w, why);
            return;
        }
        w->stats_at_ms = now + STATS_INTERVAL_MS;
    }
}

/* Hand the pending counts of every tenant to the metrics. */
static void publish_pending(void)
{
    iwd_text_t text = iwd_text_new(256);

    for (watched_t *w = watched; w != NULL; w = w->next)
        if (w->pending_text != NULL)
            iwd_text_put(&text, "%s", w->pending_text);
    iwd_metrics_set_webhook_pending(text.buf);
}

/*
 * The tenant's notifications: on iwd_events (a commit, or a publication) a claim is due now; on
 * iwd_webhooks the webhook named stopped (deleted or disabled, by any replica or by SQL): the sender
 * attempts none of the deliveries of it claimed before.
 */
static void take_notifications(watched_t *w, int64_t now)
{
    PGnotify *note;

    while ((note = PQnotifies(w->conn)) != NULL) {
        if (strcmp(note->relname, "iwd_webhooks") == 0 && note->extra[0] != '\0')
            note_stopped(w->tenant.ccid, note->extra);
        if (w->poll_at_ms > now)
            w->poll_at_ms = now;
        PQfreemem(note);
    }
}

/*
 * Wait for a wake-up, a notification on a tenant's connection, or the next time something is due
 * (POLL_INTERVAL_MS at most); a notified tenant is due now.
 */
static void wait_for_work(void)
{
    struct pollfd fds[1 + 512];
    watched_t *of[1 + 512];
    int n = 0;
    int64_t now = iwd_now_ms(), timeout = POLL_INTERVAL_MS;

    for (watched_t *w = watched; w != NULL; w = w->next) {
        int64_t due = w->poll_at_ms > w->retry_at_ms ? w->poll_at_ms : w->retry_at_ms;
        if ((w->has_webhooks || w->woken_until_ms > now || w->finished != NULL) && due - now < timeout)
            timeout = due - now > 0 ? due - now : 0;
    }

    fds[n++] = (struct pollfd){.fd = iwd_work_fd(IWD_WORK_WEBHOOKS), .events = POLLIN};
    if (control != NULL && PQstatus(control) == CONNECTION_OK) {
        of[n] = NULL;
        fds[n++] = (struct pollfd){.fd = PQsocket(control), .events = POLLIN};
    }
    for (watched_t *w = watched; w != NULL && n < (int)(sizeof(fds) / sizeof(fds[0])); w = w->next)
        if (w->conn != NULL && PQstatus(w->conn) == CONNECTION_OK) {
            of[n] = w;
            fds[n++] = (struct pollfd){.fd = PQsocket(w->conn), .events = POLLIN};
        }
    if (poll(fds, n, (int)timeout) <= 0)
        return;
    for (int i = 1; i < n; i++) {
        watched_t *w = of[i];
        if (fds[i].revents == 0)
            continue;
        if (w == NULL) { /* the control database: its notifications are taken by the loop */
            if (!PQconsumeInput(control)) {
                PQfinish(control);
                control = NULL;
            }
            continue;
        }
        if (!PQconsumeInput(w->conn)) {
            tenant_failed(w, "the connection broke");
            continue;
        }
        take_notifications(w, now);
    }
}

/*
 * Notifications read along with answers (events committed, or published by another publisher while this
 * one's publish_events found the lock taken): the tenant is due now.
 */
static void notified_meanwhile(int64_t now)
{
    for (watched_t *w = watched; w != NULL; w = w->next) {
        if (w->conn == NULL)
            continue;
        take_notifications(w, now);
    }
}

/* Close a server watch's connection after a failure; the next attempt waits longer each time. */
static void server_failed(server_watch_t *s, const char *why)
{
    s->backoff_ms = s->backoff_ms == 0 ? BACKOFF_MIN_MS
                                       : (s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : s->backoff_ms * 2);
    s->retry_at_ms = iwd_now_ms() + s->backoff_ms;
    iwd_log(IWD_LOG_DEBUG, "webhook changes not read", "%s: %s; next attempt in %d ms", s->key, why, s->backoff_ms);
    if (s->conn != NULL) {
        PQfinish(s->conn);
        s->conn = NULL;
    }
}

/*
 * Read a server's count of webhook changes, connected through the database of tenant w; when it moved,
 * every tenant of the server without known webhooks is probed now.
 */
static void read_server_changes(server_watch_t *s, watched_t *through, int64_t now)
{
    char conninfo[IWD_CONNINFO_SIZE + 64], why[512];
    PGresult *res;
    long long changes;

    if (s->conn == NULL || PQstatus(s->conn) != CONNECTION_OK) {
        if (s->conn != NULL)
            PQfinish(s->conn);
        snprintf(conninfo, sizeof(conninfo), "%s application_name=iwd-sidecar-webhooks", through->tenant.conninfo);
        s->conn = iwd_pg_connect_bounded(conninfo, CONNECT_TIMEOUT_S, STATEMENT_TIMEOUT_MS);
        if (PQstatus(s->conn) != CONNECTION_OK) {
            snprintf(why, sizeof(why), "%s", PQerrorMessage(s->conn));
            server_failed(s, why);
            return;
        }
    }
    res = query(s->conn, s->key, "webhook_changes",
                "SELECT CASE WHEN to_regprocedure('iwd.webhook_changes()') IS NOT NULL"
                " THEN iwd.webhook_changes() END",
                0, NULL);
    if (!rows(res, why, sizeof(why), "webhook_changes")) {
        server_failed(s, why);
        return;
    }
    if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) { /* no such count there: the probes' pace only */
        PQclear(res);
        server_failed(s, "iwd.webhook_changes() gives no count (iwd not preloaded, or an older version)");
        s->retry_at_ms = now + PROBE_INTERVAL_MS;
        return;
    }
    changes = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    s->backoff_ms = 0;
    if (changes != s->changes) { /* the first reading: those probed before it may have missed a change */
        char key[SERVER_KEY_SIZE];
        for (watched_t *w = watched; w != NULL; w = w->next)
            if (!w->has_webhooks && (s->changes >= 0 || w->probed_ms > 0) &&
                iwd_slots_server_key(w->tenant.conninfo, key, sizeof(key)) && strcmp(key, s->key) == 0)
                w->probe_at_ms = now;
    }
    s->changes = changes;
}

/*
 * Watch the servers of the tenants without known webhooks for webhook changes (one connection per server,
 * none for a server whose tenants all have webhooks: their connections hear what matters), so that a
 * tenant's first webhook, however it was made, is found within a few seconds rather than at its next probe.
 */
static void watch_servers(int64_t now)
{
    char key[SERVER_KEY_SIZE];

    for (server_watch_t *s = servers; s != NULL; s = s->next)
        s->needed = false;
    for (watched_t *w = watched; w != NULL; w = w->next) {
        server_watch_t *s;
        if (w->has_webhooks || !w->listed || !iwd_slots_server_key(w->tenant.conninfo, key, sizeof(key)))
            continue;
        for (s = servers; s != NULL && strcmp(s->key, key) != 0; s = s->next)
            ;
        if (s == NULL) {
            s = calloc(1, sizeof(*s));
            snprintf(s->key, sizeof(s->key), "%s", key);
            s->changes = -1;
            s->next = servers;
            servers = s;
        }
        if (!s->needed && now >= s->poll_at_ms && now >= s->retry_at_ms) {
            read_server_changes(s, w, now);
            s->poll_at_ms = now + POLL_INTERVAL_MS;
        }
        s->needed = true;
    }
    for (server_watch_t **p = &servers; *p != NULL;) {
        server_watch_t *s = *p;
        if (s->needed) {
            p = &s->next;
            continue;
        }
        *p = s->next;
        if (s->conn != NULL)
            PQfinish(s->conn);
        free(s);
    }
}

static void *dispatcher_main(void *arg)
{
    int64_t registry_at = 0, pending_at = 0;

    (void)arg;
    for (;;) {
        int64_t now = iwd_now_ms();

        bool registry_due = now >= registry_at;

        take_announcements(now, &registry_due);
        if (registry_due) {
            refresh_registry();
            registry_at = now + IWD_WORK_REGISTRY_INTERVAL_MS;
            take_announcements(now, &registry_due); /* those read along with the registry's answer */
        }
        take_handed();
        watch_servers(iwd_now_ms()); /* before the probes: a change after their reading is seen at the next */
        for (watched_t *w = watched; w != NULL; w = w->next)
            serve(w, iwd_now_ms());
        notified_meanwhile(iwd_now_ms());
        if (now >= pending_at) {
            publish_pending();
            pending_at = now + STATS_INTERVAL_MS;
        }
        wait_for_work();
    }
    return NULL;
}

/* --- start-up and wake-ups ----------------------------------------------------------------------- */

/* Append a file's bytes to a text; IWD_ERR when it cannot be read. */
static int append_file(iwd_text_t *t, const char *path)
{
    FILE *f = fopen(path, "r");
    char buf[8192];
    size_t n;

    if (f == NULL)
        return IWD_ERR;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        iwd_text_put(t, "%.*s", (int)n, buf);
    fclose(f);
    iwd_text_put(t, "\n");
    return IWD_OK;
}

/* The number of PEM certificates in a file (0 when none or unreadable). */
static int count_certificates(const char *path)
{
    BIO *bio = BIO_new_file(path, "r");
    X509 *cert;
    int n = 0;

    if (bio == NULL)
        return 0;
    while ((cert = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        n++;
        X509_free(cert);
    }
    BIO_free(bio);
    return n;
}

int iwd_webhooks_init(void)
{
    if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK) {
        fprintf(stderr, "iwd-sidecar: libcurl cannot be initialised\n");
        return IWD_ERR;
    }
    if (iwd_conf.ca_file != NULL) {
        const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
        iwd_text_t bundle = iwd_text_new(256 * 1024);
        int n = count_certificates(iwd_conf.ca_file);

        if (n == 0) {
            fprintf(stderr, "iwd-sidecar: IWD_CA_FILE %s holds no PEM certificate (or cannot be read)\n",
                    iwd_conf.ca_file);
            free(bundle.buf);
            return IWD_ERR;
        }
        /* the system's CAs first: CURLOPT_CAINFO_BLOB replaces libcurl's default bundle */
        if (v->cainfo != NULL && append_file(&bundle, v->cainfo) != IWD_OK)
            iwd_log(IWD_LOG_WARN, "the system's CA bundle cannot be read", "%s", v->cainfo);
        append_file(&bundle, iwd_conf.ca_file);
        ca_blob = (struct curl_blob){.data = bundle.buf, .len = bundle.len, .flags = CURL_BLOB_NOCOPY};
        iwd_log(IWD_LOG_INFO, "webhooks trust IWD_CA_FILE", "%s: %d certificates", iwd_conf.ca_file, n);
    }
    if ((multi = curl_multi_init()) == NULL) {
        fprintf(stderr, "iwd-sidecar: cannot set the webhook delivery up\n");
        return IWD_ERR;
    }
    return IWD_OK;
}

void iwd_webhooks_start(void)
{
    pthread_t dispatcher, sender;

    pthread_create(&sender, NULL, sender_main, NULL);
    pthread_detach(sender);
    pthread_create(&dispatcher, NULL, dispatcher_main, NULL);
    pthread_detach(dispatcher);
    iwd_log(IWD_LOG_INFO, "webhook delivery started", "replica %s", iwd_work_replica());
}

void iwd_webhooks_stopped(const iwd_tenant_t *tenant, const char *webhook)
{
    note_stopped(tenant->ccid, webhook);
}
