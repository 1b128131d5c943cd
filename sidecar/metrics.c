/*
 * iwd-sidecar metrics in the Prometheus text format, under the documented names. Series live in one
 * table guarded by a mutex (updates are a few hundred nanoseconds; there is no hot path here that a
 * lock-free design would pay back). Queue gauges and the Data Mart job metrics are read from each
 * tenant database by a collector thread (below); a scrape renders its last reading.
 *
 * Label values are bounded by construction: methods outside HTTP's are "other", routes are patterns of
 * the route table, ccid labels are registered tenants', SQLSTATEs and commands come from fixed sets,
 * and queue / media type pairs are capped per tenant (QUEUE_SERIES_PER_TENANT).
 */
#include <dirent.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "sidecar.h"

#define MAX_SERIES 4096
#define LONG_REQUEST_MS 1000.0

typedef enum { COUNTER, GAUGE, HISTOGRAM } metric_type_t;

typedef struct family {
    const char *name;
    const char *help;
    metric_type_t type;
} family_t;

enum {
    F_REQUEST_TOTAL, F_SUCCESS, F_ERRORS, F_CLIENT_ERROR, F_SERVER_ERROR, F_API_REQUEST, F_API_DURATION,
    F_API_LONG, F_API_BLACKLIST, F_REDIS_ESTABLISHED, F_REDIS_RECONNECTING, F_REDIS_READY, F_REDIS_ERRORS,
    F_REDIS_UNTIL_READY, F_DB_CONNECT, F_DB_DISCONNECT, F_DB_REQUEST, F_DB_SUCCESS, F_DB_ERRORS, F_DB_DURATION,
    F_REFUSED, F_COUNT
};

static const family_t families[F_COUNT] = {
    [F_REQUEST_TOTAL] = {"iwd_request_total", "Requests received.", COUNTER},
    [F_SUCCESS] = {"iwd_success_total", "Requests answered with a 2xx status, per tenant.", COUNTER},
    [F_ERRORS] = {"iwd_errors_total", "Requests answered with a 4xx or 5xx status, per tenant.", COUNTER},
    [F_CLIENT_ERROR] = {"iwd_client_error_total", "Requests answered with a 4xx status, per tenant.", COUNTER},
    [F_SERVER_ERROR] = {"iwd_server_error_total", "Requests answered with a 5xx status, per tenant.", COUNTER},
    [F_API_REQUEST] = {"iwd_api_request_total", "Requests by method, route, status code and tenant.", COUNTER},
    [F_API_DURATION] = {"iwd_api_request_duration_milliseconds", "Request duration by method and route.", HISTOGRAM},
    [F_API_LONG] = {"iwd_api_request_long", "Requests that took longer than one second.", GAUGE},
    [F_API_BLACKLIST] = {"iwd_api_blacklist", "Requests refused (429) because their client address failed to authenticate too often.", GAUGE},
    [F_REDIS_ESTABLISHED] = {"iwd_redis_connections_established", "Redis connections established since start.", GAUGE},
    [F_REDIS_RECONNECTING] = {"iwd_redis_connections_reconnecting", "Worker threads waiting to reconnect to Redis.", GAUGE},
    [F_REDIS_READY] = {"iwd_redis_connections_ready", "Worker threads with a ready Redis connection.", GAUGE},
    [F_REDIS_ERRORS] = {"iwd_redis_errors_total", "Failed Redis connections and commands.", COUNTER},
    [F_REDIS_UNTIL_READY] = {"iwd_redis_duration_until_ready", "Time from losing Redis to being connected again (ms).", HISTOGRAM},
    [F_DB_CONNECT] = {"iwdTenantDB_db_connect_total", "Database connections opened.", COUNTER},
    [F_DB_DISCONNECT] = {"iwdTenantDB_db_disconnect_total", "Database connections closed.", COUNTER},
    [F_DB_REQUEST] = {"iwdTenantDB_db_request_total", "Database calls.", COUNTER},
    [F_DB_SUCCESS] = {"iwdTenantDB_db_success_total", "Successful database calls by command.", COUNTER},
    [F_DB_ERRORS] = {"iwdTenantDB_db_errors_total", "Failed database calls by SQLSTATE.", COUNTER},
    [F_DB_DURATION] = {"iwdTenantDB_db_request_duration_milliseconds", "Database call duration (ms).", HISTOGRAM},
    [F_REFUSED] = {"iwd_waiting_calls_refused_total",
                   "Calls answered 503 because too many were waiting for a database connection, per tenant.", COUNTER},
};

static const double buckets[] = {1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000};
#define NBUCKETS (sizeof(buckets) / sizeof(buckets[0]))

typedef struct series {
    int family;
    char *labels; /* rendered: name="value",... */
    double value; /* counters and gauges; histogram sum */
    uint64_t count;
    uint64_t bucket[NBUCKETS];
} series_t;

static series_t series[MAX_SERIES];
static int nseries;
static pthread_mutex_t metrics_lock = PTHREAD_MUTEX_INITIALIZER;
static time_t start_time;

void iwd_metrics_init(void)
{
    start_time = time(NULL);
}

/* Escape a label value (backslash, quote, newline) into out. */
static void escape_label(const char *in, char *out, size_t size)
{
    size_t o = 0;

    for (; in != NULL && *in != '\0' && o + 3 < size; in++) {
        if (*in == '\\' || *in == '"') {
            out[o++] = '\\';
            out[o++] = *in;
        } else if (*in == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = *in;
        }
    }
    out[o] = '\0';
}

/* Append s to buf (NUL-terminated, truncated at size) from offset o; the new offset. */
static size_t append(char *buf, size_t size, size_t o, const char *s)
{
    while (*s != '\0' && o + 1 < size)
        buf[o++] = *s++;
    buf[o] = '\0';
    return o;
}

/* Render label pairs (name, value, ..., NULL) into buf (every request does this a few times: no printf). */
static void render_labels(char *buf, size_t size, va_list ap)
{
    const char *name;
    size_t o = 0;

    buf[0] = '\0';
    while ((name = va_arg(ap, const char *)) != NULL) {
        const char *value = va_arg(ap, const char *);
        if (o > 0)
            o = append(buf, size, o, ",");
        o = append(buf, size, o, name);
        o = append(buf, size, o, "=\"");
        if (o + 1 < size) {
            escape_label(value != NULL ? value : "", buf + o, size - o);
            o += strlen(buf + o);
        }
        o = append(buf, size, o, "\"");
    }
}

/* Where each series is in series[] (number + 1; 0: free slot), by a hash of its family and labels. */
#define INDEX_SLOTS (2 * MAX_SERIES)
static int series_index[INDEX_SLOTS];

static uint32_t series_hash(int family, const char *labels)
{
    uint32_t h = 2166136261u ^ (uint32_t)family; /* FNV-1a */

    for (; *labels != '\0'; labels++)
        h = (h ^ (unsigned char)*labels) * 16777619u;
    return h;
}

/* Find or create a series (metrics_lock held); NULL when the table is full. */
static series_t *find(int family, const char *labels)
{
    uint32_t slot = series_hash(family, labels) % INDEX_SLOTS;

    for (; series_index[slot] != 0; slot = (slot + 1) % INDEX_SLOTS) {
        series_t *s = &series[series_index[slot] - 1];
        if (s->family == family && strcmp(s->labels, labels) == 0)
            return s;
    }
    if (nseries == MAX_SERIES)
        return NULL;
    series[nseries].family = family;
    series[nseries].labels = strdup(labels);
    series_index[slot] = ++nseries;
    return &series[nseries - 1];
}

/* Add delta to a counter or gauge; label pairs end with NULL. */
static void add(int family, double delta, ...)
{
    char labels[1024];
    va_list ap;
    series_t *s;

    va_start(ap, delta);
    render_labels(labels, sizeof(labels), ap);
    va_end(ap);
    pthread_mutex_lock(&metrics_lock);
    if ((s = find(family, labels)) != NULL)
        s->value += delta;
    pthread_mutex_unlock(&metrics_lock);
}

/* Record one observation in a histogram; label pairs end with NULL. */
static void observe(int family, double v, ...)
{
    char labels[1024];
    va_list ap;
    series_t *s;

    va_start(ap, v);
    render_labels(labels, sizeof(labels), ap);
    va_end(ap);
    pthread_mutex_lock(&metrics_lock);
    if ((s = find(family, labels)) != NULL) {
        s->value += v;
        s->count++;
        for (size_t b = 0; b < NBUCKETS; b++)
            if (v <= buckets[b])
                s->bucket[b]++;
    }
    pthread_mutex_unlock(&metrics_lock);
}

/*
 * The method as a label: any method outside the ones HTTP defines is "other", so that a client cannot
 * add series by inventing methods (the route label is already a pattern of the table or "unmatched",
 * and the ccid one a registered tenant's).
 */
static const char *method_label(const char *method)
{
    static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT",
                                        "TRACE"};

    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strcmp(method, known[i]) == 0)
            return known[i];
    return "other";
}

void iwd_metrics_request(const char *raw_method, const char *route, int status, const char *ccid, double ms)
{
    char code[8];
    const char *tenant = ccid != NULL ? ccid : "", *method = method_label(raw_method);

    snprintf(code, sizeof(code), "%d", status);
    add(F_REQUEST_TOTAL, 1, NULL);
    if (status < 400)
        add(F_SUCCESS, 1, "ccid", tenant, NULL);
    else
        add(F_ERRORS, 1, "ccid", tenant, NULL);
    if (status >= 400 && status < 500)
        add(F_CLIENT_ERROR, 1, "ccid", tenant, NULL);
    if (status >= 500)
        add(F_SERVER_ERROR, 1, "ccid", tenant, NULL);
    add(F_API_REQUEST, 1, "method", method, "path", route, "code", code, "ccid", tenant, NULL);
    observe(F_API_DURATION, ms, "method", method, "path", route, NULL);
    if (ms > LONG_REQUEST_MS)
        add(F_API_LONG, 1, NULL);
}

void iwd_metrics_blacklist(void)
{
    add(F_API_BLACKLIST, 1, NULL);
}

void iwd_metrics_refused(const char *ccid)
{
    add(F_REFUSED, 1, "ccid", ccid, NULL);
}

void iwd_metrics_db(const char *db, const char *command, const char *code, double ms, bool connect, bool disconnect)
{
    if (connect) {
        add(F_DB_CONNECT, 1, "db", db, NULL);
        return;
    }
    if (disconnect) {
        add(F_DB_DISCONNECT, 1, "db", db, NULL);
        return;
    }
    if (strcmp(command, "connect") == 0) { /* a failed connection attempt */
        add(F_DB_ERRORS, 1, "db", db, "code", code, NULL);
        return;
    }
    add(F_DB_REQUEST, 1, "db", db, NULL);
    if (code == NULL)
        add(F_DB_SUCCESS, 1, "db", db, "command", command, NULL);
    else
        add(F_DB_ERRORS, 1, "db", db, "code", code, NULL);
    observe(F_DB_DURATION, ms, "db", db, NULL);
}

void iwd_metrics_redis_error(void)
{
    add(F_REDIS_ERRORS, 1, NULL);
}

void iwd_metrics_redis_state(int delta_ready, int delta_reconnecting, int delta_established)
{
    add(F_REDIS_READY, delta_ready, NULL);
    add(F_REDIS_RECONNECTING, delta_reconnecting, NULL);
    add(F_REDIS_ESTABLISHED, delta_established, NULL);
}

void iwd_metrics_redis_ready_after(double ms)
{
    observe(F_REDIS_UNTIL_READY, ms, NULL);
}

/* A growing text buffer. */
typedef struct text {
    char *buf;
    size_t len, cap;
} text_t;

static void put(text_t *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if ((size_t)n < t->cap - t->len)
            break;
        t->cap = t->cap * 2 + n;
        t->buf = realloc(t->buf, t->cap);
    }
    t->len += n;
}

static void render_series(text_t *t)
{
    pthread_mutex_lock(&metrics_lock);
    for (int f = 0; f < F_COUNT; f++) {
        const family_t *fam = &families[f];
        put(t, "# HELP %s %s\n# TYPE %s %s\n", fam->name, fam->help, fam->name,
            fam->type == COUNTER ? "counter" : fam->type == GAUGE ? "gauge" : "histogram");
        if (fam->type != HISTOGRAM && (f == F_REQUEST_TOTAL || f == F_API_LONG || f == F_API_BLACKLIST ||
                                       f == F_REDIS_ESTABLISHED || f == F_REDIS_RECONNECTING ||
                                       f == F_REDIS_READY || f == F_REDIS_ERRORS)) {
            /* unlabelled series appear from the start, at zero */
            bool seen = false;
            for (int i = 0; i < nseries; i++)
                seen |= series[i].family == f;
            if (!seen)
                put(t, "%s 0\n", fam->name);
        }
        for (int i = 0; i < nseries; i++) {
            series_t *s = &series[i];
            const char *sep = s->labels[0] ? "," : "";
            if (s->family != f)
                continue;
            if (fam->type != HISTOGRAM) {
                if (s->labels[0])
                    put(t, "%s{%s} %.17g\n", fam->name, s->labels, s->value);
                else
                    put(t, "%s %.17g\n", fam->name, s->value);
                continue;
            }
            for (size_t b = 0; b < NBUCKETS; b++)
                put(t, "%s_bucket{%s%sle=\"%g\"} %llu\n", fam->name, s->labels, sep, buckets[b],
                    (unsigned long long)s->bucket[b]);
            put(t, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", fam->name, s->labels, sep, (unsigned long long)s->count);
            if (s->labels[0]) {
                put(t, "%s_sum{%s} %.17g\n", fam->name, s->labels, s->value);
                put(t, "%s_count{%s} %llu\n", fam->name, s->labels, (unsigned long long)s->count);
            } else {
                put(t, "%s_sum %.17g\n", fam->name, s->value);
                put(t, "%s_count %llu\n", fam->name, (unsigned long long)s->count);
            }
        }
    }
    pthread_mutex_unlock(&metrics_lock);
}

static void render_process(text_t *t)
{
    struct rusage ru;
    long rss_pages = 0, pagesize = sysconf(_SC_PAGESIZE);
    int fds = 0;
    FILE *f;
    DIR *d;

    getrusage(RUSAGE_SELF, &ru);
    if ((f = fopen("/proc/self/statm", "r")) != NULL) {
        long size;
        if (fscanf(f, "%ld %ld", &size, &rss_pages) != 2)
            rss_pages = 0;
        fclose(f);
    }
    if ((d = opendir("/proc/self/fd")) != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            fds += e->d_name[0] != '.';
        closedir(d);
    }
    put(t, "# HELP iwd_process_cpu_seconds_total CPU time used by the process.\n"
           "# TYPE iwd_process_cpu_seconds_total counter\niwd_process_cpu_seconds_total %.6f\n",
        ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
    put(t, "# HELP iwd_process_resident_memory_bytes Resident memory of the process.\n"
           "# TYPE iwd_process_resident_memory_bytes gauge\niwd_process_resident_memory_bytes %ld\n",
        rss_pages * pagesize);
    put(t, "# HELP iwd_process_open_fds Open file descriptors.\n"
           "# TYPE iwd_process_open_fds gauge\niwd_process_open_fds %d\n", fds - 1);
    put(t, "# HELP iwd_process_start_time_seconds Start time of the process since the Unix epoch.\n"
           "# TYPE iwd_process_start_time_seconds gauge\niwd_process_start_time_seconds %ld\n", (long)start_time);
}

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
static void collect_job_samples(text_t *by_metric, const char *text)
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
                    put(&by_metric[j], "%.*s\n", (int)len, line);
                    kept++;
                }
            }
        line += len + (end != NULL);
    }
}

/*
 * The collector: one thread of its own reads the tenants' queue gauges and Data Mart job metrics every
 * IWD_METRICS_TTL_MS, over its own connections (a short connect timeout, a short statement timeout and
 * a deadline of its own on every answer), and publishes the text of that reading; a scrape copies the
 * last one. A tenant server that is down or never answers delays only the collector's next reading,
 * never a scrape and never a worker thread's requests.
 */
#define COLLECT_CONNECT_TIMEOUT_S 2
#define COLLECT_STATEMENT_TIMEOUT_MS 5000
#define COLLECT_DEADLINE_MS 6000       /* the collector's own bound on one answer, whatever the server does */
#define COLLECT_BACKOFF_MIN_MS 1000    /* after a failed reading of a tenant, no new attempt before this */
#define COLLECT_BACKOFF_MAX_MS 60000
#define QUEUE_SERIES_PER_TENANT 100    /* queue / media type pairs with series of their own, by backlog */

/* A tenant database the collector reads, with its connection. */
typedef struct collected {
    iwd_tenant_t tenant;
    PGconn *conn;
    int64_t retry_at_ms;
    int backoff_ms;
    bool listed; /* still provisioned at the last reading of the registry */
    struct collected *next;
} collected_t;

static collected_t *collected;
static PGconn *collector_control;

/* The reading scrapes serve: its text, replaced as a whole by the collector. */
static struct {
    pthread_mutex_t lock;
    char *text;
} snapshot = {.lock = PTHREAD_MUTEX_INITIALIZER};

/*
 * Run one statement and wait for its answer until deadline_ms at most; NULL when the server did not
 * answer in time or the connection broke (the caller closes the connection: a late answer would be read
 * as the next statement's).
 */
static PGresult *query_within(PGconn *conn, const char *db, const char *command, const char *sql, int nparams,
                              const char *const *values, int64_t deadline_ms)
{
    double start = iwd_now_ms_precise();
    PGresult *res = NULL, *r;
    const char *code = NULL;

    if (!PQsendQueryParams(conn, sql, nparams, NULL, values, NULL, NULL, 0))
        goto failed;
    while (PQflush(conn) > 0 || PQisBusy(conn)) {
        struct pollfd pfd = {.fd = PQsocket(conn), .events = POLLIN | POLLOUT};
        int64_t left = deadline_ms - iwd_now_ms();
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0 || !PQconsumeInput(conn))
            goto failed;
    }
    while ((r = PQgetResult(conn)) != NULL) {
        if (res == NULL)
            res = r;
        else
            PQclear(r);
    }
    if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK)
        code = PQresultErrorField(res, PG_DIAG_SQLSTATE) != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : "08006";
    iwd_metrics_db(db, command, code, iwd_now_ms_precise() - start, false, false);
    return res;
failed:
    if (res != NULL)
        PQclear(res);
    iwd_metrics_db(db, command, "08006", iwd_now_ms_precise() - start, false, false);
    return NULL;
}

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
    text_t tasks, oldest, claims, timeouts, up, jobs[NJOB_METRICS];
} reading_t;

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
    q = query_within(c->conn, c->tenant.ccid, "queue_stats",
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
    escape_label(c->tenant.ccid, esc, sizeof(esc));
    for (int k = 0; k < PQntuples(q); k++) {
        char qn[1024], mt[1024];
        if (k == 0) {
            put(&r->claims, "iwd_claims_total{ccid=\"%s\"} %s\n", esc, PQgetvalue(q, 0, 6));
            put(&r->timeouts, "iwd_reservation_timeouts_total{ccid=\"%s\"} %s\n", esc, PQgetvalue(q, 0, 7));
        }
        if (PQgetisnull(q, k, 0))
            continue;
        escape_label(PQgetvalue(q, k, 0), qn, sizeof(qn));
        escape_label(PQgetvalue(q, k, 1), mt, sizeof(mt));
        put(&r->tasks, "iwd_queue_tasks{ccid=\"%s\",queue=\"%s\",media_type=\"%s\",status=\"queued\"} %s\n", esc, qn,
            mt, PQgetvalue(q, k, 2));
        put(&r->tasks, "iwd_queue_tasks{ccid=\"%s\",queue=\"%s\",media_type=\"%s\",status=\"assigned\"} %s\n", esc,
            qn, mt, PQgetvalue(q, k, 3));
        put(&r->tasks, "iwd_queue_tasks{ccid=\"%s\",queue=\"%s\",media_type=\"%s\",status=\"held\"} %s\n", esc, qn,
            mt, PQgetvalue(q, k, 4));
        put(&r->oldest, "iwd_queue_oldest_task_age_seconds{ccid=\"%s\",queue=\"%s\",media_type=\"%s\"} %s\n", esc,
            qn, mt, PQgetvalue(q, k, 5));
    }
    PQclear(q);
    q = query_within(c->conn, c->tenant.ccid, "datamart_metrics",
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
    return true;
}

/* The registry's tenants with the iWD service, as registry entries; NULL when the control database fails. */
static PGresult *registry_tenants(void)
{
    PGresult *res;

    if (collector_control != NULL && PQstatus(collector_control) != CONNECTION_OK) {
        PQfinish(collector_control);
        collector_control = NULL;
    }
    if (collector_control == NULL) {
        collector_control = iwd_pg_connect_bounded(iwd_conf.control_db, COLLECT_CONNECT_TIMEOUT_S,
                                                   COLLECT_STATEMENT_TIMEOUT_MS);
        if (PQstatus(collector_control) != CONNECTION_OK) {
            PQfinish(collector_control);
            collector_control = NULL;
            return NULL;
        }
    }
    res = query_within(collector_control, "control", "metrics",
                       "SELECT json_build_object('kind', 'tenant', 'ccid', ccid, 'host', db_host, 'port', db_port,"
                       " 'db', db_name, 'user', db_user, 'pw', db_password, 'ssl', db_ssl)::text"
                       " FROM iwd_control.tenant WHERE 'iWD' = ANY (services) ORDER BY ccid",
                       0, NULL, iwd_now_ms() + COLLECT_DEADLINE_MS);
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
        if (res != NULL)
            PQclear(res);
        PQfinish(collector_control);
        collector_control = NULL;
        return NULL;
    }
    return res;
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
        free(c);
    }
}

/* One reading of every tenant, rendered as the tenant families of the exposition. */
static char *collect(void)
{
    reading_t r;
    text_t out = {.buf = calloc(1, 1), .len = 0, .cap = 1};
    text_t *all[] = {&r.tasks, &r.oldest, &r.claims, &r.timeouts, &r.up};
    PGresult *res = registry_tenants();

    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        *all[i] = (text_t){.buf = calloc(1, 1), .len = 0, .cap = 1};
    for (int j = 0; j < NJOB_METRICS; j++)
        r.jobs[j] = (text_t){.buf = calloc(1, 1), .len = 0, .cap = 1};
    for (collected_t *c = collected; c != NULL; c = c->next)
        c->listed = res == NULL; /* the registry cannot be read: keep reading the tenants known */
    for (int i = 0; res != NULL && i < PQntuples(res); i++) {
        iwd_tenant_t tenant;
        if (iwd_tenant_from_entry(&tenant, PQgetvalue(res, i, 0)) == IWD_OK)
            collected_entry(&tenant);
    }
    if (res != NULL)
        PQclear(res);
    forget_unlisted();
    for (collected_t *c = collected; c != NULL; c = c->next) {
        char esc[512], why[512];
        bool ok = false;
        if (c->conn == NULL && iwd_now_ms() >= c->retry_at_ms) {
            c->conn = iwd_pg_connect_bounded(c->tenant.conninfo, COLLECT_CONNECT_TIMEOUT_S,
                                             COLLECT_STATEMENT_TIMEOUT_MS);
            if (PQstatus(c->conn) == CONNECTION_OK) {
                iwd_metrics_db(c->tenant.ccid, "connect", NULL, 0, true, false);
            } else {
                iwd_metrics_db(c->tenant.ccid, "connect", "08006", 0, false, false);
                collect_failed(c, PQerrorMessage(c->conn));
            }
        }
        if (c->conn != NULL) {
            ok = collect_tenant(c, &r, why, sizeof(why));
            if (ok) {
                c->backoff_ms = 0;
            } else {
                iwd_metrics_db(c->tenant.ccid, "disconnect", NULL, 0, false, true);
                collect_failed(c, why);
            }
        }
        escape_label(c->tenant.ccid, esc, sizeof(esc));
        put(&r.up, "iwd_tenant_metrics_up{ccid=\"%s\"} %d\n", esc, ok);
    }
    put(&out, "# HELP iwd_queue_tasks Open tasks by tenant, queue, media type and status.\n"
              "# TYPE iwd_queue_tasks gauge\n%s", r.tasks.buf);
    put(&out, "# HELP iwd_queue_oldest_task_age_seconds Age of the oldest queued task.\n"
              "# TYPE iwd_queue_oldest_task_age_seconds gauge\n%s", r.oldest.buf);
    put(&out, "# HELP iwd_claims_total Tasks reserved by next_task since the database server started.\n"
              "# TYPE iwd_claims_total counter\n%s", r.claims.buf);
    put(&out, "# HELP iwd_reservation_timeouts_total Reservations returned to the queue unaccepted.\n"
              "# TYPE iwd_reservation_timeouts_total counter\n%s", r.timeouts.buf);
    put(&out, "# HELP iwd_tenant_metrics_up Whether the last reading of the tenant's gauges succeeded.\n"
              "# TYPE iwd_tenant_metrics_up gauge\n%s", r.up.buf);
    for (int j = 0; j < NJOB_METRICS; j++) {
        put(&out, "# HELP %s %s\n# TYPE %s gauge\n%s", job_metrics[j].name, job_metrics[j].help, job_metrics[j].name,
            r.jobs[j].buf);
        free(r.jobs[j].buf);
    }
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        free(all[i]->buf);
    return out.buf;
}

static void *collector_main(void *arg)
{
    (void)arg;
    for (;;) {
        char *text = collect(), *old;
        struct timespec pause = {.tv_sec = iwd_conf.metrics_ttl_ms / 1000,
                                 .tv_nsec = (long)(iwd_conf.metrics_ttl_ms % 1000) * 1000000};

        pthread_mutex_lock(&snapshot.lock);
        old = snapshot.text;
        snapshot.text = text;
        pthread_mutex_unlock(&snapshot.lock);
        free(old);
        nanosleep(&pause, NULL);
    }
    return NULL;
}

void iwd_metrics_start_collector(void)
{
    pthread_t collector;

    pthread_create(&collector, NULL, collector_main, NULL);
    pthread_detach(collector);
}

char *iwd_metrics_render(size_t *len)
{
    text_t t = {.buf = malloc(16384), .len = 0, .cap = 16384};

    t.buf[0] = '\0';
    render_series(&t);
    render_process(&t);
    pthread_mutex_lock(&snapshot.lock);
    if (snapshot.text != NULL)
        put(&t, "%s", snapshot.text);
    pthread_mutex_unlock(&snapshot.lock);
    *len = t.len;
    return t.buf;
}
