/*
 * iwd-sidecar connection slots per database server (see server_slots.h for the contract). Tenant
 * databases on one PostgreSQL server share its max_connections, so the sidecar caps its tenant
 * connections per server (IWD_PG_MAX_CONNECTIONS_PER_SERVER), whichever thread and tenant holds them.
 *
 * A server's slots are its open (or opening) tenant connections plus the slots granted to a thread and
 * not yet claimed; they never exceed the cap. A call that finds the cap reached waits: its thread counts
 * it as a want of the server, and each want marks one idle connection of the server for eviction (least
 * recently used first, any tenant, any thread), so that a busy tenant is never starved by idle ones. When
 * a connection closes, its slot is granted to a thread that wants one (round robin over the threads, so
 * that one busy thread does not keep the slots of a server to itself) and that thread is woken.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "server_slots.h"

#define SERVER_KEY_SIZE 320
#define DEFAULT_PG_PORT "5432"

struct iwd_server {
    char key[SERVER_KEY_SIZE]; /* "host:port" */
    int open;                  /* slots held: connections open or opening, and grants not yet claimed */
    int wants[IWD_SLOTS_MAX_THREADS];   /* calls of each thread waiting for a slot, at its last round */
    int granted[IWD_SLOTS_MAX_THREADS]; /* slots granted to each thread, not yet claimed */
    int wants_total;
    int evicting;       /* idle connections marked for eviction, not yet closed */
    int next_thread;    /* where the round robin of grants resumes */
    h2o_linklist_t idle; /* idle connections, least recently used first */
    uint64_t closed_idle, closed_evicted, wait_timeouts;
    struct iwd_server *next;
};

static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static iwd_server_t *servers;
static int cap;
static void (*wake_thread)(int thread);
static uint64_t to_wake; /* threads to wake once the lock is released (slots_lock held) */

void iwd_slots_init(int cap_per_server, void (*wake)(int thread))
{
    cap = cap_per_server;
    wake_thread = wake;
}

/* Release the lock, then wake the threads the operation granted a slot or an eviction to. */
static void unlock_and_wake(void)
{
    uint64_t wake = to_wake;

    to_wake = 0;
    pthread_mutex_unlock(&slots_lock);
    for (int t = 0; wake != 0; t++, wake >>= 1)
        if ((wake & 1) != 0 && wake_thread != NULL)
            wake_thread(t);
}

bool iwd_slots_server_key(const char *conninfo, char *out, size_t size)
{
    PQconninfoOption *parsed = PQconninfoParse(conninfo, NULL);
    const char *host = NULL, *hostaddr = NULL, *port = NULL;

    if (parsed == NULL)
        return false;
    for (PQconninfoOption *o = parsed; o->keyword != NULL; o++) {
        if (o->val == NULL || o->val[0] == '\0')
            continue;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
    }
    /* libpq's defaults: the environment, then the local socket and the default port */
    if (host == NULL && hostaddr == NULL)
        host = getenv("PGHOST") != NULL ? getenv("PGHOST") : "localhost";
    if (port == NULL)
        port = getenv("PGPORT") != NULL ? getenv("PGPORT") : DEFAULT_PG_PORT;
    snprintf(out, size, "%s:%s", hostaddr != NULL ? hostaddr : host, port);
    PQconninfoFree(parsed);
    return true;
}

iwd_server_t *iwd_slots_server(const char *conninfo)
{
    char key[SERVER_KEY_SIZE];
    iwd_server_t *s;

    if (!iwd_slots_server_key(conninfo, key, sizeof(key)))
        return NULL;
    pthread_mutex_lock(&slots_lock);
    for (s = servers; s != NULL && strcmp(s->key, key) != 0; s = s->next)
        ;
    if (s == NULL) {
        s = calloc(1, sizeof(*s));
        snprintf(s->key, sizeof(s->key), "%s", key);
        h2o_linklist_init_anchor(&s->idle);
        s->next = servers;
        servers = s;
    }
    pthread_mutex_unlock(&slots_lock);
    return s;
}

const char *iwd_slots_server_name(const iwd_server_t *server)
{
    return server->key; /* never changes once created */
}

/* A free or granted slot for the thread (slots_lock held). */
static bool take_slot(iwd_server_t *s, int thread)
{
    if (s->granted[thread] > 0) {
        s->granted[thread]--;
        return true;
    }
    if (s->open < cap) {
        s->open++;
        return true;
    }
    return false;
}

bool iwd_slots_acquire(iwd_server_t *server, int thread)
{
    bool ok;

    (void)thread; /* a free slot is any thread's */
    pthread_mutex_lock(&slots_lock);
    ok = server->open < cap;
    server->open += ok;
    pthread_mutex_unlock(&slots_lock);
    return ok;
}

/* Give a slot to the next thread that wants one, or back to the server (slots_lock held). */
static void release_locked(iwd_server_t *s)
{
    for (int i = 0; i < IWD_SLOTS_MAX_THREADS && s->wants_total > 0; i++) {
        int t = (s->next_thread + i) % IWD_SLOTS_MAX_THREADS;
        if (s->wants[t] == 0)
            continue;
        s->wants[t]--;
        s->wants_total--;
        s->granted[t]++;
        s->next_thread = (t + 1) % IWD_SLOTS_MAX_THREADS;
        to_wake |= (uint64_t)1 << t;
        return;
    }
    s->open--;
}

void iwd_slots_release(iwd_server_t *server)
{
    pthread_mutex_lock(&slots_lock);
    release_locked(server);
    unlock_and_wake();
}

/* Mark idle connections of the server for eviction until as many are on their way out as calls wait. */
static void evict_for_wants(iwd_server_t *s)
{
    while (s->evicting < s->wants_total && !h2o_linklist_is_empty(&s->idle)) {
        iwd_slot_conn_t *c = H2O_STRUCT_FROM_MEMBER(iwd_slot_conn_t, idle, s->idle.next);
        h2o_linklist_unlink(&c->idle);
        c->evict = true;
        s->evicting++;
        to_wake |= (uint64_t)1 << c->thread;
    }
}

bool iwd_slots_acquire_evicting(iwd_server_t *server, int thread)
{
    bool ok;

    (void)thread;
    pthread_mutex_lock(&slots_lock);
    ok = server->open < cap;
    server->open += ok;
    if (!ok && server->evicting <= server->wants_total && !h2o_linklist_is_empty(&server->idle)) {
        iwd_slot_conn_t *c = H2O_STRUCT_FROM_MEMBER(iwd_slot_conn_t, idle, server->idle.next);
        h2o_linklist_unlink(&c->idle);
        c->evict = true;
        server->evicting++;
        to_wake |= (uint64_t)1 << c->thread;
    }
    unlock_and_wake();
    return ok;
}

void iwd_slots_begin_wants(int thread)
{
    pthread_mutex_lock(&slots_lock);
    for (iwd_server_t *s = servers; s != NULL; s = s->next) {
        s->wants_total -= s->wants[thread];
        s->wants[thread] = 0;
    }
}

bool iwd_slots_claim(iwd_server_t *server, int thread)
{
    if (take_slot(server, thread))
        return true;
    server->wants[thread]++;
    server->wants_total++;
    evict_for_wants(server);
    return false;
}

void iwd_slots_end_wants(int thread)
{
    for (iwd_server_t *s = servers; s != NULL; s = s->next)
        while (s->granted[thread] > 0) {
            s->granted[thread]--;
            release_locked(s);
        }
    unlock_and_wake();
}

bool iwd_slots_idle(iwd_slot_conn_t *conn)
{
    iwd_server_t *s = conn->server;
    bool keep = true;

    if (s == NULL)
        return true;
    pthread_mutex_lock(&slots_lock);
    if (s->evicting < s->wants_total) {
        conn->evict = true;
        s->evicting++;
        keep = false;
    } else if (!h2o_linklist_is_linked(&conn->idle)) {
        h2o_linklist_insert(&s->idle, &conn->idle); /* at the tail: the most recently used */
    }
    pthread_mutex_unlock(&slots_lock);
    return keep;
}

bool iwd_slots_take(iwd_slot_conn_t *conn)
{
    bool ok;

    if (conn->server == NULL)
        return true;
    pthread_mutex_lock(&slots_lock);
    ok = !conn->evict;
    if (h2o_linklist_is_linked(&conn->idle))
        h2o_linklist_unlink(&conn->idle);
    pthread_mutex_unlock(&slots_lock);
    return ok;
}

bool iwd_slots_evicting(iwd_slot_conn_t *conn)
{
    bool evict;

    if (conn->server == NULL)
        return false;
    pthread_mutex_lock(&slots_lock);
    evict = conn->evict;
    pthread_mutex_unlock(&slots_lock);
    return evict;
}

void iwd_slots_forget(iwd_slot_conn_t *conn)
{
    if (conn->server == NULL)
        return;
    pthread_mutex_lock(&slots_lock);
    if (h2o_linklist_is_linked(&conn->idle))
        h2o_linklist_unlink(&conn->idle);
    if (conn->evict) {
        conn->server->evicting--;
        conn->server->closed_evicted++;
        conn->evict = false;
    }
    pthread_mutex_unlock(&slots_lock);
}

void iwd_slots_count_idle_timeout(iwd_server_t *server)
{
    pthread_mutex_lock(&slots_lock);
    server->closed_idle++;
    pthread_mutex_unlock(&slots_lock);
}

void iwd_slots_count_wait_timeout(iwd_server_t *server)
{
    pthread_mutex_lock(&slots_lock);
    server->wait_timeouts++;
    pthread_mutex_unlock(&slots_lock);
}

/* Tenants served lately: a table of (ccid hash, last call), ACTIVITY_PROBES places tried per tenant. */
#define ACTIVITY_SLOTS 8192
#define ACTIVITY_PROBES 8
static struct {
    uint64_t hash;
    int64_t last_ms;
} activity[ACTIVITY_SLOTS];
static pthread_mutex_t activity_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t ccid_hash(const char *ccid)
{
    uint64_t h = 14695981039346656037u; /* FNV-1a; never 0 for the strings a ccid may hold */

    for (; *ccid != '\0'; ccid++)
        h = (h ^ (unsigned char)*ccid) * 1099511628211u;
    return h != 0 ? h : 1;
}

void iwd_slots_touch(const char *ccid, int64_t now_ms)
{
    uint64_t h = ccid_hash(ccid);
    size_t at = h % ACTIVITY_SLOTS, oldest = at;

    pthread_mutex_lock(&activity_lock);
    for (size_t i = 0; i < ACTIVITY_PROBES; i++) {
        size_t slot = (at + i) % ACTIVITY_SLOTS;
        if (activity[slot].hash == h || activity[slot].hash == 0) {
            oldest = slot;
            break;
        }
        if (activity[slot].last_ms < activity[oldest].last_ms)
            oldest = slot; /* the table is full here: the tenant served longest ago makes room */
    }
    activity[oldest].hash = h;
    activity[oldest].last_ms = now_ms;
    pthread_mutex_unlock(&activity_lock);
}

bool iwd_slots_active(const char *ccid, int64_t since_ms)
{
    uint64_t h = ccid_hash(ccid);
    size_t at = h % ACTIVITY_SLOTS;
    bool active = false;

    pthread_mutex_lock(&activity_lock);
    for (size_t i = 0; i < ACTIVITY_PROBES && !active; i++) {
        size_t slot = (at + i) % ACTIVITY_SLOTS;
        active = activity[slot].hash == h && activity[slot].last_ms >= since_ms;
    }
    pthread_mutex_unlock(&activity_lock);
    return active;
}

/* Append printf output to a malloc'd text. */
static void put(char **text, size_t *len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void put(char **text, size_t *len, const char *fmt, ...)
{
    va_list ap;
    char *more;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&more, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    *text = realloc(*text, *len + n + 1);
    memcpy(*text + *len, more, n + 1);
    *len += n;
    free(more);
}

/* A label value: backslashes, quotes and newlines escaped. */
static void escape(const char *in, char *out, size_t size)
{
    size_t o = 0;

    for (; *in != '\0' && o + 3 < size; in++) {
        if (*in == '\\' || *in == '"' || *in == '\n')
            out[o++] = '\\';
        out[o++] = *in == '\n' ? 'n' : *in;
    }
    out[o] = '\0';
}

char *iwd_slots_metrics(void)
{
    static const struct {
        const char *name, *type, *help;
    } families[] = {
        {"iwd_pg_server_connections", "gauge",
         "Tenant connections of this sidecar open or being opened to the database server, all threads."},
        {"iwd_pg_server_connections_max", "gauge", "The cap on them (IWD_PG_MAX_CONNECTIONS_PER_SERVER)."},
        {"iwd_pg_server_waiting_calls", "gauge", "Calls waiting for a connection slot of the database server."},
        {"iwd_pg_server_connections_closed_total", "counter",
         "Idle tenant connections closed: after IWD_PG_IDLE_TIMEOUT_S (reason idle_timeout), or to make room for"
         " a call of another tenant (reason evicted)."},
        {"iwd_pg_server_wait_timeouts_total", "counter",
         "Calls answered 503 because no connection became free within IWD_STATEMENT_TIMEOUT_MS."},
    };
    char *text = calloc(1, 1), label[2 * SERVER_KEY_SIZE];
    size_t len = 0;

    pthread_mutex_lock(&slots_lock);
    for (size_t f = 0; f < sizeof(families) / sizeof(families[0]); f++) {
        put(&text, &len, "# HELP %s %s\n# TYPE %s %s\n", families[f].name, families[f].help, families[f].name,
            families[f].type);
        for (iwd_server_t *s = servers; s != NULL; s = s->next) {
            escape(s->key, label, sizeof(label));
            switch (f) {
            case 0:
                put(&text, &len, "%s{server=\"%s\"} %d\n", families[f].name, label, s->open);
                break;
            case 1:
                put(&text, &len, "%s{server=\"%s\"} %d\n", families[f].name, label, cap);
                break;
            case 2:
                put(&text, &len, "%s{server=\"%s\"} %d\n", families[f].name, label, s->wants_total);
                break;
            case 3:
                put(&text, &len, "%s{server=\"%s\",reason=\"idle_timeout\"} %llu\n", families[f].name, label,
                    (unsigned long long)s->closed_idle);
                put(&text, &len, "%s{server=\"%s\",reason=\"evicted\"} %llu\n", families[f].name, label,
                    (unsigned long long)s->closed_evicted);
                break;
            default:
                put(&text, &len, "%s{server=\"%s\"} %llu\n", families[f].name, label,
                    (unsigned long long)s->wait_timeouts);
            }
        }
    }
    pthread_mutex_unlock(&slots_lock);
    return text;
}
