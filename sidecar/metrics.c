/*
 * iwd-sidecar metrics in the Prometheus text format, under the documented names. Series live in one
 * table guarded by a mutex (updates are a few hundred nanoseconds; there is no hot path here that a
 * lock-free design would pay back). Queue gauges and the Data Mart job metrics are read from each
 * tenant database by the collector thread (collector.c); a scrape renders its last reading.
 *
 * Label values are bounded by construction: methods outside HTTP's are "other", routes are patterns of
 * the route table, ccid labels are registered tenants', SQLSTATEs and commands come from fixed sets,
 * and queue / media type pairs are capped per tenant (QUEUE_SERIES_PER_TENANT).
 */
#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "metrics.h"
#include "server_slots.h"
#include "text.h"

#define MAX_SERIES 16384
#define LONG_REQUEST_MS 1000.0

typedef enum { COUNTER, GAUGE, HISTOGRAM } metric_type_t;

typedef struct family {
    const char *name;
    const char *help;
    metric_type_t type;
} family_t;

enum {
    F_REQUEST_TOTAL, F_SUCCESS, F_ERRORS, F_CLIENT_ERROR, F_SERVER_ERROR, F_API_REQUEST, F_API_DURATION,
    F_API_LONG, F_API_CLOSED, F_API_BLACKLIST, F_REDIS_ESTABLISHED, F_REDIS_RECONNECTING, F_REDIS_READY, F_REDIS_ERRORS,
    F_REDIS_UNTIL_READY, F_DB_CONNECT, F_DB_DISCONNECT, F_DB_REQUEST, F_DB_SUCCESS, F_DB_ERRORS, F_DB_DURATION,
    F_REFUSED, F_WEBHOOK_DELIVERIES, F_EVENTS_STREAMS, F_EVENTS_REFUSED, F_EVENTS_DROPPED, F_ROUTER_REQUESTS,
    F_ROUTER_IN_FLIGHT, F_ROUTER_LAG, F_COUNT
};

static const family_t families[F_COUNT] = {
    [F_REQUEST_TOTAL] = {"iwd_request_total", "Requests received.", COUNTER},
    [F_SUCCESS] = {"iwd_success_total", "Requests answered with a 2xx status, per tenant.", COUNTER},
    [F_ERRORS] = {"iwd_errors_total", "Requests answered with a 4xx or 5xx status, per tenant.", COUNTER},
    [F_CLIENT_ERROR] = {"iwd_client_error_total", "Requests answered with a 4xx status, per tenant.", COUNTER},
    [F_SERVER_ERROR] = {"iwd_server_error_total", "Requests answered with a 5xx status, per tenant.", COUNTER},
    [F_API_REQUEST] = {"iwd_api_request_total", "Requests by method, route, status code and tenant.", COUNTER},
    [F_API_DURATION] = {"iwd_api_request_duration_milliseconds",
                        "Request duration (ms) by method, route, status code and tenant.", HISTOGRAM},
    [F_API_LONG] = {"iwd_api_request_long", "Requests that took longer than one second.", COUNTER},
    [F_API_CLOSED] = {"iwd_api_request_closed",
                      "Requests whose client closed the connection before the answer, by method, route and tenant.",
                      COUNTER},
    [F_API_BLACKLIST] = {"iwd_api_blacklist",
                         "Requests refused (429) because their client address failed to authenticate too often.",
                         COUNTER},
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
    [F_DB_DURATION] = {"iwdTenantDB_db_request_duration_milliseconds",
                       "Database call duration (ms) by database and method (the call's command).", HISTOGRAM},
    [F_REFUSED] = {"iwd_waiting_calls_refused_total",
                   "Calls answered 503 because too many were waiting for a database connection, per tenant.", COUNTER},
    [F_EVENTS_STREAMS] = {"iwd_events_streams_open", "Open event streams (GET /events), long-polls waiting included.",
                          GAUGE},
    [F_EVENTS_REFUSED] = {"iwd_events_streams_refused_total",
                          "Event streams answered 503 because IWD_MAX_STREAMS or its per-tenant bound was reached.",
                          COUNTER},
    [F_EVENTS_DROPPED] = {"iwd_events_streams_dropped_total",
                          "Event streams closed because their client fell IWD_EVENTS_BUFFER_BYTES behind, per tenant.",
                          COUNTER},
    [F_WEBHOOK_DELIVERIES] = {"iwd_webhook_deliveries_total",
                              "Webhook delivery attempts by tenant, webhook and result (delivered, retry: a failed"
                              " attempt to be made again, failed: given up, lost: its lease had passed to another"
                              " replica).", COUNTER},
    [F_ROUTER_REQUESTS] = {"iwd_router_requests_total",
                           "Requests to the tenants' external routers by tenant, operation (token, submit, stop,"
                           " pull, retrieve) and result (ok, unauthorized, refused: another 4xx, unavailable: a 5xx,"
                           " timeout, unreachable, malformed: an answer not in the protocol).", COUNTER},
    [F_ROUTER_IN_FLIGHT] = {"iwd_router_in_flight",
                            "Tasks at the tenant's external router (submitted, offered or accepted), as last synced.",
                            GAUGE},
    [F_ROUTER_LAG] = {"iwd_router_lag_seconds",
                      "Time from a change at the tenant's external router to iwd applying it: the longest of the"
                      " last pull that brought changes.", GAUGE},
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

void iwd_metrics_escape_label(const char *in, char *out, size_t size)
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
            iwd_metrics_escape_label(value != NULL ? value : "", buf + o, size - o);
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

/* Set a gauge; label pairs end with NULL. */
static void set(int family, double value, ...)
{
    char labels[1024];
    va_list ap;
    series_t *s;

    va_start(ap, value);
    render_labels(labels, sizeof(labels), ap);
    va_end(ap);
    pthread_mutex_lock(&metrics_lock);
    if ((s = find(family, labels)) != NULL)
        s->value = value;
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
    observe(F_API_DURATION, ms, "method", method, "path", route, "code", code, "ccid", tenant, NULL);
    if (ms > LONG_REQUEST_MS)
        add(F_API_LONG, 1, NULL);
}

void iwd_metrics_request_closed(const char *raw_method, const char *route, const char *ccid)
{
    add(F_API_CLOSED, 1, "method", method_label(raw_method), "path", route, "ccid", ccid != NULL ? ccid : "", NULL);
}

void iwd_metrics_blacklist(void)
{
    add(F_API_BLACKLIST, 1, NULL);
}

void iwd_metrics_refused(const char *ccid)
{
    add(F_REFUSED, 1, "ccid", ccid, NULL);
}

void iwd_metrics_events_streams(int delta)
{
    add(F_EVENTS_STREAMS, delta, NULL);
}

void iwd_metrics_events_refused(const char *ccid)
{
    add(F_EVENTS_REFUSED, 1, "ccid", ccid, NULL);
}

void iwd_metrics_events_dropped(const char *ccid)
{
    add(F_EVENTS_DROPPED, 1, "ccid", ccid, NULL);
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
    observe(F_DB_DURATION, ms, "db", db, "method", command, NULL);
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

void iwd_metrics_webhook_delivery(const char *ccid, const char *webhook, const char *result)
{
    add(F_WEBHOOK_DELIVERIES, 1, "ccid", ccid, "webhook", webhook, "result", result, NULL);
}

void iwd_metrics_router_request(const char *ccid, const char *op, const char *result)
{
    add(F_ROUTER_REQUESTS, 1, "ccid", ccid, "op", op, "result", result, NULL);
}

void iwd_metrics_router_state(const char *ccid, int in_flight, double lag_s)
{
    set(F_ROUTER_IN_FLIGHT, in_flight, "ccid", ccid, NULL);
    if (lag_s >= 0)
        set(F_ROUTER_LAG, lag_s, "ccid", ccid, NULL);
}

static void render_series(iwd_text_t *t)
{
    pthread_mutex_lock(&metrics_lock);
    for (int f = 0; f < F_COUNT; f++) {
        const family_t *fam = &families[f];
        iwd_text_put(t, "# HELP %s %s\n# TYPE %s %s\n", fam->name, fam->help, fam->name,
            fam->type == COUNTER ? "counter" : fam->type == GAUGE ? "gauge" : "histogram");
        if (fam->type != HISTOGRAM && (f == F_REQUEST_TOTAL || f == F_API_LONG || f == F_API_BLACKLIST ||
                                       f == F_REDIS_ESTABLISHED || f == F_REDIS_RECONNECTING ||
                                       f == F_REDIS_READY || f == F_REDIS_ERRORS || f == F_EVENTS_STREAMS)) {
            /* unlabelled series appear from the start, at zero */
            bool seen = false;
            for (int i = 0; i < nseries; i++)
                seen |= series[i].family == f;
            if (!seen)
                iwd_text_put(t, "%s 0\n", fam->name);
        }
        for (int i = 0; i < nseries; i++) {
            series_t *s = &series[i];
            const char *sep = s->labels[0] ? "," : "";
            if (s->family != f)
                continue;
            if (fam->type != HISTOGRAM) {
                if (s->labels[0])
                    iwd_text_put(t, "%s{%s} %.17g\n", fam->name, s->labels, s->value);
                else
                    iwd_text_put(t, "%s %.17g\n", fam->name, s->value);
                continue;
            }
            for (size_t b = 0; b < NBUCKETS; b++)
                iwd_text_put(t, "%s_bucket{%s%sle=\"%g\"} %llu\n", fam->name, s->labels, sep, buckets[b],
                    (unsigned long long)s->bucket[b]);
            iwd_text_put(t, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", fam->name, s->labels, sep,
                         (unsigned long long)s->count);
            if (s->labels[0]) {
                iwd_text_put(t, "%s_sum{%s} %.17g\n", fam->name, s->labels, s->value);
                iwd_text_put(t, "%s_count{%s} %llu\n", fam->name, s->labels, (unsigned long long)s->count);
            } else {
                iwd_text_put(t, "%s_sum %.17g\n", fam->name, s->value);
                iwd_text_put(t, "%s_count %llu\n", fam->name, (unsigned long long)s->count);
            }
        }
    }
    pthread_mutex_unlock(&metrics_lock);
}

/* The process's data segment (VmData of /proc/self/status: its heap and private mappings), in bytes. */
static long heap_bytes(void)
{
    char line[256];
    long kb = 0;
    FILE *f = fopen("/proc/self/status", "r");

    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "VmData: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb * 1024;
}

static void render_process(iwd_text_t *t)
{
    struct rusage ru;
    struct rlimit nofile;
    long size_pages = 0, rss_pages = 0, pagesize = sysconf(_SC_PAGESIZE);
    int fds = 0;
    FILE *f;
    DIR *d;

    getrusage(RUSAGE_SELF, &ru);
    if ((f = fopen("/proc/self/statm", "r")) != NULL) {
        if (fscanf(f, "%ld %ld", &size_pages, &rss_pages) != 2)
            size_pages = rss_pages = 0;
        fclose(f);
    }
    if (getrlimit(RLIMIT_NOFILE, &nofile) != 0)
        nofile.rlim_cur = 0;
    if ((d = opendir("/proc/self/fd")) != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            fds += e->d_name[0] != '.';
        closedir(d);
    }
    iwd_text_put(t, "# HELP iwd_process_cpu_seconds_total CPU time used by the process.\n"
           "# TYPE iwd_process_cpu_seconds_total counter\niwd_process_cpu_seconds_total %.6f\n",
        ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
    iwd_text_put(t, "# HELP iwd_process_cpu_user_seconds_total User CPU time used by the process.\n"
           "# TYPE iwd_process_cpu_user_seconds_total counter\niwd_process_cpu_user_seconds_total %.6f\n",
        ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6);
    iwd_text_put(t, "# HELP iwd_process_cpu_system_seconds_total System CPU time used by the process.\n"
           "# TYPE iwd_process_cpu_system_seconds_total counter\niwd_process_cpu_system_seconds_total %.6f\n",
        ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
    iwd_text_put(t, "# HELP iwd_process_resident_memory_bytes Resident memory of the process.\n"
           "# TYPE iwd_process_resident_memory_bytes gauge\niwd_process_resident_memory_bytes %ld\n",
        rss_pages * pagesize);
    iwd_text_put(t, "# HELP iwd_process_virtual_memory_bytes Virtual memory of the process.\n"
           "# TYPE iwd_process_virtual_memory_bytes gauge\niwd_process_virtual_memory_bytes %ld\n",
        size_pages * pagesize);
    iwd_text_put(t, "# HELP iwd_process_heap_bytes Data segment of the process (its heap and private mappings).\n"
           "# TYPE iwd_process_heap_bytes gauge\niwd_process_heap_bytes %ld\n", heap_bytes());
    iwd_text_put(t, "# HELP iwd_process_open_fds Open file descriptors.\n"
           "# TYPE iwd_process_open_fds gauge\niwd_process_open_fds %d\n", fds - 1);
    iwd_text_put(t, "# HELP iwd_process_max_fds Most file descriptors the process may open.\n"
           "# TYPE iwd_process_max_fds gauge\niwd_process_max_fds %llu\n", (unsigned long long)nofile.rlim_cur);
    iwd_text_put(t, "# HELP iwd_process_start_time_seconds Start time of the process since the Unix epoch.\n"
           "# TYPE iwd_process_start_time_seconds gauge\niwd_process_start_time_seconds %ld\n", (long)start_time);
}

/* The tenants' families of the collector's last reading (collector.c), replaced as a whole. */
static struct {
    pthread_mutex_t lock;
    char *text;
} tenant_families = {.lock = PTHREAD_MUTEX_INITIALIZER};

void iwd_metrics_set_tenant_families(char *text)
{
    char *old;

    pthread_mutex_lock(&tenant_families.lock);
    old = tenant_families.text;
    tenant_families.text = text;
    pthread_mutex_unlock(&tenant_families.lock);
    free(old);
}

/* The webhook deliveries pending, as the delivery thread last read them (webhooks.c), replaced as a whole. */
static struct {
    pthread_mutex_t lock;
    char *text;
} webhook_pending = {.lock = PTHREAD_MUTEX_INITIALIZER};

void iwd_metrics_set_webhook_pending(char *text)
{
    char *old;

    pthread_mutex_lock(&webhook_pending.lock);
    old = webhook_pending.text;
    webhook_pending.text = text;
    pthread_mutex_unlock(&webhook_pending.lock);
    free(old);
}

char *iwd_metrics_render(size_t *len)
{
    iwd_text_t t = iwd_text_new(16384);
    char *slots;

    render_series(&t);
    render_process(&t);
    slots = iwd_slots_metrics();
    iwd_text_put(&t, "%s", slots);
    free(slots);
    pthread_mutex_lock(&tenant_families.lock);
    if (tenant_families.text != NULL)
        iwd_text_put(&t, "%s", tenant_families.text);
    pthread_mutex_unlock(&tenant_families.lock);
    pthread_mutex_lock(&webhook_pending.lock);
    iwd_text_put(&t, "# HELP iwd_webhook_pending Webhook deliveries not yet delivered nor failed, by tenant and"
                     " webhook.\n# TYPE iwd_webhook_pending gauge\n%s",
                 webhook_pending.text != NULL ? webhook_pending.text : "");
    pthread_mutex_unlock(&webhook_pending.lock);
    *len = t.len;
    return t.buf;
}
