/*
 * iwd-sidecar metrics in the Prometheus text format, under the documented names. Series live in one
 * table guarded by a mutex (updates are a few hundred nanoseconds; there is no hot path here that a
 * lock-free design would pay back). Queue gauges and the Data Mart job metrics are read from each
 * tenant database at scrape time, at most once per IWD_METRICS_TTL_MS for all scrapes together.
 */
#include <dirent.h>
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
    F_COUNT
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
    [F_API_BLACKLIST] = {"iwd_api_blacklist", "Requests refused because their key is blacklisted after failed authentications.", GAUGE},
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

void iwd_metrics_request(const char *method, const char *route, int status, const char *ccid, double ms)
{
    char code[8];
    const char *tenant = ccid != NULL ? ccid : "";

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

/* File each sample line of a tenant's job metrics under its metric; comments are dropped. */
static void collect_job_samples(text_t *by_metric, const char *text)
{
    const char *line = text;

    while (*line != '\0') {
        const char *end = strchr(line, '\n');
        size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
        if (len > 0 && line[0] != '#')
            for (int j = 0; j < NJOB_METRICS; j++) {
                size_t n = strlen(job_metrics[j].name);
                if (len > n && strncmp(line, job_metrics[j].name, n) == 0 && (line[n] == '{' || line[n] == ' '))
                    put(&by_metric[j], "%.*s\n", (int)len, line);
            }
        line += len + (end != NULL);
    }
}

/* Queue gauges of every provisioned tenant, and the Data Mart job metrics where the tenant has them. */
static void render_tenants(iwd_thread_t *thread, text_t *t)
{
    PGconn *control = iwd_pg_control(thread);
    PGresult *res;
    text_t tasks = {0}, oldest = {0}, claims = {0}, timeouts = {0};
    text_t jobs_by_metric[NJOB_METRICS];

    if (control == NULL)
        return;
    res = iwd_pg_exec(control, "control", "metrics",
                      "SELECT ccid FROM iwd_control.tenant WHERE 'iWD' = ANY (services) ORDER BY ccid", 0, NULL);
    tasks.buf = calloc(1, 1);
    oldest.buf = calloc(1, 1);
    claims.buf = calloc(1, 1);
    timeouts.buf = calloc(1, 1);
    for (int j = 0; j < NJOB_METRICS; j++)
        jobs_by_metric[j] = (text_t){.buf = calloc(1, 1), .len = 0, .cap = 1};
    for (int i = 0; PQresultStatus(res) == PGRES_TUPLES_OK && i < PQntuples(res); i++) {
        const char *ccid = PQgetvalue(res, i, 0);
        {
            /* connect as the tenant's own registry entry says */
            iwd_call_t call = {.thread = thread};
            PGresult *r;
            const char *v[1] = {ccid};
            r = iwd_pg_exec(control, "control", "metrics",
                            "SELECT json_build_object('kind', 'tenant', 'ccid', ccid, 'host', db_host, 'port', db_port,"
                            " 'db', db_name, 'user', db_user, 'pw', db_password, 'ssl', db_ssl)::text"
                            " FROM iwd_control.tenant WHERE ccid = $1", 1, v);
            if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
                PGconn *conn;
                if (iwd_tenant_from_entry(&call.tenant, PQgetvalue(r, 0, 0)) == IWD_OK &&
                    (conn = iwd_pg_tenant(thread, &call.tenant)) != NULL) {
                    char esc[256];
                    PGresult *q = iwd_pg_exec(conn, ccid, "queue_stats",
                                              "SELECT q->>'queue', q->>'mediaType', (q->>'queued')::bigint,"
                                              " (q->>'assigned')::bigint, (q->>'held')::bigint,"
                                              " (q->>'oldestQueuedSeconds')::float8, (s->>'claims')::bigint,"
                                              " (s->>'reservationTimeouts')::bigint"
                                              " FROM iwd.queue_stats() s LEFT JOIN LATERAL"
                                              " jsonb_array_elements(s->'queues') q ON true",
                                              0, NULL);
                    escape_label(ccid, esc, sizeof(esc));
                    for (int k = 0; PQresultStatus(q) == PGRES_TUPLES_OK && k < PQntuples(q); k++) {
                        char qn[256], mt[256];
                        if (k == 0) {
                            put(&claims, "iwd_claims_total{ccid=\"%s\"} %s\n", esc, PQgetvalue(q, 0, 6));
                            put(&timeouts, "iwd_reservation_timeouts_total{ccid=\"%s\"} %s\n", esc,
                                PQgetvalue(q, 0, 7));
                        }
                        if (PQgetisnull(q, k, 1))
                            continue;
                        escape_label(PQgetvalue(q, k, 0), qn, sizeof(qn));
                        escape_label(PQgetvalue(q, k, 1), mt, sizeof(mt));
                        put(&tasks, "iwd_queue_tasks{ccid=\"%s\",queue=\"%s\",media_type=\"%s\",status=\"queued\"} %s\n",
                            esc, qn, mt, PQgetvalue(q, k, 2));
                        put(&tasks, "iwd_queue_tasks{ccid=\"%s\",queue=\"%s\",media_type=\"%s\",status=\"assigned\"} %s\n",
                            esc, qn, mt, PQgetvalue(q, k, 3));
                        put(&tasks, "iwd_queue_tasks{ccid=\"%s\",queue=\"%s\",media_type=\"%s\",status=\"held\"} %s\n",
                            esc, qn, mt, PQgetvalue(q, k, 4));
                        put(&oldest, "iwd_queue_oldest_task_age_seconds{ccid=\"%s\",queue=\"%s\",media_type=\"%s\"} %s\n",
                            esc, qn, mt, PQgetvalue(q, k, 5));
                    }
                    PQclear(q);
                    q = iwd_pg_exec(conn, ccid, "datamart_metrics",
                                    "SELECT CASE WHEN to_regprocedure('iwd_dm.prometheus_metrics(text)') IS NOT NULL"
                                    " THEN 1 END", 0, NULL);
                    if (PQresultStatus(q) == PGRES_TUPLES_OK && !PQgetisnull(q, 0, 0)) {
                        PGresult *m = iwd_pg_exec(conn, ccid, "datamart_metrics",
                                                  "SELECT iwd_dm.prometheus_metrics($1)", 1, v);
                        if (PQresultStatus(m) == PGRES_TUPLES_OK && PQntuples(m) == 1)
                            collect_job_samples(jobs_by_metric, PQgetvalue(m, 0, 0));
                        PQclear(m);
                    }
                    PQclear(q);
                }
            }
            PQclear(r);
        }
    }
    PQclear(res);
    put(t, "# HELP iwd_queue_tasks Open tasks by tenant, queue, media type and status.\n"
           "# TYPE iwd_queue_tasks gauge\n%s", tasks.buf);
    put(t, "# HELP iwd_queue_oldest_task_age_seconds Age of the oldest queued task.\n"
           "# TYPE iwd_queue_oldest_task_age_seconds gauge\n%s", oldest.buf);
    put(t, "# HELP iwd_claims_total Tasks reserved by next_task since the database server started.\n"
           "# TYPE iwd_claims_total counter\n%s", claims.buf);
    put(t, "# HELP iwd_reservation_timeouts_total Reservations returned to the queue unaccepted.\n"
           "# TYPE iwd_reservation_timeouts_total counter\n%s", timeouts.buf);
    for (int j = 0; j < NJOB_METRICS; j++) {
        put(t, "# HELP %s %s\n# TYPE %s gauge\n%s", job_metrics[j].name, job_metrics[j].help, job_metrics[j].name,
            jobs_by_metric[j].buf);
        free(jobs_by_metric[j].buf);
    }
    free(tasks.buf);
    free(oldest.buf);
    free(claims.buf);
    free(timeouts.buf);
}

/*
 * The last reading of the tenants' families, shared by every thread's scrapes for iwd_conf.metrics_ttl_ms:
 * a reading runs a scan over each tenant's open tasks, which scrapes must not repeat under load. While one
 * thread reads again, concurrent scrapes serve the previous reading rather than start their own.
 */
static struct {
    pthread_mutex_t lock;
    char *text;
    int64_t read_at_ms;
    bool reading;
} tenants_cache = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Append the tenants' families to t: the shared reading when it is recent enough, a new one otherwise. */
static void render_tenants_cached(iwd_thread_t *thread, text_t *t)
{
    text_t fresh;
    int64_t now = iwd_now_ms();

    pthread_mutex_lock(&tenants_cache.lock);
    if (tenants_cache.text != NULL &&
        (now - tenants_cache.read_at_ms < iwd_conf.metrics_ttl_ms || tenants_cache.reading)) {
        put(t, "%s", tenants_cache.text);
        pthread_mutex_unlock(&tenants_cache.lock);
        return;
    }
    tenants_cache.reading = true;
    pthread_mutex_unlock(&tenants_cache.lock);

    fresh = (text_t){.buf = calloc(1, 1), .len = 0, .cap = 1};
    render_tenants(thread, &fresh);
    put(t, "%s", fresh.buf);

    pthread_mutex_lock(&tenants_cache.lock);
    free(tenants_cache.text);
    tenants_cache.text = fresh.buf;
    tenants_cache.read_at_ms = iwd_now_ms();
    tenants_cache.reading = false;
    pthread_mutex_unlock(&tenants_cache.lock);
}

char *iwd_metrics_render(iwd_thread_t *thread, size_t *len)
{
    text_t t = {.buf = malloc(16384), .len = 0, .cap = 16384};

    t.buf[0] = '\0';
    render_series(&t);
    render_process(&t);
    render_tenants_cached(thread, &t);
    *len = t.len;
    return t.buf;
}
