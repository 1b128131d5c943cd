/*
 * iwd-sidecar metrics: the series of the Prometheus exposition under the documented names, counted by every
 * module as things happen, and the text a scrape gets. The tenants' own gauges (queues, Data Mart jobs) are
 * read by the collector (collector.h), which hands its reading here.
 */
#ifndef IWD_METRICS_H
#define IWD_METRICS_H

#include <stdbool.h>
#include <stddef.h>

/* Remember the start time (iwd_process_start_time_seconds). */
void iwd_metrics_init(void);
/* An answered request. */
void iwd_metrics_request(const char *method, const char *route, int status, const char *ccid, double ms);
/* A request whose client closed its connection before the answer (iwd_api_request_closed). */
void iwd_metrics_request_closed(const char *method, const char *route, const char *ccid);
/* A request refused (429) because its client address failed to authenticate too often. */
void iwd_metrics_blacklist(void);
/* A call refused (503) because too many were waiting for a connection of its tenant. */
void iwd_metrics_refused(const char *ccid);
/* Event streams (and parked long-polls) opened (+1) or closed (-1); one refused (503) or dropped (a slow client). */
void iwd_metrics_events_streams(int delta);
void iwd_metrics_events_refused(const char *ccid);
void iwd_metrics_events_dropped(const char *ccid);
/* A database call (code: its SQLSTATE, NULL on success), a connection opened, or one closed. */
void iwd_metrics_db(const char *db, const char *command, const char *code, double ms, bool connect,
                    bool disconnect);
/* A failed Redis connection or command. */
void iwd_metrics_redis_error(void);
/* Worker threads with a ready Redis connection, waiting to reconnect, and connections established. */
void iwd_metrics_redis_state(int delta_ready, int delta_reconnecting, int delta_established);
/* Redis ready again, ms after it was lost. */
void iwd_metrics_redis_ready_after(double ms);

/* A webhook delivery attempt's outcome (result: delivered, retry, failed or lost). */
void iwd_metrics_webhook_delivery(const char *ccid, const char *webhook, const char *result);
/* The deliveries pending per tenant and webhook (iwd_webhook_pending samples; text is taken over). */
void iwd_metrics_set_webhook_pending(char *text);

/* A request to a tenant's router (op: token, submit, stop, pull; result: ok, unauthorized, refused, ...). */
void iwd_metrics_router_request(const char *ccid, const char *op, const char *result);
/* The tasks at a tenant's router after a sync, and the lag of its last changes (lag_s < 0: unchanged). */
void iwd_metrics_router_state(const char *ccid, int in_flight, double lag_s);

/* Escape a label value (backslash, quote, newline) into out. */
void iwd_metrics_escape_label(const char *in, char *out, size_t size);
/* The tenants' families of the exposition, as the collector last read them (text is taken over). */
void iwd_metrics_set_tenant_families(char *text);

/* The exposition a scrape gets, malloc'd, its length in *len. */
char *iwd_metrics_render(size_t *len);

#endif
