/*-------------------------------------------------------------------------
 * events.c
 *	  The publication lock of the event feed, and the server's count of
 *	  committed webhook changes.
 *
 * iwd.publish_events (sql/events.sql) moves committed outbox rows to the
 * event feed and numbers them there; one publisher at a time, so that feed
 * ids become visible in the order they are given. The lock is one of iwd's
 * own (guard.h): a login that takes advisory locks cannot hold it and stop
 * the publication of every event of its tenant.
 *
 * A webhook delivery that keeps no connection to a tenant without webhooks
 * (the sidecar's dispatcher) still has to learn at once of the first one
 * created there, by SQL as well as by REST. NOTIFY reaches the listeners of
 * one database only, so a transaction that changed webhooks also adds one,
 * as it commits, to a counter in shared memory that any database of the
 * server reads (iwd.webhook_changes()): one connection per server, asking
 * every second, tells the dispatcher which servers to probe again.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "events.h"
#include "guard.h"

PG_FUNCTION_INFO_V1(iwd_try_lock_publication);
PG_FUNCTION_INFO_V1(iwd_webhooks_changed);
PG_FUNCTION_INFO_V1(iwd_webhook_changes);

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* committed transactions that changed webhooks, server-wide since its start (NULL: not preloaded) */
static pg_atomic_uint64 *webhook_changes = NULL;

/* whether the running transaction changed webhooks, and whether this backend's callback is registered */
static bool changed_in_transaction = false;
static bool callback_registered = false;

/* Take the publication lock until the transaction ends; false at once when another transaction holds it. */
Datum
iwd_try_lock_publication(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(IwdLock(IWD_LOCK_EVENTS, 0, false, false) != LOCKACQUIRE_NOT_AVAIL);
}

/* Ask for the counter's shared memory. */
static void
events_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(sizeof(pg_atomic_uint64));
}

/* Attach to (or create) the counter. */
static void
events_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	webhook_changes = ShmemInitStruct("iwd webhook changes", sizeof(pg_atomic_uint64), &found);
	if (!found)
		pg_atomic_init_u64(webhook_changes, 0);
	LWLockRelease(AddinShmemInitLock);
}

/* Install the shared memory hooks when preloaded. */
void
EventsInit(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = events_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = events_shmem_startup;
}

/*
 * Count a transaction that changed webhooks once it has committed: the
 * callback comes after the commit is visible to other sessions, so a reader
 * that sees the count move finds the change.
 */
static void
count_at_commit(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT && changed_in_transaction && webhook_changes != NULL)
		pg_atomic_fetch_add_u64(webhook_changes, 1);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_PARALLEL_ABORT || event == XACT_EVENT_PREPARE)
		changed_in_transaction = false;
}

/* Statement trigger on iwd.webhook: the transaction is counted when it commits. */
Datum
iwd_webhooks_changed(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "iwd._webhooks_changed: not called as a trigger");
	if (!callback_registered)
	{
		RegisterXactCallback(count_at_commit, NULL);
		callback_registered = true;
	}
	changed_in_transaction = true;
	PG_RETURN_POINTER(NULL);
}

/* The server's count of committed webhook changes; NULL when iwd is not preloaded. */
Datum
iwd_webhook_changes(PG_FUNCTION_ARGS)
{
	if (webhook_changes == NULL)
		PG_RETURN_NULL();
	PG_RETURN_INT64((int64) pg_atomic_read_u64(webhook_changes));
}
