/*
 * iwd-sidecar metrics collection: the tenants' own gauges (queues, claims, reservation timeouts, Data Mart
 * jobs), read from every tenant database by a thread of their own and handed to metrics.h for scrapes.
 */
#ifndef IWD_COLLECTOR_H
#define IWD_COLLECTOR_H

/* Start the collector thread: a reading every IWD_METRICS_TTL_MS, for as long as the process runs. */
void iwd_collector_start(void);

#endif
