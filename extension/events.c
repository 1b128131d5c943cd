/*-------------------------------------------------------------------------
 * events.c
 *	  The publication lock of the event feed.
 *
 * iwd.publish_events (sql/events.sql) moves committed outbox rows to the
 * event feed and numbers them there; one publisher at a time, so that feed
 * ids become visible in the order they are given. The lock is one of iwd's
 * own (guard.h): a login that takes advisory locks cannot hold it and stop
 * the publication of every event of its tenant.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"

#include "events.h"
#include "guard.h"

PG_FUNCTION_INFO_V1(iwd_try_lock_publication);

/* Take the publication lock until the transaction ends; false at once when another transaction holds it. */
Datum
iwd_try_lock_publication(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(IwdLock(IWD_LOCK_EVENTS, 0, false, false) != LOCKACQUIRE_NOT_AVAIL);
}
