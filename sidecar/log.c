/* iwd-sidecar logs: one JSON object per line on stdout. */
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <pthread.h>

#include <jansson.h>

#include "log.h"

static const char *level_names[] = {"error", "warn", "info", "debug"};
static int log_level = IWD_LOG_INFO; /* set before any thread starts, read-only afterwards */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

/* Stamp and write one log object (when its level is enabled), and free it. */
static void emit(int level, json_t *obj)
{
    struct timespec ts;
    struct tm tm;
    char when[64];
    char *line;

    if (level > log_level) {
        json_decref(obj);
        return;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    json_object_set_new(obj, "time", json_string(when));
    json_object_set_new(obj, "level", json_string(level_names[level]));
    line = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    pthread_mutex_lock(&log_lock);
    fprintf(stdout, "%s\n", line);
    fflush(stdout);
    pthread_mutex_unlock(&log_lock);
    free(line);
    json_decref(obj);
}

void iwd_log_set_level(int level)
{
    log_level = level;
}

void iwd_log(int level, const char *msg, const char *fmt_extra, ...)
{
    json_t *obj = json_object();
    char detail[1024];
    va_list ap;

    json_object_set_new(obj, "msg", json_string(msg));
    if (fmt_extra != NULL) {
        va_start(ap, fmt_extra);
        vsnprintf(detail, sizeof(detail), fmt_extra, ap);
        va_end(ap);
        json_object_set_new(obj, "detail", json_string(detail));
    }
    emit(level, obj);
}

void iwd_log_request(const char *ccid, const char *method, const char *path, int status, double duration_ms)
{
    int level = status >= 500 ? IWD_LOG_ERROR : IWD_LOG_INFO;
    json_t *obj;

    if (level > log_level)
        return; /* every request passes here: build nothing that is not written */
    obj = json_object();
    json_object_set_new(obj, "msg", json_string("request"));
    json_object_set_new(obj, "ccid", ccid != NULL ? json_string(ccid) : json_null());
    json_object_set_new(obj, "method", json_string(method));
    json_object_set_new(obj, "path", json_string(path));
    json_object_set_new(obj, "status", json_integer(status));
    json_object_set_new(obj, "duration_ms", json_real(duration_ms));
    emit(level, obj);
}
