/*
 * iwd-sidecar metrics collection (collector.h). One thread of its own reads the tenants' queue gauges and
 * Data Mart job metrics every IWD_METRICS_TTL_MS, over its own connections (a short connect timeout, a short
 * statement timeout and a deadline of its own on every answer), and hands the text of that reading to
 * metrics.c; a scrape copies the last one. A tenant server that is down or never answers delays only the
 * collector's next reading, never a scrape and never a worker thread's requests.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "collector.h"
#include "config.h"
#include "iwd.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"
#include "server_slots.h"
#include "tenant.h"
#include "tenant_work.h"
#include "text.h"

/* The Data Mart job metrics (iwd_dm.prometheus_metrics of each tenant), merged into one family each. */
static const struct {
    const char *name, *help;
} job_metrics[] = {
    {"iwddm_job_active", "Whether the Data Mart execution chain is running."},
    {"iwddm_job_last_start", "Start of the last run of the chain (Unix time)."},
    {"iwddm_job_last_success", "End of the last successful run of the chain (Unix time)."},
    {"iwddm_job_last_fail", "Time of the last failed run of the chain (Unix time)."},
};
#define NJOB_METRICS ((int)(sizeof(job_metrics) / sizeof(job_metrics[0])))

/* Sample lines of one tenant's job metrics kept (one per metric and execution chain: a few dozen). */
#define JOB_SAMPLES_PER_TENANT 64

/* File each sample line of a tenant's job metrics under its metric; comments are dropped. */
static void collect_job_samples(iwd_text_t *by_metric, const char *text)
{
    const char *line = text;
    int kept = 0;

    while (*line != '\0' && kept < JOB_SAMPLES_PER_TENANT) {
        const char *end = strchr(line, '\n');
        size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
        if (len > 0 && line[0] != '#')
            for (int j = 0; j < NJOB_METRICS; j++) {
                size_t n = strlen(job_metrics[j].name);
                if (len > n && strncmp(line, job_metrics[j].name, n) == 0 && (line[n] == '{' || line[n] == ' ')) {
                    iwd_text_put(&by_metric[j], "%.*s\n", (int)len, line);
                    kept++;
                }
            }
        line += len + (end != NULL);
    }
}

#define COLLECT_CONNECT_TIMEOUT_S 2
#define COLLECT_STATEMENT_TIMEOUT_MS 5000
#define COLLECT_DEADLINE_MS 6000       /* the collector's own bound on one answer, whatever the server does */
#define COLLECT_BACKOFF_MIN_MS 1000    /* after a failed reading of a tenant, no new attempt before this */
#define COLLECT_BACKOFF_MAX_MS 60000
#define QUEUE_SERIES_PER_TENANT 100    /* queue / media type pairs with series of their own, by backlog */
#define COLLECT_IDLE_EVERY_MS 60000    /* a tenant the API has not served lately is read this often */
#define COLLECT_IDLE_CONNECTS 32       /* connections opened per reading for such tenants, at most */

struct reading;

/*
 * A tenant database the collector reads, with its connection and its last reading. A tenant the API
 * served within IWD_PG_IDLE_TIMEOUT_S (server_slots.h) is read every IWD_METRICS_TTL_MS over a connection
 * kept open; any other every COLLECT_IDLE_EVERY_MS, over a connection closed after its reading, at most
 * COLLECT_IDLE_CONNECTS such connections per reading: the collector's sessions and its cost follow the
 * active tenants, and an idle tenant's gauges are those of its last reading.
 */
typedef struct collected {
    iwd_tenant_t tenant;
    PGconn *conn;
    int64_t retry_at_ms;
    int backoff_ms;
    bool listed;            /* still provisioned at the last reading of the registry */
    bool ok;                /* its last reading succeeded */
    bool close_after;       /* not active: its connection is closed at the end of this reading */
    int64_t idle_read_at_ms; /* when it is read again if it stays idle */
    struct reading *last;   /* its families at its last reading (NULL: never read) */
    struct collected *next;
} collected_t;

static collected_t *collected;
static PGconn *collector_control;

/* Close a tenant's connection after a failure, and wait longer before each new attempt. */
static void collect_failed(collected_t *c, const char *why)
{
    c->backoff_ms = c->backoff_ms == 0 ? COLLECT_BACKOFF_MIN_MS
                                       : (c->backoff_ms * 2 > COLLECT_BACKOFF_MAX_MS ? COLLECT_BACKOFF_MAX_MS
                                                                                   : c->backoff_ms * 2);
    c->retry_at_ms = iwd_now_ms() + c->backoff_ms;
    iwd_log(IWD_LOG_WARN, "tenant metrics not read", "%s: %s; next attempt in %d ms", c->tenant.ccid, why,
            c->backoff_ms);
    if (c->conn != NULL) { /* why may be its error message: closed only now */
        PQfinish(c->conn);
        c->conn = NULL;
    }
}

/* The collector's entry for a tenant of the registry, its connection kept when its conninfo is the same. */
static collected_t *collected_entry(const iwd_tenant_t *tenant)
{
    collected_t *c;

    for (c = collected; c != NULL; c = c->next)
        if (strcmp(c->tenant.ccid, tenant->ccid) == 0)
            break;
    if (c == NULL) {
        c = calloc(1, sizeof(*c));
        c->next = collected;
        collected = c;
    } else if (strcmp(c->tenant.conninfo, tenant->conninfo) != 0 && c->conn != NULL) {
        PQfinish(c->conn); /* re-provisioned elsewhere */
        c->conn = NULL;
        c->retry_at_ms = 0;
        c->backoff_ms = 0;
    }
    c->tenant = *tenant;
    c->listed = true;
    return c;
}

/* The tenant families of one reading, each gathered apart and rendered one after the other. */
typedef struct reading {
    iwd_text_t tasks, oldest, claims, timeouts, up, tables, dimensions, jobs[NJOB_METRICS];
} reading_t;

/* A tenant's reading, emptied (allocated on first use). */
static reading_t *reading_reset(reading_t *r)
{
    iwd_text_t *all[] = {NULL, NULL, NULL, NULL, NULL, NULL, NULL};

    if (r == NULL)
        r = calloc(1, sizeof(*r));
    all[0] = &r->tasks, all[1] = &r->oldest, all[2] = &r->claims, all[3] = &r->timeouts, all[4] = &r->up;
    all[5] = &r->tables, all[6] = &r->dimensions;
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        free(all[i]->buf);
        *all[i] = iwd_text_new(1);
    }
    for (int j = 0; j < NJOB_METRICS; j++) {
        free(r->jobs[j].buf);
        r->jobs[j] = iwd_text_new(1);
    }
    return r;
}

static void reading_free(reading_t *r)
{
    if (r == NULL)
        return;
    free(r->tasks.buf), free(r->oldest.buf), free(r->claims.buf), free(r->timeouts.buf), free(r->up.buf);
    free(r->tables.buf), free(r->dimensions.buf);
    for (int j = 0; j < NJOB_METRICS; j++)
        free(r->jobs[j].buf);
    free(r);
}

/*
 * The rows of the tenant's Data Mart facts and aggregates and the members of its dimensions, as the
 * server's statistics count live rows (no table is scanned). Only iwd_dm's own tables by their naming
 * (task_fact, agg_*, dim_*), at most DM_TABLE_SERIES: the labels stay bounded whatever a tenant creates
 * in the schema; task_event_fact, a view of the history, counts iwd.task_event's rows.
 */
#define DM_TABLE_SERIES 64
static bool collect_datamart_tables(collected_t *c, reading_t *r, const char *esc, int64_t deadline, char *why,
                                    size_t why_size)
{
    PGresult *q = iwd_pg_exec_within(c->conn, c->tenant.ccid, "datamart_tables",
                               "SELECT CASE WHEN schemaname = 'iwd' THEN 'task_event_fact' ELSE relname END,"
                               " n_live_tup FROM pg_catalog.pg_stat_user_tables"
                               " WHERE schemaname = 'iwd_dm' AND (relname = 'task_fact'"
                               " OR relname LIKE 'agg\\_%' OR relname LIKE 'dim\\_%')"
                               " OR schemaname = 'iwd' AND relname = 'task_event' ORDER BY 1",
                               0, NULL, deadline);

    if (q == NULL || PQresultStatus(q) != PGRES_TUPLES_OK) {
        snprintf(why, why_size, "datamart_tables: %s", q == NULL ? "no answer in time" : PQresultErrorMessage(q));
        if (q != NULL)
            PQclear(q);
        return false;
    }
    for (int k = 0; k < PQntuples(q) && k < DM_TABLE_SERIES; k++) {
        const char *table = PQgetvalue(q, k, 0);
        if (strncmp(table, "dim_", 4) == 0)
            iwd_text_put(&r->dimensions, "iwddm_dimension_members{tenant=\"%s\",dimension=\"%s\"} %s\n", esc,
                         table + 4, PQgetvalue(q, k, 1));
        else
            iwd_text_put(&r->tables, "iwddm_table_rows{tenant=\"%s\",table=\"%s\"} %s\n", esc, table,
                         PQgetvalue(q, k, 1));
    }
    PQclear(q);
    return true;
}

/*
 * Read one tenant's gauges into the reading. Queue and media type are free text of the tenant's: the
 * QUEUE_SERIES_PER_TENANT pairs with the largest backlog have series of their own, the rest are summed
 * under queue="other", media_type="other".
 */
static bool collect_tenant(collected_t *c, reading_t *r, char *why, size_t why_size)
{
    char limit[16], esc[512];
    const char *v[1] = {limit}, *ccid_v[1] = {c->tenant.ccid};
    int64_t deadline = iwd_now_ms() + COLLECT_DEADLINE_MS;
    PGresult *q;

    snprintf(limit, sizeof(limit), "%d", QUEUE_SERIES_PER_TENANT);
    q = iwd_pg_exec_within(c->conn, c->tenant.ccid, "queue_stats",
                     "WITH s AS MATERIALIZED (SELECT iwd.queue_stats() AS v),"
                     " ranked AS (SELECT q->>'queue' AS queue, q->>'mediaType' AS media_type,"
                     " (q->>'queued')::bigint AS queued, (q->>'assigned')::bigint AS assigned,"
                     " (q->>'held')::bigint AS held, (q->>'oldestQueuedSeconds')::float8 AS oldest,"
                     " row_number() OVER (ORDER BY (q->>'queued')::bigint + (q->>'assigned')::bigint"
                     " + (q->>'held')::bigint DESC, q->>'queue', q->>'mediaType') AS rank"
                     " FROM s, jsonb_array_elements(s.v->'queues') q),"
                     " capped AS (SELECT CASE WHEN rank <= $1::int THEN queue ELSE 'other' END AS queue,"
                     " CASE WHEN rank <= $1::int THEN media_type ELSE 'other' END AS media_type,"
                     " sum(queued) AS queued, sum(assigned) AS assigned, sum(held) AS held, max(oldest) AS oldest"
                     " FROM ranked GROUP BY 1, 2)"
                     " SELECT c.queue, c.media_type, c.queued, c.assigned, c.held, c.oldest,"
                     " (s.v->>'claims')::bigint, (s.v->>'reservationTimeouts')::bigint"
                     " FROM s LEFT JOIN capped c ON true ORDER BY c.queue, c.media_type",
                     1, v, deadline);
    if (q == NULL || PQresultStatus(q) != PGRES_TUPLES_OK) {
        snprintf(why, why_size, "queue_stats: %s", q == NULL ? "no answer in time" : PQresultErrorMessage(q));
        if (q != NULL)
            PQclear(q);
        return false;
    }
    iwd_metrics_escape_label(c->tenant.ccid, esc, sizeof(esc));
    for (int k = 0; k < PQntuples(q); k++) {
        char qn[1024], mt[1024];
        if (k == 0) {
            iwd_text_put(&r->claims, "iwd_claims_total{ccid=\"%s\"} %s\n", esc, PQgetvalue(q, 0, 6));
            iwd_text_put(&r->timeouts, "iwd_reservation_timeouts_total{ccid=\"%s\"} %s\n", esc, PQgetvalue(q, 0, 7));
        }
        if (PQgetisnull(q, k, 0))
            continue;
        iwd_metrics_escape_label(PQgetvalue(q, k, 0), qn, sizeof(qn));
        iwd_metrics_escape_label(PQgetvalue(q, k, 1), mt, sizeof(mt));
        iwd_text_put(&r->tasks, "iwd_queue_tasks{ccid=\"%s\",queue=\"%s\",media_type=\"%s\",status=\"queued\"} %s\n",
                     esc, qn, mt, PQgetvalue(q, k, 2));
        iwd_text_put(&r->tasks, "iwd_queue_tasks{ccid=\"%s\",queue=\"%s\",media_type=\"%s\",status=\"assigned\"} %s\n",
                     esc, qn, mt, PQgetvalue(q, k, 3));
        iwd_text_put(&r->tasks, "iwd_queue_tasks{ccid=\"%s\",queue=\"%s\",media_type=\"%s\",status=\"held\"} %s\n",
                     esc, qn, mt, PQgetvalue(q, k, 4));
        iwd_text_put(&r->oldest, "iwd_queue_oldest_task_age_seconds{ccid=\"%s\",queue=\"%s\",media_type=\"%s\"} %s\n",
                     esc, qn, mt, PQgetvalue(q, k, 5));
    }
    PQclear(q);
    q = iwd_pg_exec_within(c->conn, c->tenant.ccid, "datamart_metrics",
                     "SELECT CASE WHEN to_regprocedure('iwd_dm.prometheus_metrics(text)') IS NOT NULL"
                     " THEN iwd_dm.prometheus_metrics($1) END",
                     1, ccid_v, deadline);
    if (q == NULL) {
        snprintf(why, why_size, "datamart_metrics: no answer in time");
        return false;
    }
    if (PQresultStatus(q) == PGRES_TUPLES_OK && PQntuples(q) == 1 && !PQgetisnull(q, 0, 0))
        collect_job_samples(r->jobs, PQgetvalue(q, 0, 0));
    PQclear(q);
    return collect_datamart_tables(c, r, esc, deadline, why, why_size);
}

/*
 * iwd's pool of workers on each database server, as iwd.worker_stats() reports it (cluster-wide numbers):
 * read through the connection of one tenant of the server read in this reading, the next one when that
 * fails (a login outside pg_monitor), at most POOL_ATTEMPTS_PER_SERVER per server and reading. A server
 * none of whose tenants was read keeps its last values; at most POOL_SERVERS servers are exported.
 */
#define POOL_ATTEMPTS_PER_SERVER 3
#define POOL_SERVERS 64
#define POOL_FAMILIES 7
static void collect_pools(iwd_text_t *out)
{
    static const char *const families[POOL_FAMILIES][2] = {
        {"iwd_pool_workers_running", "iwd's workers running on the database server."},
        {"iwd_pool_workers_max", "iwd.max_workers of the database server."},
        {"iwd_pool_databases_waiting", "Databases with work due, waiting for a worker."},
        {"iwd_pool_databases_deadline_waiting",
         "Databases waiting for a worker with a deadline due (reservation timeouts, activations, expiries)."},
        {"iwd_pool_databases", "Databases with iwd served by the pool."},
        {"iwd_pool_databases_over_limit", "Databases with iwd not served: beyond iwd.max_databases."},
        {"iwd_pool_databases_max", "iwd.max_databases of the database server."},
    };
    static struct {
        char key[320];
        bool read; /* values holds a reading */
        char values[POOL_FAMILIES][24];
    } servers[POOL_SERVERS];
    static int nservers;
    int attempts[POOL_SERVERS] = {0};
    char key[320], label[700];

    for (collected_t *c = collected; c != NULL; c = c->next) {
        int k;
        PGresult *q;
        if (c->conn == NULL || !iwd_slots_server_key(c->tenant.conninfo, key, sizeof(key)))
            continue;
        for (k = 0; k < nservers && strcmp(servers[k].key, key) != 0; k++)
            ;
        if (k == POOL_SERVERS)
            continue; /* more servers than the metrics cover: their pools are not exported */
        if (k == nservers)
            snprintf(servers[nservers++].key, sizeof(servers[0].key), "%s", key);
        if (attempts[k] < 0 || attempts[k]++ >= POOL_ATTEMPTS_PER_SERVER)
            continue;
        q = iwd_pg_exec_within(c->conn, c->tenant.ccid, "worker_stats",
                         "SELECT s->>'running', s->>'maxWorkers', s->>'waiting', s->>'deadlinesWaiting',"
                         " s->>'databases', s->>'databasesOverLimit', s->>'maxDatabases'"
                         " FROM iwd.worker_stats() s",
                         0, NULL, iwd_now_ms() + COLLECT_DEADLINE_MS);
        if (q != NULL && PQresultStatus(q) == PGRES_TUPLES_OK && PQntuples(q) == 1) {
            servers[k].read = true;
            for (int f = 0; f < POOL_FAMILIES; f++)
                snprintf(servers[k].values[f], sizeof(servers[k].values[f]), "%s",
                         PQgetisnull(q, 0, f) ? "0" : PQgetvalue(q, 0, f));
            attempts[k] = -1;
        }
        if (q != NULL)
            PQclear(q);
    }
    for (int f = 0; f < POOL_FAMILIES; f++) {
        iwd_text_put(out, "# HELP %s %s\n# TYPE %s gauge\n", families[f][0], families[f][1], families[f][0]);
        for (int k = 0; k < nservers; k++) {
            if (!servers[k].read)
                continue;
            iwd_metrics_escape_label(servers[k].key, label, sizeof(label));
            iwd_text_put(out, "%s{server=\"%s\"} %s\n", families[f][0], label, servers[k].values[f]);
        }
    }
}

/* Forget the tenants no longer provisioned. */
static void forget_unlisted(void)
{
    for (collected_t **p = &collected; *p != NULL;) {
        collected_t *c = *p;
        if (c->listed) {
            p = &c->next;
            continue;
        }
        *p = c->next;
        if (c->conn != NULL)
            PQfinish(c->conn);
        reading_free(c->last);
        free(c);
    }
}

/* Read one tenant into its own reading, opening its connection first when it has none. */
static void read_tenant(collected_t *c)
{
    char why[512];

    if (c->conn == NULL && iwd_now_ms() >= c->retry_at_ms) {
        c->conn = iwd_pg_connect_bounded(c->tenant.conninfo, COLLECT_CONNECT_TIMEOUT_S,
                                         COLLECT_STATEMENT_TIMEOUT_MS);
        if (PQstatus(c->conn) == CONNECTION_OK) {
            iwd_metrics_db(c->tenant.ccid, "connect", NULL, 0, true, false);
            /* told apart from the API's sessions (the server cap counts those only) */
            PQclear(iwd_pg_exec_within(c->conn, c->tenant.ccid, "application_name",
                                 "SET application_name = 'iwd-sidecar-collector'", 0, NULL,
                                 iwd_now_ms() + COLLECT_DEADLINE_MS));
        } else {
            iwd_metrics_db(c->tenant.ccid, "connect", "08006", 0, false, false);
            collect_failed(c, PQerrorMessage(c->conn));
        }
    }
    c->last = reading_reset(c->last);
    c->ok = false;
    if (c->conn == NULL)
        return;
    c->ok = collect_tenant(c, c->last, why, sizeof(why));
    if (c->ok) {
        c->backoff_ms = 0;
        return;
    }
    reading_reset(c->last); /* no gauges of a failed reading */
    iwd_metrics_db(c->tenant.ccid, "disconnect", NULL, 0, false, true);
    collect_failed(c, why);
}

/* One reading of the tenants due, rendered with the last reading of the others as the tenant families. */
static char *collect(void)
{
    static const struct {
        const char *name, *type, *help;
        size_t member;
    } families[] = {
        {"iwd_queue_tasks", "gauge", "Open tasks by tenant, queue, media type and status.", offsetof(reading_t, tasks)},
        {"iwd_queue_oldest_task_age_seconds", "gauge", "Age of the oldest queued task.", offsetof(reading_t, oldest)},
        {"iwd_claims_total", "counter", "Tasks reserved by next_task since the database server started.",
         offsetof(reading_t, claims)},
        {"iwd_reservation_timeouts_total", "counter", "Reservations returned to the queue unaccepted.",
         offsetof(reading_t, timeouts)},
        {"iwddm_table_rows", "gauge", "Rows of the tenant's Data Mart fact and aggregate tables (live rows, as the"
         " server's statistics count them).", offsetof(reading_t, tables)},
        {"iwddm_dimension_members", "gauge", "Members of each Data Mart dimension of the tenant.",
         offsetof(reading_t, dimensions)},
    };
    iwd_text_t out = iwd_text_new(1), up = iwd_text_new(1);
    iwd_tenant_t *tenants;
    int ntenants = iwd_work_tenants(&collector_control, "metrics", &tenants);
    int64_t now = iwd_now_ms(), active_since = now - (int64_t)iwd_conf.pg_idle_timeout_s * 1000;
    int idle_connects = 0;

    for (collected_t *c = collected; c != NULL; c = c->next)
        c->listed = ntenants < 0; /* the registry cannot be read: keep reading the tenants known */
    for (int i = 0; i < ntenants; i++)
        collected_entry(&tenants[i]);
    if (ntenants >= 0)
        iwd_work_tenants_free(tenants, ntenants);
    forget_unlisted();
    for (collected_t *c = collected; c != NULL; c = c->next) {
        bool active = iwd_slots_active(c->tenant.ccid, active_since);
        c->close_after = !active; /* read or not, an idle tenant keeps no connection past this reading */
        if (!active && c->last != NULL && now < c->idle_read_at_ms)
            continue;
        if (!active && c->conn == NULL && idle_connects++ >= COLLECT_IDLE_CONNECTS)
            continue;
        read_tenant(c);
        c->idle_read_at_ms = now + COLLECT_IDLE_EVERY_MS;
    }
    for (size_t f = 0; f < sizeof(families) / sizeof(families[0]); f++) {
        iwd_text_put(&out, "# HELP %s %s\n# TYPE %s %s\n", families[f].name, families[f].help, families[f].name,
                     families[f].type);
        for (collected_t *c = collected; c != NULL; c = c->next)
            if (c->last != NULL)
                iwd_text_put(&out, "%s", ((iwd_text_t *)((char *)c->last + families[f].member))->buf);
    }
    for (collected_t *c = collected; c != NULL; c = c->next) {
        char esc[512];
        iwd_metrics_escape_label(c->tenant.ccid, esc, sizeof(esc));
        iwd_text_put(&up, "iwd_tenant_metrics_up{ccid=\"%s\"} %d\n", esc, c->ok);
    }
    iwd_text_put(&out, "# HELP iwd_tenant_metrics_up Whether the last reading of the tenant's gauges succeeded.\n"
                 "# TYPE iwd_tenant_metrics_up gauge\n%s", up.buf);
    free(up.buf);
    for (int j = 0; j < NJOB_METRICS; j++) {
        iwd_text_put(&out, "# HELP %s %s\n# TYPE %s gauge\n", job_metrics[j].name, job_metrics[j].help,
                     job_metrics[j].name);
        for (collected_t *c = collected; c != NULL; c = c->next)
            if (c->last != NULL)
                iwd_text_put(&out, "%s", c->last->jobs[j].buf);
    }
    collect_pools(&out);
    for (collected_t *c = collected; c != NULL; c = c->next)
        if (c->close_after && c->conn != NULL) {
            PQfinish(c->conn);
            c->conn = NULL;
            iwd_metrics_db(c->tenant.ccid, "disconnect", NULL, 0, false, true);
        }
    return out.buf;
}

static void *collector_main(void *arg)
{
    (void)arg;
    for (;;) {
        struct timespec pause = {.tv_sec = iwd_conf.metrics_ttl_ms / 1000,
                                 .tv_nsec = (long)(iwd_conf.metrics_ttl_ms % 1000) * 1000000};

        iwd_metrics_set_tenant_families(collect());
        nanosleep(&pause, NULL);
    }
    return NULL;
}

void iwd_collector_start(void)
{
    pthread_t collector;

    pthread_create(&collector, NULL, collector_main, NULL);
    pthread_detach(collector);
}
