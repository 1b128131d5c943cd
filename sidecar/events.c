/*
 * iwd-sidecar event stream hub (events.h): GET /iwd/v3/events without a thread or a database connection per
 * client.
 *
 * One hub per tenant with open streams: a connection of its own to the tenant's database (not one of pg.c's
 * call connections, which it would hold for as long as streams are open), opened by a connector thread when
 * the tenant's first stream opens and closed HUB_LINGER_MS after its last stream closed. It LISTENs on
 * iwd_events and belongs to the loop of the thread that opened it, which watches its socket (libpq
 * non-blocking). On each notification, and every HUB_POLL_MS as a safety net (a publication made by the
 * tenant's worker, a notification lost with a connection), it runs a round: SELECT iwd.publish_events()
 * moves the committed outbox rows to the feed in commit order, then iwd.events_after(head, HUB_PAGE) reads
 * what follows the last event it fanned out, again until caught up. Each event becomes one immutable,
 * reference-counted buffer (its SSE frame, which holds the JSON document, and the task fields streams filter
 * on), handed to every thread with streams of the tenant in one message per batch (h2o_multithread); each
 * thread gives it to its own streams, which apply their own type and task filters and hold a reference while
 * it waits or is written: never a copy per stream.
 *
 * Resuming without gap or duplicate: a stream registers with the hub first and takes the hub's head at that
 * moment as its join point. The live events after it are held while the stream catches up with its own
 * iwd.events_after calls through pg.c's call path, in pages of CATCH_UP_PAGE, the next page fetched only once
 * the client has taken most of the previous one; they bring the events up to the join point (a page that is
 * not full brought everything published before the call, the join point included). The held events follow.
 * A stream remembers the last id it sent and never sends one again. The JSON long-poll is the same with one
 * call: answered at once when events follow `after`, otherwise parked (counted with the streams) until the
 * hub brings a matching event or the wait ends. A long-poll that registered before its hub had read the
 * head (a hub connecting late) has no join point when its call is sent: once the hub has one, it reads
 * once more after what its call returned, so that an event published between the two is answered.
 *
 * Bounds: IWD_MAX_STREAMS per sidecar and IWD_MAX_STREAMS_PER_TENANT (503 beyond); a stream's unsent output is
 * at most IWD_EVENTS_BUFFER_BYTES (and the catch-up page being written): a client that falls further behind
 * is fed from the database again (fall_back), and one that also takes nothing for five heartbeat intervals
 * is disconnected (counted in iwd_events_streams_dropped_total) and resumes with Last-Event-ID; nothing is
 * buffered without bound. All streams together hold about IWD_EVENTS_MEMORY_BYTES unsent at most (what h2o
 * is writing, queued, held during a catch-up; a catch-up page asked for under the bound may take it over):
 * beyond it a new stream is refused (503), a stream holding more than its share (the bound over the streams
 * open) falls back to the database the same way, and catch-up pages wait until the total is under the
 * bound again. A comment line goes out when nothing else did for
 * IWD_EVENTS_HEARTBEAT_S.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "answer.h"
#include "clock.h"
#include "config.h"
#include "events.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"
#include "server_slots.h"

#define MAX_THREADS 64           /* IWD_THREADS is at most this (config.c) */
#define HUB_PAGE 1000            /* events per read of the feed by a hub */
#define HUB_POLL_MS 2000         /* a hub's round at least this often, and its reconnection attempts */
#define HUB_LINGER_MS 15000      /* a hub without streams keeps its connection this long */
#define CATCH_UP_PAGE 1000       /* events per catch-up call of a stream */
#define SEND_BATCH 64            /* events handed to h2o in one write (and half the unsent bound at most) */
#define STALL_HEARTBEATS 5       /* a client behind that took nothing for this many heartbeat intervals is dropped */
#define MEMORY_RETRY_MS 250      /* a catch-up page put off by IWD_EVENTS_MEMORY_BYTES is asked for again after this */
#define OPENING ": iwd event stream\n\n"
#define HEARTBEAT ": heartbeat\n\n"

const char *const iwd_event_types[IWD_EVENT_TYPES] = {
    "task.created",  "task.updated",  "task.reprioritized",        "task.held",      "task.resumed",
    "task.reserved", "task.accepted", "task.reservation_timed_out", "task.completed", "task.canceled",
    "task.rejected", "task.expired",  "task.restarted",             "task.error_held", "task.declined"};

const char *const iwd_event_filter_keys[IWD_EVENT_FILTER_KEYS] = {
    "department", "process", "category", "queue", "status", "mediaType", "customerSegment", "capturePoint",
    "assignedTo"};

/* An event as read from the feed: immutable, shared by every stream it goes to, freed by the last. */
typedef struct event {
    atomic_int refs;
    int64_t id;
    int type;                                  /* index in iwd_event_types; -1: a type this build does not know */
    const char *fields[IWD_EVENT_FILTER_KEYS]; /* the task's filter fields as text, NULL when null or absent */
    const char *doc;                           /* the JSON document, inside frame */
    size_t doc_len, frame_len;
    char frame[];                              /* "id: N\nevent: TYPE\ndata: DOC\n\n", then the fields' text */
} event_t;

/* Events in order: a stream's queue, those held during its catch-up, those being written. */
typedef struct event_list {
    event_t **items;
    size_t first, n, cap, bytes;
} event_list_t;

/* A thread's share: where hubs send it events, and the timeouts of its streams and hubs. */
typedef struct thread_events {
    bool ready;
    iwd_thread_t *thread;
    h2o_multithread_receiver_t receiver;
    h2o_timeout_t heartbeat, poll, soon, memory_retry, waits[IWD_EVENTS_WAIT_MAX_S + 1];
} thread_events_t;

/* A tenant's hub: see the header comment. */
typedef struct hub {
    atomic_int refs; /* the registry's while listed, one per message and connector in flight */
    char ccid[IWD_CCID_SIZE];
    char conninfo[IWD_CONNINFO_SIZE];
    /* under registry_lock */
    bool listed;
    iwd_server_t *slot; /* the server whose connection slot the hub's connection holds; NULL: none */
    int streams, on_thread[MAX_THREADS];
    int64_t head; /* the last event fanned out; -1 until the connection has read it (owner writes) */
    /* the owner thread's */
    iwd_thread_t *owner;
    PGconn *conn;
    h2o_socket_t *sock;
    bool connecting, running, starting, again, failing, slot_wanted;
    int64_t notified; /* the highest id announced on iwd_events since the round began (INT64_MAX: unknown) */
    PGresult *last; /* the running query's last result */
    h2o_timeout_entry_t poll;
    int64_t idle_since_ms;
    /* each thread's own: its streams of the tenant */
    h2o_linklist_t local[MAX_THREADS];
    struct hub *next;
} hub_t;

enum { MSG_CONNECTED, MSG_EVENTS };

/* A message to a thread's loop: a hub's new connection (to its owner), or events (head alone: none yet). */
typedef struct message {
    h2o_multithread_message_t super;
    int kind;
    hub_t *hub;
    PGconn *conn;
    int64_t head;
    size_t n;
    event_t *events[];
} message_t;

/* An SSE stream or a parked long-poll, in the request's pool. */
typedef struct stream {
    h2o_generator_t generator;
    iwd_call_t *call;
    thread_events_t *te;
    hub_t *hub;
    h2o_linklist_t link; /* in hub->local[thread] */
    iwd_events_query_t query;
    int64_t join;        /* live events after this id; -1 until the hub knows its head */
    int64_t sent;        /* the last event id sent; none at or below it is sent again */
    int64_t cursor;      /* the next catch-up call reads after it */
    int64_t call_join;   /* the join point when the catch-up call in flight was sent */
    unsigned fallbacks, call_fallbacks; /* fall-backs so far, and when the call in flight was sent */
    bool registered, catching_up, page_due, calling, writing, heartbeat_due, gone, ended;
    event_list_t queue, held;
    event_t *inflight[SEND_BATCH];
    size_t ninflight, inflight_bytes;
    size_t page_bytes;   /* the last catch-up page's output while some of it is unsent: allowed on top of the bound */
    int64_t written;     /* the last event id handed to h2o */
    int64_t seen;        /* the highest id the hub has offered the stream */
    int64_t write_started_ms;
    bool behind;         /* fell back to the database (fall_back) and not caught up since */
    h2o_iovec_t iov[SEND_BATCH];
    h2o_timeout_entry_t heartbeat, soon, wait;
} stream_t;

static thread_events_t threads[MAX_THREADS];
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static hub_t *hubs;
static atomic_int streams_open;
static atomic_size_t streams_bytes; /* what every stream holds unsent: IWD_EVENTS_MEMORY_BYTES bounds it */

/* --- events -------------------------------------------------------------------------------------- */

static void event_release(event_t *e)
{
    if (atomic_fetch_sub(&e->refs, 1) == 1)
        free(e);
}

static event_t *event_ref(event_t *e)
{
    atomic_fetch_add(&e->refs, 1);
    return e;
}

/* A task field as text the way ->> renders it (strings, numbers, booleans); NULL for null or absent. */
static const char *field_text(json_t *value, char *buf, size_t size)
{
    if (json_is_string(value))
        return json_string_value(value);
    if (json_is_integer(value)) {
        snprintf(buf, size, "%" JSON_INTEGER_FORMAT, json_integer_value(value));
        return buf;
    }
    if (json_is_real(value)) {
        snprintf(buf, size, "%.17g", json_real_value(value));
        return buf;
    }
    if (json_is_boolean(value))
        return json_is_true(value) ? "true" : "false";
    return NULL;
}

/* An event from its document (one element of events_after's "events"); NULL when it is not one. */
static event_t *event_new(json_t *doc)
{
    json_t *id = json_object_get(doc, "id"), *type = json_object_get(doc, "type"), *task = json_object_get(doc, "task");
    char numbers[IWD_EVENT_FILTER_KEYS][32];
    const char *fields[IWD_EVENT_FILTER_KEYS];
    size_t field_bytes = 0, o;
    char *text;
    event_t *e;
    int n;

    if (!json_is_integer(id) || json_integer_value(id) <= 0 || !json_is_string(type) ||
        strpbrk(json_string_value(type), "\r\n") != NULL)
        return NULL;
    for (int k = 0; k < IWD_EVENT_FILTER_KEYS; k++) {
        fields[k] = field_text(json_object_get(task, iwd_event_filter_keys[k]), numbers[k], sizeof(numbers[k]));
        field_bytes += fields[k] != NULL ? strlen(fields[k]) + 1 : 0;
    }
    if ((text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER)) == NULL)
        return NULL;
    n = snprintf(NULL, 0, "id: %" JSON_INTEGER_FORMAT "\nevent: %s\ndata: ", json_integer_value(id),
                 json_string_value(type));
    e = malloc(sizeof(*e) + n + 1 + strlen(text) + 2 + field_bytes);
    atomic_init(&e->refs, 1);
    e->id = json_integer_value(id);
    e->type = -1;
    for (int t = 0; t < IWD_EVENT_TYPES; t++)
        if (strcmp(json_string_value(type), iwd_event_types[t]) == 0)
            e->type = t;
    snprintf(e->frame, n + 1, "id: %" JSON_INTEGER_FORMAT "\nevent: %s\ndata: ", json_integer_value(id),
             json_string_value(type));
    e->doc = e->frame + n;
    e->doc_len = strlen(text);
    memcpy(e->frame + n, text, e->doc_len);
    memcpy(e->frame + n + e->doc_len, "\n\n", 2);
    e->frame_len = n + e->doc_len + 2;
    o = e->frame_len;
    for (int k = 0; k < IWD_EVENT_FILTER_KEYS; k++) {
        e->fields[k] = NULL;
        if (fields[k] == NULL)
            continue;
        e->fields[k] = e->frame + o;
        memcpy(e->frame + o, fields[k], strlen(fields[k]) + 1);
        o += strlen(fields[k]) + 1;
    }
    free(text);
    return e;
}

/*
 * The events of an events_after answer ({"events": [...], "next": N}), in order, each with one reference
 * for the caller, and its next; IWD_ERR when the text is not such an answer.
 */
static int parse_page(const char *text, size_t len, event_t ***events, size_t *n, int64_t *next)
{
    json_t *page = json_loadb(text, len, 0, NULL), *list = json_object_get(page, "events");
    json_t *next_value = json_object_get(page, "next");
    size_t i;

    *events = NULL;
    *n = 0;
    if (!json_is_array(list) || !json_is_integer(next_value)) {
        json_decref(page);
        return IWD_ERR;
    }
    *next = json_integer_value(next_value);
    *events = calloc(json_array_size(list) + 1, sizeof(**events));
    for (i = 0; i < json_array_size(list); i++) {
        event_t *e = event_new(json_array_get(list, i));
        if (e == NULL) {
            iwd_log(IWD_LOG_WARN, "an event was skipped", "element %zu of events_after is not an event document", i);
            continue;
        }
        (*events)[(*n)++] = e;
    }
    json_decref(page);
    return IWD_OK;
}

static void list_push(event_list_t *l, event_t *e)
{
    if (l->first + l->n == l->cap) {
        if (l->first > 0) {
            memmove(l->items, l->items + l->first, l->n * sizeof(*l->items));
            l->first = 0;
        } else {
            l->cap = l->cap != 0 ? 2 * l->cap : 16;
            l->items = realloc(l->items, l->cap * sizeof(*l->items));
        }
    }
    l->items[l->first + l->n++] = e;
    l->bytes += e->frame_len;
    atomic_fetch_add(&streams_bytes, e->frame_len);
}

static event_t *list_shift(event_list_t *l)
{
    event_t *e = l->items[l->first++];

    l->n--;
    l->bytes -= e->frame_len;
    atomic_fetch_sub(&streams_bytes, e->frame_len);
    if (l->n == 0)
        l->first = 0;
    return e;
}

static void list_clear(event_list_t *l)
{
    while (l->n > 0)
        event_release(list_shift(l));
    free(l->items);
    *l = (event_list_t){0};
}

/* --- threads ------------------------------------------------------------------------------------- */

static void on_message(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages);

/* The calling thread's share, set up on its first stream (from its own loop). */
static thread_events_t *thread_events(iwd_thread_t *thread)
{
    thread_events_t *te = &threads[thread->index];
    h2o_loop_t *loop = thread->ctx.loop;

    if (te->ready)
        return te;
    te->thread = thread;
    h2o_timeout_init(loop, &te->heartbeat, (uint64_t)iwd_conf.events_heartbeat_s * 1000);
    h2o_timeout_init(loop, &te->poll, HUB_POLL_MS);
    h2o_timeout_init(loop, &te->soon, 0);
    h2o_timeout_init(loop, &te->memory_retry, MEMORY_RETRY_MS);
    for (int s = 1; s <= IWD_EVENTS_WAIT_MAX_S; s++)
        h2o_timeout_init(loop, &te->waits[s], (uint64_t)s * 1000);
    h2o_multithread_register_receiver(thread->ctx.queue, &te->receiver, on_message);
    te->ready = true;
    return te;
}

/* --- hubs ---------------------------------------------------------------------------------------- */

static void hub_release(hub_t *hub)
{
    if (atomic_fetch_sub(&hub->refs, 1) == 1)
        free(hub);
}

/* Hand events (NULL, 0: the head alone) to every thread with streams of the hub; the head is set with them. */
static void hub_fan_out(hub_t *hub, event_t **events, size_t n, int64_t head)
{
    message_t *to[MAX_THREADS];
    int to_thread[MAX_THREADS], nto = 0;

    pthread_mutex_lock(&registry_lock);
    hub->head = head;
    for (int t = 0; t < MAX_THREADS; t++) {
        message_t *m;
        if (hub->on_thread[t] == 0)
            continue;
        m = calloc(1, sizeof(*m) + n * sizeof(event_t *));
        m->kind = MSG_EVENTS;
        m->hub = hub;
        m->head = head;
        m->n = n;
        for (size_t i = 0; i < n; i++)
            m->events[i] = event_ref(events[i]);
        atomic_fetch_add(&hub->refs, 1);
        to_thread[nto] = t;
        to[nto++] = m;
    }
    pthread_mutex_unlock(&registry_lock);
    for (int i = 0; i < nto; i++)
        h2o_multithread_send_message(&threads[to_thread[i]].receiver, &to[i]->super);
}

/*
 * A slot of the tenant's database server for the hub's connection (server_slots.h): hub connections count
 * against IWD_PG_MAX_CONNECTIONS_PER_SERVER like the calls' connections, but take at most half of it, so that
 * REST calls always keep room (a hub is never idle, never closed to make room). False when there is none
 * now: an idle call connection of the server is closed to make room, the next poll asks again, and the
 * streams wait for their live events meanwhile.
 */
static bool hub_take_slot(hub_t *hub)
{
    iwd_server_t *server = iwd_slots_server(hub->conninfo);
    int holding = 0, most = iwd_conf.pg_max_connections_per_server / 2;
    bool taken;

    if (server == NULL)
        return true; /* a conninfo without a server of its own (pg.c does not count it either) */
    pthread_mutex_lock(&registry_lock);
    for (hub_t *h = hubs; h != NULL; h = h->next)
        holding += h->slot == server;
    pthread_mutex_unlock(&registry_lock);
    taken = holding < (most > 1 ? most : 1) && iwd_slots_acquire_evicting(server, hub->owner->index);
    if (!taken && !hub->slot_wanted)
        iwd_log(IWD_LOG_WARN, "an event hub waits for a connection slot", "%s: server %s", hub->ccid,
                iwd_slots_server_name(server));
    hub->slot_wanted = !taken;
    if (taken) {
        pthread_mutex_lock(&registry_lock);
        hub->slot = server;
        pthread_mutex_unlock(&registry_lock);
    }
    return taken;
}

/* The hub's connection is closed (or was never opened): its server slot goes back. */
static void hub_give_slot(hub_t *hub)
{
    iwd_server_t *server;

    pthread_mutex_lock(&registry_lock);
    server = hub->slot;
    hub->slot = NULL;
    pthread_mutex_unlock(&registry_lock);
    if (server != NULL)
        iwd_slots_release(server);
}

static void unwatch_hub(hub_t *hub)
{
    if (hub->sock != NULL)
        h2o_socket_close(hub->sock);
    hub->sock = NULL;
}

/* The hub's connection is gone or failed: closed; the next poll opens a new one (the head is kept). */
static void hub_disconnect(hub_t *hub, const char *why)
{
    iwd_log(IWD_LOG_WARN, "an event hub lost its database connection", "%s: %s", hub->ccid, why);
    unwatch_hub(hub);
    if (hub->last != NULL)
        PQclear(hub->last);
    hub->last = NULL;
    PQfinish(hub->conn);
    hub_give_slot(hub);
    hub->conn = NULL;
    hub->running = false;
    hub->starting = false;
    iwd_metrics_db(hub->ccid, "disconnect", NULL, 0, false, true);
}

/* Send one query on the hub's connection (non-blocking) and wait for its results through the loop. */
static void hub_send(hub_t *hub, const char *sql)
{
    if (!PQsendQuery(hub->conn, sql) || PQflush(hub->conn) < 0) {
        hub_disconnect(hub, PQerrorMessage(hub->conn));
        return;
    }
    hub->running = true;
}

/* The first query of a connection: LISTEN, publish what committed, and the head. */
static void hub_start(hub_t *hub)
{
    hub->starting = true;
    hub_send(hub, "SET application_name = 'iwd-sidecar-events'; LISTEN iwd_events;"
                  " SELECT iwd.publish_events(); SELECT iwd.events_head()");
}

/* A round: publish what committed, then read the feed after the head. */
static void hub_round(hub_t *hub)
{
    char sql[128];

    if (hub->conn == NULL || hub->running)
        return;
    hub->again = false;
    hub->notified = 0;
    snprintf(sql, sizeof(sql), "SELECT iwd.publish_events(); SELECT iwd.events_after(%" PRId64 ", %d)", hub->head,
             HUB_PAGE);
    hub_send(hub, sql);
}

/* The running query is done: its last result (events_head, or a page of the feed) taken in. */
static void hub_query_done(hub_t *hub)
{
    PGresult *res = hub->last;
    event_t **events;
    size_t n;
    int64_t next;

    hub->running = false;
    hub->last = NULL;
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
        /* the next poll tries again (a starting hub from its first query) */
        if (!hub->failing)
            iwd_log(IWD_LOG_WARN, "an event hub cannot read the tenant's events", "%s: %s", hub->ccid,
                    res != NULL ? PQresultErrorMessage(res) : "no result");
        hub->failing = true;
        if (res != NULL)
            PQclear(res);
        return;
    }
    hub->failing = false;
    if (hub->starting) {
        hub->starting = false;
        if (hub->head < 0)
            hub_fan_out(hub, NULL, 0, strtoll(PQgetvalue(res, 0, 0), NULL, 10));
        hub->again = true;
    } else if (parse_page(PQgetvalue(res, 0, 0), PQgetlength(res, 0, 0), &events, &n, &next) != IWD_OK) {
        iwd_log(IWD_LOG_ERROR, "an event hub read a malformed page", "%s", hub->ccid);
    } else {
        if (n > 0)
            hub_fan_out(hub, events, n, events[n - 1]->id);
        for (size_t i = 0; i < n; i++)
            event_release(events[i]);
        free(events);
        hub->again |= n == HUB_PAGE;
    }
    hub->again |= hub->notified > hub->head; /* a commit announced during the round, not read by it */
    PQclear(res);
    if (hub->again)
        hub_round(hub);
}

/* The hub's socket is readable: notifications (a round is due), results, or a closed connection. */
static void on_hub_readable(h2o_socket_t *sock, const char *err)
{
    hub_t *hub = sock->data;
    PGnotify *notify;

    (void)err;
    if (!PQconsumeInput(hub->conn)) {
        hub_disconnect(hub, PQerrorMessage(hub->conn));
        return;
    }
    /* an outbox commit announces nothing ('': a round is due), a publication its last id */
    while ((notify = PQnotifies(hub->conn)) != NULL) {
        int64_t id = *notify->extra != '\0' ? strtoll(notify->extra, NULL, 10) : INT64_MAX;
        if (id > hub->notified)
            hub->notified = id;
        PQfreemem(notify);
    }
    while (hub->running && !PQisBusy(hub->conn)) {
        PGresult *res = PQgetResult(hub->conn);
        if (res == NULL) {
            hub_query_done(hub);
            return;
        }
        if (PQresultStatus(res) == PGRES_TUPLES_OK && hub->last != NULL &&
            PQresultStatus(hub->last) == PGRES_FATAL_ERROR) {
            PQclear(res); /* an error earlier in the query stands */
            continue;
        }
        if (hub->last != NULL)
            PQclear(hub->last);
        hub->last = res;
    }
    if (!hub->running && !hub->starting && (hub->again || hub->notified > hub->head))
        hub_round(hub);
}

/*
 * A connection opened by the connector: watched (a duplicate of its descriptor, which outlives libpq's own:
 * see pg.c's unwatch), LISTENing, and asked for the head when the hub has none yet.
 */
static void hub_connected(hub_t *hub, PGconn *conn)
{
    int fd;

    hub->connecting = false;
    if (!hub->listed) {
        PQfinish(conn);
        hub_give_slot(hub);
        return;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        if (!hub->failing)
            iwd_log(IWD_LOG_WARN, "an event hub cannot connect", "%s: %s", hub->ccid, PQerrorMessage(conn));
        hub->failing = true;
        iwd_metrics_db(hub->ccid, "connect", "08006", 0, false, false);
        PQfinish(conn);
        hub_give_slot(hub);
        return;
    }
    iwd_metrics_db(hub->ccid, "connect", NULL, 0, true, false);
    if (PQsetnonblocking(conn, 1) != 0 || (fd = dup(PQsocket(conn))) < 0) {
        iwd_log(IWD_LOG_ERROR, "an event hub cannot watch its connection", "%s: %s", hub->ccid, strerror(errno));
        PQfinish(conn);
        hub_give_slot(hub);
        return;
    }
    hub->conn = conn;
    hub->sock = h2o_evloop_socket_create(hub->owner->ctx.loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    hub->sock->data = hub;
    h2o_socket_read_start(hub->sock, on_hub_readable);
    hub_start(hub);
}

static void *connector_main(void *arg)
{
    message_t *m = arg;

    m->conn = iwd_pg_connect(m->hub->conninfo);
    h2o_multithread_send_message(&threads[m->hub->owner->index].receiver, &m->super);
    return NULL;
}

/* Open the hub's connection on a connector thread (connecting never holds the loop). */
static void hub_connect(hub_t *hub)
{
    message_t *m;
    pthread_attr_t attr;
    pthread_t connector;
    int rc;

    if (!hub_take_slot(hub))
        return;
    m = calloc(1, sizeof(*m));
    m->kind = MSG_CONNECTED;
    m->hub = hub;
    atomic_fetch_add(&hub->refs, 1);
    hub->connecting = true;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&connector, &attr, connector_main, m);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        iwd_log(IWD_LOG_ERROR, "cannot start a connector thread", "%s: %s", hub->ccid, strerror(rc));
        hub->connecting = false;
        hub_give_slot(hub);
        hub_release(hub);
        free(m);
    }
}

/* Take the hub out of the registry when it has no stream, and close it; false when a stream came. */
static bool hub_close(hub_t *hub)
{
    pthread_mutex_lock(&registry_lock);
    if (hub->streams > 0) {
        pthread_mutex_unlock(&registry_lock);
        return false;
    }
    hub->listed = false;
    for (hub_t **p = &hubs; *p != NULL; p = &(*p)->next)
        if (*p == hub) {
            *p = hub->next;
            break;
        }
    pthread_mutex_unlock(&registry_lock);
    if (hub->conn != NULL) {
        unwatch_hub(hub);
        if (hub->last != NULL)
            PQclear(hub->last);
        PQfinish(hub->conn);
        hub_give_slot(hub);
        iwd_metrics_db(hub->ccid, "disconnect", NULL, 0, false, true);
    }
    hub_release(hub);
    return true;
}

/* The owner's poll: reconnect, a round as a safety net, or the end of a hub without streams. */
static void on_hub_poll(h2o_timeout_entry_t *entry)
{
    hub_t *hub = H2O_STRUCT_FROM_MEMBER(hub_t, poll, entry);
    thread_events_t *te = &threads[hub->owner->index];
    int streams;

    pthread_mutex_lock(&registry_lock);
    streams = hub->streams;
    pthread_mutex_unlock(&registry_lock);
    if (streams == 0 && hub->idle_since_ms == 0)
        hub->idle_since_ms = iwd_now_ms();
    else if (streams > 0)
        hub->idle_since_ms = 0;
    if (streams == 0 && iwd_now_ms() - hub->idle_since_ms >= HUB_LINGER_MS && hub_close(hub))
        return;
    if (hub->conn == NULL && !hub->connecting)
        hub_connect(hub);
    else if (hub->conn != NULL && !hub->running && hub->starting)
        hub_start(hub);
    else if (hub->conn != NULL && !hub->running)
        hub_round(hub);
    else if (hub->conn != NULL)
        hub->again = true;
    h2o_timeout_link(te->thread->ctx.loop, &te->poll, &hub->poll);
}

/* --- streams ------------------------------------------------------------------------------------- */

static void stream_flush(stream_t *s);
static void stream_joined(stream_t *s);
static void stream_deliver(stream_t *s, event_t *e);

/* Whether the streams together hold more than IWD_EVENTS_MEMORY_BYTES unsent. */
static bool over_memory(void)
{
    return atomic_load(&streams_bytes) > iwd_conf.events_memory_bytes;
}

static size_t stream_bytes(const stream_t *s);

/*
 * Whether the streams hold more than IWD_EVENTS_MEMORY_BYTES and this one more than its share of it (the
 * bound over the streams open), the catch-up page it is writing aside (asked for while the total was under
 * the bound): it lets go of what it holds (fall_back), so that the total comes down whatever the other
 * streams do; the others keep theirs.
 */
static bool over_memory_share(const stream_t *s)
{
    int open = atomic_load(&streams_open);

    return over_memory() &&
           stream_bytes(s) > s->page_bytes + iwd_conf.events_memory_bytes / (size_t)(open > 0 ? open : 1);
}

/* Output the stream holds and has not written yet. */
static size_t stream_bytes(const stream_t *s)
{
    return s->queue.bytes + s->held.bytes + s->inflight_bytes;
}

/*
 * Whether the client fell too far behind: more unsent output than IWD_EVENTS_BUFFER_BYTES besides the last
 * catch-up page (a page is bounded, and the next one is fetched only once the client took most of it).
 */
static bool too_far_behind(const stream_t *s)
{
    return stream_bytes(s) > iwd_conf.events_buffer_bytes + s->page_bytes || over_memory_share(s);
}

/* Whether an event passes the stream's type and task filters. */
static bool matches(const iwd_events_query_t *q, const event_t *e)
{
    if (q->types != 0 && (e->type < 0 || (q->types & (1u << e->type)) == 0))
        return false;
    for (int k = 0; k < IWD_EVENT_FILTER_KEYS; k++) {
        bool found = false;
        if (q->values[k] == NULL)
            continue;
        for (char **v = q->values[k]; e->fields[k] != NULL && *v != NULL && !found; v++)
            found = strcmp(*v, e->fields[k]) == 0;
        if (!found)
            return false;
    }
    return true;
}

/*
 * Register with the tenant's hub (created, with this thread as its owner, when the tenant has none), within
 * the bounds; IWD_ERR when refused (answered 503).
 */
static int stream_register(stream_t *s)
{
    iwd_call_t *call = s->call;
    int index = call->thread->index;
    hub_t *hub;
    bool created = false, full;

    if (atomic_fetch_add(&streams_open, 1) >= iwd_conf.max_streams) {
        atomic_fetch_sub(&streams_open, 1);
        iwd_metrics_events_refused(call->tenant.ccid);
        iwd_answer_error(call, 503, "this sidecar holds its most event streams (IWD_MAX_STREAMS); retry later");
        return IWD_ERR;
    }
    if (over_memory()) {
        atomic_fetch_sub(&streams_open, 1);
        iwd_metrics_events_refused(call->tenant.ccid);
        iwd_answer_error(call, 503, "the event streams of this sidecar hold their most unsent output "
                                    "(IWD_EVENTS_MEMORY_BYTES); retry later");
        return IWD_ERR;
    }
    pthread_mutex_lock(&registry_lock);
    for (hub = hubs; hub != NULL; hub = hub->next)
        if (strcmp(hub->ccid, call->tenant.ccid) == 0 && strcmp(hub->conninfo, call->tenant.conninfo) == 0)
            break;
    if (hub == NULL) {
        hub = calloc(1, sizeof(*hub));
        atomic_init(&hub->refs, 1);
        snprintf(hub->ccid, sizeof(hub->ccid), "%s", call->tenant.ccid);
        snprintf(hub->conninfo, sizeof(hub->conninfo), "%s", call->tenant.conninfo);
        hub->listed = true;
        hub->head = -1;
        hub->owner = call->thread;
        for (int t = 0; t < MAX_THREADS; t++)
            h2o_linklist_init_anchor(&hub->local[t]);
        hub->next = hubs;
        hubs = hub;
        created = true;
    }
    full = hub->streams >= iwd_conf.max_streams_per_tenant;
    if (!full) {
        hub->streams++;
        hub->on_thread[index]++;
        s->join = hub->head;
    }
    pthread_mutex_unlock(&registry_lock);
    if (full) {
        atomic_fetch_sub(&streams_open, 1);
        iwd_metrics_events_refused(call->tenant.ccid);
        iwd_answer_error(call, 503,
                         "this tenant holds its most event streams (IWD_MAX_STREAMS_PER_TENANT); retry later");
        return IWD_ERR;
    }
    s->hub = hub;
    s->registered = true;
    h2o_linklist_insert(&hub->local[index], &s->link);
    iwd_metrics_events_streams(1);
    if (created) {
        hub->poll.cb = on_hub_poll;
        h2o_timeout_link(call->thread->ctx.loop, &s->te->poll, &hub->poll);
        hub_connect(hub);
    }
    return IWD_OK;
}

/* Leave the hub and let go of every event held; the stream sends nothing more. */
static void stream_unregister(stream_t *s)
{
    if (h2o_timeout_is_linked(&s->heartbeat))
        h2o_timeout_unlink(&s->heartbeat);
    if (h2o_timeout_is_linked(&s->soon))
        h2o_timeout_unlink(&s->soon);
    if (h2o_timeout_is_linked(&s->wait))
        h2o_timeout_unlink(&s->wait);
    list_clear(&s->queue);
    list_clear(&s->held);
    if (!s->registered)
        return;
    s->registered = false;
    h2o_linklist_unlink(&s->link);
    pthread_mutex_lock(&registry_lock);
    s->hub->streams--;
    s->hub->on_thread[s->call->thread->index]--;
    pthread_mutex_unlock(&registry_lock);
    atomic_fetch_sub(&streams_open, 1);
    iwd_metrics_events_streams(-1);
}

/* The request's pool is disposed (answered, or its client gone): the stream is done. */
static void on_stream_dispose(void *p)
{
    stream_t *s = p;

    s->gone = true;
    for (size_t i = 0; i < s->ninflight; i++)
        event_release(s->inflight[i]);
    s->ninflight = 0;
    atomic_fetch_sub(&streams_bytes, s->inflight_bytes);
    s->inflight_bytes = 0;
    stream_unregister(s);
}

/* h2o stops the response (its client went away): nothing more is sent; the pool's disposal cleans up. */
static void on_stop(h2o_generator_t *generator, h2o_req_t *req)
{
    stream_t *s = H2O_STRUCT_FROM_MEMBER(stream_t, generator, generator);

    (void)req;
    s->gone = true;
}

/*
 * End an SSE stream now: a client that fell too far behind (dropped, counted) or a catch-up that failed. The
 * connection is shut down, so that a write the client never takes fails and h2o lets go of the request.
 */
static void stream_end(stream_t *s, bool dropped, const char *why)
{
    h2o_req_t *req = s->call->req;
    h2o_socket_t *sock = req->conn->callbacks->get_socket != NULL ? req->conn->callbacks->get_socket(req->conn) : NULL;

    if (s->ended || s->gone)
        return;
    s->ended = true;
    if (dropped)
        iwd_metrics_events_dropped(s->call->tenant.ccid);
    iwd_log(dropped ? IWD_LOG_WARN : IWD_LOG_ERROR, "an event stream was closed", "%s: %s", s->call->tenant.ccid, why);
    stream_unregister(s);
    if (sock != NULL)
        shutdown(h2o_socket_get_fd(sock), SHUT_RDWR);
    if (!s->writing) {
        s->writing = true;
        h2o_send(req, NULL, 0, H2O_SEND_STATE_ERROR);
    }
}

/* Write what the stream queued (or a heartbeat when due and nothing else goes), once the last write is done. */
static void stream_flush(stream_t *s)
{
    size_t n = 0;

    if (s->writing || s->gone || s->ended)
        return;
    s->inflight_bytes = 0;
    while (n < SEND_BATCH && s->queue.n > 0 && (n == 0 || s->inflight_bytes < iwd_conf.events_buffer_bytes / 2)) {
        event_t *e = list_shift(&s->queue);
        s->inflight[n] = e;
        s->written = e->id;
        s->iov[n] = h2o_iovec_init(e->frame, e->frame_len);
        s->inflight_bytes += e->frame_len;
        atomic_fetch_add(&streams_bytes, e->frame_len);
        n++;
    }
    s->ninflight = n;
    if (n == 0 && !s->heartbeat_due)
        return;
    if (n == 0)
        s->iov[n++] = h2o_iovec_init(H2O_STRLIT(HEARTBEAT));
    s->heartbeat_due = false;
    s->writing = true;
    s->write_started_ms = iwd_now_ms();
    if (h2o_timeout_is_linked(&s->heartbeat))
        h2o_timeout_unlink(&s->heartbeat);
    h2o_timeout_link(s->te->thread->ctx.loop, &s->te->heartbeat, &s->heartbeat);
    h2o_send(s->call->req, s->iov, n, H2O_SEND_STATE_IN_PROGRESS);
}

static void fetch_page(stream_t *s);

/* h2o wrote the last batch: its events are let go, the next goes out, and a catch-up page may be due. */
static void on_proceed(h2o_generator_t *generator, h2o_req_t *req)
{
    stream_t *s = H2O_STRUCT_FROM_MEMBER(stream_t, generator, generator);

    for (size_t i = 0; i < s->ninflight; i++)
        event_release(s->inflight[i]);
    s->ninflight = 0;
    atomic_fetch_sub(&streams_bytes, s->inflight_bytes);
    s->inflight_bytes = 0;
    s->writing = false;
    if (s->queue.n == 0)
        s->page_bytes = 0;
    if (s->ended) { /* stream_end found a write in progress: the response ends now */
        s->writing = true;
        h2o_send(req, NULL, 0, H2O_SEND_STATE_ERROR);
        return;
    }
    if (s->page_due && s->catching_up && !s->calling && stream_bytes(s) < iwd_conf.events_buffer_bytes / 2)
        fetch_page(s);
    stream_flush(s);
}

/* Nothing went out for IWD_EVENTS_HEARTBEAT_S: a comment line, so that clients and proxies see it alive. */
static void on_heartbeat(h2o_timeout_entry_t *entry)
{
    stream_t *s = H2O_STRUCT_FROM_MEMBER(stream_t, heartbeat, entry);

    s->heartbeat_due = true;
    if (s->writing && (s->behind || too_far_behind(s)) &&
        iwd_now_ms() - s->write_started_ms >= (int64_t)STALL_HEARTBEATS * iwd_conf.events_heartbeat_s * 1000) {
        stream_end(s, true, "the client fell IWD_EVENTS_BUFFER_BYTES behind and took nothing for five"
                            " IWD_EVENTS_HEARTBEAT_S");
        return;
    }
    if (s->writing) /* the client has not taken the last write yet: look again later */
        h2o_timeout_link(s->te->thread->ctx.loop, &s->te->heartbeat, &s->heartbeat);
    stream_flush(s);
}

/*
 * The client fell more than IWD_EVENTS_BUFFER_BYTES behind (a burst it takes slower than it comes): what it
 * was not handed yet is let go and read again from the database after the last event written, page by page
 * as the client takes them, up to the last event the hub offered; the live events after it are held again.
 * Memory stays bounded whatever the client does; one that takes nothing for long is dropped (on_heartbeat).
 */
static void fall_back(stream_t *s)
{
    list_clear(&s->queue);
    list_clear(&s->held);
    s->fallbacks++; /* a page asked for before now may skip what was let go: it is read again */
    s->behind = true;
    s->page_bytes = 0;
    s->sent = s->written;
    s->cursor = s->written;
    if (s->seen > s->join)
        s->join = s->seen;
    s->catching_up = true;
    s->page_due = !s->calling;
    if (s->page_due && !s->writing && !h2o_timeout_is_linked(&s->soon))
        h2o_timeout_link(s->te->thread->ctx.loop, &s->te->soon, &s->soon);
}

/* Queue an event for the client (the reference is the stream's now), within the stream's bound. */
static void stream_queue(stream_t *s, event_t *e)
{
    s->sent = e->id;
    list_push(&s->queue, e);
}

/* Events ended the catch-up: the held live events after the last one sent follow. */
static void catch_up_done(stream_t *s)
{
    s->catching_up = false;
    s->behind = false;
    s->page_due = false;
    while (s->held.n > 0) {
        event_t *e = list_shift(&s->held);
        if (e->id > s->sent)
            stream_queue(s, e);
        else
            event_release(e);
    }
}

/* A catch-up page is in (pg.c's callback: another call goes from the loop, see fetch_page). */
static void on_page(iwd_call_t *call, PGresult *res, int status, const char *message, void *arg)
{
    stream_t *s = arg;
    event_t **events;
    size_t n;
    int64_t next;

    (void)call;
    (void)status;
    s->calling = false;
    if (s->gone || s->ended)
        return;
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQgetisnull(res, 0, 0) ||
        parse_page(PQgetvalue(res, 0, 0), PQgetlength(res, 0, 0), &events, &n, &next) != IWD_OK) {
        stream_end(s, false, res == NULL ? message : PQresultErrorMessage(res));
        return;
    }
    if (s->call_fallbacks != s->fallbacks) { /* asked for before a fall-back: the cursor moved back since */
        for (size_t i = 0; i < n; i++)
            event_release(events[i]);
        free(events);
        s->page_due = true;
        if (!s->writing && !h2o_timeout_is_linked(&s->soon))
            h2o_timeout_link(s->te->thread->ctx.loop, &s->te->soon, &s->soon);
        return;
    }
    s->page_bytes = 0;
    for (size_t i = 0; i < n; i++) {
        if (events[i]->id <= s->join && events[i]->id > s->sent && matches(&s->query, events[i])) {
            s->page_bytes += events[i]->frame_len;
            stream_queue(s, events[i]);
        } else
            event_release(events[i]); /* after the join point the live feed brings it */
    }
    free(events);
    /* events_after examined the feed up to next (a full page, or its scan bound with a selective filter):
       more to read while it moves and stays before the join point (the live feed brings what follows), or
       when a fall-back moved the join point */
    if ((next < s->join && next > s->cursor) || s->join > s->call_join)
        s->page_due = true;
    else
        catch_up_done(s);
    s->cursor = next;
    if (too_far_behind(s))
        fall_back(s);
    if (s->page_due && !h2o_timeout_is_linked(&s->soon) && stream_bytes(s) < iwd_conf.events_buffer_bytes / 2)
        h2o_timeout_link(s->te->thread->ctx.loop, &s->te->soon, &s->soon);
    stream_flush(s);
}

static const char *const CATCH_UP_SQL = "SELECT iwd.events_after($1::bigint, $2::int, $3::text[], $4::jsonb)";

/* The next catch-up call, after the cursor. */
static void fetch_page(stream_t *s)
{
    char after[24], limit[16];
    const char *values[4] = {after, limit, s->query.sql_types, s->query.sql_filter};

    if (over_memory()) { /* put off until the streams hold less (IWD_EVENTS_MEMORY_BYTES) */
        s->page_due = true;
        if (!h2o_timeout_is_linked(&s->soon))
            h2o_timeout_link(s->te->thread->ctx.loop, &s->te->memory_retry, &s->soon);
        return;
    }
    s->page_due = false;
    s->calling = true;
    s->call_join = s->join;
    s->call_fallbacks = s->fallbacks;
    snprintf(after, sizeof(after), "%" PRId64, s->cursor);
    snprintf(limit, sizeof(limit), "%d", CATCH_UP_PAGE);
    iwd_pg_call_then(s->call, CATCH_UP_SQL, 4, values, on_page, s);
}

static void on_soon(h2o_timeout_entry_t *entry)
{
    stream_t *s = H2O_STRUCT_FROM_MEMBER(stream_t, soon, entry);

    if (s->page_due && s->catching_up && !s->calling && !s->gone && !s->ended)
        fetch_page(s);
}

static void poll_again(stream_t *s);

/*
 * The join point is known: an SSE stream catches up from `after`, or goes live at once. A parked long-poll
 * whose read was sent before the hub knew its head (its hub connected late) reads once more after its
 * cursor: an event published between that read and the head the hub took is not among the live ones.
 */
static void stream_joined(stream_t *s)
{
    if (s->query.json) {
        if (!s->catching_up && s->call_join < 0 && s->join > s->sent)
            poll_again(s);
        return;
    }
    if (s->query.after < 0 || s->query.after >= s->join) {
        s->sent = s->query.after < 0 ? s->join : s->query.after;
        s->written = s->sent;
        return;
    }
    s->sent = s->query.after;
    s->written = s->sent;
    s->cursor = s->query.after;
    s->catching_up = true;
    fetch_page(s);
}

/* Answer a parked long-poll with the events it holds (at most its limit); it leaves the hub. */
static void answer_events(stream_t *s, event_list_t *events)
{
    h2o_req_t *req = s->call->req;
    size_t size = 64, n = 0, o; /* the braces, "events", "next" and its 20 digits at most */
    int64_t next = s->sent;
    char *body;

    for (size_t i = 0; i < events->n && (int)i < s->query.limit; i++)
        size += events->items[events->first + i]->doc_len + 1;
    body = h2o_mem_alloc_pool(&req->pool, size);
    o = (size_t)snprintf(body, size, "{\"events\":[");
    while (events->n > 0 && (int)n < s->query.limit) {
        event_t *e = list_shift(events);
        if (n++ > 0)
            body[o++] = ',';
        memcpy(body + o, e->doc, e->doc_len);
        o += e->doc_len;
        next = e->id;
        event_release(e);
    }
    o += (size_t)snprintf(body + o, size - o, "],\"next\":%" PRId64 "}", next);
    stream_unregister(s);
    s->ended = true;
    iwd_respond_json(s->call, 200, body, o);
}

/* A live event for this stream: queued (SSE), held during a catch-up, or the answer of a parked long-poll. */
static void stream_deliver(stream_t *s, event_t *e)
{
    if (e->id <= s->join || !matches(&s->query, e)) {
        event_release(e);
        return;
    }
    if (s->catching_up) {
        list_push(&s->held, e);
        return;
    }
    if (e->id <= s->sent) {
        event_release(e);
        return;
    }
    if (s->query.json)
        list_push(&s->held, e); /* answered once the batch is read */
    else
        stream_queue(s, e);
}

/* A hub's message for this thread's streams of its tenant. */
static void stream_message(stream_t *s, message_t *m)
{
    if (s->join < 0) {
        s->join = m->n > 0 ? m->events[0]->id - 1 : m->head;
        stream_joined(s);
    }
    if (m->head > s->seen)
        s->seen = m->head;
    for (size_t i = 0; i < m->n && !s->ended; i++)
        stream_deliver(s, event_ref(m->events[i]));
    if (s->ended || s->gone)
        return;
    if (s->query.json) {
        if (!s->catching_up && s->held.n > 0)
            answer_events(s, &s->held);
        return;
    }
    if (too_far_behind(s))
        fall_back(s);
    stream_flush(s);
}

/* The thread's messages: hubs' connections (to their owner) and events for its streams. */
static void on_message(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    thread_events_t *te = H2O_STRUCT_FROM_MEMBER(thread_events_t, receiver, receiver);
    int index = te->thread->index;

    while (!h2o_linklist_is_empty(messages)) {
        message_t *m = H2O_STRUCT_FROM_MEMBER(message_t, super.link, messages->next);
        h2o_linklist_unlink(&m->super.link);
        if (m->kind == MSG_CONNECTED) {
            hub_connected(m->hub, m->conn);
        } else {
            h2o_linklist_t *node = m->hub->local[index].next, *next;
            for (; node != &m->hub->local[index]; node = next) {
                next = node->next; /* a stream may leave the list as it is given the events */
                stream_message(H2O_STRUCT_FROM_MEMBER(stream_t, link, node), m);
            }
            for (size_t i = 0; i < m->n; i++)
                event_release(m->events[i]);
        }
        hub_release(m->hub);
        free(m);
    }
}

/* --- the JSON long-poll -------------------------------------------------------------------------- */

/* The wait ended without a matching event: {"events":[],"next":after}. */
static void on_wait(h2o_timeout_entry_t *entry)
{
    stream_t *s = H2O_STRUCT_FROM_MEMBER(stream_t, wait, entry);

    answer_events(s, &s->held);
}

/* The long-poll's call is in: answered with its events, or parked until one comes or the wait ends. */
static void on_poll_result(iwd_call_t *call, PGresult *res, int status, const char *message, void *arg)
{
    stream_t *s = arg;
    json_t *page, *next;
    bool empty;

    s->catching_up = false;
    if (res == NULL) {
        stream_unregister(s);
        iwd_answer_error(call, status, message);
        return;
    }
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
        stream_unregister(s);
        iwd_answer_result(call, res, 200, 500);
        return;
    }
    page = json_loadb(PQgetvalue(res, 0, 0), PQgetlength(res, 0, 0), 0, NULL);
    next = json_object_get(page, "next");
    empty = json_array_size(json_object_get(page, "events")) == 0 && json_is_integer(next);
    if (!empty) {
        json_decref(page);
        stream_unregister(s);
        iwd_answer_result(call, res, 200, 500);
        return;
    }
    s->sent = json_integer_value(next);
    json_decref(page);
    while (s->held.n > 0 && s->held.items[s->held.first]->id <= s->sent)
        event_release(list_shift(&s->held));
    if (s->call_join < 0 && s->join > s->sent) {
        /* the hub took its head after the read was sent: what came between is not among the live events
           held; read again before answering them (a call goes from the loop) */
        h2o_timeout_link(call->thread->ctx.loop, &s->te->soon, &s->soon);
        return;
    }
    if (s->held.n > 0) {
        answer_events(s, &s->held);
        return;
    }
    if (!h2o_timeout_is_linked(&s->wait)) {
        s->wait.cb = on_wait;
        h2o_timeout_link(call->thread->ctx.loop, &s->te->waits[s->query.wait_s], &s->wait);
    }
}

static const char *const POLL_SQL =
    "SELECT iwd.events_after(coalesce($1::bigint, iwd.events_head()), $2::int, $3::text[], $4::jsonb)";

/*
 * A long-poll's read of the events after its cursor (its `after`, or the head when it has none; after a
 * read, what that read returned), the live events held meanwhile; the join point at the time is kept.
 */
static int poll_read(stream_t *s)
{
    char after[24], limit[16];
    int64_t from = s->sent >= 0 ? s->sent : s->query.after;
    const char *values[4] = {from >= 0 ? after : NULL, limit, s->query.sql_types, s->query.sql_filter};

    snprintf(after, sizeof(after), "%" PRId64, from);
    snprintf(limit, sizeof(limit), "%d", s->query.limit);
    s->catching_up = true;
    s->call_join = s->join;
    return iwd_pg_call_then(s->call, POLL_SQL, 4, values, on_poll_result, s);
}

/*
 * Read once more, the hub now subscribed (its join point known): the wait is suspended meanwhile and starts
 * again when the read finds nothing.
 */
static void poll_again(stream_t *s)
{
    if (s->gone || s->ended || s->catching_up)
        return;
    if (h2o_timeout_is_linked(&s->wait))
        h2o_timeout_unlink(&s->wait);
    poll_read(s);
}

static void on_poll_again(h2o_timeout_entry_t *entry)
{
    poll_again(H2O_STRUCT_FROM_MEMBER(stream_t, soon, entry));
}

/*
 * The JSON form: one call; with a wait, registered with the hub first so that nothing after it is missed,
 * and read again when the hub took its head only after the call was sent.
 */
static int serve_json(stream_t *s)
{
    char after[24], limit[16];
    const char *values[4] = {s->query.after >= 0 ? after : NULL, limit, s->query.sql_types, s->query.sql_filter};

    snprintf(after, sizeof(after), "%" PRId64, s->query.after);
    snprintf(limit, sizeof(limit), "%d", s->query.limit);
    if (s->query.wait_s == 0)
        return iwd_pg_call(s->call, POLL_SQL, 4, values, 200, 500);
    if (stream_register(s) != IWD_OK)
        return IWD_OK;
    s->soon.cb = on_poll_again;
    return poll_read(s);
}

/* --- the SSE stream ------------------------------------------------------------------------------ */

/* Count and log the stream as answered (200) when it opens: it may stay open for hours. */
static void account_open(iwd_call_t *call)
{
    h2o_req_t *req = call->req;
    double elapsed = iwd_now_ms_precise() - call->start_ms;
    char method[16], path[512];

    snprintf(method, sizeof(method), "%.*s", (int)req->method.len, req->method.base);
    snprintf(path, sizeof(path), "%.*s", (int)req->path_normalized.len, req->path_normalized.base);
    iwd_metrics_request(method, call->route, 200, call->tenant.ccid, elapsed);
    iwd_log_request(call->tenant.ccid, method, path, 200, elapsed);
}

static int serve_sse(stream_t *s)
{
    h2o_req_t *req = s->call->req;
    static const h2o_iovec_t opening = {H2O_STRLIT(OPENING)};

    if (stream_register(s) != IWD_OK)
        return IWD_OK;
    s->call->status = 200;
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/event-stream"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-accel-buffering"), 0, NULL, H2O_STRLIT("no"));
    account_open(s->call);
    s->generator.proceed = on_proceed;
    s->generator.stop = on_stop;
    h2o_start_response(req, &s->generator);
    s->writing = true;
    s->iov[0] = opening;
    h2o_timeout_link(req->conn->ctx->loop, &s->te->heartbeat, &s->heartbeat);
    h2o_send(req, s->iov, 1, H2O_SEND_STATE_IN_PROGRESS);
    if (s->join >= 0)
        stream_joined(s);
    return IWD_OK;
}

int iwd_events_serve(iwd_call_t *call, const iwd_events_query_t *query)
{
    stream_t *s = h2o_mem_alloc_shared(&call->req->pool, sizeof(*s), on_stream_dispose);

    memset(s, 0, sizeof(*s));
    s->call = call;
    s->te = thread_events(call->thread);
    s->query = *query;
    s->join = -1;
    s->sent = -1;
    s->heartbeat.cb = on_heartbeat;
    s->soon.cb = on_soon;
    return query->json ? serve_json(s) : serve_sse(s);
}
