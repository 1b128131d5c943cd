/*
 * iwd-sidecar event stream hub (events.c): GET /iwd/v3/events served as Server-Sent Events or as a JSON
 * long-poll, fed per tenant by one LISTEN connection that publishes the tenant's committed events and
 * fans them out to the tenant's streams on every thread. The design is in events.c's header comment.
 */
#ifndef IWD_EVENTS_H
#define IWD_EVENTS_H

#include <stdbool.h>
#include <stdint.h>

#include "http.h"

/* The event types, those of iwd.event_types() in its order (a stream's type filter is a mask over them). */
#define IWD_EVENT_TYPES 15
extern const char *const iwd_event_types[IWD_EVENT_TYPES];

/* The task document's fields a stream may filter on: the filters of GET /tasks, in this order. */
#define IWD_EVENT_FILTER_KEYS 9
extern const char *const iwd_event_filter_keys[IWD_EVENT_FILTER_KEYS];

/* The JSON form's bounds: events per answer, and the longest wait (a longer one is cut to it). */
#define IWD_EVENTS_LIMIT_MAX 1000
#define IWD_EVENTS_LIMIT_DEFAULT 100
#define IWD_EVENTS_WAIT_MAX_S 30

/* What a client asked for, checked by the route (routes_events.c); strings in the request pool. */
typedef struct iwd_events_query {
    int64_t after;        /* resume after this event id; -1: from the events committed from now on */
    bool json;            /* the long-poll form ({"events": [...], "next": N}) rather than SSE */
    int limit;            /* the JSON form's events per answer */
    int wait_s;           /* the JSON form's longest wait for an event, 0 to 30 */
    uint32_t types;       /* a bit per iwd_event_types index; 0: every type */
    char **values[IWD_EVENT_FILTER_KEYS]; /* per filter key, the accepted values (NULL-terminated); NULL: any */
    const char *sql_types;  /* the same as a text[] literal for iwd.events_after; NULL: every type */
    const char *sql_filter; /* the same as a jsonb object for iwd.events_after */
} iwd_events_query_t;

/*
 * Serve the query: open the SSE stream (its catch-up after query->after, then the live events), or answer
 * the JSON form now or once an event comes or the wait ends. 503 with Retry-After beyond IWD_MAX_STREAMS
 * or IWD_MAX_STREAMS_PER_TENANT. Answers the request; IWD_OK.
 */
int iwd_events_serve(iwd_call_t *call, const iwd_events_query_t *query);

#endif
