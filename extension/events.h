/*-------------------------------------------------------------------------
 * events.h
 *	  Events out: the publication lock of the event feed and the server's
 *	  count of committed webhook changes (sql/events.sql holds the outbox,
 *	  the feed, webhooks and their deliveries).
 *-------------------------------------------------------------------------
 */
#ifndef IWD_EVENTS_H
#define IWD_EVENTS_H

#include "postgres.h"

#include "fmgr.h"

/* Ask for the shared memory of the webhook change count (from _PG_init; nothing unless preloaded). */
extern void EventsInit(void);

/* SQL: iwd._try_lock_publication() RETURNS boolean */
extern PGDLLEXPORT Datum iwd_try_lock_publication(PG_FUNCTION_ARGS);
/* SQL: iwd._webhooks_changed() RETURNS trigger */
extern PGDLLEXPORT Datum iwd_webhooks_changed(PG_FUNCTION_ARGS);
/* SQL: iwd.webhook_changes() RETURNS bigint */
extern PGDLLEXPORT Datum iwd_webhook_changes(PG_FUNCTION_ARGS);

#endif							/* IWD_EVENTS_H */
