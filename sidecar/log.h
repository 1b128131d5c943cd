/* iwd-sidecar logs: one JSON object per line on stdout, at the level IWD_LOG_LEVEL lets through. */
#ifndef IWD_LOG_H
#define IWD_LOG_H

enum { IWD_LOG_ERROR, IWD_LOG_WARN, IWD_LOG_INFO, IWD_LOG_DEBUG };

/* The most detailed level written (IWD_LOG_INFO until set); set once, before any thread starts. */
void iwd_log_set_level(int level);

/* Log msg, with a detail formatted from fmt_extra when it is not NULL. */
void iwd_log(int level, const char *msg, const char *fmt_extra, ...) __attribute__((format(printf, 3, 4)));

/* Log an answered request (an error level for a 5xx, info otherwise). */
void iwd_log_request(const char *ccid, const char *method, const char *path, int status, double duration_ms);

#endif
