/*-------------------------------------------------------------------------
 * events.h
 *	  Events out: the publication lock of the event feed (sql/events.sql
 *	  holds the outbox, the feed, webhooks and their deliveries).
 *-------------------------------------------------------------------------
 */
#ifndef IWD_EVENTS_H
#define IWD_EVENTS_H

#include "postgres.h"

#include "fmgr.h"

/* SQL: iwd._try_lock_publication() RETURNS boolean */
extern PGDLLEXPORT Datum iwd_try_lock_publication(PG_FUNCTION_ARGS);

#endif							/* IWD_EVENTS_H */
